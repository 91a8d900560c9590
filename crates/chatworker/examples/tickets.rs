//! Ticket bot: slash commands, state in the store, and card buttons that
//! update their card in place.
//!
//! `/ticket Printer on fire` opens a ticket and posts its card with "Take it"
//! and "Close" buttons; a click updates that same card (no new message).
//! `/close 1` closes ticket 1 from anywhere in the space, updating its card
//! through the client ID the card was posted with. `/tickets` (command ID 3)
//! lists the open ones. Buttons and handler share one typed action, so the
//! action's name and parameters cannot drift apart.
//!
//! The tickets are the space's state in the store (SQLite in `tickets.db`
//! unless `store.url` says otherwise), so they survive restarts and the
//! numbers go on from where they were. Each event's changes are committed
//! with its card, once: a redelivered `/ticket` opens nothing twice.
//!
//!     CHATWORKER_DEV=1 cargo run --example tickets     # then open http://127.0.0.1:8086/playground

use chatworker::card::{Button, CardBuilder, Section};
use chatworker::names::ClientMessageId;
use chatworker::{App, CardAction, Command, Context, HandlerError, Reply, ResultExt, Scope};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize)]
struct Ticket {
    title: String,
    assignee: Option<String>,
    open: bool,
}

/// A space's tickets, by number (from 1, consecutive).
type Desk = BTreeMap<u32, Ticket>;

/// The space's tickets, as stored.
async fn desk(ctx: &Context) -> Result<chatworker::Stored<Desk>, HandlerError> {
    Ok(ctx.load::<Desk>(Scope::Space, "tickets").await?)
}

/// A button on a ticket's card: its parameters travel with the click.
#[derive(Serialize, Deserialize)]
struct Act {
    ticket: u32,
    close: bool,
}

impl CardAction for Act {
    const NAME: &'static str = "ticket";
}

impl Act {
    fn new(ticket: u32, close: bool) -> Self {
        Self { ticket, close }
    }
}

/// Ticket `n`'s card, with buttons while it is open.
fn card(n: u32, t: &Ticket) -> Result<Reply, HandlerError> {
    let status = match (&t.assignee, t.open) {
        (_, false) => "Closed".to_owned(),
        (Some(who), true) => format!("Taken by {who}"),
        (None, true) => "Open".to_owned(),
    };
    let mut section = Section::new().decorated("Status", status);
    if t.open {
        let (take, close) = (Act::new(n, false), Act::new(n, true));
        section = section.buttons([
            Button::for_action("Take it", &take)?,
            Button::for_action("Close", &close)?,
        ]);
    }
    let card = CardBuilder::new()
        .header(format!("Ticket #{n}"), &t.title)
        .section(section)
        .build()?;
    Ok(Reply::card("ticket", card))
}

/// The ID ticket `n`'s card is posted with, so any later event can update it.
fn card_id(n: u32) -> Result<ClientMessageId, HandlerError> {
    Ok(ClientMessageId::new(&format!("client-ticket-{n}"))?)
}

async fn open(ctx: Context, command: Command) -> Result<Reply, HandlerError> {
    if command.text.is_empty() {
        return Ok(Reply::text("Usage: /ticket what is wrong"));
    }
    let mut desk = desk(&ctx).await?;
    let mut tickets = desk.take().unwrap_or_default();
    let n = tickets.keys().next_back().map_or(1, |last| last + 1);
    let ticket = Ticket {
        title: command.text.clone(),
        assignee: None,
        open: true,
    };
    let reply = card(n, &ticket)?.with_id(card_id(n)?);
    tickets.insert(n, ticket);
    desk.set(tickets)?;
    Ok(reply)
}

/// Applies `f` to ticket `n` and returns its new card.
async fn change(ctx: &Context, n: u32, f: impl FnOnce(&mut Ticket)) -> Result<Reply, HandlerError> {
    let mut desk = desk(ctx).await?;
    let mut tickets = desk.take().unwrap_or_default();
    let ticket = tickets
        .get_mut(&n)
        .ok_or_else(|| HandlerError::permanent(format!("no ticket #{n}")))?;
    f(ticket);
    let reply = card(n, ticket)?;
    desk.set(tickets)?;
    Ok(reply)
}

/// A click on "Take it" or "Close": the clicked card is updated in place.
async fn clicked(ctx: Context, act: Act) -> Result<Reply, HandlerError> {
    let who = ctx.event().sender().and_then(|u| u.display_name.clone());
    let card = change(&ctx, act.ticket, |t| match act.close {
        true => t.open = false,
        false => t.assignee = Some(who.unwrap_or_else(|| "someone".into())),
    })
    .await?;
    Ok(card.in_place())
}

async fn close(ctx: Context, command: Command) -> Result<Reply, HandlerError> {
    let n: u32 = command.text.trim_start_matches('#').parse().permanent()?;
    let card = change(&ctx, n, |t| t.open = false).await?;
    ctx.update(&ctx.message_name(None, &card_id(n)?), card)
        .await?;
    Ok(Reply::text(format!("Closed ticket #{n}.")))
}

async fn list(ctx: Context, _command: Command) -> Result<String, HandlerError> {
    let desk = desk(&ctx).await?;
    let lines: Vec<String> = desk
        .get()
        .into_iter()
        .flatten()
        .filter(|(_, t)| t.open)
        .map(|(n, t)| format!("#{n} {}", t.title))
        .collect();
    Ok(match lines.is_empty() {
        true => "No open tickets.".into(),
        false => format!("Open tickets:\n{}", lines.join("\n")),
    })
}

#[tokio::main]
async fn main() -> Result<(), chatworker::RunError> {
    let app = App::new()
        .command("/ticket", open)
        .command("/close", close)
        .slash_command("/tickets", 3, list)
        .action(clicked)
        .on_error(|ctx: Context, error: HandlerError| async move {
            // Tell the person (only them) what went wrong; transient errors are retried.
            if !error.is_transient() {
                ctx.send_privately(format!("That did not work: {error}"))
                    .await?;
            }
            Err::<(), _>(error)
        });
    // Tickets outlive the process: SQLite next to it unless store.url says.
    let config =
        chatworker::Config::load(None)?.with_defaults("[store]\nurl = \"sqlite://tickets.db\"\n");
    chatworker::run_with(config, app).await
}
