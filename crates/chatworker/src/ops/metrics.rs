//! What the worker did, shared by every task: Prometheus metrics (served at
//! `/metrics` by [`super::server`], encoded by `prometheus-client`). Each
//! figure is booked once, in its metric; the [`Snapshot`] the worker logs
//! when it stops (and returns) reads the same metrics.
//!
//! Labels are bounded: event types are [`crate::event::EventKind::label`]s,
//! reasons are fixed strings from the code (`&'static str`, never user
//! input), Chat API methods are three, and statuses are HTTP codes or one of
//! a few words.

use crate::event::EventKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

/// The event type of an event that could not be decoded.
pub const UNDECODABLE: &str = "UNDECODABLE";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct DropLabels {
    r#type: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    status: String,
}

/// The worker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    received: Family<TypeLabels, Counter>,
    acked: Family<TypeLabels, Counter>,
    nacked: Family<TypeLabels, Counter>,
    dropped: Family<DropLabels, Counter>,
    dead_lettered: Family<TypeLabels, Counter>,
    chat_calls: Family<CallLabels, Counter>,
    replies_created: Counter,
    replies_already_existed: Counter,
    reply_latency: Histogram,
    handling_latency: Histogram,
    chat_retries: Counter,
    quota_waits: Counter,
    lane_waits: Counter,
    handler_panics: Counter,
    state_conflicts: Counter,
    inbox_repeats: Counter,
    state_undecodable: Counter,
    deferred: Counter,
    returned: Counter,
    last_attempts_taken: Counter,
    quota_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    in_flight: Gauge,
    stream_reconnects: Counter,
    fleet_claims: Counter,
    fleet_held_elsewhere: Counter,
    fleet_claims_lost: Counter,
    fleet_lanes: Gauge,
    fleet_waits: Counter,
    fleet_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    shared_quota_waits: Counter,
    shared_quota_late: Counter,
    shared_quota_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// The drop label sets used so far (the registry cannot be read back),
    /// for the snapshot to sum.
    drops_seen: Mutex<BTreeSet<DropLabels>>,
}

/// The worker's metrics at one moment, named as on `/metrics` (without the
/// `chatworker_` prefix and the `_total` suffix), summed over their labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// Pub/Sub messages received (every delivery counts).
    pub events_received: u64,
    /// Messages acked.
    pub events_acked: u64,
    /// Messages nacked for redelivery (including those still in flight at shutdown).
    pub events_nacked: u64,
    /// Messages published to the dead-letter topic.
    pub events_dead_lettered: u64,
    /// Replies Chat created.
    pub replies_created: u64,
    /// Replies Chat already held from an earlier delivery (409 on our ID).
    pub replies_already_existed: u64,
    /// Chat API calls retried within a delivery after a transient failure.
    pub chat_retries: u64,
    /// Writes that waited for a quota slot.
    pub quota_waits: u64,
    /// Total time writes waited for quota slots, in seconds.
    pub quota_wait_seconds: f64,
    /// Events that were ready to run but waited for a free lane
    /// (`worker.concurrency` reached).
    pub lane_waits: u64,
    /// Events whose handler panicked.
    pub handler_panics: u64,
    /// Commits refused because a value changed since it was read (the
    /// handler then ran again).
    pub state_conflicts: u64,
    /// Deliveries of events the inbox already held as committed.
    pub inbox_repeats: u64,
    /// Stored values that did not decode as the type asked for.
    pub state_undecodable: u64,
    /// Events nacked to come back in their turn (an earlier event of their
    /// thread failed for now).
    pub events_deferred: u64,
    /// Events returned to Pub/Sub, after a pause: their space held all it
    /// may.
    pub events_returned: u64,
    /// Events handled at once on their last delivery attempt, although
    /// their space held all it may or an earlier event of their thread had
    /// failed for now: returned or deferred, Pub/Sub would have
    /// dead-lettered them unhandled.
    pub last_attempts_taken: u64,
    /// Times the connection to Pub/Sub broke (each incident once).
    pub stream_reconnects: u64,
    /// Fleet: lanes (threads) this replica claimed in the shared store.
    pub fleet_claims: u64,
    /// Fleet: events whose thread another replica held when they arrived
    /// (they waited for its outcome).
    pub fleet_held_elsewhere: u64,
    /// Fleet: claims this replica found lost while it still worked on the
    /// lane (it stalled past the claim's time): it stopped writing, and
    /// the lane's new holder went on.
    pub fleet_claims_lost: u64,
    /// Fleet: deliveries settled by an outcome recorded in the store.
    pub fleet_waits: u64,
    /// Fleet: writes that waited for a slot of the fleet's shared quota.
    pub shared_quota_waits: u64,
    /// Fleet: writes that came later than 600 ms after their slot of the
    /// shared quota and took a new one (so that late writes never bunch up
    /// with the ones on time).
    pub shared_quota_late: u64,
    /// Fleet: total time writes waited for the shared quota, in seconds.
    pub shared_quota_wait_seconds: f64,
    /// Events acked without a reply, by reason.
    pub events_dropped: BTreeMap<String, u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("chatworker");
        let received = Family::default();
        let acked = Family::default();
        let nacked = Family::default();
        let dropped = Family::default();
        let dead_lettered = Family::default();
        let chat_calls = Family::default();
        let replies_created = Counter::default();
        let replies_already_existed = Counter::default();
        // 50 ms to about 100 s: an answer within a second or two is the
        // goal; quota waits and retries make the tail.
        let reply_latency =
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]);
        // Fine buckets under 10 ms: the worker's own share of the latency
        // should stay in the low milliseconds.
        let handling_latency = Histogram::new([
            0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0,
        ]);
        let chat_retries = Counter::default();
        let quota_waits = Counter::default();
        let lane_waits = Counter::default();
        let handler_panics = Counter::default();
        let state_conflicts = Counter::default();
        let inbox_repeats = Counter::default();
        let state_undecodable = Counter::default();
        let deferred = Counter::default();
        let returned = Counter::default();
        let last_attempts_taken = Counter::default();
        let quota_wait_seconds = Counter::default();
        let in_flight = Gauge::default();
        let fleet_claims = Counter::default();
        let fleet_held_elsewhere = Counter::default();
        let fleet_claims_lost = Counter::default();
        let fleet_lanes = Gauge::default();
        let fleet_waits = Counter::default();
        let fleet_wait_seconds = Counter::default();
        let shared_quota_waits = Counter::default();
        let shared_quota_late = Counter::default();
        let shared_quota_wait_seconds = Counter::default();
        let stream_reconnects = Counter::default();
        let r = &mut registry;
        r.register(
            "events_received",
            "Pub/Sub messages received, by event type",
            received.clone(),
        );
        r.register(
            "events_acked",
            "Pub/Sub messages acked, by event type",
            acked.clone(),
        );
        r.register(
            "events_nacked",
            "Pub/Sub messages nacked for redelivery, by event type",
            nacked.clone(),
        );
        r.register(
            "events_dropped",
            "Events acked without an answer, by event type and reason",
            dropped.clone(),
        );
        r.register(
            "events_dead_lettered",
            "Events published to the dead-letter topic, by event type",
            dead_lettered.clone(),
        );
        r.register(
            "chat_api_calls",
            "Chat API calls, by method (create, update, delete) and HTTP status (or timeout, network)",
            chat_calls.clone(),
        );
        r.register(
            "replies_created",
            "Messages Chat created",
            replies_created.clone(),
        );
        r.register(
            "replies_already_existed",
            "Messages Chat already held from an earlier delivery (409 on our ID)",
            replies_already_existed.clone(),
        );
        r.register_with_unit(
            "reply_latency",
            "Time from the event's publication to its first message created",
            prometheus_client::registry::Unit::Seconds,
            reply_latency.clone(),
        );
        r.register(
            "chat_retries",
            "Chat API calls retried after a transient failure",
            chat_retries.clone(),
        );
        r.register(
            "quota_waits",
            "Writes that waited for a quota slot",
            quota_waits.clone(),
        );
        r.register(
            "fleet_claims",
            "Fleet: threads this replica claimed in the shared store",
            fleet_claims.clone(),
        );
        r.register(
            "fleet_held_elsewhere",
            "Fleet: events whose thread another replica held when they arrived",
            fleet_held_elsewhere.clone(),
        );
        r.register(
            "fleet_claims_lost",
            "Fleet: claims found lost mid-work (the replica stalled past them and stopped writing)",
            fleet_claims_lost.clone(),
        );
        r.register(
            "fleet_lanes",
            "Fleet: threads this replica holds now",
            fleet_lanes.clone(),
        );
        r.register(
            "fleet_waits",
            "Fleet: deliveries settled by an outcome recorded in the store",
            fleet_waits.clone(),
        );
        r.register_with_unit(
            "fleet_wait",
            "Fleet: time deliveries waited for their event's outcome",
            prometheus_client::registry::Unit::Seconds,
            fleet_wait_seconds.clone(),
        );
        r.register(
            "shared_quota_waits",
            "Fleet: writes that waited for a slot of the shared write quota",
            shared_quota_waits.clone(),
        );
        r.register(
            "shared_quota_late",
            "Fleet: writes that started too long after their shared-quota slot and took a new one",
            shared_quota_late.clone(),
        );
        r.register_with_unit(
            "shared_quota_wait",
            "Fleet: time writes waited for the shared write quota",
            prometheus_client::registry::Unit::Seconds,
            shared_quota_wait_seconds.clone(),
        );
        r.register(
            "lane_waits",
            "Events ready to run that waited for a free lane: worker.concurrency was reached",
            lane_waits.clone(),
        );
        r.register(
            "state_conflicts",
            "Commits refused because a state value changed since the handler read it; the handler ran again",
            state_conflicts.clone(),
        );
        r.register(
            "inbox_repeats",
            "Deliveries of events already committed in the store's inbox: the handler did not run again",
            inbox_repeats.clone(),
        );
        r.register(
            "state_undecodable",
            "Stored state values that did not decode as the type the handler asked for",
            state_undecodable.clone(),
        );
        r.register(
            "handler_panics",
            "Events whose handler panicked (each is then nacked, or set aside without a dead-letter policy)",
            handler_panics.clone(),
        );
        r.register(
            "events_deferred",
            "Events nacked to come back in their turn: an earlier event of their thread failed for now",
            deferred.clone(),
        );
        r.register(
            "events_returned",
            "Events nacked after a pause because their space held all it may (its write quota could not answer them within half the lease)",
            returned.clone(),
        );
        r.register(
            "last_attempts_taken",
            "Events handled at once on their last delivery attempt although their space was full or their thread held back: nacked again, Pub/Sub would dead-letter them unhandled",
            last_attempts_taken.clone(),
        );
        r.register_with_unit(
            "handling_latency",
            "Time from the worker receiving an event to the start of its first Chat API request (queueing and the handler included; quota waits not)",
            prometheus_client::registry::Unit::Seconds,
            handling_latency.clone(),
        );
        r.register_with_unit(
            "quota_wait",
            "Time writes waited for quota slots",
            prometheus_client::registry::Unit::Seconds,
            quota_wait_seconds.clone(),
        );
        r.register(
            "events_in_flight",
            "Events received and not yet settled",
            in_flight.clone(),
        );
        r.register(
            "stream_reconnects",
            "Times the connection to Pub/Sub broke and was rebuilt (each incident once)",
            stream_reconnects.clone(),
        );
        Self {
            registry,
            received,
            acked,
            nacked,
            dropped,
            dead_lettered,
            chat_calls,
            replies_created,
            replies_already_existed,
            reply_latency,
            handling_latency,
            chat_retries,
            quota_waits,
            lane_waits,
            handler_panics,
            state_conflicts,
            inbox_repeats,
            state_undecodable,
            deferred,
            returned,
            last_attempts_taken,
            quota_wait_seconds,
            in_flight,
            stream_reconnects,
            fleet_claims,
            fleet_held_elsewhere,
            fleet_claims_lost,
            fleet_lanes,
            fleet_waits,
            fleet_wait_seconds,
            shared_quota_waits,
            shared_quota_late,
            shared_quota_wait_seconds,
            drops_seen: Mutex::default(),
        }
    }
}

fn kind(r#type: &'static str) -> TypeLabels {
    TypeLabels { r#type }
}

impl Metrics {
    pub(crate) fn received(&self, r#type: &'static str) {
        self.received.get_or_create(&kind(r#type)).inc();
        self.in_flight.inc();
    }
    pub(crate) fn acked(&self, r#type: &'static str) {
        self.acked.get_or_create(&kind(r#type)).inc();
        self.in_flight.dec();
    }
    pub(crate) fn nacked(&self, r#type: &'static str) {
        self.nacked.get_or_create(&kind(r#type)).inc();
        self.in_flight.dec();
    }
    pub(crate) fn dead_lettered(&self, r#type: &'static str) {
        self.dead_lettered.get_or_create(&kind(r#type)).inc();
    }
    pub(crate) fn reply_created(&self) {
        self.replies_created.inc();
    }
    /// The first message an event caused was created `latency` after the
    /// event was published.
    pub(crate) fn first_reply(&self, latency: Duration) {
        self.reply_latency.observe(latency.as_secs_f64());
    }
    /// The first Chat request of an event is about to be sent, `latency`
    /// after the worker received the event.
    pub(crate) fn first_request(&self, latency: Duration) {
        self.handling_latency.observe(latency.as_secs_f64());
    }
    pub(crate) fn reply_already_existed(&self) {
        self.replies_already_existed.inc();
    }
    /// One Chat API call and how it ended: an HTTP status, or a word.
    pub(crate) fn chat_call(&self, method: &'static str, status: &str) {
        let labels = CallLabels {
            method,
            status: status.to_owned(),
        };
        self.chat_calls.get_or_create(&labels).inc();
    }
    pub(crate) fn chat_retried(&self) {
        self.chat_retries.inc();
    }
    pub(crate) fn quota_waited(&self, waited: Duration) {
        self.quota_waits.inc();
        self.quota_wait_seconds.inc_by(waited.as_secs_f64());
    }
    pub(crate) fn fleet_claimed(&self) {
        self.fleet_claims.inc();
    }
    pub(crate) fn fleet_held_elsewhere(&self) {
        self.fleet_held_elsewhere.inc();
    }
    pub(crate) fn fleet_claim_lost(&self) {
        self.fleet_claims_lost.inc();
    }
    pub(crate) fn fleet_lanes_held(&self, lanes: usize) {
        self.fleet_lanes
            .set(i64::try_from(lanes).unwrap_or(i64::MAX));
    }
    pub(crate) fn fleet_waited(&self, waited: Duration) {
        self.fleet_waits.inc();
        self.fleet_wait_seconds.inc_by(waited.as_secs_f64());
    }
    pub(crate) fn shared_quota_late(&self) {
        self.shared_quota_late.inc();
    }
    pub(crate) fn shared_quota_waited(&self, waited: Duration) {
        self.shared_quota_waits.inc();
        self.shared_quota_wait_seconds.inc_by(waited.as_secs_f64());
    }
    pub(crate) fn lane_waited(&self) {
        self.lane_waits.inc();
    }
    pub(crate) fn handler_panicked(&self) {
        self.handler_panics.inc();
    }
    pub(crate) fn state_conflicted(&self) {
        self.state_conflicts.inc();
    }
    pub(crate) fn inbox_repeated(&self) {
        self.inbox_repeats.inc();
    }
    pub(crate) fn state_undecodable(&self) {
        self.state_undecodable.inc();
    }
    pub(crate) fn deferred(&self) {
        self.deferred.inc();
    }
    pub(crate) fn returned(&self) {
        self.returned.inc();
    }
    pub(crate) fn last_attempt_taken(&self) {
        self.last_attempts_taken.inc();
    }
    pub(crate) fn stream_incident(&self) {
        self.stream_reconnects.inc();
    }
    pub(crate) fn dropped(&self, r#type: &'static str, reason: &'static str) {
        let labels = DropLabels { r#type, reason };
        self.dropped.get_or_create(&labels).inc();
        self.drops_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(labels);
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The metrics now, summed over their labels.
    pub fn snapshot(&self) -> Snapshot {
        let by_type = |family: &Family<TypeLabels, Counter>| -> u64 {
            TYPES
                .iter()
                .filter_map(|t| family.get(&kind(t)).map(|c| c.get()))
                .sum()
        };
        let mut events_dropped = BTreeMap::new();
        let seen = self.drops_seen.lock().unwrap_or_else(|p| p.into_inner());
        for labels in seen.iter() {
            let n = self.dropped.get(labels).map_or(0, |c| c.get());
            *events_dropped.entry(labels.reason.to_owned()).or_default() += n;
        }
        Snapshot {
            events_received: by_type(&self.received),
            events_acked: by_type(&self.acked),
            events_nacked: by_type(&self.nacked),
            events_dead_lettered: by_type(&self.dead_lettered),
            replies_created: self.replies_created.get(),
            replies_already_existed: self.replies_already_existed.get(),
            chat_retries: self.chat_retries.get(),
            quota_waits: self.quota_waits.get(),
            quota_wait_seconds: self.quota_wait_seconds.get(),
            lane_waits: self.lane_waits.get(),
            handler_panics: self.handler_panics.get(),
            state_conflicts: self.state_conflicts.get(),
            inbox_repeats: self.inbox_repeats.get(),
            state_undecodable: self.state_undecodable.get(),
            events_deferred: self.deferred.get(),
            events_returned: self.returned.get(),
            last_attempts_taken: self.last_attempts_taken.get(),
            stream_reconnects: self.stream_reconnects.get(),
            fleet_claims: self.fleet_claims.get(),
            fleet_held_elsewhere: self.fleet_held_elsewhere.get(),
            fleet_claims_lost: self.fleet_claims_lost.get(),
            fleet_waits: self.fleet_waits.get(),
            shared_quota_waits: self.shared_quota_waits.get(),
            shared_quota_late: self.shared_quota_late.get(),
            shared_quota_wait_seconds: self.shared_quota_wait_seconds.get(),
            events_dropped,
        }
    }
}

/// Every event type label: the event kinds, and undecodable payloads.
const TYPES: [&str; EventKind::LABELS.len() + 1] = {
    let mut all = [UNDECODABLE; EventKind::LABELS.len() + 1];
    let mut i = 0;
    while i < EventKind::LABELS.len() {
        all[i] = EventKind::LABELS[i];
        i += 1;
    }
    all
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_their_labels() {
        let m = Metrics::default();
        m.received("MESSAGE");
        m.received(UNDECODABLE);
        m.acked("MESSAGE");
        m.dropped(UNDECODABLE, "not_json");
        m.acked(UNDECODABLE);
        m.chat_call("create", "200");
        m.chat_call("create", "429");
        m.first_reply(Duration::from_millis(300));
        m.first_request(Duration::from_micros(1500));
        m.quota_waited(Duration::from_millis(1500));
        let text = m.encode();
        for line in [
            r#"chatworker_events_received_total{type="MESSAGE"} 1"#,
            r#"chatworker_events_dropped_total{type="UNDECODABLE",reason="not_json"} 1"#,
            r#"chatworker_chat_api_calls_total{method="create",status="429"} 1"#,
            r#"chatworker_reply_latency_seconds_bucket{le="0.5"} 1"#,
            r#"chatworker_handling_latency_seconds_bucket{le="0.002"} 1"#,
            "chatworker_quota_wait_seconds_total 1.5",
            "chatworker_events_in_flight 0",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        let s = m.snapshot();
        assert_eq!((s.events_received, s.events_acked), (2, 2));
        assert_eq!(s.quota_wait_seconds, 1.5);
        assert_eq!(s.events_dropped.get("not_json"), Some(&1));
    }
}
