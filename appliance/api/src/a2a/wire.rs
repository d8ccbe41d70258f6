//! The A2A protocol's shapes, as the `a2a-sdk` 1.x speaks them (the
//! protobuf messages' JSON form: camelCase, `TASK_STATE_*` states, parts
//! as `{"text"}` or `{"data"}`), and the 0.3 forms its aliases still
//! carry (`kind` on every object, lower-case states): JSON-RPC 2.0
//! envelopes, a broker task as an A2A task, a message as a task request.

use serde_json::{Map, Value, json};

use tether_domain::broker::TaskState;

/// The protocol version the endpoint speaks (`A2A-Version`).
pub const PROTOCOL_VERSION: &str = "1.0";

/// Standard JSON-RPC codes, and A2A's own.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const TASK_NOT_FOUND: i64 = -32001;
    pub const TASK_NOT_CANCELABLE: i64 = -32002;
    pub const VERSION_NOT_SUPPORTED: i64 = -32009;
}

/// Which generation of names a call used: 1.0 (`SendMessage`) or 0.3
/// (`message/send`); the answer uses the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    V1,
    V03,
}

/// What a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    SendMessage,
    SendStreamingMessage,
    GetTask,
    ListTasks,
    CancelTask,
    SubscribeToTask,
}

/// Every method name the endpoint answers, in both generations.
const METHODS: [(&str, Method, Dialect); 11] = [
    ("SendMessage", Method::SendMessage, Dialect::V1),
    ("SendStreamingMessage", Method::SendStreamingMessage, Dialect::V1),
    ("GetTask", Method::GetTask, Dialect::V1),
    ("ListTasks", Method::ListTasks, Dialect::V1),
    ("CancelTask", Method::CancelTask, Dialect::V1),
    ("SubscribeToTask", Method::SubscribeToTask, Dialect::V1),
    ("message/send", Method::SendMessage, Dialect::V03),
    ("message/stream", Method::SendStreamingMessage, Dialect::V03),
    ("tasks/get", Method::GetTask, Dialect::V03),
    ("tasks/cancel", Method::CancelTask, Dialect::V03),
    ("tasks/resubscribe", Method::SubscribeToTask, Dialect::V03),
];

/// A JSON-RPC error, answered as such (HTTP 200).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into() }
    }
}

/// One JSON-RPC call, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// As sent (a string or a number); `Null` when it could not be read.
    pub id: Value,
    pub method: Method,
    pub dialect: Dialect,
    pub params: Map<String, Value>,
}

/// Reads a request body as one JSON-RPC 2.0 call. The error comes with the
/// id, when one could be read, to answer with.
pub fn read_call(body: &[u8]) -> Result<Call, (Value, RpcError)> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| (Value::Null, RpcError::new(code::PARSE_ERROR, format!("the body is not JSON: {e}"))))?;
    let Value::Object(mut call) = value else {
        return Err((Value::Null, RpcError::new(code::INVALID_REQUEST, "a call is one JSON object (no batches)")));
    };
    let id = match call.remove("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id,
        _ => {
            return Err((Value::Null, RpcError::new(code::INVALID_REQUEST, "`id` must be a string or a number")));
        }
    };
    let invalid = |message: &str| Err((id.clone(), RpcError::new(code::INVALID_REQUEST, message)));
    if call.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("`jsonrpc` must be \"2.0\"");
    }
    let Some(name) = call.get("method").and_then(Value::as_str) else {
        return invalid("`method` must be a string");
    };
    let Some((_, method, dialect)) = METHODS.iter().find(|(n, ..)| *n == name) else {
        let known: Vec<&str> = METHODS.iter().map(|(n, ..)| *n).collect();
        let message = format!("no method {name:?}; this agent answers {}", known.join(", "));
        return Err((id, RpcError::new(code::METHOD_NOT_FOUND, message)));
    };
    let params = match call.remove("params") {
        Some(Value::Object(params)) => params,
        None => Map::new(),
        Some(_) => return Err((id, RpcError::new(code::INVALID_PARAMS, "`params` must be an object"))),
    };
    Ok(Call { id, method: *method, dialect: *dialect, params })
}

/// A successful answer.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error answer.
pub fn error(id: &Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
}

/// A broker state as A2A names it: queued is submitted, leased is working.
pub fn state_name(state: TaskState, dialect: Dialect) -> &'static str {
    match (state, dialect) {
        (TaskState::Queued, Dialect::V1) => "TASK_STATE_SUBMITTED",
        (TaskState::Leased, Dialect::V1) => "TASK_STATE_WORKING",
        (TaskState::Succeeded, Dialect::V1) => "TASK_STATE_COMPLETED",
        (TaskState::Failed, Dialect::V1) => "TASK_STATE_FAILED",
        (TaskState::Cancelled, Dialect::V1) => "TASK_STATE_CANCELED",
        (TaskState::Queued, Dialect::V03) => "submitted",
        (TaskState::Leased, Dialect::V03) => "working",
        (TaskState::Succeeded, Dialect::V03) => "completed",
        (TaskState::Failed, Dialect::V03) => "failed",
        (TaskState::Cancelled, Dialect::V03) => "canceled",
    }
}

/// The state a `ListTasks` filter names, in either generation.
pub fn state_from_name(name: &str) -> Option<TaskState> {
    [TaskState::Queued, TaskState::Leased, TaskState::Succeeded, TaskState::Failed, TaskState::Cancelled]
        .into_iter()
        .find(|s| state_name(*s, Dialect::V1) == name || state_name(*s, Dialect::V03) == name)
}

/// One part: text, or a JSON value as a data part.
pub fn part(value: &Value, dialect: Dialect) -> Value {
    let mut part = match value {
        Value::String(text) => json!({"text": text}),
        other => json!({"data": other}),
    };
    if dialect == Dialect::V03 {
        part["kind"] = json!(if value.is_string() { "text" } else { "data" });
    }
    part
}

/// What a broker task says, for the A2A task it is.
#[derive(Debug, Clone)]
pub struct TaskFacts<'a> {
    pub id: &'a str,
    pub state: TaskState,
    /// RFC 3339: when it entered its state.
    pub updated_at: &'a str,
    /// The result, for a caller who may see it.
    pub result: Option<&'a Value>,
    /// Why it failed (code and message), for a caller who may see it.
    pub error: Option<(&'a str, Option<&'a str>)>,
    pub skill: &'a str,
}

/// A broker task as an A2A task: its id is the context id too (each task
/// is its own conversation), its result the one artifact, its failure the
/// status message.
pub fn task(t: &TaskFacts<'_>, dialect: Dialect) -> Value {
    let mut status = json!({"state": state_name(t.state, dialect), "timestamp": t.updated_at});
    if let Some((code, message)) = t.error {
        let text = match message {
            Some(m) => format!("{code}: {m}"),
            None => code.to_owned(),
        };
        status["message"] = agent_message(t.id, &text, dialect);
    }
    let mut task = json!({"id": t.id, "contextId": t.id, "status": status, "metadata": {"skill": t.skill}});
    if let Some(result) = t.result {
        let mut artifact = json!({"artifactId": "result", "name": "result", "parts": [part(result, dialect)]});
        if dialect == Dialect::V03 {
            artifact["kind"] = json!("artifact");
        }
        task["artifacts"] = json!([artifact]);
    }
    if dialect == Dialect::V03 {
        task["kind"] = json!("task");
    }
    task
}

/// A message from the agent (a task's status message).
pub fn agent_message(task: &str, text: &str, dialect: Dialect) -> Value {
    let role = if dialect == Dialect::V1 { "ROLE_AGENT" } else { "agent" };
    let mut message = json!({
        "messageId": format!("{task}-status"),
        "taskId": task,
        "contextId": task,
        "role": role,
        "parts": [part(&json!(text), dialect)],
    });
    if dialect == Dialect::V03 {
        message["kind"] = json!("message");
    }
    message
}

/// What a message asks the broker to run: the skill named in its metadata
/// (or the agent's default) and its input — a data part's value, or a text
/// part holding a JSON object.
pub fn task_input(message: &Value, default_skill: Option<&str>) -> Result<(String, Value), RpcError> {
    let invalid = |m: &str| RpcError::new(code::INVALID_PARAMS, m);
    if !message.is_object() {
        return Err(invalid("`message` must be an object"));
    }
    let skill = match message.pointer("/metadata/skill") {
        Some(Value::String(skill)) => skill.clone(),
        Some(_) => return Err(invalid("`message.metadata.skill` must be a skill id from the agent card")),
        None => default_skill
            .ok_or_else(|| invalid("name the skill in `message.metadata.skill` (a skill id from the agent card)"))?
            .to_owned(),
    };
    let parts =
        message.get("parts").and_then(Value::as_array).ok_or_else(|| invalid("`message.parts` must be a list"))?;
    for part in parts {
        if let Some(data) = part.get("data") {
            return Ok((skill, whole_numbers(data.clone())));
        }
        if let Some(text) = part.get("text").and_then(Value::as_str)
            && let Ok(value @ Value::Object(_)) = serde_json::from_str::<Value>(text)
        {
            return Ok((skill, value));
        }
    }
    Err(invalid("the task's input goes in a data part, or in a text part holding a JSON object"))
}

/// A data part is a protobuf `Value`, whose numbers are doubles: a client
/// that sent 60 sends 60.0. Whole numbers are taken as the integers they
/// were (a command's integer parameter refuses 60.0).
fn whole_numbers(value: Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(whole_numbers).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, whole_numbers(v))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_read_in_both_generations_and_bad_ones_get_their_standard_code() {
        let call = read_call(br#"{"jsonrpc":"2.0","id":"a1","method":"GetTask","params":{"id":"t"}}"#).unwrap();
        assert_eq!((call.method, call.dialect, call.id), (Method::GetTask, Dialect::V1, json!("a1")));
        let call = read_call(br#"{"jsonrpc":"2.0","id":7,"method":"tasks/resubscribe","params":{"id":"t"}}"#).unwrap();
        assert_eq!((call.method, call.dialect), (Method::SubscribeToTask, Dialect::V03));
        let code_of = |body: &[u8]| read_call(body).unwrap_err().1.code;
        assert_eq!(code_of(b"{not json"), code::PARSE_ERROR);
        assert_eq!(code_of(br#"[{"jsonrpc":"2.0","id":1,"method":"GetTask"}]"#), code::INVALID_REQUEST);
        assert_eq!(code_of(br#"{"jsonrpc":"1.0","id":1,"method":"GetTask"}"#), code::INVALID_REQUEST);
        assert_eq!(code_of(br#"{"jsonrpc":"2.0","method":"GetTask"}"#), code::INVALID_REQUEST);
        assert_eq!(code_of(br#"{"jsonrpc":"2.0","id":1,"method":"DeleteEverything"}"#), code::METHOD_NOT_FOUND);
        assert_eq!(code_of(br#"{"jsonrpc":"2.0","id":1,"method":"GetTask","params":[1]}"#), code::INVALID_PARAMS);
        let (id, _) = read_call(br#"{"jsonrpc":"2.0","id":9,"method":"Nope"}"#).unwrap_err();
        assert_eq!(id, json!(9), "answered with the id it came with");
    }

    #[test]
    fn states_map_as_the_issue_says_in_both_generations() {
        let all = [TaskState::Queued, TaskState::Leased, TaskState::Succeeded, TaskState::Failed, TaskState::Cancelled];
        let v1: Vec<&str> = all.iter().map(|s| state_name(*s, Dialect::V1)).collect();
        assert_eq!(
            v1,
            [
                "TASK_STATE_SUBMITTED",
                "TASK_STATE_WORKING",
                "TASK_STATE_COMPLETED",
                "TASK_STATE_FAILED",
                "TASK_STATE_CANCELED"
            ]
        );
        let v03: Vec<&str> = all.iter().map(|s| state_name(*s, Dialect::V03)).collect();
        assert_eq!(v03, ["submitted", "working", "completed", "failed", "canceled"]);
        for s in all {
            assert_eq!(state_from_name(state_name(s, Dialect::V1)), Some(s));
            assert_eq!(state_from_name(state_name(s, Dialect::V03)), Some(s));
        }
        assert_eq!(state_from_name("TASK_STATE_INPUT_REQUIRED"), None);
    }

    #[test]
    fn a_message_becomes_a_skill_and_an_input() {
        let data = json!({"parts": [{"data": {"n": 1}}], "metadata": {"skill": "command"}});
        assert_eq!(task_input(&data, None).unwrap(), ("command".to_owned(), json!({"n": 1})));
        let doubles = json!({"parts": [{"data": {"n": 60.0, "half": 0.5, "list": [2.0]}}], "metadata": {"skill": "x"}});
        assert_eq!(
            task_input(&doubles, None).unwrap().1,
            json!({"n": 60, "half": 0.5, "list": [2]}),
            "protobuf's doubles"
        );
        let text = json!({"parts": [{"text": "hello"}, {"text": "{\"say\": \"hi\"}"}]});
        assert_eq!(task_input(&text, Some("echo")).unwrap(), ("echo".to_owned(), json!({"say": "hi"})));
        let v03 =
            json!({"kind": "message", "parts": [{"kind": "data", "data": {"x": true}}], "metadata": {"skill": "echo"}});
        assert_eq!(task_input(&v03, None).unwrap().1, json!({"x": true}));
        let code_of = |m: Value, default| task_input(&m, default).unwrap_err().code;
        assert_eq!(code_of(json!({"parts": [{"data": {}}]}), None), code::INVALID_PARAMS, "no skill, no default");
        assert_eq!(code_of(json!({"parts": [{"text": "just words"}]}), Some("echo")), code::INVALID_PARAMS);
        assert_eq!(code_of(json!("hi"), Some("echo")), code::INVALID_PARAMS);
    }

    #[test]
    fn a_task_carries_its_result_as_an_artifact_and_its_failure_as_the_status_message() {
        let result = json!({"stdout": "ok"});
        let done = TaskFacts {
            id: "t1",
            state: TaskState::Succeeded,
            updated_at: "2026-12-08T00:00:00.000Z",
            result: Some(&result),
            error: None,
            skill: "command",
        };
        let v1 = task(&done, Dialect::V1);
        assert_eq!(v1["status"]["state"], "TASK_STATE_COMPLETED");
        assert_eq!(v1["artifacts"][0]["parts"][0]["data"], result);
        assert!(v1.get("kind").is_none());
        let v03 = task(&done, Dialect::V03);
        assert_eq!((v03["kind"].as_str(), v03["status"]["state"].as_str()), (Some("task"), Some("completed")));
        assert_eq!(v03["artifacts"][0]["parts"][0]["kind"], "data");
        let failed =
            TaskFacts { state: TaskState::Failed, result: None, error: Some(("exit_status", Some("3"))), ..done };
        let v1 = task(&failed, Dialect::V1);
        assert_eq!(v1["status"]["message"]["parts"][0]["text"], "exit_status: 3");
        assert_eq!(v1["status"]["message"]["role"], "ROLE_AGENT");
        assert!(v1.get("artifacts").is_none());
    }
}
