//! The Chat API client: the only module that knows the Chat REST client
//! (`google-chat-v1`) and its error type. It creates messages and classifies
//! every failure as permanent or transient, which decides ack versus nack.
//!
//! `spaces.messages.create`, the call every event makes, goes over a plain
//! `reqwest` client with the typed client's request body (`model::Message`),
//! query and credentials: the typed client decodes every answer into a
//! `Message`, cards and all, which the worker never reads. Profiling the
//! benchmark put that decoding at a tenth of the worker's CPU (`BENCHMARKS.md`).
//! The rarer calls (update, delete) use the typed client.

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

/// A message as Chat returned it, kept as it came: only `chatworker send`
/// reads it, so the worker never pays for decoding it.
#[derive(Clone, Debug)]
pub struct ChatMessage(Answer);

#[derive(Clone, Debug)]
enum Answer {
    /// As the typed client decoded it.
    Typed(Box<model::Message>),
    /// Chat's JSON, undecoded.
    Json(bytes::Bytes),
}

impl ChatMessage {
    /// The message as JSON, in the API's field names (`null` if Chat's
    /// answer was not JSON).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.0 {
            Answer::Typed(message) => serde_json::to_value(&**message),
            Answer::Json(body) => serde_json::from_slice(body),
        }
        .unwrap_or(serde_json::Value::Null)
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
    /// For `create`; HTTP/1.1 with a connection per request in flight, as the
    /// typed client does.
    http: reqwest::Client,
    /// The endpoint, for `create`'s URL.
    endpoint: reqwest::Url,
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
        let endpoint = settings.endpoint.trim_end_matches('/');
        let base = reqwest::Url::parse(endpoint)
            .map_err(|e| ClientError(format!("chat.endpoint {endpoint}: {e}")))?;
        let http = reqwest::Client::builder()
            .http1_only()
            .user_agent(concat!("chatworker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        let inner = ChatService::builder()
            .with_endpoint(endpoint)
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
            http,
            endpoint: base,
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
            Ok(updated) => Ok(Created::Message(ChatMessage(Answer::Typed(Box::new(
                updated,
            ))))),
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
        let body = serde_json::to_vec(&create_body(message))
            .map_err(|e| SendError::Permanent(format!("cannot encode the message: {e}")))?;
        let answer = self.post(create_url(&self.endpoint, message), body).await;
        let metrics = self.metrics.as_deref();
        match answer {
            Err((label, error)) => {
                metrics.inspect(|m| m.chat_call("create", label));
                Err(error)
            }
            Ok(answer) => {
                metrics.inspect(|m| m.chat_call("create", answer.status.as_str()));
                match answer.status.as_u16() {
                    200..=299 => Ok(Created::Message(ChatMessage(Answer::Json(answer.body)))),
                    409 if message.id.is_some() => Ok(Created::AlreadyExists),
                    code => Err(classify_status(
                        code,
                        answer.retry_after,
                        summarize_answer(code, &answer.body),
                    )),
                }
            }
        }
    }

    /// One authenticated POST of a JSON body: Chat's answer, or why there
    /// was none (with its metrics label).
    async fn post(
        &self,
        url: reqwest::Url,
        body: Vec<u8>,
    ) -> Result<HttpAnswer, (&'static str, SendError)> {
        use google_cloud_auth::credentials::CacheableResource;
        let auth = match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => data,
            // Only asked for with an entity tag, which this call never sends.
            Ok(CacheableResource::NotModified) => {
                let e = "the credentials returned no headers".to_owned();
                return Err(("auth", SendError::transient(e)));
            }
            // The token endpoint may be down for a while: a retry can succeed.
            Err(e) => return Err(("auth", SendError::transient(format!("credentials: {e}")))),
        };
        let failed = |e: reqwest::Error| {
            let label = if e.is_timeout() { "timeout" } else { "network" };
            let error = if e.is_builder() {
                SendError::Permanent(format!("cannot build the request: {e}"))
            } else {
                SendError::transient(format!("{label}: {e}"))
            };
            (label, error)
        };
        let response = self
            .http
            .post(url)
            .headers(auth)
            .header(http::header::CONTENT_TYPE, "application/json")
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(failed)?;
        Ok(HttpAnswer {
            status,
            retry_after,
            body,
        })
    }
}

/// What Chat answered over the plain HTTP path.
struct HttpAnswer {
    status: http::StatusCode,
    retry_after: Option<Duration>,
    body: bytes::Bytes,
}

/// `…/v1/{space}/messages` and its query, with enums by name as the API
/// reference writes them.
fn create_url(endpoint: &reqwest::Url, message: &NewMessage) -> reqwest::Url {
    let mut url = endpoint.clone();
    let path = format!(
        "{}/v1/{}/messages",
        url.path().trim_end_matches('/'),
        message.space.as_str()
    );
    url.set_path(&path);
    {
        let mut query = url.query_pairs_mut();
        if let Some(id) = &message.id {
            query.append_pair("messageId", id.as_str());
        }
        if !matches!(message.thread, Threading::New) {
            query.append_pair("messageReplyOption", "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD");
        }
        let notification = match message.notify {
            Notify::Default => None,
            Notify::Silent => Some("NOTIFICATION_TYPE_SILENT"),
            Notify::Force => Some("NOTIFICATION_TYPE_FORCE_NOTIFY"),
        };
        if let Some(kind) = notification {
            query.append_pair("createMessageNotificationOptions.notificationType", kind);
        }
        // The body's enums are numbers, as the typed client writes them.
        query.append_pair("$alt", "json;enum-encoding=int");
    }
    url
}

/// The body of `spaces.messages.create`.
fn create_body(message: &NewMessage) -> model::Message {
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
    match &message.thread {
        Threading::Reply(thread) => body.set_thread(model::Thread::new().set_name(thread.as_str())),
        Threading::Key(key) => body.set_thread(model::Thread::new().set_thread_key(key.clone())),
        Threading::New => body,
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
        return classify_status(code, e.http_headers().and_then(retry_after), text);
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

/// Permanent or transient, from the status Chat answered with.
fn classify_status(code: u16, retry_after: Option<Duration>, detail: String) -> SendError {
    match code {
        // 401: the token was rejected; a refreshed token (or a fixed
        // deployment) can succeed, and acking would lose the event.
        401 | 408 | 429 | 500..=599 => SendError::Transient {
            detail,
            retry_after,
        },
        _ => SendError::Permanent(detail),
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
        (Some(code), Some(status)) => {
            format!("HTTP {code} {}: {}", status.code.name(), status.message)
        }
        (Some(code), None) => format!("HTTP {code}"),
        _ => e.to_string(),
    }
}

/// The status and Google's message from an error answer
/// (`{"error": {"status": …, "message": …}}`), never the request body.
fn summarize_answer(code: u16, body: &[u8]) -> String {
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
        Ok(Answer { error }) => format!("HTTP {code} {}: {}", error.status, error.message),
        Err(_) => format!("HTTP {code}"),
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

    #[test]
    fn error_answers_are_summarized_by_status_and_message() {
        let body = br#"{"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "The caller does not have permission"}}"#;
        assert_eq!(
            summarize_answer(403, body),
            "HTTP 403 PERMISSION_DENIED: The caller does not have permission"
        );
        assert_eq!(
            summarize_answer(502, b"<html>Bad Gateway</html>"),
            "HTTP 502"
        );
        assert_eq!(summarize_answer(500, b""), "HTTP 500");
    }

    #[test]
    fn create_asks_for_the_thread_the_id_and_the_notification() {
        let endpoint = reqwest::Url::parse("https://proxy.example/chat/").expect("url");
        let message = NewMessage {
            space: SpaceName::parse("spaces/AAA").expect("space"),
            id: Some(ClientMessageId::new("client-1").expect("id")),
            text: Some("hi".into()),
            cards: Vec::new(),
            thread: Threading::Key("k".into()),
            accessory_buttons: Vec::new(),
            private_to: None,
            notify: Notify::Force,
            markup: Markup::Chat,
        };
        let url = create_url(&endpoint, &message);
        assert_eq!(url.path(), "/chat/v1/spaces/AAA/messages");
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let pairs = [
            ("messageId", "client-1"),
            ("messageReplyOption", "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"),
            (
                "createMessageNotificationOptions.notificationType",
                "NOTIFICATION_TYPE_FORCE_NOTIFY",
            ),
            ("$alt", "json;enum-encoding=int"),
        ];
        let expected: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(query, expected);
        assert_eq!(
            create_body(&message).thread.map(|t| t.thread_key),
            Some("k".to_owned())
        );

        // A new thread: no reply option, and Chat picks the ID when none is given.
        let fresh = NewMessage {
            id: None,
            thread: Threading::New,
            notify: Notify::Default,
            ..message
        };
        let url = create_url(&endpoint, &fresh);
        assert_eq!(url.query(), Some("%24alt=json%3Benum-encoding%3Dint"));
        assert!(create_body(&fresh).thread.is_none());
    }
}
