//! The PostgreSQL store: one database that several machines can share. The tables are
//! SQLite's in PostgreSQL's types (arrays as little-endian BYTEA, times as the same RFC 3339
//! text), so both stores answer every read with the same values. Its statements are the shared
//! ones (`sql.rs`); this module connects and names PostgreSQL's dialect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::watch;

use super::{FaultLog, StoreError, StoreResult, without_password};

/// Migrations from the workspace's `migrations/postgres/`, embedded at build time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// Now, in the format every timestamp uses (SQLite's `%Y-%m-%dT%H:%M:%fZ`). The wall clock at
/// the statement, not the transaction's start, as SQLite's `'now'` is.
const NOW: &str =
    r#"to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#;

/// Now as Unix seconds on the database server's clock (the queue's clock: leases, heartbeats,
/// queue order), the same for every worker whatever its own clock says.
const EPOCH: &str = "extract(epoch FROM clock_timestamp())::double precision";

/// How long opening waits for the server before saying it cannot be reached.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the database lets a session sit idle inside a transaction before ending it. Ours
/// send their statements back to back; one that idles belongs to a process that was frozen
/// (SIGSTOP, a suspended VM) or cut off mid-write, and its row locks would otherwise hold the
/// reaper's update, and with it every other job's reaping, until that process wakes.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// A claim passes over a row another claim has locked, rather than waiting for it.
const SKIP_LOCKED: &str = "FOR UPDATE SKIP LOCKED";

/// A worker's running jobs (`j`) as one comma-separated text.
const RUNNING_IDS: &str = "string_agg(j.id::text, ',' ORDER BY j.id)";

/// A new row's id: the identity column's next, never handed out twice.
fn next_id(_table: &'static str) -> String {
    "DEFAULT".to_string()
}

/// SQL built only from this file's constants (the time expression, state names), never from
/// request data, which always goes through binds.
fn audited(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

/// The channel migration 0003's trigger announces job changes on.
const JOBS_CHANNEL: &str = "lightpeft_jobs";

/// How long the listener waits before connecting again.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

/// The store in a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Storage faults of writes, for [`Store::health`].
    faults: Arc<Mutex<FaultLog>>,
    /// Bumped on every announced job change (and on every reconnection of the listener).
    changes: watch::Receiver<u64>,
}

/// Listens for job changes on a connection of its own, reconnecting when it is lost. Every
/// notification bumps the counter, and so does every (re)connection: what was announced
/// while disconnected is lost, and a bump makes listeners re-read the store.
fn listen_for_changes(pool: PgPool) -> watch::Receiver<u64> {
    let (bump, changes) = watch::channel(0u64);
    tokio::spawn(async move {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => match listener.listen(JOBS_CHANNEL).await {
                    Ok(()) => loop {
                        bump.send_modify(|n| *n += 1);
                        // Ok(None): the connection was lost and is made again by the next
                        // call; Err: it could not be.
                        match listener.try_recv().await {
                            Ok(_) => {}
                            Err(e) => {
                                tracing::debug!(error = %e, "job notifications lost; listening again");
                                break;
                            }
                        }
                    },
                    Err(e) => tracing::debug!(error = %e, "cannot listen for job notifications"),
                },
                Err(e) => tracing::debug!(error = %e, "cannot listen for job notifications"),
            }
            tokio::time::sleep(RELISTEN_AFTER).await;
        }
    });
    changes
}

impl PostgresStore {
    /// How every connection of the store is made: `url`, with the database told to end a
    /// transaction left idle for [`IDLE_IN_TRANSACTION_TIMEOUT`].
    pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
        let options: PgConnectOptions = url.parse()?;
        let idle = format!("{}s", IDLE_IN_TRANSACTION_TIMEOUT.as_secs());
        Ok(options.options([("idle_in_transaction_session_timeout", idle.as_str())]))
    }

    /// Connects to `url` and applies pending migrations. Errors name the URL without its
    /// password.
    pub async fn open(url: &str) -> StoreResult<PostgresStore> {
        let location = without_password(url);
        let open_error = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        let options = Self::connect_options(url).map_err(open_error)?;
        // One connection first, under a deadline: the pool would retry an unreachable server
        // until its own timeout and then report only that it timed out, not why.
        match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
            Ok(Ok(connection)) => drop(connection),
            Ok(Err(e)) => return Err(open_error(e)),
            Err(_) => {
                return Err(open_error(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                ))));
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(open_error)?;
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&pool)
                .await
                .or_else(|e| match &e {
                    // undefined_table: no history yet (a new database), nothing was applied.
                    sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
                    _ => Err(e),
                })
                .map_err(open_error)?;
        super::refuse_newer_schema(&location, applied, &MIGRATOR)?;
        // sqlx holds an advisory lock while it migrates, so servers and workers starting at
        // once apply each migration once.
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                location: location.clone(),
                source,
            })?;
        tracing::debug!(database = %location, "store opened");
        Ok(PostgresStore {
            changes: listen_for_changes(pool.clone()),
            pool,
            faults: Arc::default(),
        })
    }

    /// Job changes as PostgreSQL announces them.
    fn change_feed(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changes.clone())
    }
}

super::sql::impl_store!(PostgresStore, Postgres);
