//! How an event finds its handler: by kind, then command name or ID,
//! pattern, or action name, else the fallback. The table is in the
//! [`crate::app`] module's documentation.

use super::context::Context;
use super::handler::{Added, Click, Command, Erased, Matched, Outcome, Removed};
use super::service::Answer;
use crate::event::{Action, AppCommandType, Event, EventKind, Message};
use futures::future::BoxFuture;
use std::collections::BTreeMap;

/// The handlers an app registered, by what they answer.
pub(crate) struct Routes<S> {
    pub messages: Option<Erased<S, Message>>,
    pub patterns: Vec<(regex::Regex, Erased<S, Matched>)>,
    pub commands: BTreeMap<String, Erased<S, Command>>,
    pub command_ids: BTreeMap<i64, Erased<S, Command>>,
    pub unknown_command: Option<Erased<S, Command>>,
    pub added: Option<Erased<S, Added>>,
    pub removed: Option<Erased<S, Removed>>,
    pub actions: BTreeMap<String, Erased<S, Click>>,
    pub widgets: BTreeMap<String, Erased<S, Click>>,
    pub fallback: Option<Erased<S, Event>>,
    /// Slash commands registered by name, with their ID when known.
    pub declared: Vec<(String, Option<i64>)>,
}

impl<S> Default for Routes<S> {
    fn default() -> Self {
        Self {
            messages: None,
            patterns: Vec::new(),
            commands: BTreeMap::new(),
            command_ids: BTreeMap::new(),
            unknown_command: None,
            added: None,
            removed: None,
            actions: BTreeMap::new(),
            widgets: BTreeMap::new(),
            fallback: None,
            declared: Vec::new(),
        }
    }
}

// Every field is a table of shared handlers: a clone shares them.
impl<S> Clone for Routes<S> {
    fn clone(&self) -> Self {
        Self {
            messages: self.messages.clone(),
            patterns: self.patterns.clone(),
            commands: self.commands.clone(),
            command_ids: self.command_ids.clone(),
            unknown_command: self.unknown_command.clone(),
            added: self.added.clone(),
            removed: self.removed.clone(),
            actions: self.actions.clone(),
            widgets: self.widgets.clone(),
            fallback: self.fallback.clone(),
            declared: self.declared.clone(),
        }
    }
}

impl<S: Send + Sync + 'static> Routes<S> {
    /// Routes the event to its handler: the innermost step of the chain.
    pub(crate) async fn route(&self, ctx: Context<S>) -> Outcome {
        let event = ctx.event().clone();
        // Each handler's input takes its own copy of what it needs, once: a
        // message can carry megabytes of text.
        let call = match &event.kind {
            EventKind::Message => match &event.message {
                Some(m) if m.slash_command.is_some() => self.command_for(&event, None),
                Some(m) => self.message_for(m),
                None => None,
            },
            EventKind::AppCommand(command) => self.command_for(&event, command.id),
            EventKind::AddedToSpace => self.added.as_ref().map(|h| {
                let added = Added {
                    space: event.space.clone(),
                    message: event.message.clone(),
                };
                Call::new(h, added)
            }),
            EventKind::RemovedFromSpace => self.removed.as_ref().map(|h| {
                let removed = Removed {
                    space: event.space.clone(),
                };
                Call::new(h, removed)
            }),
            EventKind::CardClicked(action) => self.click(&self.actions, action, &event),
            EventKind::WidgetUpdated(action) => self.click(&self.widgets, action, &event),
            _ => None,
        };
        match (call, &self.fallback) {
            (Some(call), _) => call.with(ctx).await,
            (None, Some(fallback)) => fallback(ctx, event).await,
            (None, None) => {
                tracing::debug!("no handler for this event");
                Ok(Answer::Skipped(match event.kind {
                    EventKind::Unknown { .. } => "unknown_type",
                    _ => "no_handler",
                }))
            }
        }
    }

    fn message_for(&self, message: &Message) -> Option<Call<S>> {
        let text = message.argument();
        for (pattern, handler) in &self.patterns {
            if let Some(captures) = pattern.captures(text) {
                let groups = captures
                    .iter()
                    .map(|g| g.map(|g| g.as_str().to_owned()))
                    .collect();
                let named = pattern
                    .capture_names()
                    .flatten()
                    .filter_map(|n| {
                        captures
                            .name(n)
                            .map(|g| (n.to_owned(), g.as_str().to_owned()))
                    })
                    .collect();
                let matched = Matched {
                    message: message.clone(),
                    groups,
                    named,
                };
                return Some(Call::new(handler, matched));
            }
        }
        self.messages
            .as_ref()
            .map(|h| Call::new(h, message.clone()))
    }

    fn command_for(&self, event: &Event, app_command_id: Option<i64>) -> Option<Call<S>> {
        let message = event.message.clone();
        let slash = message.as_ref().and_then(|m| m.slash_command.as_ref());
        let name = slash.and_then(|s| s.name.clone());
        let id = app_command_id.or_else(|| slash.and_then(|s| s.id.as_deref()?.parse().ok()));
        let kind = match &event.kind {
            EventKind::AppCommand(c) => c.command_type.clone(),
            _ => AppCommandType::SlashCommand,
        };
        let text = message
            .as_ref()
            .map(|m| command_text(m, name.as_deref()))
            .unwrap_or_default();
        let by_name = name
            .as_deref()
            .and_then(|n| self.commands.get(&command_key(n)));
        let by_id = id.and_then(|id| self.command_ids.get(&id));
        // An APP_COMMAND event is identified by its ID first; a typed slash
        // command by its name.
        let handler = match event.kind {
            EventKind::AppCommand(_) => by_id.or(by_name),
            _ => by_name.or(by_id),
        }
        .or(self.unknown_command.as_ref())?;
        let command = Command {
            name,
            id,
            kind,
            text,
            message,
        };
        Some(Call::new(handler, command))
    }

    fn click(
        &self,
        handlers: &BTreeMap<String, Erased<S, Click>>,
        action: &Action,
        event: &Event,
    ) -> Option<Call<S>> {
        let handler = handlers.get(&action.name)?;
        let click = Click {
            action: action.clone(),
            message: event.message.as_ref().and_then(|m| m.name.clone()),
        };
        Some(Call::new(handler, click))
    }
}

/// A handler chosen with its input, waiting for the context.
struct Call<S> {
    run: Box<dyn FnOnce(Context<S>) -> BoxFuture<'static, Outcome> + Send>,
}

impl<S: Send + Sync + 'static> Call<S> {
    fn new<T: Send + 'static>(handler: &Erased<S, T>, input: T) -> Self {
        let handler = handler.clone();
        Self {
            run: Box::new(move |ctx| handler(ctx, input)),
        }
    }

    fn with(self, ctx: Context<S>) -> BoxFuture<'static, Outcome> {
        (self.run)(ctx)
    }
}

/// Command names compare without their leading slash.
pub(crate) fn command_key(name: &str) -> String {
    name.trim().trim_start_matches('/').to_owned()
}

/// What followed the command in the message.
fn command_text(message: &Message, name: Option<&str>) -> String {
    let text = message.argument();
    match name {
        Some(name) => text.strip_prefix(name).unwrap_or(text).trim().to_owned(),
        None => text.to_owned(),
    }
}
