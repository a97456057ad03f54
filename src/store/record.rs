//! Recording a finished scan in one transaction: its row and its tenants, its verdicts (read from the
//! scan's working database, attached) as runs of unchanged verdicts (`runs`), the lifecycle changes the
//! verdicts cause (`lifecycle`), the Graph delta links of complete inventories, and the retention of
//! older scans' verdicts. A crash mid-write leaves the previous state intact.

use super::lifecycle::apply_lifecycle;
use super::runs::{self, TenantRuns};
use super::work::WorkFile;
use super::{Store, StoreError};
use crate::domain::{Finding, TenantId};
use crate::report::ScanReport;
use std::collections::BTreeMap;

/// What recording a scan changed, per tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Findings that entered `confirmed`.
    pub newly_confirmed: BTreeMap<TenantId, u64>,
    /// What applying the allowlist changed.
    pub suppressions: super::suppressions::Applied,
    /// Notifications enqueued in the outbox (one per event and json sink, one digest per other sink).
    pub notifications: u64,
    /// How long the recording transaction took (begin to commit).
    pub transaction: std::time::Duration,
    /// How long returning the space of expired verdicts and checkpointing the write-ahead log took,
    /// after the commit.
    pub checkpoint: std::time::Duration,
}

impl Store {
    /// Writes a finished scan — its tenants, every verdict, and the lifecycle changes it causes — in one
    /// transaction. Returns, per tenant, how many findings entered `confirmed`.
    pub async fn record_scan(
        &self,
        report: &ScanReport,
        confirm_after: std::time::Duration,
    ) -> Result<Recorded, StoreError> {
        self.record_scan_from(report, None, confirm_after).await
    }

    /// [`Store::record_scan`] of a scan whose verdicts are in its working database `work` (a scan made
    /// for this store); without one, the report's own findings are every verdict. The write-ahead log is
    /// checkpointed after the commit ([`Store::checkpoint`]).
    pub async fn record_scan_from(
        &self,
        report: &ScanReport,
        work: Option<&WorkFile>,
        confirm_after: std::time::Duration,
    ) -> Result<Recorded, StoreError> {
        let mut recorded = self.commit_scan_from(report, work, confirm_after).await?;
        recorded.checkpoint = self.checkpoint().await?;
        Ok(recorded)
    }

    /// [`Store::record_scan_from`] up to the commit: the scan is recorded, and its writes are still in
    /// the write-ahead log, which the caller checkpoints with [`Store::checkpoint`] when it suits it
    /// (the command line while it prints the report, which reads only the scan's working database; the
    /// daemon once the scan's metrics are published). The connection does not checkpoint at the commit
    /// (`wal_autocheckpoint` 0 for the transaction), which would copy the whole transaction into the
    /// database before the commit returns.
    pub async fn commit_scan_from(
        &self,
        report: &ScanReport,
        work: Option<&WorkFile>,
        confirm_after: std::time::Duration,
    ) -> Result<Recorded, StoreError> {
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
                let staged = db
                    .stage_results(&report.scan_id, &sorted, super::work::Existing::Fail)
                    .await;
                db.close().await;
                staged?;
                own = file;
                own.path()
            }
        };
        let mut rec = Recording {
            conn: self.pool.acquire().await?,
            set_back: false,
        };
        // Attached outside the transaction (SQLite requires it); the connection is set back after it.
        sqlx::raw_sql("pragma wal_autocheckpoint = 0; pragma synchronous = full")
            .execute(&mut *rec.conn)
            .await?;
        sqlx::query("attach database ? as work")
            .bind(work.to_string_lossy().into_owned())
            .execute(&mut *rec.conn)
            .await?;
        let started = std::time::Instant::now();
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *rec.conn).await?;
            let recorded = record_in(&mut tx, report, confirm_after, self).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(recorded)
        }
        .await;
        let transaction = started.elapsed();
        rec.set_back().await;
        let mut recorded = result?;
        recorded.transaction = transaction;
        Ok(recorded)
    }

    /// Returns the space of expired verdicts and checkpoints the write-ahead log (truncating it) after
    /// a recorded scan; how long it took. Logged either way ("write-ahead log checkpointed"); nothing
    /// depends on it, the error is for counting.
    pub async fn checkpoint(&self) -> Result<std::time::Duration, StoreError> {
        let started = std::time::Instant::now();
        match self.pool.acquire().await {
            Ok(mut conn) => {
                super::reclaim_and_checkpoint(&mut conn).await;
                let took = started.elapsed();
                tracing::info!(seconds = took.as_secs_f64(), "write-ahead log checkpointed");
                Ok(took)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not checkpoint the write-ahead log");
                Err(e.into())
            }
        }
    }
}

/// The connection that records a scan, while it is set up for it: the scan's working file attached, no
/// automatic checkpoint (the commit would otherwise copy the whole transaction into the database before
/// returning; [`Store::checkpoint`] does it after), and `synchronous = full`, so the commit syncs the log
/// and a recorded scan, whose notifications may go out at once, survives a power loss before the
/// checkpoint. Unless [`Recording::set_back`] restores the connection, it is closed rather than returned
/// to the pool, also when recording fails half-way, panics or is dropped.
struct Recording {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    set_back: bool,
}

impl Recording {
    /// Detaches the working file and restores the store's settings; a connection that cannot be set back
    /// is closed (logged).
    async fn set_back(&mut self) {
        // The store's settings: `synchronous = normal` (its connect options) and SQLite's default
        // automatic checkpoint, 1000 pages.
        const RESTORE: &str =
            "detach database work; pragma synchronous = normal; pragma wal_autocheckpoint = 1000";
        match sqlx::raw_sql(RESTORE).execute(&mut *self.conn).await {
            Ok(_) => self.set_back = true,
            Err(e) => tracing::warn!(
                error = %e,
                "could not set the recording connection back; it is closed"
            ),
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if !self.set_back {
            self.conn.close_on_drop();
        }
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Sqlite>;

/// The recording transaction's writes, in order.
async fn record_in(
    tx: &mut Tx<'_>,
    report: &ScanReport,
    confirm_after: std::time::Duration,
    store: &Store,
) -> Result<Recorded, StoreError> {
    write_scan(tx, report).await?;
    let seq = runs::number_scan(tx, &report.scan_id).await?;
    let new_healthy_held =
        super::lifecycle::new_healthy_hold_their_runs(report.finished_at, confirm_after);
    let tenants = || {
        report.tenants.iter().map(|t| TenantRuns {
            scan_id: &report.scan_id,
            tenant: t.tenant_id.as_str(),
            seq,
            new_healthy_held,
        })
    };
    for t in tenants() {
        runs::end_runs(tx, t).await?;
    }
    let newly_confirmed = apply_lifecycle(tx, report, confirm_after).await?;
    for t in tenants() {
        runs::start_runs(tx, t).await?;
    }
    runs::done(tx).await?;
    write_delta_links(tx, report).await?;
    runs::expire(tx, store.retain_scans).await?;
    super::roles::write(tx, report).await?;
    super::roles::write_dangling(tx, report, confirm_after).await?;
    let active =
        super::suppressions::active_in(tx, &store.config_suppressions, report.finished_at).await?;
    super::outbox::note_suppressed(tx).await?;
    let suppressions = super::suppressions::apply(tx, &active).await?;
    let newly_confirmed = unsuppressed(tx, report, newly_confirmed).await?;
    let notifications = super::outbox::enqueue(tx, report, &store.subscribers).await?
        + super::outbox::enqueue_reactivated(
            tx,
            &suppressions.reactivated_keys,
            &store.subscribers,
            report.finished_at,
        )
        .await?;
    Ok(Recorded {
        suppressions,
        newly_confirmed,
        notifications,
        ..Recorded::default()
    })
}

/// Of the findings that entered `confirmed`, per tenant, those no suppression covers: a suppressed
/// finding is counted as such, not as a new orphan to alert on.
async fn unsuppressed(
    tx: &mut Tx<'_>,
    report: &ScanReport,
    mut confirmed: BTreeMap<TenantId, u64>,
) -> Result<BTreeMap<TenantId, u64>, StoreError> {
    if confirmed.values().all(|n| *n == 0) {
        return Ok(confirmed);
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select h.tenant_id, count(*) from finding_history h
         join findings f on f.tenant_id = h.tenant_id and f.object_id = h.object_id
         where h.scan_id = ? and h.to_state = 'confirmed' and f.suppressed_by is null
         group by h.tenant_id",
    )
    .bind(&report.scan_id)
    .fetch_all(&mut **tx)
    .await?;
    for (tenant, n) in confirmed.iter_mut() {
        *n = rows
            .iter()
            .find(|(t, _)| t == tenant.as_str())
            .map_or(0, |r| u64::try_from(r.1).unwrap_or(0));
    }
    Ok(confirmed)
}

/// The scan's row (finishing the one `begin_scan` noted, if any) and its tenants' rows.
async fn write_scan(tx: &mut Tx<'_>, report: &ScanReport) -> Result<(), StoreError> {
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
            "insert into scan_tenants (scan_id, tenant_id, complete, identities, errors, requests, inventory_complete,
                 subscriptions_referenced, subscriptions_listed)
             values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&report.scan_id)
        .bind(t.tenant_id.as_str())
        .bind(t.complete)
        .bind(i64::try_from(t.identities).unwrap_or(i64::MAX))
        .bind(serde_json::to_string(&t.errors).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&t.requests).unwrap_or_else(|_| "{}".into()))
        .bind(t.inventory_complete)
        .bind(
            t.subscription_coverage
                .map(|c| i64::try_from(c.referenced).unwrap_or(i64::MAX)),
        )
        .bind(
            t.subscription_coverage
                .map(|c| i64::try_from(c.listed).unwrap_or(i64::MAX)),
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The Graph delta link of each tenant whose inventory was complete.
async fn write_delta_links(tx: &mut Tx<'_>, report: &ScanReport) -> Result<(), StoreError> {
    // The delta link goes with the inventory it continues: only a complete one, in this transaction.
    for t in report.tenants.iter().filter(|t| t.inventory_complete) {
        if let (Some(link), Some(at)) = (&t.delta_link, t.full_sync_at) {
            sqlx::query(
                "insert into graph_delta (tenant_id, delta_link, full_sync_at) values (?, ?, ?)
                 on conflict (tenant_id) do update set delta_link = excluded.delta_link,
                     full_sync_at = excluded.full_sync_at",
            )
            .bind(t.tenant_id.as_str())
            .bind(link)
            .bind(at.to_rfc3339())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Reason, Verdict};
    use crate::store::fixtures::report;
    use chrono::Utc;
    use sqlx::SqlitePool;

    #[sqlx::test]
    async fn only_the_newest_scans_keep_their_verdicts(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store");
        let t0 = Utc::now() - chrono::Duration::hours(100);
        let n = i64::from(crate::config::DEFAULT_RETAIN_SCANS) + 2;
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

    /// After each recorded scan the write-ahead log is empty, and the pages of expired verdicts go back
    /// to the file system.
    #[tokio::test]
    async fn the_log_is_truncated_and_expired_verdicts_give_their_space_back() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("t.db");
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let store = Store::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("db")
            .retaining(1);
        // Every identity changes verdict every scan: each scan writes a run per identity, and the
        // previous scan's runs expire with it.
        let listed = |n: i64| {
            (0..2000)
                .map(|i| {
                    let (v, r) = if (i + n) % 2 == 0 {
                        (Verdict::Healthy, Reason::ResourcePresent)
                    } else {
                        (Verdict::Unknown, Reason::AccessDenied)
                    };
                    let mut f = crate::store::fixtures::finding(&format!("id{i:05}"), v, r);
                    f.detail = "x".repeat(300);
                    f
                })
                .collect::<Vec<_>>()
        };
        let mut sizes = Vec::new();
        for n in 0..6 {
            let r = crate::store::fixtures::scan(&format!("s{n}"), n, listed(n), true);
            store
                .record_scan(&r, std::time::Duration::ZERO)
                .await
                .expect("recorded");
            assert_eq!(size(&dir.path().join("t.db-wal")), 0, "scan {n}");
            sizes.push(size(&db));
        }
        // Two scans' runs at most (the current ones, and those that ended with the kept scan): the file
        // stops growing once the first runs expire.
        assert!(sizes[5] <= sizes[2], "{sizes:?}");
        let free: i64 = sqlx::query_scalar("pragma freelist_count")
            .fetch_one(store.pool())
            .await
            .expect("freelist");
        assert_eq!(free, 0);
    }

    /// A database made by an earlier version (no auto-vacuum) is converted once, when opened.
    #[sqlx::test(migrations = false)]
    async fn an_existing_database_is_converted_to_incremental_vacuum(pool: SqlitePool) {
        let mode = |pool: SqlitePool| async move {
            let mut conn = pool.acquire().await.expect("conn");
            crate::store::auto_vacuum(&mut conn).await.expect("mode")
        };
        crate::store::MIGRATOR
            .run_to(5, &pool)
            .await
            .expect("schema 5");
        assert_eq!(mode(pool.clone()).await, 0);
        let store = Store::from_pool(pool.clone()).await.expect("store");
        assert_eq!(mode(pool).await, 2);
        store
            .record_scan(&report("s1", true), std::time::Duration::ZERO)
            .await
            .expect("recorded");
    }

    /// Recording sets its connection up (working file attached, no automatic checkpoint, full sync):
    /// whether the record succeeds or fails, every connection of the pool has the store's settings after.
    #[tokio::test]
    async fn the_recording_connection_goes_back_with_the_store_settings() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .expect("store");
        let ok = report("ok", true);
        let mut dup = report("dup", true);
        dup.findings.push(dup.findings[0].clone());
        for (r, fails) in [(&ok, false), (&dup, true)] {
            let recorded = store.record_scan(r, std::time::Duration::ZERO).await;
            assert_eq!(recorded.is_err(), fails, "{}", r.scan_id);
            let mut held = Vec::new();
            for _ in 0..store.pool().size() {
                held.push(store.pool().acquire().await.expect("connection"));
            }
            for conn in &mut held {
                let auto: i64 = sqlx::query_scalar("pragma wal_autocheckpoint")
                    .fetch_one(&mut **conn)
                    .await
                    .expect("autocheckpoint");
                let sync: i64 = sqlx::query_scalar("pragma synchronous")
                    .fetch_one(&mut **conn)
                    .await
                    .expect("synchronous");
                let names: Vec<String> =
                    sqlx::query_scalar("select name from pragma_database_list")
                        .fetch_all(&mut **conn)
                        .await
                        .expect("databases");
                assert_eq!((auto, sync), (1000, 1), "after {}", r.scan_id);
                assert!(!names.iter().any(|n| n == "work"), "{names:?}");
            }
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
/// Commit time and size of large scans (run: `cargo test --release --lib store::record::timing -- --ignored
/// --nocapture`; sizes with `MIAUDIT_TIMING_SIZES=100000,1000000`). Realistic rows: GUID ids, Resource
/// Graph evidence with a request id per page of 1,000 and a check time, both new every scan (as in a real
/// repeat scan of an unchanged tenant), 0.5 % orphans.
#[cfg(test)]
mod timing {
    use super::*;
    use crate::domain::{
        EvidenceReport, EvidenceSource, IdentityType, Reason, Summary, Trigger, Verdict,
    };
    use crate::report::TenantReport;
    use chrono::Utc;

    fn guid(a: u64, b: u64) -> String {
        let x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        let y = x.rotate_left(29).wrapping_mul(0x1656_67B1_9E37_79F9);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            x >> 32,
            (x >> 16) & 0xffff,
            x & 0xffff,
            y >> 48,
            y & 0xffff_ffff_ffff
        )
    }

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn report(n: usize, id: &str, round: u64) -> ScanReport {
        let now = Utc::now();
        let findings = (0..n)
            .map(|i| {
                let orphan = i % 200 == 0;
                let sub = guid(7, (i % 50) as u64);
                Finding {
                    tenant_id: TENANT.into(),
                    object_id: guid(1, i as u64).into(),
                    app_id: guid(2, i as u64),
                    display_name: format!("vm-prod-weu-{i:06}"),
                    identity_type: IdentityType::SystemAssigned,
                    resource_id: Some(format!(
                        "/subscriptions/{sub}/resourceGroups/rg-app-{:03}/providers/Microsoft.Compute/virtualMachines/vm-prod-weu-{i:06}",
                        i % 300
                    )),
                    subscription_id: Some(sub.into()),
                    resource_type: Some("microsoft.compute/virtualmachines".into()),
                    verdict: if orphan { Verdict::Orphaned } else { Verdict::Healthy },
                    reason: if orphan { Reason::ResourceNotFound } else { Reason::ResourcePresent },
                    detail: if orphan {
                        "the resource does not exist (ARM 404 ResourceNotFound)".into()
                    } else {
                        "the resource exists and carries this identity".into()
                    },
                    evidence: EvidenceReport {
                        source: if orphan { EvidenceSource::Arm } else { EvidenceSource::ResourceGraph },
                        status: Some(if orphan { 404 } else { 200 }),
                        code: orphan.then(|| "ResourceNotFound".into()),
                        request_id: Some(guid(3 + round, (i / 1000) as u64)),
                        correlation_request_id: orphan.then(|| guid(4 + round, i as u64)),
                        checked_at: Some(now),
                    },
                }
            })
            .collect();
        ScanReport {
            scan_id: id.into(),
            started_at: now,
            finished_at: now,
            complete: true,
            trigger: Trigger::Cli,
            tenants: vec![TenantReport {
                unjudged: 0,
                summary: Summary::default(),
                arm_checks: 0,
                staging_failed: false,
                subscription_coverage: None,
                role_assignments: None,
                dangling: None,
                tenant_id: TENANT.into(),
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

    fn size(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    #[tokio::test]
    #[ignore = "timing, run by hand"]
    async fn commit_time_by_size() {
        let sizes: Vec<usize> = std::env::var("MIAUDIT_TIMING_SIZES")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![10_000, 100_000]);
        let rounds: u64 = std::env::var("MIAUDIT_TIMING_SCANS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(11);
        for n in sizes {
            let dir = tempfile::tempdir().expect("dir");
            let db = dir.path().join("t.db");
            let wal = dir.path().join("t.db-wal");
            let store = Store::connect(&format!("sqlite://{}", db.display()))
                .await
                .expect("db");
            for round in 0..rounds {
                let r = report(n, &format!("s{round}"), round);
                let t = std::time::Instant::now();
                let recorded = store
                    .record_scan(&r, std::time::Duration::ZERO)
                    .await
                    .expect("recorded");
                println!(
                    "{n} identities, scan {round}: transaction {:.2} s, checkpoint {:.2} s, record {:.2} s (staging the report included); database {:.0} B/identity, WAL {} B",
                    recorded.transaction.as_secs_f64(),
                    recorded.checkpoint.as_secs_f64(),
                    t.elapsed().as_secs_f64(),
                    size(&db) as f64 / n as f64,
                    size(&wal),
                );
            }
            let tables: Vec<(String, i64)> = sqlx::query_as(
                "select name, sum(pgsize) from dbstat group by name order by 2 desc",
            )
            .fetch_all(store.pool())
            .await
            .expect("dbstat");
            for (name, bytes) in tables {
                println!("  {name}: {:.0} B/identity", bytes as f64 / n as f64);
            }
            store.close().await;
        }
    }
}
