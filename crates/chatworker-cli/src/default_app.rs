//! The app `chatworker run` serves out of the box, after the Chat developer
//! guide's examples, built with [`App`] like any other: onboarding on
//! ADDED_TO_SPACE, a card with the sender's name and avatar for every
//! message, `/help` (by name or by command ID), a "helpful" button that
//! updates its card in place, and silence on removal. Every text comes from
//! the `[app]` settings (`config/app.toml`, compiled in), which are the
//! app's state.

use chatworker::card::Button;
use chatworker::event::Event;
use chatworker::reply::Card;
use chatworker::{Added, App, CardAction, Command, Context, Message, Removed, Reply};
use google_apps_card_v1::model as card;
use serde::{Deserialize, Serialize};

/// The default app's settings' defaults: `config/app.toml`, compiled in.
pub const DEFAULTS: &str = include_str!("../../../config/app.toml");

/// The section the default app reads.
pub const SECTION: &str = "app";

/// The default app's texts and commands (`[app]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    /// Posted when the app is added to a space.
    pub onboarding_text: String,
    /// Posted for the help command.
    pub help_text: String,
    /// The help slash command's name, e.g. `/help`.
    pub help_command_name: String,
    /// The help command's ID in the Chat API console.
    pub help_command_id: i64,
    /// The reply card's subtitle.
    pub card_subtitle: String,
    /// The reply card's text; `{name}` and `{text}` are replaced.
    pub card_text: String,
    /// The reply card's button label.
    pub button_text: String,
    /// The URL the button opens.
    pub button_url: String,
    /// The label of the card's action button; a click updates the card.
    pub action_button_text: String,
    /// What the card says once the action button was clicked; `{name}` is
    /// the person who clicked.
    pub clicked_text: String,
}

/// The default app, its texts from `settings`.
pub fn app(settings: AppSettings) -> App<AppSettings> {
    let (name, id) = (settings.help_command_name.clone(), settings.help_command_id);
    App::with_state(settings)
        .added(added)
        .message(message)
        .slash_command(&name, id, help)
        .unknown_command(help)
        .action(helpful)
        .removed(removed)
}

async fn added(ctx: Context<AppSettings>, added: Added) -> Vec<Reply> {
    // The onboarding text goes to the space; when the app was added by an
    // @mention, that message is answered in its thread.
    let settings = ctx.state();
    let mut replies = vec![Reply::text(&settings.onboarding_text).in_new_thread()];
    if let Some(message) = &added.message {
        replies.push(answer(settings, ctx.event(), message));
    }
    replies
}

async fn message(ctx: Context<AppSettings>, message: Message) -> Reply {
    answer(ctx.state(), ctx.event(), &message)
}

/// `/help`, and any command this app does not know.
async fn help(ctx: Context<AppSettings>, _command: Command) -> Reply {
    Reply::text(&ctx.state().help_text)
}

/// The card's second button; it carries no parameters.
#[derive(Debug, Serialize, Deserialize)]
struct Helpful {}

impl CardAction for Helpful {
    const NAME: &'static str = "helpful";
}

/// The card updates in place: the app's own message, patched.
async fn helpful(ctx: Context<AppSettings>, _: Helpful) -> Reply {
    Reply::card("reply", clicked_card(ctx.state(), ctx.event())).in_place()
}

async fn removed(_ctx: Context<AppSettings>, removed: Removed) {
    tracing::info!(space = %removed.space.name, "removed from space; no reply possible");
}

/// A card quoting the message, with the sender's name and avatar.
fn answer(settings: &AppSettings, event: &Event, message: &Message) -> Reply {
    Reply::card("reply", answer_card(settings, event, message))
}

fn answer_card(settings: &AppSettings, event: &Event, message: &Message) -> Card {
    let sender = event.sender();
    let name = sender
        .and_then(|u| u.display_name.as_deref())
        .unwrap_or("there");
    let said = quote(message.argument(), MAX_QUOTED_CHARS);
    let name = &*quote(name, MAX_NAME_CHARS);
    // The card's text is read as Chat's HTML subset: what people wrote is
    // escaped, and put in place in one pass, so that a name that reads
    // "{text}" stays a name.
    let text = fill(
        &settings.card_text,
        &[("{name}", &escape(name)), ("{text}", &escape(&said))],
    );
    let mut header = card::card::CardHeader::new()
        .set_title(name)
        .set_subtitle(settings.card_subtitle.clone());
    if let Some(avatar) = sender.and_then(|u| u.avatar_url.as_deref()) {
        header = header
            .set_image_url(avatar)
            .set_image_type(card::widget::ImageType::Circle)
            .set_image_alt_text(format!("Avatar of {name}"));
    }
    let link = Button::link(settings.button_text.clone(), settings.button_url.clone());
    let no_parameters: [(&str, &str); 0] = [];
    let helpful = Button::action(
        settings.action_button_text.clone(),
        Helpful::NAME,
        no_parameters,
    );
    Card::new()
        .set_header(header)
        .set_sections([card::card::Section::new().set_widgets([
            card::Widget::new().set_text_paragraph(card::TextParagraph::new().set_text(text)),
            card::Widget::new().set_button_list(
                card::ButtonList::new().set_buttons([link.into_inner(), helpful.into_inner()]),
            ),
        ])])
}

/// The card after its action button was clicked.
fn clicked_card(settings: &AppSettings, event: &Event) -> Card {
    let name = event
        .sender()
        .and_then(|u| u.display_name.as_deref())
        .unwrap_or("Someone");
    let name = escape(&quote(name, MAX_NAME_CHARS));
    let text = fill(&settings.clicked_text, &[("{name}", &name)]);
    Card::new()
        .set_header(
            card::card::CardHeader::new()
                .set_title(settings.card_subtitle.clone())
                .set_subtitle("updated"),
        )
        .set_sections([card::card::Section::new().set_widgets([card::Widget::new()
            .set_decorated_text(
                card::DecoratedText::new()
                    .set_top_label("Feedback")
                    .set_text(text),
            )])])
}

/// `text` safe to place in a card widget that Chat reads as HTML
/// (`textParagraph`, `decoratedText`): markup characters become entities.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// `template` with each placeholder replaced by its value, in one pass over
/// the template: a value is never searched for placeholders itself.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    'scan: while !rest.is_empty() {
        for (placeholder, value) in values {
            if let Some(after) = rest.strip_prefix(placeholder) {
                out.push_str(value);
                rest = after;
                continue 'scan;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use chatworker::event::decode;
    use chatworker::reply::{ReplyThread, Update};
    use chatworker::testing::TestContext;

    #[test]
    fn what_people_write_is_escaped_and_placed_once() {
        assert_eq!(
            escape("<b>Ada</b> & \"co\""),
            "&lt;b&gt;Ada&lt;/b&gt; &amp; &quot;co&quot;"
        );
        assert_eq!(
            fill(
                "{name} said: {text} ({name})",
                &[("{name}", "{text}"), ("{text}", "hé {name}")]
            ),
            "{text} said: hé {name} ({text})"
        );
        let mut event = fixture("classic/message.json");
        event["message"]["sender"]["displayName"] =
            "<a href=\"https://evil.example\">{text}</a>".into();
        event["user"]["displayName"] = event["message"]["sender"]["displayName"].clone();
        event["message"]["argumentText"] = "<font color=\"#ff0000\">urgent</font>".into();
        let (replies, _) = handle(&event);
        // The paragraph is read as HTML; the header's title is plain text.
        let card = serde_json::to_value(&replies[0].cards[0].1).expect("serializes");
        let paragraph = card["sections"][0]["widgets"][0]["textParagraph"]["text"]
            .as_str()
            .expect("a paragraph");
        assert_eq!(
            paragraph,
            "You said: &lt;font color=&quot;#ff0000&quot;&gt;urgent&lt;/font&gt;"
        );
    }

    #[test]
    fn long_texts_are_quoted_in_part() {
        assert_eq!(quote("short", 10), "short");
        assert_eq!(quote("ééééé", 3), "ééé…");
        assert_eq!(quote(&"x".repeat(9_000_000), MAX_QUOTED_CHARS).len(), 2003);
    }

    fn settings() -> AppSettings {
        chatworker::Config::load_from(None, [])
            .expect("loads")
            .with_defaults(DEFAULTS)
            .section(SECTION)
            .expect("the defaults are valid")
    }

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!(
            "{}/../../tests/fixtures/events/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
    }

    /// The replies the app returns and the skip reason, if any.
    fn handle(event: &serde_json::Value) -> (Vec<Reply>, Option<&'static str>) {
        let event = decode(&serde_json::to_vec(event).expect("json")).expect("decodes");
        let test = TestContext::new(event);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let answer = runtime
            .block_on(test.run(&app(settings())))
            .expect("handled");
        (answer.replies().to_vec(), answer.skipped())
    }

    fn replies(name: &str) -> Vec<Reply> {
        handle(&fixture(name)).0
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
        assert!(json.contains(r#""function":"helpful""#), "{json}");
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
        assert_eq!(handle(&fixture("classic/removed_from_space.json")).0, []);
        let (r, skipped) = handle(&fixture("classic/future_event_type.json"));
        assert!(r.is_empty());
        assert_eq!(skipped, Some("unknown_type"));
    }

    #[test]
    fn messages_from_bots_are_skipped() {
        let mut event = fixture("classic/message.json");
        event["user"]["type"] = "BOT".into();
        event["message"]["sender"]["type"] = "BOT".into();
        assert_eq!(handle(&event), (Vec::new(), Some("bot_sender")));
    }

    #[test]
    fn the_helpful_button_updates_the_clicked_card_in_place() {
        let mut event = fixture("classic/card_clicked.json");
        event["action"]["actionMethodName"] = "helpful".into();
        let (r, _) = handle(&event);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].update, Some(Update::EventMessage));
        let json = serde_json::to_string(&r[0].cards[0].1).expect("serializes");
        assert!(
            json.contains("Ada Lovelace marked this answer as helpful."),
            "{json}"
        );
        // Other actions are not ours: no reply.
        assert!(replies("classic/card_clicked.json").is_empty());
    }
}
