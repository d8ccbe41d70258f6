//! `worker.toml`: what this worker is willing to run.
//!
//! The broker cannot widen this: a handler that is not enabled here does
//! not run, whatever a task asks for. `echo` is on unless disabled;
//! `command` runs only the commands named here, each a fixed argv whose
//! `{param}` placeholders are filled with typed, checked values — as
//! separate arguments, never through a shell.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use tether_api::config::parse_duration;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkerConfig {
    /// Labels to ask for at enrollment (a token may fix them instead).
    pub labels: Option<Vec<String>>,
    /// Tasks run at once.
    pub concurrency: Option<usize>,
    #[serde(default)]
    pub handlers: RawHandlers,
    #[serde(default)]
    pub commands: BTreeMap<String, RawCommand>,
    /// The model server `llm.chat` tasks use; absent, they are refused.
    pub llm: Option<RawLlm>,
}

/// `[llm]`: the model server this worker calls for `llm.chat` tasks — its
/// own Ollama or vLLM, or the appliance's gateway with a key of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlm {
    /// `ollama` or `openai` (vLLM, or the appliance's gateway).
    pub kind: String,
    /// Base URL: `http://127.0.0.1:11434`, or `https://tether.site.lan:8443`.
    pub url: String,
    /// The models tasks may ask for.
    pub models: Vec<String>,
    /// A file (mode 0600) with the bearer credential (a gateway key).
    pub key_file: Option<String>,
    /// The CA an `https` server's certificate chains to (PEM).
    pub ca_file: Option<String>,
    /// How long one chat may take (default 5m).
    pub timeout: Option<String>,
}

/// `[llm]`, validated and read.
#[derive(Clone)]
pub struct LlmSpec {
    pub protocol: tether_domain::llm::wire::Protocol,
    pub url: String,
    pub models: Vec<String>,
    pub key: Option<zeroize::Zeroizing<String>>,
    pub ca_pem: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for LlmSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmSpec").field("url", &self.url).field("models", &self.models).finish_non_exhaustive()
    }
}

impl RawLlm {
    fn validate(self) -> anyhow::Result<LlmSpec> {
        use tether_domain::llm::wire::Protocol;
        let protocol = match self.kind.as_str() {
            "ollama" => Protocol::Ollama,
            "openai" => Protocol::OpenAi,
            other => anyhow::bail!("llm.kind: {other:?} is not ollama or openai"),
        };
        tether_domain::llm::upstreams::check("llm", &self.url, &self.models)
            .map_err(|e| anyhow::anyhow!("llm: {e}"))?;
        let key = self.key_file.map(|p| tether_base::files::read_secret(Path::new(&p))).transpose()?;
        let ca_pem = self
            .ca_file
            .map(|p| std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("llm.ca_file {p}: {e}")))
            .transpose()?;
        let timeout = self
            .timeout
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| anyhow::anyhow!("llm.timeout: {e}"))?
            .unwrap_or(Duration::from_secs(300));
        Ok(LlmSpec {
            protocol,
            url: self.url.trim_end_matches('/').to_owned(),
            models: self.models,
            key,
            ca_pem,
            timeout,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHandlers {
    #[serde(default = "yes")]
    pub echo: bool,
}

impl Default for RawHandlers {
    fn default() -> Self {
        RawHandlers { echo: true }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommand {
    pub argv: Vec<String>,
    pub timeout: Option<String>,
    pub max_output_bytes: Option<usize>,
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    /// The broker's secrets this command receives, and how.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSpec>,
}

/// How a command receives a secret: in an environment variable, or as a
/// file (mode 0600) in a private directory named by `TETHER_SECRETS_DIR`,
/// removed when the command ends. Never as an argument.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretSpec {
    Env(String),
    File(String),
}

/// Environment variables a secret may not take over.
const RESERVED_ENV: [&str; 3] = ["PATH", "TETHER_SECRETS_DIR", "HOME"];

impl SecretSpec {
    fn check(&self, command: &str, secret: &str) -> anyhow::Result<()> {
        tether_domain::vault::secrets::check_name(secret)
            .map_err(|e| anyhow::anyhow!("commands.{command}.secrets: {e}"))?;
        match self {
            SecretSpec::Env(var) => {
                let well_formed = var.bytes().next().is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
                    && var.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if !well_formed || RESERVED_ENV.contains(&var.as_str()) || var.starts_with("LD_") {
                    anyhow::bail!(
                        "commands.{command}.secrets.{secret}: env {var:?} must be UPPER_CASE and not PATH, HOME, TETHER_SECRETS_DIR or LD_*"
                    );
                }
            }
            SecretSpec::File(name) => {
                if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
                    anyhow::bail!("commands.{command}.secrets.{secret}: file {name:?} must be a plain file name");
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Integer,
    Boolean,
}

impl ParamType {
    /// What a value of this type is, as a sentence says it.
    pub fn described(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Integer => "an integer",
            ParamType::Boolean => "true or false",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// Used when the task does not give the parameter; without it the
    /// parameter is required.
    pub default: Option<toml::Value>,
    /// Strings: the longest accepted (default 1024 bytes).
    pub max_len: Option<usize>,
    /// Strings: allow a leading `-` (off, so a value cannot pose as an option).
    #[serde(default)]
    pub allow_leading_dash: bool,
    /// Integers: bounds.
    pub min: Option<i64>,
    pub max: Option<i64>,
}

/// A command as the worker runs it.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    pub timeout: Duration,
    pub max_output_bytes: usize,
    pub params: BTreeMap<String, ParamSpec>,
    pub secrets: BTreeMap<String, SecretSpec>,
}

/// The validated worker configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub labels: Vec<String>,
    pub concurrency: usize,
    pub echo: bool,
    pub commands: BTreeMap<String, CommandSpec>,
    pub llm: Option<LlmSpec>,
}

impl WorkerConfig {
    /// What this worker runs, for the broker (and the agent card's skills).
    pub fn offers(&self) -> tether_wire::Offers {
        let mut kinds = Vec::new();
        if self.echo {
            kinds.push("echo".to_owned());
        }
        if !self.commands.is_empty() {
            kinds.push("command".to_owned());
        }
        if self.llm.is_some() {
            kinds.push("llm.chat".to_owned());
        }
        let commands = self
            .commands
            .iter()
            .map(|(name, spec)| tether_wire::OfferedCommand { name: name.clone(), params_schema: spec.params_schema() })
            .collect();
        tether_wire::Offers { kinds, commands }
    }
}

impl CommandSpec {
    /// The JSON Schema of the `params` object a task gives this command.
    pub fn params_schema(&self) -> serde_json::Value {
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        for (name, p) in &self.params {
            let mut schema = serde_json::json!({"type": match p.kind {
                ParamType::String => "string",
                ParamType::Integer => "integer",
                ParamType::Boolean => "boolean",
            }});
            if p.kind == ParamType::String {
                schema["maxLength"] = p.max_len.unwrap_or(DEFAULT_MAX_LEN).into();
            }
            if let Some(min) = p.min {
                schema["minimum"] = min.into();
            }
            if let Some(max) = p.max {
                schema["maximum"] = max.into();
            }
            if p.default.is_none() {
                required.push(serde_json::Value::from(name.as_str()));
            }
            properties.insert(name.clone(), schema);
        }
        serde_json::json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        })
    }
}

pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;
/// The longest string parameter, unless `max_len` says otherwise.
pub const DEFAULT_MAX_LEN: usize = 1024;

/// Names inside `{...}` in an argv element.
pub fn placeholders(arg: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                out.push(&after[..close]);
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    out
}

impl RawWorkerConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<RawWorkerConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn validate(self) -> anyhow::Result<WorkerConfig> {
        let mut commands = BTreeMap::new();
        for (name, raw) in self.commands {
            let Some(program) = raw.argv.first() else {
                anyhow::bail!("commands.{name}: argv must name a program");
            };
            if !program.starts_with('/') {
                anyhow::bail!("commands.{name}: argv[0] must be an absolute path (no PATH lookup), got {program:?}");
            }
            if !placeholders(program).is_empty() {
                anyhow::bail!("commands.{name}: the program itself cannot be a parameter");
            }
            for arg in &raw.argv {
                for p in placeholders(arg) {
                    if !raw.params.contains_key(p) {
                        anyhow::bail!("commands.{name}: argv uses {{{p}}} but params.{p} is not declared");
                    }
                }
            }
            for (secret, spec) in &raw.secrets {
                spec.check(&name, secret)?;
            }
            let timeout = raw
                .timeout
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| anyhow::anyhow!("commands.{name}.timeout: {e}"))?;
            commands.insert(
                name,
                CommandSpec {
                    argv: raw.argv,
                    timeout: timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT),
                    max_output_bytes: raw.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT),
                    params: raw.params,
                    secrets: raw.secrets,
                },
            );
        }
        let concurrency = self.concurrency.unwrap_or(1);
        if !(1..=256).contains(&concurrency) {
            anyhow::bail!("concurrency must be 1-256");
        }
        let labels = tether_base::labels::normalize(self.labels.unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("labels: {e}"))?;
        let llm = self.llm.map(RawLlm::validate).transpose()?;
        Ok(WorkerConfig { labels, concurrency, echo: self.handlers.echo, commands, llm })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<WorkerConfig> {
        toml::from_str::<RawWorkerConfig>(text)?.validate()
    }

    #[test]
    fn the_shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("worker.example.toml");
        let c = RawWorkerConfig::from_file(&path).unwrap().validate().unwrap();
        assert!(c.echo);
        assert!(!c.commands.is_empty());
    }

    #[test]
    fn commands_must_be_absolute_and_declare_their_parameters() {
        assert!(parse("[commands.x]\nargv = [\"ls\"]").is_err());
        assert!(parse("[commands.x]\nargv = [\"/bin/ls\", \"{dir}\"]").is_err());
        assert!(parse("[commands.x]\nargv = [\"{prog}\"]\n[commands.x.params.prog]\ntype = \"string\"").is_err());
        assert!(
            parse("[commands.x]\nargv = [\"/bin/ls\", \"{dir}\"]\n[commands.x.params.dir]\ntype = \"string\"").is_ok()
        );
        assert!(parse("nonsense = 1").is_err());
    }

    #[test]
    fn secrets_go_to_upper_case_env_vars_or_plain_file_names() {
        let with = |line: &str| parse(&format!("[commands.x]\nargv = [\"/bin/true\"]\n[commands.x.secrets]\n{line}"));
        assert!(with("db = { env = \"PGPASSWORD\" }").is_ok());
        assert!(with("db = { file = \"db.pass\" }").is_ok());
        for bad in [
            "db = { env = \"PATH\" }",
            "db = { env = \"LD_PRELOAD\" }",
            "db = { env = \"lower\" }",
            "db = { file = \"../x\" }",
            "db = { file = \"..\" }",
            "\"bad name\" = { env = \"X\" }",
            "db = { argv = \"X\" }",
        ] {
            assert!(with(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn placeholders_are_found_inside_arguments() {
        assert_eq!(placeholders("--name={who}-{n}"), ["who", "n"]);
        assert!(placeholders("plain").is_empty());
    }
}
