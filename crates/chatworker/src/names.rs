//! Newtypes for Chat resource names and for our client-assigned message IDs.
//!
//! A function that takes a [`SpaceName`] cannot be handed a thread by mistake,
//! and a [`ClientMessageId`] can only be built through [`ClientMessageId::new`],
//! which enforces the Chat API's rules, so no invalid ID reaches the wire.

use std::fmt;

/// The longest ID segment accepted in a resource name. Chat's own IDs are
/// a few dozen characters; the bound keeps a hostile event from carrying a
/// megabyte "name" into every log line and request.
const MAX_SEGMENT: usize = 256;

/// Whether `segment` is one resource ID: non-empty, bounded, of letters,
/// digits and `-_.` (and `@+` where `extra` allows), and neither `.` nor
/// `..`, so that it can never climb out of its place in a URL path.
fn is_segment(segment: &str, extra: &[u8]) -> bool {
    !segment.is_empty()
        && segment.len() <= MAX_SEGMENT
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b) || extra.contains(&b))
}

/// Whether `name` is `collection/ID` repeated as `shape` says, every ID a
/// valid segment.
fn matches(name: &str, shape: &[&str], extra: &[u8]) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == shape.len() * 2
        && shape
            .iter()
            .zip(parts.chunks(2))
            .all(|(collection, pair)| pair[0] == *collection && is_segment(pair[1], extra))
}

macro_rules! resource_name {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, [$($collection:literal),+], $extra:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every name of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Parses a full resource name, for example
            #[doc = concat!("`", $prefix, "…`,")]
            /// each ID made of letters, digits and `-_.` only, and never `.`
            /// or `..`: a name from an event cannot redirect a request.
            pub fn parse(name: &str) -> Result<Self, InvalidName> {
                if matches(name, &[$($collection),+], $extra) {
                    Ok(Self(name.to_owned()))
                } else {
                    Err(InvalidName { kind: stringify!($name), value: name.chars().take(80).collect() })
                }
            }

            /// The full resource name.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name's parts, `collection`, `ID`, …: each a single URL
            /// path segment.
            pub fn segments(&self) -> impl Iterator<Item = &str> {
                self.0.split('/')
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

resource_name!(
    /// A space, `spaces/{space}`.
    SpaceName,
    "spaces/",
    ["spaces"],
    b""
);
resource_name!(
    /// A thread, `spaces/{space}/threads/{thread}`.
    ThreadName,
    "spaces/",
    ["spaces", "threads"],
    b""
);
resource_name!(
    /// A message, `spaces/{space}/messages/{message}`.
    MessageName,
    "spaces/",
    ["spaces", "messages"],
    b""
);
resource_name!(
    /// A user, `users/{user}` (an ID, `app`, or an email address).
    UserName,
    "users/",
    ["users"],
    b"@+"
);

impl SpaceName {
    /// Accepts `spaces/AAA` or the bare ID `AAA`, as command-line users type it.
    pub fn parse_lenient(value: &str) -> Result<Self, InvalidName> {
        if value.starts_with(Self::PREFIX) {
            Self::parse(value)
        } else {
            Self::parse(&format!("{}{value}", Self::PREFIX))
        }
    }
}

impl MessageName {
    /// The message with our client-assigned `id` in `space`:
    /// `spaces/S/messages/client-…`. Both parts are valid names already,
    /// so this cannot fail.
    pub fn in_space(space: &SpaceName, id: &ClientMessageId) -> Self {
        Self(format!("{space}/messages/{id}"))
    }

    /// The space the message is in: `spaces/S` of `spaces/S/messages/M`.
    pub fn space(&self) -> SpaceName {
        let space = self.0.split('/').take(2).collect::<Vec<_>>().join("/");
        SpaceName(space)
    }
}

/// A resource name that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {value:?}")]
pub struct InvalidName {
    kind: &'static str,
    value: String,
}

/// A client-assigned message ID as the Chat API accepts it: `client-` followed
/// by lowercase letters, digits and hyphens, at most 63 characters in all.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ClientMessageId(String);

/// Why a string is not a valid [`ClientMessageId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMessageId {
    /// The ID does not start with `client-`.
    #[error("a message ID must start with \"client-\"")]
    Prefix,
    /// The ID is longer than 63 characters.
    #[error("a message ID has at most 63 characters, this one has {0}")]
    TooLong(usize),
    /// The ID holds something other than lowercase letters, digits and hyphens.
    #[error("a message ID holds only lowercase letters, digits and hyphens")]
    Charset,
}

impl ClientMessageId {
    /// The longest ID Chat accepts.
    pub const MAX_LEN: usize = 63;
    /// The prefix Chat requires.
    pub const PREFIX: &'static str = "client-";

    /// Validates `id` against the Chat API's rules.
    pub fn new(id: &str) -> Result<Self, InvalidMessageId> {
        let Some(rest) = id.strip_prefix(Self::PREFIX) else {
            return Err(InvalidMessageId::Prefix);
        };
        if id.len() > Self::MAX_LEN {
            return Err(InvalidMessageId::TooLong(id.len()));
        }
        if rest.is_empty()
            || !rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(InvalidMessageId::Charset);
        }
        Ok(Self(id.to_owned()))
    }

    /// The ID as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_rules() {
        assert!(ClientMessageId::new("client-abc-123").is_ok());
        assert_eq!(ClientMessageId::new("abc"), Err(InvalidMessageId::Prefix));
        assert_eq!(
            ClientMessageId::new("client-"),
            Err(InvalidMessageId::Charset)
        );
        assert_eq!(
            ClientMessageId::new("client-ABC"),
            Err(InvalidMessageId::Charset)
        );
        assert_eq!(
            ClientMessageId::new("client-a_b"),
            Err(InvalidMessageId::Charset)
        );
        let long = format!("client-{}", "a".repeat(57));
        assert_eq!(
            ClientMessageId::new(&long),
            Err(InvalidMessageId::TooLong(64))
        );
        assert!(ClientMessageId::new(&long[..63]).is_ok());
    }

    #[test]
    fn names() {
        assert!(SpaceName::parse("spaces/AAA").is_ok());
        assert!(SpaceName::parse("spaces/").is_err());
        assert!(SpaceName::parse("rooms/AAA").is_err());
        assert!(MessageName::parse("spaces/AAA/messages/B1.B1").is_ok());
        assert!(MessageName::parse("spaces/AAA/messages/client-x1").is_ok());
        assert!(ThreadName::parse("spaces/AAA/threads/T_1-x").is_ok());
        assert!(UserName::parse("users/ada@example.com").is_ok());
        // Dot segments, extra segments, encoded or odd characters: refused,
        // so that a name from an event can never redirect a request.
        for bad in [
            "spaces/X/../../v1/spaces/Y",
            "spaces/..",
            "spaces/.",
            "spaces/X/",
            "spaces/X/messages",
            "spaces/X%2F..",
            "spaces/X?alt=1",
            "spaces/X#f",
            "spaces/X Y",
            "spaces/é",
        ] {
            assert!(SpaceName::parse(bad).is_err(), "{bad}");
        }
        assert!(MessageName::parse("spaces/X/messages/../../spaces/Y/messages/Z").is_err());
        assert!(ThreadName::parse("spaces/X/threads/../messages").is_err());
        assert!(SpaceName::parse(&format!("spaces/{}", "A".repeat(257))).is_err());
        assert_eq!(
            SpaceName::parse_lenient("AAA").unwrap().as_str(),
            "spaces/AAA"
        );
        assert!(UserName::parse("users/123").is_ok());
    }
}
