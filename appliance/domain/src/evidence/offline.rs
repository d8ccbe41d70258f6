//! Sealed exports, and verifying them anywhere, offline, with only the
//! appliance's audit public key: every record's hash, every link, every
//! signed checkpoint, and the export's seal, which vouches for the last
//! record so that a cut tail is found too. The first bad line is named.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::checkpoints::Signed;
use super::signing::{self, PublicKey, Purpose, SigningError};
use crate::audit::Record;
use crate::audit::chain::{GENESIS_PREV, chain_hash, export_range};
use crate::vault::Keys;
use tether_base::clock::Timestamp;
use tether_base::files::IoError;
use tether_store::ReadTx;

/// The last line of a sealed export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSeal {
    /// The last exported record.
    pub seq: u64,
    pub hash: String,
    pub signature: String,
    pub key_id: String,
    pub exported_at: String,
}

/// The line that ends a sealed export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealLine {
    pub export_seal: ExportSeal,
}

/// What a good export held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub checkpoints: u64,
    pub key_id: String,
    /// What the first record links to, and the last record's hash: how
    /// consecutive files (archive segments, then an export) are chained.
    pub first_prev_hash: Option<String>,
    pub last_hash: Option<String>,
}

/// The first problem, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("line {line}{}: {reason}", seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
pub struct Bad {
    pub line: usize,
    pub seq: Option<u64>,
    pub reason: String,
}

/// Writes records `from..` as JSON lines, then the seal: the last record's
/// seq and hash signed with the audit key. Returns how many records.
pub fn export_sealed(
    tx: &ReadTx,
    keys: &Keys,
    from: u64,
    now: Timestamp,
    out: &mut impl Write,
) -> Result<u64, SigningError> {
    export_range_sealed(tx, keys, from, u64::MAX, now, out)
}

/// [`export_sealed`] for records `from..=through` (an archive segment).
pub fn export_range_sealed(
    tx: &ReadTx,
    keys: &Keys,
    from: u64,
    through: u64,
    now: Timestamp,
    out: &mut impl Write,
) -> Result<u64, SigningError> {
    let (written, last) = export_range(tx, from, through, out)?;
    if let Some(last) = last {
        let (signature, key_id) = signing::sign(tx, keys, Purpose::ExportSeal, last.seq, &last.hash)?;
        let seal = SealLine {
            export_seal: ExportSeal {
                seq: last.seq,
                hash: hex::encode(last.hash),
                signature,
                key_id,
                exported_at: now.to_rfc3339(),
            },
        };
        let mut line = serde_json::to_vec(&seal).map_err(|_| SigningError::BadKey)?;
        line.push(b'\n');
        out.write_all(&line).map_err(|e| tether_store::Error::from(IoError::new("write the audit export", e)))?;
    }
    Ok(written)
}

/// Checks files that continue one another (archive segments in order, then
/// a current export): each on its own, and each linking to the one before.
/// The problem names the file (1-based) and where in it.
pub fn verify_files(texts: &[&str], key: &PublicKey) -> Result<Vec<Summary>, (usize, Bad)> {
    let mut summaries: Vec<Summary> = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let summary = verify_export(text, key).map_err(|bad| (i + 1, bad))?;
        if let Some(before) = summaries.last() {
            let continues =
                summary.first_seq == before.last_seq.map(|s| s + 1) && summary.first_prev_hash == before.last_hash;
            if !continues {
                let bad = Bad {
                    line: 1,
                    seq: summary.first_seq,
                    reason: format!(
                        "does not continue file {i}: records are missing between them or they were reordered"
                    ),
                };
                return Err((i + 1, bad));
            }
        }
        summaries.push(summary);
    }
    Ok(summaries)
}

/// Whether verified exports hold the record a signed checkpoint vouches
/// for, with the hash it signed: the log an auditor pinned earlier was not
/// rewritten up to there since. Says what disagrees if not.
pub fn agrees_with(texts: &[&str], checkpoint: &Signed) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    let covered = texts.iter().flat_map(|t| t.lines()).filter_map(split_hash).find_map(|(canonical, hash)| {
        let seq = serde_json::from_str::<Seq>(&canonical).ok()?.seq;
        (seq == checkpoint.covers_seq).then_some(hash)
    });
    match covered {
        Some(hash) if hex::encode(hash) == checkpoint.covers_hash => Ok(()),
        Some(_) => Err(format!(
            "record {} differs from the one the checkpoint signed: the log was rewritten at or before it",
            checkpoint.covers_seq
        )),
        None => Err(format!(
            "the exports do not hold record {}, which the checkpoint covers; export from a seq at or before it",
            checkpoint.covers_seq
        )),
    }
}

/// The suffix `export_jsonl` puts after a record's canonical JSON.
fn split_hash(line: &str) -> Option<(String, [u8; 32])> {
    let body = line.strip_suffix("\"}")?;
    let (canonical, hash_hex) = body.rsplit_once(",\"hash\":\"")?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hash_hex, &mut hash).ok()?;
    Some((format!("{canonical}}}"), hash))
}

/// Checks a JSON-lines export made by `GET /api/v1/audit/export`.
pub fn verify_export(text: &str, key: &PublicKey) -> Result<Summary, Bad> {
    let mut summary = Summary {
        records: 0,
        first_seq: None,
        last_seq: None,
        checkpoints: 0,
        key_id: key.id(),
        first_prev_hash: None,
        last_hash: None,
    };
    let mut prev: Option<(u64, [u8; 32])> = None;
    // Hashes seen, by seq, for checkpoints to compare with.
    let mut seen: std::collections::HashMap<u64, [u8; 32]> = std::collections::HashMap::new();
    let mut sealed = false;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    for (index, line) in lines.iter().enumerate() {
        let n = index + 1;
        let bad = |seq: Option<u64>, reason: &str| Bad { line: n, seq, reason: reason.to_owned() };
        if sealed {
            return Err(bad(None, "lines follow the export's seal: records were appended after it was sealed"));
        }
        if line.starts_with("{\"export_seal\"") {
            let seal: SealLine = serde_json::from_str(line).map_err(|_| bad(None, "the export seal does not parse"))?;
            let seal = seal.export_seal;
            let Some((last_seq, last_hash)) = prev else {
                return Err(bad(None, "the export seal covers no record"));
            };
            if seal.seq != last_seq || seal.hash != hex::encode(last_hash) {
                return Err(bad(
                    Some(seal.seq),
                    &format!(
                        "the export was sealed at seq {} but ends at seq {last_seq}: records were cut or added",
                        seal.seq
                    ),
                ));
            }
            if !key.verifies(Purpose::ExportSeal, seal.seq, &last_hash, &seal.signature) {
                return Err(bad(Some(seal.seq), "the export seal's signature does not verify with this public key"));
            }
            sealed = true;
            continue;
        }
        let (canonical, hash) = split_hash(line).ok_or_else(|| bad(None, "not an audit record line"))?;
        let record: Record = serde_json::from_str(&canonical).map_err(|_| bad(None, "the record does not parse"))?;
        let seq = Some(record.seq);
        let expected_prev = match prev {
            Some((p, _)) if record.seq != p + 1 => {
                return Err(bad(
                    seq,
                    &format!("expected seq {} after seq {p}: a record is missing, repeated or out of order", p + 1),
                ));
            }
            Some((_, h)) => Some(h),
            // The first line of an export from seq 0 links to the genesis;
            // a later start (an export `from` a seq) links to what it names.
            None if record.seq == 0 => Some(GENESIS_PREV),
            None => None,
        };
        let mut prev_hash = [0u8; 32];
        if hex::decode_to_slice(&record.prev_hash, &mut prev_hash).is_err() {
            return Err(bad(seq, "prev_hash is not a hash"));
        }
        if expected_prev.is_some_and(|e| e != prev_hash) {
            return Err(bad(seq, "prev_hash does not match the previous record: the chain is broken here"));
        }
        if chain_hash(&prev_hash, canonical.as_bytes()) != hash {
            return Err(bad(seq, "the record's contents do not match its hash: it was altered"));
        }
        if record.event_type == super::checkpoints::EVENT {
            let (covers, covered_hash, signature) = super::checkpoints::read_details(&record)
                .ok_or_else(|| bad(seq, "a checkpoint record without its seq, hash and signature"))?;
            if !key.verifies(Purpose::Checkpoint, covers, &covered_hash, &signature) {
                return Err(bad(seq, "the checkpoint's signature does not verify with this public key"));
            }
            if let Some(h) = seen.get(&covers)
                && *h != covered_hash
            {
                return Err(bad(
                    seq,
                    &format!(
                        "the signed checkpoint for seq {covers} does not match the chain: a record at or before seq {covers} was altered"
                    ),
                ));
            }
            summary.checkpoints += 1;
        }
        seen.insert(record.seq, hash);
        summary.first_prev_hash.get_or_insert_with(|| record.prev_hash.clone());
        summary.last_hash = Some(hex::encode(hash));
        summary.first_seq.get_or_insert(record.seq);
        summary.last_seq = Some(record.seq);
        summary.records += 1;
        prev = Some((record.seq, hash));
    }
    if !sealed {
        return Err(Bad {
            line: lines.len() + 1,
            seq: prev.map(|(s, _)| s + 1),
            reason: "the export has no seal at its end: records may have been cut off the end".into(),
        });
    }
    Ok(summary)
}
