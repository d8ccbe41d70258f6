use std::io::Read;

use super::*;
use crate::signed_bundle::{SIGNATURE_ALGORITHM, Signature, append, signed_message};
use base64::Engine;
use std::path::PathBuf;

fn model_dir(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, bytes) in files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, bytes).unwrap();
    }
    dir
}

fn about(format: ModelFormat) -> About {
    About { name: "tiny:q4".into(), format, license: "Apache-2.0".into(), origin: "https://example.org/tiny".into() }
}

/// A one-file GGUF model packed and signed with `key`: the bundle's
/// directory (kept alive), its path, and the weights.
fn packed(key: &PrivateKey) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let weights: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let dir = model_dir(&[("tiny.gguf", &weights)]);
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("tiny.tar");
    pack(dir.path(), about(ModelFormat::Gguf), key, &bundle, "2026-11-26T00:00:00Z".into(), &mut |_| {}).unwrap();
    (out, bundle, weights)
}

fn flip_byte_at(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// A tar with exactly these members, to build bundles `pack` never would.
fn raw_bundle(members: &[(&str, Vec<u8>)]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut tar = tar::Builder::new(file.reopen().unwrap());
    for (name, bytes) in members {
        append(&mut tar, name, bytes.len() as u64, &bytes[..], Path::new(name)).unwrap();
    }
    tar.finish().unwrap();
    file
}

fn signed(key: &PrivateKey, manifest: &Manifest) -> (Vec<u8>, Vec<u8>) {
    let manifest = serde_json::to_vec(manifest).unwrap();
    let signature = Signature {
        algorithm: SIGNATURE_ALGORITHM.into(),
        key_id: key.public().id(),
        signature: base64::engine::general_purpose::STANDARD
            .encode(key.sign(&signed_message::<Manifest>(&manifest)).unwrap()),
    };
    (manifest, serde_json::to_vec(&signature).unwrap())
}

#[test]
fn a_packed_bundle_verifies_and_its_sections_hold_the_files_bytes() {
    let key = PrivateKey::generate().unwrap();
    let (_dir, bundle, weights) = packed(&key);
    let mut last = None;
    let verified = verify(&bundle, &key.public(), &mut |p| last = Some(p)).unwrap();
    let last = last.unwrap();
    assert_eq!((last.done, last.total), (weights.len() as u64, weights.len() as u64));
    assert_eq!(verified.manifest.name, "tiny:q4");
    assert_eq!(verified.key_id, key.public().id());
    assert_eq!(verified.sections.len(), 1);
    let mut read = Vec::new();
    open_section(&bundle, &verified.sections[0]).unwrap().read_to_end(&mut read).unwrap();
    assert_eq!(read, weights);
    assert_eq!(verified.sections[0].entry.sha256, hex::encode(tether_base::secret::sha256(&weights)));
    assert_eq!(peek_manifest(&bundle).unwrap(), verified.manifest);
}

#[test]
fn one_flipped_byte_anywhere_is_refused() {
    let key = PrivateKey::generate().unwrap();
    let (_dir, bundle, _) = packed(&key);
    let section = verify(&bundle, &key.public(), &mut |_| {}).unwrap().sections[0].clone();

    flip_byte_at(&bundle, section.offset + 123_456);
    assert!(matches!(verify(&bundle, &key.public(), &mut |_| {}), Err(BundleError::WrongDigest { .. })));
    flip_byte_at(&bundle, section.offset + 123_456);

    // The manifest's data starts after its 512-byte header; "Apache" sits inside.
    let bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.windows(6).position(|w| w == b"Apache").unwrap();
    flip_byte_at(&bundle, at as u64);
    assert!(matches!(verify(&bundle, &key.public(), &mut |_| {}), Err(BundleError::BadSignature)));
}

#[test]
fn another_keys_signature_and_no_signature_are_refused() {
    let key = PrivateKey::generate().unwrap();
    let (_dir, bundle, _) = packed(&key);
    let site = PrivateKey::generate().unwrap().public();
    match verify(&bundle, &site, &mut |_| {}) {
        Err(BundleError::UntrustedKey { signed_by, trusted, .. }) => {
            assert_eq!((signed_by, trusted), (key.public().id(), site.id()));
        }
        other => panic!("{other:?}"),
    }

    let weights = b"weights".to_vec();
    let manifest = Manifest {
        bundle_version: 1,
        name: "tiny".into(),
        format: ModelFormat::Gguf,
        license: "MIT".into(),
        origin: "here".into(),
        packed_at: "2026-11-26T00:00:00Z".into(),
        files: vec![FileEntry {
            path: "tiny.gguf".into(),
            size: weights.len() as u64,
            sha256: hex::encode(tether_base::secret::sha256(&weights)),
        }],
    };
    let unsigned =
        raw_bundle(&[(MANIFEST, serde_json::to_vec(&manifest).unwrap()), ("files/tiny.gguf", weights.clone())]);
    assert!(matches!(verify(unsigned.path(), &key.public(), &mut |_| {}), Err(BundleError::Unsigned)));

    // Signed, but a file more than the manifest lists.
    let (m, s) = signed(&key, &manifest);
    let extra = raw_bundle(&[
        (MANIFEST, m.clone()),
        (SIGNATURE, s.clone()),
        ("files/tiny.gguf", weights.clone()),
        ("files/run.sh", b"rm -rf /".to_vec()),
    ]);
    assert!(matches!(verify(extra.path(), &key.public(), &mut |_| {}), Err(BundleError::NotABundle(_))));
    let good = raw_bundle(&[(MANIFEST, m), (SIGNATURE, s), ("files/tiny.gguf", weights)]);
    verify(good.path(), &key.public(), &mut |_| {}).unwrap();
}

#[test]
fn a_signed_manifest_must_still_name_safe_paths_and_fit_its_format() {
    let key = PrivateKey::generate().unwrap();
    let entry = |path: &str| FileEntry { path: path.into(), size: 1, sha256: "ab".repeat(32) };
    let manifest = |name: &str, format, files| Manifest {
        bundle_version: 1,
        name: name.into(),
        format,
        license: "MIT".into(),
        origin: "here".into(),
        packed_at: "2026-11-26T00:00:00Z".into(),
        files,
    };
    for bad in [
        manifest("tiny", ModelFormat::Gguf, vec![entry("../../etc/cron.d/x.gguf")]),
        manifest("tiny", ModelFormat::Gguf, vec![entry("/etc/x.gguf")]),
        manifest("tiny", ModelFormat::Gguf, vec![entry(".hidden.gguf")]),
        manifest("tiny", ModelFormat::Gguf, vec![entry("a.gguf"), entry("b.gguf")]),
        manifest("tiny", ModelFormat::Safetensors, vec![entry("config.json")]),
        manifest("Tiny/../x", ModelFormat::Gguf, vec![entry("a.gguf")]),
        manifest("tiny", ModelFormat::Gguf, vec![]),
    ] {
        let (m, s) = signed(&key, &bad);
        let bundle = raw_bundle(&[(MANIFEST, m), (SIGNATURE, s)]);
        assert!(
            matches!(verify(bundle.path(), &key.public(), &mut |_| {}), Err(BundleError::BadManifest(_))),
            "{bad:?}"
        );
    }
    assert!(check_model_name("llama3.1:8b-instruct-q4_k_m").is_ok());
}

#[test]
fn pack_refuses_what_a_bundle_cannot_carry() {
    let key = PrivateKey::generate().unwrap();
    let two = model_dir(&[("a.gguf", b"a"), ("b.gguf", b"b")]);
    let out = two.path().join("out.tar");
    let err = pack(two.path(), about(ModelFormat::Gguf), &key, &out, "t".into(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, BundleError::BadManifest(_)), "{err}");
    assert!(!out.exists() && !out.with_extension("partial").exists());

    let safetensors =
        model_dir(&[("config.json", b"{}"), ("model-00001.safetensors", b"w"), ("tok/vocab.json", b"{}")]);
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("st.tar");
    let manifest =
        pack(safetensors.path(), about(ModelFormat::Safetensors), &key, &bundle, "t".into(), &mut |_| {}).unwrap();
    let paths: Vec<_> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["config.json", "model-00001.safetensors", "tok/vocab.json"]);
    assert_eq!(verify(&bundle, &key.public(), &mut |_| {}).unwrap().sections.len(), 3);
}
