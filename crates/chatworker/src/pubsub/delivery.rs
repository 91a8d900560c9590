//! One Pub/Sub message with its ack handle, settled exactly once: `ack` and
//! `nack` consume it, and dropping it nacks. The handle is the streaming
//! pull's or the REST transport's.

use bytes::Bytes;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use std::collections::HashMap;
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

/// One Pub/Sub message with its ack handle.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// Pub/Sub's message ID (the same on every redelivery).
    pub message_id: String,
    /// When it was published.
    pub publish_time: Option<SystemTime>,
    /// The payload.
    pub data: Bytes,
    /// The message's attributes.
    pub attributes: HashMap<String, String>,
    /// The publisher's ordering key; empty when it set none.
    pub ordering_key: String,
    /// When the worker received it, for the handling latency metric.
    pub received: Instant,
    settle: Settle,
}

/// How a delivery is settled: by the transport it came through.
#[derive(Debug)]
pub(super) enum Settle {
    /// The streaming pull's handler.
    Grpc(Handler),
    /// The REST transport's ticket.
    Rest(Ticket),
}

impl Delivery {
    /// Done: Pub/Sub will not redeliver it.
    pub(crate) fn ack(self) {
        match self.settle {
            Settle::Grpc(handler) => handler.ack(),
            Settle::Rest(ticket) => ticket.ack(),
        }
    }

    /// Not done: Pub/Sub redelivers it.
    pub(crate) fn nack(self) {
        match self.settle {
            Settle::Grpc(handler) => handler.nack(),
            Settle::Rest(ticket) => ticket.nack(),
        }
    }

    /// How many times Pub/Sub has delivered it, when the subscription has a
    /// dead-letter policy (otherwise `None`).
    pub(crate) fn delivery_attempt(&self) -> Option<i32> {
        match &self.settle {
            Settle::Grpc(handler) => handler.delivery_attempt(),
            Settle::Rest(ticket) => ticket.delivery_attempt(),
        }
    }
}

impl Delivery {
    /// A message as a transport handed it over.
    pub(super) fn new(message: Message, settle: Settle) -> Self {
        Self {
            message_id: message.message_id,
            publish_time: message
                .publish_time
                .and_then(|t| SystemTime::try_from(t).ok()),
            data: message.data,
            attributes: message.attributes,
            ordering_key: message.ordering_key,
            received: Instant::now(),
            settle,
        }
    }
}

/// What the worker decided for one delivery.
#[derive(Debug)]
pub(super) enum Settlement {
    Ack(String),
    Nack(String),
}

impl Settlement {
    pub(super) fn ack_id(&self) -> &str {
        match self {
            Self::Ack(id) | Self::Nack(id) => id,
        }
    }
}

/// One delivery's ack handle over REST: settled once; dropping it nacks.
#[derive(Debug)]
pub(super) struct Ticket {
    ack_id: String,
    attempt: Option<i32>,
    settle: mpsc::UnboundedSender<Settlement>,
    settled: bool,
}

impl Ticket {
    pub(super) fn new(
        ack_id: String,
        attempt: Option<i32>,
        settle: mpsc::UnboundedSender<Settlement>,
    ) -> Self {
        Self {
            ack_id,
            attempt,
            settle,
            settled: false,
        }
    }

    pub(super) fn ack(mut self) {
        self.send(true);
    }

    pub(super) fn nack(mut self) {
        self.send(false);
    }

    pub(super) fn delivery_attempt(&self) -> Option<i32> {
        self.attempt
    }

    fn send(&mut self, ack: bool) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let id = std::mem::take(&mut self.ack_id);
        let settlement = match ack {
            true => Settlement::Ack(id),
            false => Settlement::Nack(id),
        };
        // Closed only once the stream is gone: the message comes back when
        // its deadline passes.
        let _ = self.settle.send(settlement);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.send(false);
    }
}
