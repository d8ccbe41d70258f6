//! `tether models`: carrying models into the site.
//!
//! On the connected side, with no appliance: `keygen` makes the site's
//! model-signing key, `pack` turns a model directory into a signed bundle,
//! `verify` checks one. On the site, over the API: `trust` (a security
//! officer) sets which key bundles must be signed with, `import` uploads a
//! bundle for the appliance to verify and load into a model server, `list`
//! shows what was imported.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::json;

use super::client::ApiClient;
use super::keyfile::{read_private_key, read_public_key};
use super::progress::{Meter, size};
use tether_domain::llm::bundle::{self, About, ModelFormat};
use tether_domain::llm::models::{ModelInfo, upload_body};

const PRIVATE_KEY_FILE: &str = "model-signing.key";
const PUBLIC_KEY_FILE: &str = "model-signing.pub";

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make the site's model-signing key pair in DIR (on the connected side;
    /// keep the private key offline, give the public key to the security officer).
    Keygen {
        /// Where to write model-signing.key (mode 0600) and model-signing.pub.
        #[arg(long)]
        out: PathBuf,
    },
    /// Pack the model files under DIR into a signed bundle.
    Pack {
        dir: PathBuf,
        /// The bundle file to write.
        #[arg(long)]
        out: PathBuf,
        /// The name clients will use, like llama3.1:8b-q4 (lowercase).
        #[arg(long)]
        name: String,
        /// gguf (one .gguf file) or safetensors (a Hugging Face model directory).
        #[arg(long)]
        format: ModelFormat,
        /// The model's license, as its publisher states it.
        #[arg(long)]
        license: String,
        /// Where the model came from (URL or delivery reference).
        #[arg(long)]
        origin: String,
        /// The site's model-signing private key (from `keygen`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a bundle's signature and every file against a public key, writing nothing.
    Verify {
        bundle: PathBuf,
        /// The site's model-signing public key (model-signing.pub).
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Make FILE (a public key) the site's model-signing key (security officer).
    Trust { file: PathBuf },
    /// Upload a bundle; the appliance verifies it whole, then loads it into the model server.
    Import {
        bundle: PathBuf,
        /// ollama (through its blob and create API) or vllm-dir (the appliance's vllm_model_dir).
        #[arg(long, default_value = "ollama")]
        into: String,
        /// Which Ollama upstream, if there are several.
        #[arg(long)]
        upstream: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The models imported, and the key bundles must be signed with.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Keygen { out } => keygen(&out),
        Command::Pack { dir, out, name, format, license, origin, key } => {
            let key = read_private_key(&key)?;
            let about = About { name, format, license, origin };
            let packed_at = tether_base::clock::Clock::now(&tether_base::clock::SystemClock).to_rfc3339();
            let mut meter = Meter::new();
            let manifest = tokio::task::spawn_blocking(move || {
                bundle::pack(&dir, about, &key, &out, packed_at, &mut |p| meter.show(p.stage, p.done, p.total))
                    .map(|m| (m, out))
            })
            .await??;
            let (manifest, out) = manifest;
            println!(
                "packed {} ({} file(s), {}) into {}",
                manifest.name,
                manifest.files.len(),
                size(manifest.total_bytes()),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { bundle, public_key } => {
            let key = read_public_key(&public_key)?;
            let mut meter = Meter::new();
            let verified = tokio::task::spawn_blocking(move || {
                bundle::verify(&bundle, &key, &mut |p| meter.show(p.stage, p.done, p.total))
            })
            .await??;
            println!(
                "{}: signature by key {} and all {} file(s) ({}) check out",
                verified.manifest.name,
                verified.key_id,
                verified.sections.len(),
                size(verified.manifest.total_bytes())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Trust { file } => {
            let pem = read_public_key(&file)?.to_pem();
            let client = ApiClient::from_env(Duration::from_secs(30))?;
            let set = client
                .call(Method::PUT, "/api/v1/llm/model-signing-key", Some(&json!({"public_key_pem": pem})), &[])
                .await?;
            println!("bundles must now be signed by key {}", set["key_id"].as_str().unwrap_or("?"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { bundle, into, upstream, json } => import(&bundle, &into, upstream, json).await,
        Command::List { json } => {
            let client = ApiClient::from_env(Duration::from_secs(30))?;
            let list = client.call(Method::GET, "/api/v1/llm/models", None, &[]).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            match list["signing_key"]["key_id"].as_str() {
                Some(id) => println!("model-signing key: {id}"),
                None => println!("model-signing key: none set (a security officer runs `tether models trust`)"),
            }
            let models: Vec<ModelInfo> = serde_json::from_value(list["models"].clone())?;
            if !models.is_empty() {
                println!("{:<32} {:<12} {:>10}  {:<24} {:<22} BY", "NAME", "FORMAT", "SIZE", "INTO", "IMPORTED");
            }
            for m in models {
                let into = match (&m.upstream, &m.path) {
                    (Some(u), _) => format!("ollama:{u}"),
                    (None, Some(p)) => p.clone(),
                    _ => m.into.clone(),
                };
                println!(
                    "{:<32} {:<12} {:>10}  {:<24} {:<22} {}",
                    m.name,
                    m.format,
                    size(m.bytes),
                    into,
                    m.imported_at,
                    m.imported_by
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    let (private, public) = (out.join(PRIVATE_KEY_FILE), out.join(PUBLIC_KEY_FILE));
    if private.exists() || public.exists() {
        bail!("{} already holds a model-signing key; refusing to overwrite it", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let key = super::release::write_key_pair(&private, &public)?;
    println!("model-signing key {} written:", key.id());
    println!("  {}  (private: keep it offline, with whoever packs models)", private.display());
    println!("  {}  (public: `tether models trust` it on the appliance)", public.display());
    Ok(ExitCode::SUCCESS)
}

async fn import(path: &Path, into: &str, upstream: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    // What the bundle claims, to say what is being uploaded; the appliance
    // trusts none of it until it has checked the signature.
    let claimed = bundle::peek_manifest(path)?;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let length = file.metadata()?.len();
    let client = ApiClient::from_env(Duration::from_secs(30))?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("into", into);
    if let Some(upstream) = &upstream {
        query.append_pair("upstream", upstream);
    }
    eprintln!("uploading {} ({}) for import into {into}", claimed.name, size(length));
    let mut meter = Meter::new();
    let mut sent = 0;
    let body = upload_body(file, move |n| {
        sent += n;
        meter.show("uploading", sent, length);
    });
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        // The upload's last byte is followed by the appliance's own work.
        tokio::time::sleep(Duration::from_secs(2)).await;
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            eprintln!("still importing ({}s)", started.elapsed().as_secs());
        }
    });
    let answer = client
        .upload(&format!("/api/v1/llm/models/import?{}", query.finish()), body, length, "application/x-tar")
        .await;
    waiting.abort();
    let model: ModelInfo = serde_json::from_value(answer?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&model)?);
    } else {
        let place = model.upstream.map(|u| format!("Ollama upstream {u}")).or(model.path).unwrap_or(model.into);
        println!(
            "imported {} ({}, {}) into {place}; signed by key {}",
            model.name,
            model.format,
            size(model.bytes),
            model.key_id
        );
    }
    Ok(ExitCode::SUCCESS)
}
