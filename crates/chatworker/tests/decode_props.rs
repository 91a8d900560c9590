//! Property tests of the event decoder: whatever bytes arrive, it returns an
//! event or a typed error, never panics, and allocates in proportion to its
//! input. A counting allocator (this test binary's own) measures the last.

use chatworker::event::{DecodeError, decode};
use proptest::prelude::*;
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

/// Counts the bytes this thread has allocated and the peak, so that
/// parallel tests do not disturb each other's figures.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are const-initialised thread locals without destructors, which
// allocators may use.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|live| {
            live.set(live.get() + layout.size());
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
        });
        // SAFETY: same layout, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(layout.size())));
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Decodes `data` and returns the result with the peak extra memory the
/// decoding took.
fn decode_measured(data: &[u8]) -> (Result<chatworker::event::Event, DecodeError>, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let result = decode(data);
    let peak = PEAK.with(Cell::get) - base;
    (result, peak)
}

/// What "in proportion" means: a parse tree and an event each hold at most
/// a few copies of the input, plus a fixed overhead.
fn bound(input: usize) -> usize {
    16 * input + 256 * 1024
}

fn fixtures() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/events");
    let mut all = Vec::new();
    for dir in ["classic", "addon", "malformed"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("fixtures")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            all.push(std::fs::read(path).expect("fixture"));
        }
    }
    all
}

/// Every input ends as an event or one of the typed errors, within bounds.
fn check(data: &[u8]) -> Result<(), TestCaseError> {
    let (result, peak) = decode_measured(data);
    if let Err(e) = &result {
        prop_assert!(matches!(
            e,
            DecodeError::Empty | DecodeError::NotJson(_) | DecodeError::Shape(_)
        ));
        prop_assert!(!e.reason().is_empty());
    }
    prop_assert!(
        peak <= bound(data.len()),
        "{peak} bytes allocated for {} bytes of input",
        data.len()
    );
    Ok(())
}

/// Replaces the value at a random path of `value` with `replacement`.
fn replace_somewhere(value: &mut Value, mut choice: usize, replacement: Value) {
    let mut current = value;
    loop {
        let children = match current {
            Value::Object(map) if !map.is_empty() => map.len(),
            Value::Array(items) if !items.is_empty() => items.len(),
            _ => {
                *current = replacement;
                return;
            }
        };
        let pick = choice % children;
        choice /= children.max(2);
        // Stop here now and then, or when the choice is used up.
        if choice == 0 || choice.is_multiple_of(5) {
            match current {
                Value::Object(map) => {
                    if let Some((_, v)) = map.iter_mut().nth(pick) {
                        *v = replacement;
                    }
                }
                Value::Array(items) => items[pick] = replacement,
                _ => unreachable!(),
            }
            return;
        }
        current = match current {
            Value::Object(map) => map.iter_mut().nth(pick).map(|(_, v)| v).expect("child"),
            Value::Array(items) => &mut items[pick],
            _ => unreachable!(),
        };
    }
}

fn wrong_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        Just(serde_json::json!([])),
        Just(serde_json::json!([1, "two", null])),
        Just(serde_json::json!({})),
        Just(serde_json::json!({"name": 7, "type": []})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check(&data)?;
    }

    #[test]
    fn arbitrary_text(text in ".{0,2048}") {
        check(text.as_bytes())?;
    }

    #[test]
    fn truncated_fixtures(index in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
        let all = fixtures();
        let fixture = index.get(&all);
        let end = cut.index(fixture.len() + 1);
        check(&fixture[..end])?;
    }

    #[test]
    fn mutated_fixtures(
        index in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..16),
    ) {
        let all = fixtures();
        let mut data = index.get(&all).clone();
        for (at, byte, op) in edits {
            let i = at.index(data.len() + 1);
            match op {
                0 if i < data.len() => data[i] = byte,
                1 => data.insert(i, byte),
                _ if i < data.len() => { data.remove(i); }
                _ => data.push(byte),
            }
        }
        check(&data)?;
    }

    #[test]
    fn fields_of_the_wrong_type(
        index in any::<prop::sample::Index>(),
        choice in any::<usize>(),
        replacement in wrong_value(),
    ) {
        let all: Vec<Value> = fixtures()
            .iter()
            .filter_map(|f| serde_json::from_slice(f).ok())
            .collect();
        let mut value = index.get(&all).clone();
        replace_somewhere(&mut value, choice, replacement);
        check(&serde_json::to_vec(&value).expect("serializes"))?;
    }
}

#[test]
fn deep_nesting_is_rejected_without_overflowing_the_stack() {
    for depth in [200, 10_000, 1_000_000] {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let data = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let (result, peak) = decode_measured(data.as_bytes());
            assert!(
                matches!(result, Err(DecodeError::NotJson(_))),
                "depth {depth}: {result:?}"
            );
            assert!(peak <= bound(data.len()));
        }
        // Deep inside an otherwise valid event.
        let data = format!(
            r#"{{"type":"MESSAGE","space":{{"name":"spaces/A"}},"message":{{"text":"x","extra":{}1{}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert!(matches!(
            decode(data.as_bytes()),
            Err(DecodeError::NotJson(_))
        ));
    }
}

#[test]
fn huge_strings_decode_within_bounds() {
    let text = "é".repeat(4 * 1024 * 1024);
    let data = serde_json::to_vec(&serde_json::json!({
        "type": "MESSAGE",
        "eventTime": "2026-11-29T10:00:00Z",
        "space": {"name": "spaces/AAAA", "spaceType": "SPACE"},
        "user": {"name": "users/1", "type": "HUMAN"},
        "message": {"name": "spaces/AAAA/messages/M.M", "text": text, "sender": {"name": "users/1", "type": "HUMAN"}}
    }))
    .expect("serializes");
    let (result, peak) = decode_measured(&data);
    let event = result.expect("a huge text is still an event");
    assert_eq!(event.message.expect("message").text.len(), text.len());
    assert!(peak <= bound(data.len()), "{peak} for {}", data.len());
    // The counter works: the event holds the text, so it was allocated.
    assert!(peak >= text.len(), "{peak} for {}", data.len());
    // A huge display name, a huge unknown field, a huge number.
    for extra in [
        r#""user":{"name":"users/1","displayName":"NAME","type":"HUMAN"}"#,
        r#""unknownField":"NAME""#,
    ] {
        let big = "n".repeat(8 * 1024 * 1024);
        let data = format!(
            r#"{{"type":"ADDED_TO_SPACE","space":{{"name":"spaces/A"}},{}}}"#,
            extra.replace("NAME", &big)
        );
        let (result, peak) = decode_measured(data.as_bytes());
        assert!(result.is_ok(), "{result:?}");
        assert!(peak <= bound(data.len()));
    }
    let number = format!(
        r#"{{"type":"MESSAGE","space":{{"name":"spaces/A"}},"n":{}}}"#,
        "9".repeat(1_000_000)
    );
    let (_, peak) = decode_measured(number.as_bytes());
    assert!(peak <= bound(number.len()));
}

/// Large arrays and maps of small items, in every place an event has one,
/// and unknown fields in the add-on format: each decodes (or is refused)
/// within the same proportion of its size. A list of empty objects is the
/// worst case: a few bytes of input each, a whole struct each if kept.
#[test]
fn large_arrays_decode_within_bounds() {
    const ITEMS: usize = 1_000_000;
    let list = |item: &str| vec![item; ITEMS].join(",");
    let classic_message = |annotations: String| {
        format!(
            r#"{{"type":"MESSAGE","eventTime":"2026-11-29T10:00:00Z","space":{{"name":"spaces/A"}},"message":{{"name":"spaces/A/messages/M.M","text":"/help","annotations":[{annotations}]}}}}"#
        )
    };
    let cases = [
        ("empty annotations", classic_message(list("{}"))),
        (
            "annotations of other kinds",
            classic_message(list(r#"{"type":"USER_MENTION"}"#)),
        ),
        (
            "action parameters",
            format!(
                r#"{{"type":"CARD_CLICKED","eventTime":"2026-11-29T10:00:00Z","space":{{"name":"spaces/A"}},"action":{{"actionMethodName":"a","parameters":[{}]}}}}"#,
                list(r#"{"key":"k","value":"v"}"#)
            ),
        ),
        (
            "add-on parameters",
            format!(
                r#"{{"commonEventObject":{{"invokedFunction":"a","parameters":{{{}}}}},"chat":{{"eventTime":"2026-11-29T10:00:00Z","buttonClickedPayload":{{"space":{{"name":"spaces/A"}}}}}}}}"#,
                (0..ITEMS)
                    .map(|i| format!(r#""k{i}":"v""#))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
        (
            "add-on unknown fields",
            format!(
                r#"{{"chat":{{"eventTime":"2026-11-29T10:00:00Z","messagePayload":{{"space":{{"name":"spaces/A"}},"message":{{"name":"spaces/A/messages/M.M","text":"x"}}}},"extra":[{}]}}}}"#,
                list("{}")
            ),
        ),
        (
            "add-on unknown payload",
            format!(
                r#"{{"chat":{{"eventTime":"2026-11-29T10:00:00Z","space":{{"name":"spaces/A"}},"futurePayload":[{}]}}}}"#,
                list("{}")
            ),
        ),
    ];
    for (what, data) in cases {
        let (result, peak) = decode_measured(data.as_bytes());
        assert!(
            peak <= bound(data.len()),
            "{what}: {peak} bytes at the peak for {} of input ({result:?})",
            data.len()
        );
        if let Err(e) = &result {
            // Refused for holding too many entries, never anything else.
            assert_eq!(e.reason(), "wrong_shape", "{what}: {e}");
        }
    }
}
