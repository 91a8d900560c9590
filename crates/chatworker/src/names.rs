//! Newtypes for Chat resource names and for our client-assigned message IDs.
//!
//! A function that takes a [`SpaceName`] cannot be handed a thread by mistake,
//! and a [`ClientMessageId`] can only be built through [`ClientMessageId::new`],
//! which enforces the Chat API's rules, so no invalid ID reaches the wire.

use std::fmt;

macro_rules! resource_name {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix every name of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Parses a full resource name, for example
            #[doc = concat!("`", $prefix, "…`.")]
            pub fn parse(name: &str) -> Result<Self, InvalidName> {
                if name.starts_with($prefix) && name.len() > $prefix.len() && !name.contains(char::is_whitespace) {
                    Ok(Self(name.to_owned()))
                } else {
                    Err(InvalidName { kind: stringify!($name), value: name.chars().take(80).collect() })
                }
            }

            /// The full resource name.
            pub fn as_str(&self) -> &str {
                &self.0
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
    "spaces/"
);
resource_name!(
    /// A thread, `spaces/{space}/threads/{thread}`.
    ThreadName,
    "spaces/"
);
resource_name!(
    /// A message, `spaces/{space}/messages/{message}`.
    MessageName,
    "spaces/"
);
resource_name!(
    /// A user, `users/{user}`.
    UserName,
    "users/"
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
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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
        assert_eq!(
            SpaceName::parse_lenient("AAA").unwrap().as_str(),
            "spaces/AAA"
        );
        assert!(UserName::parse("users/123").is_ok());
    }
}
