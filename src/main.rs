//! The `chatworker` binary: logging, signals, and the command line in
//! [`chatworker::cli`].

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    chatworker::init_logging();
    let cli = chatworker::cli::Cli::parse();
    cli.run(chatworker::shutdown_signal()).await
}
