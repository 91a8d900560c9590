//! Order within a thread across a nack. When an event fails for now and is
//! nacked, the events after it in its lane must not be answered before it:
//! they are held back (nacked after a short pause, to come back later) until
//! the failed event's redelivery is answered, or Pub/Sub gives up on it, or
//! the hold expires. A pure record, no I/O: the worker asks and reports.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many holds are kept before expired ones are swept.
const SWEEP_ABOVE: usize = 1024;

/// The lanes held back by an event that failed for now.
#[derive(Debug)]
pub(super) struct Order {
    holds: Mutex<HashMap<String, Hold>>,
    /// How long a hold lasts without news of its event.
    expiry: Duration,
}

#[derive(Debug)]
struct Hold {
    /// The event that failed, by identity.
    identity: String,
    since: Instant,
}

impl Order {
    /// Holds that last `expiry` at most.
    pub(super) fn new(expiry: Duration) -> Self {
        Self {
            holds: Mutex::default(),
            expiry,
        }
    }

    fn holds(&self) -> std::sync::MutexGuard<'_, HashMap<String, Hold>> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `identity` must wait: another event of `lane` failed for now
    /// and has not been answered since.
    pub(super) fn must_wait(&self, lane: &str, identity: &str) -> bool {
        let mut holds = self.holds();
        match holds.get(lane) {
            Some(hold) if hold.since.elapsed() > self.expiry => {
                holds.remove(lane);
                false
            }
            Some(hold) => hold.identity != identity,
            None => false,
        }
    }

    /// `identity` failed for now and was nacked: its lane waits for it,
    /// unless this was its last attempt (Pub/Sub forwards it to the
    /// dead-letter topic next, and it will not come back).
    pub(super) fn failed(&self, lane: &str, identity: &str, last_attempt: bool) {
        let mut holds = self.holds();
        if last_attempt {
            if holds.get(lane).is_some_and(|h| h.identity == identity) {
                holds.remove(lane);
            }
            return;
        }
        if holds.len() > SWEEP_ABOVE {
            let expiry = self.expiry;
            holds.retain(|_, h| h.since.elapsed() <= expiry);
        }
        holds
            .entry(lane.to_owned())
            .and_modify(|h| {
                // The first failure holds the lane; a later one of the same
                // event keeps it held from now.
                if h.identity == identity {
                    h.since = Instant::now();
                }
            })
            .or_insert_with(|| Hold {
                identity: identity.to_owned(),
                since: Instant::now(),
            });
    }

    /// `identity` was settled for good (answered, or set aside): its lane
    /// goes on.
    pub(super) fn settled(&self, lane: &str, identity: &str) {
        let mut holds = self.holds();
        if holds.get(lane).is_some_and(|h| h.identity == identity) {
            holds.remove(lane);
        }
    }

    /// Lanes held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.holds().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_event_holds_its_lane_until_it_is_answered() {
        let order = Order::new(Duration::from_secs(60));
        assert!(!order.must_wait("t", "b"));
        order.failed("t", "a", false);
        assert!(order.must_wait("t", "b"), "b waits for a");
        assert!(!order.must_wait("t", "a"), "a's redelivery goes ahead");
        assert!(!order.must_wait("u", "c"), "other lanes go on");
        // b's own failure does not take the lane from a.
        order.failed("t", "b", false);
        assert!(order.must_wait("t", "b"));
        order.settled("t", "b");
        assert!(order.must_wait("t", "b"), "only a releases the lane");
        order.settled("t", "a");
        assert!(!order.must_wait("t", "b"));
        assert_eq!(order.held(), 0);
    }

    #[test]
    fn a_last_attempt_or_an_expired_hold_lets_the_lane_go_on() {
        let order = Order::new(Duration::from_secs(60));
        order.failed("t", "a", false);
        order.failed("t", "a", true);
        assert!(
            !order.must_wait("t", "b"),
            "a goes to the dead-letter topic"
        );
        let order = Order::new(Duration::ZERO);
        order.failed("t", "a", false);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!order.must_wait("t", "b"), "expired");
        assert_eq!(order.held(), 0);
    }
}
