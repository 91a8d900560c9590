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
//! async fn main() -> Result<(), chatworker::RunError> {
//!     let app = App::with_state(Counter(0.into()))
//!         .message(echo)
//!         .command("/count", count)
//!         .added(|_ctx, _added| async { Reply::text("Hello! Try /count.").in_new_thread() });
//!     chatworker::run(app).await
//! }
//! ```
//!
//! # How an event finds its handler
//!
//! | Event | Tried in order |
//! |---|---|
//! | `MESSAGE` with a slash command | [`App::command`] or [`App::slash_command`] by name, [`App::command_id`] by ID, [`App::unknown_command`] |
//! | `MESSAGE` | [`App::message_matching`] patterns in the order registered, then [`App::message`] |
//! | `APP_COMMAND` (slash, quick command) | [`App::command_id`], [`App::command`] when the message names it, [`App::unknown_command`] |
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

mod context;
mod error;
mod handler;
pub mod middleware;
mod route;
mod service;
pub mod testing;

pub use context::{Context, Sent};
pub(crate) use context::{Outlet, OutletFuture};
pub use error::{HandlerError, ResultExt};
pub use handler::{Added, Click, Command, IntoReplies, Matched, Outcome, Removed, Skip};
pub use service::{Answer, Service};

use crate::action::{CardAction, from_parameters};
use crate::event::{Event, Message, UserKind};
use handler::{Erased, erase};
use middleware::{AllowList, DynLayer, Endpoint, Layer, Next};
use route::{Routes, command_key};
use std::future::Future;
use std::sync::Arc;

/// A Chat app: handlers for the events it answers, middleware, and state
/// `S` shared by every handler. See the [`crate::App`] docs above
/// and the table under "How an event finds its handler" for routing.
pub struct App<S = ()> {
    state: Arc<S>,
    answer_bots: bool,
    layers: Arc<Vec<Arc<dyn DynLayer<S>>>>,
    routes: Arc<Routes<S>>,
    on_error: Option<Erased<S, HandlerError>>,
    bad_state: crate::store::BadState,
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
            state: Arc::new(state),
            answer_bots: false,
            layers: Arc::default(),
            routes: Arc::default(),
            on_error: None,
            bad_state: crate::store::BadState::Fail,
        }
    }

    /// Changes the handler table. An app being built is its only owner, so
    /// this copies nothing; were it shared, the copy would share the
    /// handlers.
    fn edit(mut self, change: impl FnOnce(&mut Routes<S>)) -> Self {
        change(Arc::make_mut(&mut self.routes));
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

    /// The catch-all for commands: handles every command (`APP_COMMAND`
    /// events and slash-command messages) that no handler registered by
    /// name or ID took.
    pub fn unknown_command<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(Context<S>, Command) -> Fut + Send + Sync + 'static,
        Fut: Future<Output: IntoReplies> + Send + 'static,
    {
        self.edit(|i| i.unknown_command = Some(erase(handler)))
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
                handler(ctx, parameters).await.into_answer()
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
    /// when configured). The state the failed handler changed is dropped
    /// before the hook runs; what the hook itself changes is kept. Messages sent from the hook get deterministic IDs
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
        Self {
            on_error: Some(erase(hook)),
            ..self
        }
    }

    /// What a handler's [`Context::load`] does with a stored value that no
    /// longer decodes as the type asked for (its type changed in a deploy):
    /// fail the event ([`crate::BadState::Fail`], the default: acked or
    /// dead-lettered, the value kept for a fix) or read it as absent
    /// ([`crate::BadState::Reset`]). Either way the key is logged and
    /// counted; never a crash loop.
    pub fn on_bad_state(self, policy: crate::store::BadState) -> Self {
        Self {
            bad_state: policy,
            ..self
        }
    }

    /// Wraps every handler in `layer` (added first: outermost).
    pub fn layer(mut self, layer: impl Layer<S>) -> Self {
        Arc::make_mut(&mut self.layers).push(Arc::new(layer));
        self
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
        Self {
            answer_bots: true,
            ..self
        }
    }
}

/// Where the IDs given to commands registered by name only start, for the
/// playground: far from the small IDs the Chat API console hands out.
const UNNUMBERED_COMMAND_IDS: i64 = 1_000_000;

impl<S: Send + Sync + 'static> Service for App<S> {
    fn bad_state(&self) -> crate::store::BadState {
        self.bad_state
    }

    fn slash_commands(&self) -> Vec<(String, i64)> {
        let declared = self.routes.declared.iter().enumerate();
        declared
            .map(|(i, (name, id))| {
                (
                    name.clone(),
                    id.unwrap_or(UNNUMBERED_COMMAND_IDS + i as i64),
                )
            })
            .collect()
    }

    async fn refused(
        &self,
        ctx: &Context,
        _event: &Event,
        error: HandlerError,
    ) -> Result<Answer, HandlerError> {
        match &self.on_error {
            Some(hook) => hook(ctx.with_state(self.state.clone()), error).await,
            None => Err(error),
        }
    }

    async fn handle(&self, ctx: &Context, event: &Event) -> Result<Answer, HandlerError> {
        if !self.answer_bots && event.sender().is_some_and(|u| u.kind == UserKind::Bot) {
            return Ok(Answer::Skipped("bot_sender"));
        }
        let ctx = ctx.with_state(self.state.clone());
        let routes = self.routes.clone();
        let endpoint: Endpoint<S> = Arc::new(move |ctx| {
            let routes = routes.clone();
            Box::pin(async move { routes.route(ctx).await })
        });
        let result = Next::new(self.layers.clone(), endpoint)
            .run(ctx.clone())
            .await;
        match (result, &self.on_error) {
            // The failed handler's state changes go; what the hook changes
            // is committed with its answer.
            (Err(error), Some(hook)) => {
                ctx.drop_state_changes();
                hook(ctx, error).await
            }
            (result, _) => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Reply;
    use middleware::from_fn;
    use serde::{Deserialize, Serialize};
    use serde_json::Value;
    use std::sync::Mutex;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../../tests/fixtures/events/{name}",
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
        let test = testing::TestContext::new(event.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        match runtime.block_on(app.handle(&test.context(), &event)) {
            Ok(answer) => {
                let texts = answer.replies().iter();
                let texts = texts.map(|r| r.text.clone().unwrap_or_default());
                (Ok(texts.collect()), answer.skipped())
            }
            Err(e) => (Err(e.to_string()), None),
        }
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
            .unknown_command(|_ctx, c: Command| async move { format!("other command {:?}", c.id) })
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
                        if let Ok(Answer::Replies(replies)) = &mut result {
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
            Ok(Reply::text("no").into())
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
    fn a_skip_is_the_handlers_return_value() {
        let app = App::new().message(|_ctx, m: Message| async move {
            match m.argument() {
                "hello there" => Answer::from(Skip("greeting")),
                other => Reply::text(other).into(),
            }
        });
        let message = fixture("classic/message.json");
        assert_eq!(run(&app, &message), (Ok(vec![]), Some("greeting")));
        let mut other = message.clone();
        other["message"]["argumentText"] = " deploy".into();
        assert_eq!(run(&app, &other).0, Ok(vec!["deploy".to_owned()]));
    }

    #[test]
    fn the_error_hook_sees_the_cause_itself() {
        #[derive(Debug, thiserror::Error)]
        #[error("the desk is closed")]
        struct Closed;
        let app = App::new()
            .message(|_ctx, _m: Message| async { Err::<(), _>(HandlerError::permanent(Closed)) })
            .on_error(|_ctx, e: HandlerError| async move {
                match e.downcast_ref::<Closed>() {
                    Some(closed) => Ok(Reply::text(format!("Sorry: {closed}."))),
                    None => Err(e),
                }
            });
        assert_eq!(
            texts(&app, &fixture("classic/message.json")),
            ["Sorry: the desk is closed."]
        );
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
