//! The `chatworker` binary: logging, signals, and the command line in
//! [`chatworker::cli`].

use clap::Parser;
use std::process::ExitCode;

// One thread: the worker's own work is small and all I/O, and on one
// thread it costs a third less CPU and about 5 MB less memory than on the
// multi-threaded runtime (no cross-thread wake-ups, one malloc arena), and
// events start in the order they arrived (BENCHMARKS.md). A bot binary with
// CPU-heavy handlers should keep the multi-threaded runtime.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    chatworker::init_logging();
    let cli = chatworker::cli::Cli::parse();
    cli.run(chatworker::shutdown_signal()).await
}
