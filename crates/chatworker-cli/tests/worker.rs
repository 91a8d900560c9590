//! The worker end to end: real events through the Pub/Sub emulator, the real
//! binary, replies checked in the Chat simulator's records.

mod common;

use chatworker::event::decode;
use chatworker::reply::message_id;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

fn query<'a>(record: &'a Value, key: &str) -> &'a str {
    record["query"][key].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_goes_into_the_message_thread_with_a_card_and_a_deterministic_id() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("reply").await;
    let worker = Worker::start(chatworker(), &sim, &topic.subscription, &[]).await;

    let seeded = sim.seed("spaces/AAA", "hello there", None).await;
    let thread = seeded["thread"]["name"]
        .as_str()
        .expect("thread")
        .to_owned();
    let event = message_event(&seeded);
    topic.publish_json(&event).await;

    let records = await_app_messages(&sim, 1, DEADLINE).await;
    let reply = &records[0];
    // The request: our ID, the event's thread, the fallback reply option.
    let decoded = decode(&serde_json::to_vec(&event).expect("json")).expect("decodes");
    let id = message_id(&decoded, 0).expect("the event has an identity");
    assert_eq!(query(reply, "messageId"), id.as_str());
    assert_eq!(
        query(reply, "messageReplyOption"),
        "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"
    );
    assert_eq!(reply["body"]["thread"]["name"], thread.as_str());
    // The card: sender's name and round avatar, a button that opens a link.
    let card = &reply["body"]["cardsV2"][0]["card"];
    assert_eq!(card["header"]["title"], "Ada Lovelace");
    assert_eq!(
        card["header"]["imageUrl"],
        "https://lh3.googleusercontent.com/a/ada"
    );
    assert_eq!(card["header"]["imageType"], "CIRCLE");
    let widgets = card["sections"][0]["widgets"].as_array().expect("widgets");
    assert_eq!(widgets[0]["textParagraph"]["text"], "You said: hello there");
    assert!(
        widgets[1]["buttonList"]["buttons"][0]["onClick"]["openLink"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{widgets:?}"
    );
    // And Chat put it in the thread.
    assert_eq!(reply["message"]["thread"]["name"], thread.as_str());
    assert_eq!(reply["message"]["threadReply"], true);
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_event_yields_one_message_whatever_its_format() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("dup").await;
    let mut worker = Worker::start(chatworker(), &sim, &topic.subscription, &[]).await;

    let seeded = sim.seed("spaces/DUP", "once please", None).await;
    // Chat published it twice, and once more in the add-on format.
    topic.publish_json(&message_event(&seeded)).await;
    topic.publish_json(&message_event(&seeded)).await;
    topic.publish_json(&addon_message_event(&seeded)).await;

    // The copies come one after the other (one thread, one lane): each
    // meets the first in the inbox, and either finds its message again by
    // its ID (Chat answers 409) or, once the first is recorded as
    // finished, is acked without a call.
    let created = eventually(DEADLINE, || async {
        let creates = sim
            .calls()
            .await
            .iter()
            .filter(|c| c["method"] == "POST")
            .count();
        (creates >= 1).then_some(())
    })
    .await;
    assert!(created.is_some(), "no create call");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _) = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    let creates: Vec<u64> = sim
        .calls()
        .await
        .iter()
        .filter(|c| c["method"] == "POST")
        .map(|c| c["status"].as_u64().unwrap_or(0))
        .collect();
    let refused = creates.iter().filter(|&&s| s == 409).count() as u64;
    assert_eq!(
        creates.iter().filter(|&&s| s == 200).count(),
        1,
        "one created, the rest refused as duplicates: {creates:?}"
    );
    assert_eq!(creates.len() as u64, 1 + refused, "{creates:?}");
    assert_eq!(sim.app_messages().await.len(), 1);
    assert_eq!(worker.counter("events_received"), 3);
    assert_eq!(
        worker.counter("events_acked"),
        3,
        "a copy met in the inbox, or a 409 on our own ID, counts as delivered"
    );
    assert_eq!(
        worker.counter("inbox_repeats"),
        2,
        "both copies met the first"
    );
    assert_eq!(worker.counter("replies_created"), 1);
    assert_eq!(worker.counter("replies_already_existed"), refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_acked_counted_and_never_answered() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("bad").await;
    let mut worker = Worker::start(chatworker(), &sim, &topic.subscription, &[]).await;

    topic.publish("this is not json {").await;
    topic.publish(r#"{"type": "MESSAGE", "space": 5}"#).await;
    topic.publish(r#"{"hello": "world"}"#).await;
    // Over worker.max_event_bytes (1 MiB by default): not even read.
    let oversized = format!(
        r#"{{"type": "MESSAGE", "text": "{}"}}"#,
        "x".repeat(2 << 20)
    );
    topic.publish(oversized).await;
    let fixtures = repo_path("tests/fixtures/events/classic");
    for fixture in [
        "bot_message.json",
        "future_event_type.json",
        "removed_from_space.json",
    ] {
        topic
            .publish(std::fs::read(fixtures.join(fixture)).expect("fixture"))
            .await;
    }
    // A good event last: once it is answered, the others were handled before
    // it or beside it.
    let seeded = sim.seed("spaces/BAD", "still here", None).await;
    topic.publish_json(&message_event(&seeded)).await;
    let records = await_app_messages(&sim, 1, DEADLINE).await;
    assert_eq!(
        records[0]["body"]["thread"]["name"],
        seeded["thread"]["name"]
    );
    worker
        .wait_for_log("undecodable Pub/Sub message", DEADLINE)
        .await;

    let (status, _) = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(
        sim.app_messages().await.len(),
        1,
        "nothing sent for bad input"
    );
    // Each was received once and acked: no redelivery loop.
    assert_eq!(worker.counter("events_received"), 8);
    assert_eq!(worker.counter("events_acked"), 8);
    assert_eq!(worker.counter("events_nacked"), 0);
    let dropped = &worker.summary()["events_dropped"];
    for reason in [
        "\"not_json\": 1",
        "\"wrong_shape\": 2",
        "\"too_large\": 1",
        "\"bot_sender\": 1",
        "\"unknown_type\": 1",
        "\"no_reply\": 1",
    ] {
        assert!(dropped.contains(reason), "{reason} in {dropped}");
    }
    let logs = worker.logs();
    assert!(
        logs.contains("event type unknown to this version"),
        "{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payloads_go_to_the_dead_letter_topic_when_configured() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("dlq-src").await;
    let dead = Topic::fresh("dlq").await;
    let mut worker = Worker::start(
        chatworker(),
        &sim,
        &topic.subscription,
        &[("CHATWORKER_PUBSUB__DEAD_LETTER_TOPIC", &dead.topic)],
    )
    .await;
    let id = topic.publish("{not json").await;
    let letters = eventually(DEADLINE, || async {
        let got = pull_and_ack(&dead.subscription, 10).await;
        (!got.is_empty()).then_some(got)
    })
    .await
    .expect("a dead letter");
    let letter = &letters[0]["message"];
    let attributes = &letter["attributes"];
    assert_eq!(attributes["chatworker_reason"], "not_json");
    assert_eq!(attributes["chatworker_message_id"], id.as_str());
    assert_eq!(
        attributes["chatworker_subscription"],
        topic.subscription.as_str()
    );
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD
        .decode(letter["data"].as_str().expect("data"))
        .expect("base64");
    assert_eq!(data, b"{not json", "the original payload, untouched");

    // A permanent Chat API failure: acked at once, dead-lettered with why.
    sim.fail_next(1, 403).await;
    let seeded = sim.seed("spaces/DLQ", "forbidden", None).await;
    let id = topic.publish_json(&message_event(&seeded)).await;
    let letters = eventually(DEADLINE, || async {
        let got = pull_and_ack(&dead.subscription, 10).await;
        (!got.is_empty()).then_some(got)
    })
    .await
    .expect("a second dead letter");
    let attributes = &letters[0]["message"]["attributes"];
    assert_eq!(attributes["chatworker_reason"], "chat_permanent");
    assert_eq!(attributes["chatworker_message_id"], id.as_str());
    assert!(
        attributes["chatworker_error"]
            .as_str()
            .is_some_and(|e| e.contains("403")),
        "{attributes}"
    );

    let (status, _) = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success());
    assert_eq!(worker.counter("events_dead_lettered"), 2);
    assert_eq!(worker.counter("events_acked"), 2);
    assert_eq!(worker.counter("events_nacked"), 0);
    assert_eq!(
        sim.calls().await.len(),
        1,
        "a permanent failure is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_keeps_failing_is_dead_lettered_by_the_subscription_policy() {
    let sim = Sim::start().await;
    let dead = Topic::fresh("poison-dlq").await;
    let topic = Topic::fresh_with_dead_letter_policy("poison", &dead, 5).await;
    let mut worker = Worker::start(
        chatworker(),
        &sim,
        &topic.subscription,
        &[("CHATWORKER_CHAT__RETRY_ATTEMPTS", "1")],
    )
    .await;
    // Chat keeps failing for this event: every delivery is nacked.
    sim.fail_next(1000, 503).await;
    let seeded = sim.seed("spaces/PSN", "poison", None).await;
    let event = message_event(&seeded);
    topic.publish_json(&event).await;

    let letters = eventually(Duration::from_secs(120), || async {
        let got = pull_and_ack(&dead.subscription, 10).await;
        (!got.is_empty()).then_some(got)
    })
    .await
    .expect("Pub/Sub dead-letters the event after five attempts");
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD
        .decode(letters[0]["message"]["data"].as_str().expect("data"))
        .expect("base64");
    let letter: Value = serde_json::from_slice(&data).expect("the event, as published");
    assert_eq!(letter, event);
    let (status, _) = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success());
    // One Chat call per delivery, each delivery numbered, then no more.
    assert_eq!(sim.calls().await.len(), 5);
    assert_eq!(worker.counter("events_nacked"), 5);
    let attempts: Vec<Value> = worker
        .entries("reply failed after retries; nacked for redelivery")
        .iter()
        .map(|e| e["delivery_attempt"].clone())
        .collect();
    assert!(attempts.contains(&Value::from(5)), "{attempts:?}");
    assert!(sim.app_messages().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_and_help() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("onboard").await;
    let _worker = Worker::start(chatworker(), &sim, &topic.subscription, &[]).await;

    // Added by an @mention: onboarding in the space, and the mention answered.
    let mention = sim.seed("spaces/ONB", "@chatworker hi", None).await;
    let mut added = message_event(&mention);
    added["type"] = json!("ADDED_TO_SPACE");
    topic.publish_json(&added).await;
    let records = await_app_messages(&sim, 2, DEADLINE).await;
    let onboarding = &records[0];
    assert!(
        onboarding["body"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("/help")
    );
    // Onboarding starts a thread of its own: no thread named, and no reply
    // option (the default, a new thread).
    assert_eq!(onboarding["body"]["thread"], Value::Null);
    assert_eq!(query(onboarding, "messageReplyOption"), "");
    assert_ne!(
        onboarding["message"]["thread"]["name"],
        mention["thread"]["name"]
    );
    assert_eq!(
        records[1]["message"]["thread"]["name"],
        mention["thread"]["name"]
    );
    assert_ne!(
        query(&records[0], "messageId"),
        query(&records[1], "messageId")
    );

    // /help as a slash command message: the help text, in the thread.
    let help = sim.seed("spaces/ONB", "/help", None).await;
    let mut event = message_event(&help);
    event["message"]["slashCommand"] = json!({"commandId": "1"});
    event["message"]["annotations"] = json!([{
        "type": "SLASH_COMMAND", "startIndex": 0, "length": 5,
        "slashCommand": {"type": "INVOKE", "commandName": "/help", "commandId": "1"}
    }]);
    topic.publish_json(&event).await;
    let records = await_app_messages(&sim, 3, DEADLINE).await;
    assert!(
        records[2]["body"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("/help")
    );
    assert_eq!(
        records[2]["message"]["thread"]["name"],
        help["thread"]["name"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thread_in_order_threads_in_parallel() {
    let sim = Sim::start().await;
    sim.set_latency(150).await;
    let topic = Topic::fresh("order").await;
    let _worker = Worker::start(chatworker(), &sim, &topic.subscription, &[]).await;

    // Two threads, four messages each.
    let mut threads = Vec::new();
    for t in 0..2 {
        let first = sim.seed("spaces/ORD", &format!("t{t} m0"), None).await;
        let thread = first["thread"]["name"].as_str().expect("thread").to_owned();
        let mut messages = vec![first];
        for m in 1..4 {
            messages.push(
                sim.seed("spaces/ORD", &format!("t{t} m{m}"), Some(&thread))
                    .await,
            );
        }
        threads.push((thread, messages));
    }
    for i in 0..4 {
        for (_, messages) in &threads {
            topic.publish_json(&message_event(&messages[i])).await;
        }
    }
    let records = await_app_messages(&sim, 8, DEADLINE).await;
    assert_eq!(records.len(), 8);
    // Calls are recorded once answered, after the simulated latency.
    let idle = eventually(DEADLINE, || async {
        (sim.in_flight().await == 0).then_some(())
    })
    .await;
    assert!(idle.is_some(), "calls still in flight");

    // Match each create call to its thread through the message ID.
    let calls = sim.calls().await;
    let spans = |thread: &str| -> Vec<(f64, f64)> {
        let ids: Vec<&str> = records
            .iter()
            .filter(|r| r["message"]["thread"]["name"] == thread)
            .map(|r| query(r, "messageId"))
            .collect();
        let mut spans: Vec<(f64, f64)> = calls
            .iter()
            .filter(|c| {
                ids.iter()
                    .any(|id| c["query"].as_str().unwrap_or_default().contains(id))
            })
            .map(|c| {
                let start = c["startedMs"].as_f64().expect("start");
                (start, start + c["latencyMs"].as_f64().expect("latency"))
            })
            .collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        spans
    };
    let (a, b) = (spans(&threads[0].0), spans(&threads[1].0));
    assert_eq!((a.len(), b.len()), (4, 4));
    for spans in [&a, &b] {
        for pair in spans.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "calls of one thread overlapped: {spans:?}"
            );
        }
    }
    let overlap = a.iter().any(|x| b.iter().any(|y| x.0 < y.1 && y.0 < x.1));
    assert!(
        overlap,
        "the two threads never ran at the same time: {a:?} {b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_acked_and_transient_ones_retried() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("errors").await;
    let mut worker = Worker::start(
        chatworker(),
        &sim,
        &topic.subscription,
        &[("CHATWORKER_CHAT__RETRY_ATTEMPTS", "2")],
    )
    .await;

    // 403: permanent. Acked, counted, not retried.
    sim.fail_next(1, 403).await;
    let first = sim.seed("spaces/ERR", "forbidden", None).await;
    topic.publish_json(&message_event(&first)).await;
    worker.wait_for_log("reply rejected", DEADLINE).await;

    // One 503: retried within the delivery, then answered.
    sim.fail_next(1, 503).await;
    let second = sim.seed("spaces/ERR", "unavailable once", None).await;
    topic.publish_json(&message_event(&second)).await;
    await_app_messages(&sim, 1, DEADLINE).await;

    // Two 503s exhaust the two attempts: nacked, redelivered, answered.
    sim.fail_next(2, 503).await;
    let third = sim.seed("spaces/ERR", "unavailable twice", None).await;
    topic.publish_json(&message_event(&third)).await;
    let records = await_app_messages(&sim, 2, DEADLINE).await;
    let threads: Vec<&Value> = records
        .iter()
        .map(|r| &r["body"]["thread"]["name"])
        .collect();
    assert_eq!(
        threads,
        [&second["thread"]["name"], &third["thread"]["name"]]
    );

    // 429 with Retry-After: the retry waits as long as the server asked.
    sim.control(json!({"failNext": 1, "failStatus": 429, "retryAfterSeconds": 2}))
        .await;
    let fourth = sim.seed("spaces/ERR", "slow down", None).await;
    topic.publish_json(&message_event(&fourth)).await;
    await_app_messages(&sim, 3, DEADLINE).await;

    let (status, _) = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success());
    assert_eq!(
        sim.app_messages().await.len(),
        3,
        "the 403 event was not retried"
    );
    assert_eq!(worker.counter("events_nacked"), 1);
    assert_eq!(worker.counter("events_acked"), 4);
    assert_eq!(worker.counter("chat_retries"), 3);
    assert!(worker.summary()["events_dropped"].contains("\"chat_permanent\": 1"));
    let calls = sim.calls().await;
    let statuses: Vec<u64> = calls
        .iter()
        .map(|c| c["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, vec![403, 503, 200, 503, 503, 200, 429, 200]);
    let gap = calls[7]["startedMs"].as_f64().expect("start")
        - calls[6]["startedMs"].as_f64().expect("start");
    assert!(gap >= 2000.0, "Retry-After: 2 was not honoured: {gap} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_exits_zero() {
    drains_in_flight_work(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rest_sigterm_finishes_in_flight_work_and_exits_zero() {
    drains_in_flight_work(&[("CHATWORKER_PUBSUB__TRANSPORT", "rest")]).await;
}

/// SIGTERM with events in flight: they finish, are acked, and the worker
/// exits 0.
async fn drains_in_flight_work(env: &[(&str, &str)]) {
    let sim = Sim::start().await;
    sim.set_latency(1500).await;
    let topic = Topic::fresh("drain").await;
    let mut worker = Worker::start(chatworker(), &sim, &topic.subscription, env).await;

    let mut seeded = Vec::new();
    for i in 0..10 {
        seeded.push(sim.seed("spaces/DRN", &format!("m{i}"), None).await);
    }
    for message in &seeded {
        topic.publish_json(&message_event(message)).await;
    }
    let busy = eventually(DEADLINE, || async {
        (sim.in_flight().await >= 5).then_some(())
    })
    .await;
    assert!(busy.is_some(), "replies never got in flight");

    let (status, took) = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}\n{}", worker.logs());
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // What was in flight finished; nothing was abandoned or answered twice.
    let records = sim.app_messages().await;
    let answered = worker.counter("replies_created");
    assert_eq!(records.len() as u64, answered);
    assert!(answered >= 5, "in-flight replies completed: {answered}");
    assert_eq!(worker.counter("events_acked"), answered);
    assert_eq!(
        worker.counter("events_received"),
        worker.counter("events_acked") + worker.counter("events_nacked")
    );
    assert!(
        !worker.logs().contains("unfinished events nacked"),
        "{}",
        worker.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_nacks_what_cannot_finish_within_the_grace_period() {
    let sim = Sim::start().await;
    sim.set_latency(30_000).await;
    let topic = Topic::fresh("grace").await;
    let mut worker = Worker::start(
        chatworker(),
        &sim,
        &topic.subscription,
        &[("CHATWORKER_WORKER__SHUTDOWN_GRACE", "4s")],
    )
    .await;

    let seeded = sim.seed("spaces/GRC", "slow", None).await;
    topic.publish_json(&message_event(&seeded)).await;
    let busy = eventually(DEADLINE, || async {
        (sim.in_flight().await >= 1).then_some(())
    })
    .await;
    assert!(busy.is_some());

    let (status, took) = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}\n{}", worker.logs());
    assert!(
        took < Duration::from_secs(6),
        "exited after {took:?} with a 4 s grace period"
    );
    assert_eq!(worker.counter("events_nacked"), 1);
    assert_eq!(worker.counter("events_acked"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_are_reported_once_at_start_and_events_kept() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("nocreds").await;
    let home = tempfile::tempdir().expect("home");
    let home = home.path().to_str().expect("utf-8");
    // No key file, no gcloud credentials, and a metadata server that refuses.
    let mut worker = Worker::start(
        chatworker(),
        &sim,
        &topic.subscription,
        &[
            ("GOOGLE_APPLICATION_CREDENTIALS", ""),
            ("HOME", home),
            ("GCE_METADATA_HOST", "127.0.0.1:9"),
            ("CHATWORKER_CHAT__RETRY_ATTEMPTS", "2"),
        ],
    )
    .await;
    worker
        .wait_for_log("cannot obtain Chat API credentials", DEADLINE)
        .await;
    let seeded = sim.seed("spaces/NOC", "anyone there?", None).await;
    topic.publish_json(&message_event(&seeded)).await;
    worker.wait_for_log("nacked for redelivery", DEADLINE).await;

    let (status, _) = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success());
    assert!(
        worker.counter("events_nacked") >= 1,
        "the event is kept for redelivery"
    );
    assert_eq!(worker.counter("events_acked"), 0);
    assert!(sim.app_messages().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_exits_2_with_one_line() {
    let sim = Sim::start().await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("CHATWORKER_PUBSUB__SUBSCRIPTION", "")],
            "CHATWORKER_PUBSUB__SUBSCRIPTION",
        ),
        (
            &[("CHATWORKER_PUBSUB__SUBSCRIPTION", "projects/p/topics/t")],
            "CHATWORKER_PUBSUB__SUBSCRIPTION",
        ),
        (
            &[("CHATWORKER_WORKER__CONCURRENCY", "many")],
            "CHATWORKER_WORKER__CONCURRENCY",
        ),
        (
            &[("CHATWORKER_CHAT__ENDPOINT", "chat.example.com")],
            "CHATWORKER_CHAT__ENDPOINT",
        ),
        (
            &[("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")],
            "credentials",
        ),
    ];
    for (env, needle) in cases {
        let mut worker = Worker::spawn(
            chatworker(),
            &sim,
            "projects/p/subscriptions/valid-sub",
            env,
        );
        let status = tokio::time::timeout(Duration::from_secs(30), worker_wait(&mut worker))
            .await
            .expect("exits");
        let logs = worker.logs();
        assert_eq!(status.code(), Some(2), "{env:?}: {logs}");
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 1, "{env:?}: one line, got {logs}");
        assert!(lines[0].contains(needle), "{env:?}: {logs}");
        assert!(!logs.contains("panicked"), "{logs}");
    }
}

async fn worker_wait(worker: &mut Worker) -> std::process::ExitStatus {
    worker.wait().await
}

/// Peak resident memory of a process, from /proc, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_megabyte_events_are_answered_within_the_memory_budget() {
    let sim = Sim::start().await;
    // Slow replies, so that events pile up unless flow control stops them.
    sim.set_latency(1500).await;
    let topic = Topic::fresh("huge").await;
    // A budget of 20 MiB of payload: two 9 MB events at a time at most;
    // and events as large as Pub/Sub's largest accepted.
    let worker = Worker::start(
        chatworker(),
        &sim,
        &topic.subscription,
        &[
            ("CHATWORKER_PUBSUB__MAX_OUTSTANDING_BYTES", "20971520"),
            ("CHATWORKER_WORKER__MAX_EVENT_BYTES", "10485760"),
        ],
    )
    .await;
    let huge = "a".repeat(9 * 1000 * 1000);
    let mut threads = Vec::new();
    for i in 0..6 {
        let seeded = sim.seed("spaces/BIG", &format!("big {i}"), None).await;
        let mut event = message_event(&seeded);
        event["message"]["text"] = json!(huge);
        // The card quotes argumentText when present; here it is the text.
        event["message"]
            .as_object_mut()
            .expect("message")
            .remove("argumentText");
        assert!(serde_json::to_vec(&event).expect("json").len() > 9_000_000);
        topic.publish_json(&event).await;
        threads.push(seeded["thread"]["name"].clone());
    }
    let records = await_app_messages(&sim, 6, DEADLINE).await;
    let mut answered: Vec<&Value> = records
        .iter()
        .map(|r| &r["body"]["thread"]["name"])
        .collect();
    answered.sort_by_key(|t| t.as_str().map(str::to_owned));
    threads.sort_by_key(|t| t.as_str().map(str::to_owned));
    assert_eq!(answered, threads.iter().collect::<Vec<_>>());
    // The card quotes the start of the text, within Chat's card limit.
    let quoted = records[0]["body"]["cardsV2"][0]["card"]["sections"][0]["widgets"][0]
        ["textParagraph"]["text"]
        .as_str()
        .expect("quoted text");
    assert!(
        quoted.ends_with("…") && quoted.len() < 4000,
        "{}",
        quoted.len()
    );
    // 54 MB of events in flight at once (the emulator ignores the byte
    // budget, so this is the worst case): about two copies of each.
    let peak = peak_rss_mib(worker.pid());
    println!("peak RSS with six 9 MB events in flight: {peak:.0} MiB");
    assert!(peak < 150.0, "peak RSS {peak:.0} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_quota_slot_keeps_the_lease() {
    keeps_the_lease("auto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rest_waiting_for_a_quota_slot_keeps_the_lease() {
    keeps_the_lease("rest").await;
}

/// Events held twice the subscription's ack deadline are not redelivered.
async fn keeps_the_lease(transport: &str) {
    let sim = Sim::start().await;
    let topic = Topic::fresh("lease").await;
    // One write per 10 s into a space; the subscription's ack deadline is
    // 10 s and leases are extended 10 s at a time, so the third event waits
    // twice the deadline for its slot.
    let mut worker = Worker::start(
        chatworker(),
        &sim,
        &topic.subscription,
        &[
            ("CHATWORKER_CHAT__SPACE_WRITES_PER_MINUTE", "6"),
            ("CHATWORKER_PUBSUB__MAX_LEASE_EXTENSION", "10s"),
            ("CHATWORKER_PUBSUB__TRANSPORT", transport),
        ],
    )
    .await;
    for i in 0..3 {
        let seeded = sim.seed("spaces/LSE", &format!("slow {i}"), None).await;
        topic.publish_json(&message_event(&seeded)).await;
    }
    let records = await_app_messages(&sim, 3, DEADLINE).await;
    let (status, _) = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success());
    assert_eq!(records.len(), 3);
    let starts: Vec<f64> = sim
        .calls()
        .await
        .iter()
        .map(|c| c["startedMs"].as_f64().expect("start"))
        .collect();
    assert!(starts[2] - starts[0] >= 19_000.0, "paced: {starts:?}");
    assert_eq!(
        worker.counter("events_received"),
        3,
        "no event was redelivered"
    );
    assert_eq!(worker.counter("replies_already_existed"), 0);
    assert!(worker.counter("quota_waits") >= 2);
    assert_eq!(
        worker.logs().contains("pulling over REST"),
        transport == "rest",
        "the transport asked for was used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_subscription_exits_1_with_one_line() {
    let sim = Sim::start().await;
    let subscription = format!("projects/{}/subscriptions/does-not-exist", common::PROJECT);
    let mut worker = Worker::spawn(chatworker(), &sim, &subscription, &[]);
    let status = tokio::time::timeout(DEADLINE, worker.wait())
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(1), "{}", worker.logs());
    assert!(
        worker
            .logs()
            .contains("does-not-exist does not exist; create it"),
        "{}",
        worker.logs()
    );
}

/// Runs a worker through successes, failures and bad input, and checks that
/// its log (info and above) holds no token, no key material and no message
/// text.
async fn assert_no_secrets_in_logs(sim: &Sim, worker_env: &[(&str, &str)], secrets: &[String]) {
    let topic = Topic::fresh("secrets").await;
    let mut worker = Worker::start(chatworker(), sim, &topic.subscription, worker_env).await;
    let body = secrets[0].as_str();
    let answered = sim.app_messages().await.len();
    let seeded = sim.seed("spaces/SEC", body, None).await;
    topic.publish_json(&message_event(&seeded)).await;
    await_app_messages(sim, answered + 1, DEADLINE).await;
    sim.fail_next(1, 403).await;
    let rejected = sim.seed("spaces/SEC", body, None).await;
    topic.publish_json(&message_event(&rejected)).await;
    worker.wait_for_log("reply rejected", DEADLINE).await;
    sim.fail_next(1, 503).await;
    let retried = sim.seed("spaces/SEC", body, None).await;
    topic.publish_json(&message_event(&retried)).await;
    await_app_messages(sim, answered + 2, DEADLINE).await;
    topic
        .publish(format!("{{\"type\": \"MESSAGE\", \"text\": \"{body}\""))
        .await;
    worker
        .wait_for_log("undecodable Pub/Sub message", DEADLINE)
        .await;
    let (status, _) = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success());
    let logs = worker.logs();
    assert!(logs.contains("worker stopped"));
    for secret in secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "{secret:?} is in the log:\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keys_and_message_bodies_never_reach_the_logs() {
    let sim = Sim::start().await;
    let body = format!("confidential-{:016x}", rand::random::<u64>());
    // With a key file: self-signed JWTs, and the key itself.
    let key: Value =
        serde_json::from_slice(&std::fs::read(&sim.key_path).expect("key file")).expect("json");
    let pem = key["private_key"].as_str().expect("private key");
    let mut secrets = vec![body.clone(), "PRIVATE KEY".into(), "eyJ".into()];
    // Any 16 characters of the key's body.
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        secrets.extend(
            line.as_bytes()
                .chunks(16)
                .filter(|c| c.len() == 16)
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        );
    }
    assert_no_secrets_in_logs(&sim, &[], &secrets).await;
    // With the metadata server: opaque access tokens.
    let home = tempfile::tempdir().expect("home");
    let metadata = sim.url.trim_start_matches("http://").to_owned();
    assert_no_secrets_in_logs(
        &sim,
        &[
            ("GOOGLE_APPLICATION_CREDENTIALS", ""),
            ("HOME", home.path().to_str().expect("utf-8")),
            ("GCE_METADATA_HOST", metadata.as_str()),
        ],
        &[body, "ya29.".into()],
    )
    .await;
}
