//! Whether Pub/Sub can be reached: the subscriber reconnects silently, so
//! an outage is observed here (a stream that fails, a probe of the
//! subscription while no message arrives) and logged once when it starts
//! and once when it ends.

use super::PubSubError;
use crate::ops::health::Status;
use crate::ops::metrics::Metrics;
use google_cloud_pubsub::client::SubscriptionAdmin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a connectivity probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the connection to Pub/Sub works, so that a broken connection is
/// logged once when it breaks and once when it is back, however many
/// reconnect attempts happen in between.
#[derive(Debug)]
pub(super) struct Health {
    incident: Mutex<Option<Incident>>,
    metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    /// The received count at the last probe.
    seen: AtomicU64,
}

#[derive(Debug)]
struct Incident {
    since: Instant,
    failures: u64,
    /// The stream itself failed: only a delivered message proves it works
    /// again (the probe may succeed where pulling does not).
    stream: bool,
}

impl Health {
    pub(super) fn new(metrics: Arc<Metrics>, status: Arc<Status>) -> Self {
        Self {
            incident: Mutex::new(None),
            metrics,
            status,
            seen: AtomicU64::new(0),
        }
    }

    /// Records `received` and returns the previous record.
    fn last_seen(&self, received: u64) -> u64 {
        self.seen.swap(received, Relaxed)
    }

    pub(super) fn broken(&self, error: &str, stream: bool) {
        let mut incident = self.incident.lock().unwrap_or_else(|p| p.into_inner());
        match incident.as_mut() {
            Some(open) => {
                open.failures += 1;
                open.stream |= stream;
            }
            None => {
                tracing::warn!(
                    error,
                    "Pub/Sub connection broken; reconnecting with backoff"
                );
                self.metrics.stream_incident();
                self.status.outage_started();
                *incident = Some(Incident {
                    since: Instant::now(),
                    failures: 1,
                    stream,
                });
            }
        }
    }

    /// Closes the open incident, if any; true when there was one. `by_probe`:
    /// only a probe succeeded, which does not close a stream failure.
    pub(super) fn restored(&self, by_probe: bool) -> bool {
        let mut incident = self.incident.lock().unwrap_or_else(|p| p.into_inner());
        if by_probe && incident.as_ref().is_some_and(|i| i.stream) {
            return false;
        }
        let Some(closed) = incident.take() else {
            return false;
        };
        self.status.outage_ended();
        self.status.subscription_reachable();
        tracing::info!(
            down_for = ?closed.since.elapsed(),
            failed_attempts = closed.failures,
            "Pub/Sub connection restored"
        );
        true
    }
}

/// Asks Pub/Sub about the subscription: at start-up, and while no message
/// arrives, because the subscriber reconnects silently and would otherwise
/// hide an outage.
pub(super) struct Probe {
    pub admin: SubscriptionAdmin,
    pub subscription: String,
}

pub(super) enum ProbeError {
    /// The subscription does not exist or may not be read.
    Refused(PubSubError),
    /// Pub/Sub did not answer.
    Unreachable(String),
}

impl Probe {
    /// Reads the subscription: the delivery attempts after which it
    /// dead-letters an event, if it has a dead-letter policy.
    pub(super) async fn check(&self) -> Result<Option<i32>, ProbeError> {
        let call = self
            .admin
            .get_subscription()
            .set_subscription(&self.subscription)
            .send();
        match tokio::time::timeout(PROBE_TIMEOUT, call).await {
            Ok(Ok(subscription)) => Ok(subscription
                .dead_letter_policy
                .map(|policy| policy.max_delivery_attempts)
                // Pub/Sub's default when the policy leaves it at 0.
                .map(|n| if n == 0 { 5 } else { n })),
            Ok(Err(e)) => {
                use google_cloud_gax::error::rpc::Code;
                match e.status().map(|s| s.code) {
                    Some(Code::NotFound) => Err(ProbeError::Refused(PubSubError::NotFound {
                        subscription: self.subscription.clone(),
                    })),
                    Some(Code::PermissionDenied) => {
                        Err(ProbeError::Refused(PubSubError::PermissionDenied {
                            subscription: self.subscription.clone(),
                            source: e.into(),
                        }))
                    }
                    _ => Err(ProbeError::Unreachable(e.to_string())),
                }
            }
            Err(_) => Err(ProbeError::Unreachable(format!(
                "no answer within {PROBE_TIMEOUT:?}"
            ))),
        }
    }

    /// Every `interval`, unless messages arrived meanwhile, probes and
    /// records the result in `health`.
    pub(super) async fn watch(
        self,
        health: Arc<Health>,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let received = health.metrics.snapshot().events_received;
            if received != health.last_seen(received) {
                continue;
            }
            match self.check().await {
                Ok(_) => {
                    health.restored(true);
                }
                Err(ProbeError::Refused(e)) => health.broken(&e.to_string(), false),
                Err(ProbeError::Unreachable(e)) => health.broken(&e, false),
            }
        }
    }
}
