//! Request validation against Google's discovery document for Chat API v1
//! (embedded from `reference/chat.v1.discovery.json`): unknown fields, wrong
//! types and invalid enum values are refused as the real API refuses them.
//! Enums are accepted as names or as the integers Google's clients send with
//! `$alt=json;enum-encoding=int`, and normalized to names.

use serde_json::{Map, Value};
use std::sync::LazyLock;

static DISCOVERY: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../reference/chat.v1.discovery.json"))
        .expect("the embedded discovery document is valid JSON")
});

/// Parameters every Google API accepts on any method.
const SYSTEM_PARAMETERS: &[&str] = &[
    "$alt",
    "alt",
    "$.xgafv",
    "access_token",
    "callback",
    "fields",
    "key",
    "oauth_token",
    "prettyPrint",
    "quotaUser",
    "upload_protocol",
    "uploadType",
    "$fields",
    "$prettyPrint",
];

/// A request that does not fit the schema: the field's path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The offending field, e.g. `message.cardsV2[0].card.header.imageType`.
    pub field: String,
    /// Google-style description.
    pub description: String,
}

fn schema(name: &str) -> Option<&'static Value> {
    DISCOVERY.get("schemas")?.get(name)
}

/// The method's description, e.g. `("spaces", "messages", "create")`.
pub fn method(resource: &str, sub: &str, name: &str) -> Option<&'static Value> {
    DISCOVERY
        .get("resources")?
        .get(resource)?
        .get("resources")?
        .get(sub)?
        .get("methods")?
        .get(name)
}

/// Checks query parameters against the method's declared parameters (path
/// parameters excluded) and returns them normalized (enum integers as names).
pub fn check_query(
    method: &Value,
    query: &[(String, String)],
) -> Result<Vec<(String, String)>, Invalid> {
    let params = method.get("parameters").and_then(Value::as_object);
    let mut out = Vec::with_capacity(query.len());
    for (key, value) in query {
        if SYSTEM_PARAMETERS.contains(&key.as_str()) {
            out.push((key.clone(), value.clone()));
            continue;
        }
        let declared = params
            .and_then(|p| p.get(key))
            .filter(|p| p.get("location").and_then(Value::as_str) == Some("query"))
            .ok_or_else(|| Invalid {
                field: key.clone(),
                description: format!(
                    "Invalid JSON payload received. Unknown name \"{key}\": Cannot bind query parameter. Field '{key}' could not be found in request message."
                ),
            })?;
        let normalized = match declared.get("enum").and_then(Value::as_array) {
            Some(names) if !value.is_empty() => enum_name(names, &Value::String(value.clone()))
                .ok_or_else(|| Invalid {
                    field: key.clone(),
                    description: format!(
                        "Invalid value at '{key}' ({value}): not a valid enum value"
                    ),
                })?,
            _ => value.clone(),
        };
        out.push((key.clone(), normalized));
    }
    Ok(out)
}

/// Checks `body` against the schema `name` (e.g. `Message`), returning it with
/// enums normalized to their names.
pub fn check_body(name: &str, body: &Value, field: &str) -> Result<Value, Invalid> {
    let schema =
        schema(name).unwrap_or_else(|| panic!("schema {name} is in the discovery document"));
    walk(schema, body, field)
}

/// An enum value as its name: a name in the list, or its proto number.
/// Proto enum numbers follow the order of the discovery document's list for
/// the Chat and card enums, except where a number was retired: those are
/// listed in [`RENUMBERED`]. Any other number is refused.
fn enum_name(names: &[Value], value: &Value) -> Option<String> {
    let number = match value {
        Value::String(s) if names.iter().any(|n| n == s) => return Some(s.clone()),
        Value::String(s) => s.parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    let names = names.iter().filter_map(Value::as_str).enumerate();
    names
        .map(|(index, name)| (proto_number(name, index), name))
        .find(|(n, _)| *n == number)
        .map(|(_, name)| name.to_owned())
}

/// Enum values whose proto number is not their position in the discovery
/// document's list (a retired number left a gap), as generated into
/// Google's clients (`google-chat-v1`'s `NotificationType::value`).
const RENUMBERED: &[(&str, i64)] = &[
    ("NOTIFICATION_TYPE_FORCE_NOTIFY", 2),
    ("NOTIFICATION_TYPE_SILENT", 3),
];

fn proto_number(name: &str, index: usize) -> i64 {
    RENUMBERED
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(index as i64, |(_, number)| *number)
}

fn invalid(field: &str, description: String) -> Invalid {
    Invalid {
        field: field.to_owned(),
        description,
    }
}

fn walk(schema: &Value, value: &Value, field: &str) -> Result<Value, Invalid> {
    if let Some(name) = schema.get("$ref").and_then(Value::as_str) {
        let target =
            self::schema(name).ok_or_else(|| invalid(field, format!("unknown schema {name}")))?;
        return walk(target, value, field);
    }
    // proto3 JSON: null means "default" for any field.
    if value.is_null() {
        return Ok(Value::Null);
    }
    let kind = schema.get("type").and_then(Value::as_str).unwrap_or("any");
    let wrong = |expected: &str| {
        invalid(
            field,
            format!(
                "Invalid value at '{field}' ({}), expected {expected}",
                json_type(value)
            ),
        )
    };
    match kind {
        "object" => {
            let Some(object) = value.as_object() else {
                return Err(wrong("an object"));
            };
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let mut out = Map::new();
            for (key, item) in object {
                let child = format!("{field}.{key}");
                let item_schema = match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => s,
                    (None, None) if properties.is_none() => {
                        out.insert(key.clone(), item.clone());
                        continue;
                    }
                    (None, None) => {
                        return Err(invalid(
                            field,
                            format!(
                                "Invalid JSON payload received. Unknown name \"{key}\" at '{field}': Cannot find field."
                            ),
                        ));
                    }
                };
                out.insert(key.clone(), walk(item_schema, item, &child)?);
            }
            Ok(Value::Object(out))
        }
        "array" => {
            let Some(items) = value.as_array() else {
                return Err(wrong("a list"));
            };
            let item_schema = schema.get("items").cloned().unwrap_or(Value::Null);
            items
                .iter()
                .enumerate()
                .map(|(i, item)| walk(&item_schema, item, &format!("{field}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        "string" => {
            if let Some(names) = schema.get("enum").and_then(Value::as_array) {
                return enum_name(names, value).map(Value::String).ok_or_else(|| {
                    invalid(
                        field,
                        format!("Invalid value at '{field}' ({value}): not a valid enum value"),
                    )
                });
            }
            match (schema.get("format").and_then(Value::as_str), value) {
                (_, Value::String(_)) => Ok(value.clone()),
                // int64 is a string in Google's JSON, but numbers are accepted.
                (Some("int64" | "uint64"), Value::Number(n)) if n.is_i64() || n.is_u64() => {
                    Ok(Value::String(n.to_string()))
                }
                _ => Err(wrong("a string")),
            }
        }
        "integer" => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
            Value::String(s) if s.parse::<i64>().is_ok() => Ok(value.clone()),
            _ => Err(wrong("an integer")),
        },
        "number" => match value {
            Value::Number(_) => Ok(value.clone()),
            Value::String(s)
                if s.parse::<f64>().is_ok()
                    || ["NaN", "Infinity", "-Infinity"].contains(&s.as_str()) =>
            {
                Ok(value.clone())
            }
            _ => Err(wrong("a number")),
        },
        "boolean" => match value {
            Value::Bool(_) => Ok(value.clone()),
            _ => Err(wrong("a boolean")),
        },
        _ => Ok(value.clone()),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_valid_messages_and_normalizes_enums() {
        let body = json!({
            "text": "hi",
            "thread": {"name": "spaces/a/threads/b"},
            "cardsV2": [{"cardId": "c", "card": {"header": {"title": "t", "imageType": 1}}}]
        });
        let out = check_body("Message", &body, "message").expect("valid");
        assert_eq!(out["cardsV2"][0]["card"]["header"]["imageType"], "CIRCLE");
    }

    #[test]
    fn refuses_unknown_fields_wrong_types_and_bad_enums() {
        let e = check_body("Message", &json!({"txt": "hi"}), "message").expect_err("unknown");
        assert!(e.description.contains("Unknown name \"txt\""), "{e:?}");
        let e = check_body("Message", &json!({"text": 5}), "message").expect_err("type");
        assert_eq!(e.field, "message.text");
        let e = check_body(
            "Message",
            &json!({"cardsV2": [{"card": {"header": {"imageType": "OVAL"}}}]}),
            "message",
        )
        .expect_err("enum");
        assert_eq!(e.field, "message.cardsV2[0].card.header.imageType");
        let e = check_body(
            "Message",
            &json!({"cardsV2": [{"card": {"header": {"imageType": 7}}}]}),
            "message",
        )
        .expect_err("enum index");
        assert!(e.description.contains("enum"), "{e:?}");
    }

    #[test]
    fn query_parameters() {
        let create = method("spaces", "messages", "create").expect("create is described");
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let out = check_query(
            create,
            &q(&[
                ("messageReplyOption", "1"),
                ("$alt", "json;enum-encoding=int"),
                ("requestId", ""),
            ]),
        )
        .expect("valid");
        assert_eq!(out[0].1, "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD");
        assert!(check_query(create, &q(&[("messageReplyOption", "SOMETIMES")])).is_err());
        assert!(
            check_query(create, &q(&[("parent", "spaces/x")])).is_err(),
            "path parameters are not query parameters"
        );
        assert!(check_query(create, &q(&[("foo", "1")])).is_err());
        // A retired proto number: SILENT is 3, and 1 means nothing.
        let notify = "createMessageNotificationOptions.notificationType";
        let out = check_query(create, &q(&[(notify, "3")])).expect("silent");
        assert_eq!(out[0].1, "NOTIFICATION_TYPE_SILENT");
        let out = check_query(create, &q(&[(notify, "2")])).expect("force");
        assert_eq!(out[0].1, "NOTIFICATION_TYPE_FORCE_NOTIFY");
        assert!(check_query(create, &q(&[(notify, "1")])).is_err());
    }
}
