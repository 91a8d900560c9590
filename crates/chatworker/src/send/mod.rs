//! Sends one message the way a good citizen of the Chat API does: within
//! the write quotas ([`quota`]), retrying transient failures with
//! exponential backoff and jitter ([`retry`]), honouring `Retry-After`, and
//! bounded per delivery so that an event never sits on its lease for long.
//! Knows the Chat client's results; knows nothing of Pub/Sub or of handlers.

pub(crate) mod quota;
mod retry;
mod turn;

use crate::chat::ChatClient;
use crate::config::ChatSettings;
use crate::names::{MessageName, SpaceName};
use crate::ops::metrics::Metrics;
use crate::reply::SendError;
use crate::reply::compose::{Content, Created, NewMessage};
use quota::WriteQuota;
use retry::RetryPolicy;
use std::sync::Arc;
use std::time::Instant;
pub(crate) use turn::Turn;

/// Sends messages: quota, then the call, retried.
pub(crate) struct Sender {
    chat: ChatClient,
    quota: WriteQuota,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl Sender {
    /// A sender over `chat` with the settings' quotas and retry policy.
    pub(crate) fn new(chat: ChatClient, settings: &ChatSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            chat: chat.with_metrics(metrics.clone()),
            quota: WriteQuota::new(
                settings.space_writes_per_minute,
                settings.project_writes_per_minute,
                metrics.clone(),
            ),
            policy: RetryPolicy::from_settings(settings),
            metrics,
        }
    }

    /// The same sender, pacing its writes with the fleet's shared quota
    /// (the store's buckets) rather than this process's alone.
    pub(crate) fn sharing_quota(mut self, fleet: Arc<dyn crate::store::Fleet>) -> Self {
        self.quota = self.quota.shared(fleet);
        self
    }

    /// Creates `message`, waiting for a quota slot before each attempt and
    /// retrying transient failures until `turn`'s deadline. The error is the
    /// last attempt's.
    pub(crate) async fn create(
        &self,
        message: &NewMessage,
        turn: &dyn Turn,
    ) -> Result<Created, SendError> {
        self.write(&message.space, turn, || async {
            self.chat.create(message).await.map(|(created, _)| created)
        })
        .await
    }

    /// Writes over the app's message `name`, like [`Sender::create`] (an
    /// update is a write, within the same quotas).
    pub(crate) async fn update(
        &self,
        name: &MessageName,
        content: &Content,
        turn: &dyn Turn,
    ) -> Result<(), SendError> {
        self.write(&name.space(), turn, || self.chat.update(name, content))
            .await
    }

    /// Deletes the app's message `name`, like [`Sender::create`].
    pub(crate) async fn delete(
        &self,
        name: &MessageName,
        turn: &dyn Turn,
    ) -> Result<(), SendError> {
        self.write(&name.space(), turn, || self.chat.delete(name))
            .await
    }

    async fn write<T, F, Fut>(
        &self,
        space: &SpaceName,
        turn: &dyn Turn,
        call: F,
    ) -> Result<T, SendError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, SendError>>,
    {
        let mut delays = self.policy.delays();
        let mut attempt = 1;
        loop {
            self.quota.acquire(space, turn).await;
            // The fence is checked last before the call goes out, a token
            // refresh (the one wait left in it) being done first.
            self.chat.warm_credentials().await;
            turn.may_write()?;
            let (error, retry_after) = match call().await {
                Err(e @ SendError::Transient { retry_after, .. }) => (e, retry_after),
                done => return done,
            };
            let remaining = turn
                .retry_deadline()
                .saturating_duration_since(Instant::now());
            let Some(delay) = self.policy.next_delay(&mut delays, remaining, retry_after) else {
                return Err(error);
            };
            tracing::debug!(
                space = %space,
                attempt,
                delay = ?delay,
                error = %error,
                "Chat API call failed; retrying"
            );
            self.metrics.chat_retried();
            turn.release();
            tokio::time::sleep(delay).await;
            turn.reacquire().await;
            attempt += 1;
        }
    }
}
