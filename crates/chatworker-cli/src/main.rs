//! The `chatworker` binary: logging, signals, and the command line in
//! [`cli`]. Built on the `chatworker` runtime like any bot; the default app
//! it serves is in [`default_app`], provisioning in [`setup`] and [`check`].

mod check;
mod cli;
mod default_app;
mod setup;

use clap::Parser;
use std::process::ExitCode;

// One thread: the worker's own work is small and all I/O, and on one
// thread it took about a sixth less CPU per event, 4 MB less memory and half
// the tail latency of the multi-threaded runtime in the benchmark's drain
// (no cross-thread wake-ups, one malloc arena; BENCHMARKS.md). A bot binary
// with CPU-heavy handlers should keep the multi-threaded runtime.
fn main() -> ExitCode {
    // SAFETY: first thing, before the runtime or any other thread starts.
    unsafe { chatworker::net::keep_loopback_off_proxies() };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chatworker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        chatworker::init_logging();
        let cli = cli::Cli::parse();
        cli.run(chatworker::shutdown_signal()).await
    })
}
