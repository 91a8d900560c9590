//! Deterministic client message IDs: a pure function of the event's identity and
//! the reply's index, so the same event yields the same IDs in any process, and
//! a redelivered or duplicated event cannot produce a second visible message.

use crate::names::ClientMessageId;
use sha2::{Digest, Sha256};

/// Bumping this would change every ID: never do it casually, or events in
/// flight during a deploy would be answered twice.
const DOMAIN: &[u8] = b"chatworker/reply-id/v1\n";

/// Hex digits kept from the digest: 128 bits, ample against collisions, and
/// `client-` plus 32 leaves room under Chat's 63-character limit.
const HEX_DIGITS: usize = 32;

/// The message ID of the reply named `key` to the event `identity`: a
/// domain of its own, so that no key can give the ID of a position.
pub(crate) fn keyed_id(identity: &str, key: &str) -> ClientMessageId {
    reply_id(&format!("{identity}\nkey\n{key}"), 0)
}

/// The request ID sent with an app-chosen message ID: derived from the
/// event and the position like a reply's own ID, so that a redelivery finds
/// its message while another event that chose the same ID does not.
pub(crate) fn request_id(identity: &str, index: usize) -> String {
    reply_id(&format!("{identity}\nrequest"), index)
        .as_str()
        .trim_start_matches(ClientMessageId::PREFIX)
        .to_owned()
}

/// The message ID of reply number `index` (0-based) to the event `identity`.
pub(crate) fn reply_id(identity: &str, index: usize) -> ClientMessageId {
    let mut hash = Sha256::new();
    hash.update(DOMAIN);
    hash.update(identity.as_bytes());
    hash.update(b"\n");
    hash.update(index.to_string().as_bytes());
    let digest = hex::encode(hash.finalize());
    ClientMessageId::new(&format!(
        "{}{}",
        ClientMessageId::PREFIX,
        &digest[..HEX_DIGITS]
    ))
    .expect("`client-` plus lowercase hex is always a valid message ID")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_distinct_and_valid() {
        let a0 = reply_id("event-a", 0);
        assert_eq!(a0, reply_id("event-a", 0), "same input, same ID");
        assert_ne!(a0, reply_id("event-a", 1));
        assert_ne!(a0, reply_id("event-b", 0));
        assert_eq!(a0.as_str().len(), 39);
        // Pinned: a change here answers in-flight events twice after a deploy.
        assert_eq!(a0.as_str(), "client-60c9038a8be56630335ed0ec81760dc6");
        assert!(a0.as_str().starts_with("client-"));
        let k = keyed_id("event-a", "summary");
        assert_eq!(k, keyed_id("event-a", "summary"));
        assert_ne!(k, keyed_id("event-a", "other"));
        assert_ne!(k, keyed_id("event-b", "summary"));
        assert_ne!(request_id("event-a", 0), request_id("event-b", 0));
        assert_ne!(request_id("event-a", 0), request_id("event-a", 1));
    }
}
