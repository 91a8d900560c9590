//! The simulator's state and the Chat API's rules for messages, with no HTTP:
//! client-assigned IDs, `requestId` idempotency, threading by name or key and
//! reply option, size limits.

use crate::names::ClientMessageId;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// Largest message text Chat accepts, in bytes.
pub const MAX_TEXT_BYTES: usize = 32_000;
/// Largest card Chat accepts (32 KB), as serialized JSON.
pub const MAX_CARD_BYTES: usize = 32 * 1024;

/// A refused request, as a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// 400.
    InvalidArgument(String),
    /// 404.
    NotFound(String),
    /// 409.
    AlreadyExists(String),
}

/// A `spaces.messages.create` call, after validation of its shape.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// `spaces/{space}`.
    pub space: String,
    /// `messageId`, when given (empty counts as absent).
    pub message_id: Option<String>,
    /// `requestId`, when given.
    pub request_id: Option<String>,
    /// `messageReplyOption` as a name; empty for the default.
    pub reply_option: String,
    /// The deprecated `threadKey` query parameter.
    pub thread_key: Option<String>,
    /// The Message body, enums as names.
    pub body: Value,
    /// The sender to record (the app, or a person for seeded messages).
    pub sender: Value,
}

/// A message with the request that created it, for inspection.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The message as the API returns it.
    pub message: Value,
    /// The query parameters of the create call (normalized).
    pub query: BTreeMap<String, String>,
    /// The request body (normalized).
    pub body: Value,
    /// Whether an app created it (as opposed to a seeded user message).
    pub by_app: bool,
}

#[derive(Debug, Default)]
struct Space {
    records: Vec<Record>,
    by_server_id: HashMap<String, usize>,
    by_client_id: HashMap<String, usize>,
    by_request_id: HashMap<String, usize>,
    threads: HashMap<String, Option<String>>,
    thread_keys: HashMap<String, String>,
}

/// Every space's messages.
#[derive(Debug, Default)]
pub struct Store {
    spaces: BTreeMap<String, Space>,
    sequence: u64,
    order: Vec<(String, usize)>,
}

fn rfc3339_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Store {
    fn next_id(&mut self) -> String {
        self.sequence += 1;
        format!("{:08x}{:08x}", self.sequence, rand::random::<u32>())
    }

    /// Creates a message following Chat's rules. Returns the message and
    /// whether it already existed (a repeated `requestId`).
    pub fn create(
        &mut self,
        req: CreateRequest,
        by_app: bool,
        query: BTreeMap<String, String>,
    ) -> Result<(Value, bool), StoreError> {
        let space_name = req.space.clone();
        if let Some(request_id) = &req.request_id
            && let Some(space) = self.spaces.get(&space_name)
            && let Some(&i) = space.by_request_id.get(request_id)
        {
            return Ok((space.records[i].message.clone(), true));
        }
        if let Some(id) = &req.message_id {
            ClientMessageId::new(id).map_err(|e| {
                StoreError::InvalidArgument(format!("Invalid message ID {id:?}: {e}."))
            })?;
            if self
                .spaces
                .get(&space_name)
                .is_some_and(|s| s.by_client_id.contains_key(id))
            {
                return Err(StoreError::AlreadyExists(format!(
                    "Message with client-assigned ID {id} already exists in {space_name}."
                )));
            }
        }
        check_content(&req.body)?;
        let thread = self.resolve_thread(&req)?;
        let server_id = format!("{}.{}", self.next_id(), self.next_id());
        let space = self.spaces.entry(space_name.clone()).or_default();
        let (thread_name, thread_key, reply) = thread;
        space
            .threads
            .entry(thread_name.clone())
            .or_insert(thread_key.clone());
        if let Some(key) = &thread_key {
            space.thread_keys.insert(key.clone(), thread_name.clone());
        }
        let mut message = req.body.as_object().cloned().unwrap_or_default();
        message.insert(
            "name".into(),
            json!(format!("{space_name}/messages/{server_id}")),
        );
        message.insert("sender".into(), req.sender.clone());
        message.insert("createTime".into(), json!(rfc3339_now()));
        let mut thread_json = json!({"name": thread_name});
        if let Some(key) = &thread_key {
            thread_json["threadKey"] = json!(key);
        }
        message.insert("thread".into(), thread_json);
        message.insert("threadReply".into(), json!(reply));
        message.insert("space".into(), json!({"name": space_name}));
        if let Some(text) = message.get("text").cloned() {
            message.entry("argumentText").or_insert(text.clone());
            message.entry("formattedText").or_insert(text);
        }
        if let Some(id) = &req.message_id {
            message.insert("clientAssignedMessageId".into(), json!(id));
        }
        let message = Value::Object(message);
        let index = space.records.len();
        space.records.push(Record {
            message: message.clone(),
            query,
            body: req.body,
            by_app,
        });
        space.by_server_id.insert(server_id, index);
        if let Some(id) = req.message_id {
            space.by_client_id.insert(id, index);
        }
        if let Some(request_id) = req.request_id {
            space.by_request_id.insert(request_id, index);
        }
        self.order.push((space_name, index));
        Ok((message, false))
    }

    /// The thread a new message goes to: `(name, key, is_reply)`.
    fn resolve_thread(
        &mut self,
        req: &CreateRequest,
    ) -> Result<(String, Option<String>, bool), StoreError> {
        let thread = req.body.get("thread");
        let name = thread
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let key = thread
            .and_then(|t| t.get("threadKey"))
            .and_then(Value::as_str)
            .or(req.thread_key.as_deref())
            .filter(|s| !s.is_empty());
        let fresh = format!("{}/threads/{}", req.space, self.next_id());
        let space = self.spaces.get(&req.space);
        let existing_by_name = name.filter(|n| space.is_some_and(|s| s.threads.contains_key(*n)));
        let existing_by_key = key.and_then(|k| space.and_then(|s| s.thread_keys.get(k)));
        match req.reply_option.as_str() {
            // The default starts a new thread and ignores any thread name or
            // key given (the reference for MessageReplyOption says so).
            "" | "MESSAGE_REPLY_OPTION_UNSPECIFIED" => Ok((fresh, None, false)),
            option @ ("REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD" | "REPLY_MESSAGE_OR_FAIL") => {
                if let Some(n) = existing_by_name {
                    let key = space.and_then(|s| s.threads.get(n).cloned().flatten());
                    return Ok((n.to_owned(), key, true));
                }
                if let Some(n) = existing_by_key {
                    return Ok((n.clone(), key.map(str::to_owned), true));
                }
                if name.is_some() && key.is_none() && option == "REPLY_MESSAGE_OR_FAIL" {
                    return Err(StoreError::NotFound(format!(
                        "Thread {} not found.",
                        name.unwrap_or_default()
                    )));
                }
                // A new key starts a new thread under that key, in both options.
                Ok((fresh, key.map(str::to_owned), false))
            }
            other => Err(StoreError::InvalidArgument(format!(
                "Invalid messageReplyOption {other}."
            ))),
        }
    }

    /// `spaces/S/messages/M`, where M is the server ID or a `client-` ID.
    pub fn get(&self, name: &str) -> Result<Value, StoreError> {
        let not_found = || StoreError::NotFound(format!("Message {name} not found."));
        let (space_name, id) = name.rsplit_once("/messages/").ok_or_else(not_found)?;
        let space = self.spaces.get(space_name).ok_or_else(not_found)?;
        let index = space
            .by_server_id
            .get(id)
            .or_else(|| space.by_client_id.get(id))
            .ok_or_else(not_found)?;
        Ok(space.records[*index].message.clone())
    }

    /// The messages of a space, oldest first.
    pub fn list(&self, space: &str) -> Vec<Value> {
        self.spaces
            .get(space)
            .map(|s| s.records.iter().map(|r| r.message.clone()).collect())
            .unwrap_or_default()
    }

    /// Every message in creation order, with the request that made it.
    pub fn records(&self) -> Vec<Record> {
        self.order
            .iter()
            .filter_map(|(space, i)| self.spaces.get(space)?.records.get(*i).cloned())
            .collect()
    }
}

fn check_content(body: &Value) -> Result<(), StoreError> {
    let text = body.get("text").and_then(Value::as_str).unwrap_or_default();
    if text.len() > MAX_TEXT_BYTES {
        return Err(StoreError::InvalidArgument(format!(
            "Message text is {} bytes; the limit is {MAX_TEXT_BYTES}.",
            text.len()
        )));
    }
    let cards = body.get("cardsV2").and_then(Value::as_array);
    for (i, card) in cards.into_iter().flatten().enumerate() {
        let size = card.get("card").map_or(0, |c| c.to_string().len());
        if size > MAX_CARD_BYTES {
            return Err(StoreError::InvalidArgument(format!(
                "Card {i} is {size} bytes; the limit is {MAX_CARD_BYTES}."
            )));
        }
    }
    let has = |field: &str| {
        body.get(field)
            .is_some_and(|v| !v.is_null() && v != "" && v != &json!([]))
    };
    if !["text", "cardsV2", "cards", "attachment", "accessoryWidgets"]
        .iter()
        .any(|f| has(f))
    {
        return Err(StoreError::InvalidArgument(
            "Message cannot be empty.".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value, option: &str) -> CreateRequest {
        CreateRequest {
            space: "spaces/S".into(),
            message_id: None,
            request_id: None,
            reply_option: option.into(),
            thread_key: None,
            body,
            sender: json!({"name": "users/app", "type": "BOT"}),
        }
    }

    fn create(store: &mut Store, req: CreateRequest) -> Result<Value, StoreError> {
        store.create(req, true, BTreeMap::new()).map(|(m, _)| m)
    }

    #[test]
    fn threading_rules() {
        let mut s = Store::default();
        let first = create(&mut s, request(json!({"text": "a"}), "")).expect("created");
        let thread = first["thread"]["name"].as_str().expect("thread").to_owned();
        // Default option: a new thread even when one is named.
        let m = create(
            &mut s,
            request(json!({"text": "b", "thread": {"name": thread}}), ""),
        )
        .expect("created");
        assert_ne!(m["thread"]["name"], thread.as_str());
        // Fallback: into the named thread when it exists…
        let m = create(
            &mut s,
            request(
                json!({"text": "c", "thread": {"name": thread}}),
                "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD",
            ),
        )
        .expect("created");
        assert_eq!(m["thread"]["name"], thread.as_str());
        assert_eq!(m["threadReply"], true);
        // …a new one when it does not.
        let m = create(
            &mut s,
            request(
                json!({"text": "d", "thread": {"name": "spaces/S/threads/nope"}}),
                "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD",
            ),
        )
        .expect("created");
        assert_ne!(m["thread"]["name"], "spaces/S/threads/nope");
        // Or fail: 404 for an unknown thread name.
        let e = create(
            &mut s,
            request(
                json!({"text": "e", "thread": {"name": "spaces/S/threads/nope"}}),
                "REPLY_MESSAGE_OR_FAIL",
            ),
        );
        assert!(matches!(e, Err(StoreError::NotFound(_))));
        // Keys: the first use creates the thread, later uses reply in it.
        let k1 = create(
            &mut s,
            request(
                json!({"text": "f", "thread": {"threadKey": "k"}}),
                "REPLY_MESSAGE_OR_FAIL",
            ),
        )
        .expect("created");
        let k2 = create(
            &mut s,
            request(
                json!({"text": "g", "thread": {"threadKey": "k"}}),
                "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD",
            ),
        )
        .expect("created");
        assert_eq!(k1["thread"]["name"], k2["thread"]["name"]);
        assert_eq!(k2["thread"]["threadKey"], "k");
    }

    #[test]
    fn ids_and_idempotency() {
        let mut s = Store::default();
        let mut req = request(json!({"text": "a"}), "");
        req.message_id = Some("client-one".into());
        let m = create(&mut s, req.clone()).expect("created");
        assert_eq!(m["clientAssignedMessageId"], "client-one");
        assert!(matches!(
            create(&mut s, req.clone()),
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(
            s.get("spaces/S/messages/client-one").expect("by client ID"),
            m
        );
        assert_eq!(
            s.get(m["name"].as_str().expect("name")).expect("by name"),
            m
        );
        // The same ID in another space is fine.
        req.space = "spaces/T".into();
        assert!(create(&mut s, req).is_ok());
        // Invalid IDs are refused.
        let mut bad = request(json!({"text": "a"}), "");
        bad.message_id = Some("Client-X".into());
        assert!(matches!(
            create(&mut s, bad),
            Err(StoreError::InvalidArgument(_))
        ));
        // A repeated requestId returns the first message.
        let mut r = request(json!({"text": "r"}), "");
        r.request_id = Some("req-1".into());
        let (first, existed) = s.create(r.clone(), true, BTreeMap::new()).expect("created");
        assert!(!existed);
        let (again, existed) = s.create(r, true, BTreeMap::new()).expect("returned");
        assert!(existed);
        assert_eq!(first, again);
    }

    #[test]
    fn limits() {
        let mut s = Store::default();
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(matches!(
            create(&mut s, request(json!({"text": long}), "")),
            Err(StoreError::InvalidArgument(_))
        ));
        assert!(matches!(
            create(&mut s, request(json!({}), "")),
            Err(StoreError::InvalidArgument(_))
        ));
        let big = json!({"cardsV2": [{"cardId": "c", "card": {"header": {"title": "y".repeat(MAX_CARD_BYTES)}}}]});
        assert!(matches!(
            create(&mut s, request(big, "")),
            Err(StoreError::InvalidArgument(_))
        ));
    }
}
