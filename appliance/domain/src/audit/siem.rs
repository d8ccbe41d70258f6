//! The messages a SIEM sink sends: RFC 5424 syslog (the record's JSON as
//! the message, or CEF inside it) and RFC 5425 octet-counting framing.

use std::collections::BTreeMap;

use super::{Outcome, Record};

/// The SD-ID enterprise number: 32473 is reserved for documentation and
/// examples (RFC 5612); a site with its own number can map it in the SIEM.
const SD_ID: &str = "tether@32473";

/// Syslog severity for a record: failures and denials are warnings.
fn severity(record: &Record) -> u8 {
    match record.result {
        Outcome::Success => 6,
        Outcome::Failure | Outcome::Denied => 4,
    }
}

/// Facility 13, "log audit".
const FACILITY: u8 = 13;

fn sd_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace(']', "\\]")
}

fn printable_token(s: &str, max: usize) -> String {
    let t: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if t.is_empty() { "-".into() } else { t }
}

/// An RFC 5424 message about `record`: header, structured data (`sd_params`
/// inside the tether element), then `message`.
fn syslog_message(record: &Record, hostname: &str, sd_params: &str, message: &str) -> String {
    let pri = FACILITY * 8 + severity(record);
    format!(
        "<{pri}>1 {} {} tether - {} [{SD_ID} {sd_params}] {message}",
        record.timestamp,
        printable_token(hostname, 255),
        printable_token(&record.event_type, 32),
    )
}

/// One record as an RFC 5424 message: the record's JSON (with its hash) is
/// the message; seq and hash are structured data.
pub fn rfc5424(record: &Record, line: &str, hash_hex: &str, hostname: &str) -> String {
    let sd = format!("seq=\"{}\" hash=\"{}\"", record.seq, sd_escape(hash_hex));
    syslog_message(record, hostname, &sd, line.trim_end())
}

fn cef_header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|")
}

fn cef_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('=', "\\=").replace('\n', "\\n").replace('\r', "\\r")
}

/// One record as CEF inside an RFC 5424 message.
pub fn cef(record: &Record, hash_hex: &str, hostname: &str) -> String {
    let cef_severity = match record.result {
        Outcome::Success => 3,
        Outcome::Failure => 6,
        Outcome::Denied => 7,
    };
    let mut ext: BTreeMap<&str, String> = BTreeMap::new();
    ext.insert("rt", record.timestamp.clone());
    ext.insert("suser", record.actor.id.clone());
    ext.insert("act", record.action.clone());
    ext.insert("outcome", format!("{:?}", record.result).to_lowercase());
    ext.insert("cs1Label", "seq".into());
    ext.insert("cs1", record.seq.to_string());
    ext.insert("cs2Label", "hash".into());
    ext.insert("cs2", hash_hex.into());
    ext.insert("cs3Label", "resource".into());
    ext.insert("cs3", format!("{}:{}", record.resource.kind, record.resource.id));
    if let Some(ip) = &record.metadata.source_ip {
        ext.insert("src", ip.clone());
    }
    let ext: Vec<String> = ext.iter().map(|(k, v)| format!("{k}={}", cef_value(v))).collect();
    let body = format!(
        "CEF:0|Tether|tether|{}|{}|{}|{cef_severity}|{}",
        env!("CARGO_PKG_VERSION"),
        cef_header(&record.event_type),
        cef_header(&record.event_type),
        ext.join(" ")
    );
    syslog_message(record, hostname, &format!("seq=\"{}\"", record.seq), &body)
}

/// RFC 5425 octet-counting framing.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, Metadata, Resource};

    fn record(result: Outcome) -> Record {
        Record {
            seq: 42,
            timestamp: "2026-11-26T10:00:00.000Z".into(),
            event_type: "auth.login_failed".into(),
            actor: Actor::anonymous(),
            resource: Resource::new("user", "hmac:ab|c=d"),
            action: "login".into(),
            result,
            metadata: Metadata { source_ip: Some("10.0.0.9".into()), user_agent: None, details: BTreeMap::new() },
            prev_hash: "00".repeat(32),
        }
    }

    #[test]
    fn an_rfc_5424_message_carries_priority_seq_and_hash_and_frames_by_octet_count() {
        let r = record(Outcome::Failure);
        let m = rfc5424(&r, "{\"seq\":42}\n", "ab12", "tether.site.lan");
        assert_eq!(
            m,
            "<108>1 2026-11-26T10:00:00.000Z tether.site.lan tether - auth.login_failed [tether@32473 seq=\"42\" hash=\"ab12\"] {\"seq\":42}"
        );
        let framed = frame("héllo");
        assert_eq!(framed, b"6 h\xc3\xa9llo".to_vec(), "the count is in octets");
        assert!(rfc5424(&record(Outcome::Success), "x", "h", "t").starts_with("<110>1 "));
    }

    #[test]
    fn cef_escapes_its_separators() {
        let m = cef(&record(Outcome::Denied), "ab12", "t");
        let body = m.split("] ").nth(1).unwrap();
        assert!(body.starts_with("CEF:0|Tether|tether|"), "{body}");
        assert!(body.contains("|auth.login_failed|auth.login_failed|7|"), "{body}");
        assert!(body.contains("cs3=user:hmac:ab|c\\=d"), "'=' escaped in values: {body}");
        assert!(body.contains("cs1=42") && body.contains("src=10.0.0.9"), "{body}");
    }
}
