//! Whether the worker is alive and ready, for `/healthz` and `/readyz`
//! ([`super::server`]). The pull loop, the source and the credentials
//! check report here; nothing here knows Pub/Sub or HTTP.
//!
//! - Alive: the pull loop turns (it beats every few seconds, busy or idle),
//!   and Pub/Sub has not been unreachable for longer than `stall_after`.
//!   Idle by choice (no events) is alive.
//! - Ready: a Chat API token was obtained, the subscription answered, the
//!   streaming pull's link says it is up (when one reports), no outage is
//!   open, and the worker is not shutting down.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

const UNKNOWN: u8 = 0;
const OK: u8 = 1;
const FAILED: u8 = 2;

/// The worker's health, updated by its parts.
#[derive(Debug)]
pub(crate) struct Status {
    started: Instant,
    stall_after: Duration,
    /// Milliseconds since `started` at the last beat of the pull loop.
    beat_ms: AtomicU64,
    /// Milliseconds since `started` when the open outage began, plus one
    /// (0: none open).
    outage_ms: AtomicU64,
    credentials: AtomicU8,
    subscription: AtomicBool,
    stopping: AtomicBool,
    /// The streaming pull's link, when one reports: `Err(why)` while down.
    link: std::sync::OnceLock<LinkCheck>,
    /// Why the store (a fleet's) is unavailable, while it is.
    store: std::sync::Mutex<Option<String>>,
}

/// Whether the streaming pull's link is up; `Err(why)` when not.
pub(crate) struct LinkCheck(pub(crate) Box<dyn Fn() -> Result<(), String> + Send + Sync>);

impl std::fmt::Debug for LinkCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkCheck")
    }
}

impl Status {
    /// A worker just starting; it is unhealthy once it stalls for `stall_after`.
    pub(crate) fn new(stall_after: Duration) -> Self {
        Self {
            started: Instant::now(),
            stall_after,
            beat_ms: AtomicU64::new(0),
            outage_ms: AtomicU64::new(0),
            credentials: AtomicU8::new(UNKNOWN),
            subscription: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            link: std::sync::OnceLock::new(),
            store: std::sync::Mutex::new(None),
        }
    }

    /// From now on readiness also asks `check` (the first one given wins).
    pub(crate) fn watch_link(&self, check: LinkCheck) {
        let _ = self.link.set(check);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The pull loop turned.
    pub(crate) fn beat(&self) {
        self.beat_ms.store(self.now_ms(), Relaxed);
    }

    /// The credentials check's result.
    pub(crate) fn credentials(&self, ok: bool) {
        self.credentials
            .store(if ok { OK } else { FAILED }, Relaxed);
    }

    /// Whether Chat API credentials were obtained (or a call succeeded).
    pub(crate) fn has_credentials(&self) -> bool {
        self.credentials.load(Relaxed) == OK
    }

    /// The subscription answered at start-up.
    pub(crate) fn subscription_reachable(&self) {
        self.subscription.store(true, Relaxed);
    }

    /// Pub/Sub became unreachable.
    pub(crate) fn outage_started(&self) {
        let _ = self
            .outage_ms
            .compare_exchange(0, self.now_ms() + 1, Relaxed, Relaxed);
    }

    /// Pub/Sub answers again.
    pub(crate) fn outage_ended(&self) {
        self.outage_ms.store(0, Relaxed);
    }

    /// The store answered (`None`) or failed (`Some(why)`).
    pub(crate) fn store(&self, unavailable: Option<String>) {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if *store != unavailable {
            *store = unavailable;
        }
    }

    /// The worker stopped taking events.
    pub(crate) fn stopping(&self) {
        self.stopping.store(true, Relaxed);
    }

    fn outage(&self) -> Option<Duration> {
        match self.outage_ms.load(Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(
                self.now_ms().saturating_sub(since - 1),
            )),
        }
    }

    /// `Ok(detail)` when alive, `Err(why)` when not.
    pub(crate) fn liveness(&self) -> Result<String, String> {
        let quiet = Duration::from_millis(self.now_ms().saturating_sub(self.beat_ms.load(Relaxed)));
        if quiet > self.stall_after {
            return Err(format!("the pull loop has not turned for {quiet:?}"));
        }
        match self.outage() {
            Some(down) if down > self.stall_after => Err(format!(
                "Pub/Sub unreachable for {down:?} (over {:?})",
                self.stall_after
            )),
            Some(down) => Ok(format!(
                "alive; Pub/Sub unreachable for {down:?}, reconnecting"
            )),
            None => Ok("alive".into()),
        }
    }

    /// `Ok(detail)` when ready for events, `Err(why)` when not.
    pub(crate) fn readiness(&self) -> Result<String, String> {
        if self.stopping.load(Relaxed) {
            return Err("shutting down".into());
        }
        match self.credentials.load(Relaxed) {
            OK => {}
            FAILED => return Err("no Chat API token (see the worker's log)".into()),
            _ => return Err("no Chat API token yet".into()),
        }
        // The link first: when Pub/Sub cannot be reached, it has the cause.
        if let Some(check) = self.link.get() {
            (check.0)()?;
        }
        if !self.subscription.load(Relaxed) {
            return Err("the subscription has not answered yet".into());
        }
        if let Some(down) = self.outage() {
            return Err(format!("Pub/Sub unreachable for {down:?}"));
        }
        if let Some(why) = &*self.store.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(format!(
                "the store is unavailable (work waits until it is back): {why}"
            ));
        }
        Ok("ready".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_while_the_store_is_away() {
        let s = Status::new(Duration::from_secs(60));
        s.beat();
        s.credentials(true);
        s.subscription_reachable();
        assert!(s.readiness().is_ok());
        s.store(Some("PostgreSQL: connection refused".into()));
        let why = s.readiness().expect_err("the store is away");
        assert!(
            why.contains("store") && why.contains("connection refused"),
            "{why}"
        );
        assert!(s.liveness().is_ok(), "alive while it waits");
        s.store(None);
        assert!(s.readiness().is_ok());
    }

    #[test]
    fn ready_once_credentials_and_subscription_are_good() {
        let s = Status::new(Duration::from_secs(60));
        s.beat();
        assert!(s.liveness().is_ok());
        assert!(s.readiness().is_err());
        s.credentials(true);
        assert!(
            s.readiness()
                .expect_err("no subscription")
                .contains("subscription")
        );
        s.subscription_reachable();
        assert_eq!(s.readiness(), Ok("ready".into()));
        s.outage_started();
        assert!(s.readiness().is_err());
        assert!(
            s.liveness()
                .expect("a short outage is alive")
                .contains("reconnecting")
        );
        s.outage_ended();
        assert!(s.readiness().is_ok());
        let up = std::sync::Arc::new(AtomicBool::new(false));
        let link = up.clone();
        s.watch_link(LinkCheck(Box::new(move || match link.load(Relaxed) {
            true => Ok(()),
            false => Err("the pull has not connected".into()),
        })));
        assert_eq!(s.readiness(), Err("the pull has not connected".into()));
        up.store(true, Relaxed);
        assert!(s.readiness().is_ok());
        s.stopping();
        assert_eq!(s.readiness(), Err("shutting down".into()));
        assert!(s.liveness().is_ok(), "draining is alive");
    }

    #[test]
    fn a_stalled_loop_or_a_long_outage_is_not_alive() {
        let s = Status::new(Duration::from_millis(50));
        s.beat();
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.liveness().expect_err("stalled").contains("not turned"));
        s.beat();
        s.outage_started();
        std::thread::sleep(Duration::from_millis(80));
        s.beat();
        assert!(
            s.liveness()
                .expect_err("long outage")
                .contains("unreachable")
        );
    }
}
