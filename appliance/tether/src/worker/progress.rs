//! What a running command tells the appliance as it goes: every line it
//! prints is output, and a line `::progress <0-100> [message]` is also its
//! progress. Lines are gathered for a moment and sent in one report
//! (`POST /worker/v1/tasks/{id}/progress`), printed output first, so a
//! command printing thousands of lines makes a few requests a second.
//! Reports are best effort: the task's result still carries all it
//! printed, and a lost report only thins the live view.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::client::{BrokerClient, CallError};
use tether_wire::ProgressRequest;

/// How long lines gather before they go.
const GATHER: Duration = Duration::from_millis(200);
/// Output one report carries at most (well under the appliance's bound).
const MAX_BATCH_OUTPUT: usize = 64 * 1024;
/// Lines in flight between the command and the sender.
const DEPTH: usize = 256;
/// What marks a progress line.
const MARK: &str = "::progress ";

/// One line a command printed, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Output(String),
    /// A progress line (it is output too).
    Progress {
        line: String,
        percent: u8,
        message: Option<String>,
    },
}

/// Reads a printed line: `::progress 40 compiling` is progress at 40 % with
/// the message "compiling"; a mark with no valid percentage is plain output.
pub fn read_line(line: &str) -> Line {
    let progress = line.strip_prefix(MARK).and_then(|rest| {
        let rest = rest.trim_end_matches(['\n', '\r']);
        let (percent, message) = rest.split_once(' ').unwrap_or((rest, ""));
        let percent: u8 = percent.parse().ok().filter(|p| *p <= 100)?;
        let message = message.trim();
        Some((percent, (!message.is_empty()).then(|| message.to_owned())))
    });
    match progress {
        Some((percent, message)) => Line::Progress { line: line.to_owned(), percent, message },
        None => Line::Output(line.to_owned()),
    }
}

/// Where a command's lines go; `none()` where nobody follows them.
#[derive(Debug, Clone)]
pub struct Reports(Option<mpsc::Sender<Line>>);

impl Reports {
    pub fn none() -> Reports {
        Reports(None)
    }

    /// Hands one printed line on (waiting if the sender is behind).
    pub async fn line(&self, bytes: &[u8]) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(read_line(&String::from_utf8_lossy(bytes))).await;
        }
    }
}

/// The reports of one task, and the sender that takes them to the
/// appliance; it ends, having sent everything, once every [`Reports`]
/// handle is dropped.
pub fn start(
    clients: watch::Receiver<BrokerClient>,
    task: String,
    lease: String,
) -> (Reports, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(DEPTH);
    (Reports(Some(tx)), tokio::spawn(send(rx, clients, task, lease)))
}

#[derive(Default)]
struct Batch {
    output: String,
    percent: Option<u8>,
    message: Option<String>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.output.is_empty() && self.percent.is_none()
    }

    /// Whether `line` would have to go after this batch's progress, or
    /// make its output too long: then the batch goes first.
    fn full_for(&self, line: &Line) -> bool {
        let text = match line {
            Line::Output(text) | Line::Progress { line: text, .. } => text,
        };
        self.percent.is_some() || self.output.len() + text.len() > MAX_BATCH_OUTPUT
    }

    fn add(&mut self, line: Line) {
        match line {
            Line::Output(text) => self.output.push_str(&text),
            Line::Progress { line, percent, message } => {
                self.output.push_str(&line);
                self.percent = Some(percent);
                self.message = message;
            }
        }
    }
}

async fn send(mut lines: mpsc::Receiver<Line>, clients: watch::Receiver<BrokerClient>, task: String, lease: String) {
    let to = Destination { clients, task, lease };
    let mut batch = Batch::default();
    // Once the appliance keeps no more output for this task, only progress goes.
    let mut output_full = false;
    loop {
        let line = if batch.is_empty() {
            lines.recv().await
        } else {
            match tokio::time::timeout(GATHER, lines.recv()).await {
                Ok(line) => line,
                Err(_) => {
                    output_full = to.post(std::mem::take(&mut batch), output_full).await;
                    continue;
                }
            }
        };
        let Some(line) = line else { break };
        if !batch.is_empty() && batch.full_for(&line) {
            output_full = to.post(std::mem::take(&mut batch), output_full).await;
        }
        batch.add(line);
    }
    to.post(batch, output_full).await;
}

struct Destination {
    clients: watch::Receiver<BrokerClient>,
    task: String,
    lease: String,
}

impl Destination {
    /// Sends one report (its output left out once `output_full`); returns
    /// whether the appliance keeps no more output for the task.
    async fn post(&self, batch: Batch, output_full: bool) -> bool {
        let output = (!output_full && !batch.output.is_empty()).then_some(batch.output);
        if output.is_none() && batch.percent.is_none() {
            return output_full;
        }
        let request =
            ProgressRequest { lease_id: self.lease.clone(), percent: batch.percent, message: batch.message, output };
        let client = self.clients.borrow().clone();
        match client.progress(&self.task, &request).await {
            Ok(_) => output_full,
            Err(CallError::Refused { code, .. }) if code == "task_events_full" => {
                tracing::warn!(task = %self.task, "the appliance keeps no more of this task's output; sending progress only");
                true
            }
            Err(e) => {
                tracing::debug!(task = %self.task, error = %e, "a progress report was not delivered");
                output_full
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_needs_the_mark_and_a_percentage_from_0_to_100() {
        let progress = |percent, message: Option<&str>, line: &str| Line::Progress {
            line: line.into(),
            percent,
            message: message.map(str::to_owned),
        };
        assert_eq!(
            read_line("::progress 40 compiling units\n"),
            progress(40, Some("compiling units"), "::progress 40 compiling units\n")
        );
        assert_eq!(read_line("::progress 100\n"), progress(100, None, "::progress 100\n"));
        for plain in ["::progress 101 too far\n", "::progress x\n", "progress 5\n", " ::progress 5\n", "::progress\n"] {
            assert_eq!(read_line(plain), Line::Output(plain.into()), "{plain:?}");
        }
    }

    #[test]
    fn a_batch_ends_at_its_progress_line_or_when_its_output_is_long() {
        let mut batch = Batch::default();
        batch.add(Line::Output("a\n".into()));
        assert!(!batch.full_for(&Line::Output("b\n".into())));
        batch.add(read_line("::progress 5 x\n"));
        assert!(batch.full_for(&Line::Output("c\n".into())), "output after a progress line goes in the next report");
        let mut long = Batch::default();
        long.add(Line::Output("x".repeat(MAX_BATCH_OUTPUT - 1)));
        assert!(long.full_for(&Line::Output("yy".into())));
    }
}
