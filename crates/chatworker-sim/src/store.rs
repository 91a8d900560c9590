//! The simulator's state and the Chat API's rules for messages, with no HTTP:
//! client-assigned IDs, `requestId` idempotency, threading by name or key and
//! reply option, size limits.

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
    /// 403.
    PermissionDenied(String),
}

/// Message fields `updateMask` may name, as the reference lists them (the
/// snake_case paths, and their camelCase JSON names).
const UPDATABLE: &[(&str, &str)] = &[
    ("text", "text"),
    ("attachment", "attachment"),
    ("cards", "cards"),
    ("cards_v2", "cardsV2"),
    ("accessory_widgets", "accessoryWidgets"),
    ("quoted_message_metadata", "quotedMessageMetadata"),
];

/// Largest page `spaces.messages.list` returns.
pub const MAX_PAGE_SIZE: usize = 1000;
/// The page size when none is given.
pub const DEFAULT_PAGE_SIZE: usize = 25;

/// A `spaces.messages.patch` or `update` call.
#[derive(Debug, Clone)]
pub struct UpdateRequest {
    /// `spaces/S/messages/M`, M a server or `client-` ID.
    pub name: String,
    /// `updateMask`, comma-separated.
    pub update_mask: String,
    /// `allowMissing`: create the message when a `client-` ID is not found.
    pub allow_missing: bool,
    /// The Message body, enums as names.
    pub body: Value,
    /// Who asks (the app's user, as in messages it creates).
    pub sender: Value,
}

/// A page of `spaces.messages.list`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// The messages.
    pub messages: Vec<Value>,
    /// The token for the next page, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
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
    /// Whether it was deleted since.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// How many times it was updated.
    #[serde(skip_serializing_if = "is_zero")]
    pub updates: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
            check_message_id(id).map_err(|e| {
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
            deleted: false,
            updates: 0,
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

    /// Where `spaces/S/messages/M` is, M a server or `client-` ID.
    fn locate<'a>(&self, name: &'a str) -> Option<(&'a str, usize)> {
        let (space_name, id) = name.rsplit_once("/messages/")?;
        let space = self.spaces.get(space_name)?;
        let index = space
            .by_server_id
            .get(id)
            .or_else(|| space.by_client_id.get(id))?;
        Some((space_name, *index))
    }

    /// `spaces/S/messages/M`, where M is the server ID or a `client-` ID.
    pub fn get(&self, name: &str) -> Result<Value, StoreError> {
        let (space, index) = self
            .locate(name)
            .ok_or_else(|| StoreError::NotFound(format!("Message {name} not found.")))?;
        Ok(self.spaces[space].records[index].message.clone())
    }

    /// The record of `spaces/S/messages/M`, for inspection.
    pub fn record(&self, name: &str) -> Option<&Record> {
        let (space, index) = self.locate(name)?;
        self.spaces[space].records.get(index)
    }

    /// `spaces.messages.patch` and `update`: replaces the fields the mask
    /// names. Apps may change only their own messages. Returns the message
    /// and whether it was created (`allowMissing`).
    pub fn update(&mut self, req: UpdateRequest) -> Result<(Value, bool), StoreError> {
        let Some((space_name, index)) = self.locate(&req.name).map(|(s, i)| (s.to_owned(), i))
        else {
            let (space, id) = req.name.rsplit_once("/messages/").unwrap_or_default();
            if req.allow_missing {
                if !id.starts_with("client-") {
                    return Err(StoreError::InvalidArgument(
                        "allowMissing requires a client-assigned message ID (client-…).".into(),
                    ));
                }
                let create = CreateRequest {
                    space: space.to_owned(),
                    message_id: Some(id.to_owned()),
                    request_id: None,
                    reply_option: String::new(),
                    thread_key: None,
                    body: req.body,
                    sender: req.sender,
                };
                let query = BTreeMap::from([("messageId".to_owned(), id.to_owned())]);
                return self.create(create, true, query).map(|(m, _)| (m, true));
            }
            return Err(StoreError::NotFound(format!(
                "Message {} not found.",
                req.name
            )));
        };
        let paths: Vec<&str> = req
            .update_mask
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if paths.is_empty() {
            return Err(StoreError::InvalidArgument(
                "updateMask is required (for example updateMask=text,cardsV2).".into(),
            ));
        }
        let mut fields = Vec::new();
        for path in paths {
            if path == "*" {
                fields.extend(UPDATABLE.iter().map(|(_, json)| *json));
                continue;
            }
            let field = UPDATABLE
                .iter()
                .find(|(snake, json)| path == *snake || path == *json)
                .map(|(_, json)| *json)
                .ok_or_else(|| {
                    StoreError::InvalidArgument(format!(
                        "Invalid update mask path {path:?}; Chat apps may update {}.",
                        UPDATABLE
                            .iter()
                            .map(|(s, _)| *s)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            fields.push(field);
        }
        let space = self.spaces.get_mut(&space_name).expect("located");
        let record = &mut space.records[index];
        if record.message.get("sender").and_then(|s| s.get("name")) != req.sender.get("name") {
            return Err(StoreError::PermissionDenied(
                "Chat apps can only update messages they created.".into(),
            ));
        }
        let mut message = record.message.as_object().cloned().unwrap_or_default();
        for field in fields {
            match req.body.get(field) {
                Some(value) if !value.is_null() => message.insert(field.to_owned(), value.clone()),
                _ => message.remove(field),
            };
        }
        if let Some(text) = message.get("text").cloned() {
            message.insert("argumentText".into(), text.clone());
            message.insert("formattedText".into(), text);
        } else {
            message.remove("argumentText");
            message.remove("formattedText");
        }
        let message = Value::Object(message);
        check_content(&message)?;
        let mut message = message;
        message["lastUpdateTime"] = json!(rfc3339_now());
        record.message = message.clone();
        record.updates += 1;
        Ok((message, false))
    }

    /// `spaces.messages.delete`: apps may delete only their own messages.
    pub fn delete(&mut self, name: &str, sender: &Value) -> Result<(), StoreError> {
        let (space_name, index) = self
            .locate(name)
            .map(|(s, i)| (s.to_owned(), i))
            .ok_or_else(|| StoreError::NotFound(format!("Message {name} not found.")))?;
        let space = self.spaces.get_mut(&space_name).expect("located");
        let record = &mut space.records[index];
        if record.message.get("sender").and_then(|s| s.get("name")) != sender.get("name") {
            return Err(StoreError::PermissionDenied(
                "Chat apps can only delete messages they created.".into(),
            ));
        }
        record.deleted = true;
        space.by_server_id.retain(|_, i| *i != index);
        space.by_client_id.retain(|_, i| *i != index);
        Ok(())
    }

    /// The messages of a space, oldest first (all of them).
    pub fn list(&self, space: &str) -> Vec<Value> {
        self.spaces
            .get(space)
            .map(|s| {
                s.records
                    .iter()
                    .filter(|r| !r.deleted)
                    .map(|r| r.message.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One page of a space's messages: `page_size` (25 when 0, at most
    /// 1000), from `page_token`, newest first when `descending`, only a
    /// thread's when `thread` is given.
    pub fn page(
        &self,
        space: &str,
        page_size: usize,
        page_token: Option<&str>,
        descending: bool,
        thread: Option<&str>,
    ) -> Result<Page, StoreError> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let start = match page_token {
            None | Some("") => 0,
            Some(token) => token
                .strip_prefix("sim-page-")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    StoreError::InvalidArgument(format!("Invalid page token {token:?}."))
                })?,
        };
        let mut messages: Vec<&Record> = self
            .spaces
            .get(space)
            .map(|s| s.records.iter().filter(|r| !r.deleted).collect())
            .unwrap_or_default();
        if let Some(thread) = thread {
            messages.retain(|r| r.message["thread"]["name"] == thread);
        }
        if descending {
            messages.reverse();
        }
        let end = (start + size).min(messages.len());
        let page = messages
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|r| r.message.clone())
            .collect();
        Ok(Page {
            messages: page,
            next_page_token: (end < messages.len()).then(|| format!("sim-page-{end}")),
        })
    }

    /// How many messages apps created, deleted ones included.
    pub fn app_message_count(&self) -> usize {
        self.spaces
            .values()
            .map(|space| space.records.iter().filter(|r| r.by_app).count())
            .sum()
    }

    /// Every message in creation order, with the request that made it.
    pub fn records(&self) -> Vec<Record> {
        self.order
            .iter()
            .filter_map(|(space, i)| self.spaces.get(space)?.records.get(*i).cloned())
            .collect()
    }
}

/// Chat's rule for client-assigned message IDs (`messageId`), as the API
/// reference states it: `client-`, then lowercase letters, digits and
/// hyphens, at most 63 characters in all. Written here from the reference,
/// not shared with the worker, so that the simulator judges the worker's IDs
/// independently.
pub fn check_message_id(id: &str) -> Result<(), String> {
    const PREFIX: &str = "client-";
    const MAX_LEN: usize = 63;
    let Some(rest) = id.strip_prefix(PREFIX) else {
        return Err("it must start with \"client-\"".into());
    };
    if id.len() > MAX_LEN {
        return Err(format!("it has {} characters, over {MAX_LEN}", id.len()));
    }
    if rest.is_empty()
        || !rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("it may hold only lowercase letters, digits and hyphens".into());
    }
    Ok(())
}

/// Whether `name` is a space's resource name, `spaces/{space}`.
pub fn is_space_name(name: &str) -> bool {
    name.strip_prefix("spaces/")
        .is_some_and(|id| !id.is_empty() && !id.contains('/') && !id.contains(char::is_whitespace))
}

/// Chat's size rule: a message's text and its cards together are at most
/// 32,000 bytes (each card also at most 32 KB, which the sum already
/// implies).
fn check_content(body: &Value) -> Result<(), StoreError> {
    let text = body.get("text").and_then(Value::as_str).unwrap_or_default();
    let cards = body.get("cardsV2").and_then(Value::as_array);
    let cards_bytes: usize = cards
        .into_iter()
        .flatten()
        .map(|c| c.to_string().len())
        .sum();
    if text.len() + cards_bytes > MAX_TEXT_BYTES {
        return Err(StoreError::InvalidArgument(format!(
            "Message is {} bytes of text and {cards_bytes} bytes of cards; the limit for both together is {MAX_TEXT_BYTES}.",
            text.len()
        )));
    }
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

    #[test]
    fn message_ids_follow_the_reference() {
        assert!(check_message_id("client-abc-123").is_ok());
        assert!(check_message_id(&format!("client-{}", "a".repeat(56))).is_ok());
        for bad in ["abc", "client-", "client-ABC", "client-a_b", "client-é"] {
            assert!(check_message_id(bad).is_err(), "{bad}");
        }
        assert!(check_message_id(&format!("client-{}", "a".repeat(57))).is_err());
        assert!(is_space_name("spaces/AAA"));
        for bad in ["spaces/", "rooms/AAA", "spaces/A/B", "spaces/A B"] {
            assert!(!is_space_name(bad), "{bad}");
        }
    }

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
        // Text that fits alone, with a card that fits alone: too much
        // together.
        let card = json!({"cardId": "c", "card": {"header": {"title": "y".repeat(1000)}}});
        let both = json!({"text": "x".repeat(MAX_TEXT_BYTES - 500), "cardsV2": [card.clone()]});
        assert!(matches!(
            create(&mut s, request(both, "")),
            Err(StoreError::InvalidArgument(_))
        ));
        let fits = json!({"text": "x".repeat(MAX_TEXT_BYTES - 2000), "cardsV2": [card]});
        assert!(create(&mut s, request(fits, "")).is_ok());
    }

    fn app() -> Value {
        json!({"name": "users/app", "type": "BOT"})
    }

    fn update(name: &str, mask: &str, body: Value, sender: Value) -> UpdateRequest {
        UpdateRequest {
            name: name.into(),
            update_mask: mask.into(),
            allow_missing: false,
            body,
            sender,
        }
    }

    #[test]
    fn apps_update_and_delete_only_their_own_messages() {
        let mut s = Store::default();
        let mut req = request(json!({"text": "v1"}), "");
        req.message_id = Some("client-abc".into());
        let created = create(&mut s, req).expect("created");
        let name = created["name"].as_str().expect("name").to_owned();

        let (m, _) = s
            .update(update(
                "spaces/S/messages/client-abc",
                "text",
                json!({"text": "v2"}),
                app(),
            ))
            .expect("updated by client ID");
        assert_eq!(m["text"], "v2");
        assert!(m.get("lastUpdateTime").is_some());
        assert_eq!(s.get(&name).expect("get")["text"], "v2");
        // The mask decides: a field not named is kept, one named but absent is cleared.
        let card = json!([{"cardId": "c", "card": {"header": {"title": "t"}}}]);
        let (m, _) = s
            .update(update(
                &name,
                "cards_v2",
                json!({"text": "ignored", "cardsV2": card}),
                app(),
            ))
            .expect("updated");
        assert_eq!(
            (m["text"].as_str(), m["cardsV2"][0]["cardId"].as_str()),
            (Some("v2"), Some("c"))
        );
        let (m, _) = s
            .update(update(&name, "text", json!({}), app()))
            .expect("text cleared, card stays");
        assert!(m.get("text").is_none());
        assert!(
            matches!(
                s.update(update(&name, "cardsV2", json!({}), app())),
                Err(StoreError::InvalidArgument(_))
            ),
            "a message cannot end up empty"
        );
        assert!(matches!(
            s.update(update(&name, "", json!({"text": "x"}), app())),
            Err(StoreError::InvalidArgument(_))
        ));
        assert!(matches!(
            s.update(update(&name, "sender", json!({"text": "x"}), app())),
            Err(StoreError::InvalidArgument(_))
        ));
        let other = json!({"name": "users/other-app", "type": "BOT"});
        assert!(matches!(
            s.update(update(&name, "text", json!({"text": "x"}), other.clone())),
            Err(StoreError::PermissionDenied(_))
        ));
        assert!(matches!(
            s.delete(&name, &other),
            Err(StoreError::PermissionDenied(_))
        ));
        s.delete(&name, &app()).expect("deleted");
        assert!(matches!(s.get(&name), Err(StoreError::NotFound(_))));
        assert!(matches!(
            s.get("spaces/S/messages/client-abc"),
            Err(StoreError::NotFound(_))
        ));
        assert!(s.list("spaces/S").is_empty());
    }

    #[test]
    fn allow_missing_creates_under_a_client_id_only() {
        let mut s = Store::default();
        let mut req = update(
            "spaces/S/messages/client-new",
            "text",
            json!({"text": "hi"}),
            app(),
        );
        assert!(matches!(
            s.update(req.clone()),
            Err(StoreError::NotFound(_))
        ));
        req.allow_missing = true;
        let (m, created) = s.update(req.clone()).expect("created");
        assert!(created);
        assert_eq!(m["clientAssignedMessageId"], "client-new");
        let (_, created) = s.update(req).expect("now updated");
        assert!(!created);
        let mut server = update(
            "spaces/S/messages/AAAA.BBBB",
            "text",
            json!({"text": "hi"}),
            app(),
        );
        server.allow_missing = true;
        assert!(matches!(
            s.update(server),
            Err(StoreError::InvalidArgument(_))
        ));
    }

    #[test]
    fn pages() {
        let mut s = Store::default();
        for i in 0..5 {
            create(&mut s, request(json!({"text": format!("m{i}")}), "")).expect("created");
        }
        let texts = |p: &Page| {
            p.messages
                .iter()
                .map(|m| m["text"].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
        };
        let first = s.page("spaces/S", 2, None, false, None).expect("page");
        assert_eq!(texts(&first), ["m0", "m1"]);
        let token = first.next_page_token.clone().expect("more");
        let second = s
            .page("spaces/S", 2, Some(&token), false, None)
            .expect("page");
        assert_eq!(texts(&second), ["m2", "m3"]);
        let last = s
            .page(
                "spaces/S",
                2,
                second.next_page_token.as_deref(),
                false,
                None,
            )
            .expect("page");
        assert_eq!(
            (texts(&last), last.next_page_token),
            (vec!["m4".to_owned()], None)
        );
        let newest = s.page("spaces/S", 1, None, true, None).expect("page");
        assert_eq!(texts(&newest), ["m4"]);
        assert_eq!(
            s.page("spaces/S", 0, None, false, None)
                .expect("page")
                .messages
                .len(),
            5
        );
        assert!(s.page("spaces/S", 2, Some("garbage"), false, None).is_err());
    }
}
