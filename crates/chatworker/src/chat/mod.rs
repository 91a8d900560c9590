//! The Chat API client: the only module that knows the Chat REST client
//! (`google-chat-v1`), its wire format and its error type. One attempt per
//! call; every failure classified permanent or transient, which decides ack
//! versus nack (the worker's sender retries).
//!
//! `spaces.messages.create`, the call every event makes, goes over a plain
//! `reqwest` client with the typed client's request body (`model::Message`),
//! query and credentials: the typed client decodes every answer into a
//! `Message`, cards and all, which the worker never reads. Profiling the
//! benchmark put that decoding at a tenth of the worker's CPU (`BENCHMARKS.md`).
//! Update and delete go the same way. So every call takes the network
//! settings' way (`Egress::http_client`): the proxy and the extra CAs,
//! which the typed client's own HTTP client cannot be given.

mod error;
pub(crate) mod impersonation;
mod wire;

pub use error::ClientError;

use crate::config::{ChatSettings, NetworkSettings};
use crate::names::{MessageName, SpaceName};
use crate::net::Egress;
use crate::ops::metrics::Metrics;
use crate::reply::compose::{Content, Created, NewMessage, Threading, check_cards};
use crate::reply::{ApiError, BoxError, Markup, Reply, SendError};
use error::{api_error, classify_status, is_our_message, retry_after};
use std::sync::Arc;
use std::time::Duration;

/// The OAuth scope of app authentication.
pub(crate) const CHAT_BOT_SCOPE: &str = "https://www.googleapis.com/auth/chat.bot";

/// The Chat API client, cheap to clone: how `chatworker send` and `check`
/// reach Chat, and what the worker sends through.
#[derive(Clone, Debug)]
pub struct ChatClient {
    /// HTTP/1.1 with a connection per request in flight, as the typed
    /// client does; the egress's way.
    http: reqwest::Client,
    /// The endpoint, for the calls' URLs.
    endpoint: reqwest::Url,
    credentials: google_cloud_auth::credentials::Credentials,
    timeout: Duration,
    markup: Markup,
    metrics: Option<Arc<Metrics>>,
}

impl ChatClient {
    /// Builds the client with the settings' credentials (a key file, else
    /// Application Default Credentials; impersonating a service account when
    /// configured) and the `chat.bot` scope.
    pub async fn new(
        settings: &ChatSettings,
        network: &NetworkSettings,
    ) -> Result<Self, ClientError> {
        let egress = Egress::from_settings(network).map_err(|e| ClientError::Setup(e.into()))?;
        Self::with_egress(settings, &egress).await
    }

    /// As [`ChatClient::new`], with the egress already read.
    pub(crate) async fn with_egress(
        settings: &ChatSettings,
        egress: &Egress,
    ) -> Result<Self, ClientError> {
        let http = egress
            .http_client()
            .http1_only()
            .user_agent(concat!("chatworker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Setup(e.into()))?;
        let impersonate = settings.impersonate_service_account.as_deref();
        // Impersonating, the worker's own credentials only need to call IAM.
        let scope = match impersonate {
            None => CHAT_BOT_SCOPE,
            Some(_) => impersonation::Impersonated::SOURCE_SCOPE,
        };
        let credentials = match &settings.credentials_file {
            None => google_cloud_auth::credentials::Builder::default()
                .with_scopes([scope])
                .build()
                .map_err(|e| ClientError::Setup(e.into()))?,
            Some(path) => {
                use google_cloud_auth::credentials::service_account;
                let key_file = |source: BoxError| ClientError::KeyFile {
                    path: path.clone(),
                    source,
                };
                let bytes = std::fs::read(path).map_err(|e| key_file(e.into()))?;
                let key: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| key_file(e.into()))?;
                service_account::Builder::new(key)
                    .with_access_specifier(service_account::AccessSpecifier::from_scopes([scope]))
                    .build()
                    .map_err(|e| key_file(e.into()))?
            }
        };
        let credentials = match impersonate {
            None => credentials,
            Some(target) => {
                google_cloud_auth::credentials::Credentials::from(impersonation::Impersonated::new(
                    credentials,
                    settings.iam_endpoint.as_str(),
                    target,
                    CHAT_BOT_SCOPE,
                    http.clone(),
                ))
            }
        };
        Ok(Self {
            http,
            endpoint: settings.endpoint.clone(),
            credentials,
            timeout: settings.request_timeout,
            markup: settings.markup_syntax,
            metrics: None,
        })
    }

    /// Counts every call, by method and status, in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, method: &'static str, status: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.chat_call(method, status);
        }
    }

    /// Obtains a token once. Building the client only reads configuration;
    /// with no key file and no metadata server, this is where it shows.
    pub async fn check_credentials(&self) -> Result<(), BoxError> {
        self.credentials
            .headers(http::Extensions::new())
            .await
            .map(|_| ())
            .map_err(Into::into)
    }

    /// Posts `reply` in `space` as the app, outside any event (what
    /// `chatworker send` does): with the reply's own ID
    /// ([`Reply::with_id`]) or one Chat chooses, in a new thread or the
    /// app-owned thread the reply names. Returns the message Chat created,
    /// as JSON; a message with the same ID already there is refused (409).
    pub async fn post(
        &self,
        space: &SpaceName,
        reply: Reply,
    ) -> Result<serde_json::Value, SendError> {
        check_cards(&reply.cards)?;
        let thread = match reply.thread {
            crate::reply::ReplyThread::Key(key) => Threading::Key(key),
            _ => Threading::New,
        };
        let message = NewMessage {
            space: reply.space.unwrap_or_else(|| space.clone()),
            id: reply.id,
            request_id: None,
            text: reply.text,
            cards: reply.cards,
            thread,
            accessory_buttons: reply.accessory_buttons,
            private_to: reply.private_to,
            notify: reply.notify,
            markup: reply.markup.unwrap_or(self.markup),
        };
        match self.create(&message).await? {
            (Created::New, body) => Ok(serde_json::from_slice(&body).unwrap_or_default()),
            (Created::AlreadyExisted, _) => Err(SendError::permanent(ApiError::new(
                409,
                "ALREADY_EXISTS",
                format!(
                    "a message with ID {} already exists in {}",
                    message.id.as_ref().map_or("", |id| id.as_str()),
                    message.space
                ),
            ))),
        }
    }

    /// Replaces the text, cards and accessory buttons of the app's message
    /// `name` (`updateMask=text,cards_v2,accessory_widgets`): idempotent, so
    /// retrying is safe.
    pub(crate) async fn update(
        &self,
        name: &MessageName,
        content: &Content,
    ) -> Result<(), SendError> {
        let body = serde_json::to_vec(&wire::update_body(name.as_str(), content))
            .map_err(|e| SendError::permanent(format!("cannot encode the message: {e}")))?;
        let mut url = wire::message_url(&self.endpoint, name);
        url.query_pairs_mut()
            .append_pair("updateMask", "text,cards_v2,accessory_widgets");
        let answer = self.call(reqwest::Method::PATCH, url, Some(body)).await;
        self.settle("update", answer, false)
    }

    /// Deletes the app's message `name`. A message already gone (404) counts
    /// as deleted, so that a retried delete succeeds.
    pub(crate) async fn delete(&self, name: &MessageName) -> Result<(), SendError> {
        let url = wire::message_url(&self.endpoint, name);
        let answer = self.call(reqwest::Method::DELETE, url, None).await;
        self.settle("delete", answer, true)
    }

    /// The outcome of an update or a delete, counted.
    fn settle(
        &self,
        method: &'static str,
        answer: Result<HttpAnswer, (&'static str, SendError)>,
        gone_is_done: bool,
    ) -> Result<(), SendError> {
        match answer {
            Err((label, error)) => {
                self.count(method, label);
                Err(error)
            }
            Ok(answer) => {
                self.count(method, answer.status.as_str());
                match answer.status.as_u16() {
                    200..=299 => Ok(()),
                    404 if gone_is_done => Ok(()),
                    code => Err(classify_status(
                        api_error(code, &answer.body),
                        answer.retry_after,
                    )),
                }
            }
        }
    }

    /// Creates one message; returns what became of it and Chat's answer
    /// (undecoded).
    pub(crate) async fn create(
        &self,
        message: &NewMessage,
    ) -> Result<(Created, bytes::Bytes), SendError> {
        let body = serde_json::to_vec(&wire::create_body(message))
            .map_err(|e| SendError::permanent(format!("cannot encode the message: {e}")))?;
        let answer = self
            .call(
                reqwest::Method::POST,
                wire::create_url(&self.endpoint, message),
                Some(body),
            )
            .await;
        match answer {
            Err((label, error)) => {
                self.count("create", label);
                Err(error)
            }
            Ok(answer) => {
                self.count("create", answer.status.as_str());
                match answer.status.as_u16() {
                    200..=299 => Ok((Created::New, answer.body)),
                    code => {
                        let refused = api_error(code, &answer.body);
                        if is_our_message(&refused, message) {
                            return Ok((Created::AlreadyExisted, answer.body));
                        }
                        if code == 409 && message.request_id.is_some() {
                            tracing::warn!(
                                id = message.id.as_ref().map_or("", |id| id.as_str()),
                                "the message ID the app chose is taken by another message"
                            );
                        }
                        Err(classify_status(refused, answer.retry_after))
                    }
                }
            }
        }
    }

    /// Makes sure the credentials hold a token, refreshing it now if needed
    /// (a failure is met again, and reported, by the call itself): so that
    /// a call checked just before it starts does not then wait for a token.
    pub(crate) async fn warm_credentials(&self) {
        let _ = self.credentials.headers(http::Extensions::new()).await;
    }

    /// One authenticated call, with a JSON body if any: Chat's answer, or
    /// why there was none (with its metrics label).
    async fn call(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<Vec<u8>>,
    ) -> Result<HttpAnswer, (&'static str, SendError)> {
        use google_cloud_auth::credentials::CacheableResource;
        let auth = match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => data,
            // Only asked for with an entity tag, which this call never sends.
            Ok(CacheableResource::NotModified) => {
                let e = "the credentials returned no headers";
                return Err(("auth", SendError::transient(e)));
            }
            // The token endpoint may be down for a while: a retry can succeed.
            Err(e) => return Err(("auth", SendError::transient(e))),
        };
        let failed = |e: reqwest::Error| {
            let label = if e.is_timeout() { "timeout" } else { "network" };
            let error = if e.is_builder() {
                SendError::permanent(e)
            } else {
                SendError::transient(e)
            };
            (label, error)
        };
        let mut request = self
            .http
            .request(method, url)
            .headers(auth)
            .timeout(self.timeout);
        if let Some(body) = body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(failed)?;
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
