//! Record: SQLite via sqlx. All SQL lives here (`findings` holds the lifecycle side). The schema is in
//! `migrations/`, embedded and applied at start. WAL journal, foreign keys on, a busy timeout. A scan —
//! its verdicts and every lifecycle change it causes — is written in one transaction, so a crash
//! mid-write leaves the previous state intact.

pub mod findings;
mod rows;
pub mod work;

use crate::domain::{Finding, Summary, Trigger};
use crate::domain::{IdentityType, ManagedIdentity, Verdict};
use crate::report::{ScanReport, TenantReport};
use chrono::{DateTime, Utc};
use rows::{corrupt, count, finding_columns, parse_time};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
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

/// A scan as listed, without its verdicts.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct ScanRecord {
    pub scan_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub complete: bool,
    /// running | completed | incomplete | abandoned
    pub outcome: String,
    pub trigger: Trigger,
    pub summary: Summary,
    pub tenants: Vec<TenantReport>,
}

/// How many scans keep their per-identity verdicts; older scans keep their summary rows only.
pub const KEEP_SCAN_VERDICTS: i64 = 20;

fn parse_trigger(s: &str) -> Result<Trigger, StoreError> {
    Ok(match s {
        "schedule" => Trigger::Schedule,
        "manual" => Trigger::Manual,
        "startup" => Trigger::Startup,
        "cli" => Trigger::Cli,
        other => return Err(corrupt("scans", format!("trigger {other:?}"))),
    })
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

    /// Notes a scan that has started (`finished_at` null, outcome `running`), so the API can show it.
    pub async fn begin_scan(
        &self,
        scan_id: &str,
        started_at: DateTime<Utc>,
        trigger: Trigger,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "insert into scans (scan_id, started_at, finished_at, complete, trigger, outcome)
             values (?, ?, null, 0, ?, 'running')",
        )
        .bind(scan_id)
        .bind(started_at.to_rfc3339())
        .bind(trigger.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks scans left `running` by a process that died as `abandoned`; returns how many.
    pub async fn abandon_running_scans(&self) -> Result<u64, StoreError> {
        let r = sqlx::query("update scans set outcome = 'abandoned' where outcome = 'running'")
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
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

    /// Fills in the tenants of `scans` with one statement, however many scans (a page of 1,000 made
    /// 1,001 queries when each scan read its own): the ids go in as one JSON array parameter, so the
    /// statement is the same for every page size.
    async fn attach_tenants(&self, scans: &mut [ScanRecord]) -> Result<(), StoreError> {
        if scans.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = scans.iter().map(|s| s.scan_id.as_str()).collect();
        let rows = sqlx::query(
            "select scan_id, tenant_id, complete, identities, errors, requests, inventory_complete
             from scan_tenants where scan_id in (select value from json_each(?))
             order by scan_id, tenant_id",
        )
        .bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
        .fetch_all(&self.pool)
        .await?;
        let mut by_scan: std::collections::HashMap<String, Vec<TenantReport>> =
            std::collections::HashMap::with_capacity(scans.len());
        for r in &rows {
            by_scan
                .entry(r.try_get("scan_id")?)
                .or_default()
                .push(Self::tenant_row(r)?);
        }
        for s in scans {
            s.tenants = by_scan.remove(&s.scan_id).unwrap_or_default();
        }
        Ok(())
    }

    fn tenant_row(r: &sqlx::sqlite::SqliteRow) -> Result<TenantReport, StoreError> {
        Ok(TenantReport {
            delta_link: None,
            full_sync_at: None,
            summary: Summary::default(),
            arm_checks: 0,
            staging_failed: false,
            tenant_id: r.try_get("tenant_id")?,
            complete: r.try_get("complete")?,
            inventory_complete: r.try_get("inventory_complete")?,
            identities: count(r.try_get("identities")?),
            errors: serde_json::from_str(&r.try_get::<String, _>("errors")?)
                .map_err(|e| corrupt("scan_tenants", e.to_string()))?,
            requests: serde_json::from_str(&r.try_get::<String, _>("requests")?)
                .map_err(|e| corrupt("scan_tenants", e.to_string()))?,
        })
    }

    fn scan_record(r: &sqlx::sqlite::SqliteRow) -> Result<ScanRecord, StoreError> {
        let finished: Option<String> = r.try_get("finished_at")?;
        Ok(ScanRecord {
            scan_id: r.try_get("scan_id")?,
            started_at: parse_time("scans", &r.try_get::<String, _>("started_at")?)?,
            finished_at: finished.map(|f| parse_time("scans", &f)).transpose()?,
            complete: r.try_get("complete")?,
            outcome: r.try_get("outcome")?,
            trigger: parse_trigger(&r.try_get::<String, _>("trigger")?)?,
            summary: Summary {
                total: count(r.try_get("total")?),
                healthy: count(r.try_get("healthy")?),
                orphaned: count(r.try_get("orphaned")?),
                unknown: count(r.try_get("unknown")?),
            },
            tenants: Vec::new(),
        })
    }

    /// One scan with its tenants, or `None`.
    pub async fn load_scan(&self, scan_id: &str) -> Result<Option<ScanRecord>, StoreError> {
        let Some(row) = sqlx::query("select * from scans where scan_id = ?")
            .bind(scan_id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut recs = [Self::scan_record(&row)?];
        self.attach_tenants(&mut recs).await?;
        let [rec] = recs;
        Ok(Some(rec))
    }

    /// The newest scans first; `before` is the (started_at, scan_id) of the last scan of a previous page.
    pub async fn list_scans(
        &self,
        limit: u32,
        before: Option<(&str, &str)>,
    ) -> Result<Vec<ScanRecord>, StoreError> {
        let rows = match before {
            None => {
                sqlx::query("select * from scans order by started_at desc, scan_id desc limit ?")
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            Some((at, id)) => {
                sqlx::query(
                    "select * from scans where (started_at, scan_id) < (?, ?)
                     order by started_at desc, scan_id desc limit ?",
                )
                .bind(at)
                .bind(id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut out = rows
            .iter()
            .map(Self::scan_record)
            .collect::<Result<Vec<_>, _>>()?;
        self.attach_tenants(&mut out).await?;
        Ok(out)
    }

    /// Object ids (lower-case) of the tenant's open findings (suspected, confirmed, acknowledged): ARM
    /// checks them in every scan, since only ARM's word may resolve them.
    pub async fn open_finding_keys(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "select object_id from findings
             where tenant_id = ? and state in ('suspected', 'confirmed', 'acknowledged')
             order by object_id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The next chunk of the tenant's recorded inventory after the object id `after`: the identities of
    /// its findings except those resolved as removed, as Graph would list them, with the object id to
    /// continue after; `None` past the last.
    pub async fn stored_inventory(
        &self,
        tenant: &str,
        after: &str,
    ) -> Result<Option<(String, Vec<ManagedIdentity>)>, StoreError> {
        let rows = sqlx::query(
            "select object_id, app_id, display_name, identity_type, resource_id from findings
             where tenant_id = ? and object_id > ?
               and not (coalesce(state, '') = 'resolved' and coalesce(resolution, '') = 'identity_removed')
             order by object_id limit ?",
        )
        .bind(tenant)
        .bind(after)
        .bind(work::CHUNK)
        .fetch_all(&self.pool)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(None);
        };
        let last: String = last.try_get("object_id")?;
        let mut page = Vec::with_capacity(rows.len());
        for r in &rows {
            let kind: String = r.try_get("identity_type")?;
            let explicit = if kind == IdentityType::UserAssigned.as_str() {
                "True"
            } else {
                "False"
            };
            let resource: Option<String> = r.try_get("resource_id")?;
            let names = resource
                .map(|id| vec![format!("isExplicit={explicit}"), id])
                .unwrap_or_default();
            page.push(ManagedIdentity::from_alternative_names(
                tenant,
                r.try_get("object_id")?,
                r.try_get("app_id")?,
                r.try_get("display_name")?,
                names,
            ));
        }
        Ok(Some((last, page)))
    }

    /// The stored Graph delta link of a tenant and the time of its last full listing.
    pub async fn load_delta(
        &self,
        tenant: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let row =
            sqlx::query("select delta_link, full_sync_at from graph_delta where tenant_id = ?")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok((
                r.try_get("delta_link")?,
                parse_time("graph_delta", &r.try_get::<String, _>("full_sync_at")?)?,
            ))
        })
        .transpose()
    }

    /// Identities per verdict and tenant in the newest finished scan that covered each tenant.
    pub async fn latest_verdict_counts(&self) -> Result<Vec<(String, Verdict, u64)>, StoreError> {
        let rows = sqlx::query(
            // Each tenant's latest scan first, then only that scan's rows (through the primary key),
            // rather than a subquery per row of every retained scan.
            "with latest as (
                 select d.tenant_id,
                        (select t.scan_id from scan_tenants t join scans s on s.scan_id = t.scan_id
                         where t.tenant_id = d.tenant_id and s.outcome != 'running'
                         order by s.started_at desc limit 1) as scan_id
                 from (select distinct tenant_id from scan_tenants) d)
             select v.tenant_id, v.verdict, count(*) as n
             from latest l join scan_verdicts v on v.scan_id = l.scan_id and v.tenant_id = l.tenant_id
             group by v.tenant_id, v.verdict",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let v: String = r.try_get("verdict")?;
                Ok((
                    r.try_get("tenant_id")?,
                    Verdict::parse(&v)
                        .ok_or_else(|| corrupt("scan_verdicts", format!("verdict {v:?}")))?,
                    count(r.try_get("n")?),
                ))
            })
            .collect()
    }

    /// The verdicts of one scan, ordered by tenant and object id.
    pub async fn load_verdicts(&self, scan_id: &str) -> Result<Vec<Finding>, StoreError> {
        let rows = sqlx::query(
            "select * from scan_verdicts where scan_id = ? order by tenant_id, object_id",
        )
        .bind(scan_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| finding_columns(r, "scan_verdicts"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EvidenceReport, EvidenceSource, Reason};

    fn report(scan_id: &str, complete: bool) -> ScanReport {
        let now = Utc::now();
        let f = Finding {
            tenant_id: "t1".into(),
            object_id: "o1".into(),
            app_id: "a1".into(),
            display_name: "vm1".into(),
            identity_type: IdentityType::SystemAssigned,
            resource_id: Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1".into()),
            subscription_id: Some("s".into()),
            resource_type: Some("microsoft.compute/virtualmachines".into()),
            verdict: Verdict::Orphaned,
            reason: Reason::ResourceNotFound,
            detail: "gone".into(),
            evidence: EvidenceReport {
                source: EvidenceSource::Arm,
                status: Some(404),
                code: Some("ResourceNotFound".into()),
                request_id: Some("rid".into()),
                correlation_request_id: Some("cid".into()),
                checked_at: Some(now),
            },
        };
        ScanReport {
            scan_id: scan_id.into(),
            started_at: now,
            finished_at: now,
            complete,
            trigger: Trigger::Cli,
            tenants: vec![TenantReport {
                summary: Summary::default(),
                arm_checks: 0,
                staging_failed: false,
                tenant_id: "t1".into(),
                complete,
                inventory_complete: true,
                identities: 1,
                errors: vec!["e".into()],
                requests: Default::default(),
                delta_link: None,
                full_sync_at: None,
            }],
            summary: Summary {
                total: 1,
                healthy: 0,
                orphaned: 1,
                unknown: 0,
            },
            findings: vec![f],
        }
    }

    #[sqlx::test]
    async fn a_recorded_scan_reads_back_whole(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store");
        let r = report("scan-1", true);
        store
            .record_scan(&r, std::time::Duration::ZERO)
            .await
            .expect("recorded");
        let rec = store
            .load_scan("scan-1")
            .await
            .expect("load")
            .expect("present");
        assert!(rec.complete);
        assert_eq!(rec.summary, r.summary);
        assert_eq!(rec.tenants, r.tenants);
        let verdicts = store.load_verdicts("scan-1").await.expect("verdicts");
        assert_eq!(verdicts, r.findings);
        assert!(store.load_scan("nope").await.expect("load").is_none());
    }

    #[sqlx::test]
    async fn scans_list_newest_first(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store");
        let mut a = report("a", true);
        a.started_at -= chrono::Duration::hours(1);
        store
            .record_scan(&a, std::time::Duration::ZERO)
            .await
            .expect("a");
        store
            .record_scan(&report("b", false), std::time::Duration::ZERO)
            .await
            .expect("b");
        let list = store.list_scans(10, None).await.expect("list");
        assert_eq!(
            list.iter().map(|s| s.scan_id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        let first = store.list_scans(1, None).await.expect("list");
        assert_eq!(first.len(), 1);
        let at = first[0].started_at.to_rfc3339();
        let rest = store
            .list_scans(10, Some((&at, &first[0].scan_id)))
            .await
            .expect("list");
        assert_eq!(
            rest.iter().map(|s| s.scan_id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
    }

    #[sqlx::test]
    async fn a_page_of_a_thousand_scans_gets_each_scan_its_own_tenants(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store");
        let t0 = Utc::now() - chrono::Duration::days(30);
        let mut tx = store.pool.begin().await.expect("tx");
        for i in 0..1000i64 {
            let id = format!("scan-{i:04}");
            sqlx::query("insert into scans (scan_id, started_at, finished_at, complete, trigger, outcome) values (?, ?, ?, 1, 'cli', 'completed')")
                .bind(&id)
                .bind((t0 + chrono::Duration::minutes(i)).to_rfc3339())
                .bind((t0 + chrono::Duration::minutes(i)).to_rfc3339())
                .execute(&mut *tx)
                .await
                .expect("scan");
            // Every third scan has no tenants (e.g. one still running); the others two, named after it.
            for t in if i % 3 == 0 { 2 } else { 0 }..2 {
                sqlx::query("insert into scan_tenants (scan_id, tenant_id, complete, identities, errors, requests, inventory_complete) values (?, ?, 1, ?, ?, '{}', 1)")
                    .bind(&id)
                    .bind(format!("t{t}"))
                    .bind(i)
                    .bind(serde_json::to_string(&[format!("{id}/t{t}")]).expect("json"))
                    .execute(&mut *tx)
                    .await
                    .expect("tenant");
            }
        }
        tx.commit().await.expect("commit");
        let list = store.list_scans(1000, None).await.expect("list");
        assert_eq!(list.len(), 1000);
        for (n, s) in list.iter().enumerate() {
            let i = 999 - n as i64;
            assert_eq!(s.scan_id, format!("scan-{i:04}"), "newest first");
            if i % 3 == 0 {
                assert!(s.tenants.is_empty(), "{}", s.scan_id);
                continue;
            }
            let got: Vec<(&str, u64, &str)> = s
                .tenants
                .iter()
                .map(|t| (t.tenant_id.as_str(), t.identities, t.errors[0].as_str()))
                .collect();
            let (e0, e1) = (format!("{}/t0", s.scan_id), format!("{}/t1", s.scan_id));
            assert_eq!(
                got,
                [("t0", i as u64, e0.as_str()), ("t1", i as u64, e1.as_str())]
            );
        }
        let one = store
            .load_scan("scan-0500")
            .await
            .expect("load")
            .expect("present");
        assert_eq!(one.tenants.len(), 2);
        assert_eq!(one.tenants[1].errors, ["scan-0500/t1"]);
    }

    #[sqlx::test]
    async fn running_scans_are_listed_then_abandoned_and_verdict_counts_come_from_the_latest(
        pool: SqlitePool,
    ) {
        let store = Store::from_pool(pool).await.expect("store");
        store
            .record_scan(&report("done", true), std::time::Duration::ZERO)
            .await
            .expect("recorded");
        store
            .begin_scan("live", Utc::now(), Trigger::Schedule)
            .await
            .expect("begun");
        let live = store
            .load_scan("live")
            .await
            .expect("load")
            .expect("present");
        assert_eq!((live.outcome.as_str(), live.finished_at), ("running", None));
        assert_eq!(store.abandon_running_scans().await.expect("abandon"), 1);
        assert_eq!(store.abandon_running_scans().await.expect("abandon"), 0);
        let live = store
            .load_scan("live")
            .await
            .expect("load")
            .expect("present");
        assert_eq!(live.outcome, "abandoned");
        // The abandoned scan has no verdicts; counts come from the latest recorded scan.
        let counts = store.latest_verdict_counts().await.expect("counts");
        assert_eq!(counts, vec![("t1".to_owned(), Verdict::Orphaned, 1)]);
    }

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
    use crate::domain::{EvidenceReport, EvidenceSource, Reason};

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
