use super::chain::testing;
use super::*;
use tether_base::clock::Timestamp;
use tether_store::Store;

fn origin() -> Origin {
    Origin {
        actor: Actor { kind: ActorKind::Token, id: "abc123".into(), roles: vec!["admin".into()] },
        source_ip: "127.0.0.1".parse().ok(),
        user_agent: Some("test".into()),
    }
}

fn store_with(n: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    for i in 0..n {
        store
            .write_blocking(move |tx| {
                append(
                    tx,
                    Timestamp::from_millis(i),
                    &origin(),
                    Event::new("task.created", "create", Resource::new("task", i)),
                )
            })
            .unwrap();
    }
    (dir, store)
}

#[test]
fn an_untouched_chain_verifies() {
    let (_d, store) = store_with(5);
    let v = store.read(verify).unwrap();
    assert_eq!(v.records, 5);
    assert_eq!(v.head.unwrap().seq, 4);
}

fn append_more(store: &Store, from: u64, n: u64) {
    for i in from..from + n {
        let event = Event::new("task.created", "create", Resource::new("task", i));
        store.write_blocking(move |tx| append(tx, Timestamp::from_millis(i), &origin(), event)).unwrap();
    }
}

#[test]
fn a_walk_from_an_earlier_verified_head_checks_only_what_came_after() {
    let (_d, store) = store_with(5);
    let first = store.read(|tx| verify_from(tx, None)).unwrap();
    let head = first.head.unwrap();
    assert_eq!((first.records, head.seq), (5, 4));
    let nothing_new = store.read(|tx| verify_from(tx, Some(head))).unwrap();
    assert_eq!((nothing_new.records, nothing_new.head), (0, Some(head)));
    append_more(&store, 5, 3);
    let next = store.read(|tx| verify_from(tx, Some(head))).unwrap();
    assert_eq!((next.records, next.head.unwrap().seq), (3, 7));

    // A change after the verified head is found; so is one to the head's own record.
    store.write_blocking(|tx| testing::tamper(tx, 6, |b| b.push(b' '))).unwrap();
    assert!(matches!(store.read(|tx| verify_from(tx, Some(head))), Err(VerifyError::ChainBroken { seq: 6, .. })));
    let (_d, store) = store_with(5);
    store.write_blocking(|tx| testing::remove(tx, 4)).unwrap();
    assert!(matches!(store.read(|tx| verify_from(tx, Some(head))), Err(VerifyError::ChainBroken { seq: 4, .. })));
}

#[test]
fn every_kind_of_tampering_is_named_at_its_seq() {
    type Attack = fn(&mut tether_store::WriteTx<'_>) -> Result<(), tether_store::Error>;
    let attacks: [(&str, Attack, u64); 4] = [
        (
            "edit a field",
            |tx| testing::tamper(tx, 2, |b| *b = String::from_utf8_lossy(b).replace("create", "delete").into_bytes()),
            2,
        ),
        ("append a byte", |tx| testing::tamper(tx, 1, |b| b.push(b' ')), 1),
        ("delete from the middle", |tx| testing::remove(tx, 3), 3),
        ("delete the newest", |tx| testing::remove(tx, 4), 4),
    ];
    for (name, attack, seq) in attacks {
        let (_d, store) = store_with(5);
        store.write_blocking(attack).unwrap();
        match store.read(verify) {
            Err(VerifyError::ChainBroken { seq: s, .. }) => assert_eq!(s, seq, "{name}"),
            Err(VerifyError::HeadMismatch { head_seq, .. }) => assert_eq!(head_seq, seq, "{name}"),
            other => panic!("{name}: tampering not detected: {other:?}"),
        }
    }
}

#[test]
fn export_lines_carry_the_record_and_its_hash() {
    let (_d, store) = store_with(3);
    let mut out = Vec::new();
    let (n, _) = store.read(|tx| export_jsonl(tx, 1, &mut out)).unwrap();
    assert_eq!(n, 2);
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[0]["event_type"], "task.created");
    assert_eq!(lines[0]["actor"]["type"], "token");
    assert_eq!(lines[0]["metadata"]["source_ip"], "127.0.0.1");
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);
}

#[test]
fn a_search_finds_the_newest_matches_first_and_pages_back() {
    let (_d, store) = store_with(10);
    store
        .write_blocking(|tx| {
            let event = Event::new("user.login", "login", Resource::new("user", "alice")).outcome(Outcome::Denied);
            append(tx, Timestamp::from_millis(20), &Origin::system(), event)
        })
        .unwrap();
    let find = |query: search::Query| store.read(|tx| search::search(tx, &query)).unwrap();

    let page = find(search::Query { action: Some("TASK.".into()), limit: 4, ..Default::default() });
    let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [9, 8, 7, 6], "newest first, case-insensitive");
    let next =
        find(search::Query { action: Some("task.".into()), limit: 4, before: page.next_before, ..Default::default() });
    assert_eq!(next.records.first().map(|r| r.seq), Some(5));

    let denied = find(search::Query { outcome: Some(Outcome::Denied), limit: 50, ..Default::default() });
    assert_eq!(denied.records.len(), 1);
    assert_eq!(denied.records[0].resource.id, "alice");
    assert_eq!(denied.next_before, None, "the whole log was read");

    let by_resource = find(search::Query { resource: Some("task:3".into()), limit: 50, ..Default::default() });
    assert_eq!(by_resource.records.len(), 1);
    let by_actor = find(search::Query { actor: Some("abc".into()), limit: 50, ..Default::default() });
    assert_eq!(by_actor.records.len(), 10);
    let window = find(search::Query {
        since: Some(Timestamp::from_millis(2)),
        until: Some(Timestamp::from_millis(4)),
        limit: 50,
        ..Default::default()
    });
    assert_eq!(window.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 3, 2]);
    assert!(find(search::Query { before: Some(0), limit: 5, ..Default::default() }).records.is_empty());

    let tail = store.read(|tx| search::after(tx, Some(8), 5)).unwrap();
    assert_eq!(tail.iter().map(|r| r.seq).collect::<Vec<_>>(), [9, 10], "the head entry is not a record");
    assert_eq!(store.read(|tx| search::after(tx, None, 2)).unwrap().len(), 2);
}
