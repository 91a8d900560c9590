//! Compatibility with a client nobody here wrote: Google's official Python
//! Chat client (`google-apps-chat`, REST transport) creates, gets, patches,
//! lists and deletes messages on the simulator. `scripts/test` installs the
//! client from `tests/python/requirements.txt`.

mod common;

use common::Sim;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn googles_python_client_works_against_the_simulator() {
    let sim = Sim::start().await;
    let script = common::repo_path("tests/python/chat_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .env("SIM_URL", &sim.url)
        .env("KEY_FILE", &sim.key_path)
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'google"),
        "Google's Python Chat client is not installed: \
         python3 -m pip install -r tests/python/requirements.txt\n{stderr}"
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for step in [
        "create ok",
        "reply ok",
        "get ok",
        "patch ok",
        "list ok",
        "delete ok",
        "duplicate ID refused ok",
        "unknown thread refused ok",
    ] {
        assert!(stdout.contains(step), "{step} missing:\n{stdout}\n{stderr}");
    }
    // The simulator saw the client's own wire format (update_message sends
    // PUT, the `update` binding, as Google's Rust client does too).
    let calls = sim.calls().await;
    let methods: Vec<&str> = calls.iter().filter_map(|c| c["method"].as_str()).collect();
    for method in ["POST", "GET", "PUT", "DELETE"] {
        assert!(methods.contains(&method), "{method} in {methods:?}");
    }
}
