//! How the worker reaches Google: directly, or through an HTTP CONNECT proxy
//! (`network.proxy`, else `HTTPS_PROXY`), except for the hosts `NO_PROXY`
//! lists, loopback and the GKE metadata server; trusting the system's CAs
//! and `network.extra_ca_file`. Every client the worker builds takes its way
//! from an `Egress`: the Chat API and IAM Credentials through reqwest
//! (`Egress::http_client`), Pub/Sub through the `gateway`, because the
//! official gRPC stack has no proxy support and no way to add a CA.
//! Knows nothing of events, Chat or Pub/Sub's API.

mod check;
pub(crate) mod gateway;
mod no_proxy;
mod tunnel;

pub use check::{HostCheck, check};

pub(crate) use no_proxy::NoProxy;
pub use tunnel::EgressError;

use crate::config::NetworkSettings;
use reqwest::Url;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Adds `127.0.0.1` and `localhost` to `NO_PROXY` (and `no_proxy`) when a
/// proxy for plain HTTP is set (`HTTP_PROXY`, `ALL_PROXY`), so that clients
/// which read the environment themselves (Pub/Sub's admin clients) reach
/// the worker's gateway on loopback instead of asking the proxy for it.
/// Without it they go around the gateway, and around `network.*`.
///
/// # Safety
///
/// It changes the process's environment: call it first thing in `main`,
/// before any other thread is started (an async runtime included), as
/// [`std::env::set_var`] requires.
pub unsafe fn keep_loopback_off_proxies() {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|name| set(name))
    {
        return;
    }
    // The variables that are set, each extended; or NO_PROXY alone.
    let mut names: Vec<&str> = ["NO_PROXY", "no_proxy"]
        .into_iter()
        .filter(|name| std::env::var_os(name).is_some())
        .collect();
    if names.is_empty() {
        names.push("NO_PROXY");
    }
    for name in names {
        let current = std::env::var(name).unwrap_or_default();
        if NoProxy::parse(&current).matches("127.0.0.1") {
            continue;
        }
        let value = match current.trim() {
            "" => "127.0.0.1,localhost".to_owned(),
            list => format!("{list},127.0.0.1,localhost"),
        };
        // SAFETY: the caller promises no other thread runs yet.
        unsafe { std::env::set_var(name, value) };
    }
}

/// The network settings could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The proxy URL is not one the worker can use.
    #[error("the proxy {proxy} ({from}) {problem}")]
    Proxy {
        /// The proxy, without credentials.
        proxy: String,
        /// Where it came from: a setting or a variable.
        from: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// No CA is trusted at all: the system's store is empty or unreadable
    /// and no extra CA is given.
    #[error(
        "no trusted CA: the system's store is empty (install ca-certificates, or check SSL_CERT_FILE and SSL_CERT_DIR) and network.extra_ca_file names none"
    )]
    NoRoots,
    /// The extra CA file cannot be read, or holds no certificate.
    #[error("network.extra_ca_file {path}: {problem}")]
    ExtraCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// An HTTP CONNECT proxy.
#[derive(Clone)]
pub(crate) struct Proxy {
    host: String,
    port: u16,
    /// `Basic …`, when the URL carries credentials.
    authorization: Option<String>,
    url: Url,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl std::fmt::Display for Proxy {
    /// The proxy without its credentials: safe for logs and errors.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "proxy http://[{}]:{}", self.host, self.port)?,
            false => write!(f, "proxy http://{}:{}", self.host, self.port)?,
        }
        if self.authorization.is_some() {
            f.write_str(" (with credentials)")?;
        }
        Ok(())
    }
}

impl Proxy {
    fn parse(text: &str, from: &'static str) -> Result<Self, NetworkError> {
        // `proxy:3128` is read as curl reads it: http://proxy:3128.
        let with_scheme = match text.contains("://") {
            true => text.to_owned(),
            false => format!("http://{text}"),
        };
        let problem = |problem| NetworkError::Proxy {
            proxy: crate::config::redacted(&with_scheme),
            from,
            problem,
        };
        let url = Url::parse(&with_scheme).map_err(|_| problem("is not a URL"))?;
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(problem(
                "has a path, a query or a fragment; write http://[USER:PASSWORD@]HOST:PORT, with any /, ? or # in the password percent-encoded",
            ));
        }
        if url.scheme() != "http" {
            return Err(problem(
                "is not an http:// proxy; the worker speaks HTTP CONNECT to its proxy (TLS runs inside the tunnel)",
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(problem("names no host")),
        };
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| problem("has credentials that are not valid percent-encoded UTF-8"))
        };
        let authorization = match (url.username(), url.password()) {
            ("", None) => None,
            (user, password) => {
                use base64::Engine;
                let pair = format!("{}:{}", decode(user)?, decode(password.unwrap_or(""))?);
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
        };
        Ok(Self {
            port: url.port().unwrap_or(80),
            host,
            authorization,
            url,
        })
    }

    /// `HOST:PORT`, to connect to.
    pub(crate) fn address(&self) -> (String, u16) {
        (self.host.clone(), self.port)
    }

    /// The `Proxy-Authorization` value, when the URL carries credentials.
    pub(crate) fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Which way a connection to a host goes.
#[derive(Clone, Debug)]
pub(crate) enum Way {
    /// Straight to the host.
    Direct,
    /// Through the proxy, with CONNECT.
    Proxy(Proxy),
}

impl std::fmt::Display for Way {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Way::Direct => f.write_str("direct"),
            Way::Proxy(proxy) => proxy.fmt(f),
        }
    }
}

/// The worker's way out: the proxy (if any), the hosts that bypass it, and
/// the CAs trusted besides the system's.
#[derive(Clone, Debug, Default)]
pub(crate) struct Egress {
    proxy: Option<Proxy>,
    no_proxy: NoProxy,
    extra_roots: Arc<Vec<CertificateDer<'static>>>,
}

/// Hosts that never go through a proxy: the GKE metadata server.
const METADATA_HOSTS: [&str; 2] = ["metadata.google.internal", "169.254.169.254"];

impl Egress {
    /// The way the settings (and, where they say nothing, the environment)
    /// describe. The extra CA file is read now: unreadable, or without a
    /// certificate, it is an error.
    pub(crate) fn from_settings(settings: &NetworkSettings) -> Result<Self, NetworkError> {
        let proxy = match settings.proxy.trim() {
            direct if direct.eq_ignore_ascii_case("direct") => None,
            // The environment's proxy serves other programs too: one the
            // worker cannot use (socks5://, https://) is said and skipped.
            "" => match &settings.env_proxy {
                Some(text) => match Proxy::parse(text, "HTTPS_PROXY in the environment") {
                    Ok(proxy) => Some(proxy),
                    Err(e) => {
                        tracing::warn!("{e}; it is ignored (set network.proxy to override)");
                        None
                    }
                },
                None => None,
            },
            text => Some(Proxy::parse(text, "network.proxy")?),
        };
        let no_proxy = match settings.no_proxy.trim() {
            "" => NoProxy::parse(settings.env_no_proxy.as_deref().unwrap_or("")),
            text => NoProxy::parse(text),
        };
        let extra_roots = match &settings.extra_ca_file {
            Some(path) => read_pem(path)?,
            None => Vec::new(),
        };
        Ok(Self {
            proxy,
            no_proxy,
            extra_roots: Arc::new(extra_roots),
        })
    }

    /// How a connection to `host` goes.
    pub(crate) fn way(&self, host: &str) -> Way {
        let bare = host.trim_matches(['[', ']']);
        let local = bare.eq_ignore_ascii_case("localhost")
            || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || METADATA_HOSTS.iter().any(|m| bare.eq_ignore_ascii_case(m));
        match &self.proxy {
            Some(proxy) if !local && !self.no_proxy.matches(bare) => Way::Proxy(proxy.clone()),
            _ => Way::Direct,
        }
    }

    /// The CAs trusted besides the system's.
    pub(crate) fn extra_roots(&self) -> &[CertificateDer<'static>] {
        &self.extra_roots
    }

    /// A reqwest client builder that goes this way: the proxy (with its
    /// credentials) for the hosts that take it, and the extra CAs on top of
    /// the system's.
    pub(crate) fn http_client(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder().no_proxy();
        if self.proxy.is_some() {
            let egress = self.clone();
            builder = builder.proxy(reqwest::Proxy::custom(move |url| {
                match url.host_str().map(|host| egress.way(host)) {
                    Some(Way::Proxy(proxy)) => Some(proxy.url.clone()),
                    _ => None,
                }
            }));
        }
        let extra = self
            .extra_roots
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok());
        builder.tls_certs_merge(extra)
    }
}

fn read_pem(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, NetworkError> {
    let problem = |problem: String| NetworkError::ExtraCa {
        path: path.to_owned(),
        problem,
    };
    let text = std::fs::read(path).map_err(|e| problem(format!("cannot be read ({e})")))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| problem(format!("is not a PEM bundle ({e})")))?;
    if certs.is_empty() {
        return Err(problem(
            "holds no certificate (expected -----BEGIN CERTIFICATE----- blocks)".into(),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(proxy: &str, no_proxy: &str, env: Option<&str>) -> NetworkSettings {
        let mut s: NetworkSettings =
            serde_json::from_value(serde_json::json!({"proxy": proxy, "no_proxy": no_proxy}))
                .expect("settings");
        s.env_proxy = env.map(str::to_owned);
        s
    }

    #[test]
    fn the_setting_overrides_the_environment() {
        let egress = Egress::from_settings(&settings("", "", Some("http://env:3128"))).expect("ok");
        assert_eq!(
            egress.way("pubsub.googleapis.com").to_string(),
            "proxy http://env:3128"
        );
        let egress =
            Egress::from_settings(&settings("http://set:8080", "", Some("http://env:3128")))
                .expect("ok");
        assert_eq!(
            egress.way("pubsub.googleapis.com").to_string(),
            "proxy http://set:8080"
        );
        let egress =
            Egress::from_settings(&settings("direct", "", Some("http://env:3128"))).expect("ok");
        assert_eq!(egress.way("pubsub.googleapis.com").to_string(), "direct");
    }

    #[test]
    fn loopback_and_the_metadata_server_never_take_the_proxy() {
        let egress = Egress::from_settings(&settings("proxy:3128", "chat.googleapis.com", None))
            .expect("ok");
        for host in [
            "127.0.0.1",
            "localhost",
            "[::1]",
            "metadata.google.internal",
            "169.254.169.254",
            "chat.googleapis.com",
        ] {
            assert!(matches!(egress.way(host), Way::Direct), "{host}");
        }
        assert!(matches!(egress.way("pubsub.googleapis.com"), Way::Proxy(_)));
    }

    #[test]
    fn credentials_never_show() {
        let egress =
            Egress::from_settings(&settings("http://alice:s%40cret@proxy.corp:3128", "", None))
                .expect("ok");
        let way = egress.way("pubsub.googleapis.com");
        let shown = format!("{way} {way:?} {egress:?}");
        assert!(
            !shown.contains("s@cret") && !shown.contains("s%40cret") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(
            shown.contains("proxy http://proxy.corp:3128 (with credentials)"),
            "{shown}"
        );
        let Way::Proxy(proxy) = way else {
            panic!("proxied")
        };
        use base64::Engine;
        let expected = base64::engine::general_purpose::STANDARD.encode("alice:s@cret");
        assert_eq!(
            proxy.authorization(),
            Some(format!("Basic {expected}").as_str())
        );
        let e = Egress::from_settings(&settings("socks5://bob:pw@proxy:1080", "", None))
            .expect_err("not http");
        assert!(!e.to_string().contains("pw"), "{e}");
        use crate::config::redacted;
        assert_eq!(redacted("http://u:p@h:1"), "http://h:1 (with credentials)");
        assert_eq!(redacted("u:p@h:1"), "h:1");
    }

    #[test]
    fn an_extra_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("chatworker-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let mut s = settings("", "", None);
        s.extra_ca_file = Some(empty);
        let e = Egress::from_settings(&s).expect_err("no certificate");
        assert!(e.to_string().contains("holds no certificate"), "{e}");
        s.extra_ca_file = Some(dir.join("missing.pem"));
        let e = Egress::from_settings(&s).expect_err("missing");
        assert!(e.to_string().contains("cannot be read"), "{e}");
    }
}
