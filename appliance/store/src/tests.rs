use super::*;

const ITEMS: Collection<String> = Collection::new("items");

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error("store: {0}")]
    Store(#[from] Error),
    #[error("refused")]
    Refused,
}

fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    (dir, store)
}

#[tokio::test]
async fn a_committed_write_is_visible_after_reopen() {
    let (dir, store) = fresh();
    store.write(|tx| tx.put(ITEMS, b"a", &"alpha".to_string())).await.unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.read(|tx| tx.get(ITEMS, b"a")).unwrap().as_deref(), Some("alpha"));
}

#[tokio::test]
async fn concurrent_writers_share_batches_and_all_land() {
    let (_dir, store) = fresh();
    let mut joins = Vec::new();
    for i in 0..200u32 {
        let store = store.clone();
        joins.push(tokio::spawn(async move {
            store.write(move |tx| tx.put(ITEMS, &i.to_be_bytes(), &i.to_string())).await
        }));
    }
    for j in joins {
        j.await.unwrap().unwrap();
    }
    let mut seen = 0;
    store
        .read(|tx| {
            tx.scan(ITEMS, None, Order::Ascending, |_, _| {
                seen += 1;
                Ok(true)
            })
        })
        .unwrap();
    assert_eq!(seen, 200);
    let stats = store.stats();
    assert_eq!(stats.operations, 200);
    assert!(stats.commits >= 1 && stats.commits <= 200);
}

#[tokio::test]
async fn an_operation_that_fails_before_writing_does_not_disturb_its_batch() {
    let (_dir, store) = fresh();
    let refused = store.write(|_tx| Err::<(), _>(TestError::Refused));
    let kept = store.write(|tx| tx.put(ITEMS, b"k", &"kept".to_string()).map_err(TestError::from));
    let (refused, kept) = tokio::join!(refused, kept);
    assert!(matches!(refused, Err(TestError::Refused)));
    kept.unwrap();
    assert!(store.read(|tx| tx.get(ITEMS, b"k")).unwrap().is_some());
}

#[tokio::test]
async fn an_operation_that_fails_after_writing_aborts_everything_it_touched() {
    let (_dir, store) = fresh();
    let result = store
        .write(|tx| {
            tx.put(ITEMS, b"half", &"done".to_string())?;
            Err::<(), _>(TestError::Refused)
        })
        .await;
    assert!(matches!(result, Err(TestError::Store(Error::BatchAborted))));
    assert!(store.read(|tx| tx.get(ITEMS, b"half")).unwrap().is_none());
}

#[test]
fn scans_walk_in_both_orders_from_a_start_key() {
    let (_dir, store) = fresh();
    for k in [b"a", b"b", b"c", b"d"] {
        store.write_blocking(move |tx| tx.put(ITEMS, k, &String::from_utf8_lossy(k).into_owned())).unwrap();
    }
    let collect = |start: Option<&[u8]>, order| {
        let mut out = Vec::new();
        store
            .read(|tx| {
                tx.scan(ITEMS, start, order, |_, v: String| {
                    out.push(v);
                    Ok(out.len() < 2)
                })
            })
            .unwrap();
        out
    };
    assert_eq!(collect(Some(b"b"), Order::Ascending), ["b", "c"]);
    assert_eq!(collect(Some(b"c"), Order::Descending), ["c", "b"]);
    assert_eq!(collect(None, Order::Descending), ["d", "c"]);
}

#[test]
fn a_second_process_cannot_open_the_same_store() {
    let (dir, _store) = fresh();
    assert!(matches!(Store::open(dir.path()), Err(Error::AlreadyOpen)));
}

#[test]
fn a_store_from_a_newer_build_is_refused() {
    let (dir, store) = fresh();
    store.write_blocking(|tx| tx.put(META, SCHEMA_KEY, &(u64::from(SCHEMA_VERSION) + 1))).unwrap();
    drop(store);
    assert!(matches!(Store::open(dir.path()), Err(Error::SchemaTooNew { .. })));
}

#[tokio::test]
async fn after_commit_actions_run_only_for_operations_that_committed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (_dir, store) = fresh();
    let ran = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = |n: usize| {
        let ran = ran.clone();
        move || {
            ran.fetch_add(n, Ordering::SeqCst);
        }
    };
    let (ok, refused) = (counter(1), counter(10));
    let committed = store.write(move |tx| {
        tx.after_commit(ok);
        tx.put(ITEMS, b"a", &"a".to_string())
    });
    let failed = store.write(move |tx| {
        tx.after_commit(refused);
        Err::<(), _>(TestError::Refused)
    });
    let (committed, failed) = tokio::join!(committed, failed);
    committed.unwrap();
    assert!(failed.is_err());
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the committed operation's action ran, the failed one's did not");
    let aborted = counter(100);
    let result = store
        .write(move |tx| {
            tx.after_commit(aborted);
            tx.put(ITEMS, b"b", &"b".to_string())?;
            Err::<(), _>(TestError::Refused)
        })
        .await;
    assert!(matches!(result, Err(TestError::Store(Error::BatchAborted))));
    assert_eq!(ran.load(Ordering::SeqCst), 1, "an aborted batch runs nothing");
}

#[tokio::test]
async fn an_operation_that_writes_nothing_costs_no_commit_and_still_runs_its_action() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_dir, store) = fresh();
    store.write(|tx| tx.put(ITEMS, b"a", &"a".to_string())).await.unwrap();
    let before = store.stats();
    let ran = std::sync::Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let seen = store
        .write(move |tx| {
            tx.after_commit(move || flag.store(true, Ordering::SeqCst));
            tx.get(ITEMS, b"a")
        })
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("a"));
    assert!(ran.load(Ordering::SeqCst));
    let after = store.stats();
    assert_eq!((after.operations - before.operations, after.commits - before.commits), (1, 0));
}

/// What a `kill -9` leaves behind is what the files hold while the process
/// still runs: copies of them, taken with the store open, are that image.
fn crash_image(from: &std::path::Path, files: &[&str]) -> tempfile::TempDir {
    let image = tempfile::tempdir().unwrap();
    for name in files {
        std::fs::copy(from.join(name), image.path().join(name)).unwrap();
    }
    image
}

fn count_items(store: &Store) -> u64 {
    store.read(|tx| tx.count(ITEMS)).unwrap()
}

#[tokio::test]
async fn what_kill_9_leaves_holds_every_acknowledged_write_across_checkpoints() {
    let (dir, store) = fresh();
    // More batches than one checkpoint interval: the journal starts over
    // once on the way, so the image holds redb's file at a checkpoint plus
    // the journal's records after it.
    let batches = u64::from(writer::CHECKPOINT_EVERY) + 300;
    for i in 0..batches {
        store.write(move |tx| tx.put(ITEMS, &i.to_be_bytes(), &i.to_string())).await.unwrap();
    }
    let image = crash_image(dir.path(), &[DB_FILE, JOURNAL_FILE]);
    let without_journal = crash_image(dir.path(), &[DB_FILE]);

    let recovered = Store::open(image.path()).unwrap();
    assert_eq!(count_items(&recovered), batches, "every acknowledged write is back");
    let last = batches - 1;
    assert_eq!(recovered.read(|tx| tx.get(ITEMS, &last.to_be_bytes())).unwrap(), Some(last.to_string()));
    recovered.write(|tx| tx.put(ITEMS, b"after", &"after".to_string())).await.unwrap();

    let behind = Store::open(without_journal.path()).unwrap();
    let in_file = count_items(&behind);
    assert!(
        in_file >= u64::from(writer::CHECKPOINT_EVERY) && in_file < batches,
        "redb's own file stops at the checkpoint ({in_file} of {batches}): the journal carried the rest"
    );
}

#[tokio::test]
async fn a_clean_stop_checkpoints_so_nothing_needs_the_journal() {
    let (dir, store) = fresh();
    for i in 0..20u32 {
        store.write(move |tx| tx.put(ITEMS, &i.to_be_bytes(), &i.to_string())).await.unwrap();
    }
    drop(store);
    std::fs::remove_file(dir.path().join(JOURNAL_FILE)).unwrap();
    assert_eq!(count_items(&Store::open(dir.path()).unwrap()), 20);
}

#[tokio::test]
async fn a_journal_beside_another_database_is_not_applied_to_it() {
    let (dir, store) = fresh();
    store.write(|tx| tx.put(ITEMS, b"mine", &"mine".to_string())).await.unwrap();
    let journal = crash_image(dir.path(), &[JOURNAL_FILE]);
    drop(store);
    let (other_dir, other) = fresh();
    drop(other);
    std::fs::copy(journal.path().join(JOURNAL_FILE), other_dir.path().join(JOURNAL_FILE)).unwrap();
    let other = Store::open(other_dir.path()).unwrap();
    assert_eq!(other.read(|tx| tx.get(ITEMS, b"mine")).unwrap(), None);
}
