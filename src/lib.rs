//! # chatworker
//!
//! A runtime for Google Chat apps that live behind a firewall. Chat publishes
//! interaction events to a Cloud Pub/Sub topic; chatworker pulls them from a
//! subscription, hands each to your handler, sends the replies through the
//! Chat API with app authentication, and acks the event only once its
//! replies are out. Every message gets an ID derived from the event, so a
//! redelivered or duplicated event never produces a second message; writes
//! stay within Chat's quotas; events of one thread are handled in order.
//!
//! ## Quickstart
//!
//! ```no_run
//! use chatworker::{Added, App, Command, Context, HandlerError, Message, Reply};
//!
//! async fn echo(_ctx: Context, message: Message) -> Reply {
//!     Reply::text(format!("You said: {}", message.text))
//! }
//!
//! async fn slow(ctx: Context, command: Command) -> Result<(), HandlerError> {
//!     // Answer at once, edit when done (both within the space's write quota).
//!     let working = ctx.placeholder("Working on it…").await?;
//!     tokio::time::sleep(std::time::Duration::from_secs(2)).await;
//!     ctx.update(&working.name, Reply::text(format!("Done: {}", command.text))).await?;
//!     Ok(())
//! }
//!
//! async fn hello(_ctx: Context, _added: Added) -> Reply {
//!     Reply::text("Thanks for adding me! Try /slow.").in_new_thread()
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), chatworker::RunError> {
//!     let app = App::new().message(echo).command("/slow", slow).added(hello);
//!     chatworker::run(app).await
//! }
//! ```
//!
//! Run it against the local playground (the Pub/Sub emulator, the Chat
//! simulator and a page to talk to the bot) with `cargo run -- dev`, or in
//! production with `CHATWORKER_PUBSUB__SUBSCRIPTION` set. The `examples/`
//! directory has complete bots: an echo bot with a card, a ticket bot with
//! slash commands and buttons that update their card, and a long job with
//! a placeholder.
//!
//! ## Where to look
//!
//! - [`App`]: register handlers, middleware ([`middleware`]) and state.
//! - [`Context`]: what a handler can do (send, update, delete, placeholder,
//!   private messages) and its state.
//! - [`Reply`]: a message: text, cards ([`card`]), thread, space,
//!   notification, markup.
//! - [`action`]: typed card actions shared by buttons and handlers.
//! - [`Service`]: the one-method trait under `App`, for full control.
//! - [`dev`] and [`sim`]: the local playground and the Chat API simulator.
//!
//! The flow of one event, and what each module may and may not know, is in
//! `ARCHITECTURE.md`; the delivery promises are in `RELIABILITY.md`.

#![warn(missing_docs)]

pub mod action;
pub mod app;
pub mod card;
pub mod chat;
pub mod cli;
pub mod config;
pub mod context;
pub mod default_app;
pub mod dev;
pub mod dispatch;
pub mod event;
pub mod health;
pub mod ids;
pub mod impersonation;
pub mod logging;
pub mod metrics;
pub mod middleware;
pub mod names;
pub mod provision;
pub mod quota;
pub mod reply;
mod runner;
pub mod sender;
pub mod server;
pub mod service;
pub mod settle;
pub mod sim;
pub mod source;
pub mod text;
pub mod worker;

pub use action::CardAction;
pub use app::{Added, App, Click, Command, IntoReplies, Matched, Removed};
pub use context::{Context, Sent};
pub use event::{Event, Message};
pub use reply::Reply;
pub use runner::{RunError, init_logging, run, shutdown_signal};
pub use service::{HandlerError, ResultExt, Service};
