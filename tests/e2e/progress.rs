//! A task followed live: a real worker runs a command that prints lines
//! and progress marks; the task's event stream (SSE), taken up again after
//! any event number, and `tether task watch` all show them in order, and a
//! role that sees metadata only gets states and percentages, nothing the
//! command printed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::Appliance;

const STEPS: &str = r#"
[commands.steps]
argv = ["/bin/sh", "-c", 'for i in 1 2 3 4; do echo "line $i"; echo "::progress $((i * 25)) step $i"; done']
"#;

/// Every event of task `id`'s stream (it ends after the final state), as
/// (event, id, data); taken up after `after` when given.
async fn follow(a: &Appliance, token: &str, id: &str, after: Option<u32>) -> Vec<(String, u32, Value)> {
    let config = tether_base::tls::client(&a.ca_pem, None, &[b"http/1.1"]).unwrap();
    let http = tether_base::tls::https_client(config, Duration::from_secs(60)).unwrap();
    let mut req = http.get(format!("{}/api/v1/tasks/{id}/events", a.console)).bearer_auth(token);
    if let Some(after) = after {
        req = req.header("last-event-id", after.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = resp.text().await.unwrap();
    body.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
            let event = field("event:")?.to_owned();
            Some((event, field("id:")?.parse().unwrap(), serde_json::from_str(field("data:")?).unwrap()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commands_progress_and_output_reach_the_stream_the_watch_and_a_resumed_stream_in_order() {
    let a = Appliance::start();
    let api = a.api();
    let id = api.submit("command", json!({"command": "steps"}), &[]).await;
    // The stream is open before any worker is: it sees the task from its start.
    let watching = {
        let (a_token, id) = (a.admin_token.clone(), id.clone());
        let a = &a;
        async move { follow(a, &a_token, &id, None).await }
    };
    let worker = async {
        let w = a.worker("w", &[], Some(STEPS)).await;
        api.wait(&id, 60).await;
        w
    };
    let (events, _w) = tokio::time::timeout(Duration::from_secs(90), async { tokio::join!(watching, worker) })
        .await
        .expect("the stream ends once the task has");

    let numbers: Vec<u32> = events.iter().map(|(_, n, _)| *n).collect();
    assert_eq!(numbers, (0..events.len() as u32).collect::<Vec<_>>(), "numbered from 0, none missing: {events:?}");
    let states: Vec<&str> = events.iter().filter(|e| e.0 == "state").map(|e| e.2["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["queued", "leased", "succeeded"], "{events:?}");
    assert_eq!(events.last().unwrap().2["state"], "succeeded", "the stream ends with the final state");
    let progress: Vec<(u64, &str)> = events
        .iter()
        .filter(|e| e.0 == "progress")
        .map(|e| (e.2["percent"].as_u64().unwrap(), e.2["message"].as_str().unwrap()))
        .collect();
    assert_eq!(progress, [(25, "step 1"), (50, "step 2"), (75, "step 3"), (100, "step 4")]);
    let printed: String = events.iter().filter(|e| e.0 == "output").map(|e| e.2["text"].as_str().unwrap()).collect();
    let expected: String = (1..=4).map(|i| format!("line {i}\n::progress {} step {i}\n", i * 25)).collect();
    assert_eq!(printed, expected, "everything printed, in order");
    // Each progress event follows the output that printed its line.
    for (i, (_, _, data)) in events.iter().enumerate().filter(|(_, e)| e.0 == "progress") {
        let before: String =
            events[..i].iter().filter(|e| e.0 == "output").map(|e| e.2["text"].as_str().unwrap()).collect();
        let mark = format!("::progress {} ", data["percent"]);
        assert!(before.contains(&mark), "{mark} after its line: {events:?}");
    }

    // Taken up again after any event: exactly the rest.
    let last = events.len() as u32 - 1;
    for after in [0, last / 2, last - 1] {
        let rest = follow(&a, &a.admin_token, &id, Some(after)).await;
        assert_eq!(rest, events[after as usize + 1..], "after {after}");
    }

    // A viewer sees metadata: states and percentages, no output or message.
    let (s, v) = api.post("/api/v1/tokens", &json!({"role": "viewer", "name": "wall-screen"})).await;
    assert_eq!(s, 201, "{v}");
    let seen = follow(&a, v["token"].as_str().unwrap(), &id, None).await;
    assert!(seen.iter().all(|e| e.0 != "output" && e.2.get("message").is_none()), "{seen:?}");
    assert_eq!(seen.iter().filter(|e| e.0 == "progress").count(), 4);

    // `tether task watch`: the same events as JSON lines; the plain form
    // prints what the command printed on stdout and the progress on stderr.
    let out = a.cli(&["task", "watch", &id, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let streamed: Vec<Value> = events.iter().map(|e| e.2.clone()).collect();
    assert_eq!(lines, streamed);
    let out = a.cli(&["task", "watch", &id]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "line 1\nline 2\nline 3\nline 4\n", "progress marks left out");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        shown,
        [
            "queued",
            "leased (attempt 1)",
            "progress 25% step 1",
            "progress 50% step 2",
            "progress 75% step 3",
            "progress 100% step 4",
            "succeeded"
        ],
        "{stderr}"
    );

    // A task that fails: the watch says so and exits 3.
    let refused = api.submit("shell", json!("true"), &[]).await;
    api.wait(&refused, 30).await;
    let out = a.cli(&["task", "watch", &refused]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).lines().any(|l| l == "failed"));
}
