//! The simulator's playground publishes the events Chat would; the
//! runtime's decoder is the judge that they are Chat's events. (The
//! simulator crate depends on nothing of the runtime, so the check lives
//! here.)

use chatworker::event::{EventKind, decode};
use chatworker_sim::events::{Format, Happening, Person, SpaceInfo, annotate, event};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// An RFC 3339 time with microseconds, as Chat writes `createTime`.
fn now() -> String {
    "2026-01-02T03:04:05.678901Z".to_owned()
}

fn who() -> (SpaceInfo, Person) {
    (
        SpaceInfo {
            name: "spaces/PLAY".into(),
            space_type: "SPACE".into(),
            display_name: "Playground".into(),
        },
        Person {
            name: "users/42".into(),
            display_name: "Ada".into(),
        },
    )
}

fn message(extra: Value) -> Value {
    let mut m = json!({
        "name": "spaces/PLAY/messages/M1.M1",
        "text": "/help me",
        "sender": {"name": "users/42", "displayName": "Ada", "type": "HUMAN"},
        "createTime": now(),
        "thread": {"name": "spaces/PLAY/threads/T1"},
        "space": {"name": "spaces/PLAY"},
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        m[k] = v;
    }
    m
}

/// Every event the playground publishes decodes into the kind meant,
/// in both formats: the worker's decoder is the judge.
#[test]
fn the_worker_understands_every_event_in_both_formats() {
    let (space, person) = who();
    let app = json!({"name": "users/app", "type": "BOT"});
    let command = message(annotate("/help me", "App", &app, Some(1)));
    let click = Happening::Click {
        message: message(json!({})),
        function: "like".into(),
        parameters: BTreeMap::from([("n".into(), "1".into())]),
    };
    for format in [Format::Classic, Format::Addon] {
        let kinds: Vec<String> = [
            Happening::Message {
                message: message(json!({"text": "hi"})),
            },
            Happening::Message {
                message: command.clone(),
            },
            Happening::Added,
            Happening::Removed,
            click.clone(),
        ]
        .iter()
        .map(|h| {
            let bytes = serde_json::to_vec(&event(format, &space, &person, h)).expect("json");
            decode(&bytes).expect("decodes").kind.label().to_owned()
        })
        .collect();
        let message_or_command = if format == Format::Classic {
            "MESSAGE"
        } else {
            "APP_COMMAND"
        };
        assert_eq!(
            kinds,
            [
                "MESSAGE",
                message_or_command,
                "ADDED_TO_SPACE",
                "REMOVED_FROM_SPACE",
                "CARD_CLICKED"
            ],
            "{format:?}"
        );
    }
    let bytes = serde_json::to_vec(&event(Format::Classic, &space, &person, &click)).expect("json");
    match decode(&bytes).expect("decodes").kind {
        EventKind::CardClicked(action) => assert_eq!(action.name, "like"),
        other => panic!("{other:?}"),
    }
}
