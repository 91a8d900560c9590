//! One delivery end to end: the app handles the event, its answer is sent,
//! and the delivery is settled as [`settle`] decides (ack, nack, or
//! dead-letter then ack). The messages a handler sends go out through an
//! [`EventOutlet`]: the shared sender (quota, retries), with this event's
//! latency metrics.

use super::dispatch::Slot;
use super::lease::Lease;
use super::order::Order;
use super::outbox::{Op, OutboxOutlet};
use super::settle::{Outcome, Settlement, settle};
use crate::app::{Answer, Context, HandlerError, Outlet, OutletFuture, Service};
use crate::event::{DecodeError, Event, EventKind};
use crate::names::MessageName;
use crate::ops::health::Status;
use crate::ops::metrics::Metrics;
use crate::pubsub::{Delivery, TopicPublisher};
use crate::reply::compose::{Content, Created, NewMessage};
use crate::reply::{Markup, SendError};
use crate::send::{Sender, Turn};
use crate::store::{Admission, Committed, Entry, Store, StoreError, Txn, TxnOptions};
use futures::FutureExt;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// Everything a job needs, shared by all of them.
pub(super) struct Shared<A> {
    pub app: A,
    /// State, inbox and outbox.
    pub store: Store,
    pub sender: Arc<Sender>,
    pub markup: Markup,
    pub dead_letter: Option<TopicPublisher>,
    pub subscription: String,
    pub metrics: Arc<Metrics>,
    /// How long one delivery's writes may keep retrying.
    pub retry_budget: Duration,
    /// Readiness: a successful write proves the credentials.
    pub status: Arc<Status>,
    /// The lanes held back by an event that failed for now.
    pub order: Order,
    /// The subscription's delivery attempts before Pub/Sub dead-letters an
    /// event (`pubsub.max_delivery_attempts`), when it has such a policy.
    pub max_delivery_attempts: i32,
}

impl<A> Shared<A> {
    /// Whether `delivery` is its last attempt: nacked, the subscription's
    /// dead-letter policy would set it aside. Never, without such a policy.
    pub(super) fn is_last_attempt(&self, delivery: &Delivery) -> bool {
        delivery
            .delivery_attempt()
            .is_some_and(|n| n >= self.max_delivery_attempts)
    }
}

/// How long an event held back for its thread's order waits (without its
/// lane) before it is nacked: a pause, so that a subscription without a
/// retry policy does not hand it back at once, again and again.
const DEFERRAL_PAUSE: Duration = Duration::from_secs(1);

/// What the worker holds: events received and not yet settled, and their
/// payloads' bytes. The pull loop takes no more from the stream while either
/// is at its limit (`pubsub.max_outstanding_messages`, `…_bytes`), so that
/// the transport's back-pressure holds the rest at Pub/Sub: the emulator,
/// and a server that sends more than asked, cannot make the worker hold more.
#[derive(Debug, Default)]
pub(super) struct Held {
    messages: AtomicUsize,
    bytes: AtomicUsize,
    freed: Notify,
    /// Events held per space, for the cap on one space.
    spaces: Mutex<HashMap<String, usize>>,
    /// Events returned to Pub/Sub and waiting for their nack (not held).
    returning: AtomicUsize,
}

/// An event returned to Pub/Sub, waiting out its pause before the nack.
pub(super) struct Returning(Arc<Held>);

impl Drop for Returning {
    fn drop(&mut self) {
        self.0.returning.fetch_sub(1, Relaxed);
    }
}

impl Held {
    /// Whether `messages` events or `bytes` bytes are held, or more.
    pub(super) fn at_limit(&self, messages: usize, bytes: usize) -> bool {
        self.messages.load(Relaxed) >= messages || self.bytes.load(Relaxed) >= bytes
    }

    /// Completes when an event is let go (or at once, if one was since the
    /// last call); check [`Held::at_limit`] again after.
    pub(super) async fn freed(&self) {
        self.freed.notified().await;
    }

    /// Events held now.
    pub(super) fn messages(&self) -> usize {
        self.messages.load(Relaxed)
    }

    /// Payload bytes held now.
    pub(super) fn bytes(&self) -> usize {
        self.bytes.load(Relaxed)
    }

    /// Counts one more event waiting before its return, unless `max` do
    /// already (then it is returned at once).
    pub(super) fn returning(self: &Arc<Self>, max: usize) -> Option<Returning> {
        self.returning
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Returning(self.clone()))
    }

    /// Events of `space` held now.
    pub(super) fn in_space(&self, space: &str) -> usize {
        let spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        spaces.get(space).copied().unwrap_or(0)
    }

    fn space_changed(&self, space: &str, held: bool) {
        let mut spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        match (held, spaces.get_mut(space)) {
            (true, Some(n)) => *n += 1,
            (true, None) => {
                spaces.insert(space.to_owned(), 1);
            }
            (false, Some(n)) if *n > 1 => *n -= 1,
            (false, _) => {
                spaces.remove(space);
            }
        }
    }
}

/// An event being processed, counted as held until it is let go. Work
/// dropped before it settles (at the end of the grace period, running or
/// still queued) nacks its delivery by dropping it; this counts that.
pub(super) struct InFlight {
    metrics: Arc<Metrics>,
    held: Arc<Held>,
    r#type: &'static str,
    bytes: usize,
    space: Option<String>,
    settled: bool,
}

impl InFlight {
    pub(super) fn new(
        metrics: Arc<Metrics>,
        held: Arc<Held>,
        r#type: &'static str,
        bytes: usize,
        space: Option<String>,
    ) -> Self {
        held.messages.fetch_add(1, Relaxed);
        held.bytes.fetch_add(bytes, Relaxed);
        if let Some(space) = &space {
            held.space_changed(space, true);
        }
        Self {
            metrics,
            held,
            r#type,
            bytes,
            space,
            settled: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.settled {
            self.metrics.nacked(self.r#type);
        }
        self.held.messages.fetch_sub(1, Relaxed);
        self.held.bytes.fetch_sub(self.bytes, Relaxed);
        if let Some(space) = &self.space {
            self.held.space_changed(space, false);
        }
        // A permit kept for the pull loop if it is not waiting yet.
        self.held.freed.notify_one();
    }
}

/// Handles one delivery end to end and settles it.
pub(super) async fn process<A: Service>(
    shared: Arc<Shared<A>>,
    delivery: Delivery,
    decoded: Result<Event, DecodeError>,
    in_flight: InFlight,
    lane: String,
    slot: Slot,
) {
    let identity = identity_of(&decoded, &delivery);
    let held_back = identity
        .as_ref()
        .is_some_and(|i| shared.order.must_wait(&lane, i));
    // Deferred on its last attempt, Pub/Sub would dead-letter it unhandled:
    // it is handled now, out of its thread's order.
    let last_attempt = held_back && shared.is_last_attempt(&delivery);
    if last_attempt {
        tracing::warn!(
            "an earlier event of this thread failed for now, but this is the event's last delivery attempt: handled out of order"
        );
        shared.metrics.last_attempt_taken();
    }
    let (outcome, detail) = match decoded {
        Ok(_) if held_back && !last_attempt => {
            tracing::debug!(
                "an earlier event of this thread failed for now; nacked to come back in its turn"
            );
            slot.release();
            tokio::time::sleep(DEFERRAL_PAUSE).await;
            shared.metrics.deferred();
            (Outcome::Deferred, String::new())
        }
        Ok(event) => {
            handle_caught(
                &shared,
                delivery.publish_time,
                delivery.received,
                Arc::new(event),
                identity.clone().unwrap_or_default(),
                slot,
                delivery.delivery_attempt().is_some(),
                None,
            )
            .await
        }
        Err(e) => {
            // The error text may quote the payload: details at debug only.
            tracing::warn!(reason = e.reason(), "undecodable Pub/Sub message");
            tracing::debug!(error = %e, "decode error");
            (Outcome::Undecodable(e.reason()), e.to_string())
        }
    };
    settle_delivery(
        &shared, delivery, identity, &lane, outcome, detail, in_flight, true,
    )
    .await;
}

/// The event's identity for the inbox (and a fleet's queue): its own, else
/// the Pub/Sub message's; none for an undecodable payload.
pub(super) fn identity_of(
    decoded: &Result<Event, DecodeError>,
    delivery: &Delivery,
) -> Option<String> {
    decoded.as_ref().ok().map(|event| {
        event
            .identity()
            .unwrap_or_else(|| format!("pubsub/{}", delivery.message_id))
    })
}

/// Runs the app on `event` as [`handle`] does, a panic anywhere in the
/// handler (or in sending its answer) being this event's outcome, not the
/// end of its lane. `bounded`: whether the subscription bounds the event's
/// attempts (for the log). `lease`: in a fleet, the claim on the event's
/// lane, which its commit and every write must still hold.
#[allow(clippy::too_many_arguments)]
pub(super) async fn handle_caught<A: Service>(
    shared: &Shared<A>,
    published: Option<SystemTime>,
    received: Instant,
    event: Arc<Event>,
    identity: String,
    slot: Slot,
    bounded: bool,
    lease: Option<Arc<Lease>>,
) -> (Outcome, String) {
    match AssertUnwindSafe(handle(
        shared, published, received, event, identity, slot, lease,
    ))
    .catch_unwind()
    .await
    {
        Ok(handled) => handled,
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(
                panic = message,
                redelivered = bounded,
                "the handler panicked; {}",
                if bounded {
                    "nacked: the subscription's dead-letter policy bounds the attempts"
                } else {
                    "set aside: without a dead-letter policy nothing would bound the attempts"
                }
            );
            shared.metrics.handler_panicked();
            (
                Outcome::Panicked { bounded },
                format!("the handler panicked: {message}"),
            )
        }
    }
}

/// Settles `delivery` as `outcome` says: ack, nack, or dead-letter then
/// ack, counted. `local_order`: the lane's order is this process's to keep
/// (not a fleet's, which keeps it in the store).
#[allow(clippy::too_many_arguments)]
pub(super) async fn settle_delivery<A>(
    shared: &Shared<A>,
    delivery: Delivery,
    identity: Option<String>,
    lane: &str,
    outcome: Outcome,
    detail: String,
    mut in_flight: InFlight,
    local_order: bool,
) {
    let r#type = in_flight.r#type;
    let metrics = &shared.metrics;
    let reason = outcome.reason();
    let settlement = settle(&outcome, shared.dead_letter.is_some());
    if let Some(identity) = &identity
        && local_order
    {
        match (settlement, &outcome) {
            // A deferred event never held the lane; its holder still does.
            (_, Outcome::Deferred) => {}
            (Settlement::Nack, _) => {
                let last = shared.is_last_attempt(&delivery);
                shared.order.failed(lane, identity, last);
            }
            _ => shared.order.settled(lane, identity),
        }
    }
    if let Some(reason) = reason {
        metrics.dropped(r#type, reason);
    }
    in_flight.settled = true;
    // A failure committed with its messages is finished once settled, so
    // that its redeliveries meet it until then.
    let failed = matches!(outcome, Outcome::Permanent(_));
    match (settlement, &shared.dead_letter) {
        (Settlement::DeadLetter, Some(topic)) => {
            let reason = reason.unwrap_or("unknown");
            if dead_letter(topic, shared, delivery, r#type, reason, &detail).await
                && failed
                && let Some(identity) = &identity
            {
                finish(shared, identity).await;
            }
        }
        (Settlement::Ack, _) => {
            delivery.ack();
            metrics.acked(r#type);
            if failed && let Some(identity) = &identity {
                finish(shared, identity).await;
            }
        }
        // settle() dead-letters only when a topic is configured; were that
        // ever broken, nacking keeps the event rather than dropping it.
        (Settlement::Nack, _) | (Settlement::DeadLetter, None) => {
            delivery.nack();
            metrics.nacked(r#type);
        }
    }
}

/// Pub/Sub's limit on an attribute value, in bytes.
const MAX_ATTRIBUTE_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut_to_bytes(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The attributes a dead letter carries: the original ones, and why; the
/// error's detail only when `detail` is given.
fn dead_letter_attributes(
    original: &HashMap<String, String>,
    reason: &'static str,
    detail: Option<&str>,
    subscription: &str,
    message_id: &str,
) -> HashMap<String, String> {
    let mut attributes = original.clone();
    attributes.extend([
        ("chatworker_reason".to_owned(), reason.to_owned()),
        (
            "chatworker_subscription".to_owned(),
            cut_to_bytes(subscription, MAX_ATTRIBUTE_BYTES).to_owned(),
        ),
        ("chatworker_message_id".to_owned(), message_id.to_owned()),
    ]);
    if let Some(detail) = detail {
        let detail = cut_to_bytes(detail, MAX_ATTRIBUTE_BYTES);
        attributes.insert("chatworker_error".to_owned(), detail.to_owned());
    }
    attributes
}

/// Publishes the original payload with attributes that say why, then acks.
/// Should Pub/Sub refuse the attributes, the letter goes again without the
/// error's detail (the log has it); if publishing still fails the delivery
/// is nacked, so nothing is lost. Whether the letter went.
async fn dead_letter<A>(
    topic: &TopicPublisher,
    shared: &Shared<A>,
    delivery: Delivery,
    r#type: &'static str,
    reason: &'static str,
    detail: &str,
) -> bool {
    let attributes = |detail| {
        dead_letter_attributes(
            &delivery.attributes,
            reason,
            detail,
            &shared.subscription,
            &delivery.message_id,
        )
    };
    let mut published = topic
        .publish(delivery.data.clone(), attributes(Some(detail)))
        .await;
    if let Err(e) = &published {
        tracing::warn!(error = %e, "dead-letter publish failed; trying again without the error's detail");
        published = topic.publish(delivery.data.clone(), attributes(None)).await;
    }
    match published {
        Ok(_) => {
            tracing::warn!(reason, "sent to the dead-letter topic");
            delivery.ack();
            shared.metrics.dead_lettered(r#type);
            shared.metrics.acked(r#type);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "dead-letter publish failed; nacking");
            delivery.nack();
            shared.metrics.nacked(r#type);
            false
        }
    }
}

/// How many times a handler runs for one delivery when its commit keeps
/// meeting values changed by other events meanwhile.
const COMMIT_ATTEMPTS: u32 = 5;

/// Runs the app in the event's transaction, commits its state and replies
/// together, and sends the replies from the outbox. A delivery of an event
/// already committed sends only what is left. Returns the outcome and, for
/// failures, a detail for the dead-letter attributes.
async fn handle<A: Service>(
    shared: &Shared<A>,
    published: Option<SystemTime>,
    received: Instant,
    event: Arc<Event>,
    identity: String,
    slot: Slot,
    lease: Option<Arc<Lease>>,
) -> (Outcome, String) {
    if let EventKind::Unknown { type_name } = &event.kind {
        tracing::warn!(type_name, "event type unknown to this version");
    }
    let outlet = Arc::new(EventOutlet {
        sender: shared.sender.clone(),
        metrics: shared.metrics.clone(),
        published: Mutex::new(published),
        received: Mutex::new(Some(received)),
        slot,
        retry_deadline: received + shared.retry_budget,
        status: shared.status.clone(),
        lease,
    });
    let store = &shared.store;
    let unavailable = |e: StoreError| {
        tracing::warn!(error = %e, "the store is unavailable; nacked for redelivery");
        (Outcome::Transient, e.to_string())
    };
    match store.admit(&identity).await {
        Err(e) => return unavailable(e),
        Ok(Admission::Finished) => {
            tracing::debug!("already committed and answered: acked");
            shared.metrics.inbox_repeated();
            return (Outcome::Delivered, String::new());
        }
        Ok(Admission::Committed(entries)) => {
            tracing::debug!(
                left = entries.len(),
                "already committed: sending what is left"
            );
            shared.metrics.inbox_repeated();
            return deliver(shared, &outlet, &event, &identity, read_back(entries)).await;
        }
        Ok(Admission::New) => {}
    }
    let metrics = shared.metrics.clone();
    let options = TxnOptions {
        bad_state: shared.app.bad_state(),
    };
    let mut attempt = 0;
    let (ops, ctx) = loop {
        attempt += 1;
        let counter = metrics.clone();
        let txn = Arc::new(
            Txn::new(store.clone(), identity.clone(), options)
                .counting_undecodable(Arc::new(move || counter.state_undecodable())),
        );
        let immediate: Arc<dyn Outlet> = outlet.clone();
        let outbox = Arc::new(OutboxOutlet::new(txn.clone()));
        let ctx = Context::new(
            outbox.clone(),
            event.clone(),
            identity.clone(),
            shared.markup,
        )
        .with_txn(txn.clone(), Some(immediate));
        let mut skipped = None;
        if let Err(done) = run_app(shared, &ctx, &event).await {
            // A handler that only changed state sent nothing, yet its
            // changes are committed like any answer's.
            if matches!(done.0, Outcome::Skipped(_)) && !txn.is_empty() {
                skipped = Some(done);
            } else if !matches!(done.0, Outcome::Permanent(_)) || !txn.has_outbox() {
                return done;
            } else {
                // Failed for good, the handler changes no state; what it
                // (or its error hook) sent still goes out, once.
                return commit_outbox_only(shared, &outlet, &event, &identity, &txn, done).await;
            }
        }
        if let Some(done) = skipped {
            match commit(shared, &outlet, &txn).await {
                Err(e) => return unavailable(e),
                Ok(Committed::Lost) => return claim_lost(),
                Ok(Committed::Conflict(key)) if attempt < COMMIT_ATTEMPTS => {
                    tracing::debug!(key = %key, attempt, "a value changed since it was read: the handler runs again");
                    metrics.state_conflicted();
                    continue;
                }
                Ok(Committed::Conflict(key)) => {
                    metrics.state_conflicted();
                    return (Outcome::Transient, format!("state {key} kept changing"));
                }
                Ok(_) => {
                    finish(shared, &identity).await;
                    return done;
                }
            }
        }
        if txn.is_empty() {
            // Nothing to commit: a placeholder at most, sent already.
            return (Outcome::Delivered, String::new());
        }
        match commit(shared, &outlet, &txn).await {
            Err(e) => return unavailable(e),
            Ok(Committed::Lost) => return claim_lost(),
            Ok(Committed::Done) => break (outbox.take(), ctx),
            Ok(Committed::Duplicate) => {
                // Another delivery of this event committed meanwhile.
                tracing::debug!("committed by another delivery meanwhile");
                return match store.admit(&identity).await {
                    Err(e) => unavailable(e),
                    Ok(Admission::Committed(entries)) => {
                        deliver(shared, &outlet, &event, &identity, read_back(entries)).await
                    }
                    Ok(_) => (Outcome::Delivered, String::new()),
                };
            }
            Ok(Committed::Conflict(key)) if attempt < COMMIT_ATTEMPTS => {
                tracing::debug!(key = %key, attempt, "a value changed since it was read: the handler runs again");
                metrics.state_conflicted();
            }
            Ok(Committed::Conflict(key)) => {
                metrics.state_conflicted();
                tracing::warn!(key = %key, attempts = attempt, "values kept changing under the handler; nacked for redelivery");
                return (Outcome::Transient, format!("state {key} kept changing"));
            }
        }
    };
    drop(ctx);
    // Sent as they were asked for: only a redelivery reads them back.
    let ops = ops
        .into_iter()
        .enumerate()
        .map(|(seq, op)| (seq as i64, Ok(op)));
    deliver(shared, &outlet, &event, &identity, ops.collect()).await
}

/// A handler that failed for good: its state changes are dropped, and
/// what it (or its error hook) sent is committed and sent, once. The
/// outcome stays the failure.
async fn commit_outbox_only<A: Service>(
    shared: &Shared<A>,
    outlet: &Arc<EventOutlet>,
    event: &Arc<Event>,
    identity: &str,
    txn: &Txn,
    done: (Outcome, String),
) -> (Outcome, String) {
    let unavailable = |e: StoreError| {
        tracing::warn!(error = %e, "the store is unavailable; nacked for redelivery");
        (Outcome::Transient, e.to_string())
    };
    txn.drop_writes();
    // The failure is committed after the messages: every delivery of the
    // event meets it, until one is settled as the failure.
    let reason = match &done.0 {
        Outcome::Permanent(reason) => reason,
        _ => "handler_permanent",
    };
    let failed = Arc::new(Op::Failed {
        reason: (*reason).to_owned(),
        detail: done.1.clone(),
    });
    txn.push(failed.entry());
    match commit(shared, outlet, txn).await {
        Err(e) => unavailable(e),
        Ok(Committed::Lost) => claim_lost(),
        Ok(_) => match shared.store.admit(identity).await {
            Err(e) => unavailable(e),
            Ok(Admission::Committed(entries)) => {
                deliver(shared, outlet, event, identity, read_back(entries)).await
            }
            Ok(_) => done,
        },
    }
}

/// Commits `txn`, under the lane's claim in a fleet: a claim found lost
/// stores nothing and ends the lease.
async fn commit<A>(
    shared: &Shared<A>,
    outlet: &EventOutlet,
    txn: &Txn,
) -> Result<Committed, StoreError> {
    let mut commit = txn.commit();
    commit.claim = outlet.lease.as_ref().map(|lease| lease.claim());
    let committed = shared.store.commit(commit).await;
    if let (Ok(Committed::Lost), Some(lease)) = (&committed, &outlet.lease) {
        lease.lose();
    }
    committed
}

/// The outcome of an event whose lane's claim was lost mid-way: unsettled
/// here, its lane's new holder handles it (the fleet's driver stops).
fn claim_lost() -> (Outcome, String) {
    tracing::warn!(
        "this replica's claim on the event's lane passed to another replica while it worked: nothing committed; the new holder handles the event"
    );
    (
        Outcome::Transient,
        "the lane's claim passed to another replica".to_owned(),
    )
}

/// Stored outbox entries, read back.
fn read_back(entries: Vec<Entry>) -> Vec<(i64, Result<Arc<Op>, SendError>)> {
    entries
        .into_iter()
        .map(|entry| (entry.seq, Op::from_json(&entry.json).map(Arc::new)))
        .collect()
}

/// Runs the app: its replies go into the context's outbox. `Err` is the
/// event's outcome when there is nothing to commit (a failure, a skip).
async fn run_app<A: Service>(
    shared: &Shared<A>,
    ctx: &Context,
    event: &Event,
) -> Result<(), (Outcome, String)> {
    let replies = match shared.app.handle(ctx, event).await {
        Ok(Answer::Replies(replies)) => replies,
        // A skip after the handler wrote something is no skip: it answered.
        Ok(Answer::Skipped(reason)) if !ctx.wrote() => {
            tracing::debug!(reason, "not answered");
            return Err((Outcome::Skipped(reason), String::new()));
        }
        Ok(Answer::Skipped(_)) => Vec::new(),
        // The dead-letter detail is the handler's own cause.
        Err(e @ HandlerError::Transient(_)) => {
            tracing::warn!(error = %e, "handler failed; nacked for redelivery");
            return Err((Outcome::Transient, e.cause().to_string()));
        }
        Err(e) => {
            tracing::warn!(error = %e, "handler failed permanently");
            return Err((
                Outcome::Permanent("handler_permanent"),
                e.cause().to_string(),
            ));
        }
    };
    // A handler that only updated or deleted a message did answer.
    if replies.is_empty() && !ctx.wrote() {
        let reason = match &event.kind {
            EventKind::Unknown { .. } => "unknown_type",
            _ => "no_reply",
        };
        tracing::debug!(reason, "not answered");
        return Err((Outcome::Skipped(reason), String::new()));
    }
    let mut refused = None;
    for reply in replies {
        let index = ctx.position();
        // Into the outbox: only a reply that cannot be composed fails.
        if let Err(e) = ctx.send(reply).await {
            tracing::warn!(index, error = %e, "reply rejected");
            refused.get_or_insert(e);
        }
    }
    if let Some(refusal) = refused {
        answer_refusal(shared, ctx, event, refusal).await?;
    }
    Ok(())
}

/// A reply that will never appear: the app may tell the person. Its answer
/// goes where `ctx` sends.
async fn answer_refusal<A: Service>(
    shared: &Shared<A>,
    ctx: &Context,
    event: &Event,
    refusal: SendError,
) -> Result<(), (Outcome, String)> {
    let detail = refusal.to_string();
    match shared.app.refused(ctx, event, refusal.into()).await {
        Ok(answer) => {
            for reply in answer.replies().iter().cloned() {
                match ctx.send(reply).await {
                    Ok(_) => {}
                    // Redelivered, the event is refused again and the hook
                    // answers again; what was sent is found by its ID.
                    Err(e @ SendError::Transient { .. }) => {
                        tracing::warn!(error = %e, "the app's answer to a refused reply failed for now; nacked for redelivery");
                        return Err((Outcome::Transient, e.to_string()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the app's answer to a refused reply was refused too");
                        return Err((Outcome::Permanent("chat_permanent"), detail));
                    }
                }
            }
            tracing::info!("a reply was refused; the app's error hook answered instead");
            Ok(())
        }
        Err(e) if e.is_transient() => Err((Outcome::Transient, e.cause().to_string())),
        Err(_) => Err((Outcome::Permanent("chat_permanent"), detail)),
    }
}

/// Where the error hook's messages start: past any position the handler's
/// own messages could have taken, so that their IDs never meet.
const REFUSAL_POSITIONS: usize = 10_000;

/// Sends committed outbox entries in order, then finishes the event in the
/// inbox. A transient failure stops there (later entries must not overtake
/// it): the event is nacked, and its redelivery sends what is left.
async fn deliver<A: Service>(
    shared: &Shared<A>,
    outlet: &Arc<EventOutlet>,
    event: &Arc<Event>,
    identity: &str,
    entries: Vec<(i64, Result<Arc<Op>, SendError>)>,
) -> (Outcome, String) {
    let mut refused = None;
    for (seq, op) in entries {
        let op = match op {
            Ok(op) => op,
            Err(e) => {
                tracing::error!(seq, error = %e, "an outbox entry cannot be read: skipped");
                refused.get_or_insert((seq, e));
                continue;
            }
        };
        let sent = match &*op {
            // What comes before was sent: the event's outcome is the
            // failure; it is finished once settled as one.
            Op::Failed { reason, detail } => {
                return (
                    Outcome::Permanent(super::settle::label(reason)),
                    detail.clone(),
                );
            }
            Op::Create(message) => outlet.create(message).await.map(drop),
            Op::Update(name, content) => outlet.update(name, content).await,
            Op::Delete(name) => outlet.delete(name).await,
        };
        match sent {
            Ok(()) if op.marked_when_sent() => {
                if let Err(e) = shared.store.sent(identity, seq).await {
                    tracing::warn!(error = %e, "the store is unavailable; nacked for redelivery");
                    return (Outcome::Transient, e.to_string());
                }
            }
            Ok(()) => {}
            // Later entries wait: they must not overtake this one.
            Err(e @ SendError::Transient { .. }) => {
                tracing::warn!(seq = seq, error = %e, "reply failed after retries; nacked for redelivery");
                return (Outcome::Transient, e.to_string());
            }
            Err(e) => {
                tracing::warn!(seq = seq, error = %e, "reply rejected");
                refused.get_or_insert((seq, e));
            }
        }
    }
    let Some((seq, refusal)) = refused else {
        finish(shared, identity).await;
        tracing::debug!("answered");
        return (Outcome::Delivered, String::new());
    };
    // The hook's answer goes straight to Chat: the event is committed.
    let ctx = Context::new(
        outlet.clone(),
        event.clone(),
        identity.to_owned(),
        shared.markup,
    )
    .starting_at(REFUSAL_POSITIONS + seq as usize);
    match answer_refusal(shared, &ctx, event, refusal).await {
        Ok(()) => {
            finish(shared, identity).await;
            (Outcome::Delivered, String::new())
        }
        // Unfinished, its redelivery meets the refusal and asks the hook
        // again.
        Err(done @ (Outcome::Transient, _)) => done,
        Err(done) => {
            finish(shared, identity).await;
            done
        }
    }
}

/// Records in the inbox that everything was sent.
async fn finish<A>(shared: &Shared<A>, identity: &str) {
    if let Err(e) = shared.store.finish(identity).await {
        // Everything was sent: a redelivery would only find its own
        // messages again.
        tracing::warn!(error = %e, "the store could not record the event as answered");
    }
}

/// What a panic said, when it said it with a string (as `panic!` does).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Where one event's messages go: the shared sender, and this event's
/// latency metrics, each observed once. It is the delivery's [`Turn`]: its
/// lane slot, given up while a write waits, and its retry deadline.
struct EventOutlet {
    slot: Slot,
    retry_deadline: Instant,
    status: Arc<Status>,
    sender: Arc<Sender>,
    metrics: Arc<Metrics>,
    /// When Pub/Sub received the event, for the reply latency metric;
    /// taken by the first message created.
    published: Mutex<Option<SystemTime>>,
    /// When the worker received the event, for the handling latency metric;
    /// taken by the first Chat request.
    received: Mutex<Option<Instant>>,
    /// In a fleet: the claim on the event's lane, which each write checks.
    lease: Option<Arc<Lease>>,
}

impl EventOutlet {
    /// A Chat request is about to go out.
    fn requesting(&self) {
        if let Some(received) = take_once(&self.received) {
            self.metrics.first_request(received.elapsed());
        }
    }
}

impl Outlet for EventOutlet {
    fn create<'a>(&'a self, message: &'a NewMessage) -> OutletFuture<'a, Created> {
        Box::pin(async move {
            self.requesting();
            let created = self.sender.create(message, self).await?;
            self.status.credentials(true);
            match created {
                Created::New => {
                    self.metrics.reply_created();
                    let published = take_once(&self.published);
                    if let Some(latency) = published.and_then(|p| p.elapsed().ok()) {
                        self.metrics.first_reply(latency);
                    }
                }
                Created::AlreadyExisted => self.metrics.reply_already_existed(),
            }
            Ok(created)
        })
    }

    fn update<'a>(&'a self, name: &'a MessageName, content: &'a Content) -> OutletFuture<'a, ()> {
        Box::pin(async move {
            self.requesting();
            self.sender.update(name, content, self).await?;
            self.status.credentials(true);
            Ok(())
        })
    }

    fn delete<'a>(&'a self, name: &'a MessageName) -> OutletFuture<'a, ()> {
        Box::pin(async move {
            self.requesting();
            self.sender.delete(name, self).await?;
            self.status.credentials(true);
            Ok(())
        })
    }
}

impl Turn for EventOutlet {
    fn release(&self) {
        self.slot.release();
    }

    fn reacquire(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.slot.reacquire())
    }

    fn retry_deadline(&self) -> Instant {
        self.retry_deadline
    }

    fn may_write(&self) -> Result<(), SendError> {
        match &self.lease {
            Some(lease) if !lease.holds() => Err(SendError::transient(
                "this replica's claim on the lane ran out (it stalled): the lane's next holder sends what is left",
            )),
            _ => Ok(()),
        }
    }
}

/// What `slot` holds, taken so that only the first caller gets it (each
/// latency metric is observed once per event).
fn take_once<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_attributes_fit_pubsub_in_bytes() {
        // 1,000 characters of two bytes each: 2,000 bytes, over the limit
        // that a cut by characters would have kept.
        let detail = "é".repeat(1000);
        let attributes = dead_letter_attributes(
            &HashMap::from([("origin".to_owned(), "chat".to_owned())]),
            "chat_permanent",
            Some(&detail),
            "projects/p/subscriptions/s",
            "42",
        );
        let error = &attributes["chatworker_error"];
        assert_eq!(error.len(), 1024, "cut at 1,024 bytes");
        assert!(
            detail.starts_with(error.as_str()),
            "at a character boundary"
        );
        assert_eq!(attributes["origin"], "chat");
        assert_eq!(attributes["chatworker_reason"], "chat_permanent");
        let without = dead_letter_attributes(&HashMap::new(), "x", None, "s", "1");
        assert!(!without.contains_key("chatworker_error"));
        assert_eq!(cut_to_bytes("abc", 10), "abc");
        assert_eq!(cut_to_bytes("aé", 2), "a");
    }
}
