//! Google on loopback, for developing and testing Chat apps: a Chat API
//! simulator with a playground page ([`serve`]), and a launcher for Google's
//! Pub/Sub emulator ([`emulator`]).
//!
//! The simulator is what `chatworker sim` serves: a local Chat API that
//! follows the published reference closely enough to test against. It authenticates like Google (trusted
//! service-account keys; self-signed JWTs or tokens from its own token
//! endpoint), validates requests against the embedded discovery document, and
//! applies Chat's message rules ([`store`]). It is an independent oracle: this
//! crate depends on nothing of the `chatworker` runtime, and implements Chat's
//! rules (message IDs, threads, limits, quotas) from the reference itself.
//!
//! Besides the API (`/v1/…`) and the token endpoint (`/token`) it serves an
//! inspection API under `/_sim/`: what was created and with which request,
//! every API call, and seeding of messages that people "wrote".

pub mod auth;
pub mod emulator;
pub mod events;
pub mod faults;
pub mod keys;
pub mod playground;
pub mod schema;
pub mod store;

use auth::{Authenticator, Refusal};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use bytes::Bytes;
use faults::{CallKind, ControlPatch, Fault, Faults};
use keys::TrustedKey;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use store::{CreateRequest, Store, StoreError};
use tokio::net::TcpListener;

/// The simulator's options.
#[derive(Clone, Debug, Default)]
pub struct SimOptions {
    /// Service-account keys whose tokens are accepted.
    pub trust: Vec<TrustedKey>,
    /// Faults and quotas from the start (as `POST /_sim/control` sets them).
    pub faults: ControlPatch,
    /// Where the playground publishes events; `None`: no playground.
    pub playground: Option<playground::Config>,
    /// Host names answered besides loopback ones, such as
    /// `chat.googleapis.com` when a test's TLS-inspecting proxy routes
    /// Google's name here. Empty: loopback names only (no DNS rebinding).
    pub also_hosts: Vec<String>,
}

/// The service account the simulated metadata server hands out tokens for.
pub const METADATA_ACCOUNT: &str = "chatworker-sim@chatworker-local.iam.gserviceaccount.com";

/// One API call, for `/_sim/requests`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Response status.
    pub status: u16,
    /// When the call arrived, in milliseconds since the simulator started.
    pub started_ms: f64,
    /// Time to answer, in milliseconds.
    pub latency_ms: f64,
    /// Why the call was failed on purpose, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// The error message answered, for a failed call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The thread a create call asked for, when it named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}

/// The gRPC status name Google's errors carry for an HTTP status.
fn grpc_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

struct SimState {
    store: Mutex<Store>,
    auth: Authenticator,
    token_url: String,
    /// The latest calls (at most [`MAX_CALLS`]), oldest first.
    calls: Mutex<std::collections::VecDeque<CallRecord>>,
    /// Every call's status, counted: the log above forgets, this does not.
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// Whether the simulator listens on loopback only: then requests must
    /// name a loopback host (no DNS rebinding) and come from a loopback page.
    loopback: bool,
    /// [`SimOptions::also_hosts`].
    also_hosts: Vec<String>,
    faults: Mutex<Faults>,
    in_flight: std::sync::atomic::AtomicU64,
    started: Instant,
    /// Every change, for the playground's live view (`/_sim/stream`).
    updates: tokio::sync::broadcast::Sender<Value>,
    playground: Option<playground::Config>,
    /// What people did in the playground, for the transcript.
    actions: Mutex<Vec<Value>>,
}

impl SimState {
    /// Tells live viewers that the message `name` changed.
    fn message_changed(&self, name: &str) {
        let record = lock(&self.store).record(name).cloned();
        if let Some(record) = record {
            let _ = self
                .updates
                .send(json!({"kind": "message", "record": record}));
        }
    }
}

type Shared = Arc<SimState>;

/// The most calls `/_sim/requests` remembers (the counts in `/_sim/stats`
/// cover every call): the simulator runs for days in a playground session
/// and must not grow without bound.
pub const MAX_CALLS: usize = 20_000;

/// The most playground actions a transcript keeps.
pub const MAX_ACTIONS: usize = 10_000;

/// Whether `host` (a `Host` header, or an origin's host, with or without a
/// port) names this machine.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // `[::1]:8086`, `127.0.0.1:8086`, `localhost:8086`
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses what a web page elsewhere could make a browser send: on a
/// loopback simulator, a request naming another host (DNS rebinding) or
/// coming from another origin; and, on any simulator, a state-changing
/// inspection request that is not JSON (a cross-site form cannot send it).
async fn guard(State(state): State<Shared>, request: Request, next: Next) -> Response {
    match refusal(&state, &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// Why [`guard`] refuses `request`, if it does.
fn refusal(state: &SimState, request: &Request) -> Option<Response> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if state.loopback {
        if let Some(host) = header("host")
            && !is_loopback_host(host)
            && !state
                .also_hosts
                .iter()
                .any(|also| host.rsplit_once(':').map_or(host, |(name, _)| name) == also)
        {
            return Some(error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                format!(
                    "Host {host:?} is not this machine: the simulator answers loopback names only."
                ),
            ));
        }
        // A sandboxed or file page says `null`: not this machine's page.
        if changes && let Some(origin) = header("origin") {
            let host = origin.split("://").nth(1).unwrap_or("");
            if !is_loopback_host(host) {
                return Some(error(
                    StatusCode::FORBIDDEN,
                    "PERMISSION_DENIED",
                    format!("Origin {origin:?} is not this machine."),
                ));
            }
        }
    }
    let json = header("content-type").is_some_and(|t| {
        t.trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    if changes && request.uri().path().starts_with("/_sim/") && !json {
        return Some(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "INVALID_ARGUMENT",
            "The simulator's own endpoints take application/json.",
        ));
    }
    None
}

/// Locks a mutex. A panic while it was held cannot leave the simulator's
/// state half-written (every update is a single insert or assignment), so a
/// poisoned lock is used as it is rather than failing every later request.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves the simulator on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    options: SimOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let mut faults = Faults::default();
    faults
        .apply(options.faults)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let state = Arc::new(SimState {
        store: Mutex::default(),
        auth: Authenticator::new(options.trust),
        token_url: format!("http://{addr}/token"),
        calls: Mutex::default(),
        statuses: Mutex::default(),
        loopback: addr.ip().is_loopback(),
        also_hosts: options.also_hosts,
        faults: Mutex::new(faults),
        in_flight: Default::default(),
        started: Instant::now(),
        updates: tokio::sync::broadcast::channel(1024).0,
        playground: options.playground,
        actions: Mutex::default(),
    });
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn router(state: Shared) -> Router {
    let api = Router::new()
        .route(
            "/v1/spaces/{space}/messages",
            post(create_message).get(list_messages),
        )
        .route(
            "/v1/spaces/{space}/messages/{message}",
            get(get_message)
                .patch(update_message)
                .put(update_message)
                .delete(delete_message),
        )
        .route("/token", post(token))
        .route(
            "/v1/projects/{project}/serviceAccounts/{account}",
            post(generate_access_token),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            get(metadata_token),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/email",
            get(|headers: HeaderMap| async move { metadata(&headers, METADATA_ACCOUNT) }),
        )
        .route(
            "/computeMetadata/v1/universe/universe-domain",
            get(|headers: HeaderMap| async move { metadata(&headers, "googleapis.com") }),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), record_call));
    Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/_sim/messages", get(inspect_messages))
        .route("/_sim/requests", get(inspect_calls))
        .route("/_sim/stats", get(inspect_stats))
        .route("/_sim/spaces/{space}/messages", post(seed_message))
        .route("/_sim/control", get(get_control).post(set_control))
        .merge(playground::routes())
        .merge(api)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Google's error JSON.
fn error(status: StatusCode, grpc: &str, message: impl Into<String>) -> Response {
    let body =
        json!({"error": {"code": status.as_u16(), "message": message.into(), "status": grpc}});
    (status, Json(body)).into_response()
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::InvalidArgument(m) => error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", m),
        StoreError::NotFound(m) => error(StatusCode::NOT_FOUND, "NOT_FOUND", m),
        StoreError::AlreadyExists(m) => error(StatusCode::CONFLICT, "ALREADY_EXISTS", m),
        StoreError::PermissionDenied(m) => error(StatusCode::FORBIDDEN, "PERMISSION_DENIED", m),
    }
}

fn invalid(e: schema::Invalid) -> Response {
    let body = json!({"error": {
        "code": 400,
        "message": e.description,
        "status": "INVALID_ARGUMENT",
        "details": [{
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": e.field, "description": e.description}]
        }]
    }});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn authorize(state: &SimState, headers: &HeaderMap) -> Result<auth::Principal, Refusal> {
    let header = headers.get("authorization").and_then(|v| v.to_str().ok());
    state.auth.authorize(header)
}

/// Google's answers to a refused credential.
fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Unauthenticated(why) => error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            format!(
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. ({why})"
            ),
        ),
        Refusal::InsufficientScope => error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Request had insufficient authentication scopes.",
        ),
    }
}

/// The app's user in messages it creates.
fn app_sender(principal: &auth::Principal) -> Value {
    let id = &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        principal.email.as_bytes(),
    ))[..16];
    let display = principal.email.split('@').next().unwrap_or("app");
    json!({"name": format!("users/{id}"), "displayName": display, "type": "BOT"})
}

async fn create_message(
    State(state): State<Shared>,
    Path(space): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = match authorize(&state, &headers) {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    let query = match method_query("create", &query) {
        Ok(q) => q,
        Err(e) => return invalid(e),
    };
    let body = match message_body(&body) {
        Ok(b) => b,
        Err(e) => return invalid(e),
    };
    let owned = |name: &str| param(&query, name).map(str::to_owned);
    let request = CreateRequest {
        space: format!("spaces/{space}"),
        message_id: owned("messageId"),
        request_id: owned("requestId"),
        reply_option: owned("messageReplyOption").unwrap_or_default(),
        thread_key: owned("threadKey"),
        body: body.clone(),
        sender: app_sender(&principal),
    };
    let query: BTreeMap<String, String> = query.into_iter().collect();
    let result = lock(&state.store).create(request, true, query);
    match result {
        Ok((message, _)) => {
            state.message_changed(message["name"].as_str().unwrap_or_default());
            Json(message).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// Checks the query of `spaces.messages.<name>` against the discovery
/// document and returns it normalized, or the 400 to answer.
fn method_query(
    name: &str,
    query: &[(String, String)],
) -> Result<Vec<(String, String)>, schema::Invalid> {
    let method = schema::method("spaces", "messages", name)
        .unwrap_or_else(|| panic!("{name} is in the discovery document"));
    schema::check_query(method, query)
}

/// A request body that must be a Message: parsed, checked against the
/// discovery document, enums normalized to names.
fn message_body(body: &[u8]) -> Result<Value, schema::Invalid> {
    let value: Value = serde_json::from_slice(body).map_err(|e| schema::Invalid {
        field: "message".into(),
        description: format!("Invalid JSON payload received. {e}"),
    })?;
    schema::check_body("Message", &value, "message")
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// A boolean query parameter; the error is Google's message for a bad one.
fn flag(query: &[(String, String)], name: &str) -> Result<bool, String> {
    match param(query, name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(format!(
            "Invalid value at '{name}' (TYPE_BOOL), \"{other}\""
        )),
    }
}

async fn get_message(
    State(state): State<Shared>,
    Path((space, message)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return refused(r);
    }
    if let Err(e) = method_query("get", &query) {
        return invalid(e);
    }
    let name = format!("spaces/{space}/messages/{message}");
    match lock(&state.store).get(&name) {
        Ok(m) => Json(m).into_response(),
        Err(e) => store_error(e),
    }
}

/// `PATCH` (`spaces.messages.patch`) and `PUT` (`update`): the same rules.
async fn update_message(
    State(state): State<Shared>,
    method: Method,
    Path((space, message)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = match authorize(&state, &headers) {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    let name = if method == Method::PUT {
        "update"
    } else {
        "patch"
    };
    let query = match method_query(name, &query) {
        Ok(q) => q,
        Err(e) => return invalid(e),
    };
    let body = match message_body(&body) {
        Ok(b) => b,
        Err(e) => return invalid(e),
    };
    let allow_missing = match flag(&query, "allowMissing") {
        Ok(f) => f,
        Err(m) => return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", m),
    };
    let request = store::UpdateRequest {
        name: format!("spaces/{space}/messages/{message}"),
        update_mask: param(&query, "updateMask").unwrap_or_default().to_owned(),
        allow_missing,
        body,
        sender: app_sender(&principal),
    };
    let result = lock(&state.store).update(request);
    match result {
        Ok((message, _)) => {
            state.message_changed(message["name"].as_str().unwrap_or_default());
            Json(message).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn delete_message(
    State(state): State<Shared>,
    Path((space, message)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let principal = match authorize(&state, &headers) {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    let query = match method_query("delete", &query) {
        Ok(q) => q,
        Err(e) => return invalid(e),
    };
    if let Err(m) = flag(&query, "force") {
        return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", m);
    }
    let name = format!("spaces/{space}/messages/{message}");
    let record = lock(&state.store).record(&name).cloned();
    let result = lock(&state.store).delete(&name, &app_sender(&principal));
    match result {
        Ok(()) => {
            if let Some(mut record) = record {
                record.deleted = true;
                let _ = state
                    .updates
                    .send(json!({"kind": "message", "record": record}));
            }
            Json(json!({})).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn list_messages(
    State(state): State<Shared>,
    Path(space): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return refused(r);
    }
    let query = match method_query("list", &query) {
        Ok(q) => q,
        Err(e) => return invalid(e),
    };
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", m);
    let page_size = match param(&query, "pageSize").map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(_) => return bad("pageSize must be a non-negative integer.".into()),
    };
    let descending =
        match param(&query, "orderBy").map(|o| o.split_whitespace().collect::<Vec<_>>()) {
            None => false,
            Some(o) if o == ["createTime"] || o == ["createTime", "asc"] => false,
            Some(o) if o == ["createTime", "desc"] => true,
            Some(o) => {
                return bad(format!(
                    "Invalid orderBy {:?}: use createTime asc or createTime desc.",
                    o.join(" ")
                ));
            }
        };
    let thread = match param(&query, "filter") {
        None => None,
        Some(filter) => match filter
            .split_once('=')
            .filter(|(field, _)| field.trim() == "thread.name")
        {
            Some((_, value)) => Some(value.trim().trim_matches('"').to_owned()),
            None => {
                return bad(format!(
                    "The simulator supports only the filter thread.name = \"spaces/…/threads/…\", not {filter:?}."
                ));
            }
        },
    };
    let page = lock(&state.store).page(
        &format!("spaces/{space}"),
        page_size,
        param(&query, "pageToken"),
        descending,
        thread.as_deref(),
    );
    match page {
        Ok(page) => Json(page).into_response(),
        Err(e) => store_error(e),
    }
}

async fn token(State(state): State<Shared>, Form(form): Form<HashMap<String, String>>) -> Response {
    let lifetime = lock(&state.faults).token_lifetime();
    match state.auth.grant(&form, &state.token_url, lifetime) {
        Ok((token, lifetime)) => Json(json!({
            "access_token": token,
            "expires_in": lifetime.as_secs(),
            "token_type": "Bearer",
        }))
        .into_response(),
        Err((code, description)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": code, "error_description": description})),
        )
            .into_response(),
    }
}

/// A metadata server answer; like Google's, only to requests that carry
/// `Metadata-Flavor: Google`.
fn metadata(headers: &HeaderMap, value: &str) -> Response {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor: Google header",
        )
            .into_response();
    }
    ([("metadata-flavor", "Google")], value.to_owned()).into_response()
}

/// The metadata server's token route, as on GCE and GKE: a token for the
/// attached service account with the scopes asked for (comma-separated),
/// `cloud-platform` when none are given.
async fn metadata_token(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let refused = metadata(&headers, "");
    if refused.status() != StatusCode::OK {
        return refused;
    }
    let scopes: Vec<String> = query
        .get("scopes")
        .map(|s| s.split(',').map(str::trim).map(str::to_owned).collect())
        .unwrap_or_else(|| vec!["https://www.googleapis.com/auth/cloud-platform".to_owned()]);
    let lifetime = lock(&state.faults).token_lifetime();
    let token = state.auth.issue(METADATA_ACCOUNT, scopes, lifetime);
    (
        [("metadata-flavor", "Google")],
        Json(json!({
            "access_token": token,
            "expires_in": lifetime.as_secs(),
            "token_type": "Bearer",
        })),
    )
        .into_response()
}

/// IAM Credentials' `generateAccessToken`: a caller holding a
/// `cloud-platform` token (the metadata server's, on GKE) mints a token for
/// another service account, with the scopes it asks for. The simulator lets
/// any trusted caller impersonate any account (real IAM asks for
/// `roles/iam.serviceAccountTokenCreator`).
async fn generate_access_token(
    State(state): State<Shared>,
    Path((_project, account)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(email) = account.strip_suffix(":generateAccessToken") else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("The simulator does not serve {account}."),
        );
    };
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(refusal) = state
        .auth
        .authorize_scope(header, "https://www.googleapis.com/auth/cloud-platform")
    {
        return refused(refusal);
    }
    #[derive(serde::Deserialize)]
    struct Request {
        #[serde(default)]
        scope: Vec<String>,
        #[serde(default)]
        lifetime: Option<String>,
    }
    let request: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return invalid(schema::Invalid {
                field: "body".into(),
                description: format!("Invalid JSON payload received. {e}"),
            });
        }
    };
    if request.scope.is_empty() || !email.contains('@') {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "generateAccessToken needs a service account email and at least one scope.",
        );
    }
    let asked = request
        .lifetime
        .as_deref()
        .and_then(|l| l.strip_suffix('s')?.parse::<u64>().ok())
        .map_or(
            std::time::Duration::from_secs(3600),
            std::time::Duration::from_secs,
        );
    let lifetime = asked.min(lock(&state.faults).token_lifetime());
    let token = state.auth.issue(email, request.scope, lifetime);
    let expires = chrono::Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or_default();
    Json(json!({
        "accessToken": token,
        "expireTime": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
    .into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("The simulator does not serve {method} {}.", uri.path()),
    )
}

/// What a call is, from its method and path.
fn call_kind<'a>(method: &Method, path: &'a str) -> CallKind<'a> {
    if path == "/token"
        || path.starts_with("/computeMetadata/")
        || path.ends_with(":generateAccessToken")
    {
        return CallKind::Token;
    }
    let write = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    match path.strip_prefix("/v1/") {
        Some(rest) if write && rest.starts_with("spaces/") => {
            let end = rest
                .match_indices('/')
                .nth(1)
                .map_or(rest.len(), |(i, _)| i);
            CallKind::Write(&rest[..end])
        }
        _ => CallKind::Read,
    }
}

/// One call being answered: counted in flight until dropped, and recorded
/// when dropped, also when the client went away before its answer (status
/// 499, as proxies log it).
struct Pending {
    state: Shared,
    started: Instant,
    record: CallRecord,
}

impl Drop for Pending {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.state.in_flight.fetch_sub(1, Relaxed);
        self.record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        *lock(&self.state.statuses)
            .entry(self.record.status)
            .or_default() += 1;
        let mut calls = lock(&self.state.calls);
        if calls.len() == MAX_CALLS {
            calls.pop_front();
        }
        calls.push_back(self.record.clone());
        drop(calls);
        let _ = self
            .state
            .updates
            .send(json!({"kind": "call", "call": self.record}));
    }
}

/// Reads a body of at most `limit` bytes, returning it intact for passing
/// on, and its JSON when it is JSON.
async fn peek_json(body: axum::body::Body, limit: usize) -> (axum::body::Body, Option<Value>) {
    let bytes = axum::body::to_bytes(body, limit).await.unwrap_or_default();
    let json = serde_json::from_slice(&bytes).ok();
    (axum::body::Body::from(bytes), json)
}

async fn record_call(State(state): State<Shared>, request: Request, next: Next) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let started = Instant::now();
    state.in_flight.fetch_add(1, Relaxed);
    let mut pending = Pending {
        state: state.clone(),
        started,
        record: CallRecord {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().unwrap_or_default().to_owned(),
            status: 499,
            started_ms: started.duration_since(state.started).as_secs_f64() * 1000.0,
            latency_ms: 0.0,
            fault: None,
            error: None,
            thread: None,
        },
    };
    // A create names its thread in the body: keep it with the call, so that
    // a refused reply (no message came of it) can be shown in its thread.
    let request = if request.method() == Method::POST && pending.record.path.ends_with("/messages")
    {
        let (parts, body) = request.into_parts();
        let (body, json) = peek_json(body, 64 << 20).await;
        pending.record.thread = json.and_then(|v| v["thread"]["name"].as_str().map(str::to_owned));
        Request::from_parts(parts, body)
    } else {
        request
    };
    let verdict = lock(&state.faults).judge(call_kind(request.method(), &pending.record.path));
    let (response, fault) = match verdict.fail {
        Some((status, fault)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let message = match fault {
                Fault::Quota => {
                    "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute' of service 'chat.googleapis.com'."
                }
                Fault::Outage => "The service is currently unavailable.",
                Fault::TokenOutage => "The token service is currently unavailable.",
                Fault::Injected => "Injected by the simulator's control endpoint.",
            };
            // An injected 409 is a conflict with a concurrent change
            // (ABORTED): a real ALREADY_EXISTS comes from the store's rules.
            let grpc = match (fault, status.as_u16()) {
                (Fault::Injected, 409) => "ABORTED",
                _ => grpc_status(status),
            };
            let mut response = error(status, grpc, message);
            if let Some(seconds) = verdict.retry_after
                && let Ok(value) = seconds.to_string().parse()
            {
                response.headers_mut().insert("retry-after", value);
            }
            (response, Some(fault))
        }
        None => (next.run(request).await, None),
    };
    pending.record.status = response.status().as_u16();
    pending.record.fault = fault;
    let response = if response.status().is_client_error() || response.status().is_server_error() {
        // Keep Google's error message next to the call (what the playground
        // shows beside a message); error bodies are small JSON.
        let (parts, body) = response.into_parts();
        let (body, json) = peek_json(body, 1 << 20).await;
        pending.record.error = json.and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
        Response::from_parts(parts, body)
    } else {
        response
    };
    // The latency is spent after the work is done, as on a slow network: a
    // client that gives up (or dies) while waiting has still created its
    // message, which is the case deduplication must handle.
    if !verdict.delay.is_zero() {
        tokio::time::sleep(verdict.delay).await;
    }
    drop(pending);
    response
}

async fn get_control(State(state): State<Shared>) -> Response {
    Json(lock(&state.faults).view()).into_response()
}

/// Changes the fields given, keeps the others.
async fn set_control(State(state): State<Shared>, body: Bytes) -> Response {
    let patch: ControlPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", e.to_string()),
    };
    let mut faults = lock(&state.faults);
    match faults.apply(patch) {
        Ok(()) => Json(faults.view()).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", e.0),
    }
}

async fn inspect_messages(State(state): State<Shared>) -> Response {
    let records = lock(&state.store).records();
    Json(json!({"messages": records})).into_response()
}

async fn inspect_calls(State(state): State<Shared>) -> Response {
    let calls: Vec<CallRecord> = lock(&state.calls).iter().cloned().collect();
    let in_flight = state.in_flight.load(std::sync::atomic::Ordering::Relaxed);
    Json(json!({"requests": calls, "inFlight": in_flight})).into_response()
}

/// Counts, cheap to poll: API calls by status, messages created by apps,
/// calls in flight.
async fn inspect_stats(State(state): State<Shared>) -> Response {
    let created = lock(&state.store).app_message_count();
    let counted = lock(&state.statuses).clone();
    let calls: u64 = counted.values().sum();
    let statuses: BTreeMap<String, u64> = counted
        .into_iter()
        .map(|(status, n)| (status.to_string(), n))
        .collect();
    let in_flight = state.in_flight.load(std::sync::atomic::Ordering::Relaxed);
    Json(json!({
        "calls": calls,
        "created": created,
        "statuses": statuses,
        "inFlight": in_flight,
    }))
    .into_response()
}

/// Records a message as if a person had written it in Chat, so that an event
/// can refer to its thread. Body: a Message (`text`, optional `sender`,
/// optional `thread.name` to reply in an existing thread).
async fn seed_message(
    State(state): State<Shared>,
    Path(space): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let sender = body
        .get("sender")
        .cloned()
        .unwrap_or_else(|| json!({"name": "users/100000000000000000001", "displayName": "Local User", "type": "HUMAN"}));
    let mut message = body.as_object().cloned().unwrap_or_default();
    message.remove("sender");
    let has_thread = message.get("thread").is_some();
    let request = CreateRequest {
        space: format!("spaces/{space}"),
        message_id: None,
        request_id: None,
        reply_option: if has_thread {
            "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD".into()
        } else {
            String::new()
        },
        thread_key: None,
        body: Value::Object(message),
        sender,
    };
    let result = lock(&state.store).create(request, false, BTreeMap::new());
    match result {
        Ok((message, _)) => {
            state.message_changed(message["name"].as_str().unwrap_or_default());
            Json(message).into_response()
        }
        Err(e) => store_error(e),
    }
}
