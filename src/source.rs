//! Pub/Sub in: the only module that knows the Pub/Sub client types. It opens
//! the official streaming-pull subscriber (leases, flow control, shutdown) and
//! turns each message into a [`Delivery`] that is acked or nacked exactly once;
//! a delivery dropped without either is nacked.

use crate::config::PubSubSettings;
use crate::metrics::Metrics;
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use google_cloud_auth::credentials::{Credentials, anonymous};
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::MessageStream;
use google_cloud_pubsub::subscriber::ShutdownBehavior;
use google_cloud_pubsub::subscriber::handler::Handler;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long a connectivity probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One Pub/Sub message with its ack handle.
#[derive(Debug)]
pub struct Delivery {
    /// Pub/Sub's message ID (the same on every redelivery).
    pub message_id: String,
    /// When it was published.
    pub publish_time: Option<SystemTime>,
    /// The payload.
    pub data: Bytes,
    /// The message's attributes.
    pub attributes: HashMap<String, String>,
    /// When the worker received it, for the handling latency metric.
    pub received: Instant,
    handler: Handler,
}

impl Delivery {
    /// Done: Pub/Sub will not redeliver it.
    pub fn ack(self) {
        self.handler.ack();
    }

    /// Not done: Pub/Sub redelivers it.
    pub fn nack(self) {
        self.handler.nack();
    }

    /// How many times Pub/Sub has delivered it, when the subscription has a
    /// dead-letter policy (otherwise `None`).
    pub fn delivery_attempt(&self) -> Option<i32> {
        self.handler.delivery_attempt()
    }
}

/// The subscription's message stream, rebuilt whenever it breaks.
pub struct Source {
    stream: MessageStream,
    subscriber: Subscriber,
    settings: PubSubSettings,
    health: Arc<Health>,
    backoff: Box<dyn Iterator<Item = Duration> + Send>,
    _watch: tokio_util::sync::DropGuard,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("subscription", &self.settings.subscription)
            .finish_non_exhaustive()
    }
}

/// The subscription cannot be used: it does not exist, or we may not pull.
#[derive(Debug, thiserror::Error)]
#[error("Pub/Sub subscription failed: {0}")]
pub struct SourceError(pub String);

/// Signals the stream to stop, then waits until pending acks are flushed.
#[derive(Clone, Debug)]
pub struct StopHandle(google_cloud_pubsub::subscriber::ShutdownToken);

impl StopHandle {
    /// Stops pulling and waits for every delivery handed out to be settled
    /// and for the acks to reach Pub/Sub.
    pub async fn stop(&self) {
        self.0.shutdown().await;
    }
}

/// Credentials and endpoint: the emulator's when `PUBSUB_EMULATOR_HOST` is
/// set (the Google crates ignore that variable), else Google's with ADC.
pub(crate) fn connection(settings: &PubSubSettings) -> Option<(String, Credentials)> {
    settings
        .emulator_host
        .as_ref()
        .map(|host| (format!("http://{host}"), anonymous::Builder::new().build()))
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
    pub async fn open(
        settings: &PubSubSettings,
        metrics: Arc<Metrics>,
        status: Arc<crate::health::Status>,
    ) -> Result<Self, SourceError> {
        let mut builder = Subscriber::builder();
        let mut admin = SubscriptionAdmin::builder();
        if let Some((endpoint, credentials)) = connection(settings) {
            builder = builder
                .with_endpoint(&endpoint)
                .with_credentials(credentials.clone());
            admin = admin.with_endpoint(endpoint).with_credentials(credentials);
        }
        let subscriber = builder
            .build()
            .await
            .map_err(|e| SourceError(e.to_string()))?;
        let admin = admin
            .with_retry_policy(NeverRetry)
            .build()
            .await
            .map_err(|e| SourceError(e.to_string()))?;
        let health = Arc::new(Health::new(metrics, status));
        let probe = Probe {
            admin,
            subscription: settings.subscription.clone(),
        };
        match probe.check().await {
            Err(ProbeError::Refused(e)) => return Err(SourceError(e)),
            Err(ProbeError::Unreachable(e)) => health.broken(&e, false),
            Ok(()) => health.status.subscription_reachable(),
        }
        let watch = tokio_util::sync::CancellationToken::new();
        if !settings.probe_interval.is_zero() {
            tokio::spawn(probe.watch(health.clone(), settings.probe_interval, watch.clone()));
        }
        let stream = subscribe(&subscriber, settings);
        Ok(Self {
            stream,
            subscriber,
            settings: settings.clone(),
            health,
            backoff: reconnect_backoff(),
            _watch: watch.drop_guard(),
        })
    }

    /// The next delivery; `None` once stopped. When the stream fails (the
    /// subscriber retries transient errors itself; what reaches us is
    /// permanent for that stream: the subscription deleted, as after an
    /// emulator restart, or access lost), it is rebuilt with backoff.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            match self.stream.next().await? {
                Ok((message, handler)) => {
                    if self.health.restored(false) {
                        self.backoff = reconnect_backoff();
                    }
                    return Some(delivery(message, handler));
                }
                Err(e) => {
                    self.health.broken(&e.to_string(), true);
                    let delay = self.backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::debug!(error = %e, delay = ?delay, "Pub/Sub stream failed; rebuilding it");
                    tokio::time::sleep(delay).await;
                    self.stream = subscribe(&self.subscriber, &self.settings);
                }
            }
        }
    }

    /// A handle that stops the stream.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stream.shutdown_token())
    }
}

fn subscribe(subscriber: &Subscriber, settings: &PubSubSettings) -> MessageStream {
    subscriber
        .subscribe(&settings.subscription)
        .set_max_outstanding_messages(settings.max_outstanding_messages)
        .set_max_outstanding_bytes(settings.max_outstanding_bytes)
        .set_max_lease_extension(settings.max_lease_extension)
        .set_max_lease(settings.max_lease)
        // On shutdown, deliveries already handed out are still settled by
        // us (ack or nack) while the subscriber keeps their leases.
        .set_shutdown_behavior(ShutdownBehavior::WaitForProcessing)
        .build()
}

/// Whether the connection to Pub/Sub works, so that a broken connection is
/// logged once when it breaks and once when it is back, however many
/// reconnect attempts happen in between.
#[derive(Debug)]
struct Health {
    incident: Mutex<Option<Incident>>,
    metrics: Arc<Metrics>,
    status: Arc<crate::health::Status>,
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
    fn new(metrics: Arc<Metrics>, status: Arc<crate::health::Status>) -> Self {
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

    fn broken(&self, error: &str, stream: bool) {
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
    fn restored(&self, by_probe: bool) -> bool {
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
struct Probe {
    admin: SubscriptionAdmin,
    subscription: String,
}

enum ProbeError {
    /// The subscription does not exist or may not be read.
    Refused(String),
    /// Pub/Sub did not answer.
    Unreachable(String),
}

impl Probe {
    async fn check(&self) -> Result<(), ProbeError> {
        let call = self
            .admin
            .get_subscription()
            .set_subscription(&self.subscription)
            .send();
        match tokio::time::timeout(PROBE_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                use google_cloud_gax::error::rpc::Code;
                match e.status().map(|s| s.code) {
                    Some(Code::NotFound) => Err(ProbeError::Refused(format!(
                        "{} does not exist; create it (chatworker setup, or gcloud pubsub subscriptions create)",
                        self.subscription
                    ))),
                    Some(Code::PermissionDenied) => Err(ProbeError::Refused(format!(
                        "no permission to use {}: grant roles/pubsub.subscriber to the worker's service account ({e})",
                        self.subscription
                    ))),
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
    async fn watch(
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
            let received = health.metrics.snapshot().received;
            if received != health.last_seen(received) {
                continue;
            }
            match self.check().await {
                Ok(()) => {
                    health.restored(true);
                }
                Err(ProbeError::Refused(e) | ProbeError::Unreachable(e)) => {
                    health.broken(&e, false)
                }
            }
        }
    }
}

fn delivery(message: Message, handler: Handler) -> Delivery {
    Delivery {
        message_id: message.message_id,
        publish_time: message
            .publish_time
            .and_then(|t| SystemTime::try_from(t).ok()),
        data: message.data,
        attributes: message.attributes,
        received: Instant::now(),
        handler,
    }
}

/// Publishes to a topic (the dead-letter topic), with the same connection rules.
#[derive(Clone, Debug)]
pub struct TopicPublisher {
    publisher: Publisher,
}

impl TopicPublisher {
    /// A publisher for `topic` (`projects/P/topics/T`).
    pub async fn new(settings: &PubSubSettings, topic: &str) -> Result<Self, SourceError> {
        let mut builder = Publisher::builder(topic);
        if let Some((endpoint, credentials)) = connection(settings) {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(credentials);
        }
        let publisher = builder
            .build()
            .await
            .map_err(|e| SourceError(e.to_string()))?;
        Ok(Self { publisher })
    }

    /// Publishes and waits for the server's acknowledgement.
    pub async fn publish(
        &self,
        data: Bytes,
        attributes: impl IntoIterator<Item = (String, String)>,
    ) -> Result<String, SourceError> {
        let message = Message::new().set_data(data).set_attributes(attributes);
        self.publisher
            .publish(message)
            .await
            .map_err(|e| SourceError(e.to_string()))
    }
}
