//! The subscription's message stream: checked at start, opened with the
//! official streaming-pull subscriber (rebuilt with backoff whenever it
//! ends) or with the [REST transport](super::rest), as `pubsub.transport`
//! says; `auto` moves from the first to the second when the gateway finds
//! that HTTP/2 cannot be negotiated.

use super::delivery::Settle;
use super::outage::{Health, Probe, ProbeError};
use super::rest::{self, Api, RestStop, RestStream};
use super::{Connection, Delivery, PubSubError};
use crate::config::{PubSubSettings, SubscriptionName, Transport};
use crate::ops::health::{LinkCheck, Status};
use crate::ops::metrics::Metrics;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_pubsub::client::{Subscriber, SubscriptionAdmin};
use google_cloud_pubsub::subscriber::MessageStream;
use google_cloud_pubsub::subscriber::ShutdownBehavior;
use std::sync::Arc;
use std::time::Duration;

/// The subscription's message stream, rebuilt whenever it breaks.
pub(crate) struct Source {
    stream: Stream,
    subscriber: Subscriber,
    /// Under `auto` through the gateway: turns true when HTTP/2 cannot be
    /// negotiated, and the pull moves to REST.
    fallback: Option<tokio::sync::watch::Receiver<bool>>,
    subscription: SubscriptionName,
    settings: PubSubSettings,
    health: Arc<Health>,
    backoff: Box<dyn Iterator<Item = Duration> + Send>,
    /// The subscription's dead-letter policy's attempts, as read at start.
    max_delivery_attempts: Option<i32>,
    _watch: tokio_util::sync::DropGuard,
    /// Keeps the gateway, if any, listening; the REST transport's way.
    connection: Connection,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

/// The pull, by transport.
enum Stream {
    Grpc(Box<MessageStream>),
    Rest(RestStream),
}

/// Signals the stream to stop, then waits until pending acks are flushed.
#[derive(Clone, Debug)]
pub(crate) enum StopHandle {
    /// The streaming pull's.
    Grpc(google_cloud_pubsub::subscriber::ShutdownToken),
    /// The REST transport's.
    Rest(RestStop),
}

impl StopHandle {
    /// Stops pulling and waits for every delivery handed out to be settled
    /// and for the acks to reach Pub/Sub.
    pub(crate) async fn stop(&self) {
        match self {
            Self::Grpc(token) => token.shutdown().await,
            Self::Rest(stop) => stop.stop().await,
        }
    }
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
        let link = connection.link();
        let transport = match (settings.transport, &link) {
            // The emulator speaks HTTP/2 on loopback: nothing to fall back from.
            (Transport::Auto, None) => Transport::Grpc,
            (transport, _) => transport,
        };
        let fallback = match (transport, &link) {
            (Transport::Auto, Some(link)) => Some(link.fall_back_to_rest()),
            _ => None,
        };
        let stream = match transport {
            Transport::Rest => {
                tracing::info!("pulling over REST (HTTP/1.1), as pubsub.transport says");
                Stream::Rest(rest_stream(connection, settings, subscription, &health)?)
            }
            _ => Stream::Grpc(Box::new(subscribe(&subscriber, subscription, settings))),
        };
        Ok(Self {
            stream,
            subscriber,
            fallback,
            subscription: subscription.clone(),
            settings: settings.clone(),
            health,
            backoff: rest::backoff(),
            max_delivery_attempts,
            _watch: watch.drop_guard(),
            connection: connection.clone(),
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
            let stream = match &mut self.stream {
                Stream::Rest(stream) => return stream.next().await,
                Stream::Grpc(stream) => stream,
            };
            let next = match &mut self.fallback {
                None => Some(stream.next().await?),
                Some(fallback) => tokio::select! {
                    next = stream.next() => Some(next?),
                    Ok(_) = fallback.wait_for(|refused| *refused) => None,
                },
            };
            let Some(next) = next else {
                self.fall_back();
                continue;
            };
            match next {
                Ok((message, handler)) => {
                    if self.health.restored(false) {
                        self.backoff = rest::backoff();
                    }
                    return Some(Delivery::new(message, Settle::Grpc(handler)));
                }
                Err(e) => {
                    self.health.broken(&e.to_string(), true);
                    let delay = self.backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::debug!(error = %e, delay = ?delay, "Pub/Sub stream failed; rebuilding it");
                    tokio::time::sleep(delay).await;
                    self.stream = Stream::Grpc(Box::new(subscribe(
                        &self.subscriber,
                        &self.subscription,
                        &self.settings,
                    )));
                }
            }
        }
    }

    /// HTTP/2 cannot be negotiated: the pull moves to REST. The streaming
    /// pull is shut down aside: what it handed out, if it ever connected,
    /// is still settled through it.
    fn fall_back(&mut self) {
        self.fallback = None;
        if let Some(link) = self.connection.link() {
            link.pull_over_rest();
        }
        let rest = match rest_stream(
            &self.connection,
            &self.settings,
            &self.subscription,
            &self.health,
        ) {
            Ok(rest) => rest,
            Err(e) => {
                // Only the credentials can fail here, as they would have
                // for the streaming pull: it stays, and says why.
                tracing::error!(error = %e, "the REST transport could not be set up");
                return;
            }
        };
        if let Stream::Grpc(old) = std::mem::replace(&mut self.stream, Stream::Rest(rest)) {
            let token = old.shutdown_token();
            tokio::spawn(async move {
                token.shutdown().await;
                drop(old);
            });
        }
    }

    /// A handle that stops the stream.
    pub(crate) fn stop_handle(&self) -> StopHandle {
        match &self.stream {
            Stream::Grpc(stream) => StopHandle::Grpc(stream.shutdown_token()),
            Stream::Rest(stream) => StopHandle::Rest(stream.stop_handle()),
        }
    }
}

/// The REST transport, over the gateway (or to the emulator), with the
/// connection's credentials (else Application Default Credentials, as the
/// official clients use).
fn rest_stream(
    connection: &Connection,
    settings: &PubSubSettings,
    subscription: &SubscriptionName,
    health: &Arc<Health>,
) -> Result<RestStream, PubSubError> {
    let credentials = match &connection.credentials {
        Some(credentials) => credentials.clone(),
        None => google_cloud_auth::credentials::Builder::default()
            .build()
            .map_err(|e| PubSubError::Client(e.into()))?,
    };
    let endpoint = connection
        .endpoint
        .as_deref()
        .ok_or_else(|| PubSubError::Client("no Pub/Sub endpoint".into()))?;
    let http = connection
        .egress
        .http_client()
        .http1_only()
        .user_agent(concat!("chatworker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| PubSubError::Client(e.into()))?;
    let api = Api::new(http, endpoint, subscription.as_str(), credentials);
    Ok(RestStream::start(api, settings, health.clone()))
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
