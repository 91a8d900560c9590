//! The event decoder on arbitrary bytes: it must return an event or a typed
//! error, never panic, hang or overflow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match chatworker::event::decode(data) {
        Ok(event) => {
            // Whatever decoded must be usable by the worker.
            let _ = event.identity();
            let _ = event.sender();
            let _ = event.kind.label();
        }
        Err(e) => {
            let _ = e.reason();
        }
    }
});
