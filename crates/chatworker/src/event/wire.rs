//! Wire structs shared by both event formats: `User`, `Space`, `Message` and
//! `Thread` as Chat serializes them. Unknown fields are ignored; every field is
//! optional here and requirements are checked when building the domain event.

use super::{Message, SlashCommand, Space, SpaceKind, User, UserKind};
use crate::names::{MessageName, SpaceName, ThreadName, UserName};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireUser {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub email: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireSpace {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub space_type: Option<String>,
    /// The deprecated `type` field (`ROOM` or `DM`), still sent by Chat.
    #[serde(rename = "type")]
    pub legacy_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireThread {
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireMessage {
    pub name: Option<String>,
    pub text: Option<String>,
    pub argument_text: Option<String>,
    pub sender: Option<WireUser>,
    pub thread: Option<WireThread>,
    pub slash_command: Option<WireSlashCommand>,
    /// The `SLASH_COMMAND` annotation's command, the only annotation read:
    /// the list is scanned, never kept, so a huge one costs no memory.
    #[serde(default, rename = "annotations", deserialize_with = "slash_annotation")]
    pub slash_annotation: Option<WireSlashCommandMetadata>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireSlashCommand {
    pub command_id: Option<WireInt>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireAnnotation {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub slash_command: Option<WireSlashCommandMetadata>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireSlashCommandMetadata {
    pub command_id: Option<WireInt>,
    pub command_name: Option<String>,
}

/// Google's JSON writes int64 as a string and int32 as a number; accept both.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum WireInt {
    Number(i64),
    Text(String),
}

impl WireInt {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Text(s) => s.parse().ok(),
        }
    }

    pub fn to_text(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::Text(s) => s.clone(),
        }
    }
}

/// A required part of the event is missing or malformed.
#[derive(Debug)]
pub(super) struct ShapeError(pub String);

pub(super) fn thread_name(thread: Option<&WireThread>) -> Result<Option<ThreadName>, ShapeError> {
    match thread
        .and_then(|t| t.name.as_deref())
        .filter(|n| !n.is_empty())
    {
        Some(name) => ThreadName::parse(name)
            .map(Some)
            .map_err(|e| ShapeError(format!("thread.name: {e}"))),
        None => Ok(None),
    }
}

impl WireUser {
    pub fn into_domain(self) -> Result<User, ShapeError> {
        let name = match self.name.filter(|n| !n.is_empty()) {
            Some(n) => {
                Some(UserName::parse(&n).map_err(|e| ShapeError(format!("user.name: {e}")))?)
            }
            None => None,
        };
        let kind = match self.kind.as_deref() {
            Some("HUMAN") => UserKind::Human,
            Some("BOT") => UserKind::Bot,
            _ => UserKind::Unspecified,
        };
        Ok(User {
            name,
            display_name: self.display_name,
            avatar_url: self.avatar_url,
            email: self.email,
            kind,
        })
    }
}

impl WireSpace {
    pub fn into_domain(self) -> Result<Space, ShapeError> {
        let name = self
            .name
            .ok_or_else(|| ShapeError("space.name is missing".into()))?;
        let name = SpaceName::parse(&name).map_err(|e| ShapeError(format!("space.name: {e}")))?;
        let kind = match (self.space_type.as_deref(), self.legacy_type.as_deref()) {
            (Some("SPACE"), _) => SpaceKind::Space,
            (Some("GROUP_CHAT"), _) => SpaceKind::GroupChat,
            (Some("DIRECT_MESSAGE"), _) | (_, Some("DM")) => SpaceKind::DirectMessage,
            (_, Some("ROOM")) => SpaceKind::Space,
            _ => SpaceKind::Unspecified,
        };
        Ok(Space {
            name,
            display_name: self.display_name.filter(|n| !n.is_empty()),
            kind,
        })
    }
}

impl WireMessage {
    pub fn into_domain(self) -> Result<Message, ShapeError> {
        let name = match self.name.filter(|n| !n.is_empty()) {
            Some(n) => {
                Some(MessageName::parse(&n).map_err(|e| ShapeError(format!("message.name: {e}")))?)
            }
            None => None,
        };
        let thread = thread_name(self.thread.as_ref())?;
        // The command's name lives in the SLASH_COMMAND annotation; its ID in
        // both the annotation and `message.slashCommand`.
        let annotation = self.slash_annotation;
        let slash_command = match (self.slash_command, annotation) {
            (None, None) => None,
            (command, annotation) => {
                let id = command
                    .and_then(|c| c.command_id)
                    .or_else(|| annotation.as_ref().and_then(|a| a.command_id.clone()))
                    .map(|id| id.to_text());
                let name = annotation.and_then(|a| a.command_name);
                Some(SlashCommand { id, name })
            }
        };
        Ok(Message {
            name,
            text: self.text.unwrap_or_default(),
            argument_text: self.argument_text,
            sender: self.sender.map(WireUser::into_domain).transpose()?,
            thread,
            slash_command,
        })
    }
}

/// The most entries a list or map of an event may have (card action
/// parameters, say): more is no event Chat sends, and refusing it bounds
/// what decoding holds.
pub(super) const MAX_ENTRIES: usize = 256;

/// The first `SLASH_COMMAND` annotation's command, from a list read one
/// element at a time (`null` is an empty list, as proto3 JSON has it).
fn slash_annotation<'de, D>(deserializer: D) -> Result<Option<WireSlashCommandMetadata>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Annotations;
    impl<'de> serde::de::Visitor<'de> for Annotations {
        type Value = Option<WireSlashCommandMetadata>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of annotations")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(annotation) = seq.next_element::<WireAnnotation>()? {
                if found.is_none() && annotation.kind.as_deref() == Some("SLASH_COMMAND") {
                    found = annotation.slash_command;
                }
            }
            Ok(found)
        }
    }
    deserializer.deserialize_any(Annotations)
}

/// A list of at most [`MAX_ENTRIES`] elements (`null` is an empty list).
pub(super) fn bounded_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct List<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for List<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_ENTRIES} entries")
        }
        fn visit_unit<E>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut list = Vec::new();
            while let Some(item) = seq.next_element()? {
                if list.len() == MAX_ENTRIES {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_ENTRIES} entries"
                    )));
                }
                list.push(item);
            }
            Ok(list)
        }
    }
    deserializer.deserialize_any(List(std::marker::PhantomData))
}

/// A map of at most [`MAX_ENTRIES`] string entries (`null` is empty).
pub(super) fn bounded_map<'de, D>(
    deserializer: D,
) -> Result<std::collections::HashMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Map;
    impl<'de> serde::de::Visitor<'de> for Map {
        type Value = std::collections::HashMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a map of at most {MAX_ENTRIES} entries")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Self::Value::new())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut entries = Self::Value::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if entries.len() == MAX_ENTRIES {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_ENTRIES} entries"
                    )));
                }
                entries.insert(key, value);
            }
            Ok(entries)
        }
    }
    deserializer.deserialize_any(Map)
}

/// Any JSON value, read and dropped. Unlike `serde::de::IgnoredAny`, it
/// descends through `deserialize_any`, so serde_json's nesting limit still
/// refuses hostile input, as it would have building a tree.
pub(super) struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Any;
        impl<'de> serde::de::Visitor<'de> for Any {
            type Value = Skip;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Skip)
            }
        }
        deserializer.deserialize_any(Any)
    }
}
