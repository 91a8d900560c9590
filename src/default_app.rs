//! The app `chatworker run` serves out of the box, after the Chat developer
//! guide's examples: onboarding on ADDED_TO_SPACE, a card with the sender's
//! name and avatar for every message, `/help`, and silence on removal. Every
//! text comes from the `[app]` settings (`config/default.toml`).

use crate::app::{App, HandlerError};
use crate::config::AppSettings;
use crate::event::{AppCommandType, Event, EventKind, Message};
use crate::reply::{Card, Reply};
use google_apps_card_v1::model as card;

/// The default app.
#[derive(Clone, Debug)]
pub struct DefaultApp {
    settings: AppSettings,
}

impl DefaultApp {
    /// An app with these texts.
    pub fn new(settings: AppSettings) -> Self {
        Self { settings }
    }

    fn replies(&self, event: &Event) -> Vec<Reply> {
        match &event.kind {
            EventKind::AddedToSpace => {
                // The onboarding text goes to the space; when the app was
                // added by an @mention, that message is answered in its thread.
                let mut replies = vec![Reply::text(&self.settings.onboarding_text).in_new_thread()];
                if let Some(message) = &event.message {
                    replies.push(self.answer(event, message));
                }
                replies
            }
            EventKind::Message => match &event.message {
                Some(message) => vec![self.answer(event, message)],
                None => Vec::new(),
            },
            EventKind::AppCommand(command)
                if command.command_type == AppCommandType::SlashCommand
                    && command.id == Some(self.settings.help_command_id) =>
            {
                vec![Reply::text(&self.settings.help_text)]
            }
            EventKind::CardClicked(action) if action.name == HELPFUL_ACTION => {
                // The card updates in place: the app's own message, patched.
                match event.message.as_ref().and_then(|m| m.name.clone()) {
                    Some(name) => {
                        vec![Reply::card("reply", self.clicked_card(event)).updating(name)]
                    }
                    None => Vec::new(),
                }
            }
            EventKind::RemovedFromSpace => {
                tracing::info!(space = %event.space.name, "removed from space; no reply possible");
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// The help text for `/help`, a card for anything else.
    fn answer(&self, event: &Event, message: &Message) -> Reply {
        if self.is_help(message) {
            return Reply::text(&self.settings.help_text);
        }
        Reply::card("reply", self.card(event, message))
    }

    fn is_help(&self, message: &Message) -> bool {
        message.slash_command.as_ref().is_some_and(|c| {
            c.name.as_deref() == Some(self.settings.help_command_name.as_str())
                || c.id.as_deref() == Some(self.settings.help_command_id.to_string().as_str())
        })
    }

    fn card(&self, event: &Event, message: &Message) -> Card {
        let sender = event.sender();
        let name = sender
            .and_then(|u| u.display_name.as_deref())
            .unwrap_or("there");
        let said = quote(
            message
                .argument_text
                .as_deref()
                .unwrap_or(&message.text)
                .trim(),
            MAX_QUOTED_CHARS,
        );
        let name = &*quote(name, MAX_NAME_CHARS);
        let text = self
            .settings
            .card_text
            .replace("{name}", name)
            .replace("{text}", &said);
        let mut header = card::card::CardHeader::new()
            .set_title(name)
            .set_subtitle(self.settings.card_subtitle.clone());
        if let Some(avatar) = sender.and_then(|u| u.avatar_url.as_deref()) {
            header = header
                .set_image_url(avatar)
                .set_image_type(card::widget::ImageType::Circle)
                .set_image_alt_text(format!("Avatar of {name}"));
        }
        let button = card::Button::new()
            .set_text(self.settings.button_text.clone())
            .set_on_click(
                card::OnClick::new()
                    .set_open_link(card::OpenLink::new().set_url(self.settings.button_url.clone())),
            );
        let helpful = card::Button::new()
            .set_text(self.settings.action_button_text.clone())
            .set_on_click(
                card::OnClick::new().set_action(card::Action::new().set_function(HELPFUL_ACTION)),
            );
        Card::new()
            .set_header(header)
            .set_sections([card::card::Section::new().set_widgets([
                card::Widget::new().set_text_paragraph(card::TextParagraph::new().set_text(text)),
                card::Widget::new()
                    .set_button_list(card::ButtonList::new().set_buttons([button, helpful])),
            ])])
    }

    /// The card after its action button was clicked.
    fn clicked_card(&self, event: &Event) -> Card {
        let name = event
            .sender()
            .and_then(|u| u.display_name.as_deref())
            .unwrap_or("Someone");
        let text = self
            .settings
            .clicked_text
            .replace("{name}", &quote(name, MAX_NAME_CHARS));
        Card::new()
            .set_header(
                card::card::CardHeader::new()
                    .set_title(self.settings.card_subtitle.clone())
                    .set_subtitle("updated"),
            )
            .set_sections([card::card::Section::new().set_widgets([card::Widget::new()
                .set_decorated_text(
                    card::DecoratedText::new()
                        .set_top_label("Feedback")
                        .set_text(text),
                )])])
    }
}

/// The function of the card's action button.
const HELPFUL_ACTION: &str = "helpful";

/// How much of the user's text the card quotes: a card holds at most 32 KB,
/// and a message may carry 32,000 bytes of text.
const MAX_QUOTED_CHARS: usize = 2000;
/// How much of a display name the card shows.
const MAX_NAME_CHARS: usize = 200;

/// `text`, cut to `max` characters with an ellipsis when longer.
fn quote(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((end, _)) => format!("{}…", &text[..end]).into(),
    }
}

impl App for DefaultApp {
    async fn handle(
        &self,
        _ctx: &crate::context::Context<'_>,
        event: &Event,
    ) -> Result<Vec<Reply>, HandlerError> {
        Ok(self.replies(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_quoted_in_part() {
        assert_eq!(quote("short", 10), "short");
        assert_eq!(quote("ééééé", 3), "ééé…");
        assert_eq!(quote(&"x".repeat(9_000_000), MAX_QUOTED_CHARS).len(), 2003);
    }
    use crate::config::Settings;
    use crate::event::decode;
    use crate::reply::ReplyThread;

    fn app() -> DefaultApp {
        let env = [(
            "CHATWORKER_PUBSUB__SUBSCRIPTION".to_owned(),
            "projects/p/subscriptions/sub".to_owned(),
        )];
        DefaultApp::new(
            Settings::load_from(None, env)
                .expect("defaults are valid")
                .app,
        )
    }

    fn replies(fixture: &str) -> Vec<Reply> {
        let path = format!(
            "{}/tests/fixtures/events/{fixture}",
            env!("CARGO_MANIFEST_DIR")
        );
        let event = decode(&std::fs::read(path).expect("fixture")).expect("decodes");
        app().replies(&event)
    }

    #[test]
    fn message_gets_a_card_with_name_and_avatar() {
        let r = replies("classic/message.json");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].thread, ReplyThread::Event);
        let (_, card) = &r[0].cards[0];
        let header = card.header.as_ref().expect("header");
        assert_eq!(header.title, "Ada Lovelace");
        assert_eq!(header.image_url, "https://lh3.googleusercontent.com/a/ada");
        assert_eq!(header.image_type, card::widget::ImageType::Circle);
        let json = serde_json::to_string(card).expect("serializes");
        assert!(json.contains("You said: hello there"), "{json}");
        assert!(json.contains("openLink"), "{json}");
    }

    #[test]
    fn help_by_name_and_by_app_command() {
        for fixture in [
            "classic/slash_command.json",
            "classic/app_command.json",
            "addon/app_command.json",
        ] {
            let r = replies(fixture);
            assert_eq!(r.len(), 1, "{fixture}");
            assert!(
                r[0].text.as_deref().unwrap_or_default().contains("/help"),
                "{fixture}"
            );
        }
    }

    #[test]
    fn added_to_space_onboards_and_answers_the_mention() {
        let r = replies("classic/added_to_space.json");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].thread, ReplyThread::New);
        assert!(r[0].text.as_deref().unwrap_or_default().contains("/help"));
        let r = replies("classic/added_to_space_with_message.json");
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].thread, ReplyThread::Event);
        assert_eq!(r[1].cards.len(), 1);
    }

    #[test]
    fn removal_and_unknown_events_get_no_reply() {
        assert!(replies("classic/removed_from_space.json").is_empty());
        assert!(replies("classic/future_event_type.json").is_empty());
    }

    #[test]
    fn the_helpful_button_updates_the_clicked_card_in_place() {
        let path = format!(
            "{}/tests/fixtures/events/classic/card_clicked.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut event: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json");
        event["action"]["actionMethodName"] = "helpful".into();
        let event = decode(&serde_json::to_vec(&event).expect("json")).expect("decodes");
        let r = app().replies(&event);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].update.as_ref().map(|n| n.as_str()),
            Some("spaces/AAAAtest/messages/CARD1.CARD1")
        );
        let json = serde_json::to_string(&r[0].cards[0].1).expect("serializes");
        assert!(
            json.contains("Ada Lovelace marked this answer as helpful."),
            "{json}"
        );
        // Other actions are not ours: no reply.
        assert!(replies("classic/card_clicked.json").is_empty());
    }
}
