//! A handler's failure, and what the worker does about it: a permanent one
//! is acked (or dead-lettered), a transient one nacked for redelivery. The
//! cause is kept as the error's source, so an error hook can downcast it.

use crate::reply::{BoxError, SendError};

/// A handler's failure, and what the worker does about it.
///
/// `?` converts the errors chatworker's own calls return (a failed send, a
/// card too large, an invalid message ID, bad action parameters). For your
/// own errors, say whether a retry may help with [`ResultExt`]; the error
/// itself is kept, and [`HandlerError::downcast_ref`] finds it again (in an
/// [`crate::App::on_error`] hook, say):
///
/// ```
/// use chatworker::{HandlerError, ResultExt};
///
/// fn parse(text: &str) -> Result<u32, HandlerError> {
///     // Retrying cannot fix a typo: acked, logged and counted.
///     let n = text.trim().parse::<u32>().permanent()?;
///     Ok(n)
/// }
/// let error = parse("x").unwrap_err();
/// assert!(error.downcast_ref::<std::num::ParseIntError>().is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Retrying cannot help: the event is acked, logged and counted (and
    /// dead-lettered when configured).
    #[error("handler failed permanently: {0}")]
    Permanent(#[source] BoxError),
    /// A later attempt may succeed (a backend was down): the event is nacked
    /// and Pub/Sub redelivers it.
    #[error("handler failed, will retry: {0}")]
    Transient(#[source] BoxError),
}

impl HandlerError {
    /// A failure no retry can fix: an error, or a message (`&str`, `String`).
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Permanent(error.into())
    }

    /// A failure a later attempt may not meet: an error, or a message.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self::Transient(error.into())
    }

    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }

    /// The cause, as given.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        match self {
            Self::Permanent(e) | Self::Transient(e) => e.as_ref(),
        }
    }

    /// The cause, if it is a `T`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.cause().downcast_ref()
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

impl<T, E: Into<BoxError>> ResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::permanent)
    }

    fn transient(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::transient)
    }
}

/// A failed send inside a handler fails the handler the same way, so `?`
/// works on [`crate::Context`] calls; the [`SendError`] is the cause.
impl From<SendError> for HandlerError {
    fn from(e: SendError) -> Self {
        if e.is_transient() {
            Self::Transient(e.into())
        } else {
            Self::Permanent(e.into())
        }
    }
}

impl From<crate::action::ActionError> for HandlerError {
    fn from(e: crate::action::ActionError) -> Self {
        Self::permanent(e)
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

/// A store that is unavailable is worth a retry; a value that does not
/// decode, or a scope the event lacks, is not.
impl From<crate::store::StateError> for HandlerError {
    fn from(e: crate::store::StateError) -> Self {
        use crate::store::{StateError, StoreError};
        match e {
            StateError::Store(StoreError::Unavailable(_)) => Self::transient(e),
            e => Self::permanent(e),
        }
    }
}

#[cfg(test)]
mod state_tests {
    use super::HandlerError;
    use crate::store::{StateError, StoreError};

    #[test]
    fn only_an_unavailable_store_is_worth_a_retry() {
        let down: HandlerError = StateError::Store(StoreError::Unavailable("gone".into())).into();
        assert!(down.is_transient());
        let undecodable: HandlerError = StateError::Undecodable {
            key: "space spaces/A/n".into(),
            type_name: "u64",
            error: "invalid type".into(),
        }
        .into();
        assert!(!undecodable.is_transient(), "no retry loop");
    }
}
