//! Bytes from Pub/Sub to a domain [`Event`], or a typed [`DecodeError`].

use super::Event;
use super::addon::AddOnEvent;
use super::classic::ClassicEvent;
use super::wire::Skip;

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
    /// The payload is larger than the worker accepts
    /// (`worker.max_event_bytes`); it was not read.
    #[error("the payload is {bytes} bytes, over the {max} accepted")]
    TooLarge {
        /// The payload's size.
        bytes: usize,
        /// The most accepted.
        max: usize,
    },
}

impl DecodeError {
    /// A short, stable label for metrics and dead-letter attributes.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::NotJson(_) => "not_json",
            Self::Shape(_) => "wrong_shape",
            Self::TooLarge { .. } => "too_large",
        }
    }
}

/// Decodes either event format. Unknown fields are ignored; an unknown event
/// type decodes into [`super::EventKind::Unknown`].
pub fn decode(data: &[u8]) -> Result<Event, DecodeError> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    // A first pass notes which top-level keys are present and keeps
    // nothing else; the second decodes the format found, with no tree in
    // between (an event's decoding is on every event's path). serde_json
    // bounds nesting (128 levels), so hostile input cannot overflow the stack.
    let keys: TopLevel = serde_json::from_slice(data).map_err(|e| {
        DecodeError::NotJson(match e.classify() {
            serde_json::error::Category::Data => "the top level is not an object".into(),
            _ => e.to_string(),
        })
    })?;
    let shape = |e: serde_json::Error| DecodeError::Shape(e.to_string());
    let event = if keys.r#type {
        serde_json::from_slice::<ClassicEvent>(data)
            .map_err(shape)?
            .into_domain()
    } else if keys.chat {
        serde_json::from_slice::<AddOnEvent>(data)
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

/// Which of the keys that tell the formats apart a JSON object has.
#[derive(Default)]
struct TopLevel {
    r#type: bool,
    chat: bool,
}

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = TopLevel;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<TopLevel, M::Error> {
                // Identifiers are compared where they lie, not copied.
                #[derive(serde::Deserialize)]
                #[serde(field_identifier, rename_all = "lowercase")]
                enum Key {
                    Type,
                    Chat,
                    #[serde(other)]
                    Other,
                }
                let mut keys = TopLevel::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Type => keys.r#type = true,
                        Key::Chat => keys.chat = true,
                        Key::Other => {}
                    }
                    map.next_value::<Skip>()?;
                }
                Ok(keys)
            }
        }
        deserializer.deserialize_map(Keys)
    }
}
