//! Bytes from Pub/Sub to a domain [`Event`], or a typed [`DecodeError`].

use super::Event;
use super::addon::AddOnEvent;
use super::classic::ClassicEvent;

/// Why a Pub/Sub message could not be decoded into an event. Every variant
/// leads to the same fate: the message is logged with its Pub/Sub ID, counted
/// as dropped, and acked (or forwarded to the dead-letter topic when one is
/// configured), because redelivering it could never succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is empty.
    #[error("the payload is empty")]
    Empty,
    /// The payload is not a JSON object (or not JSON at all).
    #[error("the payload is not a JSON object: {0}")]
    NotJson(String),
    /// The payload is JSON but not shaped like either event format.
    #[error("the payload is not a Chat event: {0}")]
    Shape(String),
}

impl DecodeError {
    /// A short, stable label for metrics and dead-letter attributes.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::NotJson(_) => "not_json",
            Self::Shape(_) => "wrong_shape",
        }
    }
}

/// Decodes either event format. Unknown fields are ignored; an unknown event
/// type decodes into [`super::EventKind::Unknown`].
pub fn decode(data: &[u8]) -> Result<Event, DecodeError> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    // Parse once into a tree to choose the format. serde_json bounds nesting
    // (128 levels), so hostile input cannot overflow the stack.
    let value: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(DecodeError::NotJson(
            "the top level is not an object".into(),
        ));
    };
    let shape = |e: serde_json::Error| DecodeError::Shape(e.to_string());
    let event = if object.contains_key("type") {
        serde_json::from_value::<ClassicEvent>(value)
            .map_err(shape)?
            .into_domain()
    } else if object.contains_key("chat") {
        serde_json::from_value::<AddOnEvent>(value)
            .map_err(shape)?
            .into_domain()
    } else {
        return Err(DecodeError::Shape(
            "neither a classic interaction event (no \"type\") nor an add-on event (no \"chat\")"
                .into(),
        ));
    };
    event.map_err(|e| DecodeError::Shape(e.0))
}
