//! What an operator sees: the health and metrics listener, the JSON logs,
//! `chatworker setup` and `chatworker check`, against the Pub/Sub emulator
//! and the Chat simulator.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_are_served() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("ops").await;
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [("CHATWORKER_SERVER__LISTEN", listen.as_str())];
    let mut worker = Worker::start(&sim, &topic.subscription, &env).await;
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
    let mut worker = Worker::start(&sim, &topic.subscription, &env).await;
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
async fn a_port_in_use_fails_the_start_with_one_line() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("ops-port").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr").to_string();
    let env = [("CHATWORKER_SERVER__LISTEN", listen.as_str())];
    let mut worker = Worker::spawn(&sim, &topic.subscription, &env);
    let status = tokio::time::timeout(DEADLINE, worker.wait())
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(1));
    let logs = worker.logs();
    assert!(logs.contains("CHATWORKER_SERVER__LISTEN"), "{logs}");
}
