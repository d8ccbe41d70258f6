use super::*;

fn manifest(version: &str, min_version: &str, commit: char) -> Manifest {
    Manifest {
        bundle_version: 1,
        version: version.parse().unwrap(),
        min_version: min_version.parse().unwrap(),
        commit: commit.to_string().repeat(40),
        built: "2026-12-04T00:00:00Z".into(),
        files: Vec::new(),
    }
}

#[test]
fn versions_compare_as_numbers() {
    let v = |s: &str| s.parse::<Version>().unwrap();
    assert!(v("0.10.0") > v("0.9.7"));
    assert!(v("1.0.0") > v("0.99.99"));
    assert_eq!(v("0.1.0").to_string(), "0.1.0");
    for bad in ["1.2", "1.2.3.4", "v1.2.3", "1.2.x", "", "1..2"] {
        assert!(bad.parse::<Version>().is_err(), "{bad}");
    }
}

#[test]
fn what_may_go_over_what() {
    let installed = manifest("0.2.0", "0.1.0", 'a');
    assert_eq!(decide(&installed, None, false), Ok(Decision::Install));
    assert_eq!(decide(&installed, None, true), Err(Refusal::NothingToUpgrade));
    assert_eq!(decide(&installed, Some(&installed), true), Ok(Decision::AlreadyInstalled));
    assert_eq!(decide(&installed, Some(&installed), false), Ok(Decision::AlreadyInstalled));
    assert!(matches!(
        decide(&manifest("0.2.0", "0.1.0", 'b'), Some(&installed), true),
        Err(Refusal::SameVersionOtherBuild { .. })
    ));

    let newer = manifest("0.3.0", "0.2.0", 'c');
    assert_eq!(decide(&newer, Some(&installed), true), Ok(Decision::Upgrade { from: installed.version }));
    assert_eq!(decide(&newer, Some(&installed), false), Err(Refusal::UseUpgrade { installed: installed.version }));

    let older = manifest("0.1.5", "0.1.0", 'd');
    let refused = decide(&older, Some(&installed), true).unwrap_err();
    assert!(matches!(refused, Refusal::Downgrade { .. }));
    assert!(refused.to_string().contains("refusing to downgrade"), "{refused}");
    assert!(matches!(decide(&older, Some(&installed), false), Err(Refusal::Downgrade { .. })));

    let far = manifest("0.9.0", "0.5.0", 'e');
    let refused = decide(&far, Some(&installed), true).unwrap_err();
    assert!(refused.to_string().contains("upgrade to 0.5.0 first"), "{refused}");
}

fn release_dir(extra: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = [BINARY].into_iter().chain(SYSTEMD_FILES).map(|p| (p, p.as_bytes())).chain(extra.iter().copied());
    for (path, bytes) in files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, bytes).unwrap();
    }
    dir
}

fn about() -> About {
    About {
        version: "0.2.0".parse().unwrap(),
        min_version: "0.1.0".parse().unwrap(),
        commit: "ab".repeat(20),
        built: "2026-12-04T00:00:00Z".into(),
    }
}

#[test]
fn a_packed_release_verifies_with_any_trusted_key_and_only_those() {
    let key = PrivateKey::generate().unwrap();
    let other = PrivateKey::generate().unwrap().public();
    let dir = release_dir(&[("models/tiny.tar", b"model"), (README, b"read me")]);
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("tether.bundle");
    let manifest = pack(dir.path(), about(), &key, &bundle, &mut |_| {}).unwrap();
    assert_eq!(manifest.id(), "0.2.0-abababababab");
    assert_eq!(manifest.files.len(), 7);

    let verified = verify(&bundle, &[other.clone(), key.public()], &mut |_| {}).unwrap();
    assert_eq!((verified.manifest, verified.key_id), (manifest, key.public().id()));
    let refused = verify(&bundle, &[other], &mut |_| {}).unwrap_err();
    assert!(matches!(refused, BundleError::UntrustedKey { .. }));
    assert!(refused.to_string().contains("--trust PUBKEY"), "{refused}");

    // A model bundle's signature does not pass for a release's, nor the reverse.
    assert!(crate::llm::bundle::verify(&bundle, &key.public(), &mut |_| {}).is_err());
}

#[test]
fn a_release_holds_what_the_installer_needs_and_nothing_it_would_not_place() {
    let key = PrivateKey::generate().unwrap();
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("x.bundle");

    let stray = release_dir(&[("etc/cron.d/evil", b"* * * * * root sh")]);
    let refused = pack(stray.path(), about(), &key, &bundle, &mut |_| {}).unwrap_err();
    assert!(refused.to_string().contains("etc/cron.d/evil is not part of a release bundle"), "{refused}");

    let missing = release_dir(&[]);
    std::fs::remove_file(missing.path().join("systemd/tether.sysusers")).unwrap();
    let refused = pack(missing.path(), about(), &key, &bundle, &mut |_| {}).unwrap_err();
    assert!(refused.to_string().contains("holds systemd/tether.sysusers"), "{refused}");

    let backwards = About { min_version: "0.3.0".parse().unwrap(), ..about() };
    assert!(pack(release_dir(&[]).path(), backwards, &key, &bundle, &mut |_| {}).is_err());
    assert!(!bundle.exists());
}
