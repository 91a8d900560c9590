//! The playground: a Chat-like page served by the simulator. What a person
//! does there (write, mention, run a slash command, add or remove the app,
//! click a card button) becomes the event Chat would publish, sent to the
//! app's Pub/Sub topic; what the app does comes back live over server-sent
//! events. Publishes through Pub/Sub's REST API, so it knows no Pub/Sub
//! client types.

use super::events::{self, Format, Happening, Person, SpaceInfo};
use super::{Shared, error, lock};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;

/// The page, with its script and styles inline: one file, no build step.
const PAGE: &str = include_str!("playground.html");

/// Where the playground publishes, and what it knows of the app.
#[derive(Clone, Debug)]
pub struct Config {
    /// Base URL of Pub/Sub's REST API, e.g. `http://127.0.0.1:8085` for the
    /// emulator.
    pub pubsub_url: String,
    /// `projects/P/topics/T`: the topic Chat publishes the app's events to.
    pub topic: String,
    /// The app's name, for `@mentions`.
    pub app_name: String,
    /// Slash commands by name (`/help`) and their IDs.
    pub commands: BTreeMap<String, i64>,
    /// The format events are published in unless a request says otherwise.
    pub format: Format,
    /// Where the page reads the app's state (`GET`, JSON `{"rows": [...]}`,
    /// served by whoever runs the app: `chatworker dev`); none: not shown.
    pub state_url: Option<String>,
}

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/playground") }))
        .route("/playground", get(|| async { Html(PAGE) }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/_sim/playground/config", get(config))
        .route("/_sim/playground/act", post(act))
        .route("/_sim/stream", get(stream))
        .route("/_sim/transcript", get(transcript))
}

async fn config(State(state): State<Shared>) -> Response {
    match &state.playground {
        Some(c) => Json(json!({
            "enabled": true,
            "appName": c.app_name,
            "commands": c.commands,
            "topic": c.topic,
            "format": c.format,
            "stateUrl": c.state_url,
        }))
        .into_response(),
        None => Json(json!({"enabled": false})).into_response(),
    }
}

/// Something a person did.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Action {
    /// `message`, `added`, `removed` or `click`.
    pub kind: String,
    /// Where.
    pub space: SpaceInfo,
    /// Who.
    pub person: Person,
    /// The event format (default: the playground's).
    #[serde(default)]
    pub format: Option<Format>,
    /// `message`: what they typed.
    #[serde(default)]
    pub text: Option<String>,
    /// `message`: the thread to reply in (`spaces/…/threads/…`).
    #[serde(default)]
    pub thread: Option<String>,
    /// `click`: the card message clicked.
    #[serde(default)]
    pub message: Option<String>,
    /// `click`: the button's action function.
    #[serde(default)]
    pub function: Option<String>,
    /// `click`: the action's parameters.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

fn bad(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

/// Turns an action into Chat's event and publishes it.
async fn act(State(state): State<Shared>, Json(action): Json<Action>) -> Response {
    let Some(config) = state.playground.clone() else {
        return error(
            StatusCode::BAD_REQUEST,
            "FAILED_PRECONDITION",
            "This simulator has no playground topic (start it with `chatworker dev`).",
        );
    };
    if !super::store::is_space_name(&action.space.name) {
        return bad(format!(
            "{:?} is not a space name (spaces/…)",
            action.space.name
        ));
    }
    let happening = match action.kind.as_str() {
        "message" => {
            let text = action.text.clone().unwrap_or_default();
            if text.trim().is_empty() {
                return bad("a message needs text");
            }
            let app = json!({"name": "users/app", "displayName": config.app_name, "type": "BOT"});
            let command = text
                .split_whitespace()
                .next()
                .and_then(|w| config.commands.get(w))
                .copied();
            let mut body = events::annotate(&text, &config.app_name, &app, command);
            body["text"] = json!(text);
            if let Some(thread) = &action.thread {
                body["thread"] = json!({"name": thread});
            }
            let request = super::store::CreateRequest {
                space: action.space.name.clone(),
                message_id: None,
                request_id: None,
                reply_option: if action.thread.is_some() {
                    "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD".into()
                } else {
                    String::new()
                },
                thread_key: None,
                body,
                sender: action.person.user(),
            };
            let created = lock(&state.store).create(request, false, BTreeMap::new());
            let message = match created {
                Ok((m, _)) => m,
                Err(e) => return super::store_error(e),
            };
            state.message_changed(message["name"].as_str().unwrap_or_default());
            Happening::Message { message }
        }
        "added" => Happening::Added,
        "removed" => Happening::Removed,
        "click" => {
            let (Some(name), Some(function)) = (&action.message, &action.function) else {
                return bad("a click needs the message and the action's function");
            };
            let message = match lock(&state.store).get(name) {
                Ok(m) => m,
                Err(e) => return super::store_error(e),
            };
            Happening::Click {
                message,
                function: function.clone(),
                parameters: action.parameters.clone(),
            }
        }
        other => return bad(format!("unknown action kind {other:?}")),
    };
    let format = action.format.unwrap_or(config.format);
    let event = events::event(format, &action.space, &action.person, &happening);
    if let Err(e) = publish(&config, &event).await {
        return error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", e);
    }
    let record = json!({"action": action, "event": event});
    let mut actions = lock(&state.actions);
    if actions.len() == super::MAX_ACTIONS {
        actions.remove(0);
    }
    actions.push(record.clone());
    drop(actions);
    let _ = state
        .updates
        .send(json!({"kind": "action", "action": record}));
    Json(record).into_response()
}

/// Publishes one event through Pub/Sub's REST API.
async fn publish(config: &Config, event: &Value) -> Result<(), String> {
    let data = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    let url = format!(
        "{}/v1/{}:publish",
        config.pubsub_url.trim_end_matches('/'),
        config.topic
    );
    let response = reqwest::Client::new()
        .post(&url)
        .json(&json!({"messages": [{"data": data}]}))
        .send()
        .await
        .map_err(|e| format!("cannot publish to {}: {e}", config.topic))?;
    if !response.status().is_success() {
        return Err(format!(
            "publishing to {} failed: HTTP {}",
            config.topic,
            response.status()
        ));
    }
    Ok(())
}

/// Every change as it happens: messages created, updated or deleted, API
/// calls answered, actions published.
async fn stream(
    State(state): State<Shared>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.updates.subscribe();
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(update) => Event::default().data(update.to_string()),
            // A slow viewer missed some updates; it may reload.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                Event::default().event("lagged").data("{}")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The session as JSON: the actions (replayable through
/// `/_sim/playground/act`), every message and every API call.
async fn transcript(State(state): State<Shared>) -> Response {
    let actions = lock(&state.actions).clone();
    let messages = lock(&state.store).records();
    let calls = lock(&state.calls).clone();
    Json(json!({
        "version": 1,
        "actions": actions,
        "messages": messages,
        "requests": calls,
    }))
    .into_response()
}
