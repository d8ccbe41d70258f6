use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit::{Actor, ActorKind};
use tether_base::clock::{ManualClock, Timestamp};

mod events;

struct Fixture {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: Store,
    broker: Broker,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let clock = Arc::new(ManualClock::at(Timestamp::from_millis(1_800_000_000_000)));
    let settings = Settings {
        lease: Duration::from_secs(10),
        retry_backoff: Duration::from_secs(2),
        retry_backoff_max: Duration::from_secs(60),
        ..Settings::default()
    };
    let vault = crate::vault::unsealed_for_tests(&store, clock.clone());
    let broker = Broker::new(store.clone(), clock.clone(), vault, settings, Arc::default());
    Fixture { _dir: dir, clock, store, broker }
}

impl Fixture {
    /// The task's result, opened from the vault.
    fn result_of(&self, id: TaskId) -> Option<Vec<u8>> {
        let task = self.broker.get(id).unwrap();
        self.broker.reveal(&task).unwrap().result
    }
}

fn worker(labels: &[&str]) -> WorkerView {
    let mut labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    labels.sort();
    WorkerView { id: WorkerId::new(), labels: Arc::new(labels) }
}

fn origin_of(w: &WorkerView) -> Origin {
    Origin {
        actor: Actor { kind: ActorKind::Worker, id: w.id.to_string(), roles: vec!["worker".into()] },
        source_ip: None,
        user_agent: None,
    }
}

fn new_task(kind: &str, labels: &[&str], priority: u8) -> NewTask {
    TaskRequest {
        kind: kind.into(),
        input: br#"{"n":1}"#.to_vec(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        priority: Some(priority),
        max_attempts: Some(2),
        ..TaskRequest::default()
    }
    .validate()
    .unwrap()
}

impl Fixture {
    async fn submit(&self, kind: &str, labels: &[&str], priority: u8) -> Task {
        self.broker.create(&Origin::system(), "alice", new_task(kind, labels, priority), None).await.unwrap().0
    }

    async fn take(&self, w: &WorkerView, max: u32) -> Vec<Task> {
        self.deliver(w, max).await.into_iter().map(|d| d.task).collect()
    }

    async fn deliver(&self, w: &WorkerView, max: u32) -> Vec<Delivery> {
        self.broker.poll(&origin_of(w), w, max, Duration::ZERO).await.unwrap()
    }

    fn audit_ok(&self) -> u64 {
        self.store.read(crate::audit::verify).unwrap().records
    }
}

fn lease_of(t: &Task) -> LeaseId {
    t.lease.as_ref().unwrap().id
}

#[tokio::test]
async fn a_task_runs_create_lease_complete_and_is_audited_each_step() {
    let f = fixture();
    let audit_before = f.audit_ok();
    let t = f.submit("echo", &[], 5).await;
    assert_eq!(t.state, TaskState::Queued);
    let w = worker(&[]);
    let got = f.take(&w, 8).await;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].state, got[0].attempts), (TaskState::Leased, 1));
    let done = f
        .broker
        .complete(&origin_of(&w), w.id, t.id, lease_of(&got[0]), Completion::Succeeded { result: b"42".to_vec() })
        .await
        .unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(f.result_of(t.id).as_deref(), Some(&b"42"[..]));
    assert_eq!(f.audit_ok(), audit_before + 3, "created, leased, completed");
}

#[tokio::test]
async fn depth_counts_ready_and_leased_work_and_finishing_is_news() {
    let f = fixture();
    let mut news = f.broker.finished_news();
    for _ in 0..3 {
        f.submit("echo", &[], 5).await;
    }
    assert_eq!(f.broker.depth().unwrap(), Depth { ready: 3, leased: 0, delayed: 0 });
    let w = worker(&[]);
    let got = f.take(&w, 2).await;
    assert_eq!(f.broker.depth().unwrap(), Depth { ready: 1, leased: 2, delayed: 0 });
    let done = Completion::Succeeded { result: b"1".to_vec() };
    f.broker.complete(&origin_of(&w), w.id, got[0].id, lease_of(&got[0]), done).await.unwrap();
    assert_eq!(f.broker.depth().unwrap(), Depth { ready: 1, leased: 1, delayed: 0 });
    assert_eq!(news.try_recv().unwrap(), got[0].id);
}

#[tokio::test]
async fn higher_priority_first_then_first_in_first_out() {
    let f = fixture();
    let a = f.submit("echo", &[], 5).await;
    let b = f.submit("echo", &[], 9).await;
    let c = f.submit("echo", &[], 5).await;
    let order: Vec<TaskId> = f.take(&worker(&[]), 3).await.iter().map(|t| t.id).collect();
    assert_eq!(order, [b.id, a.id, c.id]);
}

#[tokio::test]
async fn a_worker_only_gets_tasks_whose_labels_it_has() {
    let f = fixture();
    let gpu = f.submit("echo", &["gpu"], 5).await;
    let plain = f.submit("echo", &[], 5).await;
    let cpu_worker = worker(&["linux"]);
    let got: Vec<TaskId> = f.take(&cpu_worker, 8).await.iter().map(|t| t.id).collect();
    assert_eq!(got, [plain.id]);
    let got: Vec<TaskId> = f.take(&worker(&["gpu", "linux"]), 8).await.iter().map(|t| t.id).collect();
    assert_eq!(got, [gpu.id]);
}

#[tokio::test]
async fn an_expired_lease_requeues_and_fences_out_the_old_holder() {
    let f = fixture();
    let t = f.submit("echo", &[], 5).await;
    let (slow, fast) = (worker(&[]), worker(&[]));
    let first = f.take(&slow, 1).await.remove(0);
    f.clock.advance(Duration::from_secs(11));
    assert_eq!(f.broker.reap().await.unwrap(), 1);
    // Backoff: not yet available to anyone.
    assert!(f.take(&fast, 1).await.is_empty());
    f.clock.advance(Duration::from_secs(2));
    f.broker.reap().await.unwrap();
    let second = f.take(&fast, 1).await.remove(0);
    assert_eq!(second.attempts, 2);
    let stale = f
        .broker
        .complete(&origin_of(&slow), slow.id, t.id, lease_of(&first), Completion::Succeeded { result: b"1".to_vec() })
        .await;
    assert!(matches!(stale, Err(Error::LeaseStale)));
    assert!(matches!(f.broker.heartbeat(slow.id, t.id, lease_of(&first)).await, Err(Error::LeaseStale)));
    let ok = Completion::Succeeded { result: b"2".to_vec() };
    f.broker.complete(&origin_of(&fast), fast.id, t.id, lease_of(&second), ok.clone()).await.unwrap();
    // Completion is recorded once: a repeat with the same lease is refused too.
    let again = f.broker.complete(&origin_of(&fast), fast.id, t.id, lease_of(&second), ok).await;
    assert!(matches!(again, Err(Error::LeaseStale)));
    assert_eq!(f.result_of(t.id).as_deref(), Some(&b"2"[..]));
}

#[tokio::test]
async fn heartbeats_keep_a_lease_alive() {
    let f = fixture();
    let t = f.submit("echo", &[], 5).await;
    let w = worker(&[]);
    let leased = f.take(&w, 1).await.remove(0);
    for _ in 0..3 {
        f.clock.advance(Duration::from_secs(7));
        let hb = f.broker.heartbeat(w.id, t.id, lease_of(&leased)).await.unwrap();
        assert!(!hb.cancel);
        assert_eq!(f.broker.reap().await.unwrap(), 0);
    }
    assert_eq!(f.broker.get(t.id).unwrap().state, TaskState::Leased);
}

#[tokio::test]
async fn the_last_attempt_expiring_fails_the_task() {
    let f = fixture();
    let t = f.submit("echo", &[], 5).await;
    let w = worker(&[]);
    for _ in 0..2 {
        // First expire whatever lease is out, then let its backoff pass.
        for _ in 0..2 {
            f.clock.advance(Duration::from_secs(60));
            f.broker.reap().await.unwrap();
        }
        assert_eq!(f.take(&w, 1).await.len(), 1);
    }
    f.clock.advance(Duration::from_secs(11));
    f.broker.reap().await.unwrap();
    let t = f.broker.get(t.id).unwrap();
    assert_eq!((t.state, t.attempts), (TaskState::Failed, 2));
    assert_eq!(t.error.unwrap().code, "lease_expired");
}

#[tokio::test]
async fn retryable_failures_retry_until_attempts_run_out() {
    let f = fixture();
    let t = f.submit("echo", &[], 5).await;
    let w = worker(&[]);
    let fail = || Completion::Failed {
        error: TaskError { code: "flaky".into(), message: "try again".into() },
        retryable: true,
    };
    let first = f.take(&w, 1).await.remove(0);
    let after = f.broker.complete(&origin_of(&w), w.id, t.id, lease_of(&first), fail()).await.unwrap();
    assert_eq!(after.state, TaskState::Queued);
    f.clock.advance(Duration::from_secs(2));
    f.broker.reap().await.unwrap();
    let second = f.take(&w, 1).await.remove(0);
    let after = f.broker.complete(&origin_of(&w), w.id, t.id, lease_of(&second), fail()).await.unwrap();
    assert_eq!(after.state, TaskState::Failed);
    assert_eq!(after.error.unwrap().code, "flaky");
}

#[tokio::test]
async fn cancel_stops_a_queued_task_and_tells_the_holder_of_a_leased_one() {
    let f = fixture();
    let queued = f.submit("echo", &[], 5).await;
    f.broker.cancel(&Origin::system(), queued.id).await.unwrap();
    let running = f.submit("echo", &[], 5).await;
    let w = worker(&[]);
    let leased = f.take(&w, 8).await;
    assert_eq!(leased.len(), 1, "the cancelled task is never leased");
    f.broker.cancel(&Origin::system(), running.id).await.unwrap();
    let hb = f.broker.heartbeat(w.id, running.id, lease_of(&leased[0])).await.unwrap();
    assert!(hb.cancel);
    assert!(matches!(f.broker.cancel(&Origin::system(), running.id).await, Err(Error::AlreadyFinished)));
    let late = Completion::Succeeded { result: b"1".to_vec() };
    assert!(matches!(
        f.broker.complete(&origin_of(&w), w.id, running.id, lease_of(&leased[0]), late).await,
        Err(Error::LeaseStale)
    ));
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_task_and_refuses_a_different_body() {
    let f = fixture();
    let key = Some("k1".to_string());
    let (a, created_a) =
        f.broker.create(&Origin::system(), "alice", new_task("echo", &[], 5), key.clone()).await.unwrap();
    let (b, created_b) =
        f.broker.create(&Origin::system(), "alice", new_task("echo", &[], 5), key.clone()).await.unwrap();
    assert!(created_a && !created_b);
    assert_eq!(a.id, b.id);
    let other = f.broker.create(&Origin::system(), "alice", new_task("other", &[], 5), key.clone()).await;
    assert!(matches!(other, Err(Error::IdempotencyConflict)));
    // Keys are per principal.
    let (c, created_c) = f.broker.create(&Origin::system(), "bob", new_task("echo", &[], 5), key).await.unwrap();
    assert!(created_c && c.id != a.id);
}

#[tokio::test]
async fn a_parked_poll_is_woken_by_a_new_task_without_waiting_out_its_timeout() {
    let f = fixture();
    let w = worker(&["gpu"]);
    let broker = f.broker.clone();
    let (pw, po) = (w.clone(), origin_of(&w));
    let parked = tokio::spawn(async move { broker.poll(&po, &pw, 1, Duration::from_secs(30)).await });
    while f.broker.parked_polls() == 0 {
        tokio::task::yield_now().await;
    }
    // A task this worker cannot run does not satisfy the poll.
    f.submit("echo", &["other"], 5).await;
    let started = std::time::Instant::now();
    let t = f.submit("echo", &["gpu"], 5).await;
    let got = tokio::time::timeout(Duration::from_secs(5), parked).await.unwrap().unwrap().unwrap();
    assert_eq!(got[0].task.id, t.id);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn draining_answers_parked_polls_and_leases_nothing_more() {
    let f = fixture();
    let w = worker(&[]);
    let broker = f.broker.clone();
    let (pw, po) = (w.clone(), origin_of(&w));
    let parked = tokio::spawn(async move { broker.poll(&po, &pw, 1, Duration::from_secs(30)).await });
    while f.broker.parked_polls() == 0 {
        tokio::task::yield_now().await;
    }
    f.broker.drain();
    assert!(parked.await.unwrap().unwrap().is_empty());
    f.submit("echo", &[], 5).await;
    assert!(f.take(&w, 1).await.is_empty());
}

#[tokio::test]
async fn waiting_for_a_task_returns_when_it_finishes() {
    let f = fixture();
    let t = f.submit("echo", &[], 5).await;
    let broker = f.broker.clone();
    let waiter = tokio::spawn(async move { broker.wait_finished(t.id, Duration::from_secs(30)).await });
    let w = worker(&[]);
    let leased = f.take(&w, 1).await.remove(0);
    let done = Completion::Succeeded { result: b"{}".to_vec() };
    f.broker.complete(&origin_of(&w), w.id, t.id, lease_of(&leased), done).await.unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(finished.state, TaskState::Succeeded);
}

#[tokio::test]
async fn listing_filters_by_owner_and_state_newest_first() {
    let f = fixture();
    let a = f.submit("echo", &[], 5).await;
    let b = f.broker.create(&Origin::system(), "bob", new_task("echo", &[], 5), None).await.unwrap().0;
    let c = f.submit("echo", &[], 5).await;
    f.broker.cancel(&Origin::system(), c.id).await.unwrap();
    let all = f.broker.list(&ListFilter { limit: 10, ..ListFilter::default() }).unwrap();
    assert_eq!(all.iter().map(|t| t.id).collect::<Vec<_>>(), [c.id, b.id, a.id]);
    let alice_queued = f
        .broker
        .list(&ListFilter {
            created_by: Some("alice".into()),
            state: Some(TaskState::Queued),
            limit: 10,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(alice_queued.iter().map(|t| t.id).collect::<Vec<_>>(), [a.id]);
    let page = f.broker.list(&ListFilter { before: Some(c.id), limit: 1, ..ListFilter::default() }).unwrap();
    assert_eq!(page[0].id, b.id);
}

#[tokio::test]
async fn a_new_task_goes_straight_to_the_longest_waiting_poll_in_the_same_commit() {
    let f = fixture();
    let (first, second) = (worker(&[]), worker(&[]));
    let spawn_poll = |w: &WorkerView| {
        let (broker, w, o) = (f.broker.clone(), w.clone(), origin_of(w));
        tokio::spawn(async move { broker.poll(&o, &w, 1, Duration::from_secs(30)).await })
    };
    let p1 = spawn_poll(&first);
    while f.broker.parked_polls() < 1 {
        tokio::task::yield_now().await;
    }
    let p2 = spawn_poll(&second);
    while f.broker.parked_polls() < 2 {
        tokio::task::yield_now().await;
    }
    let audit_before = f.audit_ok();
    let t = f.submit("echo", &[], 5).await;
    assert_eq!(t.state, TaskState::Leased, "leased by the creating operation itself");
    assert_eq!(t.lease.as_ref().unwrap().worker, first.id, "the longest-waiting worker gets it");
    let got = tokio::time::timeout(Duration::from_secs(5), p1).await.unwrap().unwrap().unwrap();
    assert_eq!(got[0].task.id, t.id);
    assert_eq!(f.audit_ok(), audit_before + 2, "created and leased");
    assert_eq!(f.broker.parked_polls(), 1);
    f.broker.drain();
    assert!(p2.await.unwrap().unwrap().is_empty());
}

#[tokio::test]
async fn a_poll_that_went_away_is_never_handed_a_task() {
    let f = fixture();
    let w = worker(&[]);
    let (broker, pw, po) = (f.broker.clone(), w.clone(), origin_of(&w));
    let parked = tokio::spawn(async move { broker.poll(&po, &pw, 1, Duration::from_secs(30)).await });
    while f.broker.parked_polls() == 0 {
        tokio::task::yield_now().await;
    }
    parked.abort();
    let _ = parked.await;
    let t = f.submit("echo", &[], 5).await;
    assert_eq!(t.state, TaskState::Queued, "queued for a live worker, not leased to a dead poll");
    assert_eq!(f.take(&worker(&[]), 1).await[0].id, t.id);
}

mod secrets_for_tasks {
    use super::*;
    use crate::vault::secrets::{self, NewVersion, Policy};
    use tether_base::clock::Clock;

    const VALUE: &[u8] = b"s3cret-db-password";

    impl Fixture {
        async fn put_secret(&self, name: &str, value: &[u8], kinds: &[&str], labels: &[&str]) {
            let keys = self.broker.vault.keys().unwrap();
            let policy = Policy {
                kinds: kinds.iter().map(|s| s.to_string()).collect(),
                labels: labels.iter().map(|s| s.to_string()).collect(),
            };
            let new = NewVersion { name: name.into(), value: value.to_vec().into(), policy: Some(policy) };
            let now = self.clock.now();
            self.store.write(move |tx| secrets::put(tx, now, &Origin::system(), &keys, new)).await.unwrap();
        }

        async fn submit_with(&self, kind: &str, secrets: &[&str]) -> Result<Task, Error> {
            let mut new = new_task(kind, &[], 5);
            new.secrets = secrets.iter().map(|s| s.to_string()).collect();
            Ok(self.broker.create(&Origin::system(), "alice", new, None).await?.0)
        }

        fn audit_text(&self) -> String {
            let mut out = Vec::new();
            self.store.read(|tx| crate::audit::export_jsonl(tx, 0, &mut out)).unwrap();
            String::from_utf8(out).unwrap()
        }
    }

    #[tokio::test]
    async fn an_idempotency_key_reused_with_other_secrets_is_a_conflict() {
        let f = fixture();
        f.put_secret("db", VALUE, &["echo"], &[]).await;
        let key = Some("k1".to_string());
        let plain = new_task("echo", &[], 5);
        let mut with_secret = plain.clone();
        with_secret.secrets = vec!["db".into()];
        f.broker.create(&Origin::system(), "alice", plain, key.clone()).await.unwrap();
        let again = f.broker.create(&Origin::system(), "alice", with_secret, key).await;
        assert!(matches!(again, Err(Error::IdempotencyConflict)), "{again:?}");
    }

    #[tokio::test]
    async fn a_lease_carries_the_secrets_its_policy_allows_and_each_delivery_is_audited() {
        let f = fixture();
        f.put_secret("db", VALUE, &["echo"], &["secure"]).await;
        let t = f.submit_with("echo", &["db"]).await.unwrap();
        assert!(f.take(&worker(&["gpu"]), 1).await.is_empty(), "a worker without the policy's label gets nothing");
        let w = worker(&["gpu", "secure"]);
        let got = f.deliver(&w, 1).await;
        assert_eq!(got[0].task.id, t.id);
        let opened = &got[0].secrets;
        assert_eq!((opened[0].0.name.as_str(), opened[0].0.version, opened[0].1.expose()), ("db", 1, VALUE));
        let audit = f.audit_text();
        let delivery = audit.lines().find(|l| l.contains("secret.delivered")).expect("a delivery record");
        for fact in [t.id.to_string(), w.id.to_string(), "\"version\":\"1\"".into()] {
            assert!(delivery.contains(&fact), "{delivery} should name {fact}");
        }
        assert!(!audit.contains(std::str::from_utf8(VALUE).unwrap()), "the value is in the audit log");
        assert_eq!(format!("{:?}", opened[0].1), "SecretValue(***)");
    }

    #[tokio::test]
    async fn a_parked_poll_gets_the_newest_version_only_if_the_policy_lets_it() {
        let f = fixture();
        f.put_secret("db", b"v1", &["echo"], &["secure"]).await;
        f.put_secret("db", b"v2", &["echo"], &["secure"]).await;
        let (plain, secure) = (worker(&[]), worker(&["secure"]));
        let mut parked = Vec::new();
        for w in [plain.clone(), secure.clone()] {
            let broker = f.broker.clone();
            let o = origin_of(&w);
            parked.push(tokio::spawn(async move { broker.poll(&o, &w, 1, Duration::from_secs(2)).await }));
            while f.broker.parked_polls() < parked.len() {
                tokio::task::yield_now().await;
            }
        }
        let t = f.submit_with("echo", &["db"]).await.unwrap();
        let secure_got = parked.pop().unwrap().await.unwrap().unwrap();
        assert_eq!(secure_got[0].task.id, t.id, "the poll that may have the secret gets the task");
        assert_eq!(secure_got[0].task.lease.as_ref().unwrap().worker, secure.id);
        assert_eq!(secure_got[0].secrets[0].1.expose(), b"v2");
        assert!(parked.pop().unwrap().await.unwrap().unwrap().is_empty(), "the first-parked poll without the label");
    }

    #[tokio::test]
    async fn a_task_naming_an_unknown_secret_or_one_its_kind_may_not_have_is_refused() {
        let f = fixture();
        f.put_secret("db", VALUE, &["echo"], &[]).await;
        for (kind, names, says) in [("command", ["db"], "may not be given"), ("echo", ["nope"], "no secret named")] {
            match f.submit_with(kind, &names).await {
                Err(Error::SecretRefused(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        assert!(f.broker.list(&ListFilter { limit: 10, ..ListFilter::default() }).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_waiting_task_whose_secret_is_deleted_fails_as_secret_unavailable() {
        let f = fixture();
        f.put_secret("db", VALUE, &["echo"], &[]).await;
        let t = f.submit_with("echo", &["db"]).await.unwrap();
        let now = f.clock.now();
        f.store.write(move |tx| secrets::delete(tx, now, &Origin::system(), "db")).await.unwrap();
        assert!(f.take(&worker(&[]), 1).await.is_empty());
        let task = f.broker.get(t.id).unwrap();
        assert_eq!(task.state, TaskState::Failed);
        assert_eq!(f.broker.reveal(&task).unwrap().error.unwrap().code, "secret_unavailable");
        assert!(f.audit_ok() > 0);
    }

    #[tokio::test]
    async fn a_task_leased_to_a_parked_poll_is_delivered_even_if_the_vault_seals_before_the_reply() {
        let f = fixture();
        f.put_secret("db", b"v1", &["echo"], &[]).await;
        let w = worker(&[]);
        let (broker, pw, po) = (f.broker.clone(), w.clone(), origin_of(&w));
        let (resume, held) = std::sync::mpsc::channel::<()>();
        let (holding, parked) = std::sync::mpsc::channel::<()>();
        // The poll runs on a runtime of its own whose only thread the test
        // holds once the poll has parked, so the poll cannot build its reply
        // until the lease has committed and the vault has sealed. The task
        // is submitted only once that thread is held: submitted while it
        // still ran, the poll could answer at once, and the thread would
        // wait for a parked poll that never comes again (it hung CI).
        let poller = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let polling = broker.clone();
                let poll = tokio::spawn(async move { polling.poll(&po, &pw, 1, Duration::from_secs(30)).await });
                while broker.parked_polls() == 0 {
                    tokio::task::yield_now().await;
                }
                holding.send(()).unwrap();
                held.recv().unwrap();
                poll.await.unwrap()
            })
        });
        tokio::task::spawn_blocking(move || parked.recv().unwrap()).await.unwrap();
        let t = f.submit_with("echo", &["db"]).await.unwrap();
        assert_eq!(t.state, TaskState::Leased);
        f.broker.vault.seal(&Origin::system()).await.unwrap();
        resume.send(()).unwrap();
        let got = poller.join().unwrap().expect("a committed lease is delivered, not failed as sealed");
        assert_eq!((got[0].task.id, got[0].input.as_slice()), (t.id, br#"{"n":1}"#.as_slice()));
        assert_eq!(got[0].secrets[0].1.expose(), b"v1");
    }
}

#[tokio::test]
async fn re_encryption_moves_every_sealed_field_to_the_newest_key_batch_by_batch() {
    let f = fixture();
    let w = worker(&[]);
    let mut ids = Vec::new();
    for _ in 0..300 {
        ids.push(f.submit("echo", &[], 5).await.id);
    }
    let done = f.take(&w, 1).await.remove(0);
    f.broker
        .complete(
            &origin_of(&w),
            w.id,
            done.id,
            lease_of(&done),
            Completion::Succeeded { result: b"{\"ok\":1}".to_vec() },
        )
        .await
        .unwrap();
    let before: Vec<Revealed> = ids.iter().map(|id| f.broker.reveal(&f.broker.get(*id).unwrap()).unwrap()).collect();
    let version = f.broker.vault.rotate(&Origin::system(), "test").await.unwrap();

    let (mut moved, mut after, mut batches) = (0, None, 0);
    loop {
        let (n, next) = f.broker.refresh_seals(after).await.unwrap();
        (moved, batches) = (moved + n, batches + 1);
        match next {
            Some(id) => after = Some(id),
            None => break,
        }
    }
    assert_eq!((moved, batches), (300, 2), "every task, in batches of 256");
    for (id, was) in ids.iter().zip(&before) {
        let task = f.broker.get(*id).unwrap();
        assert!(!task.sealed_before(version), "task {id} still has a field under an old key");
        assert_eq!(&f.broker.reveal(&task).unwrap(), was, "the values are unchanged");
    }
    assert_eq!(f.broker.refresh_seals(None).await.unwrap().0, 0, "a second pass has nothing to do");
}
