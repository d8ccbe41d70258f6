//! Offline models, as the site carries them in: the site's model-signing key
//! made and a model packed with the CLI on the "connected side", the key
//! trusted by a security officer, the bundle imported by an admin into the
//! site's Ollama (the fake speaks Ollama's blob and create API and checks
//! each blob against its digest, as Ollama does) or into a vLLM model
//! directory. Tampered, foreign and unsigned bundles are refused with
//! nothing written anywhere.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use reqwest::Method;
use serde_json::{Value, json};

use crate::fake_llm::FakeLlm;
use crate::harness::{Appliance, bin, count_events};

fn ok(out: Output) -> (String, String) {
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

fn refused(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a refusal; stdout: {}", String::from_utf8_lossy(&out.stdout));
    stderr
}

/// `tether models ...` on the connected side: no appliance involved.
fn offline(args: &[&str]) -> Output {
    std::process::Command::new(bin()).arg("models").args(args).output().unwrap()
}

/// Deterministic bytes that do not compress, like weights.
fn weights(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn pack(dir: &Path, out: &Path, name: &str, format: &str, key: &Path) -> (String, String) {
    ok(offline(&[
        "pack",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--name",
        name,
        "--format",
        format,
        "--license",
        "Apache-2.0",
        "--origin",
        "https://models.example.org/tiny",
        "--key",
        key.to_str().unwrap(),
    ]))
}

fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    ok(offline(&["keygen", "--out", dir.to_str().unwrap()]));
    (dir.join("model-signing.key"), dir.join("model-signing.pub"))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_bundle_is_imported_into_ollama_or_a_vllm_directory_and_a_tampered_or_foreign_one_leaves_nothing() {
    let vllm_dir = tempfile::tempdir().unwrap();
    let vllm_path: &'static str = vllm_dir.path().to_str().unwrap().to_owned().leak();
    let a = Appliance::start_with(vec![("TETHER_VLLM_MODEL_DIR", vllm_path)]);
    let ollama = FakeLlm::start().await;
    let body = json!({"kind": "ollama", "url": ollama.url(), "models": ["tiny:q4"]});
    let (s, v, _) = a.api().send(Method::PUT, "/api/v1/llm/upstreams/ollama-a", Some(&body), &[]).await;
    assert_eq!(s, 200, "{v}");

    // The connected side: the site's key, a 3 MiB GGUF model, a signed bundle.
    let work = tempfile::tempdir().unwrap();
    let (private_key, public_key) = keygen(&work.path().join("keys"));
    assert_eq!(std::fs::metadata(&private_key).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(
        refused(offline(&["keygen", "--out", work.path().join("keys").to_str().unwrap()]))
            .contains("refusing to overwrite")
    );
    let model = work.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let gguf = weights(3 << 20, 7);
    std::fs::write(model.join("tiny-q4.gguf"), &gguf).unwrap();
    let bundle = work.path().join("tiny.tar");
    let (_, progress) = pack(&model, &bundle, "tiny:q4", "gguf", &private_key);
    assert!(progress.contains("hashing: 3.0 MiB of 3.0 MiB (100%)"), "{progress}");
    assert!(progress.contains("writing: 3.0 MiB of 3.0 MiB (100%)"), "{progress}");
    let (verified, _) =
        ok(offline(&["verify", bundle.to_str().unwrap(), "--public-key", public_key.to_str().unwrap()]));
    assert!(verified.contains("all 1 file(s)"), "{verified}");

    // Nothing is imported before a security officer trusts a key; an admin cannot.
    let import = |bundle: &Path, extra: &[&str]| {
        let mut args = vec!["models", "import", bundle.to_str().unwrap()];
        args.extend_from_slice(extra);
        a.cli(&args).output().unwrap()
    };
    assert!(refused(import(&bundle, &[])).contains("model_signing_key_missing"));
    assert!(refused(a.cli(&["models", "trust", public_key.to_str().unwrap()]).output().unwrap()).contains("forbidden"));
    let officer = a.officer_token().await;
    let (trusted, _) =
        ok(a.cli(&["models", "trust", public_key.to_str().unwrap()]).env("TETHER_TOKEN", &officer).output().unwrap());
    assert!(trusted.contains("bundles must now be signed by key"), "{trusted}");

    // One flipped byte in the weights (the last member; a tar ends in two
    // zero blocks): refused whole, nothing reaches Ollama, no staging left.
    let tampered = work.path().join("tampered.tar");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() - 1024 - 4096;
    bytes[at] ^= 0x01;
    std::fs::write(&tampered, &bytes).unwrap();
    let why = refused(import(&tampered, &[]));
    assert!(why.contains("bundle_refused") && why.contains("does not match its SHA-256"), "{why}");

    // Signed by a key the site does not trust.
    let (other_key, _) = keygen(&work.path().join("other-keys"));
    let foreign = work.path().join("foreign.tar");
    pack(&model, &foreign, "tiny:q4", "gguf", &other_key);
    let why = refused(import(&foreign, &[]));
    assert!(why.contains("not by this site's model-signing key"), "{why}");

    // No signature at all: the same manifest and file, manifest.sig left out.
    let unsigned = work.path().join("unsigned.tar");
    {
        let mut tar = tar::Builder::new(std::fs::File::create(&unsigned).unwrap());
        let mut archive = tar::Archive::new(std::fs::File::open(&bundle).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_str() != Some("manifest.sig") {
                let header = entry.header().clone();
                tar.append(&header, &mut entry).unwrap();
            }
        }
        tar.finish().unwrap();
    }
    let why = refused(import(&unsigned, &[]));
    assert!(why.contains("is not signed"), "{why}");

    assert!(ollama.seen.lock().unwrap().import_calls.is_empty(), "no refused bundle reached the model server");
    assert!(entries(&a.data_dir().join("model-imports")).is_empty(), "no staged bundle is left");
    assert!(entries(vllm_dir.path()).is_empty());

    // The good bundle: each file a blob checked by its digest, then the model.
    let (said, progress) = ok(import(&bundle, &[]));
    assert!(said.contains("imported tiny:q4 (gguf, 3.0 MiB) into Ollama upstream ollama-a"), "{said}");
    assert!(progress.contains("uploading: 3.0 MiB of 3.0 MiB (100%)"), "{progress}");
    let digest = format!("sha256:{}", hex::encode(tether_base::secret::sha256(&gguf)));
    {
        let seen = ollama.seen.lock().unwrap();
        assert_eq!(seen.blobs.get(&digest), Some(&gguf), "Ollama holds the weights, byte for byte");
        assert_eq!(
            seen.import_calls,
            [format!("HEAD /api/blobs/{digest}"), format!("POST /api/blobs/{digest}"), "POST /api/create".into()]
        );
        assert_eq!(
            seen.created,
            [json!({"model": "tiny:q4", "files": {"tiny-q4.gguf": digest}, "license": "Apache-2.0", "stream": false})]
        );
    }
    assert!(entries(&a.data_dir().join("model-imports")).is_empty());
    assert!(refused(import(&bundle, &[])).contains("model_exists"));

    // A safetensors model into the vLLM directory, checked again as it is copied.
    let st = work.path().join("st");
    std::fs::create_dir_all(st.join("tokenizer")).unwrap();
    let shard = weights(1 << 20, 11);
    let config = br#"{"architectures": ["LlamaForCausalLM"]}"#;
    std::fs::write(st.join("config.json"), config).unwrap();
    std::fs::write(st.join("model.safetensors"), &shard).unwrap();
    std::fs::write(st.join("tokenizer/tokenizer.json"), b"{}").unwrap();
    let st_bundle = work.path().join("st.tar");
    pack(&st, &st_bundle, "tiny-st", "safetensors", &private_key);
    assert!(
        refused(import(&st_bundle, &["--into", "vllm-dir", "--upstream", "ollama-a"])).contains("names no upstream")
    );
    let mut bytes = std::fs::read(&st_bundle).unwrap();
    let at = bytes.windows(8).position(|w| w == &shard[..8]).unwrap() + 1000;
    bytes[at] ^= 0x80;
    std::fs::write(&tampered, &bytes).unwrap();
    assert!(refused(import(&tampered, &["--into", "vllm-dir"])).contains("does not match its SHA-256"));
    assert!(entries(vllm_dir.path()).is_empty(), "nothing half-imported");
    let (said, _) = ok(import(&st_bundle, &["--into", "vllm-dir", "--json"]));
    let imported: Value = serde_json::from_str(&said).unwrap();
    assert_eq!(
        (imported["into"].as_str(), imported["bytes"].as_u64()),
        (Some("vllm-dir"), Some((shard.len() + config.len() + 2) as u64))
    );
    assert_eq!(entries(vllm_dir.path()), ["tiny-st"]);
    let placed = vllm_dir.path().join("tiny-st");
    assert_eq!(std::fs::read(placed.join("model.safetensors")).unwrap(), shard);
    assert_eq!(std::fs::read(placed.join("tokenizer/tokenizer.json")).unwrap(), b"{}");

    // What was imported, by whom, signed by which key.
    let (listed, _) = ok(a.cli(&["models", "list", "--json"]).output().unwrap());
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let key_id = listed["signing_key"]["key_id"].as_str().unwrap();
    let models = listed["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{listed}");
    let tiny = models.iter().find(|m| m["name"] == "tiny:q4").unwrap();
    assert_eq!((tiny["into"].as_str(), tiny["upstream"].as_str()), (Some("ollama"), Some("ollama-a")));
    assert!(models.iter().all(|m| m["key_id"] == key_id && m["imported_by"] == "admin"), "{listed}");
    let (table, _) = ok(a.cli(&["models", "list"]).output().unwrap());
    assert!(table.contains(&format!("model-signing key: {key_id}")) && table.contains("ollama:ollama-a"), "{table}");

    // Audit: the officer's key, both imports, every refusal with its reason.
    let records = a.api().audit_log().await;
    assert_eq!(count_events(&records, "llm.model_signing_key_set"), 1);
    assert_eq!(count_events(&records, "llm.model_imported"), 2);
    let refusals: Vec<&Value> = records.iter().filter(|r| r["event_type"] == "llm.model_import_refused").collect();
    assert_eq!(refusals.len(), 4, "tampered, foreign, unsigned, tampered again");
    assert!(refusals.iter().all(|r| r["result"] == "denied"), "{refusals:?}");
    let (_, verdict) = a.api().get("/api/v1/audit/verify").await;
    assert_eq!(verdict["ok"], true, "{verdict}");
}
