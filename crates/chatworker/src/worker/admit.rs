//! Which events the pull loop takes, and which it returns to Pub/Sub for
//! later: what keeps one busy space from filling the flow-control budget
//! that every space shares.

use std::time::Duration;

/// The share of the budget (in quarters) past which the worker is crowded:
/// from there on, the last quarter is kept for spaces that hold few events.
const CROWDED_QUARTERS: usize = 3;

/// A space holding this share of the budget (1/16) or more is busy: once
/// the worker is crowded, it takes no more of that space's events.
const BUSY_SHARE: usize = 16;

/// The admission policy, fixed at start from the settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Admission {
    /// The events one space may hold at any time.
    space_cap: usize,
    /// Held events, or bytes, from which the worker is crowded.
    crowded_messages: usize,
    crowded_bytes: usize,
    /// Held events from which a space is busy.
    busy: usize,
}

/// What becomes of an event just received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Take,
    /// Its space holds what its write quota answers within half the lease.
    ReturnOverCap,
    /// The worker is crowded and its space busy: the rest of the budget is
    /// for quiet spaces.
    ReturnCrowded,
}

impl Admission {
    /// `per_minute`: a space's write quota (0: none); `lease`: the longest
    /// an event is held; `max_messages`, `max_bytes`: the flow-control
    /// budget (each at least 1).
    pub(super) fn new(
        per_minute: u32,
        lease: Duration,
        max_messages: usize,
        max_bytes: usize,
    ) -> Self {
        Self {
            space_cap: space_cap(per_minute, lease),
            crowded_messages: crowded(max_messages),
            crowded_bytes: crowded(max_bytes),
            busy: (max_messages / BUSY_SHARE).max(1),
        }
    }

    /// The verdict on an event of a space that holds `in_space` events,
    /// while the worker holds `messages` events of `bytes` bytes (none of
    /// these counting the event itself).
    pub(super) fn verdict(&self, in_space: usize, messages: usize, bytes: usize) -> Verdict {
        if in_space >= self.space_cap {
            return Verdict::ReturnOverCap;
        }
        let crowded = messages >= self.crowded_messages || bytes >= self.crowded_bytes;
        if crowded && in_space >= self.busy {
            return Verdict::ReturnCrowded;
        }
        Verdict::Take
    }
}

/// Three quarters of `budget`, at least 1.
fn crowded(budget: usize) -> usize {
    (budget / 4).saturating_mul(CROWDED_QUARTERS).max(1)
}

/// The events one space may hold: what its write quota answers in half the
/// lease (`per_minute` writes a minute), at least a minute's worth; no cap
/// without a quota.
fn space_cap(per_minute: u32, lease: Duration) -> usize {
    if per_minute == 0 {
        return usize::MAX;
    }
    let minutes = (lease.as_secs_f64() / 2.0 / 60.0).max(1.0);
    (f64::from(per_minute) * minutes) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(600);

    #[test]
    fn a_space_holds_what_its_quota_answers_in_half_the_lease() {
        assert_eq!(space_cap(60, LEASE), 300);
        // At least a minute's worth.
        assert_eq!(space_cap(60, Duration::from_secs(30)), 60);
        assert_eq!(space_cap(0, LEASE), usize::MAX);
        let admission = Admission::new(60, LEASE, 100_000, usize::MAX);
        assert_eq!(admission.verdict(299, 0, 0), Verdict::Take);
        assert_eq!(admission.verdict(300, 0, 0), Verdict::ReturnOverCap);
    }

    #[test]
    fn the_last_quarter_of_the_budget_is_for_quiet_spaces() {
        // 1,000 events: crowded from 750, busy from 62.
        let admission = Admission::new(60, LEASE, 1_000, 100 << 20);
        assert_eq!(admission.verdict(200, 749, 0), Verdict::Take);
        assert_eq!(admission.verdict(62, 750, 0), Verdict::ReturnCrowded);
        assert_eq!(admission.verdict(61, 999, 0), Verdict::Take);
        assert_eq!(admission.verdict(0, 999, 0), Verdict::Take);
        // Crowded by bytes as well.
        assert_eq!(admission.verdict(62, 10, 75 << 20), Verdict::ReturnCrowded);
        // Four busy spaces at the quota cap cannot fill the budget.
        let admission = Admission::new(60, LEASE, 1_000, usize::MAX);
        let held = 4 * 187;
        assert_eq!(admission.verdict(187, held, 0), Verdict::Take);
        assert_eq!(admission.verdict(187, held + 2, 0), Verdict::ReturnCrowded);
        assert_eq!(admission.verdict(0, held + 2, 0), Verdict::Take);
    }

    #[test]
    fn a_tiny_budget_still_admits_one_event_of_a_quiet_space() {
        let admission = Admission::new(0, LEASE, 1, 1);
        assert_eq!(admission.verdict(0, 0, 0), Verdict::Take);
        let admission = Admission::new(0, LEASE, 4, usize::MAX);
        // Crowded from 3 held; busy from 1.
        assert_eq!(admission.verdict(1, 3, 0), Verdict::ReturnCrowded);
        assert_eq!(admission.verdict(0, 3, 0), Verdict::Take);
    }
}
