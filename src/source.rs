//! Pub/Sub in: the only module that knows the Pub/Sub client types. It opens
//! the official streaming-pull subscriber (leases, flow control, shutdown) and
//! turns each message into a [`Delivery`] that is acked or nacked exactly once;
//! a delivery dropped without either is nacked.

use crate::config::PubSubSettings;
use bytes::Bytes;
use google_cloud_auth::credentials::{Credentials, anonymous};
use google_cloud_pubsub::client::{Publisher, Subscriber};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::MessageStream;
use google_cloud_pubsub::subscriber::ShutdownBehavior;
use google_cloud_pubsub::subscriber::handler::Handler;
use std::collections::HashMap;
use std::time::SystemTime;

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

/// The subscription's message stream.
#[derive(Debug)]
pub struct Source {
    stream: MessageStream,
}

/// The subscription failed for good (for example it does not exist).
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
fn connection(settings: &PubSubSettings) -> Option<(String, Credentials)> {
    settings
        .emulator_host
        .as_ref()
        .map(|host| (format!("http://{host}"), anonymous::Builder::new().build()))
}

impl Source {
    /// Opens the streaming pull. Errors surface from [`Source::next`].
    pub async fn open(settings: &PubSubSettings) -> Result<Self, SourceError> {
        let mut builder = Subscriber::builder();
        if let Some((endpoint, credentials)) = connection(settings) {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(credentials);
        }
        let subscriber = builder
            .build()
            .await
            .map_err(|e| SourceError(e.to_string()))?;
        let stream = subscriber
            .subscribe(&settings.subscription)
            .set_max_outstanding_messages(settings.max_outstanding_messages)
            .set_max_lease_extension(settings.max_lease_extension)
            .set_max_lease(settings.max_lease)
            // On shutdown, deliveries already handed out are still settled by
            // us (ack or nack) while the subscriber keeps their leases.
            .set_shutdown_behavior(ShutdownBehavior::WaitForProcessing)
            .build();
        Ok(Self { stream })
    }

    /// The next delivery; `None` once stopped; an error when the subscription
    /// failed permanently (the stream reconnects by itself after transient errors).
    pub async fn next(&mut self) -> Option<Result<Delivery, SourceError>> {
        match self.stream.next().await? {
            Ok((message, handler)) => Some(Ok(delivery(message, handler))),
            Err(e) => Some(Err(SourceError(e.to_string()))),
        }
    }

    /// A handle that stops the stream.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stream.shutdown_token())
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
