//! Decoding every fixture: each event type in both formats, an event type that
//! does not exist yet, and malformed payloads.

use chatworker::event::{
    Action, AppCommandType, DecodeError, Event, EventFormat, EventKind, SpaceKind, UserKind, decode,
};
use serde_json::Value;
use std::path::Path;

fn fixture(path: &str) -> Vec<u8> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/events")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn event(path: &str) -> Event {
    decode(&fixture(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn classic_message() {
    let e = event("classic/message.json");
    assert_eq!(e.kind, EventKind::Message);
    assert_eq!(e.format, EventFormat::Classic);
    assert_eq!(e.space.name.as_str(), "spaces/AAAAtest");
    assert_eq!(e.space.kind, SpaceKind::Space);
    assert_eq!(
        e.thread.as_ref().map(|t| t.as_str()),
        Some("spaces/AAAAtest/threads/TTTT1")
    );
    let m = e.message.as_ref().expect("message");
    assert_eq!(m.text, "@chatworker hello there");
    assert_eq!(m.argument_text.as_deref(), Some(" hello there"));
    assert_eq!(m.slash_command, None);
    let sender = e.sender().expect("sender");
    assert_eq!(sender.display_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(sender.kind, UserKind::Human);
    assert!(e.identity().is_some());
}

#[test]
fn classic_direct_message() {
    let e = event("classic/message_dm.json");
    assert_eq!(e.space.kind, SpaceKind::DirectMessage);
    assert_eq!(
        e.thread.as_ref().map(|t| t.as_str()),
        Some("spaces/DDDDtest/threads/DT1")
    );
}

#[test]
fn classic_slash_command() {
    let e = event("classic/slash_command.json");
    assert_eq!(e.kind, EventKind::Message);
    let command = e
        .message
        .and_then(|m| m.slash_command)
        .expect("slash command");
    assert_eq!(command.id.as_deref(), Some("1"));
    assert_eq!(command.name.as_deref(), Some("/help"));
}

#[test]
fn classic_added_and_removed() {
    let added = event("classic/added_to_space.json");
    assert_eq!(added.kind, EventKind::AddedToSpace);
    assert!(added.message.is_none());
    let by_mention = event("classic/added_to_space_with_message.json");
    assert_eq!(by_mention.kind, EventKind::AddedToSpace);
    assert_eq!(
        by_mention.message.map(|m| m.text).as_deref(),
        Some("@chatworker what can you do?")
    );
    assert_eq!(
        event("classic/removed_from_space.json").kind,
        EventKind::RemovedFromSpace
    );
}

#[test]
fn classic_card_clicked_and_widget_updated() {
    let EventKind::CardClicked(Action { name, parameters }) =
        event("classic/card_clicked.json").kind
    else {
        panic!("not a card click");
    };
    assert_eq!(name, "approve");
    assert_eq!(parameters.get("ticket").map(String::as_str), Some("42"));
    let EventKind::WidgetUpdated(action) = event("classic/widget_updated.json").kind else {
        panic!("not a widget update");
    };
    assert_eq!(action.name, "suggestAssignee");
}

#[test]
fn classic_app_command() {
    let EventKind::AppCommand(command) = event("classic/app_command.json").kind else {
        panic!("not an app command");
    };
    assert_eq!(command.id, Some(1));
    assert_eq!(command.command_type, AppCommandType::SlashCommand);
}

#[test]
fn a_click_on_the_apps_card_comes_from_the_person_who_clicked() {
    for fixture in ["classic/card_clicked.json", "addon/button_clicked.json"] {
        let e = event(fixture);
        assert_eq!(
            e.message
                .as_ref()
                .and_then(|m| m.sender.as_ref())
                .map(|u| u.kind),
            Some(UserKind::Bot)
        );
        let sender = e.sender().expect("sender");
        assert_eq!(sender.kind, UserKind::Human, "{fixture}");
        assert_eq!(
            sender.display_name.as_deref(),
            Some("Ada Lovelace"),
            "{fixture}"
        );
    }
}

#[test]
fn classic_bot_sender_is_visible() {
    let e = event("classic/bot_message.json");
    assert_eq!(e.sender().map(|u| u.kind), Some(UserKind::Bot));
}

#[test]
fn unknown_types_are_values_not_errors() {
    let e = event("classic/future_event_type.json");
    assert_eq!(
        e.kind,
        EventKind::Unknown {
            type_name: "REACTION_SUMMONED".into()
        }
    );
    let e = event("addon/future_payload.json");
    assert_eq!(
        e.kind,
        EventKind::Unknown {
            type_name: "reactionSummonedPayload".into()
        }
    );
    assert_eq!(e.format, EventFormat::AddOn);
}

#[test]
fn addon_formats_decode_like_classic() {
    let classic = event("classic/message.json");
    let addon = event("addon/message.json");
    assert_eq!(addon.format, EventFormat::AddOn);
    assert_eq!(addon.kind, classic.kind);
    assert_eq!(addon.space, classic.space);
    assert_eq!(addon.message, classic.message);
    assert_eq!(addon.thread, classic.thread);
    assert_eq!(addon.user, classic.user);
    // The same interaction yields the same identity in either format.
    assert_eq!(addon.identity(), classic.identity());

    assert_eq!(
        event("addon/added_to_space.json").kind,
        EventKind::AddedToSpace
    );
    assert_eq!(
        event("addon/removed_from_space.json").kind,
        EventKind::RemovedFromSpace
    );
    let EventKind::CardClicked(action) = event("addon/button_clicked.json").kind else {
        panic!("not a card click");
    };
    assert_eq!(action.name, "approve");
    assert_eq!(
        action.parameters.get("ticket").map(String::as_str),
        Some("42")
    );
    let EventKind::WidgetUpdated(action) = event("addon/widget_updated.json").kind else {
        panic!("not a widget update");
    };
    assert_eq!(action.name, "suggestAssignee");
    let e = event("addon/app_command.json");
    let EventKind::AppCommand(command) = &e.kind else {
        panic!("not an app command");
    };
    assert_eq!(command.id, Some(1));
    assert_eq!(
        e.thread.as_ref().map(|t| t.as_str()),
        Some("spaces/AAAAtest/threads/TTTT1")
    );
}

#[test]
fn malformed_payloads_are_typed_errors() {
    let cases: &[(&str, &str)] = &[
        ("malformed/empty.txt", "empty"),
        ("malformed/not_json.txt", "not_json"),
        ("malformed/array.json", "not_json"),
        ("malformed/truncated.json", "not_json"),
        ("malformed/neither_format.json", "wrong_shape"),
        ("malformed/space_is_a_number.json", "wrong_shape"),
        ("malformed/missing_space.json", "wrong_shape"),
        ("malformed/bad_space_name.json", "wrong_shape"),
        ("malformed/dot_segments_in_space.json", "wrong_shape"),
        ("malformed/dot_segments_in_thread.json", "wrong_shape"),
        ("malformed/app_command_without_metadata.json", "wrong_shape"),
    ];
    for (path, reason) in cases {
        let err: DecodeError = decode(&fixture(path)).expect_err(path);
        assert_eq!(err.reason(), *reason, "{path}: {err}");
    }
}

#[test]
fn different_events_have_different_identities() {
    let a = event("classic/message.json").identity();
    let b = event("classic/message_dm.json").identity();
    let c = event("classic/card_clicked.json").identity();
    assert_ne!(a, b);
    assert_ne!(a, c);
}

#[test]
fn a_click_without_a_time_has_no_identity_of_its_own() {
    // Two clicks on one card by one person, with no eventTime, would share
    // every field an identity is made of: the second click's reply would be
    // taken for the first's. Without a time, the Pub/Sub message ID decides.
    let mut click: Value =
        serde_json::from_slice(&fixture("classic/card_clicked.json")).expect("json");
    assert!(
        decode(&serde_json::to_vec(&click).expect("json"))
            .expect("decodes")
            .identity()
            .is_some()
    );
    click
        .as_object_mut()
        .expect("an object")
        .remove("eventTime");
    let e = decode(&serde_json::to_vec(&click).expect("json")).expect("decodes");
    assert_eq!(e.identity(), None);
    // A message names itself: its identity needs no time.
    let mut message: Value =
        serde_json::from_slice(&fixture("classic/message.json")).expect("json");
    message
        .as_object_mut()
        .expect("an object")
        .remove("eventTime");
    let e = decode(&serde_json::to_vec(&message).expect("json")).expect("decodes");
    assert!(e.identity().is_some());
}

#[test]
fn the_same_instant_written_differently_is_one_identity() {
    let mut a: Value = serde_json::from_slice(&fixture("classic/card_clicked.json")).expect("json");
    let mut b = a.clone();
    a["eventTime"] = "2026-01-02T03:04:05.678Z".into();
    b["eventTime"] = "2026-01-02T03:04:05.678000000Z".into();
    let identity = |v: &Value| {
        decode(&serde_json::to_vec(v).expect("json"))
            .expect("decodes")
            .identity()
    };
    assert_eq!(identity(&a), identity(&b));
}
