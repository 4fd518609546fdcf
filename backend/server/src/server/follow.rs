//! Live events for jobs that other processes train (workers sharing the database): the job
//! list and the steps of each job are re-read from the store when the store announces a
//! change (PostgreSQL's notifications), and every second in any case (an announcement can be
//! lost), and published like the local runner's events, so a dashboard stays live whichever
//! worker trains. Jobs running in this process are left to the runner, which publishes them
//! as they happen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lightpeft_api::rest::{Event, Job, JobStatus, MaskKind};
use tokio::sync::broadcast;

use super::runner::Runner;
use super::store::Store;

/// How often the store is re-read without an announcement.
const EVERY: Duration = Duration::from_secs(1);

/// The shortest time between two reads: announcements come with every batch of steps.
const AT_MOST_EVERY: Duration = Duration::from_millis(200);

/// Follows the store until `closing` turns true.
pub fn spawn(
    store: Arc<dyn Store>,
    runner: Runner,
    events: broadcast::Sender<Event>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut follower = Follower {
            store,
            runner,
            events,
            seen: HashMap::new(),
        };
        let mut changes = follower.store.changes();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = super::runner::changed(&mut changes) => {
                    tokio::time::sleep(AT_MOST_EVERY).await;
                }
                _ = closing.changed() => return,
            }
            if *closing.borrow() {
                return;
            }
            // Nobody listens: nothing to publish, and what changed meanwhile is read afresh
            // when someone does.
            if follower.events.receiver_count() == 0 {
                follower.seen.clear();
                continue;
            }
            if let Err(e) = follower.look().await {
                tracing::debug!(error = %e, "cannot follow the store");
            }
        }
    });
}

struct Follower {
    store: Arc<dyn Store>,
    runner: Runner,
    events: broadcast::Sender<Event>,
    /// Jobs queued or running elsewhere at the last look: status and steps published.
    seen: HashMap<i64, (JobStatus, i64)>,
}

impl Follower {
    /// Whether this process's runner trains `job` (and so publishes it itself).
    fn is_local(&self, job: &Job) -> bool {
        self.runner.is_running(job.id)
            || (job.status == JobStatus::Running
                && job.worker.is_some()
                && job.worker.as_deref() == self.runner.worker_name())
    }

    async fn look(&mut self) -> super::store::StoreResult<()> {
        let mut live = self.store.jobs(None, Some(JobStatus::Running)).await?;
        live.extend(self.store.jobs(None, Some(JobStatus::Queued)).await?);
        let mut still = HashMap::new();
        for job in live {
            if self.is_local(&job) {
                continue;
            }
            let before = self.seen.get(&job.id).copied();
            if before != Some((job.status, job.step)) {
                // A job met for the first time publishes its state, not its history.
                if let Some((_, published)) = before {
                    self.publish_steps(&job, published).await?;
                }
                let _ = self.events.send(Event::job(job.clone()));
            }
            still.insert(job.id, (job.status, job.step));
        }
        // Jobs that left the queue ended (or were deleted): their final state.
        for id in self.seen.keys().filter(|id| !still.contains_key(id)) {
            if let Ok(job) = self.store.job(*id).await {
                let _ = self.events.send(Event::job(job));
            }
        }
        self.seen = still;
        Ok(())
    }

    /// The steps `job` recorded from `from` on, as step events.
    async fn publish_steps(&self, job: &Job, from: i64) -> super::store::StoreResult<()> {
        if job.step <= from {
            return Ok(());
        }
        let rows = self.store.scalars(job.id, from, job.step - 1).await?;
        let snapshots = self.store.snapshot_steps(job.id, MaskKind::Head).await?;
        for row in rows {
            let _ = self.events.send(Event::Step {
                job_id: job.id,
                step: row.step,
                total_steps: job.total_steps,
                loss: row.loss,
                lr: row.lr,
                snapshot: snapshots.binary_search(&row.step).is_ok(),
            });
        }
        Ok(())
    }
}
