use std::path::Path;

use super::*;
use crate::auth::{Role, issue_token};
use crate::vault::secrets::{self, NewVersion, Policy};
use crate::vault::unseal::{self, Choice, Material};
use tether_base::clock::Timestamp;

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

struct Site {
    _dir: tempfile::TempDir,
    store: Store,
    keys: Keys,
    key_file: Zeroizing<String>,
}

async fn new_site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let (method, key, material) =
        unseal::prepare(tether_base::crypto::CryptoPolicy::STANDARD, Choice::KeyFile).unwrap();
    let Material::KeyFile(key_file) = material else { panic!("a key file") };
    let keys = store.write(move |tx| vault::create(tx, NOW, &Origin::system(), method, &key)).await.unwrap();
    Site { _dir: dir, store, keys, key_file }
}

fn files() -> Vec<DataFile> {
    FILES.iter().map(|&name| DataFile { name, content: format!("{name} content").into_bytes().into() }).collect()
}

impl Site {
    async fn put_secret(&self, name: &str, value: &[u8]) {
        let keys = self.keys.clone();
        let policy = Some(Policy { kinds: vec!["echo".into()], labels: vec![] });
        let new = NewVersion { name: name.into(), value: value.to_vec().into(), policy };
        self.store.write(move |tx| secrets::put(tx, NOW, &Origin::system(), &keys, new)).await.unwrap();
    }

    /// A token of a person holding `role` (one account per role).
    async fn token(&self, role: Role) -> String {
        let person = format!("someone-{role}").replace('_', "-");
        self.store
            .write(move |tx| {
                if crate::auth::users::get(&mut *tx, &person)?.is_none() {
                    crate::auth::users::add_for_test(tx, &person, role)?;
                }
                let token = crate::auth::tokens::NewToken {
                    owner: person.clone(),
                    role,
                    holder: crate::auth::tokens::Holder::Person(person),
                    expires_at: NOW.plus(std::time::Duration::from_secs(3600)),
                };
                Ok::<_, crate::auth::users::UserError>(issue_token(tx, NOW, &Origin::system(), token)?)
            })
            .await
            .unwrap()
            .1
    }

    async fn backup(&self) -> Vec<u8> {
        take(&self.store, self.keys.clone(), NOW, Origin::system(), files()).await.unwrap().1
    }

    fn credentials(&self) -> Vec<Credential> {
        vec![Credential::KeyFile(self.key_file.clone())]
    }
}

fn epoch_of(dir: &Path) -> u64 {
    Store::open(dir).unwrap().read(epoch).unwrap()
}

#[tokio::test]
async fn a_backup_restores_into_a_new_directory_with_its_records_files_and_an_audited_restore() {
    let site = new_site().await;
    site.put_secret("db", b"s3cret").await;
    let file = site.backup().await;
    assert!(!file.windows(6).any(|w| w == b"s3cret"), "the secret is in the clear in the backup");
    assert!(!file.windows(18).any(|w| w == b"server.key content"), "the server key is in the clear");
    let verified = verify(&file, site.credentials()).await.unwrap();
    assert_eq!(verified.header.epoch, 1);

    let target = tempfile::tempdir().unwrap();
    let dir = target.path().join("restored");
    let restored = restore_into(&verified, &dir, Consent::None, NOW).await.unwrap();
    assert_eq!((restored.backup_epoch, restored.epoch, restored.rollback), (1, 2, false));
    let store = Store::open(&dir).unwrap();
    let record = store.read(|tx| secrets::get(tx, "db")).unwrap().expect("the secret is restored");
    assert_eq!(record.current(), 1);
    let checked = store.read(audit::verify).unwrap();
    let mut log = Vec::new();
    store.read(|tx| audit::export_jsonl(tx, 0, &mut log)).unwrap();
    let log = String::from_utf8(log).unwrap();
    assert!(log.lines().last().unwrap().contains("backup.restored"), "{log}");
    assert!(checked.records > 2);
    drop(store);
    let key = std::fs::read(dir.join(SERVER_KEY)).unwrap();
    assert_eq!(key, b"server.key content");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.join(SERVER_KEY)).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!dir.join(".restore-staging").exists());
}

#[tokio::test]
async fn a_damaged_or_altered_backup_or_the_wrong_credentials_are_refused_before_anything_is_written() {
    let site = new_site().await;
    let file = site.backup().await;
    let mut damaged = file.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    assert!(matches!(verify(&damaged, site.credentials()).await, Err(Error::Damaged(_))));
    // An attacker who edits a value and fixes the checksum is caught by the HMAC.
    let mut altered = file.clone();
    let at = altered.windows(14).position(|w| w == b"ca.pem content").unwrap();
    altered[at] = b'C';
    let covered = altered.len() - 2 * DIGEST_LEN;
    let checksum = tether_base::secret::sha256(&altered[..covered]);
    altered[covered..covered + DIGEST_LEN].copy_from_slice(&checksum);
    assert!(matches!(verify(&altered, site.credentials()).await, Err(Error::Tampered)));
    assert!(matches!(verify(&file[..file.len() - 1], site.credentials()).await, Err(Error::Damaged(_))));
    let other = new_site().await;
    assert!(matches!(verify(&file, other.credentials()).await, Err(Error::Vault(vault::Error::WrongKeyFile))));
}

#[tokio::test]
async fn an_older_backup_is_refused_over_a_newer_directory_unless_a_security_officer_consents() {
    let site = new_site().await;
    let officer = site.token(Role::SecurityOfficer).await;
    let admin = site.token(Role::Admin).await;
    let older = verify(&site.backup().await, site.credentials()).await.unwrap();
    site.put_secret("late", b"v").await;
    let newer = verify(&site.backup().await, site.credentials()).await.unwrap();
    assert_eq!((older.header.epoch, newer.header.epoch), (1, 2));

    let target = tempfile::tempdir().unwrap();
    let dir = target.path();
    restore_into(&newer, dir, Consent::None, NOW).await.unwrap();
    assert_eq!(epoch_of(dir), 3);
    for (consent, want) in [
        (Consent::None, "Rollback"),
        (Consent::Rollback { token: None }, "OfficerNeeded"),
        (Consent::Rollback { token: Some(&admin) }, "OfficerNeeded"),
    ] {
        let refused = restore_into(&older, dir, consent, NOW).await.unwrap_err();
        assert!(format!("{refused:?}").contains(want), "{refused:?}");
        assert_eq!(epoch_of(dir), 3, "a refused restore changed the store");
        let kept = Store::open(dir).unwrap().read(|tx| secrets::get(tx, "late")).unwrap();
        assert!(kept.is_some(), "a refused restore changed the store");
    }
    let restored = restore_into(&older, dir, Consent::Rollback { token: Some(&officer) }, NOW).await.unwrap();
    assert!(restored.rollback);
    assert_eq!((restored.replaced_epoch, restored.epoch), (Some(3), 4), "the epoch moves past the one replaced");
    assert!(Path::new(restored.replaced_store.as_deref().unwrap()).exists(), "the replaced store is kept");
    let store = Store::open(dir).unwrap();
    assert!(store.read(|tx| secrets::get(tx, "late")).unwrap().is_none(), "rolled back to the older state");
    let mut log = Vec::new();
    store.read(|tx| audit::export_jsonl(tx, 0, &mut log)).unwrap();
    let last = String::from_utf8(log).unwrap().lines().last().unwrap().to_owned();
    assert!(last.contains("\"rollback\":\"true\"") && last.contains("confirmed_by"), "{last}");
}

#[tokio::test]
async fn a_restore_test_is_recorded_only_for_a_backup_this_appliance_took() {
    let site = new_site().await;
    assert_eq!(site.store.read(newest_restore_test).unwrap(), None);
    let proof = verify(&site.backup().await, site.credentials()).await.unwrap().proof();
    let later = NOW.plus(std::time::Duration::from_secs(60));

    // Another appliance's backup, and a proof edited to name a newer epoch, are refused.
    let other = new_site().await;
    let foreign = verify(&other.backup().await, other.credentials()).await.unwrap().proof();
    let unborn = RestoreTest { epoch: 2, ..proof.clone() };
    let garbled = RestoreTest { mac: "zz".into(), ..proof.clone() };
    for bad in [foreign, unborn, garbled] {
        let keys = site.keys.clone();
        let refused = site.store.write(move |tx| record_restore_test(tx, later, &Origin::system(), &keys, &bad)).await;
        assert!(matches!(refused, Err(Error::NotOurs)), "{refused:?}");
    }
    assert_eq!(site.store.read(newest_restore_test).unwrap(), None, "a refusal records nothing");

    let keys = site.keys.clone();
    site.store.write(move |tx| record_restore_test(tx, later, &Origin::system(), &keys, &proof)).await.unwrap();
    assert_eq!(site.store.read(newest_restore_test).unwrap(), Some(later));
    let mut log = Vec::new();
    site.store.read(|tx| audit::export_jsonl(tx, 0, &mut log)).unwrap();
    assert!(String::from_utf8(log).unwrap().lines().last().unwrap().contains("backup.restore_tested"));
}
