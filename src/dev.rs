//! `chatworker dev`: the whole loop on loopback, for developing an app. It
//! starts the Pub/Sub emulator (unless `PUBSUB_EMULATOR_HOST` names one), a
//! topic and subscription, the Chat simulator with its playground page, and
//! the worker with your app, and stops all of them on Ctrl-C.
//!
//! From your own crate:
//!
//! ```no_run
//! use chatworker::{App, Message, Reply};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), chatworker::dev::DevError> {
//!     let app = App::new().message(|_ctx, m: Message| async move { Reply::text(m.text) });
//!     let options = chatworker::dev::DevOptions::default();
//!     chatworker::dev::run(app, options, chatworker::shutdown_signal()).await
//! }
//! ```
//!
//! [`crate::run`] does the same when the program's first argument is `dev`.

use crate::config::{ConfigError, Settings};
use crate::service::Service;
use crate::sim::events::Format;
use crate::sim::keys::issue_key_file;
use crate::sim::{SimOptions, playground};
use serde_json::json;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The project the local topic and subscription live in.
pub const PROJECT: &str = "chatworker-dev";
/// The local topic Chat's events go to.
pub const TOPIC: &str = "projects/chatworker-dev/topics/chat-events";
/// The worker's subscription to it, one per run (the process ID follows),
/// so that a shared emulator hands this run nothing left over from another.
pub const SUBSCRIPTION_PREFIX: &str = "projects/chatworker-dev/subscriptions/chatworker-";

/// How `dev` runs.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Where the simulator and its playground listen.
    pub listen: String,
    /// A settings file, as for `run` (the subscription and the Chat
    /// endpoint are replaced by the local ones).
    pub config: Option<PathBuf>,
    /// The event format the playground publishes by default.
    pub format: Format,
    /// The app's name, for @mentions in the playground.
    pub app_name: String,
}

impl Default for DevOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8086".into(),
            config: None,
            format: Format::Classic,
            app_name: "chatworker".into(),
        }
    }
}

/// Why `dev` could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Pub/Sub emulator is missing or did not start.
    #[error("{0}")]
    Emulator(String),
    /// Something local failed (a port in use, a file not writable).
    #[error("{0}")]
    Local(String),
    /// The worker stopped with an error.
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
}

/// Runs everything until `shutdown` completes.
pub async fn run<A: Service>(
    app: A,
    options: DevOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DevError> {
    let mut settings = Settings::load(options.config.as_deref())?;
    let emulator = Emulator::ensure(settings.pubsub.emulator_host.clone()).await?;
    let subscription = format!("{SUBSCRIPTION_PREFIX}{}", std::process::id());
    create_topic_and_subscription(emulator.host(), &subscription).await?;

    let dir = std::env::temp_dir().join(format!("chatworker-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| DevError::Local(format!("{}: {e}", dir.display())))?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(|e| DevError::Local(format!("cannot listen on {}: {e}", options.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| DevError::Local(e.to_string()))?;
    let key_path = dir.join("service-account.json");
    let key = issue_key_file(
        &key_path,
        "chatworker-dev@chatworker-dev.iam.gserviceaccount.com",
        &format!("http://{addr}/token"),
    )
    .map_err(|e| DevError::Local(e.to_string()))?;
    // The app's own commands; a bare Service that lists none gets the
    // default app's /help.
    let mut commands: std::collections::BTreeMap<String, i64> =
        app.slash_commands().into_iter().collect();
    if commands.is_empty() {
        commands.insert(
            settings.app.help_command_name.clone(),
            settings.app.help_command_id,
        );
    }
    let sim_options = SimOptions {
        trust: vec![key],
        playground: Some(playground::Config {
            pubsub_url: format!("http://{}", emulator.host),
            topic: TOPIC.into(),
            app_name: options.app_name.clone(),
            commands,
            format: options.format,
        }),
        ..SimOptions::default()
    };
    let (stop_sim, sim_stopped) = tokio::sync::oneshot::channel::<()>();
    let sim = tokio::spawn(crate::sim::serve(listener, sim_options, async move {
        let _ = sim_stopped.await;
    }));

    settings.pubsub.subscription = subscription.clone();
    settings.pubsub.emulator_host = Some(emulator.host.clone());
    settings.chat.endpoint = format!("http://{addr}");
    settings.chat.credentials_file = key_path.display().to_string();
    let settings = settings.require_subscription()?;

    // Scripts and people look for this line.
    println!("playground: http://{addr}/playground");
    tracing::info!(
        pubsub = %emulator.host,
        topic = TOPIC,
        simulator = %format!("http://{addr}"),
        "dev: emulator, simulator and worker running; Ctrl-C stops them"
    );
    let result = crate::worker::run(settings, app, shutdown).await;
    let _ = stop_sim.send(());
    let _ = sim.await;
    // Best effort: a shared emulator keeps no subscription of ours.
    let _ = reqwest::Client::new()
        .delete(format!("http://{}/v1/{subscription}", emulator.host))
        .send()
        .await;
    drop(emulator);
    result.map(|_| ()).map_err(DevError::from)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates the topic and subscription through the emulator's REST API;
/// both may exist already.
async fn create_topic_and_subscription(host: &str, subscription: &str) -> Result<(), DevError> {
    let http = reqwest::Client::new();
    let put = |path: &str, body: serde_json::Value| {
        http.put(format!("http://{host}/v1/{path}"))
            .json(&body)
            .send()
    };
    for (path, body) in [
        (TOPIC, json!({})),
        (
            subscription,
            json!({"topic": TOPIC, "ackDeadlineSeconds": 30}),
        ),
    ] {
        let response = put(path, body).await.map_err(|e| {
            DevError::Emulator(format!("cannot reach the Pub/Sub emulator at {host}: {e}"))
        })?;
        let status = response.status();
        if !status.is_success() && status != reqwest::StatusCode::CONFLICT {
            return Err(DevError::Emulator(format!(
                "creating {path} on the emulator: HTTP {status}"
            )));
        }
    }
    Ok(())
}

/// The Pub/Sub emulator: one named by `PUBSUB_EMULATOR_HOST`, or one
/// started here as a child process group and stopped on drop. Public for
/// tests that need an emulator of their own (to kill and restart it).
#[derive(Debug)]
pub struct Emulator {
    host: String,
    port: u16,
    child: Option<std::process::Child>,
}

impl Emulator {
    /// The emulator at `host` when given, else a new one.
    pub async fn ensure(host: Option<String>) -> Result<Self, DevError> {
        match host {
            Some(host) => Ok(Self {
                port: host
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0),
                host,
                child: None,
            }),
            None => Self::start().await,
        }
    }

    /// Starts a new emulator on a free loopback port and waits until it
    /// answers.
    pub async fn start() -> Result<Self, DevError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| DevError::Local(e.to_string()))?
            .port();
        let mut emulator = Self {
            host: format!("127.0.0.1:{port}"),
            port,
            child: None,
        };
        emulator.restart().await?;
        Ok(emulator)
    }

    /// `host:port`, as `PUBSUB_EMULATOR_HOST` takes it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Starts the emulator (again) on its port; it forgets all topics and
    /// subscriptions when it stops.
    pub async fn restart(&mut self) -> Result<(), DevError> {
        let launcher = launcher().ok_or_else(|| {
            DevError::Emulator(
                "the Pub/Sub emulator is not installed. Install it with \
                 `gcloud components install pubsub-emulator beta` (or \
                 `apt-get install google-cloud-cli-pubsub-emulator`; it needs Java 17), \
                 or point PUBSUB_EMULATOR_HOST at a running one"
                    .into(),
            )
        })?;
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new(&launcher)
            .args(["--host=127.0.0.1", &format!("--port={}", self.port)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| DevError::Emulator(format!("cannot start {launcher}: {e}")))?;
        self.child = Some(child);
        tracing::info!(host = %self.host, "starting the Pub/Sub emulator");
        let url = format!("http://{}/v1/projects/{PROJECT}/topics", self.host);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DevError::Emulator(
                    "the Pub/Sub emulator did not start within 90 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Stops an emulator started here with `signal` (`TERM`, or `KILL` to
    /// simulate a crash), the launcher script and its JVM together.
    pub fn stop(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{signal}"), "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop("TERM");
    }
}

/// The emulator's launcher: `PUBSUB_EMULATOR_LAUNCHER`, else the one in the
/// Google Cloud SDK that `gcloud` reports.
fn launcher() -> Option<String> {
    if let Ok(path) = std::env::var("PUBSUB_EMULATOR_LAUNCHER")
        && !path.is_empty()
    {
        return Some(path);
    }
    let out = std::process::Command::new("gcloud")
        .args(["info", "--format=value(installation.sdk_root)"])
        .output()
        .ok()?;
    let root = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = format!("{root}/platform/pubsub-emulator/bin/cloud-pubsub-emulator");
    std::path::Path::new(&path).is_file().then_some(path)
}
