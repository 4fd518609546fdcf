//! The one writer: training threads hand records to an unbounded channel and never wait; this
//! task drains it in batches, writes each job's share of a batch through the store in one
//! transaction, and thins full mask snapshots. A job whose batch cannot be written is failed:
//! its later records are dropped and [`Recorder::finish`] hands the error to the runner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lightpeft_engine::train::{EvalRecord, StepRecord};
use tokio::sync::{mpsc, oneshot};

use super::artifacts::Artifacts;
use super::store::{JobRecord, Lease, RecordBatch, Store, StoreError, StoreResult};

/// Most records taken from the channel at once.
const BATCH: usize = 256;

/// What the recorder writes.
pub enum Record {
    /// A training step (masks and importances included when the stage records them).
    Step {
        /// Job.
        job_id: i64,
        /// The record.
        record: Box<StepRecord>,
    },
    /// An evaluation.
    Eval {
        /// Job.
        job_id: i64,
        /// The record.
        record: EvalRecord,
    },
    /// A resumable snapshot was stored in the job's artifacts. Committed in the same
    /// transaction as the steps before it, so the store never points at a snapshot whose
    /// preceding steps are missing; older snapshots are deleted after the commit.
    Checkpoint {
        /// Job.
        job_id: i64,
        /// The step a resumed run takes first.
        next_step: usize,
    },
}

impl Record {
    fn job_id(&self) -> i64 {
        match self {
            Record::Step { job_id, .. }
            | Record::Eval { job_id, .. }
            | Record::Checkpoint { job_id, .. } => *job_id,
        }
    }
}

/// What travels on the channel.
enum Message {
    Record(Record),
    /// Answered once everything sent before it is committed (or refused).
    Flush(oneshot::Sender<()>),
    /// Like `Flush`, and the job's retention state is forgotten (a resumed run reloads it).
    Finish(i64, oneshot::Sender<()>),
}

/// Jobs whose records could not be written, with the first error of each.
type Failures = Arc<Mutex<HashMap<i64, StoreError>>>;

/// The attempt each job's records are written for (every batch names it).
type Holds = Arc<Mutex<HashMap<i64, Lease>>>;

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Message>,
    failures: Failures,
    holds: Holds,
}

impl Recorder {
    /// Starts the writer task.
    pub fn start(store: Arc<dyn Store>, artifacts: Artifacts, max_snapshots: usize) -> Recorder {
        let (tx, rx) = mpsc::unbounded_channel();
        let failures = Failures::default();
        let holds = Holds::default();
        let writer = Writer {
            store,
            artifacts,
            cap: max_snapshots.max(4),
            retention: HashMap::new(),
            failures: failures.clone(),
            holds: holds.clone(),
        };
        tokio::spawn(writer.run(rx));
        Recorder {
            tx,
            failures,
            holds,
        }
    }

    /// The attempt whose records follow for its job: each batch is written only while it
    /// still holds the job (else the job's records fail with [`StoreError::LeaseLost`]).
    pub fn hold(&self, lease: Lease) {
        self.holds
            .lock()
            .expect("holds")
            .insert(lease.job_id, lease);
    }

    /// Queues a record; never blocks.
    pub fn send(&self, record: Record) {
        // The writer only stops with the runtime; records sent then are lost with it.
        let _ = self.tx.send(Message::Record(record));
    }

    /// Waits until every record sent so far is committed or refused.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        let _ = self.tx.send(Message::Flush(done));
        let _ = wait.await;
    }

    /// Waits until every record of the job sent so far is committed, then answers whether
    /// all of them were: the first write error of the job, if any. Call it when the job's
    /// work has ended; the job's failure is cleared, so a later run of it records again.
    pub async fn finish(&self, job_id: i64) -> StoreResult<()> {
        let (done, wait) = oneshot::channel();
        let _ = self.tx.send(Message::Finish(job_id, done));
        let _ = wait.await;
        self.holds.lock().expect("holds").remove(&job_id);
        match self.failures.lock().expect("failures").remove(&job_id) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether a batch of the job could not be written (its later records are dropped, so
    /// its work may as well stop).
    pub fn has_failed(&self, job_id: i64) -> bool {
        self.failures
            .lock()
            .expect("failures")
            .contains_key(&job_id)
    }
}

/// The snapshot density of one job: snapshots land on multiples of `stride`; when more than
/// the cap are kept, the stride doubles and the off-stride ones go.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Retention {
    stride: i64,
    kept: Vec<i64>,
}

impl Retention {
    /// Takes `step` (the newest, always stored) and returns the stored steps to delete. The
    /// first and the newest snapshot are always kept; `pinned` steps never go.
    pub fn admit(&mut self, step: i64, cap: usize, pinned: &[i64]) -> Vec<i64> {
        if self.stride == 0 {
            self.stride = 1;
        }
        let mut delete = Vec::new();
        // The previous newest was kept only for being newest.
        if let Some(&prev) = self.kept.last()
            && prev != 0
            && prev % self.stride != 0
            && !pinned.contains(&prev)
        {
            self.kept.pop();
            delete.push(prev);
        }
        self.kept.push(step);
        while self.kept.len() > cap {
            self.stride *= 2;
            let stride = self.stride;
            let newest = step;
            let (keep, gone): (Vec<i64>, Vec<i64>) = self
                .kept
                .iter()
                .partition(|&&s| s == 0 || s == newest || s % stride == 0 || pinned.contains(&s));
            if gone.is_empty() {
                break;
            }
            delete.extend(gone);
            self.kept = keep;
        }
        delete
    }

    /// Starts from the steps already stored (a resumed job).
    pub fn resume(steps: Vec<i64>) -> Retention {
        let stride = steps
            .iter()
            .filter(|&&s| s > 0)
            .fold(0i64, |g, &s| gcd(g, s))
            .max(1);
        Retention {
            stride,
            kept: steps,
        }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The task that owns the writes and the retention state.
struct Writer {
    store: Arc<dyn Store>,
    /// Where the snapshots are that a committed checkpoint makes obsolete.
    artifacts: Artifacts,
    cap: usize,
    retention: HashMap<i64, Retention>,
    failures: Failures,
    holds: Holds,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Message>) {
        let mut taken = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut taken, BATCH).await > 0 {
            let mut answers = Vec::new();
            let mut finished = Vec::new();
            // Per job, in arrival order.
            let mut jobs: Vec<(i64, Vec<Record>)> = Vec::new();
            for message in taken.drain(..) {
                match message {
                    Message::Record(record) => {
                        let id = record.job_id();
                        match jobs.iter_mut().find(|(j, _)| *j == id) {
                            Some((_, records)) => records.push(record),
                            None => jobs.push((id, vec![record])),
                        }
                    }
                    Message::Flush(done) => answers.push(done),
                    Message::Finish(id, done) => {
                        finished.push(id);
                        answers.push(done);
                    }
                }
            }
            for (job_id, records) in jobs {
                self.write_job(job_id, records).await;
            }
            for id in finished {
                self.retention.remove(&id);
            }
            for done in answers {
                let _ = done.send(());
            }
        }
    }

    /// Writes one job's share of a batch, or, once the job has failed, drops it.
    async fn write_job(&mut self, job_id: i64, records: Vec<Record>) {
        if self
            .failures
            .lock()
            .expect("failures")
            .contains_key(&job_id)
        {
            return;
        }
        match self.try_write(job_id, records).await {
            Ok(kept) => {
                if let Some(keep) = kept
                    && let Err(e) = self.artifacts.keep_only_checkpoint(job_id, keep).await
                {
                    tracing::warn!(job_id, error = %e, "old snapshots not deleted");
                }
            }
            Err(e) => {
                tracing::error!(job_id, error = %e, "records not written; the job fails");
                // A later run reloads the retention state from what the store holds.
                self.retention.remove(&job_id);
                self.failures
                    .lock()
                    .expect("failures")
                    .entry(job_id)
                    .or_insert(e);
            }
        }
    }

    /// Returns the newest snapshot the batch committed (older ones are then deleted).
    async fn try_write(&mut self, job_id: i64, records: Vec<Record>) -> StoreResult<Option<usize>> {
        let mut batch = RecordBatch {
            job_id,
            held: self.holds.lock().expect("holds").get(&job_id).cloned(),
            ..RecordBatch::default()
        };
        let mut kept = None;
        let mut pinned: Option<Vec<i64>> = None;
        for record in records {
            match record {
                Record::Step { record, .. } => {
                    if record.head_masks.is_some() || record.neuron_masks.is_some() {
                        if !self.retention.contains_key(&job_id) {
                            let stored = self.store.mask_snapshot_steps(job_id).await?;
                            self.retention.insert(job_id, Retention::resume(stored));
                        }
                        if pinned.is_none() {
                            pinned = Some(self.store.pinned_snapshot_steps(job_id).await?);
                        }
                        let state = self.retention.get_mut(&job_id).expect("inserted above");
                        let pins = pinned.as_deref().unwrap_or_default();
                        let gone = state.admit(record.step as i64, self.cap, pins);
                        batch.drop_snapshots.extend(gone);
                    }
                    batch.records.push(JobRecord::Step(record));
                }
                Record::Eval { record, .. } => batch.records.push(JobRecord::Eval(record)),
                Record::Checkpoint { next_step, .. } => {
                    batch.records.push(JobRecord::Checkpoint { next_step });
                    kept = Some(next_step);
                }
            }
        }
        self.store.write_batch(&batch).await?;
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_first_last_and_an_even_spread_under_the_cap() {
        let mut r = Retention::default();
        let mut stored = std::collections::BTreeSet::new();
        for step in 0..800 {
            let delete = r.admit(step, 16, &[123]);
            stored.insert(step);
            for d in delete {
                assert!(stored.remove(&d), "deleted {d} twice");
            }
            assert!(stored.len() <= 17, "{} kept at step {step}", stored.len());
            assert!(stored.contains(&0) && stored.contains(&step));
        }
        assert!(stored.contains(&123));
        let regular: Vec<i64> = stored
            .iter()
            .copied()
            .filter(|&s| s != 799 && s != 123)
            .collect();
        let gaps: std::collections::BTreeSet<i64> =
            regular.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps.len(), 1, "even spread: {regular:?}");
        assert!(stored.len() >= 8, "{stored:?}");
    }

    #[test]
    fn pinned_steps_survive_thinning() {
        let mut r = Retention::default();
        let mut stored = std::collections::BTreeSet::new();
        for step in 0..100 {
            let delete = r.admit(step, 8, &[37]);
            stored.insert(step);
            for d in delete {
                stored.remove(&d);
            }
        }
        assert!(stored.contains(&37), "{stored:?}");
    }
}
