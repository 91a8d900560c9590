//! A handler that uses its context, run in-process with the library API:
//! a placeholder sent at once and updated when the work is done, and the
//! event redelivered after its update failed: the handler does not run
//! again, and nothing is sent twice.

use chatworker::{App, Context, HandlerError, Message, Reply};
use chatworker_testkit::{Sim, Topic, await_app_messages, eventually, message_event};
use std::time::Duration;
use support::settings;

#[path = "support.rs"]
mod support;

/// Answers "Working…" at once, works for the state's duration, then
/// replaces the answer.
async fn slow(ctx: Context<Duration>, message: Message) -> Result<(), HandlerError> {
    let placeholder = ctx.placeholder("Working…").await?;
    tokio::time::sleep(*ctx.state()).await;
    ctx.update(
        &placeholder.name,
        Reply::text(format!("Done: {}", message.text)),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_is_updated_and_a_redelivery_sends_nothing_twice() {
    let sim = Sim::start().await;
    let topic = Topic::fresh("context").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = App::with_state(Duration::from_millis(1500)).message(slow);
    let worker = tokio::spawn(chatworker::worker::run(
        settings(&sim, &topic, &[]),
        app,
        async move {
            let _ = stopped.await;
        },
    ));
    let deadline = Duration::from_secs(60);

    // One event: the placeholder, then the same message updated.
    let first = sim.seed("spaces/CTX", "first", None).await;
    topic.publish_json(&message_event(&first)).await;
    let records = await_app_messages(&sim, 1, deadline).await;
    assert_eq!(records[0]["message"]["text"], "Working…");
    let updated = eventually(deadline, || async {
        let records = sim.app_messages().await;
        (records[0]["message"]["text"] == "Done: first").then_some(records)
    })
    .await
    .expect("the placeholder is updated");
    assert_eq!(updated[0]["updates"], 1);

    // The update fails once: it is the outbox's, sent after the handler's
    // commit, so the event is nacked and its redelivery does not run the
    // handler again (the inbox holds it): only the update left is sent.
    let second = sim.seed("spaces/CTX", "second", None).await;
    topic.publish_json(&message_event(&second)).await;
    await_app_messages(&sim, 2, deadline).await;
    sim.fail_next(1, 503).await;
    let done = eventually(deadline, || async {
        let records = sim.app_messages().await;
        (records.len() == 2 && records[1]["message"]["text"] == "Done: second").then_some(records)
    })
    .await
    .expect("the second placeholder is updated after the redelivery");
    assert_eq!(done.len(), 2, "nothing was sent twice");
    let statuses: Vec<u64> = sim
        .calls()
        .await
        .iter()
        .map(|c| c["status"].as_u64().unwrap_or(0))
        .collect();
    // first: create, update; second: create, update refused, update.
    assert_eq!(statuses, [200, 200, 200, 503, 200]);

    let _ = stop.send(());
    let snapshot = worker.await.expect("joins").expect("runs");
    assert_eq!(snapshot.events_nacked, 1);
    assert_eq!(snapshot.events_acked, 2);
    assert_eq!(snapshot.replies_created, 2);
    assert_eq!(snapshot.replies_already_existed, 0);
    assert_eq!(snapshot.inbox_repeats, 1, "the redelivery found its commit");
}

/// A handler that only changes state (and sends nothing) still commits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_set_without_a_reply_is_committed() {
    use chatworker::Scope;
    let sim = Sim::start().await;
    let topic = Topic::fresh("stateonly").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = App::new().message(|ctx: Context, message: Message| async move {
        let mut seen = ctx.load::<u64>(Scope::Space, "seen").await?;
        let n = seen.get().copied().unwrap_or(0) + 1;
        seen.set(n)?;
        match message.text.as_str() {
            "show" => Ok::<_, HandlerError>(Some(Reply::text(format!("seen {n}")))),
            _ => Ok(None),
        }
    });
    let worker = tokio::spawn(chatworker::worker::run(
        settings(&sim, &topic, &[]),
        app,
        async move {
            let _ = stopped.await;
        },
    ));
    let quiet = sim.seed("spaces/STATEONLY", "quiet", None).await;
    topic.publish_json(&message_event(&quiet)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let show = sim.seed("spaces/STATEONLY", "show", None).await;
    topic.publish_json(&message_event(&show)).await;
    let records = await_app_messages(&sim, 1, Duration::from_secs(60)).await;
    assert_eq!(
        records[0]["message"]["text"], "seen 2",
        "the first event's count was kept"
    );
    let _ = stop.send(());
    worker.await.expect("joins").expect("runs");
}

/// A handler that changed state and then failed leaves no partial state,
/// even when the app's error hook answers for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handler_s_state_changes_are_dropped_when_the_hook_answers() {
    use chatworker::Scope;
    let sim = Sim::start().await;
    let topic = Topic::fresh("hookstate").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = App::new()
        .message(|ctx: Context, message: Message| async move {
            let mut seen = ctx.load::<u64>(Scope::Space, "seen").await?;
            let n = seen.get().copied().unwrap_or(0) + 1;
            seen.set(n)?;
            match message.text.as_str() {
                "fail" => Err(HandlerError::permanent("no")),
                _ => Ok::<_, HandlerError>(Reply::text(format!("seen {n}"))),
            }
        })
        .on_error(|_ctx: Context, _error: HandlerError| async move { "sorry" });
    let worker = tokio::spawn(chatworker::worker::run(
        settings(&sim, &topic, &[]),
        app,
        async move {
            let _ = stopped.await;
        },
    ));
    let failing = sim.seed("spaces/HOOKSTATE", "fail", None).await;
    topic.publish_json(&message_event(&failing)).await;
    await_app_messages(&sim, 1, Duration::from_secs(60)).await;
    let show = sim.seed("spaces/HOOKSTATE", "show", None).await;
    topic.publish_json(&message_event(&show)).await;
    let records = await_app_messages(&sim, 2, Duration::from_secs(60)).await;
    let texts: Vec<_> = records
        .iter()
        .map(|r| r["message"]["text"].clone())
        .collect();
    assert_eq!(
        texts,
        ["sorry", "seen 1"],
        "the failed handler's count was dropped"
    );
    let _ = stop.send(());
    worker.await.expect("joins").expect("runs");
}
