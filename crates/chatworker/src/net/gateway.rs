//! The Pub/Sub gateway: a listener on loopback that the official Pub/Sub
//! clients are pointed at (plain HTTP/2 for gRPC, HTTP/1.1 for the admin
//! calls), and that forwards every request to Pub/Sub's real endpoint the
//! [`Egress`]'s way: through the proxy or not, with TLS trusting the extra
//! CAs. The official gRPC stack (tonic) has no proxy support and no way to
//! add a CA; this is how the streaming pull gets both without forking it.
//! The gateway also sees every connection attempt, so it is where a pull
//! that cannot connect is noticed, logged with its cause, and reported to
//! readiness ([`Link`]).

use super::tunnel::Roots;
use super::{Egress, EgressError, Way};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;

/// How often, at most, a pull that still cannot connect is logged again.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// How long a gRPC call waits for a connection to Pub/Sub before it fails.
const HOLD: Duration = Duration::from_secs(20);

/// What the gateway knows of its link to Pub/Sub: connected yet, down
/// since when, and why.
#[derive(Debug)]
pub(crate) struct Link {
    host: String,
    state: Mutex<LinkState>,
    /// The pull goes over REST: the HTTP/1.1 connections report the link,
    /// the gRPC ones no longer do.
    over_rest: AtomicBool,
    /// `pubsub.transport = "auto"`: HTTP/2 refused is not an outage but a
    /// reason to pull over REST, said through `fallback`.
    fallback_armed: AtomicBool,
    fallback: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct LinkState {
    connected_once: bool,
    down_since: Option<Instant>,
    last_warned: Option<Instant>,
    last_error: Option<EgressError>,
}

impl Link {
    fn new(host: &str) -> Self {
        Self {
            host: host.to_owned(),
            state: Mutex::default(),
            over_rest: AtomicBool::new(false),
            fallback_armed: AtomicBool::new(false),
            fallback: watch::channel(false).0,
        }
    }

    /// From now on the pull goes over REST: its connections are the ones
    /// that say whether Pub/Sub can be reached.
    pub(crate) fn pull_over_rest(&self) {
        self.over_rest.store(true, Relaxed);
    }

    /// Whether a connection of this kind speaks for the pull.
    fn reports(&self, http2: bool) -> bool {
        http2 != self.over_rest.load(Relaxed)
    }

    /// Arms the fallback: the first time HTTP/2 cannot be negotiated, it is
    /// said once at WARNING and the receiver turns true.
    pub(crate) fn fall_back_to_rest(&self) -> watch::Receiver<bool> {
        self.fallback_armed.store(true, Relaxed);
        self.fallback.subscribe()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection for the pull was made: TLS (and, for gRPC, HTTP/2)
    /// agreed.
    fn connected(&self, way: &Way, alpn: Option<&[u8]>) {
        let http = match alpn {
            Some(b"h2") => "HTTP/2",
            _ => "HTTP/1.1",
        };
        let mut state = self.state();
        if state.connected_once && state.down_since.is_none() {
            tracing::debug!(host = %self.host, way = %way, http, "new connection to Pub/Sub");
            return;
        }
        let first = !state.connected_once;
        let was_down = state.down_since.take();
        state.connected_once = true;
        state.last_warned = None;
        state.last_error = None;
        match (first, was_down) {
            (_, Some(since)) => tracing::warn!(
                host = %self.host, way = %way, http,
                down_for = ?since.elapsed(),
                "Pub/Sub reached again"
            ),
            _ => tracing::info!(host = %self.host, way = %way, http, "Pub/Sub reached"),
        }
    }

    /// A connection could not be made: logged at once, then at most once
    /// a minute while it lasts.
    fn failed(&self, error: &EgressError, way: &Way) {
        if matches!(error, EgressError::NoHttp2 { .. }) && self.fallback_armed.load(Relaxed) {
            if !self.fallback.send_replace(true) {
                tracing::warn!(
                    host = %self.host,
                    way = %way,
                    "HTTP/2 could not be negotiated with Pub/Sub (the way offers only HTTP/1.1), so the streaming pull cannot work: pulling over REST instead (pubsub.transport = \"auto\"); set pubsub.transport = \"rest\" to start that way"
                );
            }
            return;
        }
        let mut state = self.state();
        state.down_since.get_or_insert_with(Instant::now);
        let due = state
            .last_warned
            .is_none_or(|at| at.elapsed() >= WARN_EVERY);
        state.last_error = Some(error.clone());
        if due {
            state.last_warned = Some(Instant::now());
            let down_for = state.down_since.map(|at| at.elapsed()).unwrap_or_default();
            tracing::warn!(
                host = %self.host,
                way = %way,
                cause = error.cause(),
                down_for = ?down_for,
                "Pub/Sub cannot be reached, so no event can arrive: {error}"
            );
        } else {
            tracing::debug!(host = %self.host, way = %way, error = %error, "Pub/Sub still cannot be reached");
        }
    }

    /// `Err(why)` while the pull has never connected, or has been unable to
    /// for longer than `unready_after`.
    pub(crate) fn readiness(&self, unready_after: Duration) -> Result<(), String> {
        let state = self.state();
        let why = |what: String| match &state.last_error {
            Some(e) => format!("{what}: {e}"),
            None => what,
        };
        if !state.connected_once {
            return Err(why(format!(
                "the pull has not connected to {} yet",
                self.host
            )));
        }
        match state.down_since {
            Some(since) if since.elapsed() > unready_after => Err(why(format!(
                "the pull has not reached {} for {:?}",
                self.host,
                since.elapsed()
            ))),
            _ => Ok(()),
        }
    }
}

/// The gateway: where the Pub/Sub clients connect, and its link.
#[derive(Debug)]
pub(crate) struct Gateway {
    local: SocketAddr,
    link: Arc<Link>,
    _stop: tokio_util::sync::DropGuard,
}

impl Gateway {
    /// Listens on loopback and forwards to `upstream` (`https://HOST[:PORT]`).
    pub(crate) async fn start(egress: Egress, upstream: &reqwest::Url) -> io::Result<Self> {
        let host = match upstream.host() {
            Some(url::Host::Domain(name)) => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(io::Error::other("the Pub/Sub endpoint names no host")),
        };
        let port = upstream.port_or_known_default().unwrap_or(443);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let local = listener.local_addr()?;
        let link = Arc::new(Link::new(&host));
        let roots = Roots::load(&egress).map_err(io::Error::other)?;
        let target = Arc::new(Target {
            egress,
            roots,
            host: host.clone(),
            port,
            link: link.clone(),
        });
        let authority: http::uri::Authority = authority(&host, port)
            .parse()
            .map_err(|e| io::Error::other(format!("the Pub/Sub endpoint: {e}")))?;
        let grpc = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .build(Connector {
                target: target.clone(),
                http2: true,
            });
        let rest = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .build(Connector {
                target,
                http2: false,
            });
        let forward = Arc::new(Forward {
            grpc,
            rest,
            authority,
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stopped.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors, say: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let forward = forward.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let forward = forward.clone();
                        async move { forward.call(request).await }
                    });
                    let mut server =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    server.http1().timer(TokioTimer::new());
                    server.http2().timer(TokioTimer::new());
                    let served = server.serve_connection(TokioIo::new(stream), service).await;
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "a Pub/Sub client's connection to the gateway ended");
                    }
                });
            }
        });
        tracing::debug!(%local, upstream = %upstream, "Pub/Sub gateway listening");
        Ok(Self {
            local,
            link,
            _stop: stop.drop_guard(),
        })
    }

    /// The endpoint to give the Pub/Sub clients.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.local)
    }

    /// The link to Pub/Sub.
    pub(crate) fn link(&self) -> Arc<Link> {
        self.link.clone()
    }
}

/// The `:authority` Pub/Sub expects, as Google's own client sends it: the
/// endpoint's host for a locational (`REGION-pubsub.googleapis.com`) or
/// regional (`pubsub.REGION.rep.googleapis.com`) endpoint and for a host
/// outside `googleapis.com`; the service's own name for a Private Service
/// Connect or VPC Service Controls one (`pubsub-NAME.p.googleapis.com`,
/// `restricted.googleapis.com`), which is connected to by its own name.
fn authority(host: &str, port: u16) -> String {
    const SERVICE: &str = "pubsub";
    let name = match host.strip_suffix(".googleapis.com") {
        None => host.to_owned(),
        Some(prefix) => {
            let parts: Vec<&str> = prefix.split('.').collect();
            let locational = |p: &str| {
                p.strip_suffix(SERVICE)
                    .and_then(|p| p.strip_suffix('-'))
                    .is_some_and(|region| !region.is_empty())
            };
            match parts[..] {
                [service] if service == SERVICE => host.to_owned(),
                [service, _, "rep"] if service == SERVICE => host.to_owned(),
                [location] if locational(location) => host.to_owned(),
                _ => format!("{SERVICE}.googleapis.com"),
            }
        }
    };
    let name = match name.contains(':') {
        true => format!("[{name}]"),
        false => name,
    };
    match port {
        443 => name,
        port => format!("{name}:{port}"),
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

struct Forward {
    grpc: Client<Connector, Incoming>,
    rest: Client<Connector, Incoming>,
    authority: http::uri::Authority,
}

impl Forward {
    async fn call(&self, mut request: Request<Incoming>) -> Result<Response<Body>, io::Error> {
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let uri = Uri::builder()
            .scheme("https")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(io::Error::other)?;
        *request.uri_mut() = uri;
        request.headers_mut().remove(http::header::HOST);
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        let client = match grpc {
            true => &self.grpc,
            false => {
                *request.version_mut() = http::Version::HTTP_11;
                request.headers_mut().insert(
                    http::header::HOST,
                    http::HeaderValue::from_str(self.authority.as_str())
                        .map_err(io::Error::other)?,
                );
                &self.rest
            }
        };
        match client.request(request).await {
            Ok(response) => Ok(response.map(BodyExt::boxed)),
            // The client gets the cause in its own terms (and retries as it
            // does for any unavailable service); the link logged it.
            Err(e) => {
                let cause = cause_of(&e);
                tracing::debug!(error = %cause, "a call through the gateway failed");
                Ok(match grpc {
                    true => unavailable_grpc(&cause),
                    false => unavailable_rest(&cause),
                })
            }
        }
    }
}

/// The egress failure inside a client error, else the error itself.
fn cause_of(e: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if let Some(egress) = error.downcast_ref::<EgressError>() {
            return egress.to_string();
        }
        source = error.source();
    }
    format!("Pub/Sub could not be reached: {e}")
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A trailers-only gRPC answer: UNAVAILABLE (14), with the cause.
fn unavailable_grpc(cause: &str) -> Response<Body> {
    // grpc-message is percent-encoded: anything outside printable ASCII,
    // and `%` itself.
    let message: String = cause
        .bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'%' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    let mut response = Response::new(empty());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", http::HeaderValue::from_static("14"));
    if let Ok(value) = http::HeaderValue::from_str(&message) {
        headers.insert("grpc-message", value);
    }
    response
}

/// A 503 UNAVAILABLE in Google's error shape, so the admin client shows the cause.
fn unavailable_rest(cause: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": {"code": 503, "status": "UNAVAILABLE", "message": cause}
    })
    .to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Where the gateway forwards to, and how.
struct Target {
    egress: Egress,
    roots: Roots,
    host: String,
    port: u16,
    link: Arc<Link>,
}

#[derive(Clone)]
struct Connector {
    target: Arc<Target>,
    http2: bool,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = EgressError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, EgressError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let target = self.target.clone();
        let http2 = self.http2;
        Box::pin(async move {
            // HTTP/1.1 is offered too, so that a proxy without HTTP/2
            // completes the handshake and the cause can be named.
            let alpn: &[&[u8]] = match http2 {
                true => &[b"h2", b"http/1.1"],
                false => &[b"http/1.1"],
            };
            // A gRPC call waits for a connection (trying again every few
            // seconds, up to `HOLD`) rather than fail at once: the client's
            // own backoff after quick failures grows to a minute, which would
            // keep the pull away for that long after the way is back.
            let started = tokio::time::Instant::now();
            let mut pause = Duration::from_millis(250);
            loop {
                let result = target
                    .egress
                    .connect(&target.roots, &target.host, target.port, alpn)
                    .await
                    .and_then(
                        |upstream| match http2 && upstream.alpn.as_deref() != Some(b"h2") {
                            true => Err(EgressError::NoHttp2 {
                                host: target.host.clone(),
                                way: upstream.way.to_string(),
                            }),
                            false => Ok(upstream),
                        },
                    );
                let reports = target.link.reports(http2);
                match result {
                    Ok(upstream) => {
                        if reports {
                            target
                                .link
                                .connected(&upstream.way, upstream.alpn.as_deref());
                        }
                        return Ok(Conn {
                            io: TokioIo::new(upstream.stream),
                            h2: upstream.alpn.as_deref() == Some(b"h2"),
                        });
                    }
                    Err(e) if http2 && reports => {
                        target.link.failed(&e, &target.egress.way(&target.host));
                        if started.elapsed() + pause > HOLD {
                            return Err(e);
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(4));
                    }
                    // The REST pull's call fails with it; the pull tries again
                    // with backoff.
                    Err(e) if reports => {
                        target.link.failed(&e, &target.egress.way(&target.host));
                        return Err(e);
                    }
                    Err(e) => {
                        // The call fails with it; the probe's outage log and
                        // the command that made the call say so.
                        tracing::debug!(host = %target.host, cause = e.cause(), "a Pub/Sub call cannot reach Pub/Sub: {e}");
                        return Err(e);
                    }
                }
            }
        })
    }
}

/// A connection to Pub/Sub, as hyper's client wants it.
struct Conn {
    io: TokioIo<TlsStream<TcpStream>>,
    h2: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self.h2 {
            true => Connected::new().negotiated_h2(),
            false => Connected::new(),
        }
    }
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::authority;

    #[test]
    fn the_authority_is_what_googles_own_client_sends() {
        assert_eq!(
            authority("pubsub.googleapis.com", 443),
            "pubsub.googleapis.com"
        );
        assert_eq!(
            authority("europe-west3-pubsub.googleapis.com", 443),
            "europe-west3-pubsub.googleapis.com"
        );
        assert_eq!(
            authority("pubsub.europe-west3.rep.googleapis.com", 443),
            "pubsub.europe-west3.rep.googleapis.com"
        );
        // Private Service Connect and the restricted VIP: reached by their
        // own names, asked for as the service.
        assert_eq!(
            authority("pubsub-corp.p.googleapis.com", 443),
            "pubsub.googleapis.com"
        );
        assert_eq!(
            authority("restricted.googleapis.com", 443),
            "pubsub.googleapis.com"
        );
        assert_eq!(
            authority("pubsub.internal.corp", 8443),
            "pubsub.internal.corp:8443"
        );
        assert_eq!(authority("::1", 8443), "[::1]:8443");
    }
}
