//! Our messages in the Chat API's terms: the URLs (and the create's query)
//! of `spaces.messages.create`, `patch` and `delete`, and the
//! `google-chat-v1` bodies of a create or an update.

use crate::reply::compose::{Content, NewMessage, Threading};
use crate::reply::{Card, Markup, Notify};
use google_chat_v1::model;

/// `{endpoint}/v1/spaces/S/messages/M` (update, delete), from encoded
/// segments as in [`create_url`].
pub(super) fn message_url(
    endpoint: &reqwest::Url,
    name: &crate::names::MessageName,
) -> reqwest::Url {
    let mut url = endpoint.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().push("v1").extend(name.segments());
    }
    url
}

/// `…/v1/{space}/messages` and its query, with enums by name as the API
/// reference writes them. The path is built from segments, each encoded, so
/// that no part of a name can add a segment or climb out of its place (the
/// names are checked when parsed, too).
pub(super) fn create_url(endpoint: &reqwest::Url, message: &NewMessage) -> reqwest::Url {
    let mut url = endpoint.clone();
    // An http(s) endpoint (checked when the settings were read) always has
    // path segments.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty()
            .push("v1")
            .extend(message.space.segments())
            .push("messages");
    }
    {
        let mut query = url.query_pairs_mut();
        if let Some(id) = &message.id {
            query.append_pair("messageId", id.as_str());
        }
        if let Some(request) = &message.request_id {
            query.append_pair("requestId", request);
        }
        if !matches!(message.thread, Threading::New) {
            query.append_pair("messageReplyOption", "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD");
        }
        let notification = match message.notify {
            Notify::Default => None,
            Notify::Silent => Some("NOTIFICATION_TYPE_SILENT"),
            Notify::Force => Some("NOTIFICATION_TYPE_FORCE_NOTIFY"),
        };
        if let Some(kind) = notification {
            query.append_pair("createMessageNotificationOptions.notificationType", kind);
        }
        // The body's enums are numbers, as the typed client writes them.
        query.append_pair("$alt", "json;enum-encoding=int");
    }
    url
}

/// The body of `spaces.messages.create`.
pub(super) fn create_body(message: &NewMessage) -> model::Message {
    let mut body = model::Message::new().set_markup_syntax(markup_syntax(message.markup));
    if let Some(text) = &message.text {
        body = body.set_text(text.clone());
    }
    if !message.cards.is_empty() {
        body = body.set_cards_v2(cards_v2(&message.cards));
    }
    if !message.accessory_buttons.is_empty() {
        body = body.set_accessory_widgets(accessory_widgets(&message.accessory_buttons));
    }
    if let Some(user) = &message.private_to {
        body = body.set_private_message_viewer(model::User::new().set_name(user.as_str()));
    }
    match &message.thread {
        Threading::Reply(thread) => body.set_thread(model::Thread::new().set_name(thread.as_str())),
        Threading::Key(key) => body.set_thread(model::Thread::new().set_thread_key(key.clone())),
        Threading::New => body,
    }
}

/// The body of `spaces.messages.patch` for the app's message `name`:
/// text, cards and accessory widgets, with the markup syntax set on the
/// message as the API asks.
pub(super) fn update_body(name: &str, content: &Content) -> model::Message {
    let mut body = model::Message::new()
        .set_name(name)
        .set_markup_syntax(markup_syntax(content.markup));
    if let Some(text) = &content.text {
        body = body.set_text(text.clone());
    }
    body.set_cards_v2(cards_v2(&content.cards))
        .set_accessory_widgets(accessory_widgets(&content.accessory_buttons))
}

fn markup_syntax(markup: Markup) -> model::MarkupSyntax {
    match markup {
        Markup::Chat => model::MarkupSyntax::Chat,
        Markup::Markdown => model::MarkupSyntax::Markdown,
    }
}

fn cards_v2(cards: &[(String, Card)]) -> impl Iterator<Item = model::CardWithId> + '_ {
    cards.iter().map(|(id, card)| {
        model::CardWithId::new()
            .set_card_id(id.clone())
            .set_card(card.clone())
    })
}

fn accessory_widgets(
    buttons: &[google_apps_card_v1::model::Button],
) -> Option<model::AccessoryWidget> {
    (!buttons.is_empty()).then(|| {
        model::AccessoryWidget::new().set_button_list(
            google_apps_card_v1::model::ButtonList::new().set_buttons(buttons.iter().cloned()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{ClientMessageId, SpaceName};

    #[test]
    fn create_asks_for_the_thread_the_id_and_the_notification() {
        let endpoint = reqwest::Url::parse("https://proxy.example/chat/").expect("url");
        let message = NewMessage {
            space: SpaceName::parse("spaces/AAA").expect("space"),
            id: Some(ClientMessageId::new("client-1").expect("id")),
            request_id: None,
            text: Some("hi".into()),
            cards: Vec::new(),
            thread: Threading::Key("k".into()),
            accessory_buttons: Vec::new(),
            private_to: None,
            notify: Notify::Force,
            markup: Markup::Chat,
        };
        let url = create_url(&endpoint, &message);
        assert_eq!(url.path(), "/chat/v1/spaces/AAA/messages");
        let bare = reqwest::Url::parse("https://chat.example").expect("url");
        assert_eq!(
            create_url(&bare, &message).path(),
            "/v1/spaces/AAA/messages"
        );
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let pairs = [
            ("messageId", "client-1"),
            ("messageReplyOption", "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"),
            (
                "createMessageNotificationOptions.notificationType",
                "NOTIFICATION_TYPE_FORCE_NOTIFY",
            ),
            ("$alt", "json;enum-encoding=int"),
        ];
        let expected: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(query, expected);
        assert_eq!(
            create_body(&message).thread.map(|t| t.thread_key),
            Some("k".to_owned())
        );

        // A new thread: no reply option, and Chat picks the ID when none is given.
        let fresh = NewMessage {
            id: None,
            thread: Threading::New,
            notify: Notify::Default,
            ..message
        };
        let url = create_url(&endpoint, &fresh);
        assert_eq!(url.query(), Some("%24alt=json%3Benum-encoding%3Dint"));
        assert!(create_body(&fresh).thread.is_none());
    }
}
