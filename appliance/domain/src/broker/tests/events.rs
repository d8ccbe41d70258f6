//! A task's event log: every state it passes through and what its worker
//! reports, in order, resumable after any number, sealed, bounded, and
//! only from the holder of the current lease.

use super::*;
use crate::broker::events::{MAX_OUTPUT_BYTES, Progress, TaskEvent};

fn report(percent: Option<u8>, message: Option<&str>, output: Option<&str>) -> Progress {
    Progress { percent, message: message.map(str::to_owned), output: output.map(str::to_owned) }
}

/// The events as (type, what) pairs, for comparing.
fn shape(events: &[TaskEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            TaskEvent::State { state, attempt, .. } => format!("state {} {attempt}", state.as_str()),
            TaskEvent::Progress { percent, message, .. } => format!("progress {percent:?} {message:?}"),
            TaskEvent::Output { text, .. } => format!("output {text:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_task_logs_its_states_and_its_workers_reports_in_order_and_resumes_after_any_number() {
    let f = fixture();
    let mut changes = f.broker.changes();
    let t = f.submit("echo", &[], 5).await;
    assert_eq!(changes.recv().await.unwrap(), t.id, "creation is news");
    let w = worker(&[]);
    let got = f.take(&w, 1).await;
    let lease = lease_of(&got[0]);
    f.broker.report_progress(w.id, t.id, lease, report(Some(10), Some("unpacking"), None)).await.unwrap();
    f.broker.report_progress(w.id, t.id, lease, report(None, None, Some("line 1\n"))).await.unwrap();
    let last = f.broker.report_progress(w.id, t.id, lease, report(Some(90), None, Some("line 2\n"))).await.unwrap();
    let done = Completion::Succeeded { result: b"{}".to_vec() };
    f.broker.complete(&origin_of(&w), w.id, t.id, lease, done).await.unwrap();

    let all = f.broker.events(t.id, None, 100).unwrap();
    assert_eq!(
        shape(&all),
        [
            "state queued 0",
            "state leased 1",
            "progress Some(10) Some(\"unpacking\")",
            "output \"line 1\\n\"",
            "output \"line 2\\n\"",
            "progress Some(90) None",
            "state succeeded 1",
        ]
    );
    let numbers: Vec<u32> = all.iter().map(TaskEvent::seq).collect();
    assert_eq!(numbers, (0..7).collect::<Vec<_>>());
    assert_eq!(last, 5, "a report answers with its last event's number");
    // Resumed after any number: exactly the rest.
    for after in 0..7 {
        let rest = f.broker.events(t.id, Some(after), 100).unwrap();
        assert_eq!(rest, all[after as usize + 1..], "after {after}");
    }
    assert_eq!(f.broker.events(t.id, Some(2), 2).unwrap(), all[3..5], "and paged");
    for _ in 0..5 {
        assert_eq!(changes.recv().await.unwrap(), t.id, "every report and state change is news");
    }
}

#[tokio::test]
async fn a_retry_and_a_cancel_are_in_the_log_and_metadata_readers_see_no_payload() {
    let f = fixture();
    let t = f.submit("echo", &[], 5).await;
    let w = worker(&[]);
    let got = f.take(&w, 1).await;
    f.broker.report_progress(w.id, t.id, lease_of(&got[0]), report(Some(50), Some("half"), Some("x"))).await.unwrap();
    let failed = Completion::Failed { error: TaskError { code: "flaky".into(), message: "m".into() }, retryable: true };
    f.broker.complete(&origin_of(&w), w.id, t.id, lease_of(&got[0]), failed).await.unwrap();
    f.clock.advance(Duration::from_secs(3));
    f.broker.reap().await.unwrap();
    f.broker.cancel(&Origin::system(), t.id).await.unwrap();
    let all = f.broker.events(t.id, None, 100).unwrap();
    assert_eq!(
        shape(&all),
        [
            "state queued 0",
            "state leased 1",
            "output \"x\"",
            "progress Some(50) Some(\"half\")",
            "state queued 1",
            "state cancelled 1",
        ],
        "one queued for the retry's wait, none again when the wait ends"
    );
    let metadata: Vec<TaskEvent> = all.into_iter().filter_map(TaskEvent::metadata_only).collect();
    assert_eq!(
        shape(&metadata),
        ["state queued 0", "state leased 1", "progress Some(50) None", "state queued 1", "state cancelled 1"],
    );
}

#[tokio::test]
async fn only_the_lease_holder_reports_output_is_bounded_and_sealed_on_disk() {
    let f = fixture();
    let t = f.submit("echo", &[], 5).await;
    let (w, other) = (worker(&[]), worker(&[]));
    let got = f.take(&w, 1).await;
    let lease = lease_of(&got[0]);
    let stale = f.broker.report_progress(other.id, t.id, lease, report(Some(1), None, None)).await;
    assert!(matches!(stale, Err(Error::LeaseStale)), "{stale:?}");
    let stale = f.broker.report_progress(w.id, t.id, LeaseId::new(), report(Some(1), None, None)).await;
    assert!(matches!(stale, Err(Error::LeaseStale)), "{stale:?}");

    let canary = "CANARY-output-7f3e ";
    let chunk = canary.repeat(64 * 1024 / canary.len());
    let mut stored = 0u64;
    let refused = loop {
        match f.broker.report_progress(w.id, t.id, lease, report(None, None, Some(&chunk))).await {
            Ok(_) => stored += chunk.len() as u64,
            Err(e) => break e,
        }
    };
    assert!(matches!(refused, Error::EventsFull(_)), "{refused:?}");
    assert!(stored <= MAX_OUTPUT_BYTES && stored + chunk.len() as u64 > MAX_OUTPUT_BYTES, "{stored}");
    // The task goes on: a percentage still fits, and so does its end.
    f.broker.report_progress(w.id, t.id, lease, report(Some(99), None, None)).await.unwrap();
    let done = Completion::Succeeded { result: b"{}".to_vec() };
    f.broker.complete(&origin_of(&w), w.id, t.id, lease, done).await.unwrap();
    assert!(matches!(f.broker.events(t.id, None, 1000).unwrap().last(), Some(TaskEvent::State { .. })));

    drop(f.broker);
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(f._dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            on_disk.extend(std::fs::read(path).unwrap());
        }
    }
    let needle = canary.as_bytes();
    assert!(!on_disk.windows(needle.len()).any(|w| w == needle), "output is sealed on disk");
}
