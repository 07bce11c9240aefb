//! Fuzzes the plan parser: any text either becomes a plan or an error that points inside the
//! text (line and column within it, a field named, a message), and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match bandsync_common::plan::parse(text, "fuzz.toml", "fuzz") {
        Ok(plan) => {
            assert!(!plan.steps.is_empty(), "a valid plan has steps");
            assert!(!plan.name.is_empty());
        }
        Err(e) => {
            let lines = text.split('\n').count();
            assert!(e.line >= 1 && e.line <= lines, "line {} outside 1..={lines}: {e}", e.line);
            assert!(e.column >= 1, "column {}: {e}", e.column);
            assert!(!e.field.is_empty() && !e.message.is_empty(), "{e}");
        }
    }
});
