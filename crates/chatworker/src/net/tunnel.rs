//! One TLS connection to a Google host, the way the [`Egress`] says:
//! straight there, or through the proxy with `CONNECT`; TLS with the
//! system's roots and the extra CAs, offering the ALPN protocols asked for.
//! Every failure is an [`EgressError`] that names the host, the way and the
//! cause in words a platform engineer can act on; none carries the proxy's
//! credentials.

use super::{Egress, Way};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How long reaching the host (DNS, TCP, the proxy's answer, TLS) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);

/// Why a host could not be reached.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// No address for the name.
    #[error(
        "{host} could not be resolved (DNS): {detail}. Without DNS for Google's names, set network.proxy (or HTTPS_PROXY); with Private Google Access, add the googleapis.com zone"
    )]
    Dns {
        /// The name.
        host: String,
        /// The resolver's answer.
        detail: String,
    },
    /// Nothing listens there, or a firewall rejects the connection.
    #[error(
        "{target} refused the connection: nothing listens there, or a firewall rejects it; check the address and port, or the egress rules"
    )]
    Refused {
        /// `HOST:PORT`, and which one (the host or the proxy).
        target: String,
    },
    /// No answer in time: a firewall dropping packets, most often.
    #[error(
        "{target} did not answer within {seconds} s: a firewall dropping the traffic, most often; allow it, or go through the proxy"
    )]
    Timeout {
        /// `HOST:PORT`, and which one.
        target: String,
        /// The timeout.
        seconds: u64,
    },
    /// The proxy wants credentials, or refused the ones given.
    #[error("{proxy} answered 407: {}", if *had_credentials { "it refused the credentials in the proxy URL; check the user and password" } else { "it wants credentials; put them in the proxy URL, http://USER:PASSWORD@HOST:PORT" })]
    ProxyAuth {
        /// The proxy, without credentials.
        proxy: String,
        /// Whether credentials were sent.
        had_credentials: bool,
    },
    /// The proxy does not allow the host.
    #[error(
        "{proxy} answered 403 to CONNECT {host}:{port}: the host is not on its allow-list; ask for {host}:{port} to be allowed"
    )]
    ProxyForbidden {
        /// The proxy, without credentials.
        proxy: String,
        /// The host asked for.
        host: String,
        /// The port asked for.
        port: u16,
    },
    /// The proxy answered CONNECT with another status.
    #[error("{proxy} answered {status} to CONNECT {host}:{port}{}", match *status { 502..=504 => ": the proxy could not reach the host (its DNS or its own egress)", _ => "" })]
    ProxyStatus {
        /// The proxy, without credentials.
        proxy: String,
        /// The host asked for.
        host: String,
        /// The port asked for.
        port: u16,
        /// The status.
        status: u16,
    },
    /// The certificate's issuer is not trusted: a TLS-inspecting proxy
    /// whose CA is not installed, most often.
    #[error(
        "the certificate {host} presented ({way}) is issued by \"{issuer}\", which is not trusted: a TLS-inspecting proxy? Add its CA with network.extra_ca_file, or install it in the system store"
    )]
    UnknownCa {
        /// The host.
        host: String,
        /// The way taken.
        way: String,
        /// The issuer's name, as the certificate gives it.
        issuer: String,
    },
    /// TLS failed otherwise (a name mismatch, an expired certificate).
    #[error("TLS with {host} ({way}) failed: {detail}")]
    Tls {
        /// The host.
        host: String,
        /// The way taken.
        way: String,
        /// What failed.
        detail: String,
    },
    /// HTTP/2 was not negotiated, and gRPC needs it.
    #[error(
        "HTTP/2 was not negotiated with {host} ({way}): the proxy (or a middlebox) offers only HTTP/1.1, which gRPC cannot use"
    )]
    NoHttp2 {
        /// The host.
        host: String,
        /// The way taken.
        way: String,
    },
    /// Another I/O failure.
    #[error("{target}: {detail}")]
    Io {
        /// `HOST:PORT`, and which one.
        target: String,
        /// What failed.
        detail: String,
    },
}

impl EgressError {
    /// A short name for the cause, for metrics and the check's table.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            EgressError::Dns { .. } => "dns",
            EgressError::Refused { .. } => "refused",
            EgressError::Timeout { .. } => "timeout",
            EgressError::ProxyAuth { .. } => "proxy_407",
            EgressError::ProxyForbidden { .. } => "proxy_403",
            EgressError::ProxyStatus { .. } => "proxy_status",
            EgressError::UnknownCa { .. } => "unknown_ca",
            EgressError::Tls { .. } => "tls",
            EgressError::NoHttp2 { .. } => "no_http2",
            EgressError::Io { .. } => "io",
        }
    }
}

/// A connection made: the stream, and what was learnt on the way.
pub(crate) struct Upstream {
    /// The TLS stream.
    pub(crate) stream: TlsStream<TcpStream>,
    /// The way taken.
    pub(crate) way: Way,
    /// The ALPN protocol agreed (`h2`, `http/1.1`), if any.
    pub(crate) alpn: Option<Vec<u8>>,
    /// The issuer of the host's certificate.
    pub(crate) issuer: Option<String>,
}

/// What every connection trusts: the system's roots (or `SSL_CERT_FILE`'s)
/// and the extra CAs, as one verifier. Built once: reading the system's
/// store takes time.
#[derive(Clone, Debug)]
pub(crate) struct Roots(Arc<rustls::client::WebPkiServerVerifier>);

impl Roots {
    /// The system's roots and the extra CAs; none at all is an error (no
    /// connection could ever be trusted).
    pub(crate) fn load(egress: &Egress) -> Result<Self, super::NetworkError> {
        let mut store = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "a system CA could not be read");
        }
        let (added, _) = store.add_parsable_certificates(native.certs);
        let (extra, ignored) = store.add_parsable_certificates(egress.extra_roots().to_vec());
        if ignored > 0 {
            tracing::warn!(
                ignored,
                "some certificates of network.extra_ca_file are not usable as CAs"
            );
        }
        tracing::debug!(system = added, extra, "TLS roots loaded");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map(Roots)
            .map_err(|_| super::NetworkError::NoRoots)
    }
}

impl Egress {
    /// Connects to `host:port` with TLS, offering `alpn`.
    pub(crate) async fn connect(
        &self,
        roots: &Roots,
        host: &str,
        port: u16,
        alpn: &[&[u8]],
    ) -> Result<Upstream, EgressError> {
        let way = self.way(host);
        let connecting = async {
            let tcp = match &way {
                Way::Direct => tcp(host, port, "").await?,
                Way::Proxy(proxy) => {
                    let (proxy_host, proxy_port) = proxy.address();
                    let mut tcp = tcp(&proxy_host, proxy_port, " (the proxy)").await?;
                    connect_through(&mut tcp, proxy, host, port).await?;
                    tcp
                }
            };
            tls(tcp, roots, host, &way, alpn).await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(result) => result,
            Err(_) => Err(EgressError::Timeout {
                target: match &way {
                    Way::Direct => format!("{host}:{port}"),
                    Way::Proxy(proxy) => format!("{host}:{port} through {proxy}"),
                },
                seconds: CONNECT_TIMEOUT.as_secs(),
            }),
        }
    }
}

async fn tcp(host: &str, port: u16, which: &str) -> Result<TcpStream, EgressError> {
    let target = format!("{host}:{port}{which}");
    let addresses: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| EgressError::Dns {
            host: format!("{host}{which}"),
            detail: e.to_string(),
        })?
        .collect();
    let mut last = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            EgressError::Refused { target }
        }
        Some(e) => EgressError::Io {
            target,
            detail: e.to_string(),
        },
        None => EgressError::Dns {
            host: format!("{host}{which}"),
            detail: "no address".into(),
        },
    })
}

/// Asks the proxy for a tunnel to `host:port`.
async fn connect_through(
    tcp: &mut TcpStream,
    proxy: &super::Proxy,
    host: &str,
    port: u16,
) -> Result<(), EgressError> {
    let io = |e: std::io::Error| EgressError::Io {
        target: proxy.to_string(),
        detail: e.to_string(),
    };
    let authority = match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(authorization) = proxy.authorization() {
        request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.map_err(io)?;
    // The answer's head, read a byte at a time so that nothing of the
    // tunnel after it is consumed.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(EgressError::Io {
                target: proxy.to_string(),
                detail: "the proxy's answer to CONNECT has no end".into(),
            });
        }
        let byte = tcp.read_u8().await.map_err(|e| EgressError::Io {
            target: proxy.to_string(),
            detail: format!("the proxy closed the connection during CONNECT ({e})"),
        })?;
        head.push(byte);
    }
    let status_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let status = std::str::from_utf8(status_line)
        .ok()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .unwrap_or(0);
    match status {
        200..=299 => Ok(()),
        407 => Err(EgressError::ProxyAuth {
            proxy: proxy.to_string(),
            had_credentials: proxy.authorization().is_some(),
        }),
        403 => Err(EgressError::ProxyForbidden {
            proxy: proxy.to_string(),
            host: host.to_owned(),
            port,
        }),
        status => Err(EgressError::ProxyStatus {
            proxy: proxy.to_string(),
            host: host.to_owned(),
            port,
            status,
        }),
    }
}

async fn tls(
    tcp: TcpStream,
    roots: &Roots,
    host: &str,
    way: &Way,
    alpn: &[&[u8]],
) -> Result<Upstream, EgressError> {
    let seen = Arc::new(Mutex::new(None));
    let verifier = Recording::new(roots, seen.clone());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EgressError::Tls {
            host: host.to_owned(),
            way: way.to_string(),
            detail: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned()).map_err(|e| {
        EgressError::Tls {
            host: host.to_owned(),
            way: way.to_string(),
            detail: e.to_string(),
        }
    })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let issuer = || seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match connector.connect(name, tcp).await {
        Ok(stream) => {
            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            Ok(Upstream {
                stream,
                way: way.clone(),
                alpn,
                issuer: issuer(),
            })
        }
        Err(e) => {
            let unknown = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|e| {
                    matches!(
                        e,
                        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
                    )
                });
            Err(match unknown {
                true => EgressError::UnknownCa {
                    host: host.to_owned(),
                    way: way.to_string(),
                    issuer: issuer().unwrap_or_else(|| "an unknown issuer".into()),
                },
                false => EgressError::Tls {
                    host: host.to_owned(),
                    way: way.to_string(),
                    detail: e.to_string(),
                },
            })
        }
    }
}

/// The WebPKI verifier, noting the issuer of the certificate it was shown.
#[derive(Debug)]
struct Recording {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    seen: Arc<Mutex<Option<String>>>,
}

impl Recording {
    fn new(roots: &Roots, seen: Arc<Mutex<Option<String>>>) -> Self {
        Self {
            inner: roots.0.clone(),
            seen,
        }
    }
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain's top: the issuer a root would have to vouch for.
        let top = intermediates.last().unwrap_or(end_entity);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = issuer_name(top);
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The issuer's common name and organisation, read from the certificate's
/// DER (TBSCertificate: version, serial, signature, issuer).
fn issuer_name(cert: &[u8]) -> Option<String> {
    let (_, certificate, _) = der(cert)?;
    let (_, tbs, _) = der(certificate)?;
    let mut rest = tbs;
    // [0] version, optional.
    let (tag, _, after) = der_any(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    let (_, _, rest) = der_any(rest)?; // serial
    let (_, _, rest) = der_any(rest)?; // signature algorithm
    let (_, issuer, _) = der(rest)?;
    let mut parts = Vec::new();
    let mut sets = issuer;
    while let Some((_, set, next)) = der_any(sets) {
        sets = next;
        let Some((_, attribute, _)) = der(set) else {
            continue;
        };
        let Some((0x06, oid, value)) = der_any(attribute) else {
            continue;
        };
        let Some((_, text, _)) = der_any(value) else {
            continue;
        };
        let label = match oid {
            [0x55, 0x04, 0x03] => "CN",
            [0x55, 0x04, 0x0a] => "O",
            _ => continue,
        };
        // The peer's words, bound for a log line: no control characters.
        let text: String = String::from_utf8_lossy(text)
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        parts.push(format!("{label}={text}"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A SEQUENCE's contents and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    der_any(input).filter(|(tag, _, _)| *tag == 0x30)
}

/// One DER element: its tag, its contents, and what follows.
fn der_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        n => {
            let count = usize::from(n & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let length = rest[..count]
                .iter()
                .fold(0usize, |a, &b| (a << 8) | usize::from(b));
            (length, &rest[count..])
        }
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}
