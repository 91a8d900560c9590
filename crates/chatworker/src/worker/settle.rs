//! The ack decision: a pure function of what happened to an event.

use std::sync::Mutex;

/// What became of one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every reply was created (or already existed from an earlier delivery).
    Delivered,
    /// Nothing to send: the app had no reply, or a policy skipped the event
    /// (for example a message from another bot). The label says why.
    Skipped(&'static str),
    /// The payload is not a Chat event; the label is the decode error's reason.
    Undecodable(&'static str),
    /// Retrying cannot help (Chat answered 400/403/404, or the handler failed
    /// permanently); the label says which.
    Permanent(&'static str),
    /// A later delivery may succeed (429, 5xx, network, token endpoint, or the
    /// handler asked for a retry).
    Transient,
    /// Held back: an earlier event of its thread failed for now and has not
    /// been answered since, so this one comes back later, in its turn.
    Deferred,
    /// The handler panicked. `bounded`: the subscription counts delivery
    /// attempts (it has a dead-letter policy), so a redelivery cannot loop
    /// forever.
    Panicked {
        /// Whether Pub/Sub bounds the redeliveries.
        bounded: bool,
    },
}

impl Outcome {
    /// Why the event was acked without a reply, if it was: the label for the
    /// dropped-events counter and the dead-letter `chatworker_reason`.
    pub(crate) fn reason(&self) -> Option<&'static str> {
        match self {
            Self::Skipped(r) | Self::Undecodable(r) | Self::Permanent(r) => Some(r),
            Self::Panicked { bounded: false } => Some("handler_panic"),
            Self::Delivered
            | Self::Transient
            | Self::Deferred
            | Self::Panicked { bounded: true } => None,
        }
    }

    /// A panic no subscription policy bounds, set aside for good: copies
    /// of the event meet it and are set aside too, the handler not run.
    pub(crate) const SET_ASIDE: &'static str = "panicked:set_aside";
    /// An event whose last attempt was nacked (Pub/Sub dead-letters it).
    pub(crate) const GIVEN_UP: &'static str = "given_up";

    /// The outcome as a fleet's queue records it for the replicas that
    /// settle the event's deliveries.
    pub(crate) fn record(&self) -> String {
        match self {
            Self::Delivered => "delivered".into(),
            Self::Skipped(reason) => format!("skipped:{reason}"),
            Self::Permanent(reason) => format!("permanent:{reason}"),
            Self::Undecodable(reason) => format!("undecodable:{reason}"),
            Self::Panicked { .. } => "panicked".into(),
            Self::Transient | Self::Deferred => "transient".into(),
        }
    }

    /// A recorded outcome, read back by a replica whose delivery is
    /// `bounded` (the subscription counts its attempts). What it does not
    /// know (a newer replica's) is transient: nacked, so nothing is lost.
    pub(crate) fn from_record(record: &str, bounded: bool) -> Self {
        let (kind, reason) = record.split_once(':').unwrap_or((record, ""));
        match kind {
            "delivered" => Self::Delivered,
            "skipped" => Self::Skipped(label(reason)),
            "permanent" => Self::Permanent(label(reason)),
            "undecodable" => Self::Undecodable(label(reason)),
            "panicked" if reason == "set_aside" => Self::Panicked { bounded: false },
            "panicked" => Self::Panicked { bounded },
            _ => Self::Transient,
        }
    }
}

/// A reason read back from storage, as the metrics name it: the same
/// `&'static str` for the same text (reasons are the app's and the
/// worker's constants: few; past 256 distinct ones, "other").
pub(crate) fn label(reason: &str) -> &'static str {
    static LABELS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut labels = LABELS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(label) = labels.iter().find(|l| **l == reason) {
        return label;
    }
    if labels.len() >= 256 {
        return "other";
    }
    let label: &'static str = Box::leak(reason.to_owned().into_boxed_str());
    labels.push(label);
    label
}

/// What to do with the Pub/Sub message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// Acknowledge: done, never redelivered.
    Ack,
    /// Negative-acknowledge: Pub/Sub redelivers it (after the subscription's
    /// retry backoff, and to the dead-letter topic after its max attempts).
    Nack,
    /// Publish it to our dead-letter topic, then ack; nack if that fails.
    DeadLetter,
}

/// The settlement of an outcome. A failure that can never succeed is acked (or
/// dead-lettered when a topic is configured) so it cannot loop through
/// redelivery; a transient one is nacked so it is not lost. A panic may be
/// a bug that meets only this event or one that meets every event: it is
/// retried while Pub/Sub counts the attempts (a dead-letter policy forwards
/// it in the end), and otherwise set aside like a permanent failure.
pub(crate) fn settle(outcome: &Outcome, dead_letter_configured: bool) -> Settlement {
    match outcome {
        Outcome::Delivered | Outcome::Skipped(_) => Settlement::Ack,
        Outcome::Transient | Outcome::Deferred | Outcome::Panicked { bounded: true } => {
            Settlement::Nack
        }
        Outcome::Undecodable(_) | Outcome::Permanent(_) | Outcome::Panicked { bounded: false }
            if dead_letter_configured =>
        {
            Settlement::DeadLetter
        }
        Outcome::Undecodable(_) | Outcome::Permanent(_) | Outcome::Panicked { bounded: false } => {
            Settlement::Ack
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back_as_recorded() {
        for outcome in [
            Outcome::Delivered,
            Outcome::Skipped("no_reply"),
            Outcome::Permanent("handler_permanent"),
            Outcome::Undecodable("not_json"),
            Outcome::Panicked { bounded: true },
            Outcome::Transient,
        ] {
            assert_eq!(Outcome::from_record(&outcome.record(), true), outcome);
        }
        assert_eq!(
            Outcome::from_record("panicked", false),
            Outcome::Panicked { bounded: false },
            "bounded as the reading delivery is"
        );
        assert_eq!(
            Outcome::from_record(Outcome::SET_ASIDE, true),
            Outcome::Panicked { bounded: false },
            "set aside for good, whoever reads it"
        );
        assert_eq!(
            Outcome::from_record(Outcome::GIVEN_UP, true),
            Outcome::Transient
        );
        assert_eq!(
            Outcome::from_record("newer:thing", true),
            Outcome::Transient
        );
        assert!(std::ptr::eq(label("custom"), label("custom")));
    }

    #[test]
    fn decisions() {
        for dlq in [false, true] {
            assert_eq!(settle(&Outcome::Delivered, dlq), Settlement::Ack);
            assert_eq!(
                settle(&Outcome::Skipped("bot_sender"), dlq),
                Settlement::Ack
            );
            assert_eq!(settle(&Outcome::Transient, dlq), Settlement::Nack);
            assert_eq!(settle(&Outcome::Deferred, dlq), Settlement::Nack);
        }
        assert_eq!(
            settle(&Outcome::Permanent("chat_permanent"), false),
            Settlement::Ack
        );
        assert_eq!(
            settle(&Outcome::Undecodable("not_json"), false),
            Settlement::Ack
        );
        assert_eq!(
            settle(&Outcome::Permanent("chat_permanent"), true),
            Settlement::DeadLetter
        );
        assert_eq!(
            settle(&Outcome::Undecodable("not_json"), true),
            Settlement::DeadLetter
        );
        let bounded = Outcome::Panicked { bounded: true };
        let unbounded = Outcome::Panicked { bounded: false };
        for dlq in [false, true] {
            assert_eq!(settle(&bounded, dlq), Settlement::Nack);
        }
        assert_eq!(settle(&unbounded, false), Settlement::Ack);
        assert_eq!(settle(&unbounded, true), Settlement::DeadLetter);
        assert_eq!(unbounded.reason(), Some("handler_panic"));
        assert_eq!(bounded.reason(), None);
    }
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn only_unanswered_outcomes_have_a_reason() {
        assert_eq!(Outcome::Delivered.reason(), None);
        assert_eq!(Outcome::Transient.reason(), None);
        assert_eq!(Outcome::Skipped("bot_sender").reason(), Some("bot_sender"));
        assert_eq!(Outcome::Undecodable("not_json").reason(), Some("not_json"));
        assert_eq!(
            Outcome::Permanent("chat_permanent").reason(),
            Some("chat_permanent")
        );
    }
}
