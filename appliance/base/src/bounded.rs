//! How much of outside input the appliance keeps or repeats.
//!
//! A request's path, a model name, a user name or a label can be as long as
//! the listener admits (tens of KiB). What is stored from it (audit
//! records, usage rows) or echoed in an error keeps a short prefix, marked
//! with the original length, so that the input never decides how much
//! disk, memory or bandwidth it costs. Every audit record passes through
//! [`clip`] in `audit::append`, every problem+json detail in `ApiError`.

use std::borrow::Cow;

/// The most kept of any one string in an audit record or a usage row, in bytes.
pub const STORED: usize = 512;
/// The most of an error's detail sent back to a client, in bytes.
pub const ECHOED: usize = 1024;

/// `text` itself if it fits in `max` bytes; otherwise its first bytes (cut
/// at a character boundary) followed by a marker with the original length,
/// the whole at most `max` bytes.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let marker = format!("…[truncated from {} bytes]", text.len());
    let mut end = max.saturating_sub(marker.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{marker}", &text[..end]))
}

/// [`clip`] to [`STORED`], owned: for a value about to be stored.
pub fn stored(text: String) -> String {
    match clip(&text, STORED) {
        Cow::Borrowed(_) => text,
        Cow::Owned(clipped) => clipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_keeps_a_prefix_and_says_how_long_it_was() {
        assert_eq!(clip("short", 16), "short");
        let long = "é".repeat(30_000);
        let clipped = clip(&long, STORED);
        assert!(clipped.len() <= STORED, "{}", clipped.len());
        assert!(clipped.starts_with("éé") && clipped.ends_with("…[truncated from 60000 bytes]"), "{clipped}");
        assert_eq!(stored("x".repeat(STORED)), "x".repeat(STORED), "what fits is kept whole");
    }
}
