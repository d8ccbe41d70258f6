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
