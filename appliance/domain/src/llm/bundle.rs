//! A model bundle: how a model crosses the air gap. A signed bundle
//! ([`crate::signed_bundle`]) whose manifest names the model, its format,
//! license and origin; signed by the site's model-signing key. The format
//! is written up in `offline-models/README.md`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::signed_bundle::{self, Contents, check_files};
pub use crate::signed_bundle::{
    BundleError, Digesting, FileEntry, MANIFEST, Progress, SIGNATURE, Section, open_section,
};
use tether_base::crypto::p256::{PrivateKey, PublicKey};

const BUNDLE_VERSION: u32 = 1;

/// A model bundle whose signature and every file checked out.
pub type Verified = signed_bundle::Verified<Manifest>;

/// How the model's weights are stored, which decides how a server loads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    /// One `.gguf` file (llama.cpp, Ollama; vLLM too).
    Gguf,
    /// A Hugging Face model directory: `config.json`, `*.safetensors`, tokenizer (vLLM).
    Safetensors,
}

impl ModelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Safetensors => "safetensors",
        }
    }
}

impl std::str::FromStr for ModelFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<ModelFormat, String> {
        match s {
            "gguf" => Ok(ModelFormat::Gguf),
            "safetensors" => Ok(ModelFormat::Safetensors),
            other => Err(format!("unknown model format {other:?}: use gguf or safetensors")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub bundle_version: u32,
    /// The name clients will call the model by (`llama3.1:8b-q4`).
    pub name: String,
    pub format: ModelFormat,
    pub license: String,
    /// Where the model came from (a URL, a vendor's delivery reference).
    pub origin: String,
    /// RFC 3339.
    pub packed_at: String,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    pub fn total_bytes(&self) -> u64 {
        signed_bundle::total_bytes(&self.files)
    }
}

impl Contents for Manifest {
    const SIGNED_LABEL: &'static [u8] = b"tether.model-bundle.v1\0";
    const TRUSTED: &'static str = "this site's model-signing key";
    const UNTRUSTED_HINT: &'static str = "pack it with the site's key, or have a security officer trust that key";

    fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Whether the manifest is one a server can be given safely: a model
    /// name servers accept, paths that stay inside the model's directory,
    /// files that fit the format.
    fn check(&self) -> Result<(), String> {
        if self.bundle_version != BUNDLE_VERSION {
            return Err(format!("bundle version {} (this tether reads {BUNDLE_VERSION})", self.bundle_version));
        }
        check_model_name(&self.name)?;
        check_files(&self.files)?;
        match self.format {
            ModelFormat::Gguf if self.files.len() != 1 || !self.files[0].path.ends_with(".gguf") => {
                Err("a gguf bundle holds exactly one file, named *.gguf".into())
            }
            ModelFormat::Safetensors if !self.files.iter().any(|f| f.path.ends_with(".safetensors")) => {
                Err("a safetensors bundle holds at least one *.safetensors file".into())
            }
            _ => Ok(()),
        }
    }
}

/// A model name both Ollama and a directory of vLLM models accept:
/// lowercase letters, digits, `.`, `_`, `-`, and an optional `:tag`.
pub fn check_model_name(name: &str) -> Result<(), String> {
    let word = |s: &str| {
        (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && s.as_bytes()[0].is_ascii_alphanumeric()
    };
    let ok = match name.split_once(':') {
        Some((model, tag)) => word(model) && word(tag),
        None => word(name),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "model name {name:?}: use lowercase letters, digits, '.', '_', '-' (up to 64, starting with a letter or \
             digit), optionally ':' and a tag of the same"
        ))
    }
}

/// What `pack` is told about the model; the files come from the directory.
#[derive(Debug, Clone)]
pub struct About {
    pub name: String,
    pub format: ModelFormat,
    pub license: String,
    pub origin: String,
}

/// Packs every regular file under `dir` into a model bundle at `out`,
/// signed with `key` (see [`signed_bundle::pack`]).
pub fn pack(
    dir: &Path,
    about: About,
    key: &PrivateKey,
    out: &Path,
    packed_at: String,
    progress: &mut dyn FnMut(Progress),
) -> Result<Manifest, BundleError> {
    let manifest = |files| Manifest {
        bundle_version: BUNDLE_VERSION,
        name: about.name,
        format: about.format,
        license: about.license,
        origin: about.origin,
        packed_at,
        files,
    };
    signed_bundle::pack(dir, manifest, key, out, progress)
}

/// Checks the model bundle at `path` against the site's key. Writes nothing.
pub fn verify(path: &Path, trusted: &PublicKey, progress: &mut dyn FnMut(Progress)) -> Result<Verified, BundleError> {
    signed_bundle::verify(path, std::slice::from_ref(trusted), progress)
}

/// Reads the bundle's manifest without checking anything, to show what a
/// bundle claims to be. Never a basis for trusting it.
pub fn peek_manifest(path: &Path) -> Result<Manifest, BundleError> {
    signed_bundle::peek_manifest(path)
}

#[cfg(test)]
mod tests;
