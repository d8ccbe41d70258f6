//! The handlers a worker can run: `echo`, and the operator's `command`s.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt};
use zeroize::Zeroizing;

use super::client::DeliveredSecret;
use super::config::{CommandSpec, DEFAULT_MAX_LEN, ParamSpec, ParamType, SecretSpec, WorkerConfig, placeholders};
use super::progress::Reports;

/// Why a handler did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
    pub retryable: bool,
}

fn fail(code: &'static str, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into(), retryable: false }
}

/// One task as a handler sees it.
#[derive(Debug)]
pub struct Job<'a> {
    pub kind: &'a str,
    pub input: Value,
    pub timeout: Duration,
    /// The secrets that came with the lease.
    pub secrets: &'a [DeliveredSecret],
    /// A directory only this worker can read (0700), where secret files
    /// are made for the length of one command.
    pub scratch: &'a Path,
    /// Where what a command prints goes while it runs.
    pub reports: Reports,
}

/// Runs the job if this worker's configuration allows its kind.
pub async fn run(config: &WorkerConfig, job: Job<'_>) -> Result<Value, Failure> {
    match job.kind {
        "echo" if config.echo => Ok(job.input),
        "command" => run_command(config, job).await,
        "llm.chat" => match &config.llm {
            Some(spec) => run_chat(spec, job).await,
            None => Err(fail("handler_not_enabled", "this worker has no [llm] model server configured")),
        },
        other => Err(fail("handler_not_enabled", format!("this worker does not run {other:?} tasks"))),
    }
}

/// The secrets as one command run receives them: environment variables,
/// and a directory of files that goes when this drops.
#[derive(Default)]
struct Handover {
    env: Vec<(String, Zeroizing<Vec<u8>>)>,
    dir: Option<PathBuf>,
}

impl Drop for Handover {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir
            && let Err(e) = std::fs::remove_dir_all(dir)
        {
            tracing::error!(dir = %dir.display(), error = %e, "could not remove a task's secret files");
        }
    }
}

/// What a command gets of the delivered secrets, as its configuration
/// says: environment variables, and files in a fresh private directory.
fn hand_over_secrets(
    command: &str,
    spec: &CommandSpec,
    delivered: &[DeliveredSecret],
    scratch: &Path,
) -> Result<Handover, Failure> {
    let mut handover = Handover::default();
    for (name, how) in &spec.secrets {
        let secret = delivered.iter().find(|d| d.name == *name).ok_or_else(|| {
            fail("secret_missing", format!("{command} needs the secret {name:?}, which the task did not bring"))
        })?;
        let value = secret.value().ok_or_else(|| fail("bad_secret", format!("the secret {name:?} arrived damaged")))?;
        match how {
            SecretSpec::Env(var) => {
                if value.contains(&0) {
                    return Err(fail("bad_secret", format!("the secret {name:?} holds a NUL byte; use a file")));
                }
                handover.env.push((var.clone(), value));
            }
            SecretSpec::File(file) => {
                let dir = match &handover.dir {
                    Some(dir) => dir.clone(),
                    None => {
                        let dir = scratch.join(format!("secrets-{:016x}", fastrand::u64(..)));
                        std::fs::DirBuilder::new()
                            .mode(0o700)
                            .create(&dir)
                            .map_err(|e| fail("io", format!("cannot make a directory for secret files: {e}")))?;
                        handover.dir = Some(dir.clone());
                        dir
                    }
                };
                tether_base::files::write_private(&dir.join(file), &value)
                    .map_err(|e| fail("io", format!("cannot write the secret file {file:?}: {e:#}")))?;
            }
        }
    }
    Ok(handover)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandInput {
    command: String,
    #[serde(default)]
    params: BTreeMap<String, Value>,
}

/// Checks one parameter value against its declaration; returns its text.
fn check_param(name: &str, spec: &ParamSpec, value: &Value) -> Result<String, Failure> {
    let bad = |why: String| Err(fail("bad_params", format!("parameter {name:?}: {why}")));
    match (spec.kind, value) {
        (ParamType::String, Value::String(s)) => {
            if s.len() > spec.max_len.unwrap_or(DEFAULT_MAX_LEN) {
                return bad("too long".into());
            }
            if s.contains('\0') {
                return bad("contains a NUL byte".into());
            }
            if s.starts_with('-') && !spec.allow_leading_dash {
                return bad("may not start with '-'".into());
            }
            Ok(s.clone())
        }
        (ParamType::Integer, Value::Number(n)) => match n.as_i64() {
            Some(i) if spec.min.is_some_and(|m| i < m) || spec.max.is_some_and(|m| i > m) => {
                let bound = |b: Option<i64>| b.map_or(String::new(), |b| b.to_string());
                bad(format!("{i} is out of range ({}..={})", bound(spec.min), bound(spec.max)))
            }
            Some(i) => Ok(i.to_string()),
            None => bad(format!("{n} is not {}", spec.kind.described())),
        },
        (ParamType::Boolean, Value::Bool(b)) => Ok(b.to_string()),
        (kind, _) => bad(format!("must be {}", kind.described())),
    }
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => json!(s),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Boolean(b) => json!(b),
        other => json!(other.to_string()),
    }
}

/// The argv for one run: every placeholder replaced, each element one argument.
pub fn build_argv(spec: &CommandSpec, params: &BTreeMap<String, Value>) -> Result<Vec<String>, Failure> {
    if let Some(unknown) = params.keys().find(|k| !spec.params.contains_key(*k)) {
        return Err(fail("bad_params", format!("unknown parameter {unknown:?}")));
    }
    let mut values = BTreeMap::new();
    for (name, p) in &spec.params {
        let value = match (params.get(name), &p.default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => toml_to_json(d),
            (None, None) => {
                return Err(fail("bad_params", format!("parameter {name:?} is required")));
            }
        };
        values.insert(name.as_str(), check_param(name, p, &value)?);
    }
    Ok(spec
        .argv
        .iter()
        .map(|arg| {
            placeholders(arg).into_iter().fold(arg.clone(), |acc, p| {
                acc.replace(&format!("{{{p}}}"), values.get(p).map(String::as_str).unwrap_or_default())
            })
        })
        .collect())
}

/// Reads at most `cap` bytes line by line, handing each line to
/// `reports` as it comes; says whether there was more.
async fn read_reporting(r: impl AsyncRead + Unpin, cap: usize, reports: &Reports) -> std::io::Result<(Vec<u8>, bool)> {
    let mut reader = tokio::io::BufReader::new(r.take(cap as u64 + 1));
    let mut buf = Vec::new();
    loop {
        let start = buf.len();
        if reader.read_until(b'\n', &mut buf).await? == 0 {
            break;
        }
        reports.line(&buf[start..]).await;
    }
    let over = buf.len() > cap;
    buf.truncate(cap);
    Ok((buf, over))
}

/// Reads at most `cap` bytes; says whether there was more.
async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    let mut limited = (&mut r).take(cap as u64 + 1);
    limited.read_to_end(&mut buf).await?;
    let over = buf.len() > cap;
    buf.truncate(cap);
    Ok((buf, over))
}

async fn run_command(config: &WorkerConfig, job: Job<'_>) -> Result<Value, Failure> {
    let task_timeout = job.timeout;
    let input: CommandInput =
        serde_json::from_value(job.input).map_err(|e| fail("bad_input", format!("command input: {e}")))?;
    let spec = config
        .commands
        .get(&input.command)
        .ok_or_else(|| fail("command_not_allowed", format!("this worker has no command {:?}", input.command)))?;
    let argv = build_argv(spec, &input.params)?;
    let (program, args) = argv.split_first().ok_or_else(|| fail("bad_config", "empty argv"))?;
    let handover = hand_over_secrets(&input.command, spec, job.secrets, job.scratch)?;
    let mut command = tokio::process::Command::new(program);
    command.args(args).env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
    for (var, value) in &handover.env {
        command.env(var, OsStr::from_bytes(value));
    }
    if let Some(dir) = &handover.dir {
        command.env("TETHER_SECRETS_DIR", dir);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail("spawn_failed", format!("cannot start {program}: {e}")))?;
    let cap = spec.max_output_bytes;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let run = async {
        let out = async {
            match stdout {
                Some(s) => read_reporting(s, cap, &job.reports).await,
                None => Ok((Vec::new(), false)),
            }
        };
        let err = async {
            match stderr {
                Some(s) => read_capped(s, cap).await,
                None => Ok((Vec::new(), false)),
            }
        };
        let (out, err) = tokio::join!(out, err);
        let status = child.wait().await;
        (out, err, status)
    };
    let limit = spec.timeout.min(task_timeout);
    let Ok((out, err, status)) = tokio::time::timeout(limit, run).await else {
        // Dropping the future drops the child, which kill_on_drop kills.
        return Err(fail("timeout", format!("{} did not finish within {}s", input.command, limit.as_secs())));
    };
    let io = |e: std::io::Error| fail("io", e.to_string());
    let ((stdout, out_over), (stderr, err_over)) = (out.map_err(io)?, err.map_err(io)?);
    if out_over || err_over {
        return Err(fail("output_limit", format!("output exceeded {cap} bytes")));
    }
    let status = status.map_err(io)?;
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    match status.code() {
        Some(0) => Ok(json!({"exit_code": 0, "stdout": stdout, "stderr": stderr})),
        Some(code) => {
            let tail: String = stderr.chars().rev().take(512).collect::<Vec<_>>().into_iter().rev().collect();
            Err(fail("exit_status", format!("{} exited with status {code}: {tail}", input.command)))
        }
        None => Err(fail("killed", format!("{} was killed by a signal", input.command))),
    }
}

/// `llm.chat`: one chat with the worker's model server, not streamed.
/// Input `{"model", "messages", "options"?}` (options as OpenAI names them:
/// temperature, top_p, max_tokens, seed, stop, tools, response_format…);
/// result `{"model", "content", "finish_reason", "usage": {"prompt_tokens",
/// "completion_tokens"}}`, and `tool_calls` (`[{"id", "name",
/// "arguments"}]`) when the model asked for any.
async fn run_chat(spec: &super::config::LlmSpec, job: Job<'_>) -> Result<Value, Failure> {
    use tether_domain::llm::wire::{self, Protocol, Shape};
    let mut request = job.input.get("options").cloned().unwrap_or_else(|| json!({}));
    if !request.is_object() {
        return Err(fail("bad_input", "options must be an object"));
    }
    request["model"] = job.input.get("model").cloned().unwrap_or(Value::Null);
    request["messages"] = job.input.get("messages").cloned().unwrap_or(Value::Null);
    request["stream"] = json!(false);
    let mut chat = wire::read_chat(Protocol::OpenAi, Shape::Chat, &request).map_err(|m| fail("bad_input", m))?;
    chat.stream = false;
    if !spec.models.contains(&chat.model) {
        return Err(fail("model_not_allowed", format!("this worker does not run the model {:?}", chat.model)));
    }
    let client =
        tether_domain::llm::upstreams::http_client(spec.ca_pem.as_deref()).map_err(|e| fail("llm_config", e))?;
    let path = tether_domain::llm::Operation::Chat.route(spec.protocol);
    let request = wire::write_chat(spec.protocol, &chat).map_err(|m| fail("bad_input", m))?;
    let mut call = client.post(format!("{}{path}", spec.url)).timeout(spec.timeout.min(job.timeout)).json(&request);
    if let Some(key) = &spec.key {
        call = call.bearer_auth(key.as_str());
    }
    let unreachable = |e: reqwest::Error| Failure {
        code: "llm_unreachable",
        message: format!("the model server: {}", tether_base::tls::error_chain(&e)),
        retryable: true,
    };
    let response = call.send().await.map_err(unreachable)?;
    let status = response.status();
    let answer: Value = response.json().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(Failure {
            code: "llm_refused",
            message: format!("the model server answered {status}"),
            retryable: status.is_server_error() || status.as_u16() == 429,
        });
    }
    let usage = wire::usage_of(spec.protocol, &answer).unwrap_or_default();
    let output = wire::read_answer(spec.protocol, Shape::Chat, &answer);
    let mut result = json!({
        "model": chat.model,
        "content": output.text,
        "finish_reason": output.reason,
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
    });
    if !output.tool_calls.is_empty() {
        let calls: Vec<Value> =
            output.tool_calls.iter().map(|c| json!({"id": c.id, "name": c.name, "arguments": c.arguments})).collect();
        result["tool_calls"] = Value::Array(calls);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::config::RawWorkerConfig;

    fn config() -> WorkerConfig {
        let text = r#"
            [commands.say]
            argv = ["/bin/echo", "--", "{word}", "n={count}"]
            max_output_bytes = 64
            [commands.say.params.word]
            type = "string"
            [commands.say.params.count]
            type = "integer"
            min = 0
            max = 9
            default = 3
            [commands.fail]
            argv = ["/bin/sh", "-c", "echo oops >&2; exit 4"]
            [commands.flood]
            argv = ["/usr/bin/yes"]
            max_output_bytes = 1000
            [commands.slow]
            argv = ["/bin/sleep", "5"]
            timeout = "200ms"
        "#;
        toml::from_str::<RawWorkerConfig>(text).unwrap().validate().unwrap()
    }

    async fn run_plain(c: &WorkerConfig, kind: &str, input: Value) -> Result<Value, Failure> {
        let job = Job {
            kind,
            input,
            timeout: Duration::from_secs(10),
            secrets: &[],
            scratch: Path::new("/nonexistent"),
            reports: Reports::none(),
        };
        run(c, job).await
    }

    async fn say(params: Value) -> Result<Value, Failure> {
        run_plain(&config(), "command", json!({"command": "say", "params": params})).await
    }

    #[tokio::test]
    async fn a_parameter_is_one_argument_however_it_is_written() {
        let out = say(json!({"word": "a b; rm -rf / $(x)", "count": 2})).await.unwrap();
        assert_eq!(out["stdout"], "-- a b; rm -rf / $(x) n=2\n");
        let out = say(json!({"word": "hi"})).await.unwrap();
        assert_eq!(out["stdout"], "-- hi n=3\n", "the default fills a missing parameter");
    }

    #[tokio::test]
    async fn bad_parameters_fail_cleanly_before_anything_runs() {
        let cases = [
            (json!({"word": "-rf"}), "may not start with '-'"),
            (json!({"word": "x", "count": 10}), "parameter \"count\": 10 is out of range (0..=9)"),
            (json!({"word": "x", "count": 1.5}), "parameter \"count\": 1.5 is not an integer"),
            (json!({"word": "x", "count": "2"}), "parameter \"count\": must be an integer"),
            (json!({"word": 5}), "parameter \"word\": must be a string"),
            (json!({"count": 1}), "parameter \"word\" is required"),
            (json!({"word": "x", "extra": 1}), "unknown parameter \"extra\""),
        ];
        for (params, says) in cases {
            let e = say(params.clone()).await.unwrap_err();
            assert_eq!(e.code, "bad_params", "{params}");
            assert!(e.message.contains(says), "{params}: {}", e.message);
        }
    }

    #[tokio::test]
    async fn failures_are_named_exit_status_output_limit_timeout_and_not_enabled() {
        let c = config();
        let e = run_plain(&c, "command", json!({"command": "fail"})).await.unwrap_err();
        assert_eq!(e.code, "exit_status");
        assert!(e.message.contains("status 4") && e.message.contains("oops"));
        assert_eq!(run_plain(&c, "command", json!({"command": "flood"})).await.unwrap_err().code, "output_limit");
        assert_eq!(run_plain(&c, "command", json!({"command": "slow"})).await.unwrap_err().code, "timeout");
        assert_eq!(run_plain(&c, "command", json!({"command": "rm"})).await.unwrap_err().code, "command_not_allowed");
        assert_eq!(run_plain(&c, "shell", json!({})).await.unwrap_err().code, "handler_not_enabled");
        assert_eq!(run_plain(&c, "echo", json!({"a": 1})).await.unwrap(), json!({"a": 1}));
    }

    fn delivered(name: &str, value: &[u8]) -> DeliveredSecret {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        serde_json::from_value(json!({"name": name, "version": 1, "value_base64": b64})).unwrap()
    }

    #[tokio::test]
    async fn a_command_gets_its_secrets_in_env_and_private_files_that_go_away() {
        let text = r#"
            [commands.show]
            argv = ["/bin/sh", "-c", "echo \"$TOKEN\"; stat -c %a \"$TETHER_SECRETS_DIR\" \"$TETHER_SECRETS_DIR/db\"; cat \"$TETHER_SECRETS_DIR/db\"; echo; echo \"$TETHER_SECRETS_DIR\""]
            [commands.show.secrets]
            api = { env = "TOKEN" }
            db = { file = "db" }
        "#;
        let c = toml::from_str::<RawWorkerConfig>(text).unwrap().validate().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let secrets = [delivered("api", b"tok-123"), delivered("db", b"pw-456"), delivered("other", b"x")];
        let job = |secrets| Job {
            kind: "command",
            input: json!({"command": "show"}),
            timeout: Duration::from_secs(10),
            secrets,
            scratch: scratch.path(),
            reports: Reports::none(),
        };
        let out = run(&c, job(&secrets)).await.unwrap();
        let stdout = out["stdout"].as_str().unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[..4], ["tok-123", "700", "600", "pw-456"], "{stdout}");
        assert!(!Path::new(lines[4]).exists(), "the secret files outlive the command");
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
        let missing = run(&c, job(&secrets[..1])).await.unwrap_err();
        assert_eq!(missing.code, "secret_missing");
        assert!(!missing.message.contains("tok-123"));
    }
}
