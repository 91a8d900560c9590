//! The Chat simulator on its own: authentication as Google does it, and the
//! request rules of `spaces.messages`.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::Sim;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

const SCOPE: &str = "https://www.googleapis.com/auth/chat.bot";

/// Signs `claims` with the key in `key_file` (RS256), as Google's clients do.
fn jwt(key_file: &Value, claims: &Value) -> String {
    let pem = key_file["private_key"].as_str().expect("private_key");
    let der = STANDARD
        .decode(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .expect("pem");
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).expect("pkcs8");
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": key_file["private_key_id"]});
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )
    .expect("sign");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn key_file(sim: &Sim) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&sim.key_path).expect("key")).expect("json")
}

fn self_signed(sim: &Sim, scope: &str, exp_offset: i64) -> String {
    let key = key_file(sim);
    let email = key["client_email"].clone();
    jwt(
        &key,
        &json!({"iss": email, "sub": email, "scope": scope, "iat": now(), "exp": now() as i64 + exp_offset}),
    )
}

async fn create(sim: &Sim, token: Option<&str>, query: &str, body: Value) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/spaces/SIM/messages?{query}", sim.url))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

fn assert_google_error(body: &Value, code: u16, status: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["status"], status, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_requests_without_a_valid_token() {
    let sim = Sim::start().await;
    let body = json!({"text": "hi"});
    let (status, error) = create(&sim, None, "", body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_google_error(&error, 401, "UNAUTHENTICATED");

    let (status, _) = create(&sim, Some("ya29.made-up"), "", body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Signed by a key the simulator does not trust.
    let stranger = chatworker_sim::keys::generate("x@y.iam.gserviceaccount.com", "http://t/token")
        .expect("key");
    let token = jwt(
        &stranger,
        &json!({"iss": "x@y.iam.gserviceaccount.com", "scope": SCOPE, "iat": now(), "exp": now() + 600}),
    );
    let (status, _) = create(&sim, Some(&token), "", body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The trusted key, but expired, or claiming another issuer.
    let (status, _) = create(
        &sim,
        Some(&self_signed(&sim, SCOPE, -3600)),
        "",
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let key = key_file(&sim);
    let token = jwt(
        &key,
        &json!({"iss": "other@y.iam.gserviceaccount.com", "scope": SCOPE, "iat": now(), "exp": now() + 600}),
    );
    let (status, _) = create(&sim, Some(&token), "", body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A tampered signature.
    let mut token = self_signed(&sim, SCOPE, 600);
    token.replace_range(token.len() - 4.., "AAAA");
    let (status, _) = create(&sim, Some(&token), "", body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Valid, but without the chat.bot scope.
    let token = self_signed(&sim, "https://www.googleapis.com/auth/pubsub", 600);
    let (status, error) = create(&sim, Some(&token), "", body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_google_error(&error, 403, "PERMISSION_DENIED");

    // Valid and scoped.
    let (status, message) = create(&sim, Some(&self_signed(&sim, SCOPE, 600)), "", body).await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert_eq!(message["sender"]["type"], "BOT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_exchanges_a_signed_assertion() {
    let sim = Sim::start().await;
    let key = key_file(&sim);
    let token_url = format!("{}/token", sim.url);
    assert_eq!(key["token_uri"], token_url.as_str());
    let assertion = |aud: &str| {
        jwt(
            &key,
            &json!({"iss": key["client_email"], "aud": aud, "scope": SCOPE, "iat": now(), "exp": now() + 600}),
        )
    };
    let client = reqwest::Client::new();
    let grant = |assertion: String| {
        client
            .post(&token_url)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ])
            .send()
    };
    let response = grant(assertion(&token_url)).await.expect("token");
    assert_eq!(response.status(), StatusCode::OK);
    let token: Value = response.json().await.expect("json");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 3600);
    let access = token["access_token"].as_str().expect("access token");
    let (status, _) = create(
        &sim,
        Some(access),
        "",
        json!({"text": "with an access token"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let response = grant(assertion("https://example.com/token"))
        .await
        .expect("token");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"], "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validates_like_the_real_api() {
    let sim = Sim::start().await;
    let bearer = self_signed(&sim, SCOPE, 600);
    let token = Some(bearer.as_str());

    let (status, error) = create(&sim, token, "", json!({"text": "hi", "colour": "red"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_google_error(&error, 400, "INVALID_ARGUMENT");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Unknown name \"colour\""),
        "{error}"
    );
    assert_eq!(
        error["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );

    let (status, _) = create(&sim, token, "", json!({"text": ["not", "a", "string"]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = create(&sim, token, "unknownParam=1", json!({"text": "hi"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = create(
        &sim,
        token,
        "messageReplyOption=SOMETIMES",
        json!({"text": "hi"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = create(&sim, token, "messageId=not-client", json!({"text": "hi"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = create(&sim, token, "messageId=client-UPPER", json!({"text": "hi"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = create(&sim, token, "", json!({"text": "x".repeat(32_001)})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // messageId: unique per space, addressable afterwards.
    let (status, first) = create(&sim, token, "messageId=client-abc", json!({"text": "one"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["clientAssignedMessageId"], "client-abc");
    let (status, error) = create(&sim, token, "messageId=client-abc", json!({"text": "two"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_google_error(&error, 409, "ALREADY_EXISTS");
    let got: Value = reqwest::Client::new()
        .get(format!("{}/v1/spaces/SIM/messages/client-abc", sim.url))
        .bearer_auth(&bearer)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(got["name"], first["name"]);

    // requestId: the same request returns the same message.
    let (_, a) = create(&sim, token, "requestId=r1", json!({"text": "once"})).await;
    let (_, b) = create(&sim, token, "requestId=r1", json!({"text": "once"})).await;
    assert_eq!(a["name"], b["name"]);

    // Threads: OR_FAIL refuses an unknown thread; integer enums are accepted.
    let (status, error) = create(
        &sim,
        token,
        "messageReplyOption=REPLY_MESSAGE_OR_FAIL",
        json!({"text": "x", "thread": {"name": "spaces/SIM/threads/none"}}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_google_error(&error, 404, "NOT_FOUND");
    let (status, reply) = create(
        &sim,
        token,
        "messageReplyOption=1",
        json!({"text": "x", "thread": {"name": first["thread"]["name"]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["thread"]["name"], first["thread"]["name"]);

    // Everything the API refused is in the call log with its status.
    let statuses: Vec<u64> = sim
        .calls()
        .await
        .iter()
        .filter_map(|c| c["status"].as_u64())
        .collect();
    assert!(statuses.contains(&400) && statuses.contains(&409) && statuses.contains(&404));
}

#[tokio::test]
async fn the_metadata_server_hands_out_expiring_tokens() {
    let sim = Sim::start().await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/computeMetadata/v1/instance/service-accounts/default/token?scopes={SCOPE}",
        sim.url
    );
    // Like Google's, it answers only requests that say they mean it.
    let refused = http.get(&url).send().await.expect("request");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    sim.control(json!({"tokenLifetimeSeconds": 1})).await;
    let token: Value = http
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(token["expires_in"], 1);
    let access = token["access_token"].as_str().expect("token");
    let (status, _) = create(&sim, Some(access), "", json!({"text": "hi"})).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, body) = create(&sim, Some(access), "", json!({"text": "hi"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Without the chat.bot scope (the GKE default): 403.
    let plain: Value = http
        .get(url.split('?').next().expect("path"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let (status, _) = create(
        &sim,
        plain["access_token"].as_str(),
        "",
        json!({"text": "hi"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A token outage.
    sim.control(json!({"tokenOutageMs": 60_000})).await;
    let down = http
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("request");
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn injected_faults_carry_retry_after_and_are_recorded() {
    let sim = Sim::start().await;
    let token = self_signed(&sim, SCOPE, 3600);
    sim.control(json!({"failNext": 1, "failStatus": 429, "retryAfterSeconds": 7}))
        .await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/spaces/AAA/messages", sim.url))
        .bearer_auth(&token)
        .json(&json!({"text": "hi"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.expect("json");
    assert_google_error(&body, 429, "RESOURCE_EXHAUSTED");
    // An outage fails everything, then ends.
    sim.control(json!({"outageMs": 60_000})).await;
    let (status, _) = create(&sim, Some(&token), "", json!({"text": "hi"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    sim.control(json!({"outageMs": 0})).await;
    let (status, _) = create(&sim, Some(&token), "", json!({"text": "hi"})).await;
    assert_eq!(status, StatusCode::OK);
    // Quotas: three writes a minute into a space, then 429.
    sim.control(json!({"spaceWritesPerMinute": 3})).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            create(&sim, Some(&token), "", json!({"text": "hi"}))
                .await
                .0,
        );
    }
    assert_eq!(statuses[..3], [StatusCode::OK; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
    let faults: Vec<Value> = reqwest::get(format!("{}/_sim/requests", sim.url))
        .await
        .expect("requests")
        .json::<Value>()
        .await
        .expect("json")["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|c| c["fault"].clone())
        .collect();
    assert_eq!(
        faults,
        [
            json!("injected"),
            json!("outage"),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            json!("quota")
        ]
    );
    // A bad control request changes nothing and says why.
    let bad = reqwest::Client::new()
        .post(format!("{}/_sim/control", sim.url))
        .json(&json!({"errorRate": 1.5, "latencyMs": 100}))
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let control: Value = reqwest::get(format!("{}/_sim/control", sim.url))
        .await
        .expect("control")
        .json()
        .await
        .expect("json");
    assert_eq!(control["latencyMs"], 0);
    assert_eq!(control["spaceWritesPerMinute"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_what_apps_created_and_every_answer() {
    let sim = Sim::start().await;
    let bearer = self_signed(&sim, SCOPE, 600);
    sim.seed("spaces/SIM", "a person's message", None).await;
    let (status, _) = create(&sim, Some(&bearer), "", json!({"text": "from the app"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = create(&sim, None, "", json!({"text": "no token"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let stats = sim.get("/_sim/stats").await;
    // The seeded message is not the app's; the refused call created nothing.
    assert_eq!(stats["created"], 1, "{stats}");
    assert_eq!(stats["statuses"]["200"], 1, "{stats}");
    assert_eq!(stats["statuses"]["401"], 1, "{stats}");
}
