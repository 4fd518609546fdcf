//! `cargo bench -p lightpeft --bench store`: the two stores side by side in one run, through
//! the store trait the server uses: records per second written (MiniLM-sized estimation steps,
//! in the recorder's batches) and read latencies for an 800-step job. Needs the PostgreSQL
//! server of `scripts/postgres.sh` (`eval "$(bash scripts/postgres.sh start)"`). Prints a
//! markdown table.
//!
//! Each step is what an estimation of all-MiniLM-L6-v2 records: 6 × 12 head masks, 6 × 1,536
//! neuron masks (a full snapshot, as the recorder keeps before thinning), 36 module and
//! 36 × 8 rank importances, and the step's scalars.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lightpeft::server::Database;
use lightpeft::server::store::{JobRecord, Lease, RecordBatch, Store};
use lightpeft_api::rest::{JobKind, MaskKind};
use lightpeft_api::{Hyperparams, Preset};
use lightpeft_engine::train::{Stage, StepRecord};
use lightpeft_engine::{ModuleId, ModuleKind};

const STEPS: usize = 800;
/// The recorder's batch: what one transaction holds at most.
const BATCH: usize = 256;
/// Rounds of the write measure, alternating the stores; the best of each is reported.
const ROUNDS: usize = 3;

fn step_record(step: usize) -> StepRecord {
    let wave = |i: usize| ((step * 31 + i * 7) % 1000) as f32 / 1000.0;
    let modules: Vec<ModuleId> = (0..6)
        .flat_map(|layer| ModuleKind::ALL.map(|kind| ModuleId { layer, kind }))
        .collect();
    StepRecord {
        stage: Stage::Estimation,
        step,
        total_steps: STEPS,
        epoch: 0,
        loss: 0.7 - step as f32 * 1e-4,
        ce_loss: 0.6,
        l1_loss: 0.1,
        lr: 1e-4,
        grad_norm: 1.5,
        seconds: 0.05,
        head_masks: Some(
            (0..6)
                .map(|l| (0..12).map(|h| wave(l * 12 + h)).collect())
                .collect(),
        ),
        neuron_masks: Some(
            (0..6)
                .map(|l| (0..1536).map(|n| wave(l * 1536 + n)).collect())
                .collect(),
        ),
        module_importance: modules
            .iter()
            .map(|m| (*m, 0.01 * m.layer as f64))
            .collect(),
        rank_importance: modules.iter().map(|m| (*m, vec![0.5; 8])).collect(),
    }
}

/// The lease the bench's worker holds its jobs with.
const LEASE: Duration = Duration::from_secs(30);

/// A new job in `store`, claimed as a worker claims it; its lease.
async fn new_job(store: &dyn Store) -> Lease {
    let experiment = store
        .insert_experiment(
            "bench",
            "sst2-rt",
            "minilm-shaped",
            Preset::QuickDemo,
            &Hyperparams::default(),
            (None, None),
        )
        .await
        .unwrap();
    let job = store
        .insert_job(experiment.id, JobKind::Estimation, None, None)
        .await
        .unwrap();
    let claim = store.claim("bench", LEASE).await.unwrap().expect("queued");
    assert_eq!(claim.job.id, job.id);
    claim.lease
}

/// Writes an 800-step job in recorder-sized batches, each fenced by the job's lease as the
/// runner's are; the lease and the records per second.
async fn write_job(store: &dyn Store, records: &[StepRecord]) -> (Lease, f64) {
    let lease = new_job(store).await;
    let id = lease.job_id;
    let started = Instant::now();
    for chunk in records.chunks(BATCH) {
        let batch = RecordBatch {
            job_id: id,
            held: Some(lease.clone()),
            records: chunk
                .iter()
                .map(|r| JobRecord::Step(Box::new(r.clone())))
                .collect(),
            drop_snapshots: Vec::new(),
        };
        store.write_batch(&batch).await.unwrap();
    }
    (
        lease,
        records.len() as f64 / started.elapsed().as_secs_f64(),
    )
}

/// Median milliseconds of `n` runs of `read`.
async fn median_ms<F, Fut>(n: usize, mut read: F) -> f64
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        read(i).await;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    ms[n / 2]
}

/// The read measures on job `id` and the lease renewal: `(name, median ms)`.
async fn reads(store: &dyn Store, held: &Lease) -> Vec<(&'static str, f64)> {
    let id = held.job_id;
    let steps: Vec<i64> = (0..40).map(|i| (i * (STEPS - 1) / 39) as i64).collect();
    let steps = &steps;
    vec![
        (
            "lease renewal (once a second per running job)",
            median_ms(50, |_| async move {
                store.renew(held, LEASE).await.unwrap();
            })
            .await,
        ),
        (
            "read: one head snapshot (6 × 12)",
            median_ms(40, |i| async move {
                store.snapshot(id, MaskKind::Head, steps[i]).await.unwrap();
            })
            .await,
        ),
        (
            "read: one neuron snapshot (6 × 1,536)",
            median_ms(40, |i| async move {
                store
                    .snapshot(id, MaskKind::Neuron, steps[i])
                    .await
                    .unwrap();
            })
            .await,
        ),
        (
            "read: neuron summaries of every step (800 × 6)",
            median_ms(10, |_| async move {
                store.mask_summaries(id, MaskKind::Neuron).await.unwrap();
            })
            .await,
        ),
        (
            "read: scalars of every step (800)",
            median_ms(20, |_| async move {
                store.scalars(id, 0, STEPS as i64).await.unwrap();
            })
            .await,
        ),
        (
            "read: rank importances of every step (800 × 288)",
            median_ms(10, |_| async move {
                store.importances(id, "rank").await.unwrap();
            })
            .await,
        ),
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<(&str, Arc<dyn Store>)> = vec![
        (
            "SQLite",
            Database::Sqlite {
                path: dir.path().join("bench.sqlite"),
                max_bytes: None,
            }
            .open()
            .await
            .unwrap(),
        ),
        (
            "PostgreSQL",
            Database::Postgres {
                url: common::new_postgres_database(),
            }
            .open()
            .await
            .unwrap(),
        ),
    ];
    let records: Vec<StepRecord> = (0..STEPS).map(step_record).collect();
    let mut best = vec![0.0f64; stores.len()];
    let mut jobs: Vec<Option<Lease>> = vec![None; stores.len()];
    for round in 0..ROUNDS {
        for (i, (name, store)) in stores.iter().enumerate() {
            let (id, per_second) = write_job(store.as_ref(), &records).await;
            eprintln!("round {round}, {name}: {per_second:.0} records/s");
            best[i] = best[i].max(per_second);
            jobs[i] = Some(id);
        }
    }
    let mut read_rows = Vec::new();
    for (i, (_, store)) in stores.iter().enumerate() {
        read_rows.push(reads(store.as_ref(), jobs[i].as_ref().unwrap()).await);
    }

    println!("| measure | SQLite | PostgreSQL | PostgreSQL / SQLite |");
    println!("|---|---|---|---|");
    println!(
        "| step records written, {STEPS} in batches of {BATCH} (best of {ROUNDS}) | {:.0} /s | {:.0} /s | {:.2} |",
        best[0],
        best[1],
        best[1] / best[0]
    );
    for (k, (name, sqlite_ms)) in read_rows[0].iter().enumerate() {
        let postgres_ms = read_rows[1][k].1;
        println!(
            "| {name}, median | {sqlite_ms:.2} ms | {postgres_ms:.2} ms | {:.2} |",
            postgres_ms / sqlite_ms
        );
    }
    // The heartbeat's share of the work: one renewal per second of training.
    let renew = [read_rows[0][0].1, read_rows[1][0].1];
    println!(
        "| lease heartbeat, share of a second of training | {:.3} % | {:.3} % | |",
        renew[0] / 10.0,
        renew[1] / 10.0
    );
}
