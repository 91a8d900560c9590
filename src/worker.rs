//! The worker: pulls deliveries from [`crate::source`], decodes them, hands them
//! to the [`Service`] (usually an [`crate::App`]) through the [`Dispatcher`] (in order per thread), sends the
//! replies through [`crate::chat`], and settles each delivery only then.
//!
//! Shutdown is one future passed in by the caller (the binary passes
//! SIGTERM/SIGINT, tests their own): on it the worker stops pulling, lets
//! in-flight events finish within the grace period, nacks the rest, flushes
//! acks and returns.

use crate::chat::{ChatClient, NewMessage, SendError, Threading};
use crate::config::Settings;
use crate::context::Context;
use crate::dispatch::Dispatcher;
use crate::event::{DecodeError, Event, EventKind, decode};
use crate::health::Status;
use crate::ids::reply_id;
use crate::metrics::{Metrics, Snapshot};
use crate::reply::{Markup, Reply, ReplyThread};
use crate::sender::Sender;
use crate::service::{HandlerError, Service};
use crate::settle::{Outcome, Settlement, settle};
use crate::source::{Delivery, Source, TopicPublisher};
use futures::FutureExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Time kept back from the grace period for flushing acks and nacks to
/// Pub/Sub after in-flight work is stopped (acks are batched every 100 ms).
const FLUSH_MARGIN: Duration = Duration::from_secs(2);

/// How often the pull loop reports that it is alive while no event comes.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// How long the start-up credentials check may take before it is reported
/// as failing; past `FIRST_TOKEN_WAIT` it runs beside the pull loop.
const CREDENTIALS_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the worker waits for its first Chat API token before it starts
/// pulling; past that it pulls anyway, and the check goes on in the
/// background.
const FIRST_TOKEN_WAIT: Duration = Duration::from_secs(5);

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// Chat API credentials could not be set up.
    #[error(transparent)]
    Chat(#[from] crate::chat::ClientError),
    /// The subscription failed for good (deleted, no permission…).
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// The operations listener could not start.
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
}

/// Everything a job needs, shared by all of them.
struct Shared<A> {
    app: A,
    sender: Arc<Sender>,
    markup: Markup,
    dead_letter: Option<TopicPublisher>,
    subscription: String,
    metrics: Arc<Metrics>,
}

/// Runs until `shutdown` completes or the subscription fails for good.
/// Returns the counters.
pub async fn run<A: Service>(
    settings: Settings,
    app: A,
    shutdown: impl Future<Output = ()>,
) -> Result<Snapshot, WorkerError> {
    let status = Arc::new(Status::new(settings.server.stall_after));
    let metrics = Arc::new(Metrics::default());
    // Stops the operations listener once the worker has stopped.
    let stopped = tokio_util::sync::CancellationToken::new();
    let _stop_listener = stopped.clone().drop_guard();
    if !settings.server.listen.is_empty() {
        let done = stopped.clone();
        crate::server::start(
            &settings.server.listen,
            status.clone(),
            metrics.clone(),
            async move { done.cancelled().await },
        )
        .await?;
    }
    let chat = ChatClient::new(&settings.chat).await?;
    // Events are pulled once the first token is there (or has been waited
    // for long enough): it costs the most (a key's first signature seeds the
    // crypto library's random generator, about 0.1 s of CPU), and obtained
    // while the first events arrive it would hold up their replies.
    let mut credentials = tokio::spawn(check_credentials(chat.clone(), status.clone()));
    let _ = tokio::time::timeout(FIRST_TOKEN_WAIT, &mut credentials).await;
    let dead_letter = match settings.pubsub.dead_letter_topic.as_str() {
        "" => None,
        topic => Some(TopicPublisher::new(&settings.pubsub, topic).await?),
    };
    let mut source = Source::open(&settings.pubsub, metrics.clone(), status.clone()).await?;
    let shared = Arc::new(Shared {
        app,
        sender: Arc::new(Sender::new(chat, &settings.chat, metrics.clone())),
        markup: settings.chat.markup_syntax,
        dead_letter,
        subscription: settings.pubsub.subscription.clone(),
        metrics,
    });
    let waits = shared.metrics.clone();
    let dispatcher =
        Dispatcher::new(settings.worker.concurrency).on_wait(move || waits.lane_waited());
    tracing::info!(
        subscription = %settings.pubsub.subscription,
        chat_endpoint = %settings.chat.endpoint,
        emulator = settings.pubsub.emulator_host.as_deref().unwrap_or("no"),
        concurrency = settings.worker.concurrency,
        "worker started"
    );

    tokio::pin!(shutdown);
    // The loop beats while it waits, so that /healthz tells a stalled loop
    // from an idle one.
    let mut beat = tokio::time::interval(HEARTBEAT);
    'pull: loop {
        // The same `next` future is polled across beats: dropping it while
        // the subscriber opens its stream would abandon that stream, and
        // the emulator then hands messages to the abandoned stream until
        // their ack deadline passes (seen: 20 s delays, and worse).
        let next = source.next();
        tokio::pin!(next);
        let next = loop {
            status.beat();
            tokio::select! {
                // Biased: once shutdown is signalled, no new delivery is taken.
                biased;
                () = &mut shutdown => break 'pull,
                _ = beat.tick() => {}
                next = &mut next => break next,
            }
        };
        let Some(mut delivery) = next else { break };
        let decoded = decode(&delivery.data);
        if shared.dead_letter.is_none() {
            // Only a dead letter would quote the payload again; without a
            // topic for them, the decoded event is the one copy kept.
            delivery.data = bytes::Bytes::new();
        }
        let r#type = event_type(&decoded);
        shared.metrics.received(r#type);
        // Made now, not when the job first runs: a job still queued at the
        // end of the grace period is dropped unpolled, and its delivery's
        // nack must be counted too.
        let in_flight = InFlight {
            metrics: shared.metrics.clone(),
            r#type,
            settled: false,
        };
        let key = lane_key(&decoded, &delivery);
        let job = process(shared.clone(), delivery, decoded, in_flight);
        dispatcher.submit(key, job.boxed());
    }
    status.stopping();
    tracing::info!(
        in_flight = dispatcher.pending(),
        "shutting down: no longer pulling"
    );
    let grace = settings.worker.shutdown_grace;
    let margin = FLUSH_MARGIN.min(grace / 4);
    let stop = source.stop_handle();
    let stopped = tokio::spawn(async move { stop.stop().await });
    let abandoned = dispatcher.drain(grace - margin).await;
    if abandoned > 0 {
        // Each was counted as nacked when its work was dropped (`InFlight`).
        tracing::warn!(
            abandoned,
            "grace period over: unfinished events nacked for redelivery"
        );
    }
    if tokio::time::timeout(margin, stopped).await.is_err() {
        tracing::warn!("Pub/Sub did not confirm the last acks in time; they may be redelivered");
    }
    let snapshot = shared.metrics.snapshot();
    tracing::info!(
        received = snapshot.received,
        acked = snapshot.acked,
        nacked = snapshot.nacked,
        dead_lettered = snapshot.dead_lettered,
        replies_created = snapshot.replies_created,
        replies_already_existed = snapshot.replies_already_existed,
        chat_retries = snapshot.chat_retries,
        quota_waits = snapshot.quota_waits,
        quota_wait_ms = snapshot.quota_wait_ms,
        lane_waits = snapshot.lane_waits,
        stream_incidents = snapshot.stream_incidents,
        dropped = ?snapshot.dropped,
        "worker stopped"
    );
    Ok(snapshot)
}

/// Reports once, at start-up, when no Chat API token can be obtained: every
/// reply would fail and every event be redelivered until that is fixed, and
/// one clear line says so better than a warning per event.
async fn check_credentials(chat: ChatClient, status: Arc<Status>) {
    let result = tokio::time::timeout(CREDENTIALS_CHECK_TIMEOUT, chat.check_credentials()).await;
    status.credentials(matches!(result, Ok(Ok(()))));
    match result {
        Ok(Ok(())) => tracing::debug!("Chat API credentials obtained"),
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            "cannot obtain Chat API credentials; events will be nacked and redelivered until this is fixed \
             (set GOOGLE_APPLICATION_CREDENTIALS, or run with a service account on GKE)"
        ),
        Err(_) => tracing::warn!(
            timeout = ?CREDENTIALS_CHECK_TIMEOUT,
            "no Chat API credentials yet; events will be nacked and redelivered until they can be obtained"
        ),
    }
}

/// Events of one thread share a lane; events outside threads share their
/// space's; undecodable payloads get a lane of their own.
fn lane_key(decoded: &Result<Event, DecodeError>, delivery: &Delivery) -> String {
    match decoded {
        Ok(event) => match &event.thread {
            Some(thread) => thread.to_string(),
            None => event.space.name.to_string(),
        },
        Err(_) => format!("pubsub/{}", delivery.message_id),
    }
}

fn event_type(decoded: &Result<Event, DecodeError>) -> &'static str {
    match decoded {
        Ok(event) => event.kind.label(),
        Err(_) => crate::metrics::UNDECODABLE,
    }
}

/// An event being processed. Work dropped before it settles (at the end of
/// the grace period, running or still queued) nacks its delivery by
/// dropping it; this counts that.
struct InFlight {
    metrics: Arc<Metrics>,
    r#type: &'static str,
    settled: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.settled {
            self.metrics.nacked(self.r#type);
        }
    }
}

/// Handles one delivery end to end and settles it.
async fn process<A: Service>(
    shared: Arc<Shared<A>>,
    delivery: Delivery,
    decoded: Result<Event, DecodeError>,
    mut in_flight: InFlight,
) {
    let r#type = in_flight.r#type;
    let (outcome, detail) = match decoded {
        Ok(event) => handle(&shared, &delivery, Arc::new(event)).await,
        Err(e) => {
            // The error text may quote the payload: details at debug only.
            tracing::warn!(message_id = %delivery.message_id, reason = e.reason(), "undecodable Pub/Sub message");
            tracing::debug!(message_id = %delivery.message_id, error = %e, "decode error");
            (Outcome::Undecodable(e.reason()), e.to_string())
        }
    };
    let metrics = &shared.metrics;
    let reason = outcome.reason();
    if let Some(reason) = reason {
        metrics.dropped(r#type, reason);
    }
    in_flight.settled = true;
    match (
        settle(&outcome, shared.dead_letter.is_some()),
        &shared.dead_letter,
    ) {
        (Settlement::DeadLetter, Some(topic)) => {
            let reason = reason.unwrap_or("unknown");
            dead_letter(topic, &shared, delivery, r#type, reason, &detail).await;
        }
        (Settlement::Ack, _) => {
            delivery.ack();
            metrics.acked(r#type);
        }
        // settle() dead-letters only when a topic is configured; were that
        // ever broken, nacking keeps the event rather than dropping it.
        (Settlement::Nack, _) | (Settlement::DeadLetter, None) => {
            delivery.nack();
            metrics.nacked(r#type);
        }
    }
}

/// Publishes the original payload with attributes that say why, then acks;
/// if publishing fails the delivery is nacked, so nothing is lost.
async fn dead_letter<A>(
    topic: &TopicPublisher,
    shared: &Shared<A>,
    delivery: Delivery,
    r#type: &'static str,
    reason: &'static str,
    detail: &str,
) {
    let mut attributes = delivery.attributes.clone();
    attributes.extend([
        ("chatworker_reason".to_owned(), reason.to_owned()),
        (
            "chatworker_error".to_owned(),
            detail.chars().take(1024).collect(),
        ),
        (
            "chatworker_subscription".to_owned(),
            shared.subscription.clone(),
        ),
        (
            "chatworker_message_id".to_owned(),
            delivery.message_id.clone(),
        ),
    ]);
    match topic.publish(delivery.data.clone(), attributes).await {
        Ok(_) => {
            tracing::warn!(message_id = %delivery.message_id, reason, "sent to the dead-letter topic");
            delivery.ack();
            shared.metrics.dead_lettered(r#type);
            shared.metrics.acked(r#type);
        }
        Err(e) => {
            tracing::warn!(message_id = %delivery.message_id, error = %e, "dead-letter publish failed; nacking");
            delivery.nack();
            shared.metrics.nacked(r#type);
        }
    }
}

/// Runs the app and sends its replies. Returns the outcome and, for failures,
/// a detail for the dead-letter attributes.
async fn handle<A: Service>(
    shared: &Shared<A>,
    delivery: &Delivery,
    event: Arc<Event>,
) -> (Outcome, String) {
    let id = &delivery.message_id;
    let kind = event.kind.label();
    if let EventKind::Unknown { type_name } = &event.kind {
        tracing::warn!(message_id = %id, type_name, "event type unknown to this version");
    }
    let identity = event.identity().unwrap_or_else(|| format!("pubsub/{id}"));
    let ctx = Context::new(
        shared.sender.clone(),
        event.clone(),
        identity,
        shared.metrics.clone(),
        shared.markup,
        delivery.publish_time,
        Some(delivery.received),
    );
    let replies = match shared.app.handle(&ctx, &event).await {
        Ok(replies) => replies,
        Err(HandlerError::Transient(e)) => {
            tracing::warn!(
                message_id = %id,
                kind,
                delivery_attempt = delivery.delivery_attempt(),
                error = %e,
                "handler failed; nacked for redelivery"
            );
            return (Outcome::Transient, e);
        }
        Err(HandlerError::Permanent(e)) => {
            tracing::warn!(message_id = %id, kind, error = %e, "handler failed permanently");
            return (Outcome::Permanent("handler_permanent"), e);
        }
    };
    if replies.is_empty() && ctx.position() == 0 {
        let reason = match (ctx.skipped(), &event.kind) {
            (Some(reason), _) => reason,
            (None, EventKind::Unknown { .. }) => "unknown_type",
            (None, _) => "no_reply",
        };
        tracing::debug!(message_id = %id, kind, reason, "not answered");
        return (Outcome::Skipped(reason), String::new());
    }
    let mut permanent = None;
    for reply in replies {
        let index = ctx.position();
        match ctx.send(reply).await {
            Ok(_) => {}
            // Later replies wait: they must not overtake this one.
            Err(e @ SendError::Transient { .. }) => {
                tracing::warn!(
                    message_id = %id,
                    kind,
                    index,
                    delivery_attempt = delivery.delivery_attempt(),
                    error = %e,
                    "reply failed after retries; nacked for redelivery"
                );
                return (Outcome::Transient, e.to_string());
            }
            Err(e) => {
                tracing::warn!(message_id = %id, kind, index, error = %e, "reply rejected");
                permanent = Some(e.to_string());
            }
        }
    }
    match permanent {
        Some(detail) => (Outcome::Permanent("chat_permanent"), detail),
        None => {
            tracing::debug!(message_id = %id, kind, "answered");
            (Outcome::Delivered, String::new())
        }
    }
}

/// The messages of one reply: one, or several in the same thread when its
/// text is longer than a message may carry (cards and buttons go with the
/// last part). Part 0 keeps the reply's ID; part k's ID derives from it and k.
pub(crate) fn new_messages(
    event: &Event,
    reply: Reply,
    identity: &str,
    index: usize,
    markup: Markup,
) -> Vec<NewMessage> {
    let text = reply.text.clone().unwrap_or_default();
    let parts = crate::text::split(&text, crate::text::MAX_MESSAGE_TEXT_BYTES);
    // A reply's own ID, or one derived from the event and the position.
    let id = |k: usize| match (&reply.id, k) {
        (Some(id), 0) => id.clone(),
        (Some(id), k) => reply_id(&format!("{id}#part{k}"), 0),
        (None, 0) => reply_id(identity, index),
        (None, k) => reply_id(&format!("{identity}#part{k}"), index),
    };
    if parts.len() <= 1 {
        let id = id(0);
        return vec![new_message(event, reply, id, markup)];
    }
    let ids: Vec<_> = (0..parts.len()).map(id).collect();
    let first = new_message(event, reply, ids[0].clone(), markup);
    // A reply that starts a thread: the parts share a key, so that the
    // first part starts the thread and the others follow it there.
    let thread = match &first.thread {
        Threading::New => Threading::Key(ids[0].as_str().to_owned()),
        other => other.clone(),
    };
    let last = parts.len() - 1;
    parts
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(k, (part, id))| NewMessage {
            id: Some(id),
            text: Some((*part).to_owned()),
            cards: if k == last {
                first.cards.clone()
            } else {
                Vec::new()
            },
            accessory_buttons: if k == last {
                first.accessory_buttons.clone()
            } else {
                Vec::new()
            },
            thread: thread.clone(),
            ..first.clone()
        })
        .collect()
}

fn new_message(
    event: &Event,
    reply: Reply,
    id: crate::names::ClientMessageId,
    markup: Markup,
) -> NewMessage {
    let space = reply.space.unwrap_or_else(|| event.space.name.clone());
    let thread = match reply.thread {
        // The event's thread lives in the event's space only.
        ReplyThread::Event if space == event.space.name => event
            .thread
            .clone()
            .map_or(Threading::New, Threading::Reply),
        ReplyThread::Key(key) => Threading::Key(key),
        ReplyThread::Event | ReplyThread::New => Threading::New,
    };
    NewMessage {
        space,
        id: Some(id),
        text: reply.text,
        cards: reply.cards,
        thread,
        accessory_buttons: reply.accessory_buttons,
        private_to: reply.private_to,
        notify: reply.notify,
        markup: reply.markup.unwrap_or(markup),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{SpaceName, ThreadName};

    fn event() -> Event {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/events/classic/message.json"
        );
        decode(&std::fs::read(path).expect("fixture")).expect("decodes")
    }

    fn threading(reply: Reply) -> (SpaceName, Threading) {
        let message = new_message(&event(), reply, reply_id("x", 0), Markup::Chat);
        (message.space, message.thread)
    }

    #[test]
    fn long_text_is_split_in_one_thread_with_distinct_stable_ids() {
        let long = format!("{}\n{}", "a".repeat(31_000), "b".repeat(5_000));
        let parts = new_messages(&event(), Reply::text(&long), "id", 0, Markup::Chat);
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0].id,
            Some(reply_id("id", 0)),
            "part 0 keeps the reply's ID"
        );
        assert_ne!(parts[0].id, parts[1].id);
        let again = new_messages(&event(), Reply::text(&long), "id", 0, Markup::Chat);
        assert_eq!(parts[1].id, again[1].id);
        assert!(matches!(&parts[1].thread, Threading::Reply(_)));
        let texts: String = parts.iter().filter_map(|p| p.text.clone()).collect();
        assert_eq!(texts, long);
        // A new thread: the parts share a key, so they stay together.
        let parts = new_messages(
            &event(),
            Reply::text(&long).in_new_thread(),
            "id",
            0,
            Markup::Chat,
        );
        assert!(
            matches!(&parts[0].thread, Threading::Key(k) if Some(k.as_str()) == parts[0].id.as_ref().map(|i| i.as_str()))
        );
        assert_eq!(parts[0].thread, parts[1].thread);
    }

    #[test]
    fn replies_go_where_the_handler_asked() {
        let own = SpaceName::parse("spaces/AAAAtest").expect("space");
        let thread = ThreadName::parse("spaces/AAAAtest/threads/TTTT1").expect("thread");
        assert_eq!(
            threading(Reply::text("a")),
            (own.clone(), Threading::Reply(thread))
        );
        assert_eq!(
            threading(Reply::text("a").in_new_thread()),
            (own.clone(), Threading::New)
        );
        assert_eq!(
            threading(Reply::text("a").in_thread_key("k")),
            (own, Threading::Key("k".into()))
        );
        // The event's thread does not exist in another space.
        let other = SpaceName::parse("spaces/OTHER").expect("space");
        assert_eq!(
            threading(Reply::text("a").in_space(other.clone())),
            (other, Threading::New)
        );
    }
}
