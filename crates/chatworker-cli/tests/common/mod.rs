//! The shared harness (`chatworker-testkit`), and the binary under test.

#![allow(dead_code, unused_imports)]

pub use chatworker_testkit::*;

/// The `chatworker` binary cargo built for these tests.
pub fn chatworker() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_chatworker"))
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A GET's status and body; status 0 and the error when there is no answer.
pub async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

// ------------------------------------------- behind the firewall (proxies)

/// `host:port` (or `http://host:port`) as a socket address.
pub fn local(host_port: &str) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    host_port
        .trim_start_matches("http://")
        .to_socket_addrs()
        .expect("an address")
        .next()
        .expect("one address")
}

/// The proxy's routes: "Google" is the emulator and the simulator.
pub async fn proxy_in_front(
    sim: &Sim,
    alpn: chatworker_testkit::proxy::Alpn,
    credentials: Option<(&str, &str)>,
) -> chatworker_testkit::proxy::InspectingProxy {
    let routes = [
        ("pubsub.googleapis.com", local(&emulator_host())),
        ("chat.googleapis.com", local(&sim.url)),
    ];
    chatworker_testkit::proxy::InspectingProxy::start(&routes, alpn, credentials).await
}

/// The simulator, answering to Google's name too (the proxy routes it here).
pub async fn chat_behind_the_proxy() -> Sim {
    Sim::start_with_options(chatworker_sim::SimOptions {
        also_hosts: vec!["chat.googleapis.com".into()],
        ..Default::default()
    })
    .await
}

/// The worker's environment behind `proxy`: no emulator variable, Google's
/// endpoints, the proxy from `HTTPS_PROXY`.
pub fn behind<'a>(
    proxy_url: &'a str,
    ca: Option<&'a str>,
    listen: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("PUBSUB_EMULATOR_HOST", ""),
        ("HTTPS_PROXY", proxy_url),
        ("CHATWORKER_CHAT__ENDPOINT", "https://chat.googleapis.com"),
        ("CHATWORKER_SERVER__LISTEN", listen),
    ];
    if let Some(ca) = ca {
        env.push(("CHATWORKER_NETWORK__EXTRA_CA_FILE", ca));
    }
    env
}
