//! Fault injection and quota enforcement for the simulator: what tests and
//! developers set through `chatworker sim` flags and `POST /_sim/control`.
//! Decides, per incoming call, whether it is answered normally, delayed, or
//! failed, and why. Knows nothing of messages.

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// The settings a control request may change; every field is optional and
/// only the fields given change (`POST /_sim/control` merges).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPatch {
    /// Delay added before every API answer, in milliseconds.
    pub latency_ms: Option<u64>,
    /// The next this-many API calls fail with `fail_status` (and count down).
    pub fail_next: Option<u32>,
    /// The HTTP status of those failures (default 503). An injected 409 is
    /// `ABORTED` (a concurrent change), never `ALREADY_EXISTS`, which only
    /// the message rules answer.
    pub fail_status: Option<u16>,
    /// The share of API calls, 0 to 1, answered with one of `error_statuses`.
    pub error_rate: Option<f64>,
    /// The statuses random failures are drawn from (default 429, 500, 503).
    pub error_statuses: Option<Vec<u16>>,
    /// `Retry-After` seconds sent with 429 and 503 answers; 0 sends none.
    pub retry_after_seconds: Option<u64>,
    /// Starts a full API outage (every call 503) lasting this long, from now;
    /// 0 ends a running one.
    pub outage_ms: Option<u64>,
    /// Starts a token endpoint outage (the OAuth and metadata token routes
    /// answer 503) lasting this long, from now; 0 ends a running one.
    pub token_outage_ms: Option<u64>,
    /// Lifetime of issued access tokens, in seconds (Google's: 3600).
    pub token_lifetime_seconds: Option<u64>,
    /// Enforces Chat's write quota per space, per minute; 0 turns it off.
    pub space_writes_per_minute: Option<u32>,
    /// Enforces the write quota per project, per minute; 0 turns it off.
    pub project_writes_per_minute: Option<u32>,
}

/// The current settings, as `GET /_sim/control` shows them.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlView {
    latency_ms: u64,
    fail_next: u32,
    fail_status: u16,
    error_rate: f64,
    error_statuses: Vec<u16>,
    retry_after_seconds: u64,
    outage_remaining_ms: u64,
    token_outage_remaining_ms: u64,
    token_lifetime_seconds: u64,
    space_writes_per_minute: u32,
    project_writes_per_minute: u32,
}

/// A control request that cannot be applied.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadControl(pub String);

/// Why a call is failed instead of answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Fault {
    /// `failNext` or `errorRate`.
    Injected,
    /// A full outage window.
    Outage,
    /// The token endpoint is down.
    TokenOutage,
    /// The space's or the project's write quota is used up.
    Quota,
}

/// What to do with one call.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Wait this long first.
    pub delay: Duration,
    /// Fail with this status, for this reason, instead of answering.
    pub fail: Option<(u16, Fault)>,
    /// Send `Retry-After` with the failure.
    pub retry_after: Option<u64>,
}

/// What a call is, as far as faults go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind<'a> {
    /// A token request (OAuth token endpoint or metadata server).
    Token,
    /// A Chat API read.
    Read,
    /// A Chat API message write into this space (`spaces/…`).
    Write(&'a str),
}

/// The fault state.
pub struct Faults {
    latency: Duration,
    fail_next: u32,
    fail_status: u16,
    error_rate: f64,
    error_statuses: Vec<u16>,
    retry_after: u64,
    outage_until: Option<Instant>,
    token_outage_until: Option<Instant>,
    token_lifetime: Duration,
    space_quota: u32,
    project_quota: u32,
    space_limiter: Option<DefaultKeyedRateLimiter<String>>,
    project_limiter: Option<DefaultDirectRateLimiter>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            fail_next: 0,
            fail_status: 503,
            error_rate: 0.0,
            error_statuses: vec![429, 500, 503],
            retry_after: 0,
            outage_until: None,
            token_outage_until: None,
            token_lifetime: super::auth::TOKEN_LIFETIME,
            space_quota: 0,
            project_quota: 0,
            space_limiter: None,
            project_limiter: None,
        }
    }
}

fn remaining(until: Option<Instant>) -> u64 {
    until.map_or(0, |u| {
        u64::try_from(u.saturating_duration_since(Instant::now()).as_millis()).unwrap_or(u64::MAX)
    })
}

/// Chat's quota as the server enforces it: `n` per minute, a bucket of `n`.
fn bucket(per_minute: u32) -> Option<Quota> {
    NonZeroU32::new(per_minute).map(Quota::per_minute)
}

impl Faults {
    /// Applies `patch`; nothing changes when it is invalid.
    pub fn apply(&mut self, patch: ControlPatch) -> Result<(), BadControl> {
        if let Some(rate) = patch.error_rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(BadControl(format!(
                "errorRate {rate} is not between 0 and 1"
            )));
        }
        let statuses = patch.error_statuses.as_deref().unwrap_or(&[]);
        for &status in statuses.iter().chain(patch.fail_status.as_slice()) {
            if !(400..=599).contains(&status) {
                return Err(BadControl(format!("{status} is not an HTTP error status")));
            }
        }
        if patch.error_statuses.as_ref().is_some_and(Vec::is_empty) {
            return Err(BadControl("errorStatuses must not be empty".into()));
        }
        if patch.token_lifetime_seconds == Some(0) {
            return Err(BadControl("tokenLifetimeSeconds must be above 0".into()));
        }
        let from_now = |ms: u64| (ms > 0).then(|| Instant::now() + Duration::from_millis(ms));
        if let Some(ms) = patch.latency_ms {
            self.latency = Duration::from_millis(ms);
        }
        if let Some(n) = patch.fail_next {
            self.fail_next = n;
        }
        if let Some(status) = patch.fail_status {
            self.fail_status = status;
        }
        if let Some(rate) = patch.error_rate {
            self.error_rate = rate;
        }
        if let Some(statuses) = patch.error_statuses {
            self.error_statuses = statuses;
        }
        if let Some(seconds) = patch.retry_after_seconds {
            self.retry_after = seconds;
        }
        if let Some(ms) = patch.outage_ms {
            self.outage_until = from_now(ms);
        }
        if let Some(ms) = patch.token_outage_ms {
            self.token_outage_until = from_now(ms);
        }
        if let Some(seconds) = patch.token_lifetime_seconds {
            self.token_lifetime = Duration::from_secs(seconds);
        }
        if let Some(n) = patch.space_writes_per_minute {
            self.space_quota = n;
            self.space_limiter = bucket(n).map(RateLimiter::keyed);
        }
        if let Some(n) = patch.project_writes_per_minute {
            self.project_quota = n;
            self.project_limiter = bucket(n).map(RateLimiter::direct);
        }
        Ok(())
    }

    /// The settings now.
    pub fn view(&self) -> ControlView {
        ControlView {
            latency_ms: u64::try_from(self.latency.as_millis()).unwrap_or(u64::MAX),
            fail_next: self.fail_next,
            fail_status: self.fail_status,
            error_rate: self.error_rate,
            error_statuses: self.error_statuses.clone(),
            retry_after_seconds: self.retry_after,
            outage_remaining_ms: remaining(self.outage_until),
            token_outage_remaining_ms: remaining(self.token_outage_until),
            token_lifetime_seconds: self.token_lifetime.as_secs(),
            space_writes_per_minute: self.space_quota,
            project_writes_per_minute: self.project_quota,
        }
    }

    /// The lifetime of access tokens issued now.
    pub fn token_lifetime(&self) -> Duration {
        self.token_lifetime
    }

    /// Decides one call. Only calls answered normally take a quota slot.
    pub fn judge(&mut self, call: CallKind<'_>) -> Verdict {
        let now = Instant::now();
        let retry_after = |status: u16, seconds: u64| {
            (matches!(status, 429 | 503) && seconds > 0).then_some(seconds)
        };
        let fail = |status: u16, fault: Fault, seconds: u64| Verdict {
            delay: self.latency,
            fail: Some((status, fault)),
            retry_after: retry_after(status, seconds),
        };
        if let CallKind::Token = call {
            if self.token_outage_until.is_some_and(|u| now < u) {
                return fail(503, Fault::TokenOutage, 0);
            }
            return Verdict {
                delay: Duration::ZERO,
                fail: None,
                retry_after: None,
            };
        }
        if self.outage_until.is_some_and(|u| now < u) {
            return fail(503, Fault::Outage, self.retry_after);
        }
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return fail(self.fail_status, Fault::Injected, self.retry_after);
        }
        if self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate {
            let i = rand::random_range(0..self.error_statuses.len());
            let status = self.error_statuses[i];
            return fail(status, Fault::Injected, self.retry_after);
        }
        if let CallKind::Write(space) = call {
            let space_full = self
                .space_limiter
                .as_ref()
                .is_some_and(|l| l.check_key(&space.to_owned()).is_err());
            let project_full = !space_full
                && self
                    .project_limiter
                    .as_ref()
                    .is_some_and(|l| l.check().is_err());
            if space_full || project_full {
                return fail(429, Fault::Quota, self.retry_after);
            }
        }
        Verdict {
            delay: self.latency,
            fail: None,
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str) -> ControlPatch {
        serde_json::from_str(json).expect("a valid patch")
    }

    #[test]
    fn patches_merge_and_bad_ones_change_nothing() {
        let mut f = Faults::default();
        f.apply(patch(r#"{"latencyMs": 5, "errorRate": 0.5}"#))
            .expect("applies");
        f.apply(patch(r#"{"retryAfterSeconds": 2}"#))
            .expect("applies");
        let v = f.view();
        assert_eq!(
            (v.latency_ms, v.error_rate, v.retry_after_seconds),
            (5, 0.5, 2)
        );
        assert!(
            f.apply(patch(r#"{"errorRate": 2, "latencyMs": 9}"#))
                .is_err()
        );
        assert_eq!(f.view().latency_ms, 5);
        assert!(f.apply(patch(r#"{"errorStatuses": [200]}"#)).is_err());
        assert!(serde_json::from_str::<ControlPatch>(r#"{"nope": 1}"#).is_err());
    }

    #[test]
    fn outages_fail_every_call_of_their_kind_until_they_end() {
        let mut f = Faults::default();
        f.apply(patch(r#"{"outageMs": 60000, "retryAfterSeconds": 3}"#))
            .expect("applies");
        let v = f.judge(CallKind::Write("spaces/A"));
        assert_eq!(v.fail, Some((503, Fault::Outage)));
        assert_eq!(v.retry_after, Some(3));
        assert_eq!(f.judge(CallKind::Token).fail, None);
        f.apply(patch(r#"{"outageMs": 0, "tokenOutageMs": 60000}"#))
            .expect("applies");
        assert_eq!(f.judge(CallKind::Read).fail, None);
        assert_eq!(
            f.judge(CallKind::Token).fail,
            Some((503, Fault::TokenOutage))
        );
    }

    #[test]
    fn quotas_count_writes_per_space_and_per_project() {
        let mut f = Faults::default();
        f.apply(patch(
            r#"{"spaceWritesPerMinute": 3, "projectWritesPerMinute": 5}"#,
        ))
        .expect("applies");
        for _ in 0..3 {
            assert_eq!(f.judge(CallKind::Write("spaces/A")).fail, None);
        }
        assert_eq!(
            f.judge(CallKind::Write("spaces/A")).fail,
            Some((429, Fault::Quota))
        );
        assert_eq!(f.judge(CallKind::Read).fail, None, "reads are not writes");
        assert_eq!(f.judge(CallKind::Write("spaces/B")).fail, None);
        assert_eq!(f.judge(CallKind::Write("spaces/B")).fail, None);
        // Five writes answered: the project is full, whatever the space.
        assert_eq!(
            f.judge(CallKind::Write("spaces/C")).fail,
            Some((429, Fault::Quota))
        );
    }

    #[test]
    fn an_error_rate_fails_about_that_share() {
        let mut f = Faults::default();
        f.apply(patch(r#"{"errorRate": 0.1}"#)).expect("applies");
        let failed = (0..10_000)
            .filter(|_| f.judge(CallKind::Read).fail.is_some())
            .count();
        assert!((700..1300).contains(&failed), "{failed}");
    }
}
