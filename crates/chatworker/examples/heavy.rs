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

/// Rounds of the hash chain per millisecond of CPU, measured once at start
/// (alone on its thread), so that each message costs the same work however
/// many run at once.
fn rounds_per_ms() -> u64 {
    static ROUNDS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ROUNDS.get_or_init(|| {
        let started = Instant::now();
        let mut rounds = 0_u64;
        let mut x = SEED;
        while started.elapsed() < Duration::from_millis(100) {
            x = chain(x, 1_000);
            rounds += 1_000;
        }
        std::hint::black_box(x);
        (rounds / 100).max(1)
    })
}

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// `rounds` steps of a xorshift chain: work the optimizer cannot skip.
fn chain(mut x: u64, rounds: u64) -> u64 {
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// About `cpu` of CPU time's work. Returns the chain's end.
fn burn(cpu: Duration) -> u64 {
    let ms = u64::try_from(cpu.as_millis()).unwrap_or(u64::MAX);
    chain(SEED, rounds_per_ms().saturating_mul(ms))
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
    // Measured before any event arrives.
    tokio::task::spawn_blocking(rounds_per_ms)
        .await
        .expect("calibrated");
    chatworker::run(App::new().message(heavy)).await
}
