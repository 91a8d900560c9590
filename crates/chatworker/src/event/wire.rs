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
    #[serde(default, deserialize_with = "null_as_empty")]
    pub annotations: Vec<WireAnnotation>,
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
        let annotation = self
            .annotations
            .into_iter()
            .find(|a| a.kind.as_deref() == Some("SLASH_COMMAND"))
            .and_then(|a| a.slash_command);
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

/// proto3 JSON: `null` stands for the default, an empty list.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Option::<Vec<T>>::deserialize(deserializer).map(Option::unwrap_or_default)
}
