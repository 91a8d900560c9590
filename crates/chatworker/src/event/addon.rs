//! The Google Workspace add-on event object, which Chat publishes for apps built
//! as Workspace add-ons: `commonEventObject` plus `chat` with one `*Payload`.

use super::classic::{AppCommandMetadata, CommonEventObject};
use super::wire::{ShapeError, WireMessage, WireSpace, WireThread, WireUser, thread_name};
use super::{Event, EventFormat, EventKind};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AddOnEvent {
    common_event_object: Option<CommonEventObject>,
    chat: ChatEvent,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// Any other field: a payload kind this version does not know is recognised
    /// by its `…Payload` name.
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
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
                .other
                .keys()
                .find(|k| k.ends_with("Payload"))
                .ok_or_else(|| ShapeError("chat holds no event payload".into()))?
                .chars()
                .take(64)
                .collect();
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
