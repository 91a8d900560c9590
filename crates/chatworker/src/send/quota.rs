//! Client-side pacing of message writes, so that the worker stays inside
//! Chat's quotas (per space, shared by every app in it, and per project)
//! instead of collecting 429s. GCRA limiters from `governor`; knows nothing
//! of Pub/Sub or of what is written.

use super::turn::Turn;
use crate::names::SpaceName;
use crate::ops::metrics::Metrics;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How often the per-space state is pruned of spaces not written lately.
const PRUNE_EVERY: u64 = 4096;

/// Write slots per space and per project.
pub(crate) struct WriteQuota {
    space: Option<DefaultKeyedRateLimiter<String>>,
    project: Option<DefaultDirectRateLimiter>,
    acquired: AtomicU64,
    metrics: Arc<Metrics>,
}

impl WriteQuota {
    /// Limits of `per_space` and `per_project` writes per minute; 0 means no
    /// limit.
    pub(crate) fn new(per_space: u32, per_project: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            space: quota(per_space).map(RateLimiter::keyed),
            project: quota(per_project).map(RateLimiter::direct),
            acquired: AtomicU64::new(0),
            metrics,
        }
    }

    /// Waits until one more write into `space` fits both quotas, and takes
    /// the slot. While it waits, `turn` gives up its lane. Returns how long
    /// it waited.
    pub(crate) async fn acquire(&self, space: &SpaceName, turn: &dyn Turn) -> Duration {
        let started = Instant::now();
        let mut waited = false;
        if let Some(limiter) = &self.space {
            let key = space.to_string();
            if limiter.check_key(&key).is_err() {
                waited = true;
                turn.release();
                limiter.until_key_ready(&key).await;
            }
            if self.acquired.fetch_add(1, Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
        if let Some(limiter) = &self.project
            && limiter.check().is_err()
        {
            waited = true;
            turn.release();
            limiter.until_ready().await;
        }
        if waited {
            turn.reacquire().await;
            self.metrics.quota_waited(started.elapsed());
        }
        started.elapsed()
    }
}

/// `n` per minute, spread evenly, with a burst of one second's share: a
/// stricter reading of "n per minute" than a bucket of `n` would be, so that
/// a server counting in sliding windows sees no more than `n` either.
fn quota(per_minute: u32) -> Option<Quota> {
    let n = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new(per_minute / 60).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(Duration::from_secs(60) / n.get()).map(|q| q.allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(name: &str) -> SpaceName {
        SpaceName::parse(name).expect("space name")
    }

    #[tokio::test]
    async fn writes_into_one_space_are_paced() {
        let metrics = Arc::new(Metrics::default());
        // 600 per minute: one write per 100 ms, burst of 10.
        let quota = WriteQuota::new(600, 0, metrics.clone());
        let started = Instant::now();
        for _ in 0..15 {
            quota
                .acquire(&space("spaces/AAAA"), &Counted::default())
                .await;
        }
        // 10 at once, then 5 more at 100 ms each.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        assert!(metrics.snapshot().quota_waits >= 5);
    }

    #[tokio::test]
    async fn spaces_do_not_share_their_quota_but_share_the_project() {
        let metrics = Arc::new(Metrics::default());
        let quota = WriteQuota::new(60, 0, metrics.clone());
        for i in 0..20 {
            let waited = quota
                .acquire(&space(&format!("spaces/S{i:03}")), &Counted::default())
                .await;
            assert!(waited < Duration::from_millis(50), "{waited:?}");
        }
        assert_eq!(metrics.snapshot().quota_waits, 0);

        let quota = WriteQuota::new(0, 600, metrics.clone());
        let started = Instant::now();
        for i in 0..15 {
            quota
                .acquire(&space(&format!("spaces/S{i:03}")), &Counted::default())
                .await;
        }
        assert!(started.elapsed() >= Duration::from_millis(450));
    }

    /// A turn that counts how often it was given up and taken back.
    #[derive(Default)]
    struct Counted {
        released: std::sync::atomic::AtomicU32,
        reacquired: std::sync::atomic::AtomicU32,
    }

    impl Turn for Counted {
        fn release(&self) {
            self.released.fetch_add(1, Relaxed);
        }
        fn reacquire(&self) -> futures::future::BoxFuture<'_, ()> {
            self.reacquired.fetch_add(1, Relaxed);
            Box::pin(async {})
        }
        fn retry_deadline(&self) -> Instant {
            Instant::now()
        }
    }

    #[tokio::test]
    async fn a_write_that_waits_gives_up_its_lane_meanwhile() {
        let metrics = Arc::new(Metrics::default());
        let quota = WriteQuota::new(600, 0, metrics);
        let turn = Counted::default();
        for _ in 0..10 {
            quota.acquire(&space("spaces/HOT"), &turn).await;
        }
        assert_eq!(
            turn.released.load(Relaxed),
            0,
            "a burst's share waits for nothing"
        );
        quota.acquire(&space("spaces/HOT"), &turn).await;
        assert_eq!(
            turn.released.load(Relaxed),
            1,
            "the lane is given up while waiting"
        );
        assert_eq!(
            turn.reacquired.load(Relaxed),
            1,
            "and taken back before the write"
        );
    }

    #[test]
    fn zero_means_no_limit() {
        assert!(quota(0).is_none());
        let q = quota(60).expect("a quota");
        assert_eq!(q.burst_size().get(), 1);
        assert_eq!(q.replenish_interval(), Duration::from_secs(1));
        assert_eq!(quota(3000).expect("a quota").burst_size().get(), 50);
    }
}
