//! The harness shared by chatworker's end-to-end tests and its benchmark:
//! the real Pub/Sub emulator (through Google's own admin and publisher
//! clients, not through the code under test), the Chat simulator in-process
//! on port 0, and worker programs (the `chatworker` binary, an example bot)
//! as child processes.
//!
//! The emulator must be running and `PUBSUB_EMULATOR_HOST` set; `.ci/run` and
//! `scripts/test` start it. Every test uses fresh topics and subscriptions:
//! the emulator keeps state between tests and replays held messages late.

pub use chatworker_sim::emulator::Emulator;
use chatworker_sim::keys::issue_key_file;
use chatworker_sim::{SimOptions, serve};
use google_cloud_auth::credentials::anonymous;
use google_cloud_pubsub::client::{Publisher, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::Message;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tempfile::TempDir;
use tokio::sync::oneshot;

pub mod postgres;
pub mod proxy;
pub mod squid;

/// Runs `work`, which blocks (a child process waited for: `initdb`,
/// `pg_ctl`, `cargo build`), without stalling the tasks that share this
/// thread of a multi-threaded runtime: the simulator, and the other
/// scenarios' timers when the fault suite runs several at once. A stalled
/// runtime made a worker seem 55 s slow to stop, and the simulator answer
/// late. On a current-thread runtime, or none, it simply runs.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

pub const PROJECT: &str = "chatworker-tests";

/// A path in the repository (the workspace's root), such as
/// `tests/fixtures/events`.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .join(relative)
}

/// The emulator's `host:port`, or a clear failure saying how to start it.
pub fn emulator_host() -> String {
    std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| {
        panic!(
            "PUBSUB_EMULATOR_HOST is not set. These tests need Google's Pub/Sub emulator: \
             run them with `scripts/test`, or start `gcloud beta emulators pubsub start \
             --host-port=127.0.0.1:8085` and export PUBSUB_EMULATOR_HOST=127.0.0.1:8085"
        )
    })
}

fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{:06x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>() & 0xffffff
    )
}

/// A fresh topic and pull subscription on the emulator.
pub struct Topic {
    pub topic: String,
    pub subscription: String,
    /// The emulator it lives on.
    pub host: String,
    publisher: Publisher,
}

impl Topic {
    pub async fn fresh(prefix: &str) -> Self {
        Self::fresh_on(&emulator_host(), prefix).await
    }

    /// A fresh topic and subscription on the emulator at `host`.
    pub async fn fresh_on(host: &str, prefix: &str) -> Self {
        let topic = format!("projects/{PROJECT}/topics/{}", unique(prefix));
        let subscription = topic.replace("/topics/", "/subscriptions/");
        Self::create(host, topic, subscription).await
    }

    /// A fresh topic whose subscription dead-letters to `dead_letter` after
    /// `max_attempts` deliveries (Pub/Sub's own dead-letter policy).
    pub async fn fresh_with_dead_letter_policy(
        prefix: &str,
        dead_letter: &Topic,
        max_attempts: i32,
    ) -> Self {
        let host = emulator_host();
        let topic = format!("projects/{PROJECT}/topics/{}", unique(prefix));
        let subscription = topic.replace("/topics/", "/subscriptions/");
        let policy = google_cloud_pubsub::model::DeadLetterPolicy::new()
            .set_dead_letter_topic(&dead_letter.topic)
            .set_max_delivery_attempts(max_attempts);
        Self::create_with(&host, topic, subscription, Some(policy)).await
    }

    /// Creates this topic and subscription again, on the emulator at
    /// `host` (after a restart, which forgets them).
    pub async fn recreate(&self, host: &str) -> Self {
        Self::create(host, self.topic.clone(), self.subscription.clone()).await
    }

    async fn create(host: &str, topic: String, subscription: String) -> Self {
        Self::create_with(host, topic, subscription, None).await
    }

    async fn create_with(
        host: &str,
        topic: String,
        subscription: String,
        dead_letter_policy: Option<google_cloud_pubsub::model::DeadLetterPolicy>,
    ) -> Self {
        let endpoint = format!("http://{host}");
        let topics = TopicAdmin::builder()
            .with_endpoint(&endpoint)
            .with_credentials(anonymous::Builder::new().build())
            .build()
            .await
            .expect("topic admin client");
        topics
            .create_topic()
            .set_name(&topic)
            .send()
            .await
            .expect("create topic");
        let subscriptions = SubscriptionAdmin::builder()
            .with_endpoint(&endpoint)
            .with_credentials(anonymous::Builder::new().build())
            .build()
            .await
            .expect("subscription admin client");
        // No retry policy, although production subscriptions should have
        // one: with a retry policy the emulator (0.8.20) never redelivered
        // about half of 400 events nacked by a stopping worker (seen in the
        // fault suite's SIGTERM scenario); without one it redelivers all.
        subscriptions
            .create_subscription()
            .set_name(&subscription)
            .set_topic(&topic)
            .set_ack_deadline_seconds(10)
            .set_or_clear_dead_letter_policy(dead_letter_policy)
            .send()
            .await
            .expect("create subscription");
        // Batches as large as Pub/Sub takes (1,000 messages), sent 1 ms
        // after the first message: a burst published in one go travels in
        // few requests, and a lone message is not held back (the default
        // waits 10 ms, which a latency measurement would count).
        let publisher = Publisher::builder(&topic)
            .with_endpoint(&endpoint)
            .with_credentials(anonymous::Builder::new().build())
            .set_message_count_threshold(1000)
            .set_delay_threshold(Duration::from_millis(1))
            .build()
            .await
            .expect("publisher");
        Self {
            topic,
            subscription,
            host: host.to_owned(),
            publisher,
        }
    }

    /// Publishes JSON events, letting the publisher batch them, and waits
    /// until the emulator has accepted all of them.
    pub async fn publish_many(&self, events: &[Value]) {
        let pending: Vec<_> = events
            .iter()
            .map(|e| {
                let data = serde_json::to_vec(e).expect("serializes");
                self.publisher.publish(Message::new().set_data(data))
            })
            .collect();
        for result in futures::future::join_all(pending).await {
            result.expect("publish");
        }
    }

    /// Publishes `events` in batches of `batch`, each waited for; returns
    /// when each event's batch was sent, for latency measurements.
    pub async fn publish_timed(&self, events: &[Value], batch: usize) -> Vec<SystemTime> {
        let mut sent = Vec::with_capacity(events.len());
        for chunk in events.chunks(batch.max(1)) {
            let at = SystemTime::now();
            self.publish_many(chunk).await;
            sent.extend(std::iter::repeat_n(at, chunk.len()));
        }
        sent
    }

    /// Deletes the subscription and the topic, so that a long-lived
    /// emulator does not keep every run's messages (one had grown to 1.2 GB
    /// in the benchmark). Best effort: a failure is reported, not fatal.
    pub async fn remove(&self) {
        let base = format!("http://{}/v1", self.host);
        let http = reqwest::Client::new();
        for name in [&self.subscription, &self.topic] {
            let result = http.delete(format!("{base}/{name}")).send().await;
            if let Err(e) = result.and_then(|r| r.error_for_status()) {
                eprintln!("could not delete {name} on the emulator: {e}");
            }
        }
    }

    /// Publishes one payload and waits for the emulator to accept it.
    pub async fn publish(&self, data: impl Into<bytes::Bytes>) -> String {
        self.publisher
            .publish(Message::new().set_data(data.into()))
            .await
            .expect("publish")
    }

    /// Publishes a JSON event.
    pub async fn publish_json(&self, event: &Value) -> String {
        self.publish(serde_json::to_vec(event).expect("serializes"))
            .await
    }
}

/// Pulls up to `max` messages from `subscription` with the REST API and acks them.
pub async fn pull_and_ack(subscription: &str, max: usize) -> Vec<Value> {
    let base = format!("http://{}/v1/{subscription}", emulator_host());
    let client = reqwest::Client::new();
    let response: Value = client
        .post(format!("{base}:pull"))
        .json(&json!({"maxMessages": max, "returnImmediately": true}))
        .send()
        .await
        .expect("pull")
        .json()
        .await
        .expect("pull response");
    let received = response["receivedMessages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ids: Vec<Value> = received.iter().map(|m| m["ackId"].clone()).collect();
    if !ids.is_empty() {
        client
            .post(format!("{base}:acknowledge"))
            .json(&json!({"ackIds": ids}))
            .send()
            .await
            .expect("ack");
    }
    received
}

/// The Chat simulator, served in-process on a free port, trusting a freshly
/// issued service-account key.
pub struct Sim {
    pub url: String,
    pub key_path: PathBuf,
    dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    http: reqwest::Client,
}

impl Sim {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A simulator whose playground publishes people's actions to `topic`
    /// through the emulator, knowing these slash commands.
    pub async fn with_playground(topic: &str, commands: &[(&str, i64)]) -> Self {
        Self::start_with(Some(chatworker_sim::playground::Config {
            state_url: None,
            pubsub_url: format!("http://{}", emulator_host()),
            topic: topic.to_owned(),
            app_name: "chatworker".into(),
            commands: commands
                .iter()
                .map(|(n, id)| ((*n).to_owned(), *id))
                .collect(),
            format: chatworker_sim::events::Format::Classic,
        }))
        .await
    }

    /// A simulator with these options (its trusted key is added).
    pub async fn start_with_options(options: SimOptions) -> Self {
        Self::serve(None, options).await
    }

    async fn start_with(playground: Option<chatworker_sim::playground::Config>) -> Self {
        Self::serve(playground, SimOptions::default()).await
    }

    async fn serve(
        playground: Option<chatworker_sim::playground::Config>,
        options: SimOptions,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let url = format!("http://{addr}");
        let key_path = dir.path().join("service-account.json");
        let email = "chatworker-test@chatworker-tests.iam.gserviceaccount.com";
        let key = issue_key_file(&key_path, email, &format!("{url}/token")).expect("issue key");
        let (stop, stopped) = oneshot::channel::<()>();
        let mut trust = options.trust;
        trust.push(key);
        tokio::spawn(serve(
            listener,
            SimOptions {
                trust,
                playground: playground.or(options.playground),
                ..options
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            url,
            key_path,
            dir,
            stop: Some(stop),
            http: reqwest::Client::new(),
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// GET one of the simulator's endpoints, as JSON.
    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("sim request")
            .json()
            .await
            .expect("sim JSON")
    }

    /// Messages apps created, oldest first, each with its request (`query`, `body`).
    pub async fn app_messages(&self) -> Vec<Value> {
        let all = self.get("/_sim/messages").await;
        all["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|r| r["byApp"] == true)
            .cloned()
            .collect()
    }

    /// Every API call, in completion order.
    pub async fn calls(&self) -> Vec<Value> {
        self.get("/_sim/requests").await["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// API calls being answered now.
    pub async fn in_flight(&self) -> u64 {
        self.get("/_sim/requests").await["inFlight"]
            .as_u64()
            .unwrap_or(0)
    }

    pub async fn set_latency(&self, ms: u64) {
        self.control(json!({"latencyMs": ms})).await;
    }

    /// Makes the next `n` API calls fail with `status`.
    pub async fn fail_next(&self, n: u32, status: u16) {
        self.control(json!({"failNext": n, "failStatus": status}))
            .await;
    }

    pub async fn control(&self, control: Value) {
        let r = self
            .http
            .post(format!("{}/_sim/control", self.url))
            .json(&control)
            .send()
            .await
            .expect("control");
        assert!(r.status().is_success());
    }

    /// Does what a person does in the playground (`kind`: message, added,
    /// removed, click), as Ada in `space`; returns the simulator's answer.
    pub async fn act(&self, space: &str, action: Value) -> Value {
        let mut body = json!({
            "space": {"name": space, "spaceType": "SPACE", "displayName": "Examples"},
            "person": {"name": "users/1234567890", "displayName": "Ada Lovelace"},
        });
        for (k, v) in action.as_object().expect("an object") {
            body[k] = v.clone();
        }
        let r = self
            .http
            .post(format!("{}/_sim/playground/act", self.url))
            .json(&body)
            .send()
            .await
            .expect("act");
        assert!(
            r.status().is_success(),
            "act {body}: {}",
            r.text().await.unwrap_or_default()
        );
        r.json().await.expect("act JSON")
    }

    /// A message "written by a person" in `space` (`spaces/X`); returns it.
    pub async fn seed(&self, space: &str, text: &str, thread: Option<&str>) -> Value {
        let mut body = json!({
            "text": text,
            "sender": {
                "name": "users/1234567890",
                "displayName": "Ada Lovelace",
                "avatarUrl": "https://lh3.googleusercontent.com/a/ada",
                "type": "HUMAN"
            }
        });
        if let Some(thread) = thread {
            body["thread"] = json!({"name": thread});
        }
        self.http
            .post(format!("{}/_sim/{space}/messages", self.url))
            .json(&body)
            .send()
            .await
            .expect("seed")
            .json()
            .await
            .expect("seeded message")
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A classic MESSAGE event for a message the simulator holds.
pub fn message_event(message: &Value) -> Value {
    let space = message["space"]["name"].as_str().expect("space");
    json!({
        "type": "MESSAGE",
        "eventTime": message["createTime"],
        "space": {"name": space, "spaceType": "SPACE", "displayName": "Test space"},
        "user": message["sender"],
        "message": message,
        "thread": message["thread"],
        "common": {"hostApp": "CHAT", "userLocale": "en"}
    })
}

/// The MESSAGE event for a seeded message whose text starts with a slash
/// command (`/ticket Printer on fire`), annotated as Chat does for the
/// app's command `id`.
pub fn slash_event(message: &Value, id: i64) -> Value {
    let mut message = message.clone();
    let text = message["text"].as_str().unwrap_or_default().to_owned();
    let command = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    message["annotations"] = json!([{
        "type": "SLASH_COMMAND",
        "startIndex": 0,
        "length": command.chars().count(),
        "slashCommand": {
            "bot": {"name": "users/app", "type": "BOT"},
            "type": "INVOKE",
            "commandName": command,
            "commandId": id.to_string(),
        },
    }]);
    message["slashCommand"] = json!({"commandId": id.to_string()});
    message["argumentText"] = json!(text[command.len()..].trim());
    message_event(&message)
}

/// The same interaction as a Workspace add-on event object.
pub fn addon_message_event(message: &Value) -> Value {
    let space = json!({"name": message["space"]["name"], "spaceType": "SPACE"});
    json!({
        "commonEventObject": {"hostApp": "CHAT", "userLocale": "en"},
        "chat": {
            "user": message["sender"],
            "space": space,
            "eventTime": message["createTime"],
            "messagePayload": {"message": message, "space": space}
        }
    })
}

/// Builds the runtime's examples (once per test process) and returns where
/// they are. `cargo test` builds them too, but not when a test is picked
/// with `--test`, and a stale example would test old code.
fn build_examples() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    // Off the runtime: a second caller waits for the first one's build.
    blocking(|| {
        BUILT.get_or_init(|| {
            // Tests run from <target>/<profile>/deps.
            let exe = std::env::current_exe().expect("test binary");
            let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
            let target_dir = profile_dir.parent().expect("target dir");
            let mut cargo = std::process::Command::new(env!("CARGO"));
            cargo
                .args([
                    "build",
                    "-p",
                    "chatworker",
                    "--examples",
                    "--locked",
                    "--quiet",
                ])
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("cargo build --examples");
            assert!(status.success(), "cargo build --examples failed");
            profile_dir.join("examples")
        })
    })
    .clone()
}

/// A worker program (the `chatworker` binary, an example bot), running.
pub struct Worker {
    child: tokio::process::Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Worker {
    /// Starts `chatworker run` (`chatworker` is the binary's path) against
    /// `sim` and `subscription`, plus `env`, and waits until it is pulling.
    pub async fn start(
        chatworker: &Path,
        sim: &Sim,
        subscription: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let worker = Self::spawn(chatworker, sim, subscription, env);
        worker
            .wait_for_log("worker started", Duration::from_secs(60))
            .await;
        worker
    }

    /// Starts `chatworker run` without waiting.
    pub fn spawn(chatworker: &Path, sim: &Sim, subscription: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_program(chatworker, &["run"], sim, subscription, env)
    }

    /// Starts the runtime's example `name` the same way, and waits until it
    /// is pulling.
    pub async fn start_example(
        name: &str,
        sim: &Sim,
        subscription: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let program = build_examples().join(name);
        let worker = Self::spawn_program(&program, &[], sim, subscription, env);
        worker
            .wait_for_log("worker started", Duration::from_secs(60))
            .await;
        worker
    }

    /// Starts `program` with `args` and the worker's environment.
    pub fn spawn_program(
        program: &Path,
        args: &[&str],
        sim: &Sim,
        subscription: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("worker.log");
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("PUBSUB_EMULATOR_HOST", emulator_host())
            .env("GOOGLE_APPLICATION_CREDENTIALS", &sim.key_path)
            .env("CHATWORKER_PUBSUB__SUBSCRIPTION", subscription)
            .env("CHATWORKER_CHAT__ENDPOINT", &sim.url)
            // The simulator enforces no quota unless told to, and pacing
            // writes would slow every test down: tests of quotas turn it on.
            .env("CHATWORKER_CHAT__SPACE_WRITES_PER_MINUTE", "0")
            .env("CHATWORKER_CHAT__PROJECT_WRITES_PER_MINUTE", "0")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).expect("stdout"))
            .stderr(std::fs::File::create(&log).expect("log"))
            .kill_on_drop(true);
        // An empty value removes the variable.
        for (k, v) in env {
            match v {
                &"" => command.env_remove(k),
                v => command.env(k, v),
            };
        }
        let child = command.spawn().expect("spawn chatworker");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// The exit status, if the program has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub async fn wait(&mut self) -> ExitStatus {
        self.child.wait().await.expect("wait")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_for_log(&self, needle: &str, deadline: Duration) {
        let logs = eventually(deadline, || async {
            let logs = self.logs();
            logs.contains(needle).then_some(logs)
        })
        .await;
        assert!(
            logs.is_some(),
            "no {needle:?} in the worker's log:\n{}",
            self.logs()
        );
    }

    /// SIGKILL: no drain, no acks flushed, like a node failure.
    pub async fn kill(&mut self) {
        self.signal("KILL");
        self.child.wait().await.expect("wait");
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running");
        let status = blocking(|| {
            std::process::Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status()
        })
        .expect("kill");
        assert!(status.success());
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took.
    pub async fn terminate(&mut self, deadline: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        self.signal("TERM");
        let status = tokio::time::timeout(deadline, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the worker did not exit within {deadline:?}:\n{}",
                    self.logs()
                )
            })
            .expect("wait");
        (status, started.elapsed())
    }

    /// The counters of the "worker stopped" log line.
    /// The fields of the "worker stopped" summary. The worker's stderr is a
    /// file, so it logs Cloud Logging JSON: one object per line.
    pub fn summary(&self) -> HashMap<String, String> {
        let logs = self.logs();
        let line = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "worker stopped")
            .unwrap_or_else(|| panic!("no summary in the log:\n{logs}"));
        let fields = line.as_object().cloned().unwrap_or_default();
        fields
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect()
    }

    /// The log's entries with this message.
    pub fn entries(&self, message: &str) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == message)
            .collect()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.summary()
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no counter {name} in the summary:\n{}", self.logs()))
    }
}

/// Polls `check` every 50 ms until it returns `Some` or `deadline` passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_every(Duration::from_millis(50), deadline, check).await
}

/// Polls `check` every `interval` until it returns `Some` or `deadline` passes.
pub async fn eventually_every<T, F, Fut>(
    interval: Duration,
    deadline: Duration,
    mut check: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > until {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Waits until the simulator holds `n` app messages (failing after `deadline`).
pub async fn await_app_messages(sim: &Sim, n: usize, deadline: Duration) -> Vec<Value> {
    match poll_app_messages(sim, n, deadline).await {
        Some(m) => m,
        None => panic!(
            "expected {n} app messages, have {:#?}",
            sim.app_messages().await
        ),
    }
}

/// As [`await_app_messages`], and on a timeout shows `worker`'s log and the
/// API calls the simulator answered too.
pub async fn await_answers_of(
    sim: &Sim,
    worker: &Worker,
    n: usize,
    deadline: Duration,
) -> Vec<Value> {
    match poll_app_messages(sim, n, deadline).await {
        Some(m) => m,
        None => panic!(
            "expected {n} app messages, have {:#?}\nthe worker's log:\n{}\nthe simulator's calls: {:#?}",
            sim.app_messages().await,
            worker.logs(),
            sim.calls().await
        ),
    }
}

async fn poll_app_messages(sim: &Sim, n: usize, deadline: Duration) -> Option<Vec<Value>> {
    eventually(deadline, || async {
        let messages = sim.app_messages().await;
        (messages.len() >= n).then_some(messages)
    })
    .await
}
