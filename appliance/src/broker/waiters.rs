//! Parked long-polls, woken in memory when a matching task becomes ready.
//!
//! A poller registers *before* it tries to claim, so a task committed between
//! its claim attempt and its wait still wakes it (`Notify` keeps the permit).
//! Nothing here reads the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::task::labels_match;

#[derive(Debug)]
struct Parked {
    id: u64,
    labels: Arc<Vec<String>>,
    wake: Arc<Notify>,
}

#[derive(Debug, Default)]
pub struct Waiters {
    parked: Mutex<Vec<Parked>>,
    next_id: AtomicU64,
    draining: AtomicBool,
}

/// A registered poller; unregisters itself when dropped.
#[derive(Debug)]
pub struct Registration<'w> {
    waiters: &'w Waiters,
    id: u64,
    wake: Arc<Notify>,
}

impl Registration<'_> {
    /// Resolves when a matching task may be ready, or the broker drains.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut parked = self.waiters.parked.lock().unwrap_or_else(PoisonError::into_inner);
        parked.retain(|p| p.id != self.id);
    }
}

impl Waiters {
    pub fn register(&self, labels: Arc<Vec<String>>) -> Registration<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        if self.is_draining() {
            wake.notify_one();
        }
        self.parked.lock().unwrap_or_else(PoisonError::into_inner).push(Parked { id, labels, wake: wake.clone() });
        Registration { waiters: self, id, wake }
    }

    /// Wakes every parked poller whose worker could run a task with these labels.
    /// Waking more pollers than there are tasks is harmless: the losers find
    /// nothing to claim and park again.
    pub fn wake_matching(&self, task_labels: &[String]) {
        let parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        for p in parked.iter().filter(|p| labels_match(task_labels, &p.labels)) {
            p.wake.notify_one();
        }
    }

    /// Stops handing out leases and answers every parked poller.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        for p in parked.iter() {
            p.wake.notify_one();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn parked(&self) -> usize {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}
