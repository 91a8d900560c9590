//! Counters of what the worker did, shared by every task. Logged as a summary
//! when the worker stops.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The worker's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    received: AtomicU64,
    acked: AtomicU64,
    nacked: AtomicU64,
    dead_lettered: AtomicU64,
    replies_created: AtomicU64,
    replies_already_existed: AtomicU64,
    chat_retries: AtomicU64,
    quota_waits: AtomicU64,
    quota_wait_ms: AtomicU64,
    stream_incidents: AtomicU64,
    dropped: Mutex<BTreeMap<String, u64>>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Pub/Sub messages received (every delivery counts).
    pub received: u64,
    /// Messages acked.
    pub acked: u64,
    /// Messages nacked for redelivery (including those still in flight at shutdown).
    pub nacked: u64,
    /// Messages published to the dead-letter topic.
    pub dead_lettered: u64,
    /// Replies Chat created.
    pub replies_created: u64,
    /// Replies Chat already held from an earlier delivery (409 on our ID).
    pub replies_already_existed: u64,
    /// Chat API calls retried within a delivery after a transient failure.
    pub chat_retries: u64,
    /// Writes that waited for a quota slot.
    pub quota_waits: u64,
    /// Total time writes waited for quota slots, in milliseconds.
    pub quota_wait_ms: u64,
    /// Times the connection to Pub/Sub broke (each incident once).
    pub stream_incidents: u64,
    /// Events acked without a reply, by reason.
    pub dropped: BTreeMap<String, u64>,
}

impl Metrics {
    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }
    pub(crate) fn acked(&self) {
        self.acked.fetch_add(1, Relaxed);
    }
    pub(crate) fn nacked(&self) {
        self.nacked_many(1);
    }
    pub(crate) fn nacked_many(&self, n: u64) {
        self.nacked.fetch_add(n, Relaxed);
    }
    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Relaxed);
    }
    pub(crate) fn reply_created(&self) {
        self.replies_created.fetch_add(1, Relaxed);
    }
    pub(crate) fn reply_already_existed(&self) {
        self.replies_already_existed.fetch_add(1, Relaxed);
    }
    pub(crate) fn chat_retried(&self) {
        self.chat_retries.fetch_add(1, Relaxed);
    }
    pub(crate) fn quota_waited(&self, waited: std::time::Duration) {
        self.quota_waits.fetch_add(1, Relaxed);
        let ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
        self.quota_wait_ms.fetch_add(ms, Relaxed);
    }
    pub(crate) fn stream_incident(&self) {
        self.stream_incidents.fetch_add(1, Relaxed);
    }
    pub(crate) fn dropped(&self, reason: &str) {
        let mut dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        *dropped.entry(reason.to_owned()).or_default() += 1;
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            received: self.received.load(Relaxed),
            acked: self.acked.load(Relaxed),
            nacked: self.nacked.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            replies_created: self.replies_created.load(Relaxed),
            replies_already_existed: self.replies_already_existed.load(Relaxed),
            chat_retries: self.chat_retries.load(Relaxed),
            quota_waits: self.quota_waits.load(Relaxed),
            quota_wait_ms: self.quota_wait_ms.load(Relaxed),
            stream_incidents: self.stream_incidents.load(Relaxed),
            dropped: self
                .dropped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
