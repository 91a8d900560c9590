//! The events Chat publishes to an app's Pub/Sub topic, built from what a
//! person does in the playground: a message (with an @mention or a slash
//! command), the app added or removed, a card button clicked. Both formats:
//! the classic interaction event and the Workspace add-on event object.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The event format an app receives.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The classic interaction event (`type`, `space`, `message`…).
    #[default]
    Classic,
    /// The Workspace add-on event object (`commonEventObject`, `chat`).
    Addon,
}

/// A person in the playground.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    /// `users/…`.
    pub name: String,
    /// Shown on their messages and in the app's cards.
    pub display_name: String,
}

impl Person {
    /// The user as Chat sends it.
    pub fn user(&self) -> Value {
        json!({
            "name": self.name,
            "displayName": self.display_name,
            "type": "HUMAN",
            "domainId": "playground"
        })
    }
}

/// A space in the playground.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpaceInfo {
    /// `spaces/…`.
    pub name: String,
    /// `SPACE` or `DIRECT_MESSAGE`.
    #[serde(default = "space_type")]
    pub space_type: String,
    /// Shown in the space list.
    #[serde(default)]
    pub display_name: String,
}

fn space_type() -> String {
    "SPACE".into()
}

impl SpaceInfo {
    /// The space as Chat sends it.
    pub fn json(&self) -> Value {
        let dm = self.space_type == "DIRECT_MESSAGE";
        let mut space = json!({
            "name": self.name,
            "type": if dm { "DM" } else { "ROOM" },
            "spaceType": self.space_type,
            "singleUserBotDm": dm,
        });
        if !self.display_name.is_empty() {
            space["displayName"] = json!(self.display_name);
        }
        space
    }
}

/// What happened, Chat's side.
#[derive(Clone, Debug)]
pub enum Happening {
    /// A person posted `message` (as the simulator stored it).
    Message {
        /// The stored message, with annotations for a mention or command.
        message: Value,
    },
    /// The app was added to the space.
    Added,
    /// The app was removed.
    Removed,
    /// A card button with an action was clicked on `message`.
    Click {
        /// The card message.
        message: Value,
        /// The action's function.
        function: String,
        /// Its parameters.
        parameters: BTreeMap<String, String>,
    },
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The event Chat would publish for `happening`.
pub fn event(format: Format, space: &SpaceInfo, person: &Person, happening: &Happening) -> Value {
    let (space, user, time) = (space.json(), person.user(), now());
    match format {
        Format::Classic => classic(space, user, time, happening),
        Format::Addon => addon(space, user, time, happening),
    }
}

fn slash_command(message: &Value) -> Option<Value> {
    message.get("slashCommand").cloned()
}

fn classic(space: Value, user: Value, time: String, happening: &Happening) -> Value {
    let common = json!({"hostApp": "CHAT", "userLocale": "en"});
    match happening {
        Happening::Message { message } => json!({
            "type": "MESSAGE",
            "eventTime": time,
            "space": space,
            "user": user,
            "message": message,
            "thread": message["thread"],
            "common": common,
        }),
        Happening::Added => json!({
            "type": "ADDED_TO_SPACE", "eventTime": time, "space": space, "user": user, "common": common,
        }),
        Happening::Removed => json!({
            "type": "REMOVED_FROM_SPACE", "eventTime": time, "space": space, "user": user, "common": common,
        }),
        Happening::Click {
            message,
            function,
            parameters,
        } => {
            let list: Vec<Value> = parameters
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            json!({
                "type": "CARD_CLICKED",
                "eventTime": time,
                "space": space,
                "user": user,
                "message": message,
                "thread": message["thread"],
                "action": {"actionMethodName": function, "parameters": list},
                "common": {"hostApp": "CHAT", "userLocale": "en", "invokedFunction": function, "parameters": parameters},
                "isDialogEvent": false,
            })
        }
    }
}

fn addon(space: Value, user: Value, time: String, happening: &Happening) -> Value {
    let mut common = json!({"hostApp": "CHAT", "userLocale": "en", "platform": "WEB"});
    let chat = match happening {
        Happening::Message { message } => match slash_command(message) {
            Some(command) => json!({
                "appCommandPayload": {
                    "appCommandMetadata": {
                        "appCommandId": command["commandId"].as_str().and_then(|s| s.parse::<i64>().ok()),
                        "appCommandType": "SLASH_COMMAND",
                    },
                    "message": message,
                    "space": space,
                    "thread": message["thread"],
                    "isDialogEvent": false,
                }
            }),
            None => json!({"messagePayload": {"message": message, "space": space}}),
        },
        Happening::Added => json!({"addedToSpacePayload": {"space": space}}),
        Happening::Removed => json!({"removedFromSpacePayload": {"space": space}}),
        Happening::Click {
            message,
            function,
            parameters,
        } => {
            common["invokedFunction"] = json!(function);
            common["parameters"] = json!(parameters);
            json!({"buttonClickedPayload": {"message": message, "space": space, "isDialogEvent": false}})
        }
    };
    let mut chat = chat;
    chat["user"] = user;
    chat["space"] = space;
    chat["eventTime"] = json!(time);
    json!({"commonEventObject": common, "chat": chat})
}

/// Annotations and the slash command of a typed text, as Chat adds them:
/// `@App` mentions the app, a leading `/name` invokes the command `name`
/// with `command_id`. Returns the fields to add to the message body.
pub fn annotate(text: &str, app_name: &str, app_user: &Value, command_id: Option<i64>) -> Value {
    let mut fields = serde_json::Map::new();
    let mut annotations = Vec::new();
    let mention = format!("@{app_name}");
    if let Some(start) = text.find(&mention) {
        annotations.push(json!({
            "type": "USER_MENTION",
            "startIndex": text[..start].chars().count(),
            "length": mention.chars().count(),
            "userMention": {"user": app_user, "type": "MENTION"},
        }));
        let rest = format!("{}{}", &text[..start], &text[start + mention.len()..]);
        fields.insert("argumentText".into(), json!(rest.trim()));
    }
    // Where the first word starts: after any leading space.
    let start = text.len() - text.trim_start().len();
    if let (Some(command), Some(id)) = (
        text.split_whitespace()
            .next()
            .filter(|w| w.starts_with('/')),
        command_id,
    ) {
        annotations.push(json!({
            "type": "SLASH_COMMAND",
            "startIndex": text[..start].chars().count(),
            "length": command.chars().count(),
            "slashCommand": {
                "bot": app_user,
                "type": "INVOKE",
                "commandName": command,
                "commandId": id.to_string(),
            },
        }));
        fields.insert("slashCommand".into(), json!({"commandId": id.to_string()}));
        fields.insert(
            "argumentText".into(),
            json!(text[start + command.len()..].trim()),
        );
    }
    if !annotations.is_empty() {
        fields.insert("annotations".into(), json!(annotations));
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_after_leading_space_is_cut_where_it_ends() {
        let app = json!({"name": "users/app", "type": "BOT"});
        // The first word starts after two spaces and holds two-byte
        // characters: cutting at its length from the start would land
        // inside one.
        let fields = annotate("  /élan vital", "App", &app, Some(3));
        assert_eq!(fields["argumentText"], "vital");
        assert_eq!(fields["annotations"][0]["startIndex"], 2);
        assert_eq!(
            fields["annotations"][0]["slashCommand"]["commandName"],
            "/élan"
        );
    }

    #[test]
    fn mentions_and_commands_are_annotated() {
        let app = json!({"name": "users/app", "type": "BOT"});
        let fields = annotate("hey @App do it", "App", &app, None);
        assert_eq!(fields["argumentText"], "hey  do it".trim());
        assert_eq!(fields["annotations"][0]["type"], "USER_MENTION");
        let fields = annotate("/help now", "App", &app, Some(7));
        assert_eq!(fields["slashCommand"]["commandId"], "7");
        assert_eq!(fields["argumentText"], "now");
        assert!(
            annotate("plain", "App", &app, Some(1))
                .as_object()
                .is_some_and(|o| o.is_empty())
        );
    }
}
