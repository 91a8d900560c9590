//! The playground in a real browser: `chatworker dev` runs (against the
//! emulator `scripts/test` started), and Debian's Chromium, driven by
//! playwright-core (`tests/playground/drive.mjs`), types a message, sees
//! the card reply with the sender's name, clicks the card's button and sees
//! the card updated in place. The screenshot lands in
//! `target/playground.png` (docs/playground.md shows a copy, `docs/playground.png`).
//! `.ci/run` installs Chromium and the npm package.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_playground_works_in_chromium() {
    let root = common::repo_path("").display().to_string();
    let root = root.trim_end_matches('/');
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is missing: apt-get install chromium (or set CHROMIUM)"
    );
    assert!(
        std::path::Path::new(&format!(
            "{root}/tests/playground/node_modules/playwright-core"
        ))
        .exists(),
        "playwright-core is missing: (cd tests/playground && npm ci)"
    );
    let host =
        std::env::var("PUBSUB_EMULATOR_HOST").expect("PUBSUB_EMULATOR_HOST (scripts/test sets it)");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Command::new(common::chatworker())
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .env("PUBSUB_EMULATOR_HOST", &host)
        .env("RUST_LOG", "info")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("dev.log")).expect("log"))
        .spawn()
        .expect("chatworker dev starts");
    let stdout = dev.stdout.take().expect("stdout");
    let url = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("playground: ").map(str::to_owned))
        .expect("dev prints the playground URL");
    let screenshot = format!("{root}/target/playground.png");
    let started = Instant::now();
    let out = Command::new("node")
        .arg(format!("{root}/tests/playground/drive.mjs"))
        .args([&url, &screenshot])
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Ctrl-C, as a developer would.
    let _ = Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = dev.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = dev.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(dir.path().join("dev.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the browser run failed after {:?}:\n{stdout}\n{stderr}\n--- dev log:\n{log}",
        started.elapsed()
    );
    for step in [
        "message shown",
        "card rendered with the sender's name",
        "api call shown",
        "card updated in place",
        "refused reply shown in its thread",
        "second thread answered",
        "every widget drawn",
        "screenshot saved",
    ] {
        assert!(stdout.contains(step), "{step} missing:\n{stdout}");
    }
    assert!(!stdout.contains("page error"), "{stdout}");
    assert!(
        status.is_some_and(|s| s.success()),
        "dev did not stop cleanly on Ctrl-C: {status:?}\n{log}"
    );
}
