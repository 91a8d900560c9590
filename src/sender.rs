//! Sends one message the way a good citizen of the Chat API does: within
//! the write quotas ([`crate::quota`]), retrying transient failures with
//! exponential backoff and jitter (`backon`), honouring `Retry-After`, and
//! bounded per delivery so that an event never sits on its lease for long.
//! Knows the Chat client's result types; knows nothing of Pub/Sub.

use crate::chat::{ChatClient, Content, Created, NewMessage, SendError};
use crate::config::ChatSettings;
use crate::metrics::Metrics;
use crate::names::{MessageName, SpaceName};
use crate::quota::WriteQuota;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How transient failures are retried within one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1: no retry).
    pub attempts: u32,
    /// The first delay; it doubles, with jitter.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// The most time spent waiting between attempts of one send.
    pub budget: Duration,
}

impl RetryPolicy {
    /// The policy the settings describe.
    pub fn from_settings(chat: &ChatSettings) -> Self {
        Self {
            attempts: chat.retry_attempts,
            initial: chat.retry_initial_backoff,
            max: chat.retry_max_backoff,
            budget: chat.retry_budget,
        }
    }

    /// The delays between attempts, in order.
    fn delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_max_times(self.attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
    }

    /// The wait before the next attempt, or `None` when the policy gives
    /// up. `Retry-After` replaces the backoff delay when it is longer.
    fn next_delay(
        &self,
        delays: &mut impl Iterator<Item = Duration>,
        waited: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let backoff = delays.next()?;
        let delay = retry_after.map_or(backoff, |r| r.max(backoff));
        (waited + delay <= self.budget).then_some(delay)
    }
}

/// Sends messages: quota, then the call, retried.
pub struct Sender {
    chat: ChatClient,
    quota: WriteQuota,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl Sender {
    /// A sender over `chat` with the settings' quotas and retry policy.
    pub fn new(chat: ChatClient, settings: &ChatSettings, metrics: Arc<Metrics>) -> Self {
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

    /// Creates `message`, waiting for a quota slot before each attempt and
    /// retrying transient failures. The error is the last attempt's.
    pub async fn create(&self, message: &NewMessage) -> Result<Created, SendError> {
        self.write(&message.space, || self.chat.create(message))
            .await
    }

    /// Writes over the app's message `name`, like [`Sender::create`] (an
    /// update is a write, within the same quotas).
    pub async fn update(
        &self,
        name: &MessageName,
        content: &Content,
    ) -> Result<Created, SendError> {
        self.write(&name.space(), || self.chat.update(name, content))
            .await
    }

    /// Deletes the app's message `name`, like [`Sender::create`].
    pub async fn delete(&self, name: &MessageName) -> Result<(), SendError> {
        self.write(&name.space(), || async {
            self.chat
                .delete(name)
                .await
                .map(|()| Created::AlreadyExists)
        })
        .await
        .map(|_| ())
    }

    async fn write<F, Fut>(&self, space: &SpaceName, call: F) -> Result<Created, SendError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Created, SendError>>,
    {
        let mut delays = self.policy.delays();
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            self.quota.acquire(space).await;
            let error = match call().await {
                Err(e @ SendError::Transient { .. }) => e,
                done => return done,
            };
            let SendError::Transient { retry_after, .. } = &error else {
                unreachable!("matched above");
            };
            let Some(delay) = self.policy.next_delay(&mut delays, waited, *retry_after) else {
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
            let started = Instant::now();
            tokio::time::sleep(delay).await;
            waited += started.elapsed();
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            budget: Duration::from_secs(2),
        }
    }

    #[test]
    fn delays_grow_with_jitter_up_to_the_maximum_and_stop() {
        let delays: Vec<Duration> = policy().delays().collect();
        assert_eq!(delays.len(), 4, "5 attempts, 4 waits");
        for (i, d) in delays.iter().enumerate() {
            let base = Duration::from_millis(100 * (1 << i)).min(Duration::from_millis(400));
            // backon's jitter adds up to one more base delay.
            assert!(*d >= base && *d <= base * 2, "delay {i}: {d:?}");
        }
    }

    #[test]
    fn retry_after_wins_when_longer_and_the_budget_bounds_the_total() {
        let p = policy();
        let mut delays = p.delays();
        let d = p.next_delay(
            &mut delays,
            Duration::ZERO,
            Some(Duration::from_millis(1500)),
        );
        assert_eq!(d, Some(Duration::from_millis(1500)));
        // Shorter than the backoff: the backoff stands.
        let d = p.next_delay(&mut delays, Duration::ZERO, Some(Duration::from_millis(1)));
        assert!(d.is_some_and(|d| d >= Duration::from_millis(200)));
        // Past the budget: give up rather than hold the lease.
        let d = p.next_delay(&mut delays, Duration::from_millis(1900), None);
        assert_eq!(d, None);
        let d = p.next_delay(
            &mut p.delays(),
            Duration::ZERO,
            Some(Duration::from_secs(3)),
        );
        assert_eq!(d, None, "a Retry-After beyond the budget nacks at once");
    }

    #[test]
    fn one_attempt_means_no_retry() {
        let p = RetryPolicy {
            attempts: 1,
            ..policy()
        };
        assert_eq!(p.delays().count(), 0);
    }
}
