//! The SQLite store: one file in WAL mode, arrays (masks, importances) as little-endian BLOBs.
//! Its statements are the shared ones (`sql.rs`); this module opens the file and names
//! SQLite's dialect.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};

use super::{FaultLog, StoreError, StoreResult};

/// Migrations from the workspace's `migrations/sqlite/`, embedded at build time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// The store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Storage faults of writes, for [`Store::health`].
    faults: Arc<Mutex<FaultLog>>,
}

/// Whether a connection `age` old was open at the latest storage fault.
fn lived_through_fault(faults: &Mutex<FaultLog>, age: Duration) -> bool {
    let faults = faults.lock().expect("faults");
    faults
        .last
        .as_ref()
        .is_some_and(|(_, at)| age >= at.elapsed())
}

/// The newest migration applied to the database (None for a new file).
async fn applied_version(pool: &SqlitePool) -> Result<Option<i64>, sqlx::Error> {
    let has_history: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await?;
    if has_history == 0 {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
}

/// Now as Unix seconds (the queue's clock: leases, heartbeats, queue order).
const EPOCH: &str = "((julianday('now') - 2440587.5) * 86400.0)";

/// Now, in the format every timestamp uses.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// SQLite has one writer: a claim holds the write lock from choosing the row to the commit,
/// so there is no locked row to pass over.
const SKIP_LOCKED: &str = "";

/// A worker's running jobs (`j`) as one comma-separated text.
const RUNNING_IDS: &str = "group_concat(j.id)";

/// The id the next row of `table` gets: one past the highest ever issued (migration 0003), so
/// an id is never handed out twice, even after the newest row is deleted.
fn next_id(table: &'static str) -> String {
    format!("(SELECT last + 1 FROM id_marks WHERE name = '{table}')")
}

/// SQL built only from this file's constants (table names, the time expression), never from
/// request data, which always goes through binds.
fn audited(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations. With
    /// `max_bytes`, the file may not grow past that size: writes beyond it fail as on a full
    /// disk.
    pub async fn open(path: &Path, max_bytes: Option<u64>) -> StoreResult<SqliteStore> {
        let location = path.display().to_string();
        let mut options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(max) = max_bytes {
            // SQLite's default page size; the cap holds on every connection of the pool.
            options = options.pragma("max_page_count", (max / 4096).max(1).to_string());
        }
        let faults = Arc::<Mutex<FaultLog>>::default();
        // A connection that lived through a storage fault may hold a transaction SQLite left
        // open (or one sqlx and SQLite disagree about); it is closed rather than reused, so
        // the store works as new once space returns.
        let before = faults.clone();
        let after = faults.clone();
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(4)
            .before_acquire(move |_, meta| {
                let keep = !lived_through_fault(&before, meta.age);
                Box::pin(async move { Ok(keep) })
            })
            .after_release(move |_, meta| {
                let keep = !lived_through_fault(&after, meta.age);
                Box::pin(async move { Ok(keep) })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                location: location.clone(),
                source,
            })?;
        let applied = applied_version(&pool)
            .await
            .map_err(|source| StoreError::Open {
                location: location.clone(),
                source,
            })?;
        super::refuse_newer_schema(&location, applied, &MIGRATOR)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { location, source })?;
        tracing::debug!(path = %path.display(), "store opened");
        Ok(SqliteStore { pool, faults })
    }
}

impl SqliteStore {
    /// SQLite announces nothing: one process writes the file, and it knows its own changes.
    fn change_feed(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

super::sql::impl_store!(SqliteStore, Sqlite);
