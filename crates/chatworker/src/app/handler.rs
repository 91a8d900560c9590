//! What handlers take and return: the inputs an [`crate::App`] hands each
//! kind of handler ([`Command`], [`Matched`], [`Added`], [`Removed`],
//! [`Click`]), and what they may return ([`IntoReplies`]).

use super::HandlerError;
use super::context::Context;
use super::service::Answer;
use crate::event::{Action, AppCommandType, Message, Space};
use crate::names::MessageName;
use crate::reply::Reply;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

/// What a handler chain produces: an answer, or the failure.
pub type Outcome = Result<Answer, HandlerError>;

/// A handler with its input type, its return type erased.
pub(crate) type Erased<S, T> =
    Arc<dyn Fn(Context<S>, T) -> BoxFuture<'static, Outcome> + Send + Sync>;

pub(crate) fn erase<S, T, F, Fut>(handler: F) -> Erased<S, T>
where
    F: Fn(Context<S>, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output: IntoReplies> + Send + 'static,
{
    Arc::new(move |ctx, input| {
        let fut = handler(ctx, input);
        Box::pin(async move { fut.await.into_answer() })
    })
}

/// What a handler may return: nothing, a reply, several, a [`Skip`], an
/// [`Answer`], or a `Result` of those whose error converts into a
/// [`HandlerError`].
pub trait IntoReplies {
    /// The answer (replies to send after the handler, or a skip), or the
    /// handler's failure.
    fn into_answer(self) -> Outcome;
}

impl IntoReplies for () {
    fn into_answer(self) -> Outcome {
        Ok(Answer::none())
    }
}

impl IntoReplies for Reply {
    fn into_answer(self) -> Outcome {
        Ok(Answer::Replies(vec![self]))
    }
}

impl IntoReplies for Vec<Reply> {
    fn into_answer(self) -> Outcome {
        Ok(Answer::Replies(self))
    }
}

impl IntoReplies for Option<Reply> {
    fn into_answer(self) -> Outcome {
        Ok(Answer::Replies(self.into_iter().collect()))
    }
}

impl IntoReplies for String {
    fn into_answer(self) -> Outcome {
        Ok(Answer::Replies(vec![Reply::text(self)]))
    }
}

impl IntoReplies for &'static str {
    fn into_answer(self) -> Outcome {
        Ok(Answer::Replies(vec![Reply::text(self)]))
    }
}

impl<T: IntoReplies, E: Into<HandlerError>> IntoReplies for Result<T, E> {
    fn into_answer(self) -> Outcome {
        self.map_err(Into::into).and_then(IntoReplies::into_answer)
    }
}

impl IntoReplies for Answer {
    fn into_answer(self) -> Outcome {
        Ok(self)
    }
}

/// A handler's way to leave an event unanswered on purpose: the event is
/// acked and counted under the reason, a short fixed label (it becomes a
/// metric label, so never build it from user input).
///
/// ```
/// use chatworker::{Answer, Context, Message, Reply, Skip};
///
/// async fn only_questions(_ctx: Context, m: Message) -> Answer {
///     match m.argument().ends_with('?') {
///         true => Reply::text("Good question.").into(),
///         false => Skip("not_a_question").into(),
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skip(pub &'static str);

impl IntoReplies for Skip {
    fn into_answer(self) -> Outcome {
        Ok(Answer::Skipped(self.0))
    }
}

impl From<Skip> for Answer {
    fn from(skip: Skip) -> Self {
        Self::Skipped(skip.0)
    }
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Self::Replies(vec![reply])
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
