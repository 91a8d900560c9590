//! What a handler can do while it runs: send a message now (a "working…"
//! placeholder before slow work, say), update or delete the app's own
//! messages. Every message sent through the context gets a deterministic
//! `client-` ID from the event and the send's position, so a redelivered
//! event that sends the same things in the same order creates nothing twice:
//! Chat answers 409 and the context returns the message already there.

use crate::chat::{Created, NewMessage, SendError};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::names::MessageName;
use crate::reply::Reply;
use crate::sender::Sender;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A message the context sent (or found already sent by an earlier
/// delivery of the same event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The message's name with its client-assigned ID,
    /// `spaces/S/messages/client-…`, usable to update or delete it.
    pub name: MessageName,
}

/// The handler's side of one event's processing.
pub struct Context<'a> {
    pub(crate) sender: &'a Sender,
    pub(crate) event: &'a Event,
    pub(crate) identity: String,
    pub(crate) next: AtomicUsize,
    pub(crate) metrics: Arc<Metrics>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        sender: &'a Sender,
        event: &'a Event,
        identity: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            sender,
            event,
            identity,
            next: AtomicUsize::new(0),
            metrics,
        }
    }

    /// The position the next message sent will take; replies returned by
    /// the handler continue from here.
    pub(crate) fn position(&self) -> usize {
        self.next.load(Ordering::SeqCst)
    }

    /// Sends `reply` now (in the event's thread unless it says otherwise)
    /// and returns its name. Long text is split into several messages; the
    /// name is the first one's. A reply built with [`Reply::updating`]
    /// updates that message instead.
    pub async fn send(&self, reply: Reply) -> Result<Sent, SendError> {
        if let Some(name) = reply.update.clone() {
            self.update(&name, reply).await?;
            return Ok(Sent { name });
        }
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        // A card Chat would refuse is reported here, naming its largest
        // widget, rather than as a bare 400.
        if let Some(e) = reply
            .cards
            .iter()
            .find_map(|(_, c)| crate::card::check(c).err())
        {
            return Err(SendError::Permanent(e.to_string()));
        }
        let messages = crate::worker::new_messages(self.event, reply, &self.identity, index);
        let first = name_of(&messages[0]);
        for message in &messages {
            self.create(message).await?;
        }
        Ok(Sent { name: first })
    }

    /// Sends a short text now, to be replaced later with
    /// [`Context::update`]: how an app answers at once and works after.
    pub async fn placeholder(&self, text: impl Into<String>) -> Result<Sent, SendError> {
        self.send(Reply::text(text)).await
    }

    /// Replaces the text and cards of the app's message `name`.
    pub async fn update(&self, name: &MessageName, reply: Reply) -> Result<(), SendError> {
        self.sender
            .update(name, reply.text.as_deref(), &reply.cards)
            .await
            .map(|_| ())
    }

    /// Deletes the app's message `name`; one already gone counts as deleted.
    pub async fn delete(&self, name: &MessageName) -> Result<(), SendError> {
        self.sender.delete(name).await
    }

    async fn create(&self, message: &NewMessage) -> Result<(), SendError> {
        match self.sender.create(message).await? {
            Created::Message(_) => self.metrics.reply_created(),
            Created::AlreadyExists => self.metrics.reply_already_existed(),
        }
        Ok(())
    }
}

/// `spaces/S/messages/client-…` for a message with our ID.
fn name_of(message: &NewMessage) -> MessageName {
    let id = message.id.as_ref().map_or("", |id| id.as_str());
    MessageName::parse(&format!("{}/messages/{id}", message.space))
        .expect("a space name and an ID make a message name")
}
