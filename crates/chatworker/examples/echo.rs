//! Echo bot with a card: the smallest complete chatworker app.
//!
//! Shows an `App` with a message handler that answers every message in its
//! thread with a card (the sender's avatar in the header, their text) and a
//! link button under it, a greeting when the app is added to a space, `/help`
//! by name, a fallback for everything else, and the logging middleware.
//!
//! Try it locally (Pub/Sub emulator + Chat simulator, no Google account):
//!
//!     CHATWORKER_DEV=1 cargo run --example echo     # then open http://127.0.0.1:8086/playground
//!
//! In production, run it without `CHATWORKER_DEV` and with CHATWORKER_PUBSUB__SUBSCRIPTION
//! set, like `chatworker run` (see docs/deployment.md).

use chatworker::card::{Button, CardBuilder, Section};
use chatworker::middleware::Logging;
use chatworker::{Added, App, Command, Context, Event, HandlerError, Message, Reply};

/// Every message gets a card quoting it, in the message's thread.
async fn echo(ctx: Context, message: Message) -> Result<Reply, HandlerError> {
    let sender = ctx.event().sender();
    let name = sender
        .and_then(|u| u.display_name.as_deref())
        .unwrap_or("there");
    // The text without the app's @mention, when the message mentioned it.
    let said = message.argument();
    let mut card = CardBuilder::new().header(format!("Hello, {name}"), "echo bot");
    if let Some(avatar) = sender.and_then(|u| u.avatar_url.as_deref()) {
        card = card.header_image(avatar, format!("Avatar of {name}"), true);
    }
    let card = card
        .section(Section::titled("You said").text(said))
        // Refused here, before sending, if the quote made it over 32 KB.
        .build()?;
    // A button under the message itself (an accessory widget).
    let docs = Button::link(
        "How this works",
        "https://developers.google.com/workspace/chat",
    );
    Ok(Reply::card("echo", card).with_buttons([docs]))
}

/// The first message in a new space: a thread of its own.
async fn added(_ctx: Context, added: Added) -> Vec<Reply> {
    let mut replies = vec![
        Reply::text("Thanks for adding me! I repeat what you say. Try /help.").in_new_thread(),
    ];
    // Added by an @mention: that message deserves its echo too.
    if let Some(message) = added.message {
        replies.push(Reply::text(format!("You said: {}", message.text)));
    }
    replies
}

async fn help(_ctx: Context, _command: Command) -> &'static str {
    "I answer every message with a card that repeats it. Mention me in a space, or message me directly."
}

/// Commands this bot does not know, card clicks, new event types.
async fn anything_else(_ctx: Context, event: Event) -> Option<Reply> {
    tracing::info!(kind = event.kind.label(), "not an echo");
    None
}

#[tokio::main]
async fn main() -> Result<(), chatworker::RunError> {
    let app = App::new()
        .layer(Logging)
        .message(echo)
        .added(added)
        .command("/help", help)
        .fallback(anything_else);
    chatworker::run(app).await
}
