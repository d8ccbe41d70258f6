//! The appliance's background tasks, each started by name and stopped in
//! the reverse order. They run for as long as the appliance does: one that
//! ends on its own (returns or panics) is logged with its name and named
//! by `/healthz`, which then says `degraded`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::{AbortHandle, JoinHandle};

/// The names of the tasks that stopped before the appliance did.
#[derive(Debug, Default)]
pub struct TaskHealth {
    stopped: Mutex<Vec<&'static str>>,
    stopping: AtomicBool,
}

impl TaskHealth {
    /// The tasks that ended on their own, in the order they ended.
    pub fn stopped_early(&self) -> Vec<&'static str> {
        self.stopped.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn ended(&self, name: &'static str, why: &str) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        tracing::error!(task = name, "a background task stopped: {why}; the appliance is degraded until restarted");
        self.stopped.lock().unwrap_or_else(PoisonError::into_inner).push(name);
    }
}

/// The running tasks, in the order they started.
#[derive(Debug)]
pub struct Background {
    health: Arc<TaskHealth>,
    running: Vec<Running>,
}

#[derive(Debug)]
struct Running {
    name: &'static str,
    task: AbortHandle,
    /// Waits for the task and reports how it ended.
    watch: JoinHandle<()>,
}

impl Background {
    pub fn new(health: Arc<TaskHealth>) -> Background {
        Background { health, running: Vec::new() }
    }

    /// Starts `task` under `name`.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let task = tokio::spawn(task);
        let abort = task.abort_handle();
        let health = self.health.clone();
        let watch = tokio::spawn(async move {
            match task.await {
                Ok(()) => health.ended(name, "it returned"),
                Err(e) if e.is_panic() => health.ended(name, "it panicked"),
                Err(_) => {} // aborted: only `stop` does that
            }
        });
        tracing::debug!(task = name, "background task started");
        self.running.push(Running { name, task: abort, watch });
    }

    /// Stops every task, the last started first, and waits for each.
    pub async fn stop(self) {
        self.health.stopping.store(true, Ordering::Release);
        for running in self.running.into_iter().rev() {
            running.task.abort();
            let _ = running.watch.await;
            tracing::debug!(task = running.name, "background task stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_or_panics_is_named_and_one_stopped_on_purpose_is_not() {
        let health = Arc::new(TaskHealth::default());
        let mut background = Background::new(health.clone());
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
        background.spawn("returns", async move {
            let _ = ended_tx.send(());
        });
        background.spawn("forever", std::future::pending());
        ended_rx.await.unwrap();
        // The watcher records the end after the task's last poll: wait for it.
        while health.stopped_early().is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(health.stopped_early(), ["returns"]);
        background.spawn("panics", async { panic!("a background task's bug") });
        while health.stopped_early().len() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(health.stopped_early(), ["returns", "panics"]);
        background.stop().await;
        assert_eq!(health.stopped_early(), ["returns", "panics"], "stopping is not an early end");
    }
}
