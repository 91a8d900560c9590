//! `chatworker check`'s egress test: each Google host the worker will use,
//! reached the way it will be (direct or through the proxy), with TLS as it
//! will be (the system's CAs and the extra ones), and what came of it.

use super::tunnel::Roots;
use super::{Egress, EgressError};
use crate::config::Settings;
use crate::config::Transport;
use std::time::{Duration, Instant};

/// One host the worker uses, tried.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HostCheck {
    /// The host and port.
    pub host: String,
    /// What the worker uses it for.
    pub purpose: &'static str,
    /// The way: `direct`, or the proxy (without credentials).
    pub way: String,
    /// The issuer of the certificate the host presented (a TLS-inspecting
    /// proxy's CA shows here).
    pub issuer: Option<String>,
    /// The HTTP version agreed (`HTTP/2`, `HTTP/1.1`).
    pub http: Option<&'static str>,
    /// How long reaching it took (TCP, the proxy, TLS).
    pub latency: Option<Duration>,
    /// `Ok` when the worker can use it, else the cause and its fix.
    pub result: Result<(), String>,
}

/// Tries every host the settings make the worker use. With the emulator,
/// Pub/Sub is local and not tried.
pub async fn check(settings: &Settings) -> Result<Vec<HostCheck>, super::NetworkError> {
    let egress = Egress::from_settings(&settings.network)?;
    let roots = Roots::load(&egress)?;
    let mut hosts: Vec<(String, u16, &'static str, bool)> = Vec::new();
    if settings.pubsub.emulator_host.is_none() {
        let url = settings
            .pubsub
            .endpoint
            .clone()
            .unwrap_or_else(|| "https://pubsub.googleapis.com".parse().expect("a URL"));
        if let Some(host) = url.host_str() {
            let port = url.port_or_known_default().unwrap_or(443);
            let (purpose, grpc) = match settings.pubsub.transport {
                Transport::Rest => ("Pub/Sub (pull over REST)", false),
                _ => ("Pub/Sub (streaming pull, gRPC)", true),
            };
            hosts.push((host.to_owned(), port, purpose, grpc));
        }
    }
    let mut https = |url: &reqwest::Url, purpose| {
        if url.scheme() == "https"
            && let Some(host) = url.host_str()
        {
            let port = url.port_or_known_default().unwrap_or(443);
            hosts.push((host.to_owned(), port, purpose, false));
        }
    };
    https(&settings.chat.endpoint, "Chat API");
    if settings.chat.impersonate_service_account.is_some() {
        https(
            &settings.chat.iam_endpoint,
            "IAM Credentials (keyless Chat tokens)",
        );
    }
    let mut checks = Vec::new();
    for (host, port, purpose, grpc) in hosts {
        // As the worker will: the gateway offers both and needs HTTP/2;
        // the Chat and IAM clients speak HTTP/1.1.
        let alpn: &[&[u8]] = match grpc {
            true => &[b"h2", b"http/1.1"],
            false => &[b"http/1.1"],
        };
        let way = egress.way(&host).to_string();
        let started = Instant::now();
        let connected = egress.connect(&roots, &host, port, alpn).await;
        let latency = started.elapsed();
        let check = match connected {
            Ok(upstream) => {
                let h2 = upstream.alpn.as_deref() == Some(b"h2");
                // Without HTTP/2, `auto` pulls over REST; only `grpc` fails.
                let (purpose, result) = match (grpc, h2, settings.pubsub.transport) {
                    (true, false, Transport::Grpc) => (
                        purpose,
                        Err(EgressError::NoHttp2 {
                            host: host.clone(),
                            way: way.clone(),
                        }
                        .to_string()),
                    ),
                    (true, false, _) => ("Pub/Sub (pull over REST: no HTTP/2 this way)", Ok(())),
                    _ => (purpose, Ok(())),
                };
                HostCheck {
                    host: format!("{host}:{port}"),
                    purpose,
                    way,
                    issuer: upstream.issuer,
                    http: Some(if h2 { "HTTP/2" } else { "HTTP/1.1" }),
                    latency: Some(latency),
                    result,
                }
            }
            Err(e) => HostCheck {
                host: format!("{host}:{port}"),
                purpose,
                way,
                issuer: match &e {
                    EgressError::UnknownCa { issuer, .. } => Some(issuer.clone()),
                    _ => None,
                },
                http: None,
                latency: None,
                result: Err(e.to_string()),
            },
        };
        checks.push(check);
    }
    Ok(checks)
}
