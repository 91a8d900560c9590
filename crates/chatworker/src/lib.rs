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
//! simulator and a page to talk to the bot) with `CHATWORKER_DEV=1 cargo
//! run`, or in production with `CHATWORKER_PUBSUB__SUBSCRIPTION` set. The
//! `examples/` directory has complete bots: an echo bot with a card, a
//! ticket bot with slash commands and buttons that update their card, and a
//! long job with a placeholder.
//!
//! ## Where to look
//!
//! - [`App`]: register handlers, middleware ([`middleware`]) and state.
//! - [`Context`]: what a handler can do (send, update, delete, placeholder,
//!   private messages) and its state: [`Context::load`] reads a typed value
//!   per app, space, thread or user from the [`store`], committed with the
//!   event's replies, once.
//! - [`Reply`]: a message: text, cards ([`card`]), thread, space,
//!   notification, markup.
//! - [`action`]: typed card actions shared by buttons and handlers.
//! - [`testing`]: unit tests for handlers, recording what they send.
//! - [`Service`]: the one-method trait under `App`, for full control.
//! - [`Config`]: the layered settings, with a section of your own.
//! - `dev` (feature `dev`, on by default): the local playground.
//! - [`worker::run`]: the worker itself, for a program with its own
//!   runtime and shutdown; [`chat::ChatClient`] and [`pubsub::admin`] for
//!   tools (what `chatworker send`, `setup` and `check` use).
//!
//! ## Features
//!
//! - `dev` (default): [`dev`](crate#features) and `CHATWORKER_DEV=1`, with
//!   the Chat simulator (the `chatworker-sim` crate). Build production
//!   binaries without it (`default-features = false`): they then carry no
//!   simulator, no playground page and no discovery document.
//!
//! The flow of one event, and what each module may and may not know, is in
//! `ARCHITECTURE.md`; the delivery promises are in `RELIABILITY.md`.

#![warn(missing_docs)]

mod app;
pub mod chat;
pub mod config;
#[cfg(feature = "dev")]
pub mod dev;
pub mod event;
pub mod names;
pub mod net;
mod ops;
pub mod pubsub;
pub mod reply;
mod run;
mod send;
pub mod store;
pub mod worker;

pub use app::{
    Added, Answer, App, Click, Command, Context, HandlerError, IntoReplies, Matched, Outcome,
    Removed, ResultExt, Sent, Service, Skip, middleware, testing,
};
pub use config::Config;
pub use event::{Event, Message};
/// The `regex` crate, for [`App::message_matching`]'s patterns.
pub use regex;
pub use reply::{Reply, SendError, action, action::CardAction, card};
pub use run::{DEV_ENV, RunError, init_logging, run, run_with, shutdown_signal};
pub use store::{BadState, Scope, StateError, Stored};
