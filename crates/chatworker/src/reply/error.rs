//! Why a message could not be sent: permanent (a redelivery would fail the
//! same way) or transient (a later attempt may succeed), with the cause kept
//! as the error's source, so that an error hook can look inside.

use std::time::Duration;

/// Any error, boxed: the cause a [`SendError`] or a
/// [`crate::HandlerError`] carries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a message could not be created, updated or deleted.
///
/// The cause is the [`source`](std::error::Error::source): an [`ApiError`]
/// when Chat answered, the HTTP client's error when it did not, or what made
/// the message unsendable (a card over Chat's size limit).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Retrying cannot help (Chat answered 400, 403, 404…, or the message is
    /// one Chat would refuse): the event is acked, logged and counted (and
    /// dead-lettered when configured).
    #[error("permanent Chat API error: {0}")]
    Permanent(#[source] BoxError),
    /// Retrying may help (429, 5xx, 401, timeouts, network, token endpoint
    /// down): retried with backoff, then the event is nacked so that
    /// Pub/Sub redelivers it later.
    #[error("transient Chat API error: {source}")]
    Transient {
        /// What happened.
        #[source]
        source: BoxError,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
}

impl SendError {
    /// A failure no retry can fix.
    pub fn permanent(cause: impl Into<BoxError>) -> Self {
        Self::Permanent(cause.into())
    }

    /// A failure a later attempt may not meet.
    pub fn transient(cause: impl Into<BoxError>) -> Self {
        Self::Transient {
            source: cause.into(),
            retry_after: None,
        }
    }

    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// Chat's answer, when Chat answered (and refused).
    pub fn api_error(&self) -> Option<&ApiError> {
        let source = match self {
            Self::Permanent(source) | Self::Transient { source, .. } => source,
        };
        source.downcast_ref()
    }
}

/// Chat's answer to a call it refused: the HTTP status and Google's error
/// status and message (`{"error": {"status": …, "message": …}}`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ApiError {
    /// The HTTP status, e.g. 403.
    pub code: u16,
    /// Google's status, e.g. `PERMISSION_DENIED`; empty when the answer had
    /// none.
    pub status: String,
    /// Google's message, never the request.
    pub message: String,
}

impl ApiError {
    /// An answer with `code` and Google's `status` and `message`.
    pub fn new(code: u16, status: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            status: status.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.status.is_empty(), self.message.is_empty()) {
            (true, true) => write!(f, "HTTP {}", self.code),
            _ => write!(f, "HTTP {} {}: {}", self.code, self.status, self.message),
        }
    }
}
