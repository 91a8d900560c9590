//! Splitting text that is longer than one Chat message may carry.

/// The most text one Chat message may carry, in bytes (UTF-8).
pub(crate) const MAX_MESSAGE_TEXT_BYTES: usize = 32_000;

/// Splits `text` into parts of at most `max` bytes, preferring to cut after a
/// line break, then after a space, and only then between characters (never
/// inside one). Joining the parts gives back `text`. Text that fits is one
/// part; empty text is no part.
pub(crate) fn split(text: &str, max: usize) -> Vec<&str> {
    let max = max.max(4); // room for any one character
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let window = &rest[..cut];
        // Keep the separator with the part it ends; a cut in the first half
        // would make parts needlessly small, so it falls back a level.
        let at = |sep: char| window.rfind(sep).map(|i| i + 1).filter(|&i| i > cut / 2);
        let end = at('\n').or_else(|| at(' ')).unwrap_or(cut);
        parts.push(&rest[..end]);
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_one_part_and_empty_text_none() {
        assert_eq!(split("hello", 10), ["hello"]);
        assert!(split("", 10).is_empty());
    }

    #[test]
    fn cuts_prefer_lines_then_words() {
        let text = "first line\nsecond line that is long";
        assert_eq!(
            split(text, 20),
            ["first line\n", "second line that is ", "long"]
        );
        assert_eq!(split("aaaa bbbb cccc", 10), ["aaaa bbbb ", "cccc"]);
        // No break in reach: cut between characters, never inside one.
        assert_eq!(split("ééééé", 5), ["éé", "éé", "é"]);
    }

    proptest! {
        #[test]
        fn parts_fit_and_join_back(text in "(\\PC| |\n){0,400}", max in 4usize..64) {
            let parts = split(&text, max);
            prop_assert_eq!(parts.concat(), text.clone());
            for part in &parts {
                prop_assert!(part.len() <= max, "{} > {}", part.len(), max);
                prop_assert!(!part.is_empty());
            }
        }
    }
}
