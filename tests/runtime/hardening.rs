//! One process keeps its promises whatever its handlers do: a handler that
//! panics costs its event, never its thread; a handler that only updates a
//! message has answered.

use chatworker::{App, Context, HandlerError, Message, Reply};
use chatworker_testkit::{Sim, Topic, await_app_messages, eventually, message_event, pull_and_ack};
use std::time::Duration;
use support::InProcess;

#[path = "support.rs"]
mod support;

const DEADLINE: Duration = Duration::from_secs(60);

/// Answers every message, and panics on "boom".
fn fragile() -> App {
    App::new().message(|_ctx, m: Message| async move {
        if m.argument() == "boom" {
            panic!("the handler met a boom");
        }
        Reply::text(format!("ok: {}", m.argument()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_costs_its_event_not_its_thread() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("panic").await;
    let worker = InProcess::start(&sim, &topic, fragile(), &[]);
    let boom = sim.seed("spaces/PANIC", "boom", None).await;
    let thread = boom["thread"]["name"]
        .as_str()
        .expect("a thread")
        .to_owned();
    let after = sim.seed("spaces/PANIC", "after", Some(&thread)).await;
    topic.publish_json(&message_event(&boom)).await;
    topic.publish_json(&message_event(&after)).await;
    // The next event of the same thread is answered.
    let replies = await_app_messages(&sim, 1, DEADLINE).await;
    assert_eq!(replies[0]["message"]["text"], "ok: after");
    assert_eq!(replies[0]["message"]["thread"]["name"], thread.as_str());
    let snapshot = worker.stop().await;
    assert_eq!(snapshot.handler_panics, 1);
    // Without a dead-letter policy nothing would bound its redeliveries: the
    // event is set aside, counted.
    assert_eq!(snapshot.events_dropped.get("handler_panic"), Some(&1));
    assert_eq!(snapshot.events_acked, 2);
    assert_eq!(snapshot.events_nacked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_retried_while_the_subscription_counts_the_attempts() {
    let sim = Sim::start().await;
    let dead = Topic::fresh("panic-dead").await;
    let topic = Topic::fresh_with_dead_letter_policy("panic-policy", &dead, 5).await;
    let worker = InProcess::start(&sim, &topic, fragile(), &[]);
    let boom = sim.seed("spaces/POLICY", "boom", None).await;
    topic.publish_json(&message_event(&boom)).await;
    let after = sim.seed("spaces/POLICY", "after", None).await;
    topic.publish_json(&message_event(&after)).await;
    await_app_messages(&sim, 1, DEADLINE).await;
    // Pub/Sub forwards the panicking event after its five attempts.
    let letters = eventually(Duration::from_secs(120), || async {
        let letters = pull_and_ack(&dead.subscription, 10).await;
        (!letters.is_empty()).then_some(letters)
    })
    .await
    .expect("the subscription's policy forwards the panicking event");
    assert_eq!(letters.len(), 1);
    let snapshot = worker.stop().await;
    assert_eq!(snapshot.handler_panics, 5, "one panic per attempt");
    assert_eq!(snapshot.events_nacked, 5);
    assert_eq!(snapshot.events_dropped.get("handler_panic"), None);
}

/// "start" posts a card with a known ID; "edit" only writes over it.
async fn editor(ctx: Context, m: Message) -> Result<Option<Reply>, HandlerError> {
    let id = chatworker::names::ClientMessageId::new("client-editor-card")?;
    match m.argument() {
        "start" => Ok(Some(Reply::text("draft").with_id(id))),
        _ => {
            ctx.update(&ctx.message_name(None, &id), Reply::text("edited"))
                .await?;
            Ok(None)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_only_updates_has_answered() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("only-update").await;
    let worker = InProcess::start(&sim, &topic, App::new().message(editor), &[]);
    let start = sim.seed("spaces/EDIT", "start", None).await;
    topic.publish_json(&message_event(&start)).await;
    await_app_messages(&sim, 1, DEADLINE).await;
    let edit = sim.seed("spaces/EDIT", "edit", None).await;
    topic.publish_json(&message_event(&edit)).await;
    eventually(DEADLINE, || async {
        let messages = sim.app_messages().await;
        (messages[0]["message"]["text"] == "edited").then_some(())
    })
    .await
    .expect("the card is edited");
    let snapshot = worker.stop().await;
    assert_eq!(snapshot.events_acked, 2);
    assert_eq!(
        snapshot.events_dropped.get("no_reply"),
        None,
        "an update is an answer: {:?}",
        snapshot.events_dropped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_holds_no_more_than_its_flow_control_allows() {
    // The emulator pushes a backlog whatever the subscriber asks for: the
    // worker itself must stop taking from the stream at its limit.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    #[derive(Default)]
    struct Gauge {
        now: AtomicUsize,
        peak: AtomicUsize,
    }
    let gauge = Arc::new(Gauge::default());
    let app =
        App::with_state(gauge.clone()).message(|ctx: Context<Arc<Gauge>>, m: Message| async move {
            let now = ctx.state().now.fetch_add(1, Ordering::SeqCst) + 1;
            ctx.state().peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            ctx.state().now.fetch_sub(1, Ordering::SeqCst);
            Reply::text(format!("ok: {}", m.argument()))
        });
    let sim = Sim::start().await;
    let topic = Topic::fresh("flow").await;
    let mut events = Vec::new();
    for i in 0..40 {
        // Each in a thread of its own: only flow control bounds them.
        let seeded = sim.seed("spaces/FLOW", &format!("n{i}"), None).await;
        events.push(message_event(&seeded));
    }
    topic.publish_many(&events).await;
    let worker = InProcess::start(
        &sim,
        &topic,
        app,
        &[("CHATWORKER_PUBSUB__MAX_OUTSTANDING_MESSAGES", "5")],
    );
    await_app_messages(&sim, 40, DEADLINE).await;
    worker.stop().await;
    let peak = gauge.peak.load(Ordering::SeqCst);
    assert!(peak <= 5, "{peak} events held at once, over the limit of 5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_aborted_is_retried_not_taken_for_delivery() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("aborted").await;
    let app = App::new().message(|_ctx, m: Message| async move { Reply::text(m.argument()) });
    let worker = InProcess::start(
        &sim,
        &topic,
        app,
        &[("CHATWORKER_CHAT__RETRY_ATTEMPTS", "3")],
    );
    // The next call is refused 409 ABORTED: a conflict, not our message.
    sim.fail_next(1, 409).await;
    let seeded = sim.seed("spaces/ABORT", "hello", None).await;
    topic.publish_json(&message_event(&seeded)).await;
    let replies = await_app_messages(&sim, 1, DEADLINE).await;
    assert_eq!(replies[0]["message"]["text"], "hello");
    let snapshot = worker.stop().await;
    assert_eq!(snapshot.chat_retries, 1);
    assert_eq!(snapshot.replies_created, 1);
    assert_eq!(snapshot.replies_already_existed, 0);
}

/// Every message gets the same chosen ID; the error hook tells the person
/// when Chat says another message holds it. With `fail_once` (the
/// simulator's URL), the first time the hook answers it has the simulator
/// fail the next call: the hook's own answer fails for now.
fn stubborn(fail_once: Option<String>) -> App {
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(fail_once.is_none()));
    App::new()
        .message(|_ctx, m: Message| async move {
            let id = chatworker::names::ClientMessageId::new("client-taken")?;
            Ok::<_, HandlerError>(Reply::text(m.argument()).with_id(id))
        })
        .on_error(move |_ctx, e: HandlerError| {
            let (armed, sim_url) = (armed.clone(), fail_once.clone());
            async move {
                if let Some(sim_url) = sim_url
                    && !armed.swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    reqwest::Client::new()
                        .post(format!("{sim_url}/_sim/control"))
                        .json(&serde_json::json!({"failNext": 1, "failStatus": 503}))
                        .send()
                        .await
                        .and_then(|r| r.error_for_status())
                        .expect("arm the simulator");
                }
                let taken = e
                    .downcast_ref::<chatworker::SendError>()
                    .and_then(|s| s.api_error())
                    .is_some_and(|answer| answer.code == 409);
                if taken {
                    Ok(Reply::text("That ID is taken."))
                } else {
                    Err(e)
                }
            }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_chosen_id_already_taken_reaches_the_error_hook() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("taken").await;
    let worker = InProcess::start(&sim, &topic, stubborn(None), &[]);
    let first = sim.seed("spaces/TAKEN", "first", None).await;
    topic.publish_json(&message_event(&first)).await;
    await_app_messages(&sim, 1, DEADLINE).await;
    // The same event again: its message is found, nothing new appears.
    topic.publish_json(&message_event(&first)).await;
    // Another event wants the same ID: not swallowed as "already there".
    let second = sim.seed("spaces/TAKEN", "second", None).await;
    topic.publish_json(&message_event(&second)).await;
    let replies = await_app_messages(&sim, 2, DEADLINE).await;
    let texts: Vec<&str> = replies
        .iter()
        .filter_map(|r| r["message"]["text"].as_str())
        .collect();
    assert_eq!(texts, ["first", "That ID is taken."]);
    let snapshot = worker.stop().await;
    assert_eq!(snapshot.events_acked, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_hooks_answer_failing_for_now_is_retried() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("hookretry").await;
    let worker = InProcess::start(&sim, &topic, stubborn(Some(sim.url.clone())), &[]);
    let first = sim.seed("spaces/HOOK", "first", None).await;
    topic.publish_json(&message_event(&first)).await;
    await_app_messages(&sim, 1, DEADLINE).await;
    // Its ID is taken: refused, and the hook's answer meets a 503. The
    // event goes back and, redelivered, the answer appears once.
    let second = sim.seed("spaces/HOOK", "second", None).await;
    topic.publish_json(&message_event(&second)).await;
    let replies = await_app_messages(&sim, 2, DEADLINE).await;
    let texts: Vec<&str> = replies
        .iter()
        .filter_map(|r| r["message"]["text"].as_str())
        .collect();
    assert_eq!(texts, ["first", "That ID is taken."]);
    let snapshot = worker.stop().await;
    assert_eq!(snapshot.events_acked, 2);
    assert!(snapshot.events_nacked >= 1, "{snapshot:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_the_size_limit_with_a_card_is_delivered_whole() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("size").await;
    // Text just under Chat's limit, and a card: each fits alone, not both.
    let app = App::new().message(|_ctx, _m: Message| async move {
        let card = chatworker::card::CardBuilder::new()
            .header("Summary", "the long text above, in short")
            .section(chatworker::card::Section::new().text("z".repeat(800)))
            .build()?;
        Ok::<_, HandlerError>(Reply::text("y".repeat(31_900)).with_card("summary", card))
    });
    let worker = InProcess::start(&sim, &topic, app, &[]);
    let seeded = sim.seed("spaces/SIZE", "report", None).await;
    topic.publish_json(&message_event(&seeded)).await;
    let replies = await_app_messages(&sim, 2, DEADLINE).await;
    let text: String = replies
        .iter()
        .filter_map(|r| r["message"]["text"].as_str())
        .collect();
    assert_eq!(text.len(), 31_900, "all the text arrived");
    assert!(
        replies[1]["message"]["cardsV2"].is_array(),
        "the card with the last part"
    );
    let snapshot = worker.stop().await;
    assert_eq!(snapshot.events_dropped.get("chat_permanent"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_event_keeps_its_place_in_its_thread() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("order").await;
    let app = App::new().message(|_ctx, m: Message| async move { Reply::text(m.argument()) });
    let worker = InProcess::start(&sim, &topic, app, &[]);
    let a = sim.seed("spaces/ORDER", "a", None).await;
    let thread = a["thread"]["name"].as_str().expect("a thread").to_owned();
    let b = sim.seed("spaces/ORDER", "b", Some(&thread)).await;
    // a's reply fails for now (one attempt): a is nacked; b, behind it in
    // the thread, must not be answered first.
    sim.fail_next(1, 503).await;
    topic.publish_json(&message_event(&a)).await;
    topic.publish_json(&message_event(&b)).await;
    let replies = await_app_messages(&sim, 2, DEADLINE).await;
    let texts: Vec<&str> = replies
        .iter()
        .filter_map(|r| r["message"]["text"].as_str())
        .collect();
    assert_eq!(texts, ["a", "b"], "in the thread's order");
    let snapshot = worker.stop().await;
    assert!(snapshot.events_nacked >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_spaces_leave_room_for_a_quiet_one() {
    // Three spaces, each with more than its write quota answers at once,
    // published ahead of one event of a quiet space; the worker may hold 16
    // events. Without the room kept for quiet spaces, the busy spaces' events
    // fill the budget, and the quiet event waits behind all of them in the
    // stream, answered after most of them.
    const BUSY: usize = 3;
    const EACH: usize = 15;
    let sim = Sim::start().await;
    let topic = Topic::fresh("busy").await;
    let mut events = Vec::new();
    for space in 0..BUSY {
        for i in 0..EACH {
            let seeded = sim
                .seed(
                    &format!("spaces/BUSY{space}"),
                    &format!("b{space}-{i}"),
                    None,
                )
                .await;
            events.push(message_event(&seeded));
        }
    }
    let quiet = sim.seed("spaces/QUIET", "quiet", None).await;
    events.push(message_event(&quiet));
    topic.publish_many(&events).await;
    let app = App::new().message(|_ctx, m: Message| async move { Reply::text(m.argument()) });
    let worker = InProcess::start(
        &sim,
        &topic,
        app,
        &[
            ("CHATWORKER_PUBSUB__MAX_OUTSTANDING_MESSAGES", "16"),
            ("CHATWORKER_CHAT__SPACE_WRITES_PER_MINUTE", "60"),
        ],
    );
    let busy_before_quiet = eventually(DEADLINE, || async {
        let replies = sim.app_messages().await;
        let quiet = replies
            .iter()
            .position(|r| r["message"]["text"] == "quiet")?;
        Some(quiet)
    })
    .await
    .expect("the quiet space is answered");
    assert!(
        busy_before_quiet < BUSY * EACH / 3,
        "{busy_before_quiet} of the busy spaces' {} events were answered before the quiet one",
        BUSY * EACH
    );
    await_app_messages(&sim, BUSY * EACH + 1, Duration::from_secs(120)).await;
    let snapshot = worker.stop().await;
    assert!(snapshot.events_returned > 0, "busy events were returned");
    assert_eq!(snapshot.events_acked, (BUSY * EACH + 1) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_held_back_goes_on_when_the_subscription_gives_up() {
    // The subscription dead-letters after 5 attempts; the worker's own
    // setting says 10. The subscription's policy is what counts: when the
    // failing event's last attempt fails, the event behind it in its thread
    // is answered, not deferred until Pub/Sub dead-letters it unhandled.
    let sim = Sim::start().await;
    let dead = Topic::fresh("held-dead").await;
    let topic = Topic::fresh_with_dead_letter_policy("held", &dead, 5).await;
    let app = App::new().message(|_ctx, m: Message| async move { Reply::text(m.argument()) });
    let a = sim.seed("spaces/HELD", "a", None).await;
    let thread = a["thread"]["name"].as_str().expect("a thread").to_owned();
    let b = sim.seed("spaces/HELD", "b", Some(&thread)).await;
    // Every attempt of a's reply fails (one Chat call per attempt).
    sim.fail_next(5, 503).await;
    let worker = InProcess::start(
        &sim,
        &topic,
        app,
        &[("CHATWORKER_PUBSUB__MAX_DELIVERY_ATTEMPTS", "10")],
    );
    topic.publish_json(&message_event(&a)).await;
    topic.publish_json(&message_event(&b)).await;
    let replies = await_app_messages(&sim, 1, Duration::from_secs(120)).await;
    assert_eq!(replies[0]["message"]["text"], "b");
    let letters = eventually(DEADLINE, || async {
        let letters = pull_and_ack(&dead.subscription, 10).await;
        (!letters.is_empty()).then_some(letters)
    })
    .await
    .expect("a is dead-lettered");
    assert_eq!(letters.len(), 1, "only a: b was answered");
    let snapshot = worker.stop().await;
    assert_eq!(snapshot.events_acked, 1);
}

/// A handler that sent a message and then failed for good: its message goes
/// out once, and the event is dead-lettered even when the first letter
/// could not be published: its redeliveries meet the committed failure, and
/// none is acked as answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_failure_is_dead_lettered_on_its_redelivery() {
    let sim = Sim::start().await;
    let dead = Topic::fresh("failed-dead").await;
    let topic = Topic::fresh("failed").await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = format!("sqlite://{}", dir.path().join("store.db").display());
    let app = || {
        App::new().message(|ctx: Context, _m: Message| async move {
            ctx.send("looking into it").await?;
            Err::<(), _>(HandlerError::permanent("the lookup refused"))
        })
    };
    // Leases extended 10 s at a time (the shortest): a redelivery the
    // emulator hands to the stopping worker's stream comes back after that
    // stream's lease, at each try (20 s with the default, and the emulator
    // sometimes tried that stream again several times over).
    let env = [
        ("CHATWORKER_PUBSUB__DEAD_LETTER_TOPIC", dead.topic.as_str()),
        ("CHATWORKER_STORE__URL", store.as_str()),
        ("CHATWORKER_PUBSUB__MAX_LEASE_EXTENSION", "10s"),
    ];
    let worker = InProcess::start(&sim, &topic, app(), &env);
    // The dead-letter topic goes away: no letter can be sent.
    dead.remove().await;
    let event = sim.seed("spaces/FAILED", "look", None).await;
    topic.publish_json(&message_event(&event)).await;
    await_app_messages(&sim, 1, DEADLINE).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snapshot = worker.stop().await;
    assert!(snapshot.events_nacked >= 2, "redelivered: {snapshot:?}");
    assert_eq!(
        snapshot.events_acked, 0,
        "no redelivery was acked as answered"
    );
    // With the topic back, the next worker sends the letter (once the
    // emulator lets go of the delivery the stopped worker was being handed:
    // up to a few ack deadlines).
    let dead = dead.recreate(&chatworker_testkit::emulator_host()).await;
    let worker = InProcess::start(&sim, &topic, app(), &env);
    let letters = eventually(2 * DEADLINE, || async {
        let letters = pull_and_ack(&dead.subscription, 10).await;
        (!letters.is_empty()).then_some(letters)
    })
    .await
    .expect("the failure is dead-lettered once the topic is back");
    assert_eq!(letters.len(), 1);
    let snapshot = worker.stop().await;
    assert_eq!(sim.app_messages().await.len(), 1, "its message went once");
    assert_eq!(snapshot.events_dead_lettered, 1);
}

/// In a fleet (a PostgreSQL store), a panic that no subscription policy
/// bounds is set aside as in one process: its thread goes on at once, not
/// after the hold kept for a redelivery that will never come, and a copy
/// of the event (published again) is set aside by the recorded outcome,
/// the handler not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_a_panic_is_set_aside_once_and_its_thread_goes_on() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("fleet-panic").await;
    let postgres = chatworker_testkit::postgres::Postgres::start();
    let url = postgres.url();
    let worker = InProcess::start(
        &sim,
        &topic,
        fragile(),
        &[("CHATWORKER_STORE__URL", url.as_str())],
    );
    let boom = sim.seed("spaces/FLEETPANIC", "boom", None).await;
    let thread = boom["thread"]["name"]
        .as_str()
        .expect("a thread")
        .to_owned();
    let after = sim.seed("spaces/FLEETPANIC", "after", Some(&thread)).await;
    topic.publish_json(&message_event(&boom)).await;
    topic.publish_json(&message_event(&after)).await;
    let replies = await_app_messages(&sim, 1, DEADLINE).await;
    assert_eq!(replies[0]["message"]["text"], "ok: after");
    // The copy: pulled at once, and settled before the worker stops.
    topic.publish_json(&message_event(&boom)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let snapshot = worker.stop().await;
    assert_eq!(
        snapshot.handler_panics, 1,
        "the copy did not run the handler"
    );
    assert_eq!(
        snapshot.events_dropped.get("handler_panic"),
        Some(&2),
        "both deliveries set aside: {snapshot:?}"
    );
    assert_eq!(snapshot.events_acked, 3);
    assert_eq!(snapshot.events_nacked, 0);
}

/// In a fleet, an event that fails for good is dead-lettered once, with
/// its reason, and its thread goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_a_failure_is_dead_lettered_and_its_thread_goes_on() {
    let sim = Sim::start().await;
    let dead = Topic::fresh("fleet-failed-dead").await;
    let topic = Topic::fresh("fleet-failed").await;
    let postgres = chatworker_testkit::postgres::Postgres::start();
    let url = postgres.url();
    let app = App::new().message(|_ctx: Context, m: Message| async move {
        match m.argument() {
            "bad" => Err(HandlerError::permanent("the lookup refused")),
            other => Ok(Reply::text(format!("ok: {other}"))),
        }
    });
    let env = [
        ("CHATWORKER_PUBSUB__DEAD_LETTER_TOPIC", dead.topic.as_str()),
        ("CHATWORKER_STORE__URL", url.as_str()),
    ];
    let worker = InProcess::start(&sim, &topic, app, &env);
    let bad = sim.seed("spaces/FLEETFAILED", "bad", None).await;
    let thread = bad["thread"]["name"].as_str().expect("a thread").to_owned();
    let after = sim.seed("spaces/FLEETFAILED", "after", Some(&thread)).await;
    topic.publish_json(&message_event(&bad)).await;
    topic.publish_json(&message_event(&after)).await;
    let replies = await_app_messages(&sim, 1, DEADLINE).await;
    assert_eq!(replies[0]["message"]["text"], "ok: after");
    let letters = eventually(DEADLINE, || async {
        let letters = pull_and_ack(&dead.subscription, 10).await;
        (!letters.is_empty()).then_some(letters)
    })
    .await
    .expect("the failure is dead-lettered");
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0]["message"]["attributes"]["chatworker_reason"],
        "handler_permanent"
    );
    let snapshot = worker.stop().await;
    assert_eq!(snapshot.events_dead_lettered, 1);
    assert_eq!(snapshot.events_acked, 2);
    assert_eq!(snapshot.fleet_waits, 2, "settled by the fleet's outcomes");
}
