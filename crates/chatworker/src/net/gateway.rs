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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

/// How often, at most, a pull that still cannot connect is logged again.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the gateway knows of its link to Pub/Sub: connected yet, down
/// since when, and why.
#[derive(Debug)]
pub(crate) struct Link {
    host: String,
    state: Mutex<LinkState>,
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
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connected(&self, way: &Way, alpn: Option<&[u8]>) {
        let mut state = self.state();
        let first = !state.connected_once;
        let was_down = state.down_since.take();
        state.connected_once = true;
        state.last_warned = None;
        state.last_error = None;
        let http = match alpn {
            Some(b"h2") => "HTTP/2",
            _ => "HTTP/1.1",
        };
        match (first, was_down) {
            (_, Some(since)) => tracing::warn!(
                host = %self.host, way = %way, http,
                down_for = ?since.elapsed(),
                "Pub/Sub reached again"
            ),
            (true, None) => tracing::info!(host = %self.host, way = %way, http, "Pub/Sub reached"),
            (false, None) => {
                tracing::debug!(host = %self.host, way = %way, http, "new connection to Pub/Sub")
            }
        }
    }

    fn failed(&self, error: &EgressError) {
        let mut state = self.state();
        state.down_since.get_or_insert_with(Instant::now);
        let changed = state.last_error.as_ref().map(EgressError::cause) != Some(error.cause());
        let due = state
            .last_warned
            .is_none_or(|at| at.elapsed() >= WARN_EVERY);
        state.last_error = Some(error.clone());
        if due || changed {
            state.last_warned = Some(Instant::now());
            let down_for = state.down_since.map(|at| at.elapsed()).unwrap_or_default();
            tracing::warn!(
                host = %self.host,
                cause = error.cause(),
                down_for = ?down_for,
                "Pub/Sub cannot be reached, so no event can arrive: {error}"
            );
        } else {
            tracing::debug!(host = %self.host, error = %error, "Pub/Sub still cannot be reached");
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
                "the streaming pull has not connected to {} yet",
                self.host
            )));
        }
        match state.down_since {
            Some(since) if since.elapsed() > unready_after => Err(why(format!(
                "the streaming pull has not reached {} for {:?}",
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
        let host = upstream
            .host_str()
            .ok_or_else(|| io::Error::other("the Pub/Sub endpoint names no host"))?
            .to_owned();
        let port = upstream.port_or_known_default().unwrap_or(443);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let local = listener.local_addr()?;
        let link = Arc::new(Link::new(&host));
        let roots = Roots::load(&egress);
        let target = Arc::new(Target {
            egress,
            roots,
            host: host.clone(),
            port,
            link: link.clone(),
        });
        let authority: http::uri::Authority = match port {
            443 => host.parse(),
            port => format!("{host}:{port}").parse(),
        }
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
                let Ok((stream, _)) = accepted else { continue };
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

struct Forward {
    grpc: Client<Connector, Incoming>,
    rest: Client<Connector, Incoming>,
    authority: http::uri::Authority,
}

impl Forward {
    async fn call(&self, mut request: Request<Incoming>) -> Result<Response<Incoming>, io::Error> {
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
        client.request(request).await.map_err(|e| {
            // The cause was logged by the connector; the client sees a
            // failed call and retries as it does for any network error.
            io::Error::other(e)
        })
    }
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
            match result {
                Ok(upstream) => {
                    if http2 {
                        target
                            .link
                            .connected(&upstream.way, upstream.alpn.as_deref());
                    }
                    Ok(Conn {
                        io: TokioIo::new(upstream.stream),
                        h2: upstream.alpn.as_deref() == Some(b"h2"),
                    })
                }
                Err(e) => {
                    if http2 {
                        target.link.failed(&e);
                    } else {
                        // The call fails with it; the probe's outage log
                        // and the command that made it say so.
                        tracing::debug!(host = %target.host, cause = e.cause(), "a Pub/Sub call cannot reach Pub/Sub: {e}");
                    }
                    Err(e)
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
