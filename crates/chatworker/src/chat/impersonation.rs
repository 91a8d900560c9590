//! Keyless Chat credentials for GKE: the `chat.bot` scope is not part of
//! `cloud-platform`, so a Workload Identity token cannot call the Chat API
//! directly. With `chat.impersonate_service_account`, the worker's own
//! credentials (Application Default Credentials with `cloud-platform`: the
//! metadata server on GKE) ask IAM Credentials' `generateAccessToken` for a
//! `chat.bot` token of that service account. The worker's account needs
//! `roles/iam.serviceAccountTokenCreator` on it.

use google_cloud_auth::credentials::{
    CacheableResource, Credentials, CredentialsProvider, EntityTag,
};
use google_cloud_auth::errors::CredentialsError;
use http::{Extensions, HeaderMap, HeaderValue};
use serde::Deserialize;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long minted tokens live.
const LIFETIME: Duration = Duration::from_secs(3600);
/// A token is replaced this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Credentials that mint `scope` tokens for `target` through IAM Credentials.
#[derive(Debug)]
pub(crate) struct Impersonated {
    source: Credentials,
    url: String,
    scope: String,
    http: reqwest::Client,
    cached: Mutex<Option<Minted>>,
}

#[derive(Debug, Clone)]
struct Minted {
    headers: HeaderMap,
    tag: EntityTag,
    expires: SystemTime,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateAccessTokenResponse {
    access_token: String,
    expire_time: String,
}

impl Impersonated {
    /// `target` (an email) impersonated from `source`, through the IAM
    /// Credentials API at `endpoint`.
    pub(crate) fn new(source: Credentials, endpoint: &str, target: &str, scope: &str) -> Self {
        Self {
            source,
            url: format!(
                "{}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
                endpoint.trim_end_matches('/')
            ),
            scope: scope.to_owned(),
            http: reqwest::Client::new(),
            cached: Mutex::new(None),
        }
    }

    /// The scope the source credentials need.
    pub(crate) const SOURCE_SCOPE: &'static str = CLOUD_PLATFORM;

    async fn mint(&self) -> Result<Minted, CredentialsError> {
        let source = match self.source.headers(Extensions::new()).await? {
            CacheableResource::New { data, .. } => data,
            CacheableResource::NotModified => {
                return Err(CredentialsError::from_msg(
                    true,
                    "source credentials returned no headers",
                ));
            }
        };
        let body = serde_json::json!({
            "scope": [self.scope],
            "lifetime": format!("{}s", LIFETIME.as_secs()),
        });
        let response = self
            .http
            .post(&self.url)
            .headers(source)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| CredentialsError::from_msg(true, format!("generateAccessToken: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            // 403: the worker's account may not impersonate the target.
            let transient = status.is_server_error() || status.as_u16() == 429;
            return Err(CredentialsError::from_msg(
                transient,
                format!(
                    "generateAccessToken answered {status}: {}",
                    text.chars().take(300).collect::<String>()
                ),
            ));
        }
        let token: GenerateAccessTokenResponse = response
            .json()
            .await
            .map_err(|e| CredentialsError::from_msg(true, format!("generateAccessToken: {e}")))?;
        let expires = chrono::DateTime::parse_from_rfc3339(&token.expire_time)
            .map(SystemTime::from)
            .unwrap_or_else(|_| SystemTime::now() + LIFETIME);
        let value = HeaderValue::from_str(&format!("Bearer {}", token.access_token))
            .map_err(|e| CredentialsError::from_msg(false, format!("generateAccessToken: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        Ok(Minted {
            headers,
            tag: EntityTag::new(),
            expires,
        })
    }
}

impl CredentialsProvider for Impersonated {
    async fn headers(
        &self,
        extensions: Extensions,
    ) -> Result<CacheableResource<HeaderMap>, CredentialsError> {
        let mut cached = self.cached.lock().await;
        let fresh = cached
            .as_ref()
            .is_some_and(|m| m.expires > SystemTime::now() + REFRESH_MARGIN);
        if !fresh {
            *cached = Some(self.mint().await?);
        }
        let minted = cached.as_ref().expect("just minted");
        if extensions.get::<EntityTag>() == Some(&minted.tag) {
            return Ok(CacheableResource::NotModified);
        }
        Ok(CacheableResource::New {
            entity_tag: minted.tag.clone(),
            data: minted.headers.clone(),
        })
    }

    async fn universe_domain(&self) -> Option<String> {
        Some("googleapis.com".into())
    }
}
