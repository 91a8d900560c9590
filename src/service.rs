//! The seam between the worker and the app: a [`Service`] turns one
//! [`Event`] into the replies to send. It sees domain types only, never
//! Pub/Sub or HTTP. Most apps build an [`crate::App`], which is a `Service`
//! that routes each event to a typed handler; implement `Service` yourself
//! for full control over every event.

use crate::context::Context;
use crate::event::Event;
use crate::reply::Reply;
use std::future::Future;

/// Anything the worker can hand events to: given an event, the replies to
/// send (possibly none).
///
/// The worker calls `handle` once per delivery, in order within a thread.
/// The replies returned are sent after the handler finishes; `ctx` sends
/// during it (a placeholder before slow work, then an update). A delivery
/// may repeat (Pub/Sub delivers at least once), so `handle` should send and
/// return the same things in the same order for the same event: each message
/// gets an ID derived from the event and its position, and Chat refuses a
/// second message with the same ID.
///
/// A `Service` sees every event, including messages sent by other apps
/// (an [`crate::App`] ignores those unless told otherwise).
///
/// ```
/// use chatworker::{Context, Event, HandlerError, Reply, Service};
/// use chatworker::event::EventKind;
///
/// struct Echo;
///
/// impl Service for Echo {
///     async fn handle(&self, _ctx: &Context, event: &Event) -> Result<Vec<Reply>, HandlerError> {
///         Ok(match (&event.kind, &event.message) {
///             (EventKind::Message, Some(message)) => vec![Reply::text(&message.text)],
///             _ => Vec::new(),
///         })
///     }
/// }
/// ```
pub trait Service: Send + Sync + 'static {
    /// Handles one event.
    fn handle(
        &self,
        ctx: &Context,
        event: &Event,
    ) -> impl Future<Output = Result<Vec<Reply>, HandlerError>> + Send;

    /// The slash commands this service answers, as `(name, ID)`, for the
    /// local playground to annotate typed commands as Chat would. None by
    /// default; an [`crate::App`] lists the ones it registered.
    fn slash_commands(&self) -> Vec<(String, i64)> {
        Vec::new()
    }
}

/// A handler's failure, and what the worker does about it.
///
/// `?` converts the errors chatworker's own calls return (a failed send, a
/// card too large, an invalid message ID, bad action parameters). For your
/// own errors, say whether a retry may help with [`ResultExt`]:
///
/// ```
/// use chatworker::{HandlerError, ResultExt};
///
/// fn parse(text: &str) -> Result<u32, HandlerError> {
///     // Retrying cannot fix a typo: acked, logged and counted.
///     let n = text.trim().parse::<u32>().permanent()?;
///     Ok(n)
/// }
/// # assert!(parse("x").is_err());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Retrying cannot help: the event is acked, logged and counted (and
    /// dead-lettered when configured).
    #[error("handler failed permanently: {0}")]
    Permanent(String),
    /// A later attempt may succeed (a backend was down): the event is nacked
    /// and Pub/Sub redelivers it.
    #[error("handler failed, will retry: {0}")]
    Transient(String),
}

impl HandlerError {
    /// A failure no retry can fix.
    pub fn permanent(error: impl std::fmt::Display) -> Self {
        Self::Permanent(error.to_string())
    }

    /// A failure a later attempt may not meet.
    pub fn transient(error: impl std::fmt::Display) -> Self {
        Self::Transient(error.to_string())
    }

    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// Turns any error into a [`HandlerError`], saying whether a retry may help.
pub trait ResultExt<T> {
    /// A failure no retry can fix: the event is acked (and dead-lettered
    /// when configured).
    fn permanent(self) -> Result<T, HandlerError>;
    /// A failure a later attempt may not meet: the event is redelivered.
    fn transient(self) -> Result<T, HandlerError>;
}

impl<T, E: std::fmt::Display> ResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::permanent)
    }

    fn transient(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::transient)
    }
}

/// A failed send inside a handler fails the handler the same way, so `?`
/// works on [`Context`] calls.
impl From<crate::chat::SendError> for HandlerError {
    fn from(e: crate::chat::SendError) -> Self {
        if e.is_transient() {
            Self::Transient(e.to_string())
        } else {
            Self::Permanent(e.to_string())
        }
    }
}

impl From<crate::card::CardTooLarge> for HandlerError {
    fn from(e: crate::card::CardTooLarge) -> Self {
        Self::permanent(e)
    }
}

impl From<crate::names::InvalidMessageId> for HandlerError {
    fn from(e: crate::names::InvalidMessageId) -> Self {
        Self::permanent(e)
    }
}

impl From<crate::names::InvalidName> for HandlerError {
    fn from(e: crate::names::InvalidName) -> Self {
        Self::permanent(e)
    }
}
