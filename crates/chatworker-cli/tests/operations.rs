//! What an operator sees: the health and metrics listener, the JSON logs,
//! `chatworker setup` and `chatworker check`, against the Pub/Sub emulator
//! and the Chat simulator.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_are_served() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("ops").await;
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [("CHATWORKER_SERVER__LISTEN", listen.as_str())];
    let mut worker = Worker::start(chatworker(), &sim, &topic.subscription, &env).await;
    let base = format!("http://{listen}");

    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    // Ready once a Chat token was obtained and the subscription answered.
    let ready = eventually(DEADLINE, || async {
        let (status, body) = get(&format!("{base}/readyz")).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(ready.as_deref(), Some("ready\n"));

    let seeded = sim.seed("spaces/OPS", "hello", None).await;
    topic.publish_json(&message_event(&seeded)).await;
    topic.publish(&b"not json"[..]).await;
    await_app_messages(&sim, 1, DEADLINE).await;
    let metrics = eventually(DEADLINE, || async {
        let (_, text) = get(&format!("{base}/metrics")).await;
        text.contains(r#"chatworker_events_acked_total{type="UNDECODABLE"} 1"#)
            .then_some(text)
    })
    .await
    .expect("both events settled");
    for line in [
        r#"chatworker_events_received_total{type="MESSAGE"} 1"#,
        r#"chatworker_events_acked_total{type="MESSAGE"} 1"#,
        r#"chatworker_events_dropped_total{type="UNDECODABLE",reason="not_json"} 1"#,
        r#"chatworker_chat_api_calls_total{method="create",status="200"} 1"#,
        "chatworker_reply_latency_seconds_count 1",
        "chatworker_handling_latency_seconds_count 1",
        "chatworker_events_in_flight 0",
        "chatworker_stream_reconnects_total 0",
        "# TYPE chatworker_quota_waits counter",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // Draining is alive but not ready; after the exit, nothing listens.
    let (status, _) = worker.terminate(DEADLINE).await;
    assert!(status.success());
    assert_eq!(get(&format!("{base}/healthz")).await.0, 0);

    // The log is Cloud Logging's structured JSON, one object per line.
    let logs = worker.logs();
    let entries: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        entries
            .iter()
            .all(|e| e["severity"].is_string() && e["message"].is_string())
    );
    let started = worker.entries("worker started");
    assert_eq!(started[0]["severity"], "INFO");
    let warning = worker.entries("undecodable Pub/Sub message");
    assert_eq!(warning[0]["severity"], "WARNING");
    assert_eq!(warning[0]["reason"], "not_json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_without_a_chat_token() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("ops-unready").await;
    let listen = format!("127.0.0.1:{}", free_port());
    let home = tempfile::tempdir().expect("home");
    // No key file, no gcloud credentials, and a metadata server that refuses.
    let env = [
        ("CHATWORKER_SERVER__LISTEN", listen.as_str()),
        ("GOOGLE_APPLICATION_CREDENTIALS", ""),
        ("HOME", home.path().to_str().expect("utf-8")),
        ("GCE_METADATA_HOST", "127.0.0.1:9"),
    ];
    let mut worker = Worker::start(chatworker(), &sim, &topic.subscription, &env).await;
    worker
        .wait_for_log("cannot obtain Chat API credentials", DEADLINE)
        .await;
    let (status, body) = get(&format!("http://{listen}/readyz")).await;
    assert_eq!(status, 503);
    assert!(body.contains("no Chat API token"), "{body}");
    assert_eq!(
        get(&format!("http://{listen}/healthz")).await.0,
        200,
        "alive all the same"
    );
    worker.terminate(DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_first_token_makes_the_worker_ready_after_all() {
    // The metadata server refuses tokens for the first 40 s, longer than
    // the first check may take (30 s): a grant still propagating, say.
    let sim = Sim::start().await;
    sim.control(serde_json::json!({"tokenOutageMs": 40_000}))
        .await;
    let topic = Topic::fresh("ops-late-token").await;
    let listen = format!("127.0.0.1:{}", free_port());
    let home = tempfile::tempdir().expect("home");
    let metadata = sim.url.trim_start_matches("http://").to_owned();
    let env = [
        ("CHATWORKER_SERVER__LISTEN", listen.as_str()),
        ("GOOGLE_APPLICATION_CREDENTIALS", ""),
        ("HOME", home.path().to_str().expect("utf-8")),
        ("GCE_METADATA_HOST", metadata.as_str()),
    ];
    let mut worker = Worker::start(chatworker(), &sim, &topic.subscription, &env).await;
    let (status, body) = get(&format!("http://{listen}/readyz")).await;
    assert_eq!(status, 503, "no token yet: {body}");
    // Once tokens come, the worker notices by itself, with no event to
    // prove them.
    let ready = eventually(Duration::from_secs(120), || async {
        let (status, _) = get(&format!("http://{listen}/readyz")).await;
        (status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "never ready:\n{}", worker.logs());
    worker.terminate(DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_fails_the_start_with_one_line() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("ops-port").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr").to_string();
    let env = [("CHATWORKER_SERVER__LISTEN", listen.as_str())];
    let mut worker = Worker::spawn(chatworker(), &sim, &topic.subscription, &env);
    let status = tokio::time::timeout(DEADLINE, worker.wait())
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(1));
    let logs = worker.logs();
    assert!(logs.contains("CHATWORKER_SERVER__LISTEN"), "{logs}");
}

/// Runs `chatworker ARGS` to completion with the test environment plus
/// `env`; returns the exit code and stdout + stderr.
fn run_chatworker(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = std::process::Command::new(common::chatworker());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("PUBSUB_EMULATOR_HOST", emulator_host())
        .current_dir(dir.path());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("chatworker runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

async fn rest(path: &str) -> Value {
    reqwest::get(format!("http://{}/v1/{path}", emulator_host()))
        .await
        .expect("emulator")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_creates_what_is_missing_and_converges() {
    let id = format!("setup-{}", std::process::id());
    let topic = format!("projects/{PROJECT}/topics/{id}");
    let subscription = format!("projects/{PROJECT}/subscriptions/{id}");
    let dead = format!("projects/{PROJECT}/topics/{id}-dead");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("store.db");
    let store = format!("sqlite://{}", db.display());
    let env = [
        ("CHATWORKER_PUBSUB__TOPIC", topic.as_str()),
        ("CHATWORKER_PUBSUB__SUBSCRIPTION", subscription.as_str()),
        ("CHATWORKER_PUBSUB__DEAD_LETTER_TOPIC", dead.as_str()),
        ("CHATWORKER_STORE__URL", store.as_str()),
    ];
    let (code, out) = run_chatworker(&["setup"], &env);
    assert_eq!(code, Some(0), "{out}");
    // The store's schema too, ahead of the workers.
    assert!(out.contains("store sqlite: schema at version"), "{out}");
    assert!(db.exists(), "the SQLite file was created");
    assert!(
        out.contains(&format!("created subscription {subscription}")),
        "{out}"
    );
    assert!(
        out.contains(
            &format!("created subscription {dead}-sub").replace("/topics/", "/subscriptions/")
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "serviceAccount:chat-api-push@system.gserviceaccount.com --role=roles/pubsub.publisher"
        ),
        "{out}"
    );
    assert!(
        out.contains("gcp-sa-pubsub.iam.gserviceaccount.com"),
        "{out}"
    );
    let created = rest(&subscription).await;
    assert_eq!(created["topic"], topic.as_str());
    assert_eq!(created["retryPolicy"]["minimumBackoff"], "10s");
    assert_eq!(created["retryPolicy"]["maximumBackoff"], "600s");
    assert_eq!(
        created["deadLetterPolicy"]["deadLetterTopic"],
        dead.as_str()
    );
    assert_eq!(created["deadLetterPolicy"]["maxDeliveryAttempts"], 10);

    // Again: nothing to do.
    let (code, out) = run_chatworker(&["setup"], &env);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !out.contains("created") && !out.contains("updated"),
        "{out}"
    );

    // Changed settings: the policies follow.
    let mut changed = env.to_vec();
    changed.push(("CHATWORKER_PUBSUB__MAX_DELIVERY_ATTEMPTS", "7"));
    changed.push(("CHATWORKER_PUBSUB__MIN_RETRY_DELAY", "30s"));
    let (code, out) = run_chatworker(&["setup"], &changed);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("updated the retry and dead-letter policies"),
        "{out}"
    );
    let updated = rest(&subscription).await;
    assert_eq!(updated["deadLetterPolicy"]["maxDeliveryAttempts"], 7);
    assert_eq!(updated["retryPolicy"]["minimumBackoff"], "30s");

    // Without the topic, one line says what to set.
    let (code, out) = run_chatworker(&["setup"], &env[1..]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("CHATWORKER_PUBSUB__TOPIC"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_when_all_is_well_and_explains_each_failure() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("check").await;
    let key = sim.key_path.display().to_string();
    let good = [
        (
            "CHATWORKER_PUBSUB__SUBSCRIPTION",
            topic.subscription.as_str(),
        ),
        ("CHATWORKER_CHAT__ENDPOINT", sim.url.as_str()),
        ("CHATWORKER_CHAT__CREDENTIALS_FILE", key.as_str()),
    ];
    let (code, out) = run_chatworker(&["check"], &good);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "ok    configuration",
        "ok    chat token: obtained",
        "ok    subscription:",
        "ok    pull permission: not checked: the emulator has no IAM",
        "ok    store: memory: (the app's state and the inbox are lost on restart",
    ] {
        assert!(out.contains(line), "{line} in\n{out}");
    }
    assert!(
        sim.calls().await.iter().all(|c| c["method"] != "POST"),
        "sends nothing"
    );

    let missing = format!(
        "projects/{PROJECT}/subscriptions/missing-{}",
        std::process::id()
    );
    let bad = [
        ("CHATWORKER_PUBSUB__SUBSCRIPTION", missing.as_str()),
        ("CHATWORKER_CHAT__ENDPOINT", sim.url.as_str()),
        ("GCE_METADATA_HOST", "127.0.0.1:9"),
        (
            "CHATWORKER_STORE__URL",
            "postgres://chatworker:s3cret@127.0.0.1:9/chatworker",
        ),
    ];
    let (code, out) = run_chatworker(&["check"], &bad);
    assert_eq!(code, Some(1), "{out}");
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 3, "{out}");
    assert!(
        fails[1].starts_with("FAIL  store:") && fails[1].contains("fix: check store.url"),
        "{out}"
    );
    assert!(
        !out.contains("s3cret"),
        "the store's password leaked: {out}"
    );
    assert!(
        fails[0].starts_with("FAIL  chat token:")
            && fails[0].contains("fix: set chat.credentials_file"),
        "{out}"
    );
    assert!(
        fails[2].contains("does not exist; fix: chatworker setup"),
        "{out}"
    );
    assert!(out.contains("3 of 4 checks failed"), "{out}");

    // Invalid configuration: exit 2 before any check.
    let (code, out) = run_chatworker(&["check"], &[("CHATWORKER_PUBSUB__SUBSCRIPTION", "nope")]);
    assert_eq!(code, Some(2), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_on_gke_the_metadata_token_mints_a_chat_token_by_impersonation() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("keyless").await;
    let home = tempfile::tempdir().expect("home");
    // No key file: the simulator plays the GKE metadata server (a
    // cloud-platform token for the pod's account) and IAM Credentials.
    let metadata = sim.url.trim_start_matches("http://").to_owned();
    let bot = "chat-app@chatworker-tests.iam.gserviceaccount.com";
    let env = [
        ("GOOGLE_APPLICATION_CREDENTIALS", ""),
        ("HOME", home.path().to_str().expect("utf-8")),
        ("GCE_METADATA_HOST", metadata.as_str()),
        ("CHATWORKER_CHAT__IMPERSONATE_SERVICE_ACCOUNT", bot),
        ("CHATWORKER_CHAT__IAM_ENDPOINT", sim.url.as_str()),
    ];
    let mut worker = Worker::start(chatworker(), &sim, &topic.subscription, &env).await;
    let seeded = sim.seed("spaces/KEYLESS", "hello", None).await;
    topic.publish_json(&message_event(&seeded)).await;
    let records = await_app_messages(&sim, 1, DEADLINE).await;
    // Posted as the impersonated account, not the pod's.
    assert_eq!(records[0]["message"]["sender"]["displayName"], "chat-app");
    let calls = sim.calls().await;
    let minted: Vec<&Value> = calls
        .iter()
        .filter(|c| {
            c["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!("{bot}:generateAccessToken")))
        })
        .collect();
    assert_eq!(minted.len(), 1, "one token, cached: {calls:#?}");
    assert_eq!(minted[0]["status"], 200);
    let (status, _) = worker.terminate(DEADLINE).await;
    assert!(status.success());

    // check says the same before anything runs.
    let (code, out) = run_chatworker(
        &["check"],
        &[
            (
                "CHATWORKER_PUBSUB__SUBSCRIPTION",
                topic.subscription.as_str(),
            ),
            ("CHATWORKER_CHAT__ENDPOINT", sim.url.as_str()),
            ("GCE_METADATA_HOST", metadata.as_str()),
            ("CHATWORKER_CHAT__IMPERSONATE_SERVICE_ACCOUNT", bot),
            ("CHATWORKER_CHAT__IAM_ENDPOINT", sim.url.as_str()),
        ],
    );
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn the_kubernetes_settings_load() {
    for file in ["base/chatworker.toml", "overlays/example/chatworker.toml"] {
        let path = format!(
            "{}/../../deploy/kubernetes/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let config = chatworker::Config::load_from(Some(std::path::Path::new(&path)), [])
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let settings = config.settings().unwrap_or_else(|e| panic!("{file}: {e}"));
        settings
            .pubsub
            .subscription()
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        // The default app's section, if the file has one, is the binary's.
        let _: serde::de::IgnoredAny = config.section("app").expect("the app section");
        config
            .check_sections()
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            settings.server.listen,
            Some("0.0.0.0:9090".parse().expect("address")),
            "{file}"
        );
        assert!(
            settings
                .chat
                .impersonate_service_account
                .as_deref()
                .is_some_and(|a| a.ends_with(".iam.gserviceaccount.com")),
            "{file}"
        );
        assert_eq!(settings.chat.credentials_file, None, "{file}: keyless");
    }
}
