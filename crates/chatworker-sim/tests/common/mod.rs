//! The shared harness (`chatworker-testkit`).

#![allow(unused_imports)]

pub use chatworker_testkit::*;
