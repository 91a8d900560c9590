//! Keyless Chat credentials for GKE: the `chat.bot` scope is not part of
//! `cloud-platform`, so a Workload Identity token cannot call the Chat API
//! directly. With `chat.impersonate_service_account`, the worker's own
//! credentials (Application Default Credentials with `cloud-platform`: the
//! metadata server on GKE) ask IAM Credentials' `generateAccessToken` for a
//! `chat.bot` token of that service account. The worker's account needs
//! `roles/iam.serviceAccountTokenCreator` on it.
//!
//! `google-cloud-auth` has impersonated credentials of its own, but they
//! reach IAM Credentials only at Google's endpoint (its override is
//! private), and `chat.iam_endpoint` must be able to name another (the
//! simulator, a private endpoint).
//!
//! A token is served from the cache until it expires. Ahead of that, one
//! task refreshes it in the background; callers never wait for a refresh
//! while the cached token is valid, and a failed refresh leaves the cached
//! token in use (a call at least `REFRESH_PAUSE` later tries again, so a
//! failing IAM endpoint is not asked on every request). The token is marked sensitive,
//! so no `Debug` output prints it.

use google_cloud_auth::credentials::{
    CacheableResource, Credentials, CredentialsProvider, EntityTag,
};
use google_cloud_auth::errors::CredentialsError;
use http::{Extensions, HeaderMap, HeaderValue};
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long minted tokens live.
const LIFETIME: Duration = Duration::from_secs(3600);
/// A token is refreshed this long before it expires (in the background, the
/// cached one served meanwhile).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How long one `generateAccessToken` call may take.
const MINT_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed background refresh, the next one waits this long.
const REFRESH_PAUSE: Duration = Duration::from_secs(30);

/// Credentials that mint `scope` tokens for `target` through IAM Credentials.
#[derive(Clone, Debug)]
pub(crate) struct Impersonated {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: Credentials,
    url: String,
    scope: String,
    http: reqwest::Client,
    cached: Mutex<Option<Minted>>,
    /// One mint at a time: callers without a valid token wait for it.
    minting: tokio::sync::Mutex<()>,
    /// A background refresh is under way.
    refreshing: AtomicBool,
    /// When the last background refresh failed.
    refresh_failed: Mutex<Option<Instant>>,
}

#[derive(Clone)]
struct Minted {
    headers: HeaderMap,
    tag: EntityTag,
    expires: SystemTime,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Minted {
    fn valid(&self) -> bool {
        self.expires > SystemTime::now()
    }

    fn fresh(&self) -> bool {
        self.expires > SystemTime::now() + REFRESH_MARGIN
    }
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
    pub(crate) fn new(
        source: Credentials,
        endpoint: &str,
        target: &str,
        scope: &str,
        http: reqwest::Client,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                url: format!(
                    "{}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
                    endpoint.trim_end_matches('/')
                ),
                scope: scope.to_owned(),
                // The Chat client's: the network settings' way.
                http,
                cached: Mutex::new(None),
                minting: tokio::sync::Mutex::new(()),
                refreshing: AtomicBool::new(false),
                refresh_failed: Mutex::new(None),
            }),
        }
    }

    /// The scope the source credentials need.
    pub(crate) const SOURCE_SCOPE: &'static str = CLOUD_PLATFORM;

    /// A valid token now: the cached one (refreshed in the background when
    /// it nears its end), or one minted while the caller waits.
    async fn token(&self) -> Result<Minted, CredentialsError> {
        if let Some(minted) = self.inner.cached()
            && minted.valid()
        {
            if !minted.fresh() {
                self.refresh_in_background();
            }
            return Ok(minted);
        }
        let _one_at_a_time = self.inner.minting.lock().await;
        // Another caller may have minted meanwhile.
        if let Some(minted) = self.inner.cached().filter(Minted::valid) {
            return Ok(minted);
        }
        self.inner.mint_and_cache().await
    }

    fn refresh_in_background(&self) {
        let failed = *self
            .inner
            .refresh_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failed.is_some_and(|at| at.elapsed() < REFRESH_PAUSE) {
            return;
        }
        if self.inner.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _one_at_a_time = inner.minting.lock().await;
            if !inner.cached().is_some_and(|m| m.fresh())
                && let Err(e) = inner.mint_and_cache().await
            {
                tracing::warn!(error = %e, "refreshing the impersonated Chat token failed; the current one is used until it expires, and the refresh is tried again in 30 s");
                *inner
                    .refresh_failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            }
            inner.refreshing.store(false, Ordering::SeqCst);
        });
    }
}

impl Inner {
    fn cached(&self) -> Option<Minted> {
        self.cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn mint_and_cache(&self) -> Result<Minted, CredentialsError> {
        let minted = self.mint().await?;
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(minted.clone());
        Ok(minted)
    }

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
            .timeout(MINT_TIMEOUT)
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
        Minted::new(&token.access_token, expires)
    }
}

impl Minted {
    fn new(access_token: &str, expires: SystemTime) -> Result<Self, CredentialsError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {access_token}"))
            .map_err(|e| CredentialsError::from_msg(false, format!("generateAccessToken: {e}")))?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        Ok(Self {
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
        let minted = self.token().await?;
        if extensions.get::<EntityTag>() == Some(&minted.tag) {
            return Ok(CacheableResource::NotModified);
        }
        Ok(CacheableResource::New {
            entity_tag: minted.tag,
            data: minted.headers,
        })
    }

    async fn universe_domain(&self) -> Option<String> {
        Some("googleapis.com".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_auth::credentials::anonymous;

    /// Credentials minting through IAM Credentials at `endpoint`.
    fn impersonated(endpoint: &str) -> Impersonated {
        let source = anonymous::Builder::new().build();
        let target = "bot@p.iam.gserviceaccount.com";
        Impersonated::new(source, endpoint, target, "s", reqwest::Client::new())
    }

    /// Credentials whose IAM endpoint accepts connections and never
    /// answers: every mint hangs until its timeout.
    async fn stuck() -> (Impersonated, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let creds = impersonated(&endpoint);
        (creds, listener)
    }

    fn token_of(resource: CacheableResource<HeaderMap>) -> String {
        match resource {
            CacheableResource::New { data, .. } => data[http::header::AUTHORIZATION]
                .to_str()
                .expect("ascii")
                .to_owned(),
            CacheableResource::NotModified => panic!("asked without a tag"),
        }
    }

    #[tokio::test]
    async fn a_valid_token_is_served_while_a_refresh_hangs_or_fails() {
        let (creds, _listener) = stuck().await;
        // Valid for two more minutes: inside the refresh margin.
        let expires = SystemTime::now() + Duration::from_secs(120);
        *creds.inner.cached.lock().expect("lock") =
            Some(Minted::new("cached-token", expires).expect("a header"));
        for _ in 0..3 {
            let served =
                tokio::time::timeout(Duration::from_secs(1), creds.headers(Extensions::new()))
                    .await
                    .expect("served without waiting for the refresh")
                    .expect("the cached token");
            assert_eq!(token_of(served), "Bearer cached-token");
        }
        assert!(
            creds.inner.refreshing.load(Ordering::SeqCst),
            "one refresh runs in the background"
        );
    }

    #[tokio::test]
    async fn a_failed_refresh_waits_before_the_next() {
        // An IAM endpoint that takes each connection and closes it at once.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        let creds = impersonated(&endpoint);
        let expires = SystemTime::now() + Duration::from_secs(120);
        *creds.inner.cached.lock().expect("lock") =
            Some(Minted::new("cached-token", expires).expect("a header"));
        for _ in 0..5 {
            let served = creds.headers(Extensions::new()).await.expect("cached");
            assert_eq!(token_of(served), "Bearer cached-token");
            // Long enough for a refresh against a closed connection to fail.
            for _ in 0..100 {
                if !creds.inner.refreshing.load(Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert!(creds.inner.refresh_failed.lock().expect("lock").is_some());
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one refresh, then a pause"
        );
    }

    #[tokio::test]
    async fn the_token_never_reaches_debug_output() {
        let (creds, _listener) = stuck().await;
        let expires = SystemTime::now() + Duration::from_secs(3600);
        *creds.inner.cached.lock().expect("lock") =
            Some(Minted::new("secret-token", expires).expect("a header"));
        let debug = format!("{creds:?}");
        assert!(!debug.contains("secret-token"), "{debug}");
        let served = creds.headers(Extensions::new()).await.expect("cached");
        let debug = format!("{served:?}");
        assert!(!debug.contains("secret-token"), "{debug}");
    }
}
