//! Publishing to a topic (the dead-letter topic), with the same connection
//! rules as the subscriber.

use super::{Connection, PubSubError};
use crate::config::TopicName;
use bytes::Bytes;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;

/// Publishes to a topic (the dead-letter topic), with the same connection rules.
#[derive(Clone, Debug)]
pub(crate) struct TopicPublisher {
    publisher: Publisher,
    /// Keeps the gateway, if any, listening.
    _connection: Connection,
}

impl TopicPublisher {
    /// A publisher for `topic` (`projects/P/topics/T`).
    pub(crate) async fn new(
        connection: &Connection,
        topic: &TopicName,
    ) -> Result<Self, PubSubError> {
        let mut builder = Publisher::builder(topic.as_str());
        if let Some(endpoint) = &connection.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(credentials) = &connection.credentials {
            builder = builder.with_credentials(credentials.clone());
        }
        let publisher = builder
            .build()
            .await
            .map_err(|e| PubSubError::Client(e.into()))?;
        Ok(Self {
            publisher,
            _connection: connection.clone(),
        })
    }

    /// Publishes and waits for the server's acknowledgement.
    pub(crate) async fn publish(
        &self,
        data: Bytes,
        attributes: impl IntoIterator<Item = (String, String)>,
    ) -> Result<String, PubSubError> {
        let message = Message::new().set_data(data).set_attributes(attributes);
        self.publisher
            .publish(message)
            .await
            .map_err(|e| PubSubError::Client(e.into()))
    }
}
