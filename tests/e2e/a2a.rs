//! A2A through the official client (`a2a-sdk`, pinned): the agent card a
//! real worker's commands fill, a message a real `tether worker` runs,
//! one streamed with its progress and output, tasks got, listed and
//! cancelled, a finished task subscribed to — against the real binary.
//! The endpoint's refusals are the JSON API's: 401 without a token, 403
//! for a role without the method's permission.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::Appliance;
use crate::llm::{client_script, python};

/// Two steps of output and progress, beside lifecycle's commands (greet,
/// fail, nap).
const STEPS: &str = r#"
[commands.steps]
argv = ["/bin/sh", "-c", 'for i in 1 2; do echo "line $i"; echo "::progress $((i * 50)) step $i"; done']
"#;

fn state_of(task: &Value) -> &str {
    task["status"]["state"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_a2a_client_sends_streams_gets_lists_and_cancels_tasks_a_real_worker_runs() {
    let a = Appliance::start();
    let _w = a.worker("w", &[], Some(&format!("{STEPS}{}", crate::lifecycle::COMMANDS))).await;
    let out = Command::new(python())
        .arg(client_script("a2a_client.py"))
        .args([&a.console, &a.ca_file().display().to_string()])
        .env("TETHER_TOKEN", &a.admin_token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();

    // The card: the endpoint where the client found the card, streaming,
    // bearer tokens, and the worker's handlers and commands as skills.
    let card = &seen["card"];
    assert_eq!(card["supportedInterfaces"][0]["url"], format!("{}/a2a/v1", a.console), "{card}");
    assert_eq!(card["supportedInterfaces"][0]["protocolBinding"], "JSONRPC");
    assert_eq!(card["capabilities"]["streaming"], true);
    assert_eq!(card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"], "bearer");
    let skills: Vec<&str> = card["skills"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(skills, ["command.fail", "command.greet", "command.nap", "command.steps", "echo"], "{card}");
    let schemas = &card["capabilities"]["extensions"][0]["params"];
    assert_eq!(schemas["command.nap"]["properties"]["seconds"]["maximum"], 120.0, "{card}");

    // Sent and waited for: the task, completed, its result the artifact.
    let task = &seen["sent"][0]["task"];
    assert_eq!(state_of(task), "TASK_STATE_COMPLETED", "{seen}");
    assert_eq!(task["artifacts"][0]["parts"][0]["data"], json!({"say": "hi"}));

    // Streamed: the task first, then working, progress, output, the result
    // and completed, in order.
    let streamed = seen["streamed"].as_array().unwrap();
    // (A worker waiting for work takes the task as it is made: it may be
    // working already when the stream starts.)
    let first = state_of(&streamed[0]["task"]);
    assert!(["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING"].contains(&first), "{streamed:?}");
    let said: Vec<String> = streamed[1..]
        .iter()
        .map(|e| match (e.get("statusUpdate"), e.get("artifactUpdate")) {
            (Some(s), _) => {
                let text = s["status"]["message"]["parts"][0]["text"].as_str().unwrap_or_default();
                format!("{} {text}", s["status"]["state"].as_str().unwrap()).trim_end().to_owned()
            }
            (_, Some(a)) => {
                let part = &a["artifact"]["parts"][0];
                let text = part["text"].as_str().map_or_else(|| part["data"].to_string(), str::to_owned);
                format!("{} {text:?}", a["artifact"]["artifactId"].as_str().unwrap())
            }
            _ => panic!("an event that is neither: {e}"),
        })
        .collect();
    let said: Vec<String> = match first {
        "TASK_STATE_SUBMITTED" => {
            assert_eq!(said[0], "TASK_STATE_WORKING", "{said:#?}");
            said[1..].to_vec()
        }
        _ => said,
    };
    let expected = [
        "output \"line 1\\n::progress 50 step 1\\n\"",
        "TASK_STATE_WORKING 50% step 1",
        "output \"line 2\\n::progress 100 step 2\\n\"",
        "TASK_STATE_WORKING 100% step 2",
    ];
    assert_eq!(said[..expected.len()], expected, "{said:#?}");
    assert!(said[expected.len()].starts_with("result "), "{said:#?}");
    assert_eq!(said[expected.len() + 1..], ["TASK_STATE_COMPLETED"], "{said:#?}");

    // Got and listed.
    assert_eq!(seen["got"]["id"], task["id"]);
    assert_eq!(state_of(&seen["got"]), "TASK_STATE_COMPLETED");
    let listed = seen["listed"]["tasks"].as_array().unwrap();
    assert!(listed.iter().any(|t| t["id"] == task["id"]), "{listed:?}");

    // Cancelled while it ran: canceled; the finished one cannot be.
    assert_eq!(state_of(&seen["cancelled"]), "TASK_STATE_CANCELED", "{seen}");
    assert_eq!(seen["cancel_finished"], "TaskNotCancelableError");
    // Subscribed to after it finished: the task, then the stream ends.
    assert_eq!(seen["subscribed"].as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(state_of(&seen["subscribed"][0]["task"]), "TASK_STATE_COMPLETED");

    // The JSON API's refusals: no token, a role without the permission.
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": task["id"]}});
    let (s, _) = a.api().with_token(None).post("/a2a/v1", &call).await;
    assert_eq!(s, 401);
    let (s, v) = a.api().post("/api/v1/tokens", &json!({"role": "auditor", "name": "reader"})).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = a.api().with_token(v["token"].as_str()).post("/a2a/v1", &call).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    // The 0.3 names answer in 0.3's shapes.
    let old = json!({"jsonrpc": "2.0", "id": "o1", "method": "tasks/get", "params": {"id": task["id"]}});
    let (s, v, _) = a.api().send(reqwest::Method::POST, "/a2a/v1", Some(&old), &[("a2a-version", "0.3")]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["id"].as_str(), v["result"]["kind"].as_str()), (Some("o1"), Some("task")), "{v}");
    assert_eq!(v["result"]["status"]["state"], "completed", "{v}");
    let send = json!({"jsonrpc": "2.0", "id": 5, "method": "message/send", "params": {"message": {
        "kind": "message", "messageId": "m-03", "role": "user",
        "parts": [{"kind": "text", "text": "{\"say\": \"old\"}"}], "metadata": {"skill": "echo"}}}});
    let (s, v, _) = a.api().send(reqwest::Method::POST, "/a2a/v1", Some(&send), &[("a2a-version", "0.3")]).await;
    assert_eq!((s, v["result"]["status"]["state"].as_str()), (200, Some("completed")), "{v}");
    assert_eq!(v["result"]["artifacts"][0]["parts"][0], json!({"kind": "data", "data": {"say": "old"}}), "{v}");
    let (_, again, _) = a.api().send(reqwest::Method::POST, "/a2a/v1", Some(&send), &[("a2a-version", "0.3")]).await;
    assert_eq!(again["result"]["id"], v["result"]["id"], "the same messageId is the same task");
    let (_, v, _) = a.api().send(reqwest::Method::POST, "/a2a/v1", Some(&old), &[("a2a-version", "2.0")]).await;
    assert_eq!(v["error"]["code"], -32009, "{v}");
    // A malformed call is a JSON-RPC error with its standard code.
    let (s, v) = a.api().post("/a2a/v1", &json!({"jsonrpc": "2.0", "id": 2, "method": "Nope"})).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (200, Some(-32601)), "{v}");
    let (s, v) =
        a.api().post("/a2a/v1", &json!({"jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": {"id": "x"}})).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (200, Some(-32001)), "{v}");
}
