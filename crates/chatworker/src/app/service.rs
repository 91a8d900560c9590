//! The seam between the worker and the app: a [`Service`] turns one
//! [`Event`] into an [`Answer`], the replies to send or the reason it
//! leaves the event unanswered. It sees domain types only, never Pub/Sub or
//! HTTP. Most apps build an [`crate::App`], which is a `Service` that routes
//! each event to a typed handler; implement `Service` yourself for full
//! control over every event.

use super::HandlerError;
use super::context::Context;
use crate::event::Event;
use crate::reply::Reply;
use crate::store::BadState;
use std::future::Future;

/// What handling an event came to: the replies to send after the handler
/// (possibly none), or why the event is deliberately left unanswered.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Answer {
    /// Send these, in order, after the handler (in addition to what it sent
    /// through its [`Context`] meanwhile).
    Replies(Vec<Reply>),
    /// Not answered on purpose: the event is acked and counted under this
    /// reason (a short, fixed label such as `"not_allowed"`, used as a
    /// metric label, so never built from user input).
    Skipped(&'static str),
}

impl Answer {
    /// No reply.
    pub fn none() -> Self {
        Self::Replies(Vec::new())
    }

    /// The replies to send (none for a skipped event).
    pub fn replies(&self) -> &[Reply] {
        match self {
            Self::Replies(replies) => replies,
            Self::Skipped(_) => &[],
        }
    }

    /// The reason the event was skipped, if it was.
    pub fn skipped(&self) -> Option<&'static str> {
        match self {
            Self::Skipped(reason) => Some(reason),
            Self::Replies(_) => None,
        }
    }
}

impl From<Vec<Reply>> for Answer {
    fn from(replies: Vec<Reply>) -> Self {
        Self::Replies(replies)
    }
}

/// Anything the worker can hand events to: given an event, its [`Answer`].
///
/// The worker calls `handle` once per delivery, in order within a thread.
/// The replies answered are sent after the handler finishes; `ctx` sends
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
/// use chatworker::{Answer, Context, Event, HandlerError, Reply, Service};
/// use chatworker::event::EventKind;
///
/// struct Echo;
///
/// impl Service for Echo {
///     async fn handle(&self, _ctx: &Context, event: &Event) -> Result<Answer, HandlerError> {
///         Ok(match (&event.kind, &event.message) {
///             (EventKind::Message, Some(message)) => vec![Reply::text(&message.text)].into(),
///             _ => Answer::Skipped("not_a_message"),
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
    ) -> impl Future<Output = Result<Answer, HandlerError>> + Send;

    /// Called when Chat refused, for good, a reply this service answered
    /// with (a card Chat would not take, a message ID another message
    /// holds): the chance to tell the person, since the reply itself will
    /// never appear. `error`'s cause is the [`crate::SendError`]. The
    /// answer is sent like any other (a refusal of it is only logged); an
    /// error settles the event as before. By default the error stands. An
    /// [`crate::App`] hands it to its [`crate::App::on_error`] hook.
    fn refused(
        &self,
        ctx: &Context,
        event: &Event,
        error: HandlerError,
    ) -> impl Future<Output = Result<Answer, HandlerError>> + Send {
        let _ = (ctx, event);
        async move { Err(error) }
    }

    /// What to do with a stored state value that no longer decodes as the
    /// type a handler asks for: [`BadState::Fail`] by default. An
    /// [`crate::App`] says what [`crate::App::on_bad_state`] set.
    fn bad_state(&self) -> BadState {
        BadState::Fail
    }

    /// The slash commands this service answers, as `(name, ID)`, for the
    /// local playground to annotate typed commands as Chat would. None by
    /// default; an [`crate::App`] lists the ones it registered.
    fn slash_commands(&self) -> Vec<(String, i64)> {
        Vec::new()
    }
}
