//! The shared harness (`chatworker-testkit`), and the binary under test.

#![allow(dead_code, unused_imports)]

pub use chatworker_testkit::*;

/// The `chatworker` binary cargo built for these tests.
pub fn chatworker() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_chatworker"))
}
