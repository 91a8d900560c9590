//! The seam between the worker and the app: an [`App`] turns one [`Event`] into
//! the replies to send. It sees domain types only, never Pub/Sub or HTTP.

use crate::context::Context;
use crate::event::Event;
use crate::reply::Reply;
use std::future::Future;

/// A Chat app: given an event, the replies to send (possibly none).
///
/// The worker calls `handle` once per delivery, in order within a thread.
/// The replies returned are sent after the handler finishes; `ctx` sends
/// during it (a placeholder before slow work, then an update). A delivery
/// may repeat (Pub/Sub delivers at least once), so `handle` should send and
/// return the same things in the same order for the same event: each message
/// gets an ID derived from the event and its position, and Chat refuses a
/// second message with the same ID.
pub trait App: Send + Sync + 'static {
    /// Handles one event.
    fn handle(
        &self,
        ctx: &Context<'_>,
        event: &Event,
    ) -> impl Future<Output = Result<Vec<Reply>, HandlerError>> + Send;
}

/// A handler's failure, and what the worker does about it.
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
