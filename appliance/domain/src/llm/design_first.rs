//! The design-first level's rule, enforced on the answer rather than asked
//! of the model: in the first answer of a conversation (no earlier
//! assistant turn) code blocks are withheld, streamed or not, in every
//! form CommonMark gives them ([`CodeFilter`]). A block's place is marked
//! so the reader knows something was held back.

use serde_json::Value;

/// What stands in for a withheld block.
pub const WITHHELD: &str = "[code withheld by the gateway: agree on the design first, then ask for the code]";

/// Whether the rule applies: no assistant turn yet in `messages`.
pub fn first_answer(messages: &[Value]) -> bool {
    !messages.iter().any(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
}

/// Removes code from text that arrives in pieces, whatever the cuts, in
/// every form CommonMark gives it:
///
/// - fenced blocks, opened by three or more backticks or tildes at a line's
///   start (up to three spaces in), closed by a line starting with at least
///   as many of the same character, or never (withheld to the end);
/// - indented blocks: lines indented four columns or more after a blank
///   line, until a line indented less;
/// - and, to be safe, a run of three or more backticks or tildes anywhere
///   else (a code span, or a fence inside a list item or a quote), withheld
///   until the same run closes it.
///
/// Inline code of one or two backticks is not withheld. Holds back only a
/// line's indentation and a run of backticks or tildes, until they show
/// what they are.
#[derive(Debug)]
pub struct CodeFilter {
    mode: Mode,
    /// Nothing but indentation seen on this line yet.
    line_start: bool,
    /// Columns of indentation at the start of this line (a tab reaches the next multiple of four).
    indent: usize,
    /// That indentation, held back until the line shows what it is.
    held: String,
    /// The line before was blank, or there was none: an indented block may start.
    after_blank: bool,
    /// A run of backticks or tildes not yet settled.
    run: Option<(char, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Text,
    Fence { ch: char, len: usize },
    Span { ch: char, len: usize },
    Indented,
}

impl Default for CodeFilter {
    fn default() -> CodeFilter {
        CodeFilter { mode: Mode::Text, line_start: true, indent: 0, held: String::new(), after_blank: true, run: None }
    }
}

/// Columns a code block is indented by, at least.
const CODE_INDENT: usize = 4;
/// A fence's run is at least this long.
const FENCE: usize = 3;

impl CodeFilter {
    /// The part of `text` that may be shown now.
    pub fn push(&mut self, text: &str) -> String {
        let mut out = String::new();
        for c in text.chars() {
            match self.run {
                Some((ch, n)) if ch == c => {
                    self.run = Some((ch, n + 1));
                    continue;
                }
                Some(_) => self.settle_run(&mut out),
                None => {}
            }
            if c == '`' || c == '~' {
                self.run = Some((c, 1));
            } else {
                self.step(c, &mut out);
            }
        }
        out
    }

    /// What is left at the end (a run that opened nothing, trailing blanks).
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        self.settle_run(&mut out);
        if self.mode == Mode::Text && self.line_start {
            out.push_str(&self.held);
        }
        self.held.clear();
        out
    }

    fn step(&mut self, c: char, out: &mut String) {
        if c == '\n' {
            let blank = self.line_start;
            if self.mode == Mode::Text {
                if blank {
                    out.push_str(&self.held);
                }
                out.push('\n');
            }
            self.after_blank = blank;
            self.line_start = true;
            self.indent = 0;
            self.held.clear();
            return;
        }
        if self.line_start && (c == ' ' || c == '\t') {
            self.indent = if c == '\t' { (self.indent / CODE_INDENT + 1) * CODE_INDENT } else { self.indent + 1 };
            self.held.push(c);
            return;
        }
        self.begin_line(out);
        if self.mode == Mode::Text {
            out.push(c);
        }
    }

    /// At the first thing on a line that is not indentation: an indented
    /// block starts, goes on or ends here.
    fn begin_line(&mut self, out: &mut String) {
        if !self.line_start {
            return;
        }
        self.line_start = false;
        let held = std::mem::take(&mut self.held);
        match self.mode {
            Mode::Text if self.indent >= CODE_INDENT && self.after_blank => {
                out.push_str(WITHHELD);
                self.mode = Mode::Indented;
            }
            Mode::Text => out.push_str(&held),
            Mode::Indented if self.indent < CODE_INDENT => {
                out.push('\n');
                out.push_str(&held);
                self.mode = Mode::Text;
            }
            Mode::Indented | Mode::Fence { .. } | Mode::Span { .. } => {}
        }
    }

    /// A run of backticks or tildes has ended: a fence or span opens or
    /// closes, or it was text.
    fn settle_run(&mut self, out: &mut String) {
        let Some((ch, n)) = self.run.take() else { return };
        let opens_a_line = self.line_start && self.indent < FENCE + 1;
        self.begin_line(out);
        match self.mode {
            Mode::Text if n >= FENCE => {
                out.push_str(WITHHELD);
                self.mode = if opens_a_line { Mode::Fence { ch, len: n } } else { Mode::Span { ch, len: n } };
            }
            Mode::Text => out.extend(std::iter::repeat_n(ch, n)),
            Mode::Fence { ch: open, len } if opens_a_line && ch == open && n >= len => self.mode = Mode::Text,
            Mode::Span { ch: open, len } if ch == open && n == len => self.mode = Mode::Text,
            Mode::Fence { .. } | Mode::Span { .. } | Mode::Indented => {}
        }
    }
}

/// Removes code blocks from a whole answer.
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
            let out = cut_every(text, size);
            assert_eq!(out, expected, "cut every {size} characters");
            assert!(!out.contains("print"));
        }
    }

    /// Through a filter fed `size` characters at a time.
    fn cut_every(text: &str, size: usize) -> String {
        let mut filter = CodeFilter::default();
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::new();
        for piece in chars.chunks(size) {
            out.push_str(&filter.push(&piece.iter().collect::<String>()));
        }
        out.push_str(&filter.finish());
        out
    }

    #[test]
    fn every_commonmark_form_of_code_is_withheld_whatever_the_cuts() {
        let cases = [
            // Tilde fences; a shorter run inside does not close one.
            ("Plan.\n~~~python\nrm_all()\n~~\nstill_code()\n~~~~\nAfter.", "Plan.\n{W}\nAfter."),
            // A backtick fence three spaces in, and its closing fence likewise.
            ("1. Steps:\n   ```sh\n   rm -rf /\n   ```\nOk.", "1. Steps:\n   {W}\nOk."),
            // An indented block after a blank line, with a blank line inside.
            ("Like this:\n\n    import os\n\n\tos.remove(x)\nThen.", "Like this:\n\n{W}\nThen."),
            // A fence inside a list item or a quote, deeper than a fence may be.
            (
                "- item\n      ```\n      code()\n      ```\n> ~~~\n> more()\n> ~~~\nEnd.",
                "- item\n      {W}\n> {W}\nEnd.",
            ),
            // A span of three backticks in a line.
            ("Run ```rm -rf /``` now.", "Run {W} now."),
        ];
        for (text, want) in cases {
            let want = want.replace("{W}", WITHHELD);
            for size in 1..=9 {
                let out = cut_every(text, size);
                assert_eq!(out, want, "{text:?} cut every {size}");
                for code in ["rm", "import", "code()", "more()", "still_code"] {
                    assert!(!out.contains(code), "{code} leaked from {text:?}");
                }
            }
        }
    }

    #[test]
    fn prose_that_only_looks_indented_is_shown() {
        // A paragraph's continuation line, indented, is not a code block;
        // nor is inline code, or a run of two tildes.
        let text = "A long sentence\n    that goes on here, with `x` and ~~old~~ text.\n";
        for size in 1..=5 {
            assert_eq!(cut_every(text, size), text);
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
