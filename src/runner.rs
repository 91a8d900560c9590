//! Running an app as a program: [`run`] reads the configuration, sets up
//! logging and stops on SIGTERM or Ctrl-C, so a bot's `main` is one line.

use crate::config::{ConfigError, Settings};
use crate::service::Service;

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The worker stopped with an error.
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    /// `dev` mode could not run.
    #[error(transparent)]
    Dev(#[from] crate::dev::DevError),
}

/// Runs `service` until SIGTERM or Ctrl-C, configured like `chatworker run`:
/// `config/default.toml` when it exists, then `CHATWORKER_*` environment
/// variables (`CHATWORKER_PUBSUB__SUBSCRIPTION` is required), and
/// `PUBSUB_EMULATOR_HOST` for the emulator. Logs go to stderr, filtered by
/// `RUST_LOG` (default `info`), unless a subscriber is already set.
///
/// With `dev` as the program's first argument (`cargo run --example echo --
/// dev`), it runs the local playground instead, as `chatworker dev` does:
/// the Pub/Sub emulator, the Chat simulator and its page, and this app.
///
/// ```no_run
/// use chatworker::{App, Message, Reply};
///
/// #[tokio::main]
/// async fn main() -> Result<(), chatworker::RunError> {
///     let app = App::new().message(|_ctx, m: Message| async move { Reply::text(m.text) });
///     chatworker::run(app).await
/// }
/// ```
pub async fn run(service: impl Service) -> Result<(), RunError> {
    init_logging();
    if std::env::args().nth(1).as_deref() == Some("dev") {
        let options = crate::dev::DevOptions::default();
        return Ok(crate::dev::run(service, options, shutdown_signal()).await?);
    }
    let settings = Settings::for_worker(None)?;
    crate::worker::run(settings, service, shutdown_signal()).await?;
    Ok(())
}

/// Logs to stderr: readable text on a terminal, Google Cloud Logging's
/// structured JSON elsewhere (`CHATWORKER_LOG_FORMAT=json|text` chooses),
/// filtered by `RUST_LOG` (default `info`). Does nothing when a subscriber
/// is already set.
pub fn init_logging() {
    crate::logging::init(crate::logging::Format::detect());
}

/// Completes on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the worker");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown signal received");
}
