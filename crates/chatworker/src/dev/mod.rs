//! `chatworker dev`: the whole loop on loopback, for developing an app. It
//! starts the Pub/Sub emulator (unless `PUBSUB_EMULATOR_HOST` names one), a
//! topic and subscription, the Chat simulator with its playground page, and
//! the worker with your app, and stops all of them on Ctrl-C.
//!
//! Only with the `dev` feature (on by default; a production build leaves
//! it out with `--no-default-features`). From your own crate:
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
//! [`crate::run`] does the same when `CHATWORKER_DEV=1` is set, so an
//! example or a bot runs against the playground with
//! `CHATWORKER_DEV=1 cargo run`.

use crate::app::Service;
use crate::config::{Config, ConfigError, SubscriptionName, TopicName};
use crate::pubsub::admin::{Admin, AdminError, SubscriptionSpec};
use chatworker_sim::emulator::Emulator;
pub use chatworker_sim::emulator::EmulatorError;
pub use chatworker_sim::events::Format;
use chatworker_sim::keys::issue_key_file;
use chatworker_sim::{SimOptions, playground};
use std::future::Future;
use std::path::PathBuf;

/// The local topic Chat's events go to.
pub const TOPIC: &str = "projects/chatworker-dev/topics/chat-events";
/// The worker's subscription to it, one per run (the process ID follows),
/// so that a shared emulator hands this run nothing left over from another.
const SUBSCRIPTION_PREFIX: &str = "projects/chatworker-dev/subscriptions/chatworker-";

/// How `dev` runs.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Where the simulator and its playground listen.
    pub listen: String,
    /// A settings file, read by [`run`] (the subscription and the Chat
    /// endpoint are replaced by the local ones); [`run_with`] takes the
    /// configuration already loaded instead.
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
    #[error(transparent)]
    Emulator(#[from] EmulatorError),
    /// The local topic or subscription could not be created.
    #[error("the Pub/Sub emulator at {host}: {source}")]
    Topic {
        /// The emulator.
        host: String,
        /// What failed.
        #[source]
        source: AdminError,
    },
    /// Something local failed (a port in use, a file not writable).
    #[error("{what}: {source}")]
    Local {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: crate::reply::BoxError,
    },
    /// The worker stopped with an error.
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
}

fn local<E: Into<crate::reply::BoxError>>(what: impl Into<String>) -> impl FnOnce(E) -> DevError {
    let what = what.into();
    move |source| DevError::Local {
        what,
        source: source.into(),
    }
}

/// Runs everything until `shutdown` completes.
pub async fn run<A: Service>(
    app: A,
    options: DevOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DevError> {
    let config = Config::load(options.config.as_deref())?;
    run_with(config, app, options, shutdown).await
}

/// Serves the app's state (`GET /state`, JSON) on loopback for the
/// playground's page, which reads it from another origin. Returns its URL.
async fn serve_state(store: crate::store::Store) -> std::io::Result<String> {
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/state", listener.local_addr()?);
    let router = axum::Router::new().route(
        "/state",
        axum::routing::get(move || {
            let store = store.clone();
            async move {
                let body = match store.dump(200).await {
                    Ok(rows) => serde_json::json!({ "rows": rows }),
                    Err(e) => serde_json::json!({ "rows": [], "error": e.to_string() }),
                };
                (
                    [(axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
                    axum::Json(body),
                )
                    .into_response()
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(url)
}

/// Where the playground keeps the app's state unless `store.url` says.
pub const DEV_STORE: &str = "sqlite://.chatworker/dev.db";

/// As [`run`], with the configuration already loaded (a program that reads
/// its own sections first).
pub async fn run_with<A: Service>(
    config: Config,
    app: A,
    options: DevOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DevError> {
    let mut settings = config.settings()?;
    config.check_sections()?;
    // The app's state survives the playground's restarts: SQLite, unless
    // store.url says otherwise.
    if settings.store.url.trim().is_empty() {
        settings.store.url = DEV_STORE.into();
        tracing::info!(
            store = DEV_STORE,
            "the app's state is kept in SQLite (store.url overrides it)"
        );
    }
    let emulator = Emulator::ensure(settings.pubsub.emulator_host.clone()).await?;
    settings.pubsub.emulator_host = Some(emulator.host().to_owned());
    let subscription =
        SubscriptionName::parse(&format!("{SUBSCRIPTION_PREFIX}{}", std::process::id()))
            .expect("the prefix and a process ID make a subscription name");
    let topic = TopicName::parse(TOPIC).expect("TOPIC is a topic name");
    let admin = Admin::new(&settings.pubsub, &settings.network)
        .await
        .map_err(|source| DevError::Topic {
            host: emulator.host().to_owned(),
            source,
        })?;
    create_topic_and_subscription(&admin, &topic, &subscription)
        .await
        .map_err(|source| DevError::Topic {
            host: emulator.host().to_owned(),
            source,
        })?;

    let dir = std::env::temp_dir().join(format!("chatworker-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(local(dir.display().to_string()))?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(local(format!("cannot listen on {}", options.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(local("the listener's address"))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the playground listens beyond this machine: anyone who reaches it can act as any person and read every message"
        );
    }
    let key_path = dir.join("service-account.json");
    let key = issue_key_file(
        &key_path,
        "chatworker-dev@chatworker-dev.iam.gserviceaccount.com",
        &format!("http://{addr}/token"),
    )
    .map_err(local(key_path.display().to_string()))?;
    let store = crate::store::Store::open(&settings.store.url)
        .await
        .map_err(crate::worker::WorkerError::from)?;
    let state_url = serve_state(store.clone())
        .await
        .map_err(local("the state listener"))?;
    let commands = app.slash_commands().into_iter().collect();
    let sim_options = SimOptions {
        trust: vec![key],
        playground: Some(playground::Config {
            pubsub_url: format!("http://{}", emulator.host()),
            topic: TOPIC.into(),
            app_name: options.app_name.clone(),
            commands,
            format: options.format,
            state_url: Some(state_url),
        }),
        ..SimOptions::default()
    };
    let (stop_sim, sim_stopped) = tokio::sync::oneshot::channel::<()>();
    let sim = tokio::spawn(chatworker_sim::serve(listener, sim_options, async move {
        let _ = sim_stopped.await;
    }));

    settings.pubsub.subscription_name = Some(subscription.clone());
    settings.chat.endpoint =
        reqwest::Url::parse(&format!("http://{addr}")).expect("a socket address makes a URL");
    settings.chat.credentials_file = Some(key_path.clone());

    // Scripts and people look for this line.
    println!("playground: http://{addr}/playground");
    tracing::info!(
        pubsub = %emulator.host(),
        topic = TOPIC,
        simulator = %format!("http://{addr}"),
        "dev: emulator, simulator and worker running; Ctrl-C stops them"
    );
    let result = crate::worker::run_with_store(settings, store, app, shutdown).await;
    let _ = stop_sim.send(());
    let _ = sim.await;
    // Best effort: a shared emulator keeps no subscription of ours.
    let _ = admin.delete_subscription(&subscription).await;
    drop(emulator);
    result.map(|_| ()).map_err(DevError::from)
}

/// The local topic, and this run's subscription to it; the topic may exist
/// already (a shared emulator).
async fn create_topic_and_subscription(
    admin: &Admin,
    topic: &TopicName,
    subscription: &SubscriptionName,
) -> Result<(), AdminError> {
    admin.ensure_topic(topic).await?;
    let spec = SubscriptionSpec {
        name: subscription.clone(),
        topic: topic.clone(),
        ack_deadline_seconds: 30,
        retry: None,
        dead_letter: None,
    };
    admin.ensure_subscription(&spec).await?;
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Commit, Key, Store, Write};

    #[tokio::test]
    async fn the_playground_reads_the_apps_state_across_origins() {
        let store = Store::memory();
        let write = Write {
            key: Key {
                scope: "space",
                owner: "spaces/AAA".into(),
                name: "tickets".into(),
            },
            expected: None,
            json: Some("{\"1\":\"open\"}".into()),
            expires_at: None,
        };
        store
            .commit(Commit {
                identity: "e".into(),
                writes: vec![write],
                ..Commit::default()
            })
            .await
            .expect("commit");
        let url = super::serve_state(store).await.expect("listening");
        let response = reqwest::get(&url).await.expect("served");
        assert_eq!(
            response
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.as_bytes()),
            Some(&b"*"[..]),
            "the page is on the simulator's origin"
        );
        let body: serde_json::Value = response.json().await.expect("JSON");
        let row = &body["rows"][0];
        assert_eq!(row["scope"], "space");
        assert_eq!(row["owner"], "spaces/AAA");
        assert_eq!(row["name"], "tickets");
        assert_eq!(row["value"], "{\"1\":\"open\"}");
        assert_eq!(row["version"], 1);
    }
}
