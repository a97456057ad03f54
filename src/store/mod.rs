//! The record: SQLite via sqlx. The schema is in `migrations/`, embedded and applied at start. WAL
//! journal, foreign keys on, a busy timeout. A scan — its verdicts and every lifecycle change it causes —
//! is written in one transaction, so a crash mid-write leaves the previous state intact.
//!
//! By job: this file opens the record (connect, migrations, the read-only fallback, close); `scans` has
//! the scan rows and what a scan reads of the record; `record` writes a finished scan in one
//! transaction, in which `runs` keeps its verdicts (as runs of unchanged verdicts) and `lifecycle`
//! moves the findings through their lifecycle; `findings` writes
//! findings rows (for `lifecycle`, and acknowledgements); `queries` answers the API and the export;
//! `rows` has the column codecs they share; `work` is the scan's working database, a separate SQLite
//! file.

mod findings;
#[cfg(test)]
pub(crate) mod fixtures;
mod lifecycle;
pub mod outbox;
mod queries;
mod record;
mod roles;
mod rows;
mod runs;
mod scans;
pub mod suppressions;
pub mod work;

pub use findings::Acknowledged;
pub use queries::{FindingCursor, FindingFilter, HistoryEntry, StoredFinding};
pub use record::Recorded;
pub use roles::DanglingRow;
pub use scans::ScanRecord;

use rows::corrupt;
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// Statements slower than this are logged at debug, not sqlx's default warning: a streamed query (a report or
/// export of every finding) lasts as long as its reader takes, and recording's own duration is logged with the
/// scan (`transaction_seconds`).
pub(crate) const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// SQLite's page cache of every connection, main database and working files alike, as `pragma cache_size`
/// (negative: KiB). The figures behind it are at the main database's connect options.
pub(crate) const PAGE_CACHE: &str = "-512";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row in {table} is not valid: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Creates the database file owner-only (0600) when it does not exist yet, before SQLite opens it. SQLite
/// gives the `-wal` and `-shm` files (and any journal) the permission bits of the database file, so they
/// are owner-only too. Chosen over `umask(077)` at start: the umask is process-wide state that would
/// silently apply to every other file the process or a library creates, is set through an unsafe libc
/// call (the crate denies `unsafe`), and is invisible where the files are made. An existing file keeps
/// its permissions (operators may have chosen them); a warning says when others can read it.
fn create_database_file(path: &std::path::Path) {
    if path.as_os_str().is_empty() {
        return;
    }
    match create_private(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format!("{mode:o}"),
                        "other users may read the database (findings, evidence); chmod 600 it, and its -wal and -shm files"
                    );
                }
            }
        }
        // SQLite reports what is wrong (a missing directory, no permission) when it tries.
        Err(_) => {}
    }
}

/// Creates `path`, which must not exist, readable and writable by the owner only (0600 on Unix,
/// whatever the umask). `create_new` also refuses to follow a symbolic link planted at `path`.
pub(crate) fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Puts the database in `auto_vacuum = incremental` mode, in which the pages that deleted rows free can be
/// returned to the file system (`pragma incremental_vacuum`, after each recorded scan) instead of
/// staying in the file for ever. A new database is created in that mode; a database created by an
/// earlier version is converted here, once: SQLite changes the mode only with a `VACUUM`, which rewrites
/// the whole file (seconds for a few hundred MB; it needs free disk space for a copy of the database and
/// holds the write lock meanwhile). A conversion that fails (another process busy with the database, a
/// full disk) is logged and tried again at the next start; the store works either way.
async fn incremental_vacuum_mode(pool: &SqlitePool) -> Result<(), StoreError> {
    const INCREMENTAL: i64 = 2;
    let mut conn = pool.acquire().await?;
    if auto_vacuum(&mut conn).await? == INCREMENTAL {
        return Ok(());
    }
    let pages: i64 = sqlx::query_scalar("pragma page_count")
        .fetch_one(&mut *conn)
        .await?;
    let started = std::time::Instant::now();
    tracing::info!(
        pages,
        "converting the database to incremental auto-vacuum: a one-off VACUUM rewrites it"
    );
    sqlx::query("pragma auto_vacuum = incremental")
        .execute(&mut *conn)
        .await?;
    match sqlx::query("vacuum").execute(&mut *conn).await {
        Ok(_) => tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "the database is in incremental auto-vacuum mode"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "could not convert the database to incremental auto-vacuum; the space of expired verdicts stays in the file until it is"
        ),
    }
    Ok(())
}

/// After a recorded scan (and at open): returns the pages that expired verdicts freed to the file system
/// (`incremental_vacuum`; the database is in `auto_vacuum = incremental` mode, see
/// [`Store::from_pool`]), then copies the write-ahead log into the database and truncates it, so that
/// neither the file nor the log keeps the size of the largest scan's writes. Neither is needed for the
/// scan to be recorded: a failure is logged, and the next scan tries again. The checkpoint waits for
/// readers of older snapshots (API requests) up to the busy timeout; one that is still reading then
/// leaves the log for the next time.
pub(super) async fn reclaim_and_checkpoint(conn: &mut sqlx::SqliteConnection) {
    if let Err(e) = sqlx::query("pragma incremental_vacuum")
        .execute(&mut *conn)
        .await
    {
        tracing::warn!(error = %e, "could not return the space of expired verdicts; the next scan will");
    }
    match sqlx::query_as::<_, (i64, i64, i64)>("pragma wal_checkpoint(truncate)")
        .fetch_one(&mut *conn)
        .await
    {
        Ok((0, _, _)) => {}
        Ok((_, log, done)) => tracing::info!(
            log_frames = log,
            checkpointed = done,
            "readers kept the write-ahead log from being truncated; the next scan will"
        ),
        Err(e) => tracing::warn!(error = %e, "could not checkpoint the write-ahead log"),
    }
}

/// The database's auto-vacuum mode (0 none, 1 full, 2 incremental). SQLite answers the pragma from what
/// the connection last read of the file's header, so the header is read first.
async fn auto_vacuum(conn: &mut sqlx::SqliteConnection) -> Result<i64, StoreError> {
    sqlx::query("select count(*) from sqlite_schema")
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_scalar("pragma auto_vacuum")
        .fetch_one(&mut *conn)
        .await?)
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// False when the database could only be opened read-only.
    writable: bool,
    /// The database file (`None` in memory); scans put their working files beside it.
    file: Option<std::path::PathBuf>,
    /// How many recorded scans keep their per-identity verdicts (`[database] retain_scans`).
    retain_scans: u32,
    /// The notification sinks whose events a recorded scan enqueues (`[[notify.webhooks]]`).
    subscribers: std::sync::Arc<Vec<crate::domain::Subscriber>>,
    /// `[[suppressions]]` of the configuration (the API's are stored).
    config_suppressions: std::sync::Arc<Vec<crate::domain::Suppression>>,
}

impl Store {
    /// Opens (creating if missing) and migrates the database at `url` (`sqlite://path` or
    /// `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        match Self::connect_read_write(url).await {
            Ok(s) => Ok(s),
            // A database we may read but not write (read-only file system, permissions): serve what it
            // holds; every record will fail, be counted and logged, and the API keeps answering reads.
            Err(e) if Self::exists(url) => match Self::connect_read_only(url).await {
                Ok(s) => {
                    tracing::error!(error = %e, "the database cannot be written; serving it read-only, scans will not be recorded");
                    Ok(s)
                }
                Err(ro) => {
                    tracing::error!(error = %ro, "the database cannot be opened read-only either");
                    Err(e)
                }
            },
            Err(e) => Err(e),
        }
    }

    fn filename(url: &str) -> Option<std::path::PathBuf> {
        SqliteConnectOptions::from_str(url)
            .ok()
            .map(|o| o.get_filename().to_path_buf())
    }

    fn exists(url: &str) -> bool {
        SqliteConnectOptions::from_str(url)
            .map(|o| o.get_filename().exists())
            .unwrap_or(false)
    }

    async fn connect_read_write(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)?;
        if !url.contains(":memory:") {
            create_database_file(opts.get_filename());
        }
        let opts = opts
            .create_if_missing(true)
            // A new database starts in this mode; an existing one is converted once (`from_pool`).
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // Per connection (four). Recording reads and writes in key order, so a small cache suffices.
            // At 100k identities (release build, `scan --output json --all`, then two repeat scans without
            // `--all`; this and the working database's cache varied together): 4 MiB gave records of
            // 1.0-1.7 s and a peak RSS of 50-51 MiB, 1 MiB 0.9-1.6 s and 41-44 MiB, 512 KiB 1.0-2.0 s and
            // 37-39 MiB; 64 MiB a connection took the peak to 240 MiB.
            .pragma("cache_size", PAGE_CACHE)
            .log_slow_statements(log::LevelFilter::Debug, SLOW_STATEMENT);
        // An in-memory database exists per connection: keep exactly one.
        let max = if url.contains(":memory:") { 1 } else { 4 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(opts)
            .await?;
        let mut store = Self::from_pool(pool).await?;
        store.file = (!url.contains(":memory:"))
            .then(|| Self::filename(url))
            .flatten();
        // Opening can succeed on a file we may not write; find out now, not at the first record.
        sqlx::query("create table if not exists _miaudit_write_check (x integer)")
            .execute(store.pool())
            .await?;
        sqlx::query("drop table _miaudit_write_check")
            .execute(store.pool())
            .await?;
        Ok(store)
    }

    /// Opens an existing, fully migrated database that cannot be written: read-only (SQLite reads a WAL
    /// database so when its `-wal` and `-shm` files exist), else immutable (no lock or `-shm` needed;
    /// nothing can change it while it is read-only).
    async fn connect_read_only(url: &str) -> Result<Self, StoreError> {
        let mut last = None;
        for immutable in [false, true] {
            let opts = SqliteConnectOptions::from_str(url)?
                .read_only(true)
                .immutable(immutable);
            let attempt = async {
                let pool = SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(opts)
                    .await?;
                let applied: i64 =
                    sqlx::query_scalar("select count(*) from _sqlx_migrations where success = 1")
                        .fetch_one(&pool)
                        .await?;
                if applied < MIGRATOR.iter().count() as i64 {
                    return Err(corrupt(
                        "_sqlx_migrations",
                        "a read-only database is not fully migrated",
                    ));
                }
                Ok(Self {
                    pool,
                    writable: false,
                    file: None,
                    retain_scans: crate::config::DEFAULT_RETAIN_SCANS,
                    subscribers: Default::default(),
                    config_suppressions: Default::default(),
                })
            };
            match attempt.await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("two attempts were made"))
    }

    /// Closes the pool; the last connection checkpoints the WAL into the database file.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A store on an open pool: migrated, and in incremental auto-vacuum mode.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        MIGRATOR.run(&pool).await?;
        incremental_vacuum_mode(&pool).await?;
        // Migrations and a conversion leave their writes in the log (hundreds of KB for a new database).
        reclaim_and_checkpoint(&mut *pool.acquire().await?).await;
        Ok(Self {
            pool,
            writable: true,
            file: None,
            retain_scans: crate::config::DEFAULT_RETAIN_SCANS,
            subscribers: Default::default(),
            config_suppressions: Default::default(),
        })
    }

    /// Keeps the per-identity verdicts of the newest `n` recorded scans (at least 1); older scans keep
    /// their summary rows. Applied when the next scan is recorded.
    pub fn retaining(mut self, n: u32) -> Self {
        self.retain_scans = n.max(1);
        self
    }

    /// Enqueues, in each recorded scan's transaction, the notifications these sinks subscribe to.
    pub fn notifying(mut self, subscribers: Vec<crate::domain::Subscriber>) -> Self {
        self.subscribers = std::sync::Arc::new(subscribers);
        self
    }

    /// The configuration's allowlist, applied with the stored one after every recorded scan.
    pub fn suppressing(mut self, suppressions: Vec<crate::domain::Suppression>) -> Self {
        self.config_suppressions = std::sync::Arc::new(suppressions);
        self
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Whether scans can be written (false for a database opened read-only).
    pub fn writable(&self) -> bool {
        self.writable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SubscriptionId;

    /// Rows of every table that holds ids, written at schema 0005 with ids in mixed case.
    const MIXED_CASE_ROWS: &str = r#"
        insert into scans (scan_id, started_at, finished_at, complete, trigger, outcome)
            values ('s1', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00', 1, 'cli', 'completed');
        insert into scan_tenants (scan_id, tenant_id, complete, identities, errors, requests)
            values ('s1', 'TENANT-A', 1, 1, '[]', '{}'), ('s1', 'tenant-a', 1, 2, '[]', '{}'),
                   ('s1', 'Tenant-B', 1, 3, '[]', '{}');
        insert into scan_verdicts (scan_id, tenant_id, object_id, app_id, display_name, identity_type,
                resource_id, subscription_id, resource_type, verdict, reason, detail, evidence)
            values ('s1', 'tenant-a', 'OBJ-1', 'a', 'upper', 'system_assigned', null, 'SUB-1', null,
                    'orphaned', 'resource_not_found', 'd', '{}'),
                   ('s1', 'tenant-a', 'obj-1', 'a', 'lower', 'system_assigned', null, 'sub-1', null,
                    'orphaned', 'resource_not_found', 'd', '{}'),
                   ('s1', 'TENANT-A', 'Obj-4', 'a', 'alone', 'system_assigned', null, 'Sub-1', null,
                    'healthy', 'resource_present', 'd', '{}');
        insert into findings (tenant_id, object_id, app_id, display_name, identity_type, subscription_id,
                verdict, reason, detail, evidence, state, last_seen_at, last_scan_id)
            values ('TENANT-A', 'OBJ-1', 'a', 'newer', 'system_assigned', 'SUB-1', 'orphaned',
                    'resource_not_found', 'd', '{"source":"arm"}', 'confirmed', '2026-01-02T00:00:00+00:00', 's1'),
                   ('tenant-a', 'obj-1', 'a', 'older', 'system_assigned', 'sub-1', 'healthy',
                    'resource_present', 'd', '{"source":"arm"}', null, '2026-01-01T00:00:00+00:00', 's1'),
                   ('Tenant-A', 'obj-3', 'a', 'mixed', 'system_assigned', null, 'healthy',
                    'resource_present', 'd', '{"source":"arm"}', null, '2026-01-01T00:00:00+00:00', 's1'),
                   ('tenant-a', 'obj-3', 'a', 'lower', 'system_assigned', null, 'healthy',
                    'resource_present', 'd', '{"source":"arm"}', null, '2026-01-01T00:00:00+00:00', 's1'),
                   ('tenant-a', 'obj-2', 'a', 'alone', 'system_assigned', 'SUB-2', 'orphaned',
                    'resource_not_found', 'd', '{"source":"arm"}', 'suspected', '2026-01-01T00:00:00+00:00', 's1');
        insert into finding_history (tenant_id, object_id, episode, at, scan_id, to_state)
            values ('TENANT-A', 'OBJ-1', 1, '2026-01-01T00:00:00+00:00', 's1', 'suspected'),
                   ('tenant-a', 'obj-1', 1, '2026-01-02T00:00:00+00:00', 's1', 'confirmed');
        insert into tenant_inventory (tenant_id, last_inventory_at, last_scan_id)
            values ('TENANT-A', '2026-01-03T00:00:00+00:00', 'kept'),
                   ('tenant-a', '2026-01-01T00:00:00+00:00', 'dropped');
        insert into graph_delta (tenant_id, delta_link, full_sync_at)
            values ('Tenant-B', 'link-b', '2026-01-01T00:00:00+00:00');
    "#;

    /// What each table holds after the migration: a row's ids and what tells the rows apart.
    const MIGRATED: &[(&str, &[[&str; 3]])] = &[
        // The most recently seen finding is kept; on a tie, the one already lower-case.
        (
            "select tenant_id || '/' || object_id, display_name, coalesce(subscription_id, '-')
             from findings order by 1",
            &[
                ["tenant-a/obj-1", "newer", "sub-1"],
                ["tenant-a/obj-2", "alone", "sub-2"],
                ["tenant-a/obj-3", "lower", "-"],
            ],
        ),
        // Within a scan, the row already lower-case.
        (
            "select tenant_id || '/' || object_id, display_name, subscription_id
             from scan_verdicts order by 1",
            &[
                ["tenant-a/obj-1", "lower", "sub-1"],
                ["tenant-a/obj-4", "alone", "sub-1"],
            ],
        ),
        (
            "select scan_id, tenant_id, cast(identities as text) from scan_tenants order by 2",
            &[["s1", "tenant-a", "2"], ["s1", "tenant-b", "3"]],
        ),
        // Every history entry, lower-cased.
        (
            "select tenant_id, object_id, to_state from finding_history order by id",
            &[
                ["tenant-a", "obj-1", "suspected"],
                ["tenant-a", "obj-1", "confirmed"],
            ],
        ),
        (
            "select tenant_id, last_scan_id, last_inventory_at from tenant_inventory",
            &[["tenant-a", "kept", "2026-01-03T00:00:00+00:00"]],
        ),
        (
            "select tenant_id, delta_link, full_sync_at from graph_delta",
            &[["tenant-b", "link-b", "2026-01-01T00:00:00+00:00"]],
        ),
    ];

    #[sqlx::test(migrations = false)]
    async fn ids_of_a_database_written_at_0005_are_lower_cased_keeping_one_of_each(
        pool: SqlitePool,
    ) {
        MIGRATOR.run_to(5, &pool).await.expect("schema 0005");
        sqlx::raw_sql(MIXED_CASE_ROWS)
            .execute(&pool)
            .await
            .expect("rows at 0005");
        let store = Store::from_pool(pool).await.expect("migrated");
        for (sql, want) in MIGRATED {
            let rows: Vec<(String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(*sql))
                .fetch_all(store.pool())
                .await
                .expect("rows");
            let got: Vec<[&str; 3]> = rows
                .iter()
                .map(|(a, b, c)| [a.as_str(), b.as_str(), c.as_str()])
                .collect();
            assert_eq!(got, *want, "{sql}");
        }
        // The store reads them by any case of their ids, through its types.
        let f = store
            .load_finding(&"TENANT-A".into(), &"Obj-1".into())
            .await
            .expect("load")
            .expect("kept");
        assert_eq!(f.state, Some(crate::lifecycle::State::Confirmed));
        assert_eq!(f.last_scan_id, "kept", "seen in the kept inventory");
        let by_subscription = store
            .list_findings(
                &FindingFilter {
                    subscription_id: Some(SubscriptionId::new("SUB-2")),
                    ..FindingFilter::default()
                },
                None,
                10,
            )
            .await
            .expect("list");
        assert_eq!(by_subscription.len(), 1);
        assert_eq!(by_subscription[0].finding.object_id, "obj-2");
    }
}
