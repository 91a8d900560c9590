//! Every failure of a Chat call, classified permanent or transient (which
//! decides ack versus nack), with Chat's own answer kept as an
//! [`ApiError`] and `Retry-After` read.

use crate::reply::compose::NewMessage;
use crate::reply::{ApiError, BoxError, SendError};
use std::time::Duration;

/// The Chat client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The key file named by `chat.credentials_file` cannot be used.
    #[error("cannot use chat.credentials_file {path}: {source}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The credentials or the client could not be set up.
    #[error("cannot set up Chat API credentials: {0}")]
    Setup(#[source] BoxError),
}

/// Permanent or transient, from the status Chat answered with.
pub(super) fn classify_status(answer: ApiError, retry_after: Option<Duration>) -> SendError {
    match (answer.code, answer.status.as_str()) {
        // 401: the token was rejected; a refreshed token (or a fixed
        // deployment) can succeed, and acking would lose the event.
        // 409 ABORTED: a concurrent change won; trying again can succeed.
        (401 | 408 | 429 | 500..=599, _) | (409, "ABORTED") => SendError::Transient {
            source: answer.into(),
            retry_after,
        },
        _ => SendError::permanent(answer),
    }
}

/// What a 409 to a create means: `ALREADY_EXISTS` on our own ID, sent
/// without a request ID (an ID derived from the event), is this event's
/// message, created by an earlier delivery. Any other 409 is a failure:
/// `ABORTED` is transient, and an ID the app chose that Chat holds although
/// the request ID is this event's is taken by another message.
pub(super) fn is_our_message(answer: &ApiError, message: &NewMessage) -> bool {
    answer.code == 409
        && answer.status == "ALREADY_EXISTS"
        && message.id.is_some()
        && message.request_id.is_none()
}

/// `Retry-After` as seconds or as an HTTP date; capped at an hour, so a
/// garbled header cannot park an event for days.
pub(super) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    const MAX: Duration = Duration::from_secs(3600);
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX))
}

/// Chat's error answer (`{"error": {"status": …, "message": …}}`), never
/// the request body.
pub(super) fn api_error(code: u16, body: &[u8]) -> ApiError {
    #[derive(serde::Deserialize)]
    struct Answer {
        error: Status,
    }
    #[derive(serde::Deserialize)]
    struct Status {
        #[serde(default)]
        status: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(Answer { error }) => ApiError::new(code, error.status, error.message),
        Err(_) => ApiError::new(code, "", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(code: u16) -> SendError {
        classify_status(ApiError::new(code, "", ""), None)
    }

    #[test]
    fn transient_means_a_redelivery_may_succeed() {
        for code in [401, 408, 429, 500, 502, 503, 504] {
            assert!(answered(code).is_transient(), "{code}");
        }
        let aborted = classify_status(ApiError::new(409, "ABORTED", ""), None);
        assert!(aborted.is_transient());
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        let mut headers = http::HeaderMap::new();
        let with =
            |h: &http::HeaderMap| match classify_status(ApiError::new(429, "", ""), retry_after(h))
            {
                SendError::Transient { retry_after, .. } => retry_after,
                _ => panic!("429 must be transient"),
            };
        assert_eq!(with(&headers), None);
        headers.insert(http::header::RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(with(&headers), Some(Duration::from_secs(7)));
        let soon = chrono::Utc::now() + chrono::Duration::seconds(30);
        let date = soon.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        headers.insert(http::header::RETRY_AFTER, date.parse().expect("header"));
        let delay = with(&headers).expect("a date parses");
        assert!((Duration::from_secs(28)..=Duration::from_secs(30)).contains(&delay));
        headers.insert(
            http::header::RETRY_AFTER,
            "99999999".parse().expect("header"),
        );
        assert_eq!(with(&headers), Some(Duration::from_secs(3600)));
        headers.insert(http::header::RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(with(&headers), None);
    }

    #[test]
    fn permanent_means_it_never_will() {
        for code in [400, 403, 404, 413, 422] {
            assert!(!answered(code).is_transient(), "{code}");
        }
        let exists = classify_status(ApiError::new(409, "ALREADY_EXISTS", ""), None);
        assert!(!exists.is_transient());
    }

    #[test]
    fn only_already_exists_on_our_derived_id_is_delivery() {
        use crate::names::{ClientMessageId, SpaceName};
        use crate::reply::compose::Threading;
        use crate::reply::{Markup, Notify};
        let mut message = NewMessage {
            space: SpaceName::parse("spaces/A").expect("space"),
            id: Some(ClientMessageId::new("client-1").expect("id")),
            request_id: None,
            text: Some("hi".into()),
            cards: Vec::new(),
            thread: Threading::New,
            accessory_buttons: Vec::new(),
            private_to: None,
            notify: Notify::Default,
            markup: Markup::Chat,
        };
        let exists = ApiError::new(409, "ALREADY_EXISTS", "taken");
        let aborted = ApiError::new(409, "ABORTED", "try again");
        assert!(is_our_message(&exists, &message));
        assert!(!is_our_message(&aborted, &message));
        assert!(
            classify_status(aborted, None).is_transient(),
            "ABORTED is transient"
        );
        assert!(!classify_status(exists.clone(), None).is_transient());
        // An ID the app chose comes with a request ID: a 409 means another
        // message took it.
        message.request_id = Some("r".into());
        assert!(!is_our_message(&exists, &message));
        message.request_id = None;
        message.id = None;
        assert!(!is_our_message(&exists, &message), "no ID of ours");
    }

    #[test]
    fn error_answers_are_kept_by_status_and_message() {
        let body = br#"{"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "The caller does not have permission"}}"#;
        let answer = api_error(403, body);
        assert_eq!(
            answer.to_string(),
            "HTTP 403 PERMISSION_DENIED: The caller does not have permission"
        );
        let refused = classify_status(answer.clone(), None);
        assert_eq!(
            refused.api_error(),
            Some(&answer),
            "the answer is the source"
        );
        assert_eq!(
            api_error(502, b"<html>Bad Gateway</html>").to_string(),
            "HTTP 502"
        );
        assert_eq!(api_error(500, b"").to_string(), "HTTP 500");
    }
}
