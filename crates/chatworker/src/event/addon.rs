//! The Google Workspace add-on event object, which Chat publishes for apps built
//! as Workspace add-ons: `commonEventObject` plus `chat` with one `*Payload`.

use super::classic::{AppCommandMetadata, CommonEventObject};
use super::wire::{ShapeError, Skip, WireMessage, WireSpace, WireThread, WireUser, thread_name};
use super::{Event, EventFormat, EventKind};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AddOnEvent {
    common_event_object: Option<CommonEventObject>,
    chat: ChatEvent,
}

#[derive(Debug, Default)]
struct ChatEvent {
    user: Option<WireUser>,
    space: Option<WireSpace>,
    event_time: Option<String>,
    message_payload: Option<Payload>,
    added_to_space_payload: Option<Payload>,
    removed_from_space_payload: Option<Payload>,
    button_clicked_payload: Option<Payload>,
    widget_updated_payload: Option<Payload>,
    app_command_payload: Option<Payload>,
    /// The first other `…Payload` field: a payload kind this version does
    /// not know, recognised by its name (its value is skipped, not kept).
    unknown_payload: Option<String>,
}

/// Read field by field: the fields this version knows into their types,
/// any other one skipped as it is read. (`#[serde(flatten)]` into a map
/// would buffer every field, and keep whatever unknown ones carry.)
impl<'de> Deserialize<'de> for ChatEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = ChatEvent;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the add-on event's chat object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<ChatEvent, M::Error> {
                let mut event = ChatEvent::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "user" => event.user = map.next_value()?,
                        "space" => event.space = map.next_value()?,
                        "eventTime" => event.event_time = map.next_value()?,
                        "messagePayload" => event.message_payload = map.next_value()?,
                        "addedToSpacePayload" => event.added_to_space_payload = map.next_value()?,
                        "removedFromSpacePayload" => {
                            event.removed_from_space_payload = map.next_value()?
                        }
                        "buttonClickedPayload" => {
                            event.button_clicked_payload = map.next_value()?
                        }
                        "widgetUpdatedPayload" => {
                            event.widget_updated_payload = map.next_value()?
                        }
                        "appCommandPayload" => event.app_command_payload = map.next_value()?,
                        other => {
                            if event.unknown_payload.is_none() && other.ends_with("Payload") {
                                event.unknown_payload = Some(other.chars().take(64).collect());
                            }
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(event)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// The union of the payloads' fields; each payload uses a subset.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    space: Option<WireSpace>,
    message: Option<WireMessage>,
    thread: Option<WireThread>,
    app_command_metadata: Option<AppCommandMetadata>,
}

impl AddOnEvent {
    pub fn into_domain(self) -> Result<Event, ShapeError> {
        let chat = self.chat;
        let common = self.common_event_object.unwrap_or_default();
        let (kind, payload) = if let Some(p) = chat.message_payload {
            (EventKind::Message, p)
        } else if let Some(p) = chat.added_to_space_payload {
            (EventKind::AddedToSpace, p)
        } else if let Some(p) = chat.removed_from_space_payload {
            (EventKind::RemovedFromSpace, p)
        } else if let Some(p) = chat.button_clicked_payload {
            (EventKind::CardClicked(common.into_action()), p)
        } else if let Some(p) = chat.widget_updated_payload {
            (EventKind::WidgetUpdated(common.into_action()), p)
        } else if let Some(mut p) = chat.app_command_payload {
            let metadata = p.app_command_metadata.take().ok_or_else(|| {
                ShapeError("appCommandPayload.appCommandMetadata is missing".into())
            })?;
            (EventKind::AppCommand(metadata.into_domain()), p)
        } else {
            let type_name = chat
                .unknown_payload
                .ok_or_else(|| ShapeError("chat holds no event payload".into()))?;
            (EventKind::Unknown { type_name }, Payload::default())
        };
        let space = payload
            .space
            .or(chat.space)
            .ok_or_else(|| ShapeError("chat.space is missing".into()))?
            .into_domain()?;
        let message = payload.message.map(WireMessage::into_domain).transpose()?;
        let thread = match thread_name(payload.thread.as_ref())? {
            Some(t) => Some(t),
            None => message.as_ref().and_then(|m| m.thread.clone()),
        };
        Ok(Event {
            kind,
            format: EventFormat::AddOn,
            time: chat.event_time,
            space,
            user: chat.user.map(WireUser::into_domain).transpose()?,
            message,
            thread,
        })
    }
}
