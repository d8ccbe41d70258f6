//! The embedded store: the only module that touches redb.
//!
//! Domain modules declare their own [`Collection`]s (a table name plus the
//! record type stored in it) and read or write them through [`ReadTx`] and
//! [`WriteTx`]. Values are encoded with postcard; keys are byte strings the
//! domain module lays out so that redb's ordering is the order it needs.
//!
//! All writes go through one group-commit writer ([`Store::write`]): a thread
//! takes every pending operation, applies them in one write transaction,
//! makes it durable (one fsync of the [`journal`], or a durable redb commit),
//! and only then answers each caller. A caller that got `Ok` therefore knows
//! its change survives `kill -9` and power loss.
//!
//! The rule every write operation keeps: **check everything before the first
//! write**. An operation that returns an error after it has written something
//! poisons its batch; the writer then aborts the whole batch and every caller
//! in it gets [`Error::BatchAborted`], so nothing half-done is ever committed.
//!
//! redb types never leave this module.

mod journal;
pub mod reserve;
mod writer;

use std::marker::PhantomData;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use journal::JOURNAL_FILE;
pub use writer::WriteTx;

/// The schema version this build writes; newer stores are refused rather
/// than misread. Version 1 is the broker core's, from before the vault: its
/// task records hold plaintext, and `tether upgrade` converts them (see
/// `tether_domain::upgrade`). Version 2 seals them.
pub const SCHEMA_VERSION: u32 = 2;

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "tether.redb";

const META: Collection<u64> = Collection::new("meta");
const SCHEMA_KEY: &[u8] = b"schema_version";
/// Which journal belongs to this database (see [`journal`]): a random
/// number, new for every store made by `create` or `load`.
const JOURNAL_ID: &[u8] = b"journal_id";
/// The last batch redb's state includes; replay starts after it.
const JOURNAL_SEQ: &[u8] = b"journal_seq";
/// When the health loop last proved the store commits (ms since the epoch).
const HEALTH_PROBE: &[u8] = b"health_probe";

use tether_base::Cause;

/// What went wrong in the store. Callers see situations, not redb's types;
/// a cause, where there is one, is the error's source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the system random source failed")]
    RandomFailed,
    #[error("the data directory is in use by another tether process")]
    AlreadyOpen,
    #[error("the store was written by a newer tether (schema {found}, this build knows {known})")]
    SchemaTooNew { found: u64, known: u32 },
    #[error("the store is not initialised (no schema version); run `tether init`")]
    NotInitialised,
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    #[error("storage failure: {0}")]
    Storage(#[source] Cause),
    /// A file of the store's, or one it writes records out to.
    #[error(transparent)]
    Io(#[from] tether_base::files::IoError),
    #[error("a stored record could not be decoded ({collection}): {source}")]
    Corrupt {
        collection: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error(
        "the journal does not follow on from the store: the store holds batches up to {applied}, the journal resumes at {resumes}"
    )]
    JournalGap { applied: u64, resumes: u64 },
    #[error("the write transaction could not commit")]
    CommitFailed,
    #[error("the write batch was aborted because another operation in it failed")]
    BatchAborted,
    #[error("the store writer has stopped")]
    WriterGone,
    /// A write could not be made durable (the disk is full or failing):
    /// every write fails at once until the store has reopened itself.
    #[error("the store cannot write (disk full or failing); writes resume once it can")]
    Degraded,
    /// A write refused on purpose by a test ([`Store::refuse_writes_to`]).
    /// Declared in every build, so that matches on this enum are the same
    /// in all of them; made only by builds with the `faults` feature.
    #[error("writes to {0} are refused (an injected fault)")]
    Injected(&'static str),
}

impl From<tether_base::secret::RandomFailed> for Error {
    fn from(_: tether_base::secret::RandomFailed) -> Self {
        Error::RandomFailed
    }
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Storage(Box::new(e))
}

/// A named table holding records of type `V`, keyed by bytes.
#[derive(Debug)]
pub struct Collection<V> {
    name: &'static str,
    _value: PhantomData<fn() -> V>,
}

impl<V> Clone for Collection<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V> Copy for Collection<V> {}

impl<V> Collection<V> {
    /// Declares a collection; the name is the table name on disk.
    pub const fn new(name: &'static str) -> Self {
        Collection { name, _value: PhantomData }
    }

    fn table(&self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.name)
    }
}

impl<V: DeserializeOwned> Collection<V> {
    fn decode(&self, bytes: &[u8]) -> Result<V, Error> {
        postcard::from_bytes(bytes).map_err(|source| Error::Corrupt { collection: self.name, source })
    }
}

fn encode<V: Serialize>(value: &V) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value).map_err(storage)
}

/// Which way a scan walks the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

/// See [`Store::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    pub operations: u64,
    pub commits: u64,
}

/// A handle on the open database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    // Field order matters: the writer is dropped (and its thread joined)
    // before the last reference to the database goes.
    writer: Arc<writer::Handle>,
    db: Arc<writer::DbSlot>,
}

impl Store {
    /// Creates a new store file and stamps it with the current schema version.
    pub fn create(dir: &Path) -> Result<Store, Error> {
        let db = open_db(&dir.join(DB_FILE))?;
        let txn = db.begin_write().map_err(storage)?;
        put_meta(&txn, SCHEMA_KEY, u64::from(SCHEMA_VERSION))?;
        txn.commit().map_err(storage)?;
        Store::start(db, Some(dir))
    }

    /// A store holding exactly `records` (a [`ReadTx::dump`]), in a new file
    /// in `dir`, or in memory when `dir` is `None` (to inspect a backup
    /// before anything is written). Its schema must be one this build reads.
    pub fn load(dir: Option<&Path>, records: &[RawRecord]) -> Result<Store, Error> {
        let db = match dir {
            Some(dir) => {
                let path = dir.join(DB_FILE);
                if path.exists() {
                    return Err(Error::Exists(path.to_path_buf()));
                }
                open_db(&path)?
            }
            None => redb::Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(storage)?,
        };
        let txn = db.begin_write().map_err(storage)?;
        // The records' journal position belongs to the store they came from;
        // this one starts its own.
        let journal_meta =
            |r: &RawRecord| r.table == META.name && [JOURNAL_ID, JOURNAL_SEQ].contains(&r.key.as_slice());
        for r in records.iter().filter(|r| !journal_meta(r)) {
            let mut table = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&r.table)).map_err(storage)?;
            table.insert(r.key.as_slice(), r.value.as_slice()).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        let store = Store::start(db, dir)?;
        store.check_schema()?;
        Ok(store)
    }

    /// Opens an existing store, migrating it to [`SCHEMA_VERSION`] if needed.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Err(Error::NotInitialised);
        }
        let db = open_db(&path)?;
        let store = Store::start(db, Some(dir))?;
        store.check_schema()?;
        Ok(store)
    }

    /// The schema version the store was written with (see [`SCHEMA_VERSION`]).
    pub fn schema_version(&self) -> Result<u64, Error> {
        self.check_schema()
    }

    /// Copies every table into a new store file in `dir`, in one transaction.
    /// The copy holds only live records: none of the freed pages in which the
    /// original file may still keep values that were since overwritten.
    pub fn copy_into(&self, dir: &Path) -> Result<(), Error> {
        let path = dir.join(DB_FILE);
        if path.exists() {
            return Err(Error::Exists(path.to_path_buf()));
        }
        let copy = open_db(&path)?;
        let txn = copy.begin_write().map_err(storage)?;
        let source = self.db.current()?.begin_read().map_err(storage)?;
        for handle in source.list_tables().map_err(storage)? {
            let definition = TableDefinition::<&[u8], &[u8]>::new(handle.name());
            let from = source.open_table(definition).map_err(storage)?;
            let mut to = txn.open_table(definition).map_err(storage)?;
            for entry in from.iter().map_err(storage)? {
                let (k, v) = entry.map_err(storage)?;
                to.insert(k.value(), v.value()).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    fn check_schema(&self) -> Result<u64, Error> {
        let found = self.read(|tx| tx.get(META, SCHEMA_KEY))?.ok_or(Error::NotInitialised)?;
        if found > u64::from(SCHEMA_VERSION) {
            return Err(Error::SchemaTooNew { found, known: SCHEMA_VERSION });
        }
        Ok(found)
    }

    /// Starts the writer; a store with a directory first applies what its
    /// journal holds beyond redb's file.
    fn start(db: redb::Database, dir: Option<&Path>) -> Result<Store, Error> {
        let durability = match dir {
            Some(dir) => recover(&db, dir)?,
            None => writer::Durability::in_memory(),
        };
        let db = Arc::new(writer::DbSlot::new(db, dir));
        let writer = Arc::new(writer::Handle::spawn(db.clone(), durability));
        Ok(Store { writer, db })
    }

    /// Whether writes are failing (the disk is full or failing) until the
    /// store has reopened itself.
    pub fn is_degraded(&self) -> bool {
        self.writer.is_degraded()
    }

    /// Makes every write to the collection named `collection` fail (with
    /// [`Error::Injected`]) until called again with `None`: how tests show
    /// that an operation whose audit record cannot be written fails whole.
    /// Only in builds with the `faults` feature, which nothing shipped has.
    #[cfg(feature = "faults")]
    pub fn refuse_writes_to(&self, collection: Option<&'static str>) {
        self.writer.refuse_writes_to(collection);
    }

    /// While the disk is low, make every batch a durable commit so that the
    /// file does not grow between checkpoints (slower, but it fits).
    pub fn set_frugal(&self, on: bool) {
        self.writer.set_frugal(on);
    }

    /// Write operations applied and durable commits made since opening: their
    /// ratio is how many operations each fsync carries.
    pub fn stats(&self) -> StoreStats {
        let (operations, commits) = self.writer.stats();
        StoreStats { operations, commits }
    }

    /// Runs `f` on a consistent read snapshot. `f` answers in the caller's
    /// own error type, as a write does.
    pub fn read<R, E: From<Error>>(&self, f: impl FnOnce(&ReadTx) -> Result<R, E>) -> Result<R, E> {
        let txn = self.db.current()?.begin_read().map_err(storage)?;
        f(&ReadTx { txn })
    }

    /// Queues `op` for the group-commit writer and waits until its batch is
    /// durably committed (or aborted). See the module docs for the rule `op`
    /// must keep.
    pub async fn write<R, E>(&self, op: impl FnOnce(&mut WriteTx<'_>) -> Result<R, E> + Send + 'static) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let answer = self.writer.enqueue(op)?;
        answer.await.map_err(|_| E::from(self.writer.gone()))?
    }

    /// One small durable write, answered once it is committed: the health
    /// loop's proof that the store still commits. On a disk that hangs it
    /// hangs too (that is the point); one that refuses writes answers at once.
    pub async fn prove_writable(&self, now_millis: u64) -> Result<(), Error> {
        self.write(move |tx| tx.put(META, HEALTH_PROBE, &now_millis)).await
    }

    /// Like [`Store::write`], for callers outside the async runtime.
    pub fn write_blocking<R, E>(
        &self,
        op: impl FnOnce(&mut WriteTx<'_>) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let answer = self.writer.enqueue(op)?;
        answer.blocking_recv().map_err(|_| E::from(self.writer.gone()))?
    }
}

/// Opens the journal beside `db` and applies, in one durable commit, the
/// batches it holds that redb's file does not (a crash came after they were
/// answered and before the next checkpoint).
fn recover(db: &redb::Database, dir: &Path) -> Result<writer::Durability, Error> {
    let (id, applied) = journal_position(db)?;
    let (journal, pending) = journal::Journal::open(dir, id, applied)?;
    let Some(last) = pending.last().map(|r| r.seq) else {
        return Ok(writer::Durability::journaled(journal, applied + 1));
    };
    let txn = db.begin_write().map_err(storage)?;
    for record in &pending {
        for change in &record.changes {
            let mut table = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(change.table())).map_err(storage)?;
            match change {
                journal::Change::Put { key, value, .. } => table.insert(key.as_slice(), value.as_slice()).map(drop),
                journal::Change::Delete { key, .. } => table.remove(key.as_slice()).map(drop),
            }
            .map_err(storage)?;
        }
    }
    put_meta(&txn, JOURNAL_SEQ, last)?;
    txn.commit().map_err(storage)?;
    tracing::info!(batches = pending.len(), through = last, "applied the store journal after an unclean stop");
    Ok(writer::Durability::journaled(journal, last + 1))
}

/// The store's journal id and the last batch its file holds; a store
/// without an id (new, or made before the journal) is given one now.
fn journal_position(db: &redb::Database) -> Result<(u64, u64), Error> {
    let read = |key| -> Result<Option<u64>, Error> {
        let txn = db.begin_read().map_err(storage)?;
        match open_read(&txn, META)? {
            Some(table) => get_in(&table, META, key),
            None => Ok(None),
        }
    };
    if let Some(id) = read(JOURNAL_ID)? {
        return Ok((id, read(JOURNAL_SEQ)?.unwrap_or(0)));
    }
    let id = fastrand::u64(1..);
    let txn = db.begin_write().map_err(storage)?;
    put_meta(&txn, JOURNAL_ID, id)?;
    put_meta(&txn, JOURNAL_SEQ, 0)?;
    txn.commit().map_err(storage)?;
    Ok((id, 0))
}

/// Writes a `meta` value in a transaction outside the writer (creating,
/// recovering, checkpointing).
fn put_meta(txn: &redb::WriteTransaction, key: &[u8], value: u64) -> Result<(), Error> {
    let mut meta = txn.open_table(META.table()).map_err(storage)?;
    meta.insert(key, encode(&value)?.as_slice()).map_err(storage)?;
    Ok(())
}

/// The most of the file redb keeps in memory. Its default (1 GiB) let the
/// appliance's memory grow with everything ever written, a flood of audit
/// records included (measured: 19 MiB at start, 165 MiB after an attack).
/// The hot set (queue, leases, tokens, the chain head) is a small part of it.
pub const CACHE_BYTES: usize = 32 << 20;

fn open_db(path: &Path) -> Result<redb::Database, Error> {
    let db = redb::Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::AlreadyOpen,
        other => storage(other),
    })?;
    // Only the appliance's user reads its store (its values are sealed, but
    // its keys and layout are no one else's business); older versions left
    // it to the umask.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::from(tether_base::files::IoError::on("cannot restrict", path)(e)))?;
    Ok(db)
}

/// One record of any table, as bytes: what a backup carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub table: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A read snapshot.
pub struct ReadTx {
    txn: redb::ReadTransaction,
}

impl std::fmt::Debug for ReadTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadTx")
    }
}

impl ReadTx {
    /// The record under `key`, if any.
    pub fn get<V: DeserializeOwned>(&self, c: Collection<V>, key: &[u8]) -> Result<Option<V>, Error> {
        match open_read(&self.txn, c)? {
            Some(table) => get_in(&table, c, key),
            None => Ok(None),
        }
    }

    /// How many records `c` holds.
    pub fn count<V>(&self, c: Collection<V>) -> Result<u64, Error> {
        match open_read(&self.txn, c)? {
            Some(table) => table.len().map_err(storage),
            None => Ok(0),
        }
    }

    /// Hands every record of every table in this snapshot to `visit`, table
    /// by table, in key order.
    pub fn dump(&self, mut visit: impl FnMut(&str, &[u8], &[u8]) -> Result<(), Error>) -> Result<(), Error> {
        for handle in self.txn.list_tables().map_err(storage)? {
            let name = handle.name().to_owned();
            let table = self.txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)).map_err(storage)?;
            for entry in table.iter().map_err(storage)? {
                let (k, v) = entry.map_err(storage)?;
                visit(&name, k.value(), v.value())?;
            }
        }
        Ok(())
    }

    /// Every record of `c`, in key order (for small collections).
    pub fn values<V: DeserializeOwned>(&self, c: Collection<V>) -> Result<Vec<V>, Error> {
        let mut out = Vec::new();
        self.scan(c, None, Order::Ascending, |_, v| {
            out.push(v);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Walks keys from `start` (inclusive; `None` for the end the order starts
    /// at) and hands each record to `visit` until it returns `false`.
    pub fn scan<V: DeserializeOwned>(
        &self,
        c: Collection<V>,
        start: Option<&[u8]>,
        order: Order,
        visit: impl FnMut(&[u8], V) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        match open_read(&self.txn, c)? {
            Some(table) => scan_in(&table, c, start, order, visit),
            None => Ok(()),
        }
    }
}

/// Point reads that mean the same in a snapshot (`&ReadTx`) and inside a
/// write operation (`&mut WriteTx`, which also sees its batch's earlier
/// writes), so a rule that only reads is written once for both. Pass a
/// write transaction as `&mut *tx`.
pub trait Reads {
    fn get<V: DeserializeOwned>(&mut self, c: Collection<V>, key: &[u8]) -> Result<Option<V>, Error>;
}

impl Reads for &ReadTx {
    fn get<V: DeserializeOwned>(&mut self, c: Collection<V>, key: &[u8]) -> Result<Option<V>, Error> {
        ReadTx::get(self, c, key)
    }
}

impl Reads for WriteTx<'_> {
    fn get<V: DeserializeOwned>(&mut self, c: Collection<V>, key: &[u8]) -> Result<Option<V>, Error> {
        WriteTx::get(self, c, key)
    }
}

impl<R: Reads + ?Sized> Reads for &mut R {
    fn get<V: DeserializeOwned>(&mut self, c: Collection<V>, key: &[u8]) -> Result<Option<V>, Error> {
        (**self).get(c, key)
    }
}

/// Every table is bytes to bytes; typing happens in [`Collection`].
type BytesReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
type BytesEntry<'a> = (redb::AccessGuard<'a, &'static [u8]>, redb::AccessGuard<'a, &'static [u8]>);

/// Opens a table for reading; a table that was never written reads as empty.
fn open_read<V>(txn: &redb::ReadTransaction, c: Collection<V>) -> Result<Option<BytesReadTable>, Error> {
    match txn.open_table(c.table()) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

fn get_in<V: DeserializeOwned>(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    c: Collection<V>,
    key: &[u8],
) -> Result<Option<V>, Error> {
    match table.get(key).map_err(storage)? {
        Some(v) => c.decode(v.value()).map(Some),
        None => Ok(None),
    }
}

fn scan_in<V: DeserializeOwned>(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    c: Collection<V>,
    start: Option<&[u8]>,
    order: Order,
    mut visit: impl FnMut(&[u8], V) -> Result<bool, Error>,
) -> Result<(), Error> {
    let bounds = match (start, order) {
        (None, _) => (Bound::Unbounded, Bound::Unbounded),
        (Some(s), Order::Ascending) => (Bound::Included(s), Bound::Unbounded),
        (Some(s), Order::Descending) => (Bound::Unbounded, Bound::Included(s)),
    };
    let range = table.range::<&[u8]>(bounds).map_err(storage)?;
    let mut step = |entry: Result<BytesEntry<'_>, redb::StorageError>| {
        let (k, v) = entry.map_err(storage)?;
        visit(k.value(), c.decode(v.value())?)
    };
    match order {
        Order::Ascending => {
            for entry in range {
                if !step(entry)? {
                    break;
                }
            }
        }
        Order::Descending => {
            for entry in range.rev() {
                if !step(entry)? {
                    break;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
