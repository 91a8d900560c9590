//! What a handler asks to send ([`Reply`]), its cards ([`card`]) and typed
//! card actions ([`action`]), and its composition into Chat messages:
//! space, thread, the text split into parts that fit, and a deterministic
//! ID for each (`compose`, `ids`, `text`). Plain domain values: this module
//! knows no HTTP and no Pub/Sub.

pub mod action;
pub mod card;
pub(crate) mod compose;
mod error;
pub(crate) mod ids;
pub(crate) mod text;

pub use compose::message_id;
pub use error::{ApiError, BoxError, SendError};

use crate::names::{ClientMessageId, MessageName, SpaceName, UserName};
pub use google_apps_card_v1::model::Card;

/// One message to post (or to write over an existing one) in answer to an
/// event.
///
/// ```
/// use chatworker::reply::{Notify, Reply};
/// use chatworker::names::UserName;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let reply = Reply::text("Only you can see this.")
///     .privately_to(UserName::parse("users/123")?)
///     .notify(Notify::Silent);
/// assert!(reply.private_to.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Reply {
    /// The message text, in the configured markup syntax
    /// (`chat.markup_syntax`) unless [`Reply::markup`] says otherwise.
    pub text: Option<String>,
    /// Cards (cardsV2), each with its card ID.
    pub cards: Vec<(String, Card)>,
    /// Buttons shown under the message (`accessoryWidgets`).
    pub accessory_buttons: Vec<google_apps_card_v1::model::Button>,
    /// Where in the space the reply goes.
    pub thread: ReplyThread,
    /// Another space to post in; `None` means the event's space.
    pub space: Option<SpaceName>,
    /// Write over an existing message of the app's (its text, cards and
    /// accessory buttons) instead of posting a new one.
    pub update: Option<Update>,
    /// The message ID to use instead of the one derived from the event, so
    /// that a later event can update or delete the message by that ID.
    pub id: Option<ClientMessageId>,
    /// A name for the message within its event: its ID derives from the
    /// event and this key instead of its position ([`Reply::with_key`]).
    pub key: Option<String>,
    /// Show the message to this person only (`privateMessageViewer`).
    pub private_to: Option<UserName>,
    /// How Chat notifies the space's members.
    pub notify: Notify,
    /// The text's markup syntax; `None` uses `chat.markup_syntax`.
    pub markup: Option<Markup>,
}

/// Where a reply goes within its space.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyThread {
    /// Into the event's thread (`thread.name` plus
    /// `REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD`), or a new thread when the event
    /// has none.
    #[default]
    Event,
    /// Into the app-owned thread with this key (created on first use).
    Key(String),
    /// A new thread.
    New,
}

/// Which message a reply writes over.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Update {
    /// This message of the app's.
    Message(MessageName),
    /// The message the event is about: the card whose button was clicked.
    EventMessage,
}

/// How Chat notifies people of a new message
/// (`createMessageNotificationOptions.notificationType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Notify {
    /// As if a person had sent it.
    #[default]
    Default,
    /// No notification at all.
    Silent,
    /// Notify even people who muted the space or set Do Not Disturb.
    Force,
}

/// How Chat reads a message's text. New Chat apps default to Markdown and
/// older ones to Chat's own syntax, so chatworker always says which.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Markup {
    /// Chat's syntax: `*bold*`, `_italic_`, `<url|label>`.
    #[default]
    Chat,
    /// CommonMark with Chat's extensions: `**bold**`, `[label](url)`.
    Markdown,
}

impl Reply {
    /// A text reply in the event's thread.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::default()
        }
    }

    /// A card reply in the event's thread. The card ID names the card
    /// within the message.
    pub fn card(card_id: impl Into<String>, card: Card) -> Self {
        Self {
            cards: vec![(card_id.into(), card)],
            ..Self::default()
        }
    }

    /// Adds a card to the message.
    pub fn with_card(mut self, card_id: impl Into<String>, card: Card) -> Self {
        self.cards.push((card_id.into(), card));
        self
    }

    /// Adds buttons under the message (accessory widgets).
    pub fn with_buttons(mut self, buttons: impl IntoIterator<Item = card::Button>) -> Self {
        self.accessory_buttons
            .extend(buttons.into_iter().map(card::Button::into_inner));
        self
    }

    /// Posts the reply in a new thread instead of the event's.
    pub fn in_new_thread(mut self) -> Self {
        self.thread = ReplyThread::New;
        self
    }

    /// Posts the reply in the app-owned thread `key`: the first message
    /// with a key starts the thread, later ones continue it.
    pub fn in_thread_key(mut self, key: impl Into<String>) -> Self {
        self.thread = ReplyThread::Key(key.into());
        self
    }

    /// Writes over the app's message `name` (text, cards and accessory
    /// buttons) instead of posting.
    pub fn updating(mut self, name: MessageName) -> Self {
        self.update = Some(Update::Message(name));
        self
    }

    /// Writes over the message the event is about: after a click, the card
    /// updates in place. Failing that (an event without a message), sending
    /// fails permanently.
    pub fn in_place(mut self) -> Self {
        self.update = Some(Update::EventMessage);
        self
    }

    /// Posts the reply in another space.
    pub fn in_space(mut self, space: SpaceName) -> Self {
        self.space = Some(space);
        self
    }

    /// Gives the message this ID (`client-…`) instead of one derived from
    /// the event, so that later events can update or delete it by name:
    /// `spaces/S/messages/client-…`.
    ///
    /// The ID is yours to keep unique in the space: a redelivery of the
    /// same event finds its message again (the worker sends a request ID
    /// derived from the event with it), but an ID that an earlier, different
    /// message already took is refused, and the refusal reaches the error
    /// hook rather than being taken for delivery.
    pub fn with_id(mut self, id: ClientMessageId) -> Self {
        self.id = Some(id);
        self
    }

    /// Names the message within its event: its ID derives from the event
    /// and `key` rather than from its position among the event's messages,
    /// so it stays the same however the handler's sends are ordered (when
    /// which messages it sends depends on state, say). The same event with
    /// the same key always yields the same ID; see
    /// [`crate::Context::message_name_for_key`].
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Shows the message to `user` only (and the app): a private message.
    pub fn privately_to(mut self, user: UserName) -> Self {
        self.private_to = Some(user);
        self
    }

    /// Chooses how people are notified.
    pub fn notify(mut self, notify: Notify) -> Self {
        self.notify = notify;
        self
    }

    /// Reads the text in this syntax instead of the configured one.
    pub fn markup(mut self, markup: Markup) -> Self {
        self.markup = Some(markup);
        self
    }
}

impl From<String> for Reply {
    fn from(text: String) -> Self {
        Self::text(text)
    }
}

impl From<&str> for Reply {
    fn from(text: &str) -> Self {
        Self::text(text)
    }
}
