//! The one writer: training threads hand records to an unbounded channel and never wait; this
//! task drains it in batches, one transaction per batch, and thins full mask snapshots.

use std::collections::HashMap;

use lightpeft_engine::train::{EvalRecord, StepRecord};
use sqlx::{QueryBuilder, Sqlite};
use tokio::sync::{mpsc, oneshot};

use super::store::{Store, f32_bytes, f64_bytes};

/// Most records written in one transaction.
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
    /// A resumable snapshot was saved in `root/<next_step>/`. Committed in the same
    /// transaction as the steps before it, so the store never points at a snapshot whose
    /// preceding steps are missing; older snapshots are deleted after the commit.
    Checkpoint {
        /// Job.
        job_id: i64,
        /// The step a resumed run takes first.
        next_step: usize,
        /// The job's snapshots folder.
        root: std::path::PathBuf,
    },
    /// Answers once everything sent before it is committed.
    Flush(oneshot::Sender<()>),
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Record>,
}

impl Recorder {
    /// Starts the writer task.
    pub fn start(store: Store, max_snapshots: usize) -> Recorder {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(store, rx, max_snapshots.max(4)));
        Recorder { tx }
    }

    /// Queues a record; never blocks.
    pub fn send(&self, record: Record) {
        // The writer only stops with the runtime; records sent then are lost with it.
        let _ = self.tx.send(record);
    }

    /// Waits until every record sent so far is committed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        self.send(Record::Flush(done));
        let _ = wait.await;
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

async fn write_loop(store: Store, mut rx: mpsc::UnboundedReceiver<Record>, cap: usize) {
    let mut retention: HashMap<i64, Retention> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut flushes = Vec::new();
        let records: Vec<Record> = batch
            .drain(..)
            .filter_map(|r| match r {
                Record::Flush(done) => {
                    flushes.push(done);
                    None
                }
                other => Some(other),
            })
            .collect();
        if !records.is_empty()
            && let Err(e) = write_batch(&store, &records, &mut retention, cap).await
        {
            eprintln!("recorder: {e}");
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn write_batch(
    store: &Store,
    records: &[Record],
    retention: &mut HashMap<i64, Retention>,
    cap: usize,
) -> Result<(), sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    for record in records {
        match record {
            Record::Step { job_id, record } => {
                write_step(&mut tx, *job_id, record, retention, cap).await?
            }
            Record::Eval { job_id, record } => {
                sqlx::query(
                    "INSERT OR REPLACE INTO evals (job_id, step, epoch, metrics, loss, seconds)
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(job_id)
                .bind(record.step as i64)
                .bind(record.epoch as i64)
                .bind(serde_json::to_string(&record.metrics).expect("plain data"))
                .bind(record.loss)
                .bind(record.seconds)
                .execute(&mut *tx)
                .await?;
            }
            Record::Checkpoint {
                job_id, next_step, ..
            } => {
                sqlx::query("UPDATE jobs SET checkpoint_step = ? WHERE id = ?")
                    .bind(*next_step as i64)
                    .bind(job_id)
                    .execute(&mut *tx)
                    .await?;
            }
            Record::Flush(_) => {}
        }
    }
    tx.commit().await?;
    for record in records {
        if let Record::Checkpoint {
            next_step, root, ..
        } = record
        {
            prune_snapshots(root, *next_step);
        }
    }
    Ok(())
}

/// Deletes every snapshot folder in `root` but `keep`.
fn prune_snapshots(root: &std::path::Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_str() != Some(&keep.to_string()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

async fn write_step(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    job_id: i64,
    r: &StepRecord,
    retention: &mut HashMap<i64, Retention>,
    cap: usize,
) -> Result<(), sqlx::Error> {
    let step = r.step as i64;
    sqlx::query(
        "INSERT OR REPLACE INTO step_scalars (job_id, step, epoch, loss, ce_loss, l1_loss, lr, grad_norm, seconds)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(job_id)
    .bind(step)
    .bind(r.epoch as i64)
    .bind(r.loss as f64)
    .bind(r.ce_loss as f64)
    .bind(r.l1_loss as f64)
    .bind(r.lr)
    .bind(r.grad_norm)
    .bind(r.seconds)
    .execute(&mut **tx)
    .await?;
    // A running median would need every step; the mean of the newest is close enough for ETA.
    sqlx::query(
        "UPDATE jobs SET step = ?, total_steps = ?, loss = ?,
         step_seconds = CASE WHEN step_seconds IS NULL THEN ? ELSE 0.9 * step_seconds + 0.1 * ? END
         WHERE id = ?",
    )
    .bind(step + 1)
    .bind(r.total_steps as i64)
    .bind(r.loss as f64)
    .bind(r.seconds)
    .bind(r.seconds)
    .bind(job_id)
    .execute(&mut **tx)
    .await?;

    let families = [("head", &r.head_masks), ("neuron", &r.neuron_masks)];
    if families.iter().any(|(_, m)| m.is_some()) {
        let state = match retention.get_mut(&job_id) {
            Some(s) => s,
            None => {
                let steps: Vec<i64> = sqlx::query_scalar(
                    "SELECT DISTINCT step FROM mask_snapshots WHERE job_id = ? ORDER BY step",
                )
                .bind(job_id)
                .fetch_all(&mut **tx)
                .await?;
                retention.entry(job_id).or_insert(Retention::resume(steps))
            }
        };
        let pinned: Vec<i64> =
            sqlx::query_scalar("SELECT snapshot_step FROM plans WHERE estimation_job_id = ?")
                .bind(job_id)
                .fetch_all(&mut **tx)
                .await?;
        let delete = state.admit(step, cap, &pinned);
        for gone in delete {
            sqlx::query("DELETE FROM mask_snapshots WHERE job_id = ? AND step = ?")
                .bind(job_id)
                .bind(gone)
                .execute(&mut **tx)
                .await?;
        }
        let mut snapshots: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT OR REPLACE INTO mask_snapshots (job_id, step, kind, layer, vals) ",
        );
        let mut summaries: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT OR REPLACE INTO mask_summaries (job_id, step, kind, layer, q0, q25, q50, q75, q100, mean) ",
        );
        let rows: Vec<(&str, usize, &Vec<f32>)> = families
            .iter()
            .filter_map(|(kind, m)| m.as_ref().map(|m| (*kind, m)))
            .flat_map(|(kind, layers)| layers.iter().enumerate().map(move |(l, v)| (kind, l, v)))
            .collect();
        snapshots.push_values(&rows, |mut b, (kind, layer, values)| {
            b.push_bind(job_id)
                .push_bind(step)
                .push_bind(*kind)
                .push_bind(*layer as i64)
                .push_bind(f32_bytes(values));
        });
        snapshots.build().execute(&mut **tx).await?;
        summaries.push_values(&rows, |mut b, (kind, layer, values)| {
            let s = summarize(values);
            b.push_bind(job_id)
                .push_bind(step)
                .push_bind(*kind)
                .push_bind(*layer as i64);
            for v in s {
                b.push_bind(v);
            }
        });
        summaries.build().execute(&mut **tx).await?;
    }
    if !r.module_importance.is_empty() {
        let modules: Vec<f64> = r.module_importance.iter().map(|(_, v)| *v).collect();
        let ranks: Vec<f64> = r
            .rank_importance
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        for (kind, values) in [("module", modules), ("rank", ranks)] {
            sqlx::query(
                "INSERT OR REPLACE INTO importances (job_id, step, kind, vals) VALUES (?, ?, ?, ?)",
            )
            .bind(job_id)
            .bind(step)
            .bind(kind)
            .bind(f64_bytes(&values))
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// Minimum, quartiles, maximum and mean.
pub fn summarize(values: &[f32]) -> [f64; 6] {
    if values.is_empty() {
        return [0.0; 6];
    }
    let mut sorted: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (sorted.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    };
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    [at(0.0), at(0.25), at(0.5), at(0.75), at(1.0), mean]
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

    #[test]
    fn summaries_are_quantiles() {
        let s = summarize(&[4.0, 0.0, 2.0, 1.0, 3.0]);
        assert_eq!(s, [0.0, 1.0, 2.0, 3.0, 4.0, 2.0]);
    }
}
