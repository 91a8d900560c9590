//! # chatworker
//!
//! A runtime for Google Chat apps that live behind a firewall. Chat publishes
//! interaction events to a Cloud Pub/Sub topic; chatworker pulls them from a
//! subscription, hands them to your [`App`], sends the replies through the
//! Chat API with app authentication, and acks each event only once its
//! replies are out. Every reply gets a message ID derived from the event, so
//! a redelivered or duplicated event never produces a second message.
//!
//! ## An app
//!
//! ```no_run
//! use chatworker::app::{App, HandlerError};
//! use chatworker::config::Settings;
//! use chatworker::context::Context;
//! use chatworker::event::{Event, EventKind};
//! use chatworker::reply::Reply;
//!
//! struct Echo;
//!
//! impl App for Echo {
//!     async fn handle(&self, _ctx: &Context<'_>, event: &Event) -> Result<Vec<Reply>, HandlerError> {
//!         Ok(match (&event.kind, &event.message) {
//!             (EventKind::Message, Some(message)) => vec![Reply::text(format!("You said: {}", message.text))],
//!             (EventKind::AddedToSpace, _) => vec![Reply::text("Hello!").in_new_thread()],
//!             _ => Vec::new(),
//!         })
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     let settings = Settings::for_worker(None)?;
//!     let shutdown = async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     };
//!     chatworker::worker::run(settings, Echo, shutdown).await?;
//!     Ok(())
//! }
//! ```
//!
//! The flow of one event, and what each module may and may not know, is in
//! `ARCHITECTURE.md`.

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
pub mod ids;
pub mod metrics;
pub mod names;
pub mod quota;
pub mod reply;
pub mod sender;
pub mod settle;
pub mod sim;
pub mod source;
pub mod text;
pub mod worker;

pub use app::{App, HandlerError};
pub use event::Event;
pub use reply::Reply;
