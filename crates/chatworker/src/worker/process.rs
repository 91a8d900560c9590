//! One delivery end to end: the app handles the event, its answer is sent,
//! and the delivery is settled as [`settle`] decides (ack, nack, or
//! dead-letter then ack). The messages a handler sends go out through an
//! [`EventOutlet`]: the shared sender (quota, retries), with this event's
//! latency metrics.

use super::settle::{Outcome, Settlement, settle};
use crate::app::{Answer, Context, HandlerError, Outlet, OutletFuture, Service};
use crate::event::{DecodeError, Event, EventKind};
use crate::names::MessageName;
use crate::ops::metrics::Metrics;
use crate::pubsub::{Delivery, TopicPublisher};
use crate::reply::compose::{Content, Created, NewMessage};
use crate::reply::{Markup, SendError};
use crate::send::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// Everything a job needs, shared by all of them.
pub(super) struct Shared<A> {
    pub app: A,
    pub sender: Arc<Sender>,
    pub markup: Markup,
    pub dead_letter: Option<TopicPublisher>,
    pub subscription: String,
    pub metrics: Arc<Metrics>,
}

/// An event being processed. Work dropped before it settles (at the end of
/// the grace period, running or still queued) nacks its delivery by
/// dropping it; this counts that.
pub(super) struct InFlight {
    metrics: Arc<Metrics>,
    r#type: &'static str,
    settled: bool,
}

impl InFlight {
    pub(super) fn new(metrics: Arc<Metrics>, r#type: &'static str) -> Self {
        Self {
            metrics,
            r#type,
            settled: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.settled {
            self.metrics.nacked(self.r#type);
        }
    }
}

/// Handles one delivery end to end and settles it.
pub(super) async fn process<A: Service>(
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
            tracing::warn!(reason = e.reason(), "undecodable Pub/Sub message");
            tracing::debug!(error = %e, "decode error");
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
            tracing::warn!(reason, "sent to the dead-letter topic");
            delivery.ack();
            shared.metrics.dead_lettered(r#type);
            shared.metrics.acked(r#type);
        }
        Err(e) => {
            tracing::warn!(error = %e, "dead-letter publish failed; nacking");
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
    if let EventKind::Unknown { type_name } = &event.kind {
        tracing::warn!(type_name, "event type unknown to this version");
    }
    let identity = event
        .identity()
        .unwrap_or_else(|| format!("pubsub/{}", delivery.message_id));
    let outlet = Arc::new(EventOutlet {
        sender: shared.sender.clone(),
        metrics: shared.metrics.clone(),
        published: Mutex::new(delivery.publish_time),
        received: Mutex::new(Some(delivery.received)),
    });
    let ctx = Context::new(outlet, event.clone(), identity, shared.markup);
    let replies = match shared.app.handle(&ctx, &event).await {
        Ok(Answer::Replies(replies)) => replies,
        Ok(Answer::Skipped(reason)) => {
            tracing::debug!(reason, "not answered");
            return (Outcome::Skipped(reason), String::new());
        }
        Err(e @ HandlerError::Transient(_)) => {
            tracing::warn!(error = %e, "handler failed; nacked for redelivery");
            return (Outcome::Transient, e.to_string());
        }
        Err(e) => {
            tracing::warn!(error = %e, "handler failed permanently");
            return (Outcome::Permanent("handler_permanent"), e.to_string());
        }
    };
    if replies.is_empty() && ctx.position() == 0 {
        let reason = match &event.kind {
            EventKind::Unknown { .. } => "unknown_type",
            _ => "no_reply",
        };
        tracing::debug!(reason, "not answered");
        return (Outcome::Skipped(reason), String::new());
    }
    let mut permanent = None;
    for reply in replies {
        let index = ctx.position();
        match ctx.send(reply).await {
            Ok(_) => {}
            // Later replies wait: they must not overtake this one.
            Err(e @ SendError::Transient { .. }) => {
                tracing::warn!(index, error = %e, "reply failed after retries; nacked for redelivery");
                return (Outcome::Transient, e.to_string());
            }
            Err(e) => {
                tracing::warn!(index, error = %e, "reply rejected");
                permanent = Some(e.to_string());
            }
        }
    }
    match permanent {
        Some(detail) => (Outcome::Permanent("chat_permanent"), detail),
        None => {
            tracing::debug!("answered");
            (Outcome::Delivered, String::new())
        }
    }
}

/// Where one event's messages go: the shared sender, and this event's
/// latency metrics, each observed once.
struct EventOutlet {
    sender: Arc<Sender>,
    metrics: Arc<Metrics>,
    /// When Pub/Sub received the event, for the reply latency metric;
    /// taken by the first message created.
    published: Mutex<Option<SystemTime>>,
    /// When the worker received the event, for the handling latency metric;
    /// taken by the first Chat request.
    received: Mutex<Option<Instant>>,
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
            let created = self.sender.create(message).await?;
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
            self.sender.update(name, content).await
        })
    }

    fn delete<'a>(&'a self, name: &'a MessageName) -> OutletFuture<'a, ()> {
        Box::pin(async move {
            self.requesting();
            self.sender.delete(name).await
        })
    }
}

/// What `slot` holds, taken so that only the first caller gets it (each
/// latency metric is observed once per event).
fn take_once<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}
