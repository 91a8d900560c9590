//! The subscription's message stream: checked at start, opened with the
//! official streaming-pull subscriber, and rebuilt with backoff whenever it
//! ends.

use super::outage::{Health, Probe, ProbeError};
use super::{Connection, Delivery, PubSubError};
use crate::config::{PubSubSettings, SubscriptionName};
use crate::ops::health::{LinkCheck, Status};
use crate::ops::metrics::Metrics;
use backon::{BackoffBuilder, ExponentialBuilder};
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_pubsub::client::{Subscriber, SubscriptionAdmin};
use google_cloud_pubsub::subscriber::MessageStream;
use google_cloud_pubsub::subscriber::ShutdownBehavior;
use std::sync::Arc;
use std::time::Duration;

/// The subscription's message stream, rebuilt whenever it breaks.
pub(crate) struct Source {
    stream: MessageStream,
    subscriber: Subscriber,
    subscription: SubscriptionName,
    settings: PubSubSettings,
    health: Arc<Health>,
    backoff: Box<dyn Iterator<Item = Duration> + Send>,
    /// The subscription's dead-letter policy's attempts, as read at start.
    max_delivery_attempts: Option<i32>,
    _watch: tokio_util::sync::DropGuard,
    /// Keeps the gateway, if any, listening.
    _connection: Connection,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

/// Signals the stream to stop, then waits until pending acks are flushed.
#[derive(Clone, Debug)]
pub(crate) struct StopHandle(google_cloud_pubsub::subscriber::ShutdownToken);

impl StopHandle {
    /// Stops pulling and waits for every delivery handed out to be settled
    /// and for the acks to reach Pub/Sub.
    pub(crate) async fn stop(&self) {
        self.0.shutdown().await;
    }
}

/// Backoff between attempts to rebuild a broken stream.
fn reconnect_backoff() -> Box<dyn Iterator<Item = Duration> + Send> {
    Box::new(
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .without_max_times()
            .with_jitter()
            .build(),
    )
}

impl Source {
    /// Checks that the subscription exists and opens the streaming pull.
    /// A missing subscription or a refusal is an error; an unreachable
    /// Pub/Sub is not (it is logged, and the stream keeps trying).
    pub(crate) async fn open(
        connection: &Connection,
        settings: &PubSubSettings,
        subscription: &SubscriptionName,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
    ) -> Result<Self, PubSubError> {
        let mut builder = Subscriber::builder();
        let mut admin = SubscriptionAdmin::builder();
        if let Some(endpoint) = &connection.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(endpoint) = &connection.admin_endpoint {
            admin = admin.with_endpoint(endpoint);
        }
        if let Some(credentials) = &connection.credentials {
            builder = builder.with_credentials(credentials.clone());
            admin = admin.with_credentials(credentials.clone());
        }
        // Ready only once the streaming pull has connected, and not while
        // it has been unable to for longer than `pubsub.unready_after`.
        if let Some(link) = connection.link() {
            let unready_after = settings.unready_after;
            status.watch_link(LinkCheck(Box::new(move || link.readiness(unready_after))));
        }
        let subscriber = builder
            .build()
            .await
            .map_err(|e| PubSubError::Client(e.into()))?;
        let admin = admin
            .with_retry_policy(NeverRetry)
            .build()
            .await
            .map_err(|e| PubSubError::Client(e.into()))?;
        let health = Arc::new(Health::new(metrics, status));
        let probe = Probe {
            admin,
            subscription: subscription.to_string(),
        };
        let max_delivery_attempts = match probe.check().await {
            Err(ProbeError::Refused(e)) => return Err(e),
            Err(ProbeError::Unreachable(e)) => {
                health.broken(&e, false);
                None
            }
            Ok(attempts) => {
                health.status.subscription_reachable();
                attempts
            }
        };
        let watch = tokio_util::sync::CancellationToken::new();
        if !settings.probe_interval.is_zero() {
            tokio::spawn(probe.watch(health.clone(), settings.probe_interval, watch.clone()));
        }
        let stream = subscribe(&subscriber, subscription, settings);
        Ok(Self {
            stream,
            subscriber,
            subscription: subscription.clone(),
            settings: settings.clone(),
            health,
            backoff: reconnect_backoff(),
            max_delivery_attempts,
            _watch: watch.drop_guard(),
            _connection: connection.clone(),
        })
    }

    /// The delivery attempts after which the subscription dead-letters an
    /// event, as Pub/Sub said at start; `None` without a dead-letter policy,
    /// or when Pub/Sub could not be reached then.
    pub(crate) fn max_delivery_attempts(&self) -> Option<i32> {
        self.max_delivery_attempts
    }

    /// The next delivery; `None` once stopped. When the stream fails (the
    /// subscriber retries transient errors itself; what reaches us is
    /// permanent for that stream: the subscription deleted, as after an
    /// emulator restart, or access lost), it is rebuilt with backoff.
    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        loop {
            match self.stream.next().await? {
                Ok((message, handler)) => {
                    if self.health.restored(false) {
                        self.backoff = reconnect_backoff();
                    }
                    return Some(Delivery::new(message, handler));
                }
                Err(e) => {
                    self.health.broken(&e.to_string(), true);
                    let delay = self.backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::debug!(error = %e, delay = ?delay, "Pub/Sub stream failed; rebuilding it");
                    tokio::time::sleep(delay).await;
                    self.stream = subscribe(&self.subscriber, &self.subscription, &self.settings);
                }
            }
        }
    }

    /// A handle that stops the stream.
    pub(crate) fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stream.shutdown_token())
    }
}

fn subscribe(
    subscriber: &Subscriber,
    subscription: &SubscriptionName,
    settings: &PubSubSettings,
) -> MessageStream {
    subscriber
        .subscribe(subscription.as_str())
        .set_max_outstanding_messages(settings.max_outstanding_messages)
        .set_max_outstanding_bytes(settings.max_outstanding_bytes)
        .set_max_lease_extension(settings.max_lease_extension)
        .set_max_lease(settings.max_lease)
        // On shutdown, deliveries already handed out are still settled by
        // us (ack or nack) while the subscriber keeps their leases.
        .set_shutdown_behavior(ShutdownBehavior::WaitForProcessing)
        .build()
}
