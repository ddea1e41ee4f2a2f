//! Quoting input in messages: every crate's diagnostics quote at most ~200 bytes of it.

/// At most 200 bytes of `text` (cut at a character boundary, marked with its full length): a
/// name or token quoted from the input in a message, so a megabyte-long one is not echoed whole.
pub fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    const MAX_QUOTED: usize = 200;
    if text.len() <= MAX_QUOTED {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX_QUOTED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}... ({} bytes)", &text[..end], text.len()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(super::clip("short"), "short");
        let long = "é".repeat(150);
        let clipped = super::clip(&long);
        assert_eq!(clipped, format!("{}... (300 bytes)", "é".repeat(100)));
    }
}
