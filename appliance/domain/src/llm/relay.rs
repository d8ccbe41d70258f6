//! Relaying a model server's answer to the client as it arrives: a whole
//! answer read up to a cap, a stream unit by unit (an OpenAI event, an
//! Ollama line), passed through or translated, with code withheld where
//! design-first asks, and the tokens counted for the call's record.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::call::{InFlight, Record};
use super::design_first;
use super::prompt_log;
use super::wire::{self, Piece, Protocol, Shape, Usage};

/// How long a model server may take to start answering, and then to send
/// each next piece: a generation may run for many minutes, but a server
/// silent this long is taken for gone.
pub(super) const QUIET_TIMEOUT: Duration = Duration::from_secs(300);
/// A non-streamed answer larger than this is refused.
pub(super) const MAX_ANSWER_BYTES: usize = 32 << 20;

/// The next piece of an answer; `Err` when the connection broke or the
/// server went quiet for [`QUIET_TIMEOUT`].
pub(super) async fn next_chunk(response: &mut reqwest::Response) -> Result<Option<Bytes>, String> {
    match tokio::time::timeout(QUIET_TIMEOUT, response.chunk()).await {
        Ok(Ok(chunk)) => Ok(chunk),
        Ok(Err(e)) => Err(tether_base::tls::error_chain(&e)),
        Err(_) => Err(format!("nothing for {} s", QUIET_TIMEOUT.as_secs())),
    }
}

pub(super) async fn read_capped(mut response: reqwest::Response) -> Result<Bytes, String> {
    let mut out = Vec::new();
    while let Some(chunk) = next_chunk(&mut response).await? {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(Bytes::from(out))
}

/// How a stream is relayed: from the upstream's protocol to the client's.
pub(super) struct RelayPlan {
    pub(super) from: Protocol,
    pub(super) to: Protocol,
    pub(super) shape: Shape,
    pub(super) writer: wire::StreamWriter,
    pub(super) client_wants_usage: bool,
    /// Set: fenced code is withheld from the text (design-first).
    pub(super) code_filter: Option<design_first::CodeFilter>,
}

/// Relays a streamed answer as each unit (an event, a line) completes:
/// passed through when both sides speak the same protocol (the usage event
/// the gateway asked an OpenAI upstream for is read and, unless the client
/// asked for it too, dropped), translated otherwise or when code is to be
/// withheld from the text. A client that goes
/// away drops the receiver; the next send fails and the upstream response
/// is dropped with it, which closes the upstream connection and so cancels
/// the generation.
pub(super) async fn relay(
    mut response: reqwest::Response,
    tx: mpsc::Sender<Bytes>,
    mut plan: RelayPlan,
    record: Record,
    _in_flight: InFlight,
) {
    let mut pending = Vec::new();
    let mut reader = wire::StreamReader::new(plan.shape);
    let mut usage = Usage::default();
    // Whether the upstream gave its count; if not (the client or the
    // upstream went away before the end), what was streamed is charged.
    let mut counted = false;
    let mut text_units = 0u64;
    let mut status = 200;
    // What the client received, for a key that logs prompts.
    let mut sent: Option<Vec<u8>> = record.logged_request.as_ref().map(|_| Vec::new());
    'relay: loop {
        let chunk = match next_chunk(&mut response).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(upstream = %record.upstream, error = %e, "upstream stream broke");
                status = 502;
                let _ = tx.send(Bytes::from(stream_error(plan.to, "the model server stopped answering"))).await;
                break;
            }
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = unit_end(plan.from, &pending) {
            let unit: Vec<u8> = pending.drain(..end).collect();
            let Some(data) = unit_data(plan.from, &unit) else { continue };
            let out = if plan.from == plan.to && plan.code_filter.is_none() {
                let parsed = serde_json::from_str::<Value>(data).ok();
                if parsed.as_ref().is_some_and(|v| wire::carries_text(plan.from, plan.shape, v)) {
                    text_units += 1;
                }
                if let Some(count) = parsed.as_ref().and_then(|v| wire::usage_of(plan.from, v)) {
                    usage = count;
                    counted = true;
                    let usage_only = parsed
                        .as_ref()
                        .and_then(|v| v.get("choices"))
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty);
                    if plan.from == Protocol::OpenAi && usage_only && !plan.client_wants_usage {
                        continue;
                    }
                }
                unit
            } else {
                let mut out = Vec::new();
                for piece in reader.read(plan.from, data) {
                    match &piece {
                        Piece::Done { usage: Some(count), .. } => {
                            usage = *count;
                            counted = true;
                        }
                        Piece::Text(_) => text_units += 1,
                        Piece::ToolCalls(_) | Piece::Done { usage: None, .. } => {}
                    }
                    for piece in filtered(&mut plan.code_filter, piece) {
                        out.extend(plan.writer.write(&piece));
                    }
                }
                out
            };
            if let Some(sent) = sent.as_mut().filter(|s| s.len() < prompt_log::MAX_LOGGED_BYTES) {
                sent.extend_from_slice(&out);
            }
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                status = 499; // the client went away: the upstream call is dropped below
                break 'relay;
            }
        }
    }
    drop(response);
    if !counted {
        usage = Usage { prompt_tokens: record.prompt_estimate, completion_tokens: text_units };
    }
    if let Err(e) = record.write(status, usage, sent.as_deref()).await {
        tracing::error!(error = %e, "the audit record of a streamed request could not be written");
    }
}

/// A piece with fenced code taken out of its text (when `filter` is set);
/// the end flushes what the filter held back. Tool calls are the client's
/// to run or not: they pass.
fn filtered(filter: &mut Option<design_first::CodeFilter>, piece: Piece) -> Vec<Piece> {
    let Some(filter) = filter else { return vec![piece] };
    let text = match &piece {
        Piece::Text(text) => filter.push(text),
        Piece::ToolCalls(_) => return vec![piece],
        Piece::Done { .. } => filter.finish(),
    };
    let mut pieces = Vec::new();
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    if matches!(piece, Piece::Done { .. }) {
        pieces.push(piece);
    }
    pieces
}

/// An error that ends a stream, in the client's protocol.
fn stream_error(protocol: Protocol, message: &str) -> String {
    match protocol {
        Protocol::OpenAi => {
            let error = json!({"error": {"message": message, "type": "upstream_error", "code": "upstream_failed"}});
            format!("data: {error}\n\n")
        }
        Protocol::Ollama => format!("{}\n", json!({"error": message})),
    }
}

/// The end (exclusive) of the first complete unit in `buf`: an event for
/// OpenAI's server-sent events, a line for Ollama's JSON lines.
fn unit_end(protocol: Protocol, buf: &[u8]) -> Option<usize> {
    match protocol {
        Protocol::OpenAi => find_event_end(buf),
        Protocol::Ollama => buf.iter().position(|b| *b == b'\n').map(|i| i + 1),
    }
}

/// A unit's payload: an event's `data:` (with `[DONE]`), a line's JSON.
fn unit_data(protocol: Protocol, unit: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(unit).ok()?;
    let data = match protocol {
        Protocol::OpenAi => text.lines().find_map(|line| line.strip_prefix("data:"))?,
        Protocol::Ollama => text,
    };
    Some(data.trim()).filter(|d| !d.is_empty())
}

/// The end (exclusive) of the first complete event in `buf`: events end
/// with a blank line (`\n\n`, or `\r\n\r\n`).
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_whatever_the_line_ending() {
        assert_eq!(find_event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(find_event_end(b"data: a\r\n\r\n"), Some(11));
        assert_eq!(find_event_end(b"data: a\n"), None);
        assert_eq!(unit_data(Protocol::OpenAi, b"data: {\"x\":1}\n\n"), Some("{\"x\":1}"));
        assert_eq!(unit_data(Protocol::OpenAi, b"data: [DONE]\n\n"), Some("[DONE]"));
        assert_eq!(unit_end(Protocol::Ollama, b"{\"a\":1}\n{"), Some(8));
        assert_eq!(unit_data(Protocol::Ollama, b"{\"a\":1}\n"), Some("{\"a\":1}"));
    }
}
