//! A bot whose handler does real CPU work per message: how to keep such work
//! off the runtime's threads, and what the fleet is for.
//!
//! Each message costs `HEAVY_WORK_MS` milliseconds of CPU (20 by default),
//! done on tokio's blocking pool with `spawn_blocking`, so that the worker's
//! own threads keep pulling, extending leases and answering meanwhile. One
//! process is then bound by the cores it may use; with a PostgreSQL store,
//! replicas on one subscription share the work thread by thread
//! (README.md, "One worker or a fleet"). The benchmark's `fleet-N` scenarios
//! run it on one, two and three replicas.
//!
//! Try it locally (Pub/Sub emulator + Chat simulator, no Google account):
//!
//!     CHATWORKER_DEV=1 cargo run --example heavy

use chatworker::{App, Context, HandlerError, Message, Reply};
use std::time::{Duration, Instant};

/// How much CPU each message costs.
fn work() -> Duration {
    let ms = std::env::var("HEAVY_WORK_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(20);
    Duration::from_millis(ms)
}

/// Burns `cpu` of CPU time: a hash chain, so that the optimizer cannot skip
/// it. Returns the chain's end.
fn burn(cpu: Duration) -> u64 {
    let started = Instant::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while started.elapsed() < cpu {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    x
}

async fn heavy(_ctx: Context, message: Message) -> Result<Reply, HandlerError> {
    let cpu = work();
    // Off the runtime's threads: the worker keeps running meanwhile.
    let chain = tokio::task::spawn_blocking(move || burn(cpu))
        .await
        .map_err(HandlerError::transient)?;
    Ok(Reply::text(format!(
        "Worked {} ms on \"{}\" ({chain:016x})",
        cpu.as_millis(),
        message.argument()
    )))
}

#[tokio::main]
async fn main() -> Result<(), chatworker::RunError> {
    chatworker::run(App::new().message(heavy)).await
}
