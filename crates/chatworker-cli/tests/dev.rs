//! `chatworker dev` without a browser: a session recorded as a transcript
//! replays to the same answers in a fresh session, and a missing emulator
//! is reported with the command that installs it.

mod common;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `chatworker dev`, stopped with SIGINT on drop.
struct Dev {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Dev {
    fn start(format: &str) -> Self {
        let host = std::env::var("PUBSUB_EMULATOR_HOST")
            .expect("PUBSUB_EMULATOR_HOST (scripts/test sets it)");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(common::chatworker())
            .args(["dev", "--listen", "127.0.0.1:0", "--event-format", format])
            .env("PUBSUB_EMULATOR_HOST", host)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chatworker dev starts");
        let stdout = child.stdout.take().expect("stdout");
        let url = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("playground: ").map(str::to_owned))
            .expect("dev prints the playground URL")
            .trim_end_matches("/playground")
            .to_owned();
        Self {
            child,
            url,
            _dir: dir,
        }
    }

    async fn act(&self, action: &Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}/_sim/playground/act", self.url))
            .json(action)
            .send()
            .await
            .expect("act");
        assert!(
            response.status().is_success(),
            "{action}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// The app's messages, each reduced to what a person sees: the text, or
    /// the card's title and texts.
    async fn app_answers(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let records = self.get("/_sim/messages").await["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let answers: Vec<String> = records
                .iter()
                .filter(|r| r["byApp"] == true)
                .map(|r| seen(&r["message"]))
                .collect();
            if answers.len() >= n || Instant::now() > deadline {
                return answers;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn seen(message: &Value) -> String {
    let mut parts = vec![message["text"].as_str().unwrap_or_default().to_owned()];
    for card in message["cardsV2"].as_array().into_iter().flatten() {
        parts.push(
            card["card"]["header"]["title"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        for section in card["card"]["sections"].as_array().into_iter().flatten() {
            for widget in section["widgets"].as_array().into_iter().flatten() {
                if let Some(text) = widget["textParagraph"]["text"].as_str() {
                    parts.push(text.to_owned());
                }
            }
        }
    }
    parts.join(" | ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_replays_to_the_same_answers() {
    for format in ["classic", "addon"] {
        let first = Dev::start(format);
        let space = json!({"name": "spaces/REPLAY", "spaceType": "SPACE", "displayName": "Replay"});
        let ada = json!({"name": "users/1", "displayName": "Ada"});
        first
            .act(&json!({"kind": "added", "space": space, "person": ada}))
            .await;
        first
            .act(&json!({"kind": "message", "text": "hello @chatworker", "space": space, "person": ada}))
            .await;
        first
            .act(&json!({"kind": "message", "text": "/help", "space": space, "person": ada}))
            .await;
        let answers = first.app_answers(3).await;
        assert_eq!(answers.len(), 3, "{format}: {answers:?}");
        assert!(
            answers.iter().any(|a| a.contains("You said: hello")),
            "{format}: the mention is stripped: {answers:?}"
        );
        assert!(
            answers.iter().any(|a| a.contains("/help")),
            "{format}: {answers:?}"
        );

        let transcript = first.get("/_sim/transcript").await;
        assert_eq!(transcript["version"], 1);
        let actions = transcript["actions"].as_array().expect("actions").clone();
        assert_eq!(actions.len(), 3);
        assert!(
            transcript["requests"]
                .as_array()
                .is_some_and(|r| r.len() >= 3)
        );
        drop(first);

        // A fresh session, the same actions: the same answers.
        let second = Dev::start(format);
        for recorded in &actions {
            second.act(&recorded["action"]).await;
        }
        let mut replayed = second.app_answers(3).await;
        let mut answers = answers;
        answers.sort();
        replayed.sort();
        assert_eq!(replayed, answers, "{format}");
    }
}

#[test]
fn a_missing_emulator_is_reported_with_the_install_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(common::chatworker())
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", dir.path())
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gcloud components install pubsub-emulator"),
        "{stderr}"
    );
}
