//! The design-first level's rule, enforced on the answer rather than asked
//! of the model: in the first answer of a conversation (no earlier
//! assistant turn) fenced code blocks are withheld, streamed or not. A
//! block's place is marked so the reader knows something was held back.

use serde_json::Value;

/// What stands in for a withheld block.
pub const WITHHELD: &str = "[code withheld by the gateway: agree on the design first, then ask for the code]";

/// Whether the rule applies: no assistant turn yet in `messages`.
pub fn first_answer(messages: &[Value]) -> bool {
    !messages.iter().any(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
}

/// Removes fenced code blocks (opened and closed by three or more
/// backticks) from text that arrives in pieces, whatever the cuts. Holds
/// back only a run of backticks that might open or close a fence.
#[derive(Debug, Default)]
pub struct CodeFilter {
    inside: bool,
    /// Backticks seen but not yet known to be a fence.
    ticks: usize,
}

impl CodeFilter {
    /// The part of `text` that may be shown now.
    pub fn push(&mut self, text: &str) -> String {
        let mut out = String::new();
        for c in text.chars() {
            if c == '`' {
                self.ticks += 1;
                continue;
            }
            self.settle_ticks(&mut out);
            if !self.inside {
                out.push(c);
            }
        }
        out
    }

    /// What is left at the end (backticks that were no fence).
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        if self.ticks > 0 && self.ticks < 3 && !self.inside {
            out.push_str(&"`".repeat(self.ticks));
        }
        self.ticks = 0;
        out
    }

    fn settle_ticks(&mut self, out: &mut String) {
        match self.ticks {
            0 => {}
            n if n >= 3 => {
                if !self.inside {
                    out.push_str(WITHHELD);
                }
                self.inside = !self.inside;
            }
            n if !self.inside => out.push_str(&"`".repeat(n)),
            _ => {}
        }
        self.ticks = 0;
    }
}

/// Removes fenced code blocks from a whole answer.
pub fn withhold_code(text: &str) -> String {
    let mut filter = CodeFilter::default();
    let mut out = filter.push(text);
    out.push_str(&filter.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fenced_block_is_withheld_and_inline_code_is_not() {
        let text = "Design: two parts, `a` and `b`.\n```rust\nfn main() {}\n```\nThen tests.";
        assert_eq!(withhold_code(text), format!("Design: two parts, `a` and `b`.\n{WITHHELD}\nThen tests."));
    }

    #[test]
    fn the_same_holds_whatever_the_stream_cuts() {
        let text = "Plan first.\n```python\nprint('x')\n```\nDone ``ok``.";
        let expected = withhold_code(text);
        for size in 1..=7 {
            let mut filter = CodeFilter::default();
            let chars: Vec<char> = text.chars().collect();
            let mut out = String::new();
            for piece in chars.chunks(size) {
                out.push_str(&filter.push(&piece.iter().collect::<String>()));
            }
            out.push_str(&filter.finish());
            assert_eq!(out, expected, "cut every {size} characters");
            assert!(!out.contains("print"));
        }
    }

    #[test]
    fn an_unclosed_block_is_withheld_to_the_end() {
        assert_eq!(withhold_code("Here:\n```\nrm -rf /"), format!("Here:\n{WITHHELD}"));
    }

    #[test]
    fn only_a_first_answer_is_filtered() {
        assert!(first_answer(&[json!({"role": "system", "content": "s"}), json!({"role": "user", "content": "u"})]));
        assert!(!first_answer(&[json!({"role": "user"}), json!({"role": "assistant"}), json!({"role": "user"})]));
    }
}
