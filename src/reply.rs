//! What a handler asks the worker to send: plain domain values, built without
//! any Chat client in sight. The worker derives each reply's message ID and
//! hands the reply to [`crate::chat`].

use crate::names::{MessageName, SpaceName};
pub use google_apps_card_v1::model::Card;

/// One message to post in answer to an event.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Reply {
    /// The message text.
    pub text: Option<String>,
    /// Cards (cardsV2), each with its card ID.
    pub cards: Vec<(String, Card)>,
    /// Where in the space the reply goes.
    pub thread: ReplyThread,
    /// Another space to post in; `None` means the event's space.
    pub space: Option<SpaceName>,
    /// Replace this message of the app's (its text and cards) instead of
    /// posting a new one: how a card updates in place after a click.
    pub update: Option<MessageName>,
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

impl Reply {
    /// A text reply in the event's thread.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::default()
        }
    }

    /// A card reply in the event's thread.
    pub fn card(card_id: impl Into<String>, card: Card) -> Self {
        Self {
            cards: vec![(card_id.into(), card)],
            ..Self::default()
        }
    }

    /// Posts the reply in a new thread instead of the event's.
    pub fn in_new_thread(mut self) -> Self {
        self.thread = ReplyThread::New;
        self
    }

    /// Posts the reply in the app-owned thread `key`.
    pub fn in_thread_key(mut self, key: impl Into<String>) -> Self {
        self.thread = ReplyThread::Key(key.into());
        self
    }

    /// Replaces the app's message `name` (text and cards) with this reply,
    /// for example the card whose button was clicked.
    pub fn updating(mut self, name: MessageName) -> Self {
        self.update = Some(name);
        self
    }

    /// Posts the reply in another space.
    pub fn in_space(mut self, space: SpaceName) -> Self {
        self.space = Some(space);
        self
    }
}
