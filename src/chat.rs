//! The Chat API client: the only module that knows the Chat REST client
//! (`google-chat-v1`) and its error type. It creates messages and classifies
//! every failure as permanent or transient, which decides ack versus nack.

use crate::config::ChatSettings;
use crate::names::{ClientMessageId, SpaceName, ThreadName};
use crate::reply::{Card, Markup, Notify};
use google_chat_v1::client::ChatService;
use google_chat_v1::model;
use google_cloud_gax::options::RequestOptionsBuilder;
use google_cloud_gax::retry_policy::NeverRetry;
use std::time::Duration;

/// The OAuth scope of app authentication.
pub const CHAT_BOT_SCOPE: &str = "https://www.googleapis.com/auth/chat.bot";

/// A message to create.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// The space to post in.
    pub space: SpaceName,
    /// Our deterministic ID; `None` lets Chat choose one (only `send` does that).
    pub id: Option<ClientMessageId>,
    /// Text.
    pub text: Option<String>,
    /// Cards with their IDs.
    pub cards: Vec<(String, Card)>,
    /// Where it goes.
    pub thread: Threading,
    /// Buttons under the message (accessory widgets).
    pub accessory_buttons: Vec<google_apps_card_v1::model::Button>,
    /// The one person who may see it, for a private message.
    pub private_to: Option<crate::names::UserName>,
    /// How people are notified.
    pub notify: Notify,
    /// How Chat reads the text; always sent, because new and old Chat apps
    /// default differently.
    pub markup: Markup,
}

/// The parts of a message an update writes over.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Content {
    /// Text.
    pub text: Option<String>,
    /// Cards with their IDs.
    pub cards: Vec<(String, Card)>,
    /// Buttons under the message.
    pub accessory_buttons: Vec<google_apps_card_v1::model::Button>,
    /// How Chat reads the text.
    pub markup: Markup,
}

/// Where a new message goes in its space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Threading {
    /// Reply in this thread, or start a new one if it is gone.
    Reply(ThreadName),
    /// The app-owned thread with this key, created on first use.
    Key(String),
    /// Start a new thread.
    New,
}

/// A message as Chat returned it, kept as the client decoded it: turning
/// every reply into JSON would serialize it again, cards included, for
/// `chatworker send` alone.
#[derive(Clone, Debug)]
pub struct ChatMessage(Box<model::Message>);

impl ChatMessage {
    /// The message as JSON, in the API's field names.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.0).unwrap_or(serde_json::Value::Null)
    }
}

/// A created message.
#[derive(Clone, Debug)]
pub enum Created {
    /// Chat created (or updated) it, and returned it.
    Message(ChatMessage),
    /// Chat already holds a message with our ID (409 ALREADY_EXISTS): an
    /// earlier delivery of this event created it, so it counts as delivered.
    AlreadyExists,
}

/// Why a message could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Retrying cannot help (400, 403, 404…): the event is acked, logged and
    /// counted (and dead-lettered when configured).
    #[error("permanent Chat API error: {0}")]
    Permanent(String),
    /// Retrying may help (429, 5xx, 401, timeouts, network, token endpoint
    /// down): retried with backoff, then the event is nacked so that Pub/Sub
    /// redelivers it later.
    #[error("transient Chat API error: {detail}")]
    Transient {
        /// What happened.
        detail: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
}

impl SendError {
    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    fn transient(detail: String) -> Self {
        Self::Transient {
            detail,
            retry_after: None,
        }
    }
}

/// The Chat API client, cheap to clone.
#[derive(Clone, Debug)]
pub struct ChatClient {
    inner: ChatService,
    credentials: google_cloud_auth::credentials::Credentials,
    timeout: Duration,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

/// The client could not be built (for example an unreadable key file).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up Chat API credentials: {0}")]
pub struct ClientError(String);

impl ChatClient {
    /// Builds the client with Application Default Credentials and the
    /// `chat.bot` scope.
    pub async fn new(settings: &ChatSettings) -> Result<Self, ClientError> {
        let impersonate = settings.impersonate_service_account.as_str();
        // Impersonating, the worker's own credentials only need to call IAM.
        let scope = match impersonate {
            "" => CHAT_BOT_SCOPE,
            _ => crate::impersonation::Impersonated::SOURCE_SCOPE,
        };
        let credentials = match settings.credentials_file.as_str() {
            "" => google_cloud_auth::credentials::Builder::default()
                .with_scopes([scope])
                .build()
                .map_err(|e| ClientError(e.to_string()))?,
            path => {
                use google_cloud_auth::credentials::service_account;
                let key: serde_json::Value = std::fs::read(path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                    .map_err(|e| ClientError(format!("chat.credentials_file {path}: {e}")))?;
                service_account::Builder::new(key)
                    .with_access_specifier(service_account::AccessSpecifier::from_scopes([scope]))
                    .build()
                    .map_err(|e| ClientError(format!("chat.credentials_file {path}: {e}")))?
            }
        };
        let credentials = match impersonate {
            "" => credentials,
            target => google_cloud_auth::credentials::Credentials::from(
                crate::impersonation::Impersonated::new(
                    credentials,
                    &settings.iam_endpoint,
                    target,
                    CHAT_BOT_SCOPE,
                ),
            ),
        };
        let inner = ChatService::builder()
            .with_endpoint(settings.endpoint.trim_end_matches('/'))
            .with_credentials(credentials.clone())
            // One attempt per call: `crate::sender` retries, because it
            // honours Retry-After, waits for quota slots between attempts and
            // bounds the time per delivery, which the built-in loop cannot.
            .with_retry_policy(NeverRetry)
            .build()
            .await
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(Self {
            inner,
            credentials,
            timeout: settings.request_timeout,
            metrics: None,
        })
    }

    /// Counts every call, by method and status, in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count<T>(&self, method: &'static str, result: &Result<T, google_cloud_gax::error::Error>) {
        let Some(metrics) = &self.metrics else { return };
        let status = match result {
            Ok(_) => "200".to_owned(),
            Err(e) => match e.http_status_code() {
                Some(code) => code.to_string(),
                None if e.is_timeout() => "timeout".to_owned(),
                None if e.is_authentication() => "auth".to_owned(),
                None if e.is_connect() || e.is_transport() || e.is_io() => "network".to_owned(),
                None => "error".to_owned(),
            },
        };
        metrics.chat_call(method, &status);
    }

    /// Obtains a token once. Building the client only reads configuration;
    /// with no key file and no metadata server, this is where it shows.
    pub async fn check_credentials(&self) -> Result<(), String> {
        self.credentials
            .headers(http::Extensions::new())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Replaces the text, cards and accessory buttons of the app's message
    /// `name` (`updateMask=text,cards_v2,accessory_widgets`, with the markup
    /// syntax set on the message as the API asks): idempotent, so retrying
    /// is safe.
    pub async fn update(
        &self,
        name: &crate::names::MessageName,
        content: &Content,
    ) -> Result<Created, SendError> {
        let mut body = model::Message::new()
            .set_name(name.as_str())
            .set_markup_syntax(markup_syntax(content.markup));
        if let Some(text) = &content.text {
            body = body.set_text(text.clone());
        }
        body = body
            .set_cards_v2(cards_v2(&content.cards))
            .set_accessory_widgets(accessory_widgets(&content.accessory_buttons));
        let mask = google_cloud_wkt::FieldMask::default().set_paths([
            "text",
            "cards_v2",
            "accessory_widgets",
        ]);
        let result = self
            .inner
            .update_message()
            .set_message(body)
            .set_update_mask(mask)
            .with_attempt_timeout(self.timeout)
            .send()
            .await;
        self.count("update", &result);
        match result {
            Ok(updated) => Ok(Created::Message(ChatMessage(Box::new(updated)))),
            Err(e) => Err(classify(&e)),
        }
    }

    /// Deletes the app's message `name`. A message already gone (404) counts
    /// as deleted, so that a retried delete succeeds.
    pub async fn delete(&self, name: &crate::names::MessageName) -> Result<(), SendError> {
        let result = self
            .inner
            .delete_message()
            .set_name(name.as_str())
            .with_attempt_timeout(self.timeout)
            .send()
            .await;
        self.count("delete", &result);
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.http_status_code() == Some(404) => Ok(()),
            Err(e) => Err(classify(&e)),
        }
    }

    /// Creates one message.
    pub async fn create(&self, message: &NewMessage) -> Result<Created, SendError> {
        use model::create_message_notification_options::NotificationType;
        use model::create_message_request::MessageReplyOption;
        let mut body = model::Message::new().set_markup_syntax(markup_syntax(message.markup));
        if let Some(text) = &message.text {
            body = body.set_text(text.clone());
        }
        if !message.cards.is_empty() {
            body = body.set_cards_v2(cards_v2(&message.cards));
        }
        if !message.accessory_buttons.is_empty() {
            body = body.set_accessory_widgets(accessory_widgets(&message.accessory_buttons));
        }
        if let Some(user) = &message.private_to {
            body = body.set_private_message_viewer(model::User::new().set_name(user.as_str()));
        }
        let mut request = self
            .inner
            .create_message()
            .set_parent(message.space.as_str())
            .with_attempt_timeout(self.timeout);
        let notification = match message.notify {
            Notify::Default => None,
            Notify::Silent => Some(NotificationType::Silent),
            Notify::Force => Some(NotificationType::ForceNotify),
        };
        if let Some(kind) = notification {
            request = request.set_create_message_notification_options(
                model::CreateMessageNotificationOptions::new().set_notification_type(kind),
            );
        }
        request = match &message.thread {
            Threading::Reply(thread) => {
                body = body.set_thread(model::Thread::new().set_name(thread.as_str()));
                request
                    .set_message_reply_option(MessageReplyOption::ReplyMessageFallbackToNewThread)
            }
            Threading::Key(key) => {
                body = body.set_thread(model::Thread::new().set_thread_key(key.clone()));
                request
                    .set_message_reply_option(MessageReplyOption::ReplyMessageFallbackToNewThread)
            }
            Threading::New => request,
        };
        if let Some(id) = &message.id {
            request = request.set_message_id(id.as_str());
        }
        let result = request.set_message(body).send().await;
        self.count("create", &result);
        match result {
            Ok(created) => Ok(Created::Message(ChatMessage(Box::new(created)))),
            Err(e) if message.id.is_some() && e.http_status_code() == Some(409) => {
                Ok(Created::AlreadyExists)
            }
            Err(e) => Err(classify(&e)),
        }
    }
}

fn markup_syntax(markup: Markup) -> model::MarkupSyntax {
    match markup {
        Markup::Chat => model::MarkupSyntax::Chat,
        Markup::Markdown => model::MarkupSyntax::Markdown,
    }
}

fn cards_v2(cards: &[(String, Card)]) -> impl Iterator<Item = model::CardWithId> + '_ {
    cards.iter().map(|(id, card)| {
        model::CardWithId::new()
            .set_card_id(id.clone())
            .set_card(card.clone())
    })
}

fn accessory_widgets(
    buttons: &[google_apps_card_v1::model::Button],
) -> Option<model::AccessoryWidget> {
    (!buttons.is_empty()).then(|| {
        model::AccessoryWidget::new().set_button_list(
            google_apps_card_v1::model::ButtonList::new().set_buttons(buttons.iter().cloned()),
        )
    })
}

/// Permanent or transient, from what the client reports.
fn classify(e: &google_cloud_gax::error::Error) -> SendError {
    let text = summarize(e);
    if let Some(code) = e.http_status_code() {
        return match code {
            // 401: the token was rejected; a refreshed token (or a fixed
            // deployment) can succeed, and acking would lose the event.
            401 | 408 | 429 | 500..=599 => SendError::Transient {
                detail: text,
                retry_after: e.http_headers().and_then(retry_after),
            },
            _ => SendError::Permanent(text),
        };
    }
    if e.is_timeout()
        || e.is_connect()
        || e.is_transport()
        || e.is_io()
        || e.is_authentication()
        || e.is_exhausted()
    {
        SendError::transient(text)
    } else {
        // Binding, serialization or a response we cannot read: the request
        // itself is wrong, so a redelivery would fail the same way.
        SendError::Permanent(text)
    }
}

/// `Retry-After` as seconds or as an HTTP date; capped at an hour, so a
/// garbled header cannot park an event for days.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
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

/// The status and Google's message, never the request body or a token.
fn summarize(e: &google_cloud_gax::error::Error) -> String {
    match (e.http_status_code(), e.status()) {
        (Some(code), Some(status)) => format!("HTTP {code} {:?}: {}", status.code, status.message),
        (Some(code), None) => format!("HTTP {code}"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_gax::error::Error;

    /// `Error::http` is exempt from gax's semver promises; if it changes, the
    /// integration tests (real 403, 409 and 503 answers) still cover this.
    fn answered(code: u16) -> Error {
        Error::http(code, http::HeaderMap::new(), bytes::Bytes::new())
    }

    #[test]
    fn transient_means_a_redelivery_may_succeed() {
        for code in [401, 408, 429, 500, 502, 503, 504] {
            assert!(classify(&answered(code)).is_transient(), "{code}");
        }
        assert!(classify(&Error::timeout("slow")).is_transient());
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        let mut headers = http::HeaderMap::new();
        let with =
            |h: &http::HeaderMap| match classify(&Error::http(429, h.clone(), bytes::Bytes::new()))
            {
                SendError::Transient { retry_after, .. } => retry_after,
                SendError::Permanent(_) => panic!("429 must be transient"),
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
            assert!(!classify(&answered(code)).is_transient(), "{code}");
        }
        assert!(!classify(&Error::deser("garbled")).is_transient());
    }
}
