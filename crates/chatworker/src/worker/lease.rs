//! A lane's claim as the replica that holds it sees it: the fence that
//! keeps a replica which stalled (a long pause, a frozen VM, a store it
//! could not reach) from acting on a lane another replica has taken since.
//!
//! Two checks, one on each side of the commit:
//! - the event's commit names the claim, and the store stores nothing
//!   unless the claim is still this holder's (its row locked to the end);
//! - before each write to Chat, the lease's own time is checked: it is
//!   counted from when each renewal was *asked for*, so it ends before the
//!   store's expiry (set when the renewal arrived), and a margin is kept
//!   for the write on its way. Past it, the replica writes nothing more for
//!   the lane: the next holder sends what is left, in order.
//!
//! What no fence covers: a write already on its way when the process
//! stalls, landing later than the margin. Chat has no conditional write.

use crate::store::Claim;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How much of a lease's time is kept for a write on its way: a write
/// starts only while at least this much is left.
const MARGIN: Duration = Duration::from_secs(1);

/// One lane's claim, held by this replica.
#[derive(Debug)]
pub(super) struct Lease {
    lane: String,
    holder: String,
    /// How long a claim lives from its renewal.
    ttl: Duration,
    /// The end of the claim by this replica's clock; `None` until claimed.
    until: Mutex<Option<Instant>>,
    /// Found lost: by the store, or by the lease's time running out. A
    /// lost lease is never renewed again: its driver stops.
    lost: AtomicBool,
}

impl Lease {
    pub(super) fn new(lane: &str, holder: &str, ttl: Duration) -> Self {
        Self {
            lane: lane.to_owned(),
            holder: holder.to_owned(),
            ttl,
            until: Mutex::new(None),
            lost: AtomicBool::new(false),
        }
    }

    fn until(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store renewed (or granted) the claim on a call asked at `asked`.
    pub(super) fn renewed(&self, asked: Instant) {
        let mut until = self.until();
        let renewed = asked + self.ttl;
        if until.is_none_or(|u| u < renewed) {
            *until = Some(renewed);
        }
    }

    /// Whether this replica may still act on the lane: the claim is not
    /// lost and enough of its time is left for a write. Once not, never
    /// again.
    pub(super) fn holds(&self) -> bool {
        if self.lost.load(Ordering::Acquire) {
            return false;
        }
        let left = self.until().is_some_and(|u| Instant::now() + MARGIN < u);
        if !left {
            self.lose();
        }
        left
    }

    /// The claim is lost.
    pub(super) fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// Whether the claim was found lost.
    pub(super) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// The claim, as a commit names it.
    pub(super) fn claim(&self) -> Claim {
        Claim {
            lane: self.lane.clone(),
            holder: self.holder.clone(),
            ttl: self.ttl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_ends_a_margin_before_its_time_and_stays_lost() {
        let lease = Lease::new("lane", "me", Duration::from_secs(5));
        assert!(!lease.holds(), "not held before it is claimed");
        let lease = Lease::new("lane", "me", Duration::from_secs(5));
        let now = Instant::now();
        lease.renewed(now);
        assert!(lease.holds());
        // Asked for 4.5 s ago: half a second left, less than the margin.
        lease.renewed(now - Duration::from_millis(4500));
        assert!(lease.holds(), "an older renewal does not shorten it");
        let stalled = Lease::new("lane", "me", Duration::from_secs(5));
        stalled.renewed(now - Duration::from_millis(4500));
        assert!(!stalled.holds(), "too little left for a write");
        stalled.renewed(Instant::now());
        assert!(!stalled.holds(), "a lost lease is not renewed back");
        assert!(stalled.is_lost());
        let fenced = Lease::new("lane", "me", Duration::from_secs(5));
        fenced.renewed(Instant::now());
        fenced.lose();
        assert!(!fenced.holds());
        assert_eq!(
            fenced.claim(),
            Claim {
                lane: "lane".into(),
                holder: "me".into(),
                ttl: Duration::from_secs(5)
            }
        );
    }
}
