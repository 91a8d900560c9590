//! Ticket bot: slash commands, shared state, and card buttons that update
//! their card in place.
//!
//! `/ticket Printer on fire` opens a ticket and posts its card with "Take it"
//! and "Close" buttons; a click updates that same card (no new message).
//! `/close 1` closes ticket 1 from anywhere in the space, updating its card
//! through the client ID the card was posted with. `/tickets` (command ID 3)
//! lists the open ones. Buttons and handler share one typed action, so the
//! action's name and parameters cannot drift apart.
//!
//!     CHATWORKER_DEV=1 cargo run --example tickets     # then open http://127.0.0.1:8086/playground

use chatworker::card::{Button, CardBuilder, Section};
use chatworker::names::ClientMessageId;
use chatworker::{App, CardAction, Command, Context, HandlerError, Reply, ResultExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

struct Ticket {
    title: String,
    assignee: Option<String>,
    open: bool,
}

/// Tickets by number, and the message that opened each, so that a
/// redelivered `/ticket` finds its ticket instead of opening another.
#[derive(Default)]
struct Desk(Mutex<(BTreeMap<u32, Ticket>, HashMap<String, u32>)>);

fn desk(ctx: &Context<Desk>) -> MutexGuard<'_, (BTreeMap<u32, Ticket>, HashMap<String, u32>)> {
    ctx.state().0.lock().unwrap_or_else(|e| e.into_inner())
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

async fn open(ctx: Context<Desk>, command: Command) -> Result<Reply, HandlerError> {
    if command.text.is_empty() {
        return Ok(Reply::text("Usage: /ticket what is wrong"));
    }
    let opened_by = command.message.and_then(|m| m.name).map(|n| n.to_string());
    let mut desk = desk(&ctx);
    let next = desk.0.len() as u32 + 1;
    let n = *desk.1.entry(opened_by.unwrap_or_default()).or_insert(next);
    let ticket = desk.0.entry(n).or_insert_with(|| Ticket {
        title: command.text.clone(),
        assignee: None,
        open: true,
    });
    Ok(card(n, ticket)?.with_id(card_id(n)?))
}

/// Applies `change` to ticket `n` and returns its new card.
fn change(ctx: &Context<Desk>, n: u32, f: impl FnOnce(&mut Ticket)) -> Result<Reply, HandlerError> {
    let mut desk = desk(ctx);
    let missing = || HandlerError::permanent(format!("no ticket #{n}"));
    let ticket = desk.0.get_mut(&n).ok_or_else(missing)?;
    f(ticket);
    card(n, ticket)
}

/// A click on "Take it" or "Close": the clicked card is updated in place.
async fn clicked(ctx: Context<Desk>, act: Act) -> Result<Reply, HandlerError> {
    let who = ctx.event().sender().and_then(|u| u.display_name.clone());
    let card = change(&ctx, act.ticket, |t| match act.close {
        true => t.open = false,
        false => t.assignee = Some(who.unwrap_or_else(|| "someone".into())),
    })?;
    Ok(card.in_place())
}

async fn close(ctx: Context<Desk>, command: Command) -> Result<Reply, HandlerError> {
    let n: u32 = command.text.trim_start_matches('#').parse().permanent()?;
    let card = change(&ctx, n, |t| t.open = false)?;
    ctx.update(&ctx.message_name(None, &card_id(n)?), card)
        .await?;
    Ok(Reply::text(format!("Closed ticket #{n}.")))
}

async fn list(ctx: Context<Desk>, _command: Command) -> String {
    let desk = desk(&ctx);
    let open = desk.0.iter().filter(|(_, t)| t.open);
    let lines: Vec<String> = open.map(|(n, t)| format!("#{n} {}", t.title)).collect();
    match lines.is_empty() {
        true => "No open tickets.".into(),
        false => format!("Open tickets:\n{}", lines.join("\n")),
    }
}

#[tokio::main]
async fn main() -> Result<(), chatworker::RunError> {
    let app = App::with_state(Desk::default())
        .command("/ticket", open)
        .command("/close", close)
        .slash_command("/tickets", 3, list)
        .action(clicked)
        .on_error(|ctx: Context<Desk>, error: HandlerError| async move {
            // Tell the person (only them) what went wrong; transient errors are retried.
            if !error.is_transient() {
                ctx.send_privately(format!("That did not work: {error}"))
                    .await?;
            }
            Err::<(), _>(error)
        });
    chatworker::run(app).await
}
