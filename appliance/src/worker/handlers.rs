//! The handlers a worker can run: `echo`, and the operator's `command`s.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::config::{CommandSpec, ParamSpec, ParamType, WorkerConfig, placeholders};

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

/// Runs `kind` on `input` if this worker's configuration allows it.
pub async fn run(config: &WorkerConfig, kind: &str, input: Value, task_timeout: Duration) -> Result<Value, Failure> {
    match kind {
        "echo" if config.echo => Ok(input),
        "command" => run_command(config, input, task_timeout).await,
        other => Err(fail("handler_not_enabled", format!("this worker does not run {other:?} tasks"))),
    }
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
            if s.len() > spec.max_len.unwrap_or(1024) {
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
                bad(format!("{i} is out of range"))
            }
            Some(i) => Ok(i.to_string()),
            None => bad("must be a whole number".into()),
        },
        (ParamType::Boolean, Value::Bool(b)) => Ok(b.to_string()),
        (kind, _) => bad(format!("must be a {kind:?}").to_lowercase()),
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

/// Reads at most `cap` bytes; says whether there was more.
async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    let mut limited = (&mut r).take(cap as u64 + 1);
    limited.read_to_end(&mut buf).await?;
    let over = buf.len() > cap;
    buf.truncate(cap);
    Ok((buf, over))
}

async fn run_command(config: &WorkerConfig, input: Value, task_timeout: Duration) -> Result<Value, Failure> {
    let input: CommandInput =
        serde_json::from_value(input).map_err(|e| fail("bad_input", format!("command input: {e}")))?;
    let spec = config
        .commands
        .get(&input.command)
        .ok_or_else(|| fail("command_not_allowed", format!("this worker has no command {:?}", input.command)))?;
    let argv = build_argv(spec, &input.params)?;
    let (program, args) = argv.split_first().ok_or_else(|| fail("bad_config", "empty argv"))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
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
                Some(s) => read_capped(s, cap).await,
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

    async fn say(params: Value) -> Result<Value, Failure> {
        run(&config(), "command", json!({"command": "say", "params": params}), Duration::from_secs(10)).await
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
            json!({"word": "-rf"}),
            json!({"word": "x", "count": 10}),
            json!({"word": 5}),
            json!({"count": 1}),
            json!({"word": "x", "extra": 1}),
        ];
        for params in cases {
            let e = say(params.clone()).await.unwrap_err();
            assert_eq!(e.code, "bad_params", "{params}");
        }
    }

    #[tokio::test]
    async fn failures_are_named_exit_status_output_limit_timeout_and_not_enabled() {
        let c = config();
        let t = Duration::from_secs(10);
        let e = run(&c, "command", json!({"command": "fail"}), t).await.unwrap_err();
        assert_eq!(e.code, "exit_status");
        assert!(e.message.contains("status 4") && e.message.contains("oops"));
        assert_eq!(run(&c, "command", json!({"command": "flood"}), t).await.unwrap_err().code, "output_limit");
        assert_eq!(run(&c, "command", json!({"command": "slow"}), t).await.unwrap_err().code, "timeout");
        assert_eq!(run(&c, "command", json!({"command": "rm"}), t).await.unwrap_err().code, "command_not_allowed");
        assert_eq!(run(&c, "shell", json!({}), t).await.unwrap_err().code, "handler_not_enabled");
        assert_eq!(run(&c, "echo", json!({"a": 1}), t).await.unwrap(), json!({"a": 1}));
    }
}
