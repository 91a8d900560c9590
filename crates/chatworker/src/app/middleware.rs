//! Middleware: code that runs around every handler of an [`crate::App`].
//! A [`Layer`] gets the context and the rest of the chain ([`Next`]); it
//! may act before, call `next.run(ctx)` (or not), and act after.
//!
//! Built in: [`AllowList`] (answer only some spaces or domains) and
//! [`Logging`] (one line per event). Ignoring other apps' messages is built
//! into the app and on by default ([`crate::App::answer_bots`]).
//!
//! ```
//! use chatworker::middleware::{Logging, from_fn};
//! use chatworker::{App, Context, HandlerError, Reply};
//!
//! let app = App::new()
//!     .layer(Logging)
//!     // A layer of your own: refuse direct messages, time the rest.
//!     .layer(from_fn(|ctx: Context, next| async move {
//!         if ctx.event().space.kind == chatworker::event::SpaceKind::DirectMessage {
//!             return Ok(Reply::text("Talk to me in a space, please.").into());
//!         }
//!         let started = std::time::Instant::now();
//!         let result = next.run(ctx).await;
//!         tracing::debug!(elapsed = ?started.elapsed(), "handled");
//!         result
//!     }))
//!     .message(|_ctx, m| async move { Reply::text(m.text) });
//! # let _ = app;
//! ```

use super::context::Context;
use super::service::Answer;
use futures::future::BoxFuture;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

pub use super::handler::Outcome;

/// The innermost step of a chain: what the layers wrap (an app's routing).
pub(crate) type Endpoint<S> = Arc<dyn Fn(Context<S>) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// Code around every handler: before, after, or instead of it.
pub trait Layer<S>: Send + Sync + 'static {
    /// Handles the event, usually by calling `next.run(ctx)` somewhere.
    fn call(&self, ctx: Context<S>, next: Next<S>) -> impl Future<Output = Outcome> + Send;
}

/// [`Layer`] made object-safe, for the app's list of layers.
pub(crate) trait DynLayer<S>: Send + Sync {
    fn call_boxed(&self, ctx: Context<S>, next: Next<S>) -> BoxFuture<'_, Outcome>;
}

impl<S: Send + Sync + 'static, L: Layer<S>> DynLayer<S> for L {
    fn call_boxed(&self, ctx: Context<S>, next: Next<S>) -> BoxFuture<'_, Outcome> {
        Box::pin(self.call(ctx, next))
    }
}

/// The rest of the chain: the layers inside this one, then the handler.
pub struct Next<S> {
    layers: Arc<Vec<Arc<dyn DynLayer<S>>>>,
    index: usize,
    endpoint: Endpoint<S>,
}

impl<S: Send + Sync + 'static> Next<S> {
    /// The whole chain: `layers`, outermost first, around `endpoint`.
    pub(crate) fn new(layers: Arc<Vec<Arc<dyn DynLayer<S>>>>, endpoint: Endpoint<S>) -> Self {
        Self {
            layers,
            index: 0,
            endpoint,
        }
    }

    /// Runs the rest of the chain.
    pub fn run(self, ctx: Context<S>) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            match self.layers.get(self.index).cloned() {
                Some(layer) => {
                    let next = Self {
                        index: self.index + 1,
                        ..self
                    };
                    layer.call_boxed(ctx, next).await
                }
                None => (self.endpoint)(ctx).await,
            }
        })
    }
}

impl<S> std::fmt::Debug for Next<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next").field("index", &self.index).finish()
    }
}

/// A layer from an async function of the context and the rest of the chain.
pub fn from_fn<S, F, Fut>(f: F) -> FromFn<F>
where
    S: Send + Sync + 'static,
    F: Fn(Context<S>, Next<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    FromFn(f)
}

/// The layer [`from_fn`] makes.
#[derive(Clone, Debug)]
pub struct FromFn<F>(F);

impl<S, F, Fut> Layer<S> for FromFn<F>
where
    S: Send + Sync + 'static,
    F: Fn(Context<S>, Next<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    fn call(&self, ctx: Context<S>, next: Next<S>) -> impl Future<Output = Outcome> + Send {
        (self.0)(ctx, next)
    }
}

/// Answers only in some spaces, or only people of some email domains.
/// Other events are acked without an answer, logged and counted as
/// `not_allowed`. With both lists, an event must pass both.
///
/// ```
/// use chatworker::App;
/// use chatworker::middleware::AllowList;
///
/// let app = App::new().layer(AllowList::new().spaces(["spaces/AAA"]).domains(["example.com"]));
/// # let _ = app;
/// ```
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    spaces: Option<BTreeSet<String>>,
    domains: Option<BTreeSet<String>>,
}

impl AllowList {
    /// Allows everything until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only these spaces (`spaces/AAA`, or the bare `AAA`).
    pub fn spaces<I: IntoIterator<Item: AsRef<str>>>(mut self, spaces: I) -> Self {
        let spaces = spaces.into_iter().map(|s| {
            let s = s.as_ref().trim();
            match s.starts_with("spaces/") {
                true => s.to_owned(),
                false => format!("spaces/{s}"),
            }
        });
        self.spaces.get_or_insert_default().extend(spaces);
        self
    }

    /// Only people whose email address is in one of these domains
    /// (`example.com`). Events without the sender's email are refused.
    pub fn domains<I: IntoIterator<Item: AsRef<str>>>(mut self, domains: I) -> Self {
        let domains = domains.into_iter().map(|d| {
            d.as_ref()
                .trim()
                .trim_start_matches('@')
                .to_ascii_lowercase()
        });
        self.domains.get_or_insert_default().extend(domains);
        self
    }

    /// Why `event` is refused, or `None` when it is allowed.
    fn refusal(&self, event: &crate::Event) -> Option<&'static str> {
        if let Some(spaces) = &self.spaces
            && !spaces.contains(event.space.name.as_str())
        {
            return Some("space not allowed");
        }
        if let Some(domains) = &self.domains {
            let email = event.sender().and_then(|u| u.email.as_deref());
            let Some(email) = email else {
                return Some("no sender email to check the domain of");
            };
            let domain = email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
            if !domain.is_some_and(|d| domains.contains(&d)) {
                return Some("domain not allowed");
            }
        }
        None
    }
}

impl<S: Send + Sync + 'static> Layer<S> for AllowList {
    async fn call(&self, ctx: Context<S>, next: Next<S>) -> Outcome {
        match self.refusal(ctx.event()) {
            None => next.run(ctx).await,
            Some(why) => {
                tracing::info!(why, "event not allowed; not answered");
                Ok(Answer::Skipped("not_allowed"))
            }
        }
    }
}

/// Logs one line per event at `info`: its user, how many messages the
/// handler sent and returned, whether it skipped the event, how long it
/// took, and its error (the event's kind, space, thread and IDs come with
/// the worker's span). Message text is never logged.
#[derive(Clone, Copy, Debug, Default)]
pub struct Logging;

impl<S: Send + Sync + 'static> Layer<S> for Logging {
    async fn call(&self, ctx: Context<S>, next: Next<S>) -> Outcome {
        let started = Instant::now();
        let user = ctx
            .event()
            .sender()
            .and_then(|u| u.name.as_ref())
            .map(|n| n.to_string());
        let sent_before = ctx.position();
        let after = ctx.clone();
        let result = next.run(ctx).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        // The event's identifiers (kind, space, thread, message ID) are on
        // the worker's span around this line.
        match &result {
            Ok(answer) => tracing::info!(
                user,
                sent = after.position() - sent_before,
                replies = answer.replies().len(),
                skipped = answer.skipped(),
                elapsed_ms,
                "event handled"
            ),
            Err(error) => tracing::info!(user, elapsed_ms, %error, "event handler failed"),
        }
        result
    }
}
