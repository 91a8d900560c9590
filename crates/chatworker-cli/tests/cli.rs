//! The `chatworker` command line itself: flags and settings checked before
//! anything runs (exit code 2, one line), and which commands a build
//! carries.

mod common;

use common::chatworker;

#[test]
fn fault_flags_are_checked_before_serving() {
    let out = std::process::Command::new(chatworker())
        .args(["sim", "--listen", "127.0.0.1:0", "--error-rate", "1.5"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("errorRate 1.5 is not between 0 and 1"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "it never said it was listening");
}

#[test]
fn this_build_carries_the_development_commands() {
    // The default build has the `dev` feature: `dev` and `sim` are there
    // (the production image, built without it, has neither).
    let out = std::process::Command::new(chatworker())
        .arg("--help")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["run", "setup", "check", "send", "dev", "sim"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} in\n{help}"
        );
    }
}

#[test]
fn a_configuration_error_exits_2_with_one_line_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(chatworker())
        .arg("run")
        .env_clear()
        .env(
            "CHATWORKER_PUBSUB__SUBSCRIPTION",
            "projects/p/subscriptions/sub",
        )
        .env("CHATWORKER_WORKER__CONCURRENCY", "0")
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("worker.concurrency (CHATWORKER_WORKER__CONCURRENCY)"),
        "{stderr}"
    );
    // A section nothing reads is a typo, not a setting to ignore.
    let out = std::process::Command::new(chatworker())
        .arg("run")
        .env_clear()
        .env(
            "CHATWORKER_PUBSUB__SUBSCRIPTION",
            "projects/p/subscriptions/sub",
        )
        .env("CHATWORKER_WORKR__CONCURRENCY", "3")
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("workr (CHATWORKER_WORKR__…)"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
