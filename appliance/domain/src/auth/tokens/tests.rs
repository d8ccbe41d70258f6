use super::*;
use crate::auth::users::{self, UserError};
use tether_store::Store;

/// A person's own token (the person is made if new).
fn personal(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    person: &str,
    role: Role,
    expires_at: Timestamp,
) -> Result<(ApiToken, String), UserError> {
    service(tx, now, person, person, role, expires_at)
}

/// A token owned by `owner`, held by `holder` (made if new, with `role`).
fn service(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    owner: &str,
    holder: &str,
    role: Role,
    expires_at: Timestamp,
) -> Result<(ApiToken, String), UserError> {
    if users::get(&mut *tx, holder)?.is_none() {
        users::add_for_test(tx, holder, role)?;
    }
    let new = NewToken { owner: owner.into(), role, holder: Holder::Person(holder.into()), expires_at };
    Ok(issue_token(tx, now, &Origin::system(), new)?)
}

#[test]
fn a_token_authenticates_until_it_expires_or_is_revoked_and_only_its_hash_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let t0 = Timestamp::from_millis(1_000);
    let expiry = Timestamp::from_millis(5_000);
    let (record, secret) = store.write_blocking(move |tx| personal(tx, t0, "alice", Role::Developer, expiry)).unwrap();
    let who = store.read(|tx| authenticate(tx, &secret, t0)).unwrap().unwrap();
    assert_eq!((who.name.as_str(), who.role), ("alice", Role::Developer));
    assert_eq!(who.via, Via::Token { id: record.id.clone(), holder: Holder::Person("alice".into()), note_use: true });
    assert_eq!(store.read(|tx| authenticate(tx, &secret, expiry)).unwrap(), Err(AuthError::Expired));
    let mut other = secret.clone();
    other
        .replace_range(PREFIX.len()..PREFIX.len() + 1, if secret.as_bytes()[PREFIX.len()] == b'a' { "b" } else { "a" });
    assert_eq!(store.read(|tx| authenticate(tx, &other, t0)).unwrap(), Err(AuthError::Unknown));
    assert_eq!(store.read(|tx| authenticate(tx, "Bearer nonsense", t0)).unwrap(), Err(AuthError::Malformed));

    let id = record.id.clone();
    let refused = store
        .write_blocking(move |tx| Ok::<_, store::Error>(revoke(tx, t0, &Origin::system(), &id, Some("bob")).is_err()));
    assert!(refused.unwrap(), "only the owner (or an admin) revokes");
    let id = record.id.clone();
    store.write_blocking(move |tx| revoke(tx, t0, &Origin::system(), &id, Some("alice"))).unwrap();
    assert_eq!(store.read(|tx| authenticate(tx, &secret, t0)).unwrap(), Err(AuthError::Revoked));
    assert_eq!(
        store.read(|tx| authenticate(tx, &secret, expiry)).unwrap(),
        Err(AuthError::Expired),
        "a revoked token past its expiry is expired as well"
    );
    // Its tombstone goes once it has expired (the next revocation prunes).
    let later = Timestamp::from_millis(6_000);
    let (next, _) = store
        .write_blocking(move |tx| personal(tx, later, "alice", Role::Developer, Timestamp::from_millis(9_000)))
        .unwrap();
    store.write_blocking(move |tx| revoke(tx, later, &Origin::system(), &next.id, None)).unwrap();
    assert_eq!(store.read(|tx| authenticate(tx, &secret, later)).unwrap(), Err(AuthError::Unknown));

    drop(store);
    let raw = std::fs::read(dir.path().join(tether_store::DB_FILE)).unwrap();
    let needle = secret.as_bytes();
    assert!(!raw.windows(needle.len()).any(|w| w == needle), "the secret must not be stored");
}

#[test]
fn rotation_keeps_owner_role_and_expiry_and_retires_the_old_secret() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let t0 = Timestamp::from_millis(1_000);
    let expiry = Timestamp::from_millis(9_000);
    let (old, old_secret) =
        store.write_blocking(move |tx| service(tx, t0, "ci", "alice", Role::Viewer, expiry)).unwrap();
    let id = old.id.clone();
    let (new, new_secret) = store.write_blocking(move |tx| rotate(tx, t0, &Origin::system(), &id, None)).unwrap();
    assert_ne!(new.id, old.id);
    assert_eq!((new.owner.as_str(), new.role, new.expires_at), ("ci", Role::Viewer, expiry));
    assert_eq!(store.read(|tx| authenticate(tx, &old_secret, t0)).unwrap(), Err(AuthError::Revoked));
    assert!(store.read(|tx| authenticate(tx, &new_secret, t0)).unwrap().is_ok());
    let listed = store.read(|tx| list(tx, Some("ci"))).unwrap();
    assert_eq!(listed.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), vec![new.id]);
}

#[test]
fn a_token_never_carries_more_than_its_holder_now_has() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let t0 = Timestamp::from_millis(1_000);
    let expiry = Timestamp::from_millis(9_000);
    let auth = |secret: &str| store.read(|tx| authenticate(tx, secret, t0)).unwrap().map(|p| p.role);
    let (_, admin) = store.write_blocking(move |tx| personal(tx, t0, "alice", Role::Admin, expiry)).unwrap();
    let (_, dev) = store.write_blocking(move |tx| personal(tx, t0, "alice", Role::Developer, expiry)).unwrap();
    let (ci, ci_dev) = store.write_blocking(move |tx| service(tx, t0, "ci", "alice", Role::Developer, expiry)).unwrap();
    let (_, ci_viewer) =
        store.write_blocking(move |tx| service(tx, t0, "ci-read", "alice", Role::Viewer, expiry)).unwrap();
    assert_eq!(auth(&admin), Ok(Role::Admin));

    // Demoted to developer: the admin token goes in the same
    // transaction, and so does the viewer one (a viewer sees every
    // task's metadata, a developer only its own); what a developer may
    // carry stays.
    let o = Origin::system();
    store
        .write_blocking(move |tx| crate::auth::roles::request_role(tx, t0, &o, "bob", "alice", Role::Developer))
        .unwrap();
    assert_eq!(auth(&admin), Err(AuthError::Revoked), "revoked by the demotion");
    assert_eq!(auth(&ci_viewer), Err(AuthError::Revoked), "revoked by the demotion");
    assert_eq!(auth(&dev), Ok(Role::Developer));
    assert_eq!(auth(&ci_dev), Ok(Role::Developer));
    let mut log = Vec::new();
    store.read(|tx| crate::audit::export_jsonl(tx, 0, &mut log)).unwrap();
    let log = String::from_utf8(log).unwrap();
    let change = log.lines().rev().find(|l| l.contains("user.role_changed")).unwrap();
    assert!(change.contains(r#""tokens_revoked":"2""#), "{change}");

    // Changed behind the rules' back (a store from before them): the
    // check at use still holds the token to the holder's current role.
    store
        .write_blocking(move |tx| {
            let mut alice = users::get_for_update(tx, "alice")?;
            alice.role = Role::Viewer;
            users::put(tx, &alice)?;
            Ok::<_, UserError>(())
        })
        .unwrap();
    assert_eq!(auth(&dev), Err(AuthError::HolderLacksRole));
    assert_eq!(auth(&ci_dev), Err(AuthError::HolderLacksRole), "a service token is bound by its holder");
    let id = ci.id.clone();
    let refused = store.write_blocking(move |tx| rotate(tx, t0, &Origin::system(), &id, None));
    assert!(matches!(refused, Err(TokenError::HolderLacksRole)), "rotation cannot carry the old role");

    // Disabled: everything she owns or holds is revoked.
    let o = Origin::system();
    store.write_blocking(move |tx| crate::auth::roles::disable(tx, t0, &o, "bob", "alice")).unwrap();
    for secret in [&dev, &ci_dev] {
        assert_eq!(auth(secret), Err(AuthError::Revoked));
    }
    assert!(store.read(|tx| list(tx, None)).unwrap().is_empty());
}
