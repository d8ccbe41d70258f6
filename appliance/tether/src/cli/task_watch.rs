//! `tether task watch ID`: a task followed live through its event stream
//! (`GET /api/v1/tasks/{id}/events`). What the task prints goes to stdout
//! as it is printed (progress lines left out); its states and progress go
//! to stderr — one line redrawn in place on a terminal, a line each
//! otherwise. With `--json`, every event is a JSON line on stdout instead.
//! A dropped connection is taken up again after the last event seen
//! (`Last-Event-ID`), so nothing is missed or shown twice. Exits as `task
//! get --wait` does: 0 when the task succeeded, 3 when it failed or was
//! cancelled.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::client::ApiClient;
use super::failure::ApiProblem;

/// The longest wait between tries to take a dropped stream up again.
const MOST_BACKOFF: Duration = Duration::from_secs(10);

/// One server-sent event, as far as the watch needs it.
#[derive(Debug, Default, PartialEq)]
struct Sse {
    event: String,
    id: Option<u32>,
    data: String,
}

/// Splits a byte stream into events, keeping an incomplete one for later.
#[derive(Debug, Default)]
struct SseReader {
    pending: String,
}

impl SseReader {
    fn feed(&mut self, chunk: &[u8]) -> Vec<Sse> {
        self.pending.push_str(&String::from_utf8_lossy(chunk));
        let mut events = Vec::new();
        while let Some(end) = self.pending.find("\n\n") {
            let block: String = self.pending.drain(..end + 2).collect();
            let mut event = Sse::default();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event.event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    event.id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            // Comments (keep-alives) carry no event.
            if !event.event.is_empty() {
                events.push(event);
            }
        }
        events
    }
}

/// Shows the events as they come.
struct Display {
    json: bool,
    terminal: bool,
    state: String,
    /// The status line is drawn (on a terminal) and must be cleared first.
    drawn: bool,
}

impl Display {
    fn new(json: bool) -> Display {
        Display { json, terminal: std::io::stderr().is_terminal(), state: String::new(), drawn: false }
    }

    /// Shows one event; returns the final state once the task has one.
    fn show(&mut self, event: &Value) -> Option<String> {
        if self.json {
            println!("{event}");
        }
        let kind = event["type"].as_str().unwrap_or_default();
        match kind {
            "state" => {
                self.state = event["state"].as_str().unwrap_or("?").to_owned();
                if !self.json {
                    let attempt = event["attempt"].as_u64().unwrap_or(0);
                    let line = match self.state.as_str() {
                        "leased" => format!("{} (attempt {attempt})", self.state),
                        other => other.to_owned(),
                    };
                    self.status(&line, true);
                }
                let last = ["succeeded", "failed", "cancelled"].contains(&self.state.as_str());
                return last.then(|| self.state.clone());
            }
            "progress" if !self.json => {
                let percent = event["percent"].as_u64();
                let message = event["message"].as_str().unwrap_or_default();
                let line = match percent {
                    Some(p) if self.terminal => format!("{} {p:>3}% {message}", bar(p)),
                    Some(p) => format!("progress {p}% {message}"),
                    None => format!("progress {message}"),
                };
                self.status(line.trim_end(), false);
            }
            "output" if !self.json => {
                let text = event["text"].as_str().unwrap_or_default();
                let shown: String = text.split_inclusive('\n').filter(|l| !l.starts_with("::progress ")).collect();
                self.clear();
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(shown.as_bytes());
                let _ = out.flush();
            }
            _ => {}
        }
        None
    }

    /// A state (kept on its own line) or progress (redrawn in place on a
    /// terminal) on stderr.
    fn status(&mut self, line: &str, keep: bool) {
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r{line}\x1b[K");
            if keep {
                let _ = writeln!(err);
            }
            self.drawn = !keep;
        } else {
            let _ = writeln!(err, "{line}");
        }
    }

    fn clear(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.drawn = false;
        }
    }
}

fn bar(percent: u64) -> String {
    let filled = (percent.min(100) / 5) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled))
}

pub async fn watch(id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let client = ApiClient::from_env(Duration::from_secs(30))?;
    let path = format!("/api/v1/tasks/{id}/events");
    let mut display = Display::new(json);
    let mut last: Option<u32> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        let resume = last.map(|seq| seq.to_string());
        let headers: Vec<(&str, &str)> = resume.iter().map(|s| ("last-event-id", s.as_str())).collect();
        let mut response = match client.open_stream(&path, &headers).await {
            Ok(response) => response,
            // The appliance said no (unknown task, no right to it): final.
            Err(e) if e.downcast_ref::<ApiProblem>().is_some() => return Err(e),
            Err(e) => {
                display.clear();
                eprintln!("{e:#}; trying again in {} s", backoff.as_secs_f32());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MOST_BACKOFF);
                continue;
            }
        };
        let mut reader = SseReader::default();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    display.clear();
                    eprintln!("the stream broke ({e}); taking it up again after event {}", last.map_or(-1, i64::from));
                    break;
                }
            };
            backoff = Duration::from_millis(250);
            for event in reader.feed(&chunk) {
                let value: Value = serde_json::from_str(&event.data).context("an event that is not JSON")?;
                last = event.id.or(last);
                if let Some(state) = display.show(&value) {
                    display.clear();
                    return Ok(if state == "succeeded" { ExitCode::SUCCESS } else { ExitCode::from(3) });
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_across_chunks_and_comments_are_skipped() {
        let mut reader = SseReader::default();
        assert!(reader.feed(b": keep-alive\n\nevent: progress\nid: 4\nda").is_empty());
        let events = reader.feed(b"ta: {\"type\":\"progress\"}\n\nevent: state\n");
        assert_eq!(events, [Sse { event: "progress".into(), id: Some(4), data: "{\"type\":\"progress\"}".into() }]);
        let events = reader.feed(b"id: 5\ndata: {}\n\n");
        assert_eq!(events, [Sse { event: "state".into(), id: Some(5), data: "{}".into() }]);
    }

    #[test]
    fn the_bar_fills_a_twentieth_per_five_percent() {
        assert_eq!(bar(0), "[....................]");
        assert_eq!(bar(42), "[########............]");
        assert_eq!(bar(100), "[####################]");
    }
}
