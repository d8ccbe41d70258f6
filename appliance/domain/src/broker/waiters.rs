//! Parked long-polls, and the hand-off of a ready task to one of them.
//!
//! A poll that finds nothing to claim parks *inside the same store
//! operation* that looked (the group-commit writer runs operations one at a
//! time), so no task can become ready between the look and the park. When a
//! task becomes ready later — created, retried, released from backoff — the
//! operation doing that reserves the oldest parked poll whose worker has the
//! task's labels and leases the task to it in the same transaction. After the
//! commit the broker delivers it through the poll's mailbox. Delivery to a
//! waiting worker therefore costs no extra commit, and nothing here reads the
//! store.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

use super::{Task, WorkerView};
use crate::audit::Origin;
use crate::vault::Keys;
use tether_base::ids::WorkerId;
use tether_base::labels::labels_match;

/// Tasks leased to a poll, with the keys of the commit that leased them. The
/// reply opens the tasks with these keys, so a seal between the commit and
/// the reply cannot strand a lease its worker never hears of.
#[derive(Debug, Default)]
pub struct Handout {
    pub tasks: Vec<Task>,
    /// `None` only when there are no tasks.
    pub keys: Option<Keys>,
}

impl Handout {
    pub fn new(tasks: Vec<Task>, keys: &Keys) -> Self {
        Handout { tasks, keys: Some(keys.clone()) }
    }
}

/// Where a parked poll receives its tasks (none when the broker drains).
pub type Mailbox = oneshot::Sender<Handout>;

#[derive(Debug)]
struct Parked {
    id: u64,
    origin: Origin,
    worker: WorkerView,
    mailbox: Mailbox,
}

#[derive(Debug, Default)]
pub struct Waiters {
    /// Oldest first: the longest-waiting worker gets the next task.
    parked: Mutex<VecDeque<Parked>>,
    next_id: AtomicU64,
    draining: AtomicBool,
}

/// A parked poll taken out of the queue to receive one task.
#[derive(Debug)]
pub struct Reservation {
    pub origin: Origin,
    pub worker: WorkerView,
    mailbox: Mailbox,
}

impl Reservation {
    /// Hands the leased tasks over. Returns them if the poll has gone away
    /// (its lease then expires and the task is retried).
    pub fn deliver(self, handout: Handout) -> Result<(), Handout> {
        self.mailbox.send(handout)
    }
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Parked>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh id for a poll about to park.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Parks a poll. Called from inside the store operation that found
    /// nothing to claim. While draining, the poll is answered at once.
    pub fn park(&self, id: u64, origin: Origin, worker: WorkerView, mailbox: Mailbox) {
        let mut parked = self.lock();
        if self.is_draining() {
            let _ = mailbox.send(Handout::default());
            return;
        }
        parked.push_back(Parked { id, origin, worker, mailbox });
    }

    /// Takes the oldest parked poll whose worker may run a task with these labels.
    pub fn reserve(&self, task_labels: &[String]) -> Option<Reservation> {
        let mut parked = self.lock();
        // A poll whose client went away cannot take a task.
        parked.retain(|p| !p.mailbox.is_closed());
        let at = parked.iter().position(|p| labels_match(task_labels, &p.worker.labels))?;
        parked.remove(at).map(|p| Reservation { origin: p.origin, worker: p.worker, mailbox: p.mailbox })
    }

    /// Withdraws a parked poll (its wait ran out). `false` means it was
    /// already reserved, and its delivery follows the reserving commit.
    pub fn cancel(&self, id: u64) -> bool {
        let mut parked = self.lock();
        match parked.iter().position(|p| p.id == id) {
            Some(at) => {
                parked.remove(at);
                true
            }
            None => false,
        }
    }

    /// Stops handing out leases and answers every parked poll, empty.
    pub fn drain(&self) {
        let mut parked = self.lock();
        self.draining.store(true, Ordering::SeqCst);
        for p in parked.drain(..) {
            let _ = p.mailbox.send(Handout::default());
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The workers with a poll parked now.
    pub fn parked_workers(&self) -> Vec<WorkerId> {
        let mut parked = self.lock();
        parked.retain(|p| !p.mailbox.is_closed());
        parked.iter().map(|p| p.worker.id).collect()
    }

    pub fn parked(&self) -> usize {
        let mut parked = self.lock();
        parked.retain(|p| !p.mailbox.is_closed());
        parked.len()
    }
}
