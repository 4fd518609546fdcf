//! The job queue in the store, on both stores through the same trait (a SQLite file and a real
//! PostgreSQL database): concurrent claims take different jobs; a lease that is not renewed
//! is reaped (queued again while attempts are left, then left interrupted); every write of an
//! attempt that lost its lease is refused; a cancel asked elsewhere reaches the worker on
//! renewal; of concurrent requeues one wins.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use lightpeft::server::Database;
use lightpeft::server::store::{JobRecord, RecordBatch, Store, StoreError, WorkerInfo};
use lightpeft_api::rest::{JobKind, JobStatus};
use lightpeft_api::{Hyperparams, Preset};
use lightpeft_engine::train::{Stage, StepRecord};

const LONG_LEASE: Duration = Duration::from_secs(60);

/// Both stores, empty.
async fn stores(dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn Store>)> {
    let sqlite = Database::Sqlite {
        path: dir.join("queue.sqlite"),
        max_bytes: None,
    };
    let postgres = Database::Postgres {
        url: common::new_postgres_database(),
    };
    vec![
        ("sqlite", sqlite.open().await.unwrap()),
        ("postgres", postgres.open().await.unwrap()),
    ]
}

/// `n` queued estimation jobs; their ids.
async fn queued_jobs(store: &dyn Store, n: usize) -> Vec<i64> {
    let exp = store
        .insert_experiment(
            "queue",
            "sst2-rt",
            "tiny-bert",
            Preset::QuickDemo,
            &Hyperparams::default(),
            (None, None),
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let job = store
            .insert_job(exp.id, JobKind::Estimation, None, None)
            .await
            .unwrap();
        ids.push(job.id);
    }
    ids
}

fn step(step: usize) -> JobRecord {
    JobRecord::Step(Box::new(StepRecord {
        stage: Stage::Estimation,
        step,
        total_steps: 10,
        epoch: 0,
        loss: 1.0,
        ce_loss: 1.0,
        l1_loss: 0.0,
        lr: 1e-3,
        grad_norm: 1.0,
        seconds: 0.01,
        head_masks: None,
        neuron_masks: None,
        module_importance: Vec::new(),
        rank_importance: Vec::new(),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_take_different_jobs() {
    let dir = tempfile::tempdir().unwrap();
    for (name, store) in stores(dir.path()).await {
        let ids = queued_jobs(store.as_ref(), 4).await;
        let claims: Vec<_> = (0..8)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move { store.claim(&format!("w{w}"), LONG_LEASE).await })
            })
            .collect();
        let mut claimed = Vec::new();
        for claim in claims {
            if let Some(claim) = claim.await.unwrap().unwrap() {
                assert_eq!(claim.lease.attempt, 1, "{name}");
                assert_eq!(claim.job.status, JobStatus::Running, "{name}");
                assert_eq!(
                    claim.job.worker.as_deref(),
                    Some(claim.lease.worker.as_str())
                );
                assert!(!claim.resume, "{name}: a new job starts from step 0");
                claimed.push(claim.job.id);
            }
        }
        let distinct: BTreeSet<i64> = claimed.iter().copied().collect();
        assert_eq!(claimed.len(), 4, "{name}: {claimed:?}");
        assert_eq!(distinct, ids.iter().copied().collect(), "{name}");
        assert!(
            store.claim("late", LONG_LEASE).await.unwrap().is_none(),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_reaped_and_its_attempt_can_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (name, store) in stores(dir.path()).await {
        let [id] = queued_jobs(store.as_ref(), 1).await[..] else {
            unreachable!()
        };
        let first = store
            .claim("first", Duration::from_millis(300))
            .await
            .unwrap()
            .unwrap();
        let held = first.lease.clone();
        // While it holds, its writes land and renewals answer "no cancel".
        let batch = RecordBatch {
            job_id: id,
            held: Some(held.clone()),
            records: vec![step(0), step(1), JobRecord::Checkpoint { next_step: 2 }],
            drop_snapshots: Vec::new(),
        };
        store.write_batch(&batch).await.unwrap();
        assert!(
            !store
                .renew(&held, Duration::from_millis(300))
                .await
                .unwrap()
        );
        assert!(
            store.reap(3).await.unwrap().is_empty(),
            "{name}: still held"
        );

        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            store.reap(3).await.unwrap(),
            vec![(id, JobStatus::Queued)],
            "{name}"
        );
        let job = store.job(id).await.unwrap();
        assert_eq!(job.status, JobStatus::Queued, "{name}");
        assert!(
            job.error.as_deref().unwrap().contains("first"),
            "{name}: {job:?}"
        );

        // The lost attempt: records, renewals, results, the final status, a truncation.
        let lost = |e: StoreError| matches!(e, StoreError::LeaseLost { .. });
        let late = RecordBatch {
            records: vec![step(2)],
            ..batch.clone()
        };
        assert!(lost(store.write_batch(&late).await.unwrap_err()), "{name}");
        assert!(
            lost(store.renew(&held, LONG_LEASE).await.unwrap_err()),
            "{name}"
        );
        assert!(
            lost(
                store
                    .settle(&held, JobStatus::Succeeded, None)
                    .await
                    .unwrap_err()
            ),
            "{name}"
        );
        assert!(
            lost(
                store
                    .truncate_records(id, 0, Some(&held))
                    .await
                    .unwrap_err()
            ),
            "{name}"
        );
        assert_eq!(store.scalars(id, 0, 100).await.unwrap().len(), 2, "{name}");

        // The next attempt continues from the snapshot; the old one still writes nothing.
        let second = store.claim("second", LONG_LEASE).await.unwrap().unwrap();
        assert_eq!(second.job.id, id);
        assert_eq!(second.lease.attempt, 2, "{name}");
        assert!(second.resume, "{name}: continues from the snapshot");
        assert!(lost(store.write_batch(&late).await.unwrap_err()), "{name}");
        let own = RecordBatch {
            held: Some(second.lease.clone()),
            ..late.clone()
        };
        store.write_batch(&own).await.unwrap();
        let done = store
            .settle(&second.lease, JobStatus::Succeeded, None)
            .await
            .unwrap();
        assert_eq!(done.status, JobStatus::Succeeded, "{name}");
        assert_eq!(done.attempt, 2);
        assert_eq!(done.worker.as_deref(), Some("second"));
        assert_eq!(store.scalars(id, 0, 100).await.unwrap().len(), 3, "{name}");
    }
}

/// A worker frozen (SIGSTOP) in the middle of a write holds the job's row lock; PostgreSQL ends
/// its idle transaction, so the reaper is held up for a while, not until the worker wakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_frozen_mid_transaction_does_not_hold_the_reaper_forever() {
    use sqlx::{ConnectOptions, Connection};
    let url = common::new_postgres_database();
    let store = Database::Postgres { url: url.clone() }
        .open()
        .await
        .unwrap();
    let [id] = queued_jobs(store.as_ref(), 1).await[..] else {
        unreachable!()
    };
    let held = store
        .claim("frozen", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    // The frozen writer: a worker's connection (the store's own options) whose transaction
    // locked the job's row and then went silent.
    let mut frozen = lightpeft::server::store::PostgresStore::connect_options(&url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut tx = frozen.begin().await.unwrap();
    sqlx::query("UPDATE jobs SET step = step WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let limit = lightpeft::server::store::IDLE_IN_TRANSACTION_TIMEOUT + Duration::from_secs(10);
    let reaped = tokio::time::timeout(limit, store.reap(3))
        .await
        .expect("the reaper waited on the frozen writer's lock past the idle timeout")
        .unwrap();
    assert_eq!(reaped, vec![(id, JobStatus::Queued)]);
    // The frozen writer's transaction is gone; its lease too.
    assert!(tx.commit().await.is_err(), "the idle transaction survived");
    assert!(store.renew(&held.lease, LONG_LEASE).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_attempt_stays_interrupted_and_cancels_reach_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    for (name, store) in stores(dir.path()).await {
        let [a, b] = queued_jobs(store.as_ref(), 2).await[..] else {
            unreachable!()
        };
        // One attempt allowed: an expired lease leaves the job interrupted.
        let claim = store
            .claim("w", Duration::from_millis(200))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.job.id, a);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            store.reap(1).await.unwrap(),
            vec![(a, JobStatus::Interrupted)],
            "{name}"
        );
        // Concurrent requeues: one wins.
        let (x, y) = tokio::join!(store.requeue(a, false), store.requeue(a, false));
        assert!(x.is_ok() != y.is_ok(), "{name}: {x:?} {y:?}");

        // A cancel asked while it runs elsewhere reaches the holder on its next renewal.
        let claim = store.claim("w", LONG_LEASE).await.unwrap().unwrap();
        assert_eq!(claim.job.id, b, "{name}: queued longest first");
        assert!(!store.renew(&claim.lease, LONG_LEASE).await.unwrap());
        store.request_cancel(b).await.unwrap();
        assert!(
            store.renew(&claim.lease, LONG_LEASE).await.unwrap(),
            "{name}"
        );
        let cancelled = store
            .settle(
                &claim.lease,
                JobStatus::Cancelled,
                Some("cancelled on request"),
            )
            .await
            .unwrap();
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert!(matches!(
            store.request_cancel(b).await.unwrap_err(),
            StoreError::Conflict(_)
        ));

        // Workers register and report their running jobs.
        let info = WorkerInfo {
            name: "w".into(),
            device: "cpu".into(),
            slots: 2,
        };
        store.worker_heartbeat(&info, true).await.unwrap();
        store.worker_heartbeat(&info, false).await.unwrap();
        let again = store.claim("w", LONG_LEASE).await.unwrap().unwrap();
        assert_eq!(again.job.id, a, "{name}");
        assert_eq!(again.lease.attempt, 2, "{name}");
        let workers = store.workers().await.unwrap();
        assert_eq!(workers.len(), 1, "{name}");
        assert_eq!(workers[0].running, vec![a], "{name}");
        assert_eq!(workers[0].slots, 2);
        assert!(workers[0].seconds_since_heartbeat < 5.0, "{workers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_announces_job_changes_and_sqlite_announces_none() {
    let dir = tempfile::tempdir().unwrap();
    let stores = stores(dir.path()).await;
    let (_, sqlite) = &stores[0];
    assert!(
        sqlite.changes().is_none(),
        "one process writes a SQLite file"
    );
    let (_, postgres) = &stores[1];
    let mut changes = postgres.changes().expect("PostgreSQL announces changes");
    let within = Duration::from_secs(5);
    // Connected and listening: the listener's first bump.
    tokio::time::timeout(within, changes.wait_for(|n| *n >= 1))
        .await
        .expect("the listener connects")
        .unwrap();
    changes.borrow_and_update();
    // A job queued by another process (another store on the same database) wakes this one.
    let [id] = queued_jobs(postgres.as_ref(), 1).await[..] else {
        unreachable!()
    };
    tokio::time::timeout(within, changes.changed())
        .await
        .expect("an insert is announced")
        .unwrap();
    changes.borrow_and_update();
    let claim = postgres.claim("w", LONG_LEASE).await.unwrap().unwrap();
    assert_eq!(claim.job.id, id);
    tokio::time::timeout(within, changes.changed())
        .await
        .expect("a claim is announced")
        .unwrap();
    changes.borrow_and_update();
    // A renewal changes neither status nor step: not announced.
    postgres.renew(&claim.lease, LONG_LEASE).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), changes.changed())
            .await
            .is_err(),
        "renewals are not news"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_study_reopens_unless_its_plans_stopped_it() {
    let dir = tempfile::tempdir().unwrap();
    for (name, store) in stores(dir.path()).await {
        let est = queued_jobs(store.as_ref(), 1).await[0];
        let exp = store.job(est).await.unwrap().experiment_id;
        let spec =
            r#"{"plans":{"preset":"quick_frontier"},"seeds":1,"baselines":false,"random":false}"#;
        let cancelled = store.insert_study(exp, est, spec).await.unwrap();
        let stopped = store.insert_study(exp, est, spec).await.unwrap();
        store.cancel_study(cancelled.id, None).await.unwrap();
        store
            .cancel_study(stopped.id, Some("plan x: too few heads"))
            .await
            .unwrap();
        let reopened = store.reopen_study(cancelled.id).await.unwrap();
        assert!(!reopened.cancelled, "{name}");
        match store.reopen_study(stopped.id).await {
            Err(StoreError::Conflict(why)) => {
                assert!(why.contains("too few heads"), "{name}: {why}")
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(store.study(stopped.id).await.unwrap().cancelled, "{name}");
        assert!(
            matches!(
                store.reopen_study(987_654).await,
                Err(StoreError::NotFound { .. })
            ),
            "{name}"
        );
    }
}
