//! The ack decision: a pure function of what happened to an event.

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
