//! The `chatworker` command line itself: flags checked before anything
//! runs, exit codes, and which commands a build carries.

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
