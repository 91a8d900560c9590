//! The domain event: what handlers see, whichever format Chat published.
//!
//! Chat publishes two JSON formats to Pub/Sub (the classic interaction event and
//! the Google Workspace add-on event object). [`decode`] turns either into one
//! [`Event`]; nothing outside this module knows the wire JSON.

mod addon;
mod classic;
mod decode;
mod wire;

pub use decode::{DecodeError, decode};

use crate::names::{MessageName, SpaceName, ThreadName, UserName};
use std::collections::BTreeMap;

/// One interaction with the app: a message, the app added to a space, a click…
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Which JSON format Chat published it in.
    pub format: EventFormat,
    /// When it happened, as Chat wrote it (RFC 3339), if it said.
    pub time: Option<String>,
    /// The space it happened in.
    pub space: Space,
    /// The person (or app) who caused it.
    pub user: Option<User>,
    /// The message it concerns: the one sent, or the card message clicked.
    pub message: Option<Message>,
    /// The thread it happened in, if any.
    pub thread: Option<ThreadName>,
}

/// The kinds of interaction. New kinds that Chat adds arrive as
/// [`EventKind::Unknown`]: they are logged and counted, never a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A person sent the app a message (including slash commands typed as text).
    Message,
    /// The app was added to a space. `message` is set when it was added by an @mention.
    AddedToSpace,
    /// The app was removed from a space. The app can no longer post there.
    RemovedFromSpace,
    /// A person clicked a button on one of the app's cards.
    CardClicked(Action),
    /// A person changed a widget (for example typed into an autocomplete field).
    WidgetUpdated(Action),
    /// A slash command, quick command or message action (the `APP_COMMAND` event).
    AppCommand(AppCommand),
    /// An event type this version does not know; `type_name` is what Chat sent.
    Unknown {
        /// The `type` (classic) or payload field name (add-on) Chat sent.
        type_name: String,
    },
}

impl EventKind {
    /// Every label [`EventKind::label`] gives.
    pub(crate) const LABELS: [&'static str; 7] = [
        "MESSAGE",
        "ADDED_TO_SPACE",
        "REMOVED_FROM_SPACE",
        "CARD_CLICKED",
        "WIDGET_UPDATED",
        "APP_COMMAND",
        "UNKNOWN",
    ];

    /// A short, stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Message => "MESSAGE",
            Self::AddedToSpace => "ADDED_TO_SPACE",
            Self::RemovedFromSpace => "REMOVED_FROM_SPACE",
            Self::CardClicked(_) => "CARD_CLICKED",
            Self::WidgetUpdated(_) => "WIDGET_UPDATED",
            Self::AppCommand(_) => "APP_COMMAND",
            Self::Unknown { .. } => "UNKNOWN",
        }
    }
}

/// The format an event arrived in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFormat {
    /// The classic interaction event (`DeprecatedEvent` in the discovery document).
    Classic,
    /// The Google Workspace add-on event object (`chat.*Payload`).
    AddOn,
}

/// A card action: the function name the button named and its parameters.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Action {
    /// `actionMethodName` (classic) or `invokedFunction` (add-on).
    pub name: String,
    /// The action's parameters, by key.
    pub parameters: BTreeMap<String, String>,
}

/// An `APP_COMMAND` event's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCommand {
    /// The command ID configured in the Chat API console.
    pub id: Option<i64>,
    /// Slash command, quick command or message action.
    pub command_type: AppCommandType,
}

/// What kind of app command was used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppCommandType {
    /// `/command` typed in the compose box.
    SlashCommand,
    /// Picked from the compose box's quick command menu.
    QuickCommand,
    /// Picked from a message's action menu.
    MessageAction,
    /// A type this version does not know.
    Other(String),
}

/// A space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Space {
    /// `spaces/{space}`.
    pub name: SpaceName,
    /// The space's display name, empty for direct messages.
    pub display_name: Option<String>,
    /// Named space, group chat or direct message.
    pub kind: SpaceKind,
}

/// The kind of space.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpaceKind {
    /// A named space.
    Space,
    /// A group conversation without a name.
    GroupChat,
    /// A direct message between a person and the app (or two people).
    DirectMessage,
    /// Chat did not say, or said something this version does not know.
    Unspecified,
}

/// A person or an app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// `users/{user}`, when Chat gave one.
    pub name: Option<UserName>,
    /// The name to show.
    pub display_name: Option<String>,
    /// The avatar's URL.
    pub avatar_url: Option<String>,
    /// The email address, when Chat shares it.
    pub email: Option<String>,
    /// Human or bot.
    pub kind: UserKind,
}

/// Whether a user is a person or an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserKind {
    /// A person.
    Human,
    /// A Chat app. Messages from apps are not answered (see the worker).
    Bot,
    /// Chat did not say.
    Unspecified,
}

/// A message in a space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `spaces/{space}/messages/{message}`.
    pub name: Option<MessageName>,
    /// The plain text, with @mentions as written.
    pub text: String,
    /// The text without the app's @mention or the slash command.
    pub argument_text: Option<String>,
    /// Who sent it.
    pub sender: Option<User>,
    /// The thread it is in.
    pub thread: Option<ThreadName>,
    /// The slash command it invokes, if any.
    pub slash_command: Option<SlashCommand>,
}

/// A slash command invoked by a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlashCommand {
    /// The command ID configured in the Chat API console.
    pub id: Option<String>,
    /// The command as typed, for example `/help`.
    pub name: Option<String>,
}

impl Message {
    /// What the person wrote to the app: the text without the app's
    /// @mention (Chat's `argumentText`), else the whole text; trimmed.
    pub fn argument(&self) -> &str {
        self.argument_text.as_deref().unwrap_or(&self.text).trim()
    }
}

impl Event {
    /// Who caused the event: the event's user, else the message's sender.
    /// (For a card click, the message is the app's own card; the person who
    /// clicked is the event's user.)
    pub fn sender(&self) -> Option<&User> {
        self.user
            .as_ref()
            .or_else(|| self.message.as_ref().and_then(|m| m.sender.as_ref()))
    }

    /// A stable identity for this interaction, the same for every delivery
    /// and for either format: it is what reply IDs are derived from, so a
    /// duplicate publish of one event cannot produce a second visible reply.
    ///
    /// `None` when two different events could not be told apart: a message
    /// event with neither a time nor a message name, or any other event
    /// without a time (two identical clicks on one card differ only by it).
    /// The caller then falls back to the Pub/Sub message ID.
    pub fn identity(&self) -> Option<String> {
        let message = self.message.as_ref().and_then(|m| m.name.as_ref());
        // A message event names a message of its own; any other event (a
        // click on a card, say, which names the card's message) is told
        // apart from the next one like it only by its time.
        let own_message = matches!(self.kind, EventKind::Message) && message.is_some();
        if self.time.is_none() && !own_message {
            return None;
        }
        let time = self.time.as_deref().map(normalize_time);
        let action = match &self.kind {
            EventKind::CardClicked(a) | EventKind::WidgetUpdated(a) => a.name.as_str(),
            _ => "",
        };
        let user = self.user.as_ref().and_then(|u| u.name.as_ref());
        Some(format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.kind.label(),
            self.space.name,
            message.map(MessageName::as_str).unwrap_or(""),
            time.as_deref().unwrap_or(""),
            user.map(UserName::as_str).unwrap_or(""),
            action,
        ))
    }
}

/// An RFC 3339 time in one canonical form (UTC, `Z`, as many fractional
/// digits as it needs), so that the two event formats, which may write the
/// same instant differently, give one identity; a time that does not parse
/// is kept as written.
fn normalize_time(time: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(time.trim()) {
        Ok(at) => at
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        Err(_) => time.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_compared_as_instants() {
        let canonical = "2026-01-02T03:04:05.678Z";
        for same in [
            "2026-01-02T03:04:05.678Z",
            "2026-01-02T03:04:05.678000Z",
            "2026-01-02T03:04:05.678000000Z",
            "2026-01-02T04:04:05.678+01:00",
        ] {
            assert_eq!(normalize_time(same), canonical, "{same}");
        }
        assert_eq!(normalize_time("yesterday"), "yesterday");
    }

    #[test]
    fn every_label_is_listed() {
        let kinds = [
            EventKind::Message,
            EventKind::AddedToSpace,
            EventKind::RemovedFromSpace,
            EventKind::CardClicked(Action::default()),
            EventKind::WidgetUpdated(Action::default()),
            EventKind::AppCommand(AppCommand {
                id: None,
                command_type: AppCommandType::SlashCommand,
            }),
            EventKind::Unknown {
                type_name: "NEW".into(),
            },
        ];
        let labels: Vec<&str> = kinds.iter().map(EventKind::label).collect();
        assert_eq!(labels, EventKind::LABELS);
    }
}
