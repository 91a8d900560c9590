//! Running an app as a program: [`run`] reads the configuration, sets up
//! logging and stops on SIGTERM or Ctrl-C, so a bot's `main` is one line.

use crate::app::Service;
use crate::config::{Config, ConfigError};

/// The environment variable that makes [`run`] start the local playground
/// (`CHATWORKER_DEV=1`) instead of pulling from the configured
/// subscription.
pub const DEV_ENV: &str = "CHATWORKER_DEV";

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
    /// `CHATWORKER_DEV` asked for the playground, and it could not run.
    #[cfg(feature = "dev")]
    #[error(transparent)]
    Dev(#[from] crate::dev::DevError),
    /// `CHATWORKER_DEV` asked for the playground, which this build leaves
    /// out (it was built without the `dev` feature).
    #[error("{DEV_ENV} is set, but this program was built without chatworker's `dev` feature")]
    NoDev,
}

/// Runs `service` until SIGTERM or Ctrl-C, configured like `chatworker run`:
/// `config/default.toml` when it exists, then `CHATWORKER_*` environment
/// variables (`CHATWORKER_PUBSUB__SUBSCRIPTION` is required), and
/// `PUBSUB_EMULATOR_HOST` for the emulator. Logs go to stderr, filtered by
/// `RUST_LOG` (default `info`), unless a subscriber is already set.
///
/// With `CHATWORKER_DEV=1` (`CHATWORKER_DEV=1 cargo run --example echo`),
/// it runs the local playground instead, as `chatworker dev` does: the
/// Pub/Sub emulator, the Chat simulator and its page, and this app. The
/// program's arguments are left alone: they are the program's own.
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
    run_with(Config::load(None)?, service).await
}

/// As [`run`], with the configuration loaded by the caller: a bot that
/// keeps its own section (`[tickets]`, `CHATWORKER_TICKETS__…`) reads it
/// with [`Config::section`] first, then hands the configuration over. A
/// section that nothing read is an error, so a typo is never ignored.
///
/// ```no_run
/// #[derive(serde::Deserialize)]
/// struct Greeter {
///     greeting: String,
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), chatworker::RunError> {
///     let config = chatworker::Config::load(None)?;
///     let greeter: Greeter = config.section("greeter")?;
///     let app = chatworker::App::with_state(greeter).message(
///         |ctx: chatworker::Context<Greeter>, _m: chatworker::Message| async move {
///             chatworker::Reply::text(&ctx.state().greeting)
///         },
///     );
///     chatworker::run_with(config, app).await
/// }
/// ```
pub async fn run_with(config: Config, service: impl Service) -> Result<(), RunError> {
    init_logging();
    start(config, service, dev_requested(std::env::var(DEV_ENV).ok())).await
}

/// Runs the worker, or the playground when `dev` asks for it.
async fn start(config: Config, service: impl Service, dev: bool) -> Result<(), RunError> {
    if dev {
        #[cfg(feature = "dev")]
        {
            let options = crate::dev::DevOptions::default();
            crate::dev::run_with(config, service, options, shutdown_signal()).await?;
            return Ok(());
        }
        #[cfg(not(feature = "dev"))]
        return Err(RunError::NoDev);
    }
    let settings = config.settings()?;
    config.check_sections()?;
    if let Some(file) = config.file() {
        tracing::info!(file = %file.display(), "configuration file read");
    }
    crate::worker::run(settings, service, shutdown_signal()).await?;
    Ok(())
}

/// Whether `CHATWORKER_DEV`'s value asks for the playground.
fn dev_requested(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

/// Logs to stderr: readable text on a terminal, Google Cloud Logging's
/// structured JSON elsewhere (`CHATWORKER_LOG_FORMAT=json|text` chooses),
/// filtered by `RUST_LOG` (default `info`). Does nothing when a subscriber
/// is already set.
pub fn init_logging() {
    crate::ops::logging::init(crate::ops::logging::Format::detect());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_yes_asks_for_the_playground() {
        for yes in ["1", "true", "yes", " 1 "] {
            assert!(dev_requested(Some(yes.into())), "{yes}");
        }
        for no in ["", "0", "false", "dev"] {
            assert!(!dev_requested(Some(no.into())), "{no}");
        }
        assert!(!dev_requested(None));
    }

    /// A production build (without `dev`) says why it cannot run the
    /// playground instead of pulling from a subscription it was not given.
    #[cfg(not(feature = "dev"))]
    #[tokio::test]
    async fn without_the_dev_feature_the_playground_is_refused_plainly() {
        let config = Config::load_from(None, []).expect("the defaults load");
        let app = crate::App::new();
        match start(config, app, true).await {
            Err(RunError::NoDev) => {}
            other => panic!("expected NoDev, got {other:?}"),
        }
    }
}
