//! Backups: a consistent snapshot of a running appliance in one file, and
//! its restore into a data directory.
//!
//! The file is the store's records as they are, so every sensitive value in
//! it is still sealed under the appliance's keys; the one file that is not
//! in the store, the server's TLS key, is sealed for the backup. Layout:
//!
//! ```text
//! MAGIC | u32 header length | header (JSON) | frames … | END
//!       | SHA-256 of everything before | HMAC of that digest (root-derived key)
//! ```
//!
//! A frame is a store record (`R`, table, key, value) or a data-directory
//! file (`F`, name, content), each field length-prefixed. The checksum finds
//! damage without any key; the HMAC, checked once the backup's keys are
//! open, finds tampering.
//!
//! Every backup advances the appliance's **epoch**: a counter kept in the
//! store with an HMAC under the root key, and audited. A restore compares
//! the backup's epoch with the directory it replaces; an older backup is a
//! rollback and needs a security officer's explicit consent.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::audit::{self, Event, Origin, Resource};
use crate::pki::{CA_CERT, SERVER_CERT, SERVER_KEY};
use crate::vault::{self, Credential, Keys, Place, Sealed};
use tether_base::clock::Timestamp;
use tether_base::files::IoError;
use tether_store::{self as store, Collection, RawRecord, ReadTx, Store, WriteTx};

const MAGIC: &[u8; 16] = b"tether-backup-1\n";
const FORMAT: u32 = 1;
const RECORD: u8 = b'R';
const FILE: u8 = b'F';
const END: u8 = b'E';
const DIGEST_LEN: usize = 32;

const EPOCH: Collection<EpochRecord> = Collection::new("backup_epoch");
const EPOCH_KEY: &[u8] = b"epoch";
const MAC_PURPOSE: &str = "backup file";
const EPOCH_PURPOSE: &str = "backup epoch";

/// The data-directory files a backup carries besides the store.
pub const FILES: [&str; 3] = [CA_CERT, SERVER_CERT, SERVER_KEY];
const SEALED_FILES: &str = "backup_files";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct EpochRecord {
    epoch: u64,
    mac: [u8; 32],
}

/// What a backup says about itself (readable without any key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub created_at: String,
    pub epoch: u64,
    /// The audit chain's head in the snapshot.
    pub audit_seq: Option<u64>,
    pub audit_hash: Option<String>,
    pub records: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the backup file is damaged or not a tether backup: {0}")]
    Damaged(&'static str),
    #[error("the backup file is damaged or not a tether backup: its header does not parse: {0}")]
    HeaderUnreadable(#[source] serde_json::Error),
    #[error("this backup is format {0}, which this build does not read")]
    UnknownFormat(u32),
    #[error("the backup's header could not be written: {0}")]
    HeaderUnwritable(#[source] serde_json::Error),
    #[error("the backup's contents were altered after it was made (its HMAC does not match)")]
    Tampered,
    #[error("the backup's epoch record does not verify: it was altered")]
    EpochTampered,
    #[error(
        "this backup (epoch {backup}) is older than the data directory it would replace (epoch {current}); restoring it rolls the appliance back. A security officer must confirm with --allow-rollback (and TETHER_TOKEN)"
    )]
    Rollback { backup: u64, current: u64 },
    #[error("--allow-rollback needs the token of a security officer of the appliance being replaced (TETHER_TOKEN)")]
    OfficerNeeded,
    #[error("the audit chain inside the backup does not verify: {0}")]
    AuditBroken(#[source] audit::VerifyError),
    #[error("this backup was not taken by this appliance (its HMAC does not verify under this appliance's keys)")]
    NotOurs,
    #[error(transparent)]
    Vault(#[from] vault::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl From<audit::VerifyError> for Error {
    fn from(e: audit::VerifyError) -> Self {
        match e {
            audit::VerifyError::Store(e) => Error::Store(e),
            broken @ (audit::VerifyError::ChainBroken { .. } | audit::VerifyError::HeadMismatch { .. }) => {
                Error::AuditBroken(broken)
            }
        }
    }
}

fn epoch_mac(keys: &Keys, epoch: u64) -> [u8; 32] {
    keys.digest(EPOCH_PURPOSE, &[&epoch.to_be_bytes()])
}

/// The store's epoch: 0 before the first backup.
pub fn epoch(tx: &ReadTx) -> Result<u64, store::Error> {
    Ok(tx.get(EPOCH, EPOCH_KEY)?.map_or(0, |r| r.epoch))
}

/// Whether the stored epoch carries its HMAC (a store never backed up has none).
fn epoch_verifies(tx: &ReadTx, keys: &Keys) -> Result<bool, store::Error> {
    Ok(tx.get(EPOCH, EPOCH_KEY)?.is_none_or(|r| tether_base::secret::digests_equal(&r.mac, &epoch_mac(keys, r.epoch))))
}

fn set_epoch(tx: &mut WriteTx<'_>, keys: &Keys, epoch: u64) -> Result<(), store::Error> {
    tx.put(EPOCH, EPOCH_KEY, &EpochRecord { epoch, mac: epoch_mac(keys, epoch) })
}

/// When the newest backup was taken (kept apart from the epoch record,
/// whose shape older stores share).
const NEWEST_BACKUP: Collection<Timestamp> = Collection::new("backup_newest");

/// When the newest backup was taken; `None` before the first (or before
/// this version recorded it).
pub fn newest(tx: &ReadTx) -> Result<Option<Timestamp>, store::Error> {
    tx.get(NEWEST_BACKUP, EPOCH_KEY)
}

/// Advances the epoch and audits the backup about to be taken.
pub fn begin(tx: &mut WriteTx<'_>, now: Timestamp, origin: &Origin, keys: &Keys) -> Result<u64, store::Error> {
    let next = tx.get(EPOCH, EPOCH_KEY)?.map_or(0, |r| r.epoch) + 1;
    set_epoch(tx, keys, next)?;
    tx.put(NEWEST_BACKUP, EPOCH_KEY, &now)?;
    let event = Event::new("backup.created", "backup", Resource::new("backup", next)).detail("epoch", next);
    audit::append(tx, now, origin, event)?;
    Ok(next)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A data-directory file for the backup.
#[derive(Debug)]
pub struct DataFile {
    pub name: &'static str,
    pub content: Zeroizing<Vec<u8>>,
}

/// Writes the backup of one read snapshot: every record, plus `files`
/// (the server key sealed). Call after [`begin`] committed.
fn write(tx: &ReadTx, keys: &Keys, now: Timestamp, files: &[DataFile]) -> Result<(Header, Vec<u8>), Error> {
    let mut body = Vec::new();
    let mut records = 0u64;
    tx.dump(|table, key, value| {
        body.push(RECORD);
        put_bytes(&mut body, table.as_bytes());
        put_bytes(&mut body, key);
        put_bytes(&mut body, value);
        records += 1;
        Ok(())
    })?;
    for f in files {
        body.push(FILE);
        put_bytes(&mut body, f.name.as_bytes());
        if f.name == SERVER_KEY {
            let sealed = keys.encrypt(Place::new(SEALED_FILES, f.name.as_bytes(), "content"), &f.content)?;
            put_bytes(&mut body, sealed.as_bytes());
        } else {
            put_bytes(&mut body, &f.content);
        }
    }
    body.push(END);
    let head = audit::head(tx)?;
    let header = Header {
        format: FORMAT,
        created_at: now.to_rfc3339(),
        epoch: epoch(tx)?,
        audit_seq: head.map(|h| h.seq),
        audit_hash: head.map(|h| hex::encode(h.hash)),
        records,
    };
    let header_json = serde_json::to_vec(&header).map_err(Error::HeaderUnwritable)?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header_json.len() + body.len() + 2 * DIGEST_LEN);
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, &header_json);
    out.extend_from_slice(&body);
    let checksum = tether_base::secret::sha256(&out);
    out.extend_from_slice(&checksum);
    out.extend_from_slice(&keys.digest(MAC_PURPOSE, &[&checksum]));
    Ok((header, out))
}

/// Takes a backup of a running appliance: advances the epoch (audited),
/// then writes one consistent snapshot with `files` beside it.
pub async fn take(
    store: &Store,
    keys: Keys,
    now: Timestamp,
    origin: Origin,
    files: Vec<DataFile>,
) -> Result<(Header, Vec<u8>), Error> {
    let for_epoch = keys.clone();
    store.write(move |tx| begin(tx, now, &origin, &for_epoch)).await?;
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.read(|tx| write(tx, &keys, now, &files)))
        .await
        .map_err(|_| Error::Damaged("the backup writer stopped"))?
}

/// A backup whose checksum, format, keys, HMAC, epoch and audit chain have
/// all been checked; it lives in memory until [`Verified::restore`].
pub struct Verified {
    pub header: Header,
    /// The file's checksum and HMAC: what [`Verified::proof`] shows.
    checksum: [u8; DIGEST_LEN],
    mac: [u8; DIGEST_LEN],
    records: Vec<RawRecord>,
    files: Vec<(String, Zeroizing<Vec<u8>>)>,
    keys: Keys,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified").field("header", &self.header).finish_non_exhaustive()
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.bytes.len() < n {
            return Err(Error::Damaged("it ends early"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn field(&mut self) -> Result<&'a [u8], Error> {
        let len = self.take(4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        self.take(len)
    }

    fn text(&mut self) -> Result<String, Error> {
        String::from_utf8(self.field()?.to_vec()).map_err(|_| Error::Damaged("a name is not UTF-8"))
    }
}

/// Checks the checksum and reads the header, without any key.
pub fn inspect(file: &[u8]) -> Result<Header, Error> {
    let (header, _, _) = parse_frame(file)?;
    Ok(header)
}

/// Splits a backup into header, the body after it, and the HMAC, checking
/// the magic and the checksum.
fn parse_frame(file: &[u8]) -> Result<(Header, &[u8], &[u8]), Error> {
    if file.len() < MAGIC.len() + 4 + 2 * DIGEST_LEN || !file.starts_with(MAGIC) {
        return Err(Error::Damaged("it does not start as a tether backup does"));
    }
    let (covered, trailer) = file.split_at(file.len() - 2 * DIGEST_LEN);
    let (checksum, mac) = trailer.split_at(DIGEST_LEN);
    if tether_base::secret::sha256(covered) != checksum {
        return Err(Error::Damaged("its checksum does not match (the file was truncated or corrupted)"));
    }
    let mut r = Reader { bytes: &covered[MAGIC.len()..] };
    let header: Header = serde_json::from_slice(r.field()?).map_err(Error::HeaderUnreadable)?;
    if header.format != FORMAT {
        return Err(Error::UnknownFormat(header.format));
    }
    Ok((header, r.bytes, mac))
}

/// Verifies `file` completely, in memory: checksum and format, that
/// `credentials` open its keys, its HMAC, its epoch record and its audit
/// chain. Nothing is written anywhere.
pub async fn verify(file: &[u8], credentials: Vec<Credential>) -> Result<Verified, Error> {
    let (header, body, mac) = parse_frame(file)?;
    let mut r = Reader { bytes: body };
    let (mut records, mut files) = (Vec::new(), Vec::new());
    loop {
        match r.byte()? {
            RECORD => {
                let table = r.text()?;
                let key = r.field()?.to_vec();
                records.push(RawRecord { table, key, value: r.field()?.to_vec() });
            }
            FILE => {
                let name = r.text()?;
                files.push((name, Zeroizing::new(r.field()?.to_vec())));
            }
            END if r.bytes.is_empty() => break,
            _ => return Err(Error::Damaged("a frame is malformed")),
        }
    }
    if records.len() as u64 != header.records {
        return Err(Error::Damaged("the header's record count does not match"));
    }
    let scratch = Store::load(None, &records)?;
    let keys = vault::open_offline(&scratch, credentials).await?;
    let checksum = &file[file.len() - 2 * DIGEST_LEN..file.len() - DIGEST_LEN];
    if !tether_base::secret::digests_equal(&keys.digest(MAC_PURPOSE, &[checksum]), mac) {
        return Err(Error::Tampered);
    }
    if !scratch.read(|tx| epoch_verifies(tx, &keys))? || scratch.read(epoch)? != header.epoch {
        return Err(Error::EpochTampered);
    }
    scratch.read(audit::verify).map_err(Error::from)?;
    for (name, content) in &mut files {
        if name == SERVER_KEY {
            let sealed = Sealed::from_bytes(content.to_vec());
            *content =
                Zeroizing::new(keys.decrypt(Place::new(SEALED_FILES, SERVER_KEY.as_bytes(), "content"), &sealed)?);
        }
    }
    let (mut checksum_bytes, mut mac_bytes) = ([0; DIGEST_LEN], [0; DIGEST_LEN]);
    checksum_bytes.copy_from_slice(checksum);
    mac_bytes.copy_from_slice(mac);
    Ok(Verified { header, checksum: checksum_bytes, mac: mac_bytes, records, files, keys })
}

/// A backup that was opened and restored into a scratch directory, as the
/// appliance that took it records: its epoch, its checksum and the HMAC
/// over that only this appliance's keys make (so the appliance knows the
/// backup is one of its own; the person reporting it is audited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreTest {
    pub epoch: u64,
    pub records: u64,
    /// Hex.
    pub checksum: String,
    /// Hex.
    pub mac: String,
}

impl Verified {
    /// What to report once this backup has been restored and checked.
    pub fn proof(&self) -> RestoreTest {
        RestoreTest {
            epoch: self.header.epoch,
            records: self.header.records,
            checksum: hex::encode(self.checksum),
            mac: hex::encode(self.mac),
        }
    }
}

/// When a restore was last tested.
const RESTORE_TESTED: Collection<Timestamp> = Collection::new("backup_restore_tested");

/// When a restore of one of this appliance's backups was last tested.
pub fn newest_restore_test(tx: &ReadTx) -> Result<Option<Timestamp>, store::Error> {
    tx.get(RESTORE_TESTED, EPOCH_KEY)
}

/// Records a tested restore of `test`, once its HMAC shows the backup is
/// one this appliance took, and audits it.
pub fn record_restore_test(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    keys: &Keys,
    test: &RestoreTest,
) -> Result<(), Error> {
    let (mut checksum, mut mac) = ([0u8; DIGEST_LEN], [0u8; DIGEST_LEN]);
    let parsed = hex::decode_to_slice(&test.checksum, &mut checksum).and(hex::decode_to_slice(&test.mac, &mut mac));
    if parsed.is_err() || !tether_base::secret::digests_equal(&keys.digest(MAC_PURPOSE, &[&checksum]), &mac) {
        return Err(Error::NotOurs);
    }
    if test.epoch == 0 || test.epoch > tx.get(EPOCH, EPOCH_KEY)?.map_or(0, |r| r.epoch) {
        return Err(Error::NotOurs);
    }
    tx.put(RESTORE_TESTED, EPOCH_KEY, &now)?;
    let event = Event::new("backup.restore_tested", "restore_test", Resource::new("backup", test.epoch))
        .detail("epoch", test.epoch)
        .detail("records", test.records);
    audit::append(tx, now, origin, event)?;
    Ok(())
}

/// Who consents to a rollback, checked against the store being replaced.
#[derive(Debug, Clone, Copy)]
pub enum Consent<'a> {
    None,
    /// `--allow-rollback`, with the officer's API token.
    Rollback {
        token: Option<&'a str>,
    },
}

/// What the restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub backup_epoch: u64,
    /// The epoch of the directory replaced, if there was one.
    pub replaced_epoch: Option<u64>,
    /// The epoch the restored appliance carries on with.
    pub epoch: u64,
    pub rollback: bool,
    pub records: u64,
    /// Where the replaced store was moved.
    pub replaced_store: Option<String>,
}

impl Verified {
    /// The backup's data-directory files, opened.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(n, c)| (n.as_str(), c.as_slice()))
    }

    /// Checks the backup against the store it would replace (`current`,
    /// if any): an older epoch is a rollback, allowed only with a security
    /// officer's consent. Returns the epoch replaced and the officer.
    pub fn check_against(
        &self,
        current: Option<&Store>,
        consent: Consent<'_>,
        now: Timestamp,
    ) -> Result<(Option<u64>, Option<String>), Error> {
        let Some(current) = current else {
            return Ok((None, None));
        };
        let replaced = current.read(epoch)?;
        if self.header.epoch >= replaced {
            return Ok((Some(replaced), None));
        }
        let Consent::Rollback { token: Some(token) } = consent else {
            return match consent {
                Consent::None => Err(Error::Rollback { backup: self.header.epoch, current: replaced }),
                Consent::Rollback { .. } => Err(Error::OfficerNeeded),
            };
        };
        match current.read(|tx| crate::auth::authenticate(tx, token, now))? {
            Ok(p) if p.role == crate::auth::Role::SecurityOfficer => {
                Ok((Some(replaced), Some(p.credential_id().to_owned())))
            }
            _ => Err(Error::OfficerNeeded),
        }
    }

    /// Writes the backup's store into `dir` (which must hold no store),
    /// with the epoch moved past both the backup's and the replaced one, and
    /// the restore audited in the restored chain.
    pub async fn write_store(
        &self,
        dir: &std::path::Path,
        now: Timestamp,
        replaced: Option<u64>,
        officer: Option<String>,
    ) -> Result<Restored, Error> {
        let store = Store::load(Some(dir), &self.records)?;
        let backup_epoch = self.header.epoch;
        let next = backup_epoch.max(replaced.unwrap_or(0)) + 1;
        let rollback = replaced.is_some_and(|r| r > backup_epoch);
        let keys = self.keys.clone();
        store
            .write(move |tx| {
                set_epoch(tx, &keys, next)?;
                let mut event = Event::new("backup.restored", "restore", Resource::new("backup", backup_epoch))
                    .detail("backup_epoch", backup_epoch)
                    .detail("epoch", next)
                    .detail("rollback", rollback);
                if let Some(r) = replaced {
                    event = event.detail("replaced_epoch", r);
                }
                if let Some(officer) = &officer {
                    event = event.detail("confirmed_by", officer);
                }
                audit::append(tx, now, &Origin::system(), event)?;
                Ok::<_, Error>(())
            })
            .await?;
        Ok(Restored {
            backup_epoch,
            replaced_epoch: replaced,
            epoch: next,
            rollback,
            records: self.header.records,
            replaced_store: None,
        })
    }
}

/// Why a restore into a data directory stopped. Nothing in the directory
/// changed unless the error says so.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Backup(#[from] Error),
    #[error("the data directory is in use: stop the appliance before restoring into it")]
    InUse,
    #[error(transparent)]
    Io(#[from] IoError),
}

impl From<store::Error> for RestoreError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::AlreadyOpen => RestoreError::InUse,
            other => RestoreError::Backup(Error::Store(other)),
        }
    }
}

fn io(what: &str, path: &std::path::Path) -> impl Fn(std::io::Error) -> RestoreError + use<> {
    let failed = IoError::on(what, path);
    move |e| RestoreError::Io(failed(e))
}

/// Restores a verified backup into `dir` (created if missing): checks it
/// against the store there (rollback needs `consent`), builds the new store
/// and files beside it, then moves each into place with an atomic rename,
/// so a crash leaves the old store or the new one. The replaced store is
/// kept as `tether.redb.replaced-epoch-N`.
pub async fn restore_into(
    verified: &Verified,
    dir: &std::path::Path,
    consent: Consent<'_>,
    now: Timestamp,
) -> Result<Restored, RestoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io("create", dir))?;
    let db = dir.join(store::DB_FILE);
    let current = if db.exists() { Some(Store::open(dir)?) } else { None };
    let (replaced, officer) = verified.check_against(current.as_ref(), consent, now)?;
    drop(current);

    let staging = dir.join(".restore-staging");
    tether_base::files::fresh_private_dir(&staging).map_err(io("prepare", &staging))?;
    let mut restored = verified.write_store(&staging, now, replaced, officer).await?;
    for (name, content) in verified.files() {
        let mode = if name == SERVER_KEY { 0o600 } else { 0o644 };
        tether_base::files::write_with_mode(&staging.join(name), content, mode)?;
    }
    if let Some(epoch) = replaced {
        let kept = dir.join(format!("{}.replaced-epoch-{epoch}", store::DB_FILE));
        std::fs::hard_link(&db, &kept).map_err(io("keep the replaced store as", &kept))?;
        restored.replaced_store = Some(kept.display().to_string());
    }
    for name in FILES.iter().copied().chain([store::DB_FILE]) {
        let from = staging.join(name);
        if from.exists() {
            std::fs::rename(&from, dir.join(name)).map_err(io("move into place", &from))?;
        }
    }
    tether_base::files::sync_dir(dir).map_err(io("sync", dir))?;
    std::fs::remove_dir_all(&staging).map_err(io("remove", &staging))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io("protect", dir))?;
    Ok(restored)
}

#[cfg(test)]
mod tests;
