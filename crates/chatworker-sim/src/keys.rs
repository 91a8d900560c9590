//! Service-account key files: reading the public half of keys to trust, and
//! making new keys for local runs and tests (`chatworker sim --issue-key`).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::path::Path;

/// The public half of a service-account key the simulator trusts.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// `client_email`: the `iss` its tokens must carry.
    pub client_email: String,
    /// `private_key_id`: the `kid` in its tokens' header.
    pub key_id: String,
    /// The RSA public key, DER `RSAPublicKey` (PKCS#1).
    pub public_key: Vec<u8>,
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct KeyError {
    path: String,
    problem: String,
}

impl TrustedKey {
    /// Reads a service-account key file (the JSON that Google's console
    /// downloads) and keeps its public half.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let err = |problem: String| KeyError {
            path: path.display().to_string(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
        Self::from_json(&json).map_err(err)
    }

    /// As [`TrustedKey::from_file`], from the parsed JSON.
    pub fn from_json(json: &Value) -> Result<Self, String> {
        let field = |name: &str| {
            json.get(name).and_then(Value::as_str).ok_or_else(|| {
                format!("field {name:?} is missing; is this a service-account key file?")
            })
        };
        if field("type")? != "service_account" {
            return Err("\"type\" is not \"service_account\"".into());
        }
        let der = pem_to_der(field("private_key")?)?;
        let pair = KeyPair::from_pkcs8(&der)
            .map_err(|e| format!("private_key is not a PKCS#8 RSA key: {e}"))?;
        Ok(Self {
            client_email: field("client_email")?.to_owned(),
            key_id: field("private_key_id")?.to_owned(),
            public_key: pair.public_key().as_ref().to_vec(),
        })
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    STANDARD
        .decode(body)
        .map_err(|e| format!("private_key is not PEM: {e}"))
}

/// A new service-account key file's JSON, for `email` (an address like
/// `NAME@PROJECT.iam.gserviceaccount.com`) with tokens to be requested from
/// `token_uri`. Not for production: the simulator is its only verifier.
pub fn generate(email: &str, token_uri: &str) -> Result<Value, String> {
    let pair =
        KeyPair::generate(KeySize::Rsa2048).map_err(|e| format!("key generation failed: {e}"))?;
    let der = pair
        .as_der()
        .map_err(|e| format!("key encoding failed: {e}"))?;
    let b64 = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let project = email
        .split('@')
        .nth(1)
        .and_then(|d| d.split('.').next())
        .unwrap_or("local-project");
    Ok(json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": hex::encode(rand::random::<[u8; 20]>()),
        "private_key": pem,
        "client_email": email,
        "client_id": rand::random::<u64>().to_string(),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    }))
}

/// Writes a new key file at `path` (mode 0600) unless one exists; returns its
/// public half either way.
pub fn issue_key_file(path: &Path, email: &str, token_uri: &str) -> Result<TrustedKey, KeyError> {
    if !path.exists() {
        let err = |problem: String| KeyError {
            path: path.display().to_string(),
            problem,
        };
        let json = generate(email, token_uri).map_err(err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let text = serde_json::to_string_pretty(&json).expect("JSON values serialize");
        write_private(path, &text).map_err(|e| err(e.to_string()))?;
    }
    TrustedKey::from_file(path)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}
