//! How transient failures are retried within one delivery: exponential
//! backoff with jitter (`backon`), `Retry-After` honoured, all before the
//! delivery's deadline (which the worker derives from `chat.retry_budget`,
//! itself below the lease).

use crate::config::ChatSettings;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

/// How transient failures are retried within one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Attempts in all (1: no retry).
    pub attempts: u32,
    /// The first delay; it doubles, with jitter.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl RetryPolicy {
    /// The policy the settings describe.
    pub(crate) fn from_settings(chat: &ChatSettings) -> Self {
        Self {
            attempts: chat.retry_attempts,
            initial: chat.retry_initial_backoff,
            max: chat.retry_max_backoff,
        }
    }

    /// The delays between attempts, in order.
    pub(super) fn delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_max_times(self.attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
    }

    /// The wait before the next attempt, or `None` when the policy gives
    /// up: out of attempts, or the wait would not end before the delivery's
    /// deadline, `remaining` from now. `Retry-After` replaces the backoff
    /// delay when it is longer.
    pub(super) fn next_delay(
        &self,
        delays: &mut impl Iterator<Item = Duration>,
        remaining: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let backoff = delays.next()?;
        let delay = retry_after.map_or(backoff, |r| r.max(backoff));
        (delay <= remaining).then_some(delay)
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
    fn retry_after_wins_when_longer_and_the_deadline_bounds_the_wait() {
        let p = policy();
        let two_seconds = Duration::from_secs(2);
        let mut delays = p.delays();
        let d = p.next_delay(&mut delays, two_seconds, Some(Duration::from_millis(1500)));
        assert_eq!(d, Some(Duration::from_millis(1500)));
        // Shorter than the backoff: the backoff stands.
        let d = p.next_delay(&mut delays, two_seconds, Some(Duration::from_millis(1)));
        assert!(d.is_some_and(|d| d >= Duration::from_millis(200)));
        // Too close to the deadline: give up rather than hold the lease.
        let d = p.next_delay(&mut delays, Duration::from_millis(100), None);
        assert_eq!(d, None);
        let d = p.next_delay(&mut p.delays(), two_seconds, Some(Duration::from_secs(3)));
        assert_eq!(d, None, "a Retry-After beyond the deadline nacks at once");
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
