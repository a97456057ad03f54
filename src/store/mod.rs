//! Record: SQLite via sqlx. All SQL lives here (`findings` holds the lifecycle side). The schema is in
//! `migrations/`, embedded and applied at start. WAL journal, foreign keys on, a busy timeout. A scan —
//! its verdicts and every lifecycle change it causes — is written in one transaction, so a crash
//! mid-write leaves the previous state intact.

pub mod findings;
#[cfg(test)]
mod fixtures;
mod queries;
mod rows;
mod scans;
pub mod work;

pub use findings::{Acknowledged, Recorded};
pub use queries::{FindingCursor, FindingFilter, HistoryEntry, StoredFinding};
pub use scans::ScanRecord;

use crate::domain::Finding;
use crate::report::ScanReport;
use rows::corrupt;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

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

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// False when the database could only be opened read-only.
    writable: bool,
    /// The database file (`None` in memory); scans put their working files beside it.
    file: Option<std::path::PathBuf>,
}

/// How many scans keep their per-identity verdicts; older scans keep their summary rows only.
pub const KEEP_SCAN_VERDICTS: i64 = 20;

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
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // Per connection (four). Recording reads and writes in key order, so a small cache suffices:
            // at 100k identities 4 MiB gave commits of 1.5-2.0 s (first) and a peak RSS of 49-51 MiB,
            // 8 MiB 1.7-2.0 s and 54-62 MiB; 64 MiB a connection took the peak to 240 MiB.
            .pragma("cache_size", "-4096");
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

    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            writable: true,
            file: None,
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Whether scans can be written (false for a database opened read-only).
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Writes a finished scan — its tenants, every verdict, and the lifecycle changes it causes — in one
    /// transaction. Returns, per tenant, how many findings entered `confirmed`.
    pub async fn record_scan(
        &self,
        report: &ScanReport,
        confirm_after: std::time::Duration,
    ) -> Result<findings::Recorded, StoreError> {
        self.record_scan_from(report, None, confirm_after).await
    }

    /// [`Store::record_scan`] of a scan whose verdicts are in its working database `work` (a scan made
    /// for this store); without one, the report's own findings are every verdict.
    pub async fn record_scan_from(
        &self,
        report: &ScanReport,
        work: Option<&work::WorkFile>,
        confirm_after: std::time::Duration,
    ) -> Result<findings::Recorded, StoreError> {
        // The verdicts are read from the scan's working database; a report made without a store (tests,
        // a library caller) has its verdicts staged into one here first, in key order.
        let own;
        let work = match work {
            Some(w) => w.path(),
            None => {
                let (db, file) = self.open_work(&report.scan_id).await?;
                let mut sorted: Vec<Finding> = report.findings.clone();
                sorted.sort_unstable_by(|a, b| {
                    (&a.tenant_id, &a.object_id).cmp(&(&b.tenant_id, &b.object_id))
                });
                let staged = db.stage_results(&report.scan_id, &sorted).await;
                db.close().await;
                staged?;
                own = file;
                own.path()
            }
        };
        let mut conn = self.pool.acquire().await?;
        // Attached outside the transaction (SQLite requires it) and detached after it; a connection that
        // cannot be detached is closed rather than returned to the pool.
        sqlx::query("attach database ? as work")
            .bind(work.to_string_lossy().into_owned())
            .execute(&mut *conn)
            .await?;
        let started = std::time::Instant::now();
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let recorded = self.record_in(&mut tx, report, confirm_after).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(recorded)
        }
        .await;
        if sqlx::query("detach database work")
            .execute(&mut *conn)
            .await
            .is_err()
        {
            conn.close_on_drop();
        }
        let mut recorded = result?;
        recorded.transaction = started.elapsed();
        Ok(recorded)
    }

    async fn record_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        report: &ScanReport,
        confirm_after: std::time::Duration,
    ) -> Result<findings::Recorded, StoreError> {
        let outcome = if report.complete {
            "completed"
        } else {
            "incomplete"
        };
        sqlx::query(
            "insert into scans (scan_id, started_at, finished_at, complete, trigger, total, healthy, orphaned, unknown, outcome)
             values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             on conflict (scan_id) do update set finished_at = excluded.finished_at, complete = excluded.complete,
                 total = excluded.total, healthy = excluded.healthy, orphaned = excluded.orphaned,
                 unknown = excluded.unknown, outcome = excluded.outcome",
        )
        .bind(&report.scan_id)
        .bind(report.started_at.to_rfc3339())
        .bind(report.finished_at.to_rfc3339())
        .bind(report.complete)
        .bind(report.trigger.as_str())
        .bind(i64::try_from(report.summary.total).unwrap_or(i64::MAX))
        .bind(i64::try_from(report.summary.healthy).unwrap_or(i64::MAX))
        .bind(i64::try_from(report.summary.orphaned).unwrap_or(i64::MAX))
        .bind(i64::try_from(report.summary.unknown).unwrap_or(i64::MAX))
        .bind(outcome)
        .execute(&mut **tx)
        .await?;
        for t in &report.tenants {
            sqlx::query(
                "insert into scan_tenants (scan_id, tenant_id, complete, identities, errors, requests, inventory_complete)
                 values (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&report.scan_id)
            .bind(&t.tenant_id)
            .bind(t.complete)
            .bind(i64::try_from(t.identities).unwrap_or(i64::MAX))
            .bind(serde_json::to_string(&t.errors).unwrap_or_else(|_| "[]".into()))
            .bind(serde_json::to_string(&t.requests).unwrap_or_else(|_| "{}".into()))
            .bind(t.inventory_complete)
            .execute(&mut **tx)
            .await?;
        }
        sqlx::query(
            "insert into scan_verdicts (scan_id, tenant_id, object_id, app_id, display_name, identity_type,
                 resource_id, subscription_id, resource_type, verdict, reason, detail, evidence)
             select scan_id, tenant_id, object_id, app_id, display_name, identity_type, resource_id,
                 subscription_id, resource_type, verdict, reason, detail, evidence
             from work.scan_results where scan_id = ? order by tenant_id, object_key",
        )
        .bind(&report.scan_id)
        .execute(&mut **tx)
        .await?;
        let recorded = findings::apply_lifecycle(tx, report, confirm_after).await?;
        // The delta link goes with the inventory it continues: only a complete one, in this transaction.
        for t in report.tenants.iter().filter(|t| t.inventory_complete) {
            if let (Some(link), Some(at)) = (&t.delta_link, t.full_sync_at) {
                sqlx::query(
                    "insert into graph_delta (tenant_id, delta_link, full_sync_at) values (?, ?, ?)
                     on conflict (tenant_id) do update set delta_link = excluded.delta_link,
                         full_sync_at = excluded.full_sync_at",
                )
                .bind(&t.tenant_id)
                .bind(link)
                .bind(at.to_rfc3339())
                .execute(&mut **tx)
                .await?;
            }
        }
        // The scans beyond the newest KEEP_SCAN_VERDICTS lose their verdicts, found through the primary
        // key's scan_id prefix. (`scan_id not in (the newest)` read every retained verdict on every
        // record: 0.1 s -> 1 s at 300k identities by the third scan.)
        sqlx::query(
            "delete from scan_verdicts where scan_id in
                 (select scan_id from scans where outcome != 'running' order by started_at desc limit -1 offset ?)",
        )
        .bind(KEEP_SCAN_VERDICTS)
        .execute(&mut **tx)
        .await?;
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::report;
    use chrono::Utc;

    #[sqlx::test]
    async fn only_the_newest_scans_keep_their_verdicts(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store");
        let t0 = Utc::now() - chrono::Duration::hours(100);
        let n = KEEP_SCAN_VERDICTS + 2;
        for i in 0..n {
            let mut r = report(&format!("s{i:02}"), true);
            r.started_at = t0 + chrono::Duration::hours(i);
            r.finished_at = r.started_at;
            store
                .record_scan(&r, std::time::Duration::ZERO)
                .await
                .expect("recorded");
        }
        for i in 0..n {
            let kept = !store
                .load_verdicts(&format!("s{i:02}"))
                .await
                .expect("verdicts")
                .is_empty();
            assert_eq!(kept, i >= 2, "scan {i}");
            // The scan itself (its summary) stays.
            assert!(
                store
                    .load_scan(&format!("s{i:02}"))
                    .await
                    .expect("scan")
                    .is_some()
            );
        }
    }

    #[sqlx::test]
    async fn a_failed_write_leaves_nothing_behind(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store");
        let mut r = report("dup", true);
        // The same identity twice violates the primary key half-way through the transaction.
        r.findings.push(r.findings[0].clone());
        assert!(
            store
                .record_scan(&r, std::time::Duration::ZERO)
                .await
                .is_err()
        );
        assert!(store.load_scan("dup").await.expect("load").is_none());
        assert!(
            store
                .load_verdicts("dup")
                .await
                .expect("verdicts")
                .is_empty()
        );
    }
}

/// Commit time of large scans (run: `cargo test --release --lib store::timing -- --ignored --nocapture`).
#[cfg(test)]
mod timing {
    use super::*;
    use crate::domain::{
        EvidenceReport, EvidenceSource, IdentityType, Reason, Summary, Trigger, Verdict,
    };
    use crate::report::TenantReport;
    use chrono::Utc;

    fn report(n: usize, id: &str) -> ScanReport {
        let now = Utc::now();
        let findings = (0..n)
            .map(|i| Finding {
                tenant_id: "t".into(),
                // Random-looking, like Graph's object ids.
                object_id: format!("{:016x}-0000-0000-0000", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                app_id: format!("{i:08x}-aaaa-0000-0000-000000000000"),
                display_name: format!("vm-{i}"),
                identity_type: IdentityType::SystemAssigned,
                resource_id: Some(format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-{i}")),
                subscription_id: Some("s".into()),
                resource_type: Some("microsoft.compute/virtualmachines".into()),
                verdict: if i % 200 == 0 { Verdict::Orphaned } else { Verdict::Healthy },
                reason: if i % 200 == 0 { Reason::ResourceNotFound } else { Reason::ResourcePresent },
                detail: "the resource exists and carries this identity".into(),
                evidence: EvidenceReport { source: EvidenceSource::ResourceGraph, status: Some(200), code: None, request_id: Some("r".into()), correlation_request_id: None, checked_at: Some(now) },
            })
            .collect();
        ScanReport {
            scan_id: id.into(),
            started_at: now,
            finished_at: now,
            complete: true,
            trigger: Trigger::Cli,
            tenants: vec![TenantReport {
                summary: Summary::default(),
                arm_checks: 0,
                staging_failed: false,
                tenant_id: "t".into(),
                complete: true,
                inventory_complete: true,
                identities: n as u64,
                errors: vec![],
                requests: Default::default(),
                delta_link: None,
                full_sync_at: None,
            }],
            summary: Summary::default(),
            findings,
        }
    }

    #[tokio::test]
    #[ignore = "timing, run by hand"]
    async fn commit_time_by_size() {
        let sizes: Vec<usize> = std::env::var("MIAUDIT_TIMING_SIZES")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![10_000, 100_000, 300_000]);
        for n in sizes {
            let dir = tempfile::tempdir().expect("dir");
            let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
                .await
                .expect("db");
            for round in 0..3 {
                let r = report(n, &format!("s{round}"));
                let t = std::time::Instant::now();
                let recorded = store
                    .record_scan(&r, std::time::Duration::ZERO)
                    .await
                    .expect("recorded");
                println!(
                    "{n} identities, scan {round}: transaction {:.2} s, record {:.2} s (staging the report included)",
                    recorded.transaction.as_secs_f64(),
                    t.elapsed().as_secs_f64()
                );
            }
        }
    }
}
