//! Authentication as Google does it: RS256 JWTs signed with a trusted
//! service-account key, either used directly as the bearer token (self-signed
//! JWT, what `google-cloud-auth` sends) or exchanged at the token endpoint for
//! an opaque access token (what most other Google clients do).

use super::keys::TrustedKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The scope Chat apps authenticate with.
pub const CHAT_BOT_SCOPE: &str = "https://www.googleapis.com/auth/chat.bot";
/// Lifetime of access tokens the token endpoint issues (Google's: one hour).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Tolerated clock skew on `iat` and `exp`.
const SKEW: u64 = 60;

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The service account's email.
    pub email: String,
}

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no credential, or not a valid one.
    Unauthenticated(String),
    /// 403: a valid credential without the `chat.bot` scope.
    InsufficientScope,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// The claims we check; others are ignored.
#[derive(Debug, Deserialize)]
pub struct Claims {
    iss: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    aud: Option<String>,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
}

#[derive(Debug)]
struct Issued {
    email: String,
    scopes: Vec<String>,
    expires: SystemTime,
}

/// Trusted keys and issued access tokens.
#[derive(Debug)]
pub struct Authenticator {
    keys: Vec<TrustedKey>,
    tokens: Mutex<HashMap<String, Issued>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Authenticator {
    /// Trusts these keys.
    pub fn new(keys: Vec<TrustedKey>) -> Self {
        Self {
            keys,
            tokens: Mutex::default(),
        }
    }

    /// Verifies a JWT's signature against a trusted key, its `iss` and its
    /// times. The caller checks `aud` and `scope`.
    pub fn verify_jwt(&self, jwt: &str) -> Result<Claims, String> {
        let mut parts = jwt.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| "JWT is not base64url".to_owned())
        };
        let header: Header =
            serde_json::from_slice(&decode(h)?).map_err(|_| "JWT header is not JSON".to_owned())?;
        if header.alg != "RS256" {
            return Err(format!("JWT algorithm {} is not RS256", header.alg));
        }
        let claims: Claims =
            serde_json::from_slice(&decode(c)?).map_err(|e| format!("JWT claims: {e}"))?;
        let key = self
            .keys
            .iter()
            .find(|k| header.kid.as_deref() == Some(k.key_id.as_str()))
            .or_else(|| self.keys.iter().find(|k| k.client_email == claims.iss))
            .ok_or("JWT signed by a key the simulator does not trust")?;
        let signature = decode(s)?;
        let signed = &jwt[..h.len() + 1 + c.len()];
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            &key.public_key,
        )
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "JWT signature does not verify")?;
        if claims.iss != key.client_email {
            return Err("JWT iss is not the key's client_email".into());
        }
        let now = now();
        if claims.exp + SKEW < now {
            return Err("JWT has expired".into());
        }
        if claims.iat.is_some_and(|iat| iat > now + SKEW) {
            return Err("JWT iat is in the future".into());
        }
        Ok(claims)
    }

    /// Checks an `Authorization` header for an API that takes `scope`
    /// (IAM Credentials takes `cloud-platform`).
    pub fn authorize_scope(&self, header: Option<&str>, scope: &str) -> Result<Principal, Refusal> {
        let unauthenticated = |why: &str| Refusal::Unauthenticated(why.to_owned());
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthenticated("no bearer token"))?;
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let issued = tokens
            .get(token)
            .ok_or_else(|| unauthenticated("unknown access token"))?;
        if issued.expires < SystemTime::now() {
            return Err(unauthenticated("access token expired"));
        }
        if !issued.scopes.iter().any(|s| s == scope) {
            return Err(Refusal::InsufficientScope);
        }
        Ok(Principal {
            email: issued.email.clone(),
        })
    }

    /// Checks an `Authorization` header for the Chat API.
    pub fn authorize(&self, header: Option<&str>) -> Result<Principal, Refusal> {
        let unauthenticated = |why: &str| Refusal::Unauthenticated(why.to_owned());
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthenticated("no bearer token"))?;
        if let Some(issued) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
        {
            if issued.expires < SystemTime::now() {
                return Err(unauthenticated("access token expired"));
            }
            if !issued.scopes.iter().any(|s| s == CHAT_BOT_SCOPE) {
                return Err(Refusal::InsufficientScope);
            }
            return Ok(Principal {
                email: issued.email.clone(),
            });
        }
        let claims = self.verify_jwt(token).map_err(|e| unauthenticated(&e))?;
        // A self-signed JWT names the API either by scope or by audience.
        let scoped = claims
            .scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|s| s == CHAT_BOT_SCOPE));
        let audience = claims
            .aud
            .as_deref()
            .is_some_and(|a| a.starts_with("https://chat.googleapis.com"));
        if !scoped && !audience {
            return Err(Refusal::InsufficientScope);
        }
        Ok(Principal { email: claims.iss })
    }

    /// The token endpoint: exchanges a signed JWT assertion
    /// (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`) for an
    /// access token. `token_url` is this endpoint's own URL, the `aud` the
    /// assertion must carry. Errors are OAuth error codes with a description.
    pub fn grant(
        &self,
        form: &HashMap<String, String>,
        token_url: &str,
        lifetime: Duration,
    ) -> Result<(String, Duration), (&'static str, String)> {
        if form.get("grant_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        {
            return Err(("unsupported_grant_type", "Invalid grant_type".into()));
        }
        let assertion = form.get("assertion").ok_or((
            "invalid_request",
            "Missing required parameter: assertion".to_owned(),
        ))?;
        let claims = self
            .verify_jwt(assertion)
            .map_err(|e| ("invalid_grant", format!("Invalid JWT: {e}")))?;
        let accepted_audiences = [token_url, "https://oauth2.googleapis.com/token"];
        if !claims
            .aud
            .as_deref()
            .is_some_and(|a| accepted_audiences.contains(&a))
        {
            return Err((
                "invalid_grant",
                "Invalid JWT: audience is not this token endpoint".into(),
            ));
        }
        let scopes: Vec<String> = claims
            .scope
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if scopes.is_empty() {
            return Err(("invalid_scope", "Invalid JWT: no scope".into()));
        }
        Ok((self.issue(&claims.iss, scopes, lifetime), lifetime))
    }

    /// Issues an opaque access token for `email` with `scopes`, valid for
    /// `lifetime` (the token endpoint and the metadata server both do).
    pub fn issue(&self, email: &str, scopes: Vec<String>, lifetime: Duration) -> String {
        let token = format!("ya29.sim-{}", hex::encode(rand::random::<[u8; 24]>()));
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= 1024 {
            let now = SystemTime::now();
            tokens.retain(|_, t| t.expires > now);
        }
        tokens.insert(
            token.clone(),
            Issued {
                email: email.to_owned(),
                scopes,
                expires: SystemTime::now() + lifetime,
            },
        );
        token
    }
}
