//! The group-commit writer: one thread, one write transaction per batch.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::journal::{Change, Journal};
use super::{
    Collection, DB_FILE, Error, JOURNAL_SEQ, Order, encode, get_in, open_db, put_meta, recover, scan_in, storage,
};

/// At most this many operations share one transaction, so one huge burst
/// cannot hold every caller behind a single very long commit.
const MAX_BATCH: usize = 4096;

/// Batches journaled between two checkpoints. A checkpoint writes every page
/// changed since the last one, so it must come often enough to stay short,
/// and seldom enough that most batches cost one small journal write.
pub(super) const CHECKPOINT_EVERY: u32 = 1024;

/// Reports the outcome of the batch's commit to one caller.
type Finish = Box<dyn FnOnce(Result<(), Error>) + Send>;
/// Runs one caller's operation inside the batch's transaction and returns
/// what will report its outcome once the batch commits or aborts.
type Job = Box<dyn FnOnce(&mut WriteTx<'_>) -> Finish + Send>;

/// Owns the writer thread. Dropping the last handle closes the queue and
/// waits for the thread, so the database file is closed when `drop` returns
/// (a restart in the same process can reopen it at once).
#[derive(Debug)]
pub(super) struct Handle {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Counters>,
}

/// How much group commit is grouping: operations applied and durable
/// commits made since the store opened; and whether writes are failing.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub operations: AtomicU64,
    pub commits: AtomicU64,
    pub degraded: AtomicBool,
    /// Make every batch a durable commit (the disk is low): redb reuses the
    /// pages a batch frees only after a durable commit, so between
    /// checkpoints its file grows; this keeps it from growing.
    pub frugal: AtomicBool,
    /// A collection whose writes fail ([`super::Store::refuse_writes_to`]).
    #[cfg(feature = "faults")]
    pub refused: std::sync::Mutex<Option<&'static str>>,
}

/// How often a degraded writer tries to reopen the store.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// The database the store reads and writes. Replaceable: after a write
/// fails (a full or failing disk leaves redb refusing every later
/// transaction) the writer reopens it, replaying the journal, once it can.
#[derive(Debug)]
pub(super) struct DbSlot {
    current: RwLock<Option<Arc<redb::Database>>>,
    /// Where the store lives; a store in memory cannot reopen.
    dir: Option<PathBuf>,
}

impl DbSlot {
    pub(super) fn new(db: redb::Database, dir: Option<&Path>) -> DbSlot {
        DbSlot { current: RwLock::new(Some(Arc::new(db))), dir: dir.map(Path::to_path_buf) }
    }

    /// The database, unless it is being reopened.
    pub(super) fn current(&self) -> Result<Arc<redb::Database>, Error> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone().ok_or(Error::Degraded)
    }

    fn set(&self, db: Option<Arc<redb::Database>>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = db;
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How the writer makes a batch durable: through the journal, when the store
/// has a directory, with a checkpoint every [`CHECKPOINT_EVERY`] batches;
/// otherwise (a store in memory) by a plain commit.
#[derive(Debug)]
pub(super) struct Durability {
    journal: Option<Journal>,
    /// The sequence number of the next batch that writes.
    next_seq: u64,
    since_checkpoint: u32,
}

impl Durability {
    pub(super) fn journaled(journal: Journal, next_seq: u64) -> Durability {
        Durability { journal: Some(journal), next_seq, since_checkpoint: 0 }
    }

    pub(super) fn in_memory() -> Durability {
        Durability { journal: None, next_seq: 1, since_checkpoint: 0 }
    }
}

impl Handle {
    pub(super) fn spawn(db: Arc<DbSlot>, durability: Durability) -> Handle {
        let (jobs, queue) = mpsc::channel::<Job>();
        // The thread ends when every Store handle (and so every Sender) is gone.
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        let spawned = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&db, &queue, &counters, durability));
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                // Without the thread every write reports WriterGone; say why once.
                tracing::error!(error = %e, "could not start the store writer thread");
                None
            }
        };
        Handle { jobs: Some(jobs), thread, stats }
    }

    /// Queues `op`; the answer arrives once its batch has committed (or aborted).
    pub(super) fn enqueue<R, E>(
        &self,
        op: impl FnOnce(&mut WriteTx<'_>) -> Result<R, E> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<R, E>>, Error>
    where
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        if self.is_degraded() {
            // Fail closed at once rather than queue behind a store that
            // cannot write.
            return Err(Error::Degraded);
        }
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |tx| {
            let (writes_before, hooks_before) = (tx.changes.len(), tx.after_commit.len());
            let result = op(tx);
            if result.is_err() {
                // A failed operation leaves nothing behind: not its writes
                // (checked) and not its after-commit actions (dropped).
                tx.poisoned |= tx.changes.len() != writes_before;
                tx.after_commit.truncate(hooks_before);
            }
            Box::new(move |commit: Result<(), Error>| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(e) => Err(E::from(e)),
                };
                // The caller may have gone away (client disconnected); the
                // change is committed either way.
                let _ = reply.send(outcome);
            })
        });
        self.jobs.as_ref().ok_or(Error::WriterGone)?.send(job).map_err(|_| Error::WriterGone)?;
        Ok(answer)
    }
}

impl Handle {
    /// (operations, commits) so far.
    pub(super) fn stats(&self) -> (u64, u64) {
        (self.stats.operations.load(Ordering::Relaxed), self.stats.commits.load(Ordering::Relaxed))
    }

    pub(super) fn set_frugal(&self, on: bool) {
        self.stats.frugal.store(on, Ordering::Relaxed);
    }

    pub(super) fn is_degraded(&self) -> bool {
        self.stats.degraded.load(Ordering::Relaxed)
    }

    #[cfg(feature = "faults")]
    pub(super) fn refuse_writes_to(&self, collection: Option<&'static str>) {
        *self.stats.refused.lock().unwrap_or_else(PoisonError::into_inner) = collection;
    }

    /// Why a queued write got no answer.
    pub(super) fn gone(&self) -> Error {
        if self.is_degraded() { Error::Degraded } else { Error::WriterGone }
    }
}

fn run(slot: &DbSlot, queue: &mpsc::Receiver<Job>, counters: &Counters, mut durability: Durability) {
    let Ok(mut db) = slot.current() else { return };
    // When the store last fell over: a disk that stays nearly full makes it
    // fall over again soon after each reopening, and that is said once.
    let mut last_failure: Option<Instant> = None;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let frugal = counters.frugal.load(Ordering::Relaxed);
        if let Err(Stopped) = commit_batch(&db, batch, counters, &mut durability, frugal) {
            // In memory there is nothing to reopen: dropping the queue makes
            // every later write report WriterGone.
            let Some(dir) = slot.dir.clone() else { return };
            counters.degraded.store(true, Ordering::Relaxed);
            let again = last_failure.is_some_and(|at| at.elapsed() < Duration::from_secs(60));
            last_failure = Some(Instant::now());
            match reopen(slot, &dir, queue, db, durability, again) {
                Some((reopened, resumed)) => {
                    (db, durability) = (reopened, resumed);
                    counters.degraded.store(false, Ordering::Relaxed);
                }
                None => return,
            }
        }
    }
    if durability.since_checkpoint > 0 {
        checkpoint(&db, &durability);
    }
}

/// Waits out a write failure. Writes queued meanwhile fail at once (their
/// callers are answered [`Error::Degraded`]); the disk reserve is released
/// so that the reopening has room; and every [`REOPEN_EVERY`] the store is
/// opened again, its journal replayed exactly as after a crash, which
/// brings back every batch that was answered. Returns the reopened
/// database, or `None` once the store is closing.
fn reopen(
    slot: &DbSlot,
    dir: &Path,
    queue: &mpsc::Receiver<Job>,
    db: Arc<redb::Database>,
    durability: Durability,
    again: bool,
) -> Option<(Arc<redb::Database>, Durability)> {
    if again {
        tracing::debug!("the store cannot write again; reopening");
    } else {
        tracing::error!("the store cannot write (disk full or failing): every write fails until it reopens");
    }
    slot.set(None);
    drop(durability);
    if super::reserve::release(dir) {
        tracing::warn!("released the disk reserve so that the store can reopen");
    }
    let mut old = Some(db);
    // A moment for whatever filled the disk to be noticed (the space
    // watch) before writes resume.
    let mut next_try = Instant::now() + REOPEN_EVERY;
    let mut reported: Option<Instant> = None;
    loop {
        match queue.recv_timeout(REOPEN_EVERY) {
            // Dropping a job answers its caller at once.
            Ok(job) => drop(job),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
        if Instant::now() < next_try {
            continue;
        }
        next_try = Instant::now() + REOPEN_EVERY;
        // The file stays locked until the last reader lets go of it.
        if let Some(db) = old.take() {
            match Arc::try_unwrap(db) {
                Ok(db) => drop(db),
                Err(still_read) => {
                    tracing::debug!(
                        holders = Arc::strong_count(&still_read),
                        "waiting for readers to let go of the store"
                    );
                    old = Some(still_read);
                    continue;
                }
            }
        }
        let reopened = open_db(&dir.join(DB_FILE)).and_then(|db| {
            let durability = recover(&db, dir)?;
            Ok((Arc::new(db), durability))
        });
        match reopened {
            Ok((db, durability)) => {
                slot.set(Some(db.clone()));
                if again {
                    tracing::debug!("the store reopened");
                } else {
                    tracing::info!("the store reopened; writes resume");
                }
                return Some((db, durability));
            }
            Err(e) if reported.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) => {
                tracing::error!(error = %e, "the store cannot reopen yet; retrying every second");
                reported = Some(Instant::now());
            }
            Err(_) => {}
        }
    }
}

/// On a clean stop: redb's file takes in every journaled batch, so the next
/// open replays nothing.
fn checkpoint(db: &redb::Database, durability: &Durability) {
    let result = db.begin_write().map_err(storage).and_then(|txn| {
        // A write, so that the commit is not an empty one.
        record_seq(&txn, durability.next_seq - 1)?;
        txn.commit().map_err(storage)
    });
    if let Err(e) = result {
        // Nothing is lost: the journal still holds every batch since the
        // last checkpoint, and the next open applies them.
        tracing::warn!(error = %e, "could not checkpoint the store on stopping");
    }
}

/// Stores which batch redb's state includes, for replay to start after it.
fn record_seq(txn: &redb::WriteTransaction, seq: u64) -> Result<(), Error> {
    put_meta(txn, JOURNAL_SEQ, seq)
}

/// The writer cannot go on with this database: a commit failed, a batch was
/// written to the journal but not to redb, or the journal could not be
/// written. Reopening the store, which replays the journal, brings redb and
/// the journal back in step.
struct Stopped;

/// Applies and commits one batch, then answers its callers.
fn commit_batch(
    db: &redb::Database,
    batch: Vec<Job>,
    counters: &Counters,
    durability: &mut Durability,
    frugal: bool,
) -> Result<(), Stopped> {
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            // Dropping the jobs drops their reply channels: callers see an
            // error at once. redb refuses every transaction after an I/O
            // failure, so the store must reopen.
            tracing::error!(error = %e, "could not begin a write transaction");
            return Err(Stopped);
        }
    };
    let operations = batch.len() as u64;
    let mut tx = WriteTx {
        txn: &txn,
        open: HashMap::new(),
        changes: Vec::new(),
        poisoned: false,
        after_commit: Vec::new(),
        #[cfg(feature = "faults")]
        refused: *counters.refused.lock().unwrap_or_else(PoisonError::into_inner),
    };
    let finishers: Vec<Finish> = batch.into_iter().map(|job| job(&mut tx)).collect();
    let (poisoned, wrote) = (tx.poisoned, !tx.changes.is_empty());
    let after_commit = std::mem::take(&mut tx.after_commit);
    let changes = std::mem::take(&mut tx.changes);
    // Close the batch's tables before committing.
    drop(tx);
    let mut stopped = false;
    let commit = if poisoned {
        tracing::error!("a write operation failed after writing; aborting its batch");
        // Aborting cannot lose anything: no caller in the batch was answered.
        let _ = txn.abort();
        Err(())
    } else if !wrote {
        // Nothing to make durable (a poll that parked, a check that found
        // nothing due): redb would still fsync an empty commit, and that
        // fsync would delay the next batch's real one.
        let _ = txn.abort();
        Ok(())
    } else {
        match make_durable(txn, &changes, durability, frugal) {
            Ok(()) => Ok(()),
            Err(Failure::Commit(e)) => {
                // Nothing of the batch is kept, but redb refuses every later
                // transaction after an I/O failure: reopen.
                tracing::error!(error = %e, "write transaction commit failed");
                stopped = true;
                Err(())
            }
            Err(Failure::Fatal(e)) => {
                tracing::error!(error = %e, "the store journal and database are out of step; stopping all writes until a restart");
                stopped = true;
                Err(())
            }
        }
    };
    if commit.is_ok() {
        // Counted before anyone is answered, so a caller never sees its own
        // write missing from the figures.
        counters.operations.fetch_add(operations, Ordering::Relaxed);
        counters.commits.fetch_add(u64::from(wrote), Ordering::Relaxed);
        after_commit.into_iter().for_each(|action| action());
    }
    for finish in finishers {
        finish(match commit {
            Ok(()) => Ok(()),
            Err(()) if poisoned => Err(Error::BatchAborted),
            Err(()) if stopped => Err(Error::Degraded),
            Err(()) => Err(Error::CommitFailed),
        });
    }
    if stopped { Err(Stopped) } else { Ok(()) }
}

enum Failure {
    /// Nothing of the batch is kept.
    Commit(Error),
    /// The batch may be in the journal (replayed at the next start) but is
    /// not in redb.
    Fatal(Error),
}

/// Commits `txn`, whose writes are `changes`: journaled (one record and one
/// fsync, the redb commit kept in memory) or, when a checkpoint is due, the
/// record does not fit or the disk is low (`frugal`), as a durable redb
/// commit after which the journal starts over.
fn make_durable(
    txn: redb::WriteTransaction,
    changes: &[Change],
    durability: &mut Durability,
    frugal: bool,
) -> Result<(), Failure> {
    let seq = durability.next_seq;
    record_seq(&txn, seq).map_err(Failure::Commit)?;
    let journaled = match durability.journal.as_mut() {
        Some(journal) if durability.since_checkpoint < CHECKPOINT_EVERY && !frugal => {
            journal.append(seq, changes).map_err(Failure::Fatal)?
        }
        _ => false,
    };
    if journaled {
        let mut txn = txn;
        txn.set_durability(redb::Durability::None).map_err(|e| Failure::Fatal(storage(e)))?;
        txn.commit().map_err(|e| Failure::Fatal(storage(e)))?;
        durability.since_checkpoint += 1;
    } else {
        txn.commit().map_err(|e| Failure::Commit(storage(e)))?;
        if let Some(journal) = durability.journal.as_mut() {
            journal.start_over();
        }
        durability.since_checkpoint = 0;
    }
    durability.next_seq += 1;
    Ok(())
}

/// The view a write operation gets: reads see the batch's earlier writes.
pub struct WriteTx<'t> {
    txn: &'t redb::WriteTransaction,
    /// Tables stay open for the whole batch: opening and closing one per
    /// access was a large share of the writer's CPU time.
    open: HashMap<&'static str, BytesTable<'t>>,
    /// Every write so far, for the journal.
    changes: Vec<Change>,
    poisoned: bool,
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
    #[cfg(feature = "faults")]
    refused: Option<&'static str>,
}

type BytesTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

impl std::fmt::Debug for WriteTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx").field("writes", &self.changes.len()).finish()
    }
}

impl<'t> WriteTx<'t> {
    fn open<V>(&mut self, c: Collection<V>) -> Result<&mut BytesTable<'t>, Error> {
        match self.open.entry(c.name) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => Ok(e.insert(self.txn.open_table(c.table()).map_err(storage)?)),
        }
    }

    /// The record under `key`, if any.
    pub fn get<V: DeserializeOwned>(&mut self, c: Collection<V>, key: &[u8]) -> Result<Option<V>, Error> {
        get_in(self.open(c)?, c, key)
    }

    /// See [`super::ReadTx::values`].
    pub fn values<V: DeserializeOwned>(&mut self, c: Collection<V>) -> Result<Vec<V>, Error> {
        let mut out = Vec::new();
        self.scan(c, None, Order::Ascending, |_, v| {
            out.push(v);
            Ok(true)
        })?;
        Ok(out)
    }

    /// See [`super::ReadTx::scan`].
    pub fn scan<V: DeserializeOwned>(
        &mut self,
        c: Collection<V>,
        start: Option<&[u8]>,
        order: Order,
        visit: impl FnMut(&[u8], V) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        scan_in(self.open(c)?, c, start, order, visit)
    }

    /// Inserts or replaces the record under `key`.
    pub fn put<V: Serialize>(&mut self, c: Collection<V>, key: &[u8], value: &V) -> Result<(), Error> {
        #[cfg(feature = "faults")]
        if self.refused == Some(c.name) {
            return Err(Error::Injected(c.name));
        }
        let value = encode(value)?;
        self.open(c)?.insert(key, value.as_slice()).map_err(storage)?;
        self.changes.push(Change::Put { table: c.name.into(), key: key.to_vec(), value });
        Ok(())
    }

    /// Runs `action` on the writer thread once this batch is durable, before
    /// any caller in it is answered; never if the operation fails or the
    /// batch aborts. For in-memory effects of a change (handing a task to a
    /// waiting worker) that must neither run early nor lag the reply.
    pub fn after_commit(&mut self, action: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(action));
    }

    /// Records that the store now holds the current schema
    /// ([`super::SCHEMA_VERSION`]); for the step that finishes a migration.
    pub fn stamp_current_schema(&mut self) -> Result<(), Error> {
        self.put(super::META, super::SCHEMA_KEY, &u64::from(super::SCHEMA_VERSION))
    }

    /// Removes the record under `key`; says whether there was one.
    pub fn delete<V>(&mut self, c: Collection<V>, key: &[u8]) -> Result<bool, Error> {
        let removed = self.open(c)?.remove(key).map_err(storage)?.is_some();
        self.changes.push(Change::Delete { table: c.name.into(), key: key.to_vec() });
        Ok(removed)
    }
}
