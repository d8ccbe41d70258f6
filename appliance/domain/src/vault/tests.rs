use std::sync::Arc;
use std::time::Duration;

use super::*;
use tether_base::clock::{Clock, ManualClock, Timestamp};

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: Store,
    vault: Vault,
    material: Material,
}

const PASSPHRASE: &str = "a long enough passphrase";
const HERE: Place<'static> = Place::new("tasks", b"record-1", "input");

async fn fixture(choice: Choice) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let clock = Arc::new(ManualClock::at(Timestamp::from_millis(1_800_000_000_000)));
    let (method, key, material) = unseal::prepare(tether_base::crypto::CryptoPolicy::STANDARD, choice).unwrap();
    let now = clock.now();
    store.write(move |tx| create(tx, now, &Origin::system(), method, &key).map(drop)).await.unwrap();
    let vault = Vault::new(store.clone(), clock.clone());
    Fixture { dir, clock, store, vault, material }
}

fn passphrase(p: &str) -> Credential {
    Credential::Passphrase(Zeroizing::new(p.into()))
}

fn share(text: &str) -> Credential {
    Credential::Share(Zeroizing::new(text.into()))
}

fn shares(m: &Material) -> Vec<String> {
    match m {
        Material::Shares(s) => s.iter().map(|t| t.to_string()).collect(),
        other => panic!("expected shares, got {other:?}"),
    }
}

#[tokio::test]
async fn it_starts_sealed_and_a_passphrase_unseals_it() {
    let f = fixture(Choice::Passphrase(Zeroizing::new(PASSPHRASE.into()))).await;
    assert!(f.vault.is_sealed());
    assert!(matches!(f.vault.encrypt(HERE, b"x"), Err(Error::Sealed)));
    let status = f.vault.status().unwrap();
    assert_eq!((status.sealed, status.method), (true, Some("passphrase")));

    assert!(matches!(
        f.vault.unseal(&Origin::system(), passphrase("wrong passphrase!!")).await,
        Err(Error::WrongPassphrase)
    ));
    assert!(f.vault.is_sealed(), "a wrong passphrase changes nothing");
    let wrong_kind = f.vault.unseal(&Origin::system(), share("tether-share-x")).await;
    assert!(matches!(wrong_kind, Err(Error::WrongMethod { method: "passphrase" })));

    let status = f.vault.unseal(&Origin::system(), passphrase(PASSPHRASE)).await.unwrap();
    assert!(!status.sealed);
    assert_eq!(status.key_version, Some(1));
    let sealed = f.vault.encrypt(HERE, b"canary").unwrap();
    assert_eq!(f.vault.decrypt(HERE, &sealed).unwrap(), b"canary");
}

#[tokio::test]
async fn shares_unseal_at_the_threshold_and_bad_shares_are_named() {
    let f = fixture(Choice::Shares { threshold: 3, count: 5 }).await;
    let texts = shares(&f.material);
    let other = fixture(Choice::Shares { threshold: 3, count: 5 }).await;
    let foreign = shares(&other.material);
    let o = Origin::system();

    let s = f.vault.unseal(&o, share(&texts[4])).await.unwrap();
    assert_eq!((s.sealed, s.shares.map(|p| (p.received, p.threshold))), (true, Some((1, 3))));
    assert!(matches!(f.vault.unseal(&o, share(&foreign[0])).await, Err(Error::ShareFromAnotherSet { index: 1 })));
    // One hex digit of the value mistyped.
    let mut typo = texts[1].clone();
    let at = typo.len() - 12;
    let digit = if &typo[at..=at] == "a" { "b" } else { "a" };
    typo.replace_range(at..=at, digit);
    assert!(matches!(f.vault.unseal(&o, share(&typo)).await, Err(Error::Share(_))));
    assert!(matches!(f.vault.unseal(&o, share(&texts[4])).await, Err(Error::DuplicateShare { index: 5 })));
    let s = f.vault.unseal(&o, share(&texts[0])).await.unwrap();
    assert_eq!(s.shares.map(|p| p.received), Some(2), "refused shares are not kept");
    assert!(f.vault.is_sealed(), "k - 1 shares never unseal");

    // Reset forgets progress.
    let s = f.vault.unseal(&o, Credential::Reset).await.unwrap();
    assert_eq!(s.shares.map(|p| p.received), Some(0));
    for t in [&texts[3], &texts[1], &texts[2]] {
        f.vault.unseal(&o, share(t)).await.unwrap();
    }
    assert!(!f.vault.is_sealed());
}

#[tokio::test]
async fn a_ceremony_left_for_ten_minutes_starts_over_and_every_step_is_announced() {
    let f = fixture(Choice::Shares { threshold: 2, count: 3 }).await;
    let texts = shares(&f.material);
    let o = Origin::system();
    let mut changes = f.vault.changes();
    let s = f.vault.unseal(&o, share(&texts[0])).await.unwrap();
    let progress = s.shares.unwrap();
    assert_eq!(progress.received, 1);
    assert_eq!(progress.expires_at, Some(f.clock.now().plus(unseal::CEREMONY_WINDOW)));
    assert!(changes.has_changed().unwrap(), "a share given is announced");
    changes.borrow_and_update();

    f.clock.advance(unseal::CEREMONY_WINDOW);
    let s = f.vault.status().unwrap();
    assert_eq!((s.shares.unwrap().received, s.shares.unwrap().expires_at), (0, None), "the ceremony is over");
    // The next share starts a new ceremony: the old share no longer counts.
    let s = f.vault.unseal(&o, share(&texts[1])).await.unwrap();
    assert_eq!((s.sealed, s.shares.unwrap().received), (true, 1));
    assert!(changes.has_changed().unwrap());
    f.vault.unseal(&o, share(&texts[2])).await.unwrap();
    assert!(!f.vault.is_sealed());
}

#[tokio::test]
async fn a_key_file_unseals_and_another_key_file_does_not() {
    let f = fixture(Choice::KeyFile).await;
    let other = fixture(Choice::KeyFile).await;
    let text = |m: &Material| match m {
        Material::KeyFile(t) => Credential::KeyFile(t.clone()),
        other => panic!("expected a key file, got {other:?}"),
    };
    let o = Origin::system();
    assert!(matches!(f.vault.unseal(&o, text(&other.material)).await, Err(Error::WrongKeyFile)));
    assert!(matches!(
        f.vault.unseal(&o, Credential::KeyFile(Zeroizing::new("hello".into()))).await,
        Err(Error::NotAKeyFile)
    ));
    assert!(f.vault.is_sealed());
    f.vault.unseal(&o, text(&f.material)).await.unwrap();
    assert!(!f.vault.is_sealed());
}

#[tokio::test]
async fn sealing_drops_the_keys_and_rotation_keeps_old_values_readable() {
    let f = fixture(Choice::Passphrase(Zeroizing::new(PASSPHRASE.into()))).await;
    let o = Origin::system();
    f.vault.unseal(&o, passphrase(PASSPHRASE)).await.unwrap();
    let old = f.vault.encrypt(HERE, b"before rotation").unwrap();
    assert_eq!(f.vault.rotate(&o, "command").await.unwrap(), 2);
    let new = f.vault.encrypt(HERE, b"after rotation").unwrap();
    assert_eq!((old.key_version(), new.key_version()), (Some(1), Some(2)));
    assert_eq!(f.vault.decrypt(HERE, &old).unwrap(), b"before rotation");

    f.vault.seal(&o).await.unwrap();
    assert!(matches!(f.vault.decrypt(HERE, &new), Err(Error::Sealed)));

    // A fresh process (new Vault over the same store) opens both versions.
    let again = Vault::new(f.store.clone(), f.clock.clone());
    again.unseal(&o, passphrase(PASSPHRASE)).await.unwrap();
    assert_eq!(again.decrypt(HERE, &old).unwrap(), b"before rotation");
    assert_eq!(again.decrypt(HERE, &new).unwrap(), b"after rotation");
    assert_eq!(again.status().unwrap().key_version, Some(2));
    drop(f.dir);
}

#[tokio::test]
async fn maintenance_rotates_by_age_and_counts_survive_a_restart() {
    let f = fixture(Choice::KeyFile).await;
    let Material::KeyFile(text) = &f.material else { panic!("key file") };
    let o = Origin::system();
    f.vault.unseal(&o, Credential::KeyFile(text.clone())).await.unwrap();
    for _ in 0..10 {
        f.vault.encrypt(HERE, b"v").unwrap();
    }
    let max_age = Duration::from_secs(30 * 24 * 3600);
    f.vault.maintain(max_age).await.unwrap();
    assert_eq!(f.vault.status().unwrap().key_version, Some(1), "young key stays");
    f.clock.advance(max_age);
    f.vault.maintain(max_age).await.unwrap();
    assert_eq!(f.vault.status().unwrap().key_version, Some(2), "old key rotated");

    // After a restart the count resumes above what was checkpointed.
    let again = Vault::new(f.store.clone(), f.clock.clone());
    again.unseal(&o, Credential::KeyFile(text.clone())).await.unwrap();
    let v1 = again.keys().unwrap().0.versions().next().unwrap().used();
    assert!(v1 >= 10 + keyring::RESTART_SLACK, "{v1}");
}

#[tokio::test]
async fn a_damaged_stored_value_is_an_integrity_error_not_garbage() {
    let f = fixture(Choice::KeyFile).await;
    let Material::KeyFile(text) = &f.material else { panic!("key file") };
    f.vault.unseal(&Origin::system(), Credential::KeyFile(text.clone())).await.unwrap();
    let sealed = f.vault.encrypt(HERE, b"value").unwrap();
    let mut bytes = sealed.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let err = f.vault.decrypt(HERE, &Sealed::from_bytes(bytes)).unwrap_err();
    assert!(matches!(err, Error::Integrity { table: "tasks", field: "input" }), "{err:?}");
    let mut unknown = sealed.as_bytes().to_vec();
    unknown[4] = 9;
    assert!(matches!(f.vault.decrypt(HERE, &Sealed::from_bytes(unknown)), Err(Error::UnknownKeyVersion(9))));
}

#[tokio::test]
async fn rekey_needs_a_quorum_of_the_current_shares_and_replaces_them() {
    let f = fixture(Choice::Shares { threshold: 2, count: 3 }).await;
    let old = shares(&f.material);
    let o = Origin::system();
    for t in &old[..2] {
        f.vault.unseal(&o, share(t)).await.unwrap();
    }
    let new_passphrase = || Choice::Passphrase(Zeroizing::new(PASSPHRASE.into()));
    let short = f.vault.rekey(&o, vec![share(&old[0])], new_passphrase()).await;
    assert!(matches!(short, Err(Error::QuorumNeeded)), "one share of two is not a quorum");
    let wrong = f.vault.rekey(&o, vec![passphrase(PASSPHRASE)], new_passphrase()).await;
    assert!(matches!(wrong, Err(Error::WrongMethod { method: "shares" })));
    assert_eq!(f.vault.status().unwrap().method, Some("shares"), "refusals change nothing");

    let sealed = f.vault.encrypt(HERE, b"kept").unwrap();
    f.vault.rekey(&o, vec![share(&old[2]), share(&old[0])], new_passphrase()).await.unwrap();
    f.vault.seal(&o).await.unwrap();
    assert!(matches!(f.vault.unseal(&o, share(&old[0])).await, Err(Error::WrongMethod { .. })));
    f.vault.unseal(&o, passphrase(PASSPHRASE)).await.unwrap();
    assert_eq!(f.vault.decrypt(HERE, &sealed).unwrap(), b"kept", "data is untouched by rekey");
}
