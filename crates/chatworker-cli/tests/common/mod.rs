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
