//! A TLS-inspecting HTTP CONNECT proxy, as companies run them: it answers
//! `CONNECT host:443`, asks for a password when told to, refuses hosts it
//! does not know (403), then ends the TLS itself with a certificate for the
//! host signed by its own CA, and passes the plaintext to a local backend
//! (the emulator, the simulator). Nothing else can reach "Google": the
//! names do not resolve here, so only the proxy's routes lead anywhere.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy's TLS offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/2 and HTTP/1.1, as a modern proxy does.
    Http2,
    /// HTTP/1.1 only: gRPC cannot pass.
    Http1Only,
}

/// The proxy, running until dropped.
pub struct InspectingProxy {
    pub addr: SocketAddr,
    /// The proxy's CA, PEM: what `network.extra_ca_file` names.
    pub ca_file: PathBuf,
    tunnels: Arc<Mutex<HashMap<String, u64>>>,
    down: tokio::sync::watch::Sender<bool>,
    _dir: TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl InspectingProxy {
    /// Routes `host` (as asked for with CONNECT, port ignored) to a local
    /// address; with `credentials`, asks for them (407 otherwise).
    pub async fn start(
        routes: &[(&str, SocketAddr)],
        alpn: Alpn,
        credentials: Option<(&str, &str)>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "chatworker test inspecting proxy CA");
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "chatworker tests");
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let ca_file = dir.path().join("proxy-ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let mut configs = HashMap::new();
        let mut targets = HashMap::new();
        for (host, target) in routes {
            let key = KeyPair::generate().expect("key");
            let params = CertificateParams::new(vec![(*host).to_owned()]).expect("params");
            let cert = params.signed_by(&key, &issuer).expect("leaf");
            let chain = vec![CertificateDer::from(cert.der().to_vec())];
            let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, private)
                .expect("server config");
            config.alpn_protocols = match alpn {
                Alpn::Http2 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                Alpn::Http1Only => vec![b"http/1.1".to_vec()],
            };
            configs.insert((*host).to_owned(), Arc::new(config));
            targets.insert((*host).to_owned(), *target);
        }
        let expected = credentials.map(|(user, password)| {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tunnels = Arc::new(Mutex::new(HashMap::new()));
        let (down, _) = tokio::sync::watch::channel(false);
        let routes = Arc::new(Routes {
            configs,
            targets,
            expected,
            tunnels: tunnels.clone(),
            down: down.clone(),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let is_down = down.subscribe();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                if *is_down.borrow() {
                    drop(stream);
                    continue;
                }
                let routes = routes.clone();
                tokio::spawn(async move {
                    let _ = routes.serve(stream).await;
                });
            }
        });
        Self {
            addr,
            ca_file,
            tunnels,
            down,
            _dir: dir,
            _stop: stop,
        }
    }

    /// Takes the proxy away (every tunnel cut, every new connection closed
    /// at once), or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    /// Tunnels opened to `host` (CONNECT answered 200).
    pub fn tunnels_to(&self, host: &str) -> u64 {
        self.tunnels
            .lock()
            .expect("tunnels")
            .get(host)
            .copied()
            .unwrap_or(0)
    }

    /// `http://[USER:PASSWORD@]127.0.0.1:PORT`.
    pub fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, password)) => format!("http://{user}:{password}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }
}

struct Routes {
    configs: HashMap<String, Arc<rustls::ServerConfig>>,
    targets: HashMap<String, SocketAddr>,
    expected: Option<String>,
    tunnels: Arc<Mutex<HashMap<String, u64>>>,
    down: tokio::sync::watch::Sender<bool>,
}

impl Routes {
    async fn serve(&self, mut client: TcpStream) -> std::io::Result<()> {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(client.read_u8().await?);
            if head.len() > 16 * 1024 {
                return Ok(());
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let request = lines.next().unwrap_or_default();
        let mut parts = request.split_whitespace();
        let (Some("CONNECT"), Some(authority)) = (parts.next(), parts.next()) else {
            client
                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                .await?;
            return Ok(());
        };
        if let Some(expected) = &self.expected {
            let given = lines.find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("proxy-authorization")
                    .then(|| value.trim().to_owned())
            });
            if given.as_deref() != Some(expected.as_str()) {
                client
                    .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\n\r\n")
                    .await?;
                return Ok(());
            }
        }
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let (Some(config), Some(target)) = (self.configs.get(host), self.targets.get(host)) else {
            client
                .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                .await?;
            return Ok(());
        };
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        *self
            .tunnels
            .lock()
            .expect("tunnels")
            .entry(host.to_owned())
            .or_default() += 1;
        let mut tls = tokio_rustls::TlsAcceptor::from(config.clone())
            .accept(client)
            .await?;
        let mut backend = TcpStream::connect(target).await?;
        let _ = backend.set_nodelay(true);
        let mut down = self.down.subscribe();
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut tls, &mut backend) => {}
            _ = down.wait_for(|down| *down) => {}
        }
        Ok(())
    }
}
