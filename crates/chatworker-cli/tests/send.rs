//! `chatworker send`: one message from the command line, with the app's
//! credentials and client, printed as JSON.

mod common;

use common::Sim;
use serde_json::{Value, json};
use std::process::Output;

fn send(sim: &Sim, args: &[&str]) -> Output {
    std::process::Command::new(common::chatworker())
        .arg("send")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GOOGLE_APPLICATION_CREDENTIALS", &sim.key_path)
        .env("CHATWORKER_CHAT__ENDPOINT", &sim.url)
        .current_dir(sim.dir())
        .output()
        .expect("run chatworker send")
}

fn created(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the created message as JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_text_threads_named_messages_and_cards() {
    let sim = Sim::start().await;

    let text = created(&send(
        &sim,
        &[
            "--space",
            "spaces/SEND",
            "--text",
            "Hello from the command line",
        ],
    ));
    assert_eq!(text["text"], "Hello from the command line");
    assert!(
        text["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("spaces/SEND/messages/"))
    );

    // A bare space ID works too; a thread key opens an app-owned thread that
    // a second message with the same key joins.
    let a = created(&send(
        &sim,
        &[
            "--space",
            "SEND",
            "--text",
            "first",
            "--thread-key",
            "deploys",
        ],
    ));
    let b = created(&send(
        &sim,
        &[
            "--space",
            "SEND",
            "--text",
            "second",
            "--thread-key",
            "deploys",
        ],
    ));
    assert_eq!(a["thread"]["name"], b["thread"]["name"]);
    assert_ne!(a["thread"]["name"], text["thread"]["name"]);

    // A named message: addressable by its ID, refused a second time.
    let named_args = [
        "--space",
        "SEND",
        "--text",
        "named",
        "--message-id",
        "client-release-42",
    ];
    let named = created(&send(&sim, &named_args));
    assert_eq!(named["clientAssignedMessageId"], "client-release-42");
    let again = send(&sim, &named_args);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // A card from a file.
    let card_path = sim.dir().join("card.json");
    let card = json!({
        "header": {"title": "Build 42", "subtitle": "passed"},
        "sections": [{"widgets": [{"decoratedText": {"topLabel": "Branch", "text": "main"}}]}]
    });
    std::fs::write(&card_path, card.to_string()).expect("write card");
    let with_card = created(&send(
        &sim,
        &[
            "--space",
            "SEND",
            "--card",
            card_path.to_str().expect("utf-8"),
        ],
    ));
    assert_eq!(
        with_card["cardsV2"][0]["card"]["header"]["title"],
        "Build 42"
    );
    let records = sim.app_messages().await;
    let last = records.last().expect("recorded");
    assert_eq!(
        last["body"]["cardsV2"][0]["card"]["sections"][0]["widgets"][0]["decoratedText"]["text"],
        "main"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_exit_2_with_a_clear_line() {
    let sim = Sim::start().await;
    for (args, needle) in [
        (
            vec![
                "--space",
                "SEND",
                "--text",
                "x",
                "--message-id",
                "release-42",
            ],
            "--message-id",
        ),
        (
            vec!["--space", "SEND", "--card", "/nonexistent.json"],
            "--card",
        ),
        (vec!["--space", "SEND"], "--text"),
    ] {
        let output = send(&sim, &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(sim.app_messages().await.is_empty());
}
