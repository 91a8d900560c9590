//! The classic interaction event (`DeprecatedEvent` in the discovery document),
//! which Chat publishes for apps configured as plain Chat apps.

use super::wire::{ShapeError, WireInt, WireMessage, WireSpace, WireThread, WireUser, thread_name};
use super::{Action, AppCommand, AppCommandType, Event, EventFormat, EventKind};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClassicEvent {
    #[serde(rename = "type")]
    kind: String,
    event_time: Option<String>,
    space: Option<WireSpace>,
    user: Option<WireUser>,
    message: Option<WireMessage>,
    thread: Option<WireThread>,
    action: Option<FormAction>,
    common: Option<CommonEventObject>,
    app_command_metadata: Option<AppCommandMetadata>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FormAction {
    action_method_name: Option<String>,
    #[serde(default, deserialize_with = "super::wire::bounded_list")]
    parameters: Vec<ActionParameter>,
}

#[derive(Debug, Default, Deserialize)]
struct ActionParameter {
    key: Option<String>,
    value: Option<String>,
}

/// Also used by the add-on format, where it is `commonEventObject`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CommonEventObject {
    pub invoked_function: Option<String>,
    #[serde(default, deserialize_with = "super::wire::bounded_map")]
    pub parameters: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AppCommandMetadata {
    app_command_id: Option<WireInt>,
    app_command_type: Option<String>,
}

impl AppCommandMetadata {
    pub fn into_domain(self) -> AppCommand {
        let command_type = match self.app_command_type.as_deref() {
            Some("SLASH_COMMAND") => AppCommandType::SlashCommand,
            Some("QUICK_COMMAND") => AppCommandType::QuickCommand,
            Some("MESSAGE_ACTION") => AppCommandType::MessageAction,
            other => AppCommandType::Other(other.unwrap_or("").to_owned()),
        };
        AppCommand {
            id: self.app_command_id.and_then(|i| i.as_i64()),
            command_type,
        }
    }
}

impl CommonEventObject {
    pub fn into_action(self) -> Action {
        Action {
            name: self.invoked_function.unwrap_or_default(),
            parameters: self.parameters.into_iter().collect(),
        }
    }
}

impl ClassicEvent {
    pub fn into_domain(self) -> Result<Event, ShapeError> {
        let action = || -> Action {
            // `action` is the classic field; `common` repeats it in newer events.
            match self
                .action
                .as_ref()
                .and_then(|a| a.action_method_name.clone())
            {
                Some(name) => Action {
                    name,
                    parameters: self
                        .action
                        .as_ref()
                        .map(|a| {
                            a.parameters
                                .iter()
                                .filter_map(|p| {
                                    Some((p.key.clone()?, p.value.clone().unwrap_or_default()))
                                })
                                .collect::<BTreeMap<_, _>>()
                        })
                        .unwrap_or_default(),
                },
                None => Action::default(),
            }
        };
        let kind = match self.kind.as_str() {
            "MESSAGE" => EventKind::Message,
            "ADDED_TO_SPACE" => EventKind::AddedToSpace,
            "REMOVED_FROM_SPACE" => EventKind::RemovedFromSpace,
            "CARD_CLICKED" | "WIDGET_UPDATED" => {
                let mut a = action();
                if a.name.is_empty() {
                    a = self.common.unwrap_or_default().into_action();
                }
                if self.kind == "CARD_CLICKED" {
                    EventKind::CardClicked(a)
                } else {
                    EventKind::WidgetUpdated(a)
                }
            }
            "APP_COMMAND" => EventKind::AppCommand(
                self.app_command_metadata
                    .ok_or_else(|| ShapeError("appCommandMetadata is missing".into()))?
                    .into_domain(),
            ),
            other => EventKind::Unknown {
                type_name: other.chars().take(64).collect(),
            },
        };
        let space = self
            .space
            .ok_or_else(|| ShapeError("space is missing".into()))?
            .into_domain()?;
        let message = self.message.map(WireMessage::into_domain).transpose()?;
        let thread = match thread_name(self.thread.as_ref())? {
            Some(t) => Some(t),
            None => message.as_ref().and_then(|m| m.thread.clone()),
        };
        Ok(Event {
            kind,
            format: EventFormat::Classic,
            time: self.event_time,
            space,
            user: self.user.map(WireUser::into_domain).transpose()?,
            message,
            thread,
        })
    }
}
