//! The app builder: typed async handlers registered per kind of event, a
//! default handler, an error hook, middleware and shared state. An [`App`]
//! is a [`Service`], so the worker, `chatworker dev` and the tests run it
//! like any other.
//!
//! ```no_run
//! use chatworker::{App, Command, Context, HandlerError, Message, Reply};
//!
//! struct Counter(std::sync::atomic::AtomicU64);
//!
//! async fn echo(_ctx: Context<Counter>, message: Message) -> Reply {
//!     Reply::text(format!("You said: {}", message.text))
//! }
//!
//! async fn count(ctx: Context<Counter>, _command: Command) -> Result<Reply, HandlerError> {
//!     let n = ctx.state().0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
//!     Ok(Reply::text(format!("Counted {n}.")))
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     let app = App::with_state(Counter(0.into()))
//!         .message(echo)
//!         .command("/count", count)
//!         .added(|_ctx, _added| async { Reply::text("Hello! Try /count.").in_new_thread() });
//!     chatworker::run(app).await?;
//!     Ok(())
//! }
//! ```
//!
//! # How an event finds its handler
//!
//! | Event | Tried in order |
//! |---|---|
//! | `MESSAGE` with a slash command | [`App::command`] or [`App::slash_command`] by name, [`App::command_id`] by ID, [`App::app_command`] |
//! | `MESSAGE` | [`App::message_matching`] patterns in the order registered, then [`App::message`] |
//! | `APP_COMMAND` (slash, quick command) | [`App::command_id`], [`App::command`] when the message names it, [`App::app_command`] |
//! | `ADDED_TO_SPACE` | [`App::added`] |
//! | `REMOVED_FROM_SPACE` | [`App::removed`] |
//! | `CARD_CLICKED` | [`App::action`] by type, [`App::action_named`] by name |
//! | `WIDGET_UPDATED` | [`App::widget_updated`] by name |
//!
//! Anything else, and anything no handler matched, goes to
//! [`App::fallback`]; without one it is acked and counted as `no_handler`
//! (`unknown_type` for event types this version does not know).
//! Registering the same command, ID or action again replaces the handler.
//!
//! Before routing, messages sent by other apps are skipped (two apps
//! answering each other would never stop; [`App::answer_bots`] turns that
//! off), then the [`Layer`]s run, outermost first. A handler's error goes
//! to [`App::on_error`] when one is set, then to the worker, which nacks a
//! transient error for redelivery and acks (or dead-letters) a permanent
//! one.

use crate::action::{CardAction, from_parameters};
use crate::context::Context;
use crate::event::{Action, AppCommandType, Event, EventKind, Message, Space, UserKind};
use crate::middleware::{AllowList, Layer, Next};
use crate::names::MessageName;
use crate::reply::Reply;
use crate::service::{HandlerError, Service};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

/// What a handler may return: nothing, a reply, several, or a `Result` of
/// those whose error converts into a [`HandlerError`].
pub trait IntoReplies {
    /// The replies to send after the handler, or its failure.
    fn into_replies(self) -> Result<Vec<Reply>, HandlerError>;
}

impl IntoReplies for () {
    fn into_replies(self) -> Result<Vec<Reply>, HandlerError> {
        Ok(Vec::new())
    }
}

impl IntoReplies for Reply {
    fn into_replies(self) -> Result<Vec<Reply>, HandlerError> {
        Ok(vec![self])
    }
}

impl IntoReplies for Vec<Reply> {
    fn into_replies(self) -> Result<Vec<Reply>, HandlerError> {
        Ok(self)
    }
}

impl IntoReplies for Option<Reply> {
    fn into_replies(self) -> Result<Vec<Reply>, HandlerError> {
        Ok(self.into_iter().collect())
    }
}

impl IntoReplies for String {
    fn into_replies(self) -> Result<Vec<Reply>, HandlerError> {
        Ok(vec![Reply::text(self)])
    }
}

impl IntoReplies for &'static str {
    fn into_replies(self) -> Result<Vec<Reply>, HandlerError> {
        Ok(vec![Reply::text(self)])
    }
}

impl<T: IntoReplies, E: Into<HandlerError>> IntoReplies for Result<T, E> {
    fn into_replies(self) -> Result<Vec<Reply>, HandlerError> {
        self.map_err(Into::into).and_then(IntoReplies::into_replies)
    }
}

/// A message matched by a pattern, with the pattern's captures.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Matched {
    /// The message.
    pub message: Message,
    /// Capture groups by index; 0 is the whole match.
    pub groups: Vec<Option<String>>,
    /// Named capture groups that matched.
    pub named: BTreeMap<String, String>,
}

impl Matched {
    /// Capture group `i` (0: the whole match), if it matched.
    pub fn get(&self, i: usize) -> Option<&str> {
        self.groups.get(i).and_then(|g| g.as_deref())
    }

    /// The named capture group `name`, if it matched.
    pub fn name(&self, name: &str) -> Option<&str> {
        self.named.get(name).map(String::as_str)
    }
}

/// A command: a slash command typed as a message, or an `APP_COMMAND`
/// event (slash command, quick command or message action).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Command {
    /// The command's name as typed, for example `/ticket`, when Chat said.
    pub name: Option<String>,
    /// The command ID configured in the Chat API console, when Chat said.
    pub id: Option<i64>,
    /// How it was invoked.
    pub kind: AppCommandType,
    /// What followed the command, trimmed (empty when nothing did).
    pub text: String,
    /// The message that carried it, if any.
    pub message: Option<Message>,
}

/// The app was added to a space.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Added {
    /// The space.
    pub space: Space,
    /// The message that added it, when it was added by an @mention; it
    /// deserves an answer too.
    pub message: Option<Message>,
}

/// The app was removed from a space; it can no longer post there.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Removed {
    /// The space.
    pub space: Space,
}

/// A card click or widget update, untyped.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Click {
    /// The action's name and parameters.
    pub action: Action,
    /// The card message clicked, which [`Reply::in_place`] updates.
    pub message: Option<MessageName>,
}

type Result2 = Result<Vec<Reply>, HandlerError>;
type Erased<S, T> = Arc<dyn Fn(Context<S>, T) -> BoxFuture<'static, Result2> + Send + Sync>;

fn erase<S, T, F, Fut>(handler: F) -> Erased<S, T>
where
    F: Fn(Context<S>, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output: IntoReplies> + Send + 'static,
{
    Arc::new(move |ctx, input| {
        let fut = handler(ctx, input);
        Box::pin(async move { fut.await.into_replies() })
    })
}

/// A Chat app: handlers for the events it answers, middleware, and state
/// `S` shared by every handler. See the [module documentation](self) for
/// how an event finds its handler.
pub struct App<S = ()> {
    inner: Arc<Inner<S>>,
}

pub(crate) struct Inner<S> {
    state: Arc<S>,
    answer_bots: bool,
    pub(crate) layers: Vec<Arc<dyn crate::middleware::DynLayer<S>>>,
    messages: Option<Erased<S, Message>>,
    patterns: Vec<(regex::Regex, Erased<S, Matched>)>,
    commands: BTreeMap<String, Erased<S, Command>>,
    command_ids: BTreeMap<i64, Erased<S, Command>>,
    app_command: Option<Erased<S, Command>>,
    added: Option<Erased<S, Added>>,
    removed: Option<Erased<S, Removed>>,
    actions: BTreeMap<String, Erased<S, Click>>,
    widgets: BTreeMap<String, Erased<S, Click>>,
    fallback: Option<Erased<S, Event>>,
    on_error: Option<Erased<S, HandlerError>>,
    /// Slash commands registered by name, with their ID when known.
    declared: Vec<(String, Option<i64>)>,
}

impl App<()> {
    /// An app without shared state.
    pub fn new() -> Self {
        Self::with_state(())
    }
}

impl Default for App<()> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Send + Sync + 'static> App<S> {
    /// An app whose handlers share `state` (through [`Context::state`]).
    /// Handlers for another state type do not compile.
    pub fn with_state(state: S) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Arc::new(state),
                answer_bots: false,
                layers: Vec::new(),
                messages: None,
                patterns: Vec::new(),
                commands: BTreeMap::new(),
                command_ids: BTreeMap::new(),
                app_command: None,
                added: None,
                removed: None,
                actions: BTreeMap::new(),
                widgets: BTreeMap::new(),
                fallback: None,
                on_error: None,
                declared: Vec::new(),
            }),
        }
    }

    fn edit(mut self, change: impl FnOnce(&mut Inner<S>)) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("an App is built before it is shared");
        change(inner);
        self
    }

    /// Handles every message no pattern or command claimed.
    pub fn message<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(Context<S>, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        self.edit(|i| i.messages = Some(erase(handler)))
    }

    /// Handles messages whose text (without the app's @mention) matches
    /// `pattern`; patterns are tried in the order registered, before
    /// [`App::message`].
    ///
    /// ```
    /// use chatworker::{App, Context, Matched};
    ///
    /// # fn main() -> Result<(), regex::Error> {
    /// let app = App::new().message_matching(
    ///     regex::Regex::new(r"^status (?<service>\w+)$")?,
    ///     |_ctx: Context, m: Matched| async move {
    ///         format!("{} is up.", m.name("service").unwrap_or("?"))
    ///     },
    /// );
    /// # let _ = app;
    /// # Ok(())
    /// # }
    /// ```
    pub fn message_matching<F, Fut>(self, pattern: regex::Regex, handler: F) -> Self
    where
        F: Fn(Context<S>, Matched) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        self.edit(|i| i.patterns.push((pattern, erase(handler))))
    }

    /// Handles the slash command `name` (`/ticket` or `ticket`), typed as a
    /// message or sent as an `APP_COMMAND` event that names it.
    pub fn command<F, Fut>(self, name: &str, handler: F) -> Self
    where
        F: Fn(Context<S>, Command) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        let key = command_key(name);
        let name = format!("/{key}");
        self.edit(|i| {
            i.commands.insert(key, erase(handler));
            i.declared.push((name, None));
        })
    }

    /// Handles the slash command `name` whose ID is `id`, matched by
    /// either: what most apps register, as the Chat API console gives every
    /// command both.
    pub fn slash_command<F, Fut>(self, name: &str, id: i64, handler: F) -> Self
    where
        F: Fn(Context<S>, Command) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        let key = command_key(name);
        let handler = erase(handler);
        self.edit(|i| {
            i.commands.insert(key.clone(), handler.clone());
            i.command_ids.insert(id, handler);
            i.declared.push((format!("/{key}"), Some(id)));
        })
    }

    /// Handles the command with ID `id` (as configured in the Chat API
    /// console): a slash command or a quick command.
    pub fn command_id<F, Fut>(self, id: i64, handler: F) -> Self
    where
        F: Fn(Context<S>, Command) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        self.edit(|i| {
            i.command_ids.insert(id, erase(handler));
        })
    }

    /// Handles every command (`APP_COMMAND` events and slash-command
    /// messages) no name or ID matched.
    pub fn app_command<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(Context<S>, Command) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        self.edit(|i| i.app_command = Some(erase(handler)))
    }

    /// Handles the app being added to a space.
    pub fn added<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(Context<S>, Added) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        self.edit(|i| i.added = Some(erase(handler)))
    }

    /// Handles the app being removed from a space (it cannot reply there:
    /// clean up, and return nothing).
    pub fn removed<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(Context<S>, Removed) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        self.edit(|i| i.removed = Some(erase(handler)))
    }

    /// Handles clicks on buttons made with
    /// [`crate::card::Button::for_action`] for `A`: the handler receives
    /// the parameters as an `A`. Parameters that do not read as an `A` fail
    /// the event permanently, with the reason.
    ///
    /// ```
    /// use chatworker::{App, CardAction, Context, HandlerError, Reply};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Close {
    ///     ticket: u32,
    /// }
    /// impl CardAction for Close {
    ///     const NAME: &'static str = "close";
    /// }
    ///
    /// async fn close(_ctx: Context, close: Close) -> Result<Reply, HandlerError> {
    ///     Ok(Reply::text(format!("Ticket {} closed.", close.ticket)).in_place())
    /// }
    ///
    /// let app = App::new().action(close);
    /// # let _ = app;
    /// ```
    pub fn action<A, F, Fut>(self, handler: F) -> Self
    where
        A: CardAction,
        F: Fn(Context<S>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let typed = move |ctx: Context<S>, click: Click| {
            let handler = handler.clone();
            async move {
                let parameters: A = from_parameters(&click.action.parameters)?;
                handler(ctx, parameters).await.into_replies()
            }
        };
        self.edit(|i| {
            i.actions.insert(A::NAME.to_owned(), erase(typed));
        })
    }

    /// Handles clicks on buttons whose action function is `name`, with the
    /// parameters as strings.
    pub fn action_named<F, Fut>(self, name: &str, handler: F) -> Self
    where
        F: Fn(Context<S>, Click) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        let name = name.to_owned();
        self.edit(|i| {
            i.actions.insert(name, erase(handler));
        })
    }

    /// Handles `WIDGET_UPDATED` events for the widget action `name` (for
    /// example an autocomplete field being typed into).
    pub fn widget_updated<F, Fut>(self, name: &str, handler: F) -> Self
    where
        F: Fn(Context<S>, Click) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        let name = name.to_owned();
        self.edit(|i| {
            i.widgets.insert(name, erase(handler));
        })
    }

    /// Handles every event no other handler took, event types this version
    /// does not know included.
    pub fn fallback<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(Context<S>, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        self.edit(|i| i.fallback = Some(erase(handler)))
    }

    /// Called with any handler's (or layer's) error. Return replies to
    /// recover (the event is then acked), or the error to let the worker
    /// decide (transient: redelivered; permanent: acked and dead-lettered
    /// when configured). Messages sent from the hook get deterministic IDs
    /// like any other, so an apology is not repeated on redelivery.
    ///
    /// ```
    /// use chatworker::{App, Context, HandlerError};
    ///
    /// let app = App::new().on_error(|ctx: Context, error: HandlerError| async move {
    ///     if !error.is_transient() {
    ///         ctx.send("Sorry, that did not work.").await?;
    ///     }
    ///     Err::<(), _>(error)
    /// });
    /// # let _ = app;
    /// ```
    pub fn on_error<F, Fut>(self, hook: F) -> Self
    where
        F: Fn(Context<S>, HandlerError) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        self.edit(|i| i.on_error = Some(erase(hook)))
    }

    /// Wraps every handler in `layer` (added first: outermost).
    pub fn layer(self, layer: impl Layer<S>) -> Self {
        self.edit(|i| i.layers.push(Arc::new(layer)))
    }

    /// Answers only in these spaces (`spaces/AAA` or `AAA`); other events
    /// are acked and counted as `not_allowed`. Shorthand for
    /// [`App::layer`] with [`AllowList::spaces`].
    pub fn allow_spaces<I: IntoIterator<Item: AsRef<str>>>(self, spaces: I) -> Self {
        self.layer(AllowList::new().spaces(spaces))
    }

    /// Answers only people whose email is in one of these domains;
    /// shorthand for [`App::layer`] with [`AllowList::domains`].
    pub fn allow_domains<I: IntoIterator<Item: AsRef<str>>>(self, domains: I) -> Self {
        self.layer(AllowList::new().domains(domains))
    }

    /// Handles messages from other Chat apps too (skipped by default: two
    /// apps answering each other would never stop).
    pub fn answer_bots(self) -> Self {
        self.edit(|i| i.answer_bots = true)
    }
}

/// Where the IDs given to commands registered by name only start, for the
/// playground: far from the small IDs the Chat API console hands out.
const UNNUMBERED_COMMAND_IDS: i64 = 1_000_000;

impl<S: Send + Sync + 'static> Service for App<S> {
    fn slash_commands(&self) -> Vec<(String, i64)> {
        let declared = self.inner.declared.iter().enumerate();
        declared
            .map(|(i, (name, id))| {
                (
                    name.clone(),
                    id.unwrap_or(UNNUMBERED_COMMAND_IDS + i as i64),
                )
            })
            .collect()
    }

    async fn handle(&self, ctx: &Context, event: &Event) -> Result<Vec<Reply>, HandlerError> {
        let inner = &self.inner;
        if !inner.answer_bots && event.sender().is_some_and(|u| u.kind == UserKind::Bot) {
            ctx.skip("bot_sender");
            return Ok(Vec::new());
        }
        let ctx = ctx.with_state(inner.state.clone());
        let result = Next::new(inner.clone()).run(ctx.clone()).await;
        match (result, &inner.on_error) {
            (Err(error), Some(hook)) => hook(ctx, error).await,
            (result, _) => result,
        }
    }
}

impl<S: Send + Sync + 'static> Inner<S> {
    /// Routes the event to its handler (the innermost step of [`Next`]).
    pub(crate) async fn route(&self, ctx: Context<S>) -> Result2 {
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
                tracing::debug!(kind = event.kind.label(), "no handler for this event");
                ctx.skip(match event.kind {
                    EventKind::Unknown { .. } => "unknown_type",
                    _ => "no_handler",
                });
                Ok(Vec::new())
            }
        }
    }

    fn message_for(&self, message: &Message) -> Option<Call<S>> {
        let text = message
            .argument_text
            .as_deref()
            .unwrap_or(&message.text)
            .trim();
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
        .or(self.app_command.as_ref())?;
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
    run: Box<dyn FnOnce(Context<S>) -> BoxFuture<'static, Result2> + Send>,
}

impl<S: Send + Sync + 'static> Call<S> {
    fn new<T: Send + 'static>(handler: &Erased<S, T>, input: T) -> Self {
        let handler = handler.clone();
        Self {
            run: Box::new(move |ctx| handler(ctx, input)),
        }
    }

    fn with(self, ctx: Context<S>) -> BoxFuture<'static, Result2> {
        (self.run)(ctx)
    }
}

/// Command names compare without their leading slash.
fn command_key(name: &str) -> String {
    name.trim().trim_start_matches('/').to_owned()
}

/// What followed the command in the message.
fn command_text(message: &Message, name: Option<&str>) -> String {
    let text = message
        .argument_text
        .as_deref()
        .unwrap_or(&message.text)
        .trim();
    match name {
        Some(name) => text.strip_prefix(name).unwrap_or(text).trim().to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::from_fn;
    use serde::{Deserialize, Serialize};
    use serde_json::Value;
    use std::sync::Mutex;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/events/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
    }

    /// Runs `app` on `event`: its replies' texts (or the error) and the
    /// skip reason.
    fn run<S: Send + Sync + 'static>(
        app: &App<S>,
        event: &Value,
    ) -> (Result<Vec<String>, String>, Option<&'static str>) {
        let event =
            crate::event::decode(&serde_json::to_vec(event).expect("json")).expect("decodes");
        let ctx = Context::for_test(event.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let result = runtime.block_on(app.handle(&ctx, &event));
        let texts = result
            .map(|r| r.into_iter().map(|r| r.text.unwrap_or_default()).collect())
            .map_err(|e| e.to_string());
        (texts, ctx.skipped())
    }

    fn texts<S: Send + Sync + 'static>(app: &App<S>, event: &Value) -> Vec<String> {
        run(app, event).0.expect("handled")
    }

    #[derive(Serialize, Deserialize)]
    struct Approve {
        ticket: u32,
    }
    impl CardAction for Approve {
        const NAME: &'static str = "approve";
    }

    fn routed() -> App<&'static str> {
        App::with_state("state")
            .message(|ctx: Context<&'static str>, m: Message| async move {
                format!("{}: {}", ctx.state(), m.text)
            })
            .message_matching(
                regex::Regex::new(r"^deploy (?<service>\w+)$").expect("regex"),
                |_ctx, m: Matched| async move {
                    format!("deploying {}", m.name("service").unwrap_or("?"))
                },
            )
            .command("help", |_ctx, c: Command| async move {
                format!("help by name {:?}", c.name)
            })
            .command_id(
                7,
                |_ctx, c: Command| async move { format!("seven: {}", c.text) },
            )
            .app_command(|_ctx, c: Command| async move { format!("other command {:?}", c.id) })
            .action(|_ctx, a: Approve| async move { format!("approved {}", a.ticket) })
            .widget_updated("suggest", |_ctx, c: Click| async move {
                format!("widget {}", c.action.name)
            })
            .added(|_ctx, a: Added| async move { format!("added to {}", a.space.name) })
            .removed(|_ctx, _r: Removed| async {})
    }

    #[test]
    fn each_kind_of_event_reaches_its_handler() {
        let app = routed();
        let mut message = fixture("classic/message.json");
        assert_eq!(texts(&app, &message), ["state: @chatworker hello there"]);
        message["message"]["argumentText"] = " deploy api".into();
        assert_eq!(
            texts(&app, &message),
            ["deploying api"],
            "a pattern wins over the catch-all"
        );
        // /help typed, by name.
        assert_eq!(
            texts(&app, &fixture("classic/slash_command.json")),
            [r#"help by name Some("/help")"#]
        );
        // APP_COMMAND 1 is registered neither by ID nor, in this event, by a
        // name the message carries: the catch-all takes it.
        assert_eq!(
            texts(&app, &fixture("classic/app_command.json")),
            ["other command Some(1)"]
        );
        let mut seven = fixture("classic/app_command.json");
        seven["appCommandMetadata"]["appCommandId"] = 7.into();
        seven["message"]["argumentText"] = " now".into();
        assert_eq!(
            texts(&app, &seven),
            ["seven: now"],
            "an APP_COMMAND goes by ID first"
        );
        seven["appCommandMetadata"]["appCommandId"] = 8.into();
        seven["message"]["annotations"] = Value::Null;
        seven["message"]["slashCommand"] = Value::Null;
        assert_eq!(texts(&app, &seven), ["other command Some(8)"]);
        assert_eq!(
            texts(&app, &fixture("classic/card_clicked.json")),
            ["approved 42"]
        );
        assert_eq!(
            texts(&app, &fixture("classic/added_to_space.json")),
            ["added to spaces/AAAAtest"]
        );
        assert_eq!(
            run(&app, &fixture("classic/removed_from_space.json")),
            (Ok(vec![]), None)
        );
    }

    #[test]
    fn unmatched_events_go_to_the_fallback_or_are_counted() {
        let app = routed();
        let mut click = fixture("classic/card_clicked.json");
        click["action"]["actionMethodName"] = "reject".into();
        assert_eq!(run(&app, &click), (Ok(vec![]), Some("no_handler")));
        assert_eq!(
            run(&app, &fixture("classic/future_event_type.json")).1,
            Some("unknown_type")
        );
        let app = routed()
            .fallback(|_ctx, e: Event| async move { format!("fallback {}", e.kind.label()) });
        assert_eq!(texts(&app, &click), ["fallback CARD_CLICKED"]);
        // Parameters that do not read as the action's type fail for good.
        click["action"]["actionMethodName"] = "approve".into();
        click["action"]["parameters"][0]["value"] = "forty-two".into();
        let (result, _) = run(&app, &click);
        assert!(result.expect_err("bad parameters").contains("forty-two"));
    }

    #[test]
    fn bots_are_skipped_unless_the_app_answers_them() {
        let bot = fixture("classic/bot_message.json");
        assert_eq!(run(&routed(), &bot), (Ok(vec![]), Some("bot_sender")));
        assert_eq!(texts(&routed().answer_bots(), &bot).len(), 1);
    }

    #[test]
    fn allow_lists_refuse_other_spaces_and_domains() {
        let message = fixture("classic/message.json");
        let refused = (Ok(vec![]), Some("not_allowed"));
        assert_eq!(run(&routed().allow_spaces(["OTHER"]), &message), refused);
        assert_eq!(
            texts(&routed().allow_spaces(["AAAAtest"]), &message).len(),
            1
        );
        assert_eq!(
            texts(&routed().allow_domains(["EXAMPLE.com"]), &message).len(),
            1
        );
        assert_eq!(
            run(&routed().allow_domains(["example.org"]), &message),
            refused
        );
        let mut anonymous = message.clone();
        anonymous["user"]["email"] = Value::Null;
        anonymous["message"]["sender"]["email"] = Value::Null;
        assert_eq!(
            run(&routed().allow_domains(["example.com"]), &anonymous),
            refused
        );
    }

    #[test]
    fn layers_wrap_in_order_and_see_the_result() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let layer = |name: &'static str, seen: Arc<Mutex<Vec<String>>>| {
            from_fn(
                move |ctx: Context<&'static str>, next: Next<&'static str>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().expect("lock").push(format!("{name} before"));
                        let mut result = next.run(ctx).await;
                        if let Ok(replies) = &mut result {
                            replies.push(Reply::text(format!("{name} after")));
                        }
                        seen.lock().expect("lock").push(format!("{name} after"));
                        result
                    }
                },
            )
        };
        let app = routed()
            .layer(layer("outer", seen.clone()))
            .layer(layer("inner", seen.clone()));
        let out = texts(&app, &fixture("classic/message.json"));
        assert_eq!(
            out,
            [
                "state: @chatworker hello there",
                "inner after",
                "outer after"
            ]
        );
        assert_eq!(
            *seen.lock().expect("lock"),
            ["outer before", "inner before", "inner after", "outer after"]
        );
        // A layer may answer instead of the handler.
        let app = routed().layer(from_fn(|_ctx: Context<&'static str>, _next| async {
            Ok(vec![Reply::text("no")])
        }));
        assert_eq!(texts(&app, &fixture("classic/message.json")), ["no"]);
    }

    #[test]
    fn the_error_hook_recovers_or_passes_the_error_on() {
        let failing = || {
            App::new().message(|_ctx, _m: Message| async {
                Err::<(), _>(HandlerError::transient("db down"))
            })
        };
        let message = fixture("classic/message.json");
        let (result, _) = run(&failing(), &message);
        assert!(result.expect_err("fails").contains("db down"));
        let recovered =
            failing().on_error(|_ctx, e: HandlerError| async move { format!("sorry: {e}") });
        assert_eq!(
            texts(&recovered, &message),
            ["sorry: handler failed, will retry: db down"]
        );
        let passed = failing().on_error(|_ctx, e: HandlerError| async move { Err::<(), _>(e) });
        assert!(run(&passed, &message).0.is_err());
    }

    #[test]
    fn the_playground_learns_the_registered_commands() {
        let app = App::new()
            .command("/a", |_ctx, _c: Command| async {})
            .slash_command("b", 3, |_ctx, _c: Command| async {});
        assert_eq!(
            app.slash_commands(),
            [
                ("/a".to_owned(), UNNUMBERED_COMMAND_IDS),
                ("/b".to_owned(), 3)
            ]
        );
    }
}
