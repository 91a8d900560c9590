//! Notes bot: state per person, with a time-to-live.
//!
//! `/note buy milk` keeps a note for the person who typed it, for an hour
//! (`NOTE_TTL_SECS` to change it); `/notes` shows their notes still alive,
//! to them only. Each person's notes are theirs (`Scope::User`): nobody
//! else's command reads or changes them, and after the hour they are gone
//! (housekeeping removes them from the store).
//!
//!     CHATWORKER_DEV=1 cargo run --example notes     # then open http://127.0.0.1:8086/playground

use chatworker::{App, Command, Context, HandlerError, Reply, Scope};
use std::time::Duration;

/// How long a person's notes live after their last `/note`.
fn ttl() -> Duration {
    let secs = std::env::var("NOTE_TTL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    Duration::from_secs(secs)
}

async fn note(ctx: Context, command: Command) -> Result<Reply, HandlerError> {
    if command.text.is_empty() {
        return Ok(Reply::text("Usage: /note what to remember"));
    }
    let mut notes = ctx.load::<Vec<String>>(Scope::User, "notes").await?;
    let mut list = notes.take().unwrap_or_default();
    list.push(command.text.clone());
    let count = list.len();
    // Every note extends the list's life: it expires an hour after the last.
    notes.set_for(list, ttl())?;
    Ok(Reply::text(format!("Noted ({count} kept for you).")))
}

async fn notes(ctx: Context, _command: Command) -> Result<(), HandlerError> {
    let notes = ctx.load::<Vec<String>>(Scope::User, "notes").await?;
    let text = match notes.get() {
        Some(list) if !list.is_empty() => {
            let lines: Vec<String> = list.iter().map(|n| format!("• {n}")).collect();
            format!("Your notes:\n{}", lines.join("\n"))
        }
        _ => "You have no notes (they last an hour).".to_owned(),
    };
    ctx.send_privately(text).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), chatworker::RunError> {
    let app = App::new().command("/note", note).command("/notes", notes);
    let config =
        chatworker::Config::load(None)?.with_defaults("[store]\nurl = \"sqlite://notes.db\"\n");
    chatworker::run_with(config, app).await
}
