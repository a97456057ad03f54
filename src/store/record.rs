//! Recording a finished scan in one transaction: its row and its tenants, every verdict (read from the
//! scan's working database, attached), the lifecycle changes the verdicts cause (`lifecycle`), the
//! Graph delta links of complete inventories, and the retention of older scans' verdicts. A crash
//! mid-write leaves the previous state intact.

use super::lifecycle::apply_lifecycle;
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
    /// How long the recording transaction took (begin to commit).
    pub transaction: std::time::Duration,
}

/// How many scans keep their per-identity verdicts; older scans keep their summary rows only.
pub const KEEP_SCAN_VERDICTS: i64 = 20;

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
    /// for this store); without one, the report's own findings are every verdict.
    pub async fn record_scan_from(
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
            let recorded = record_in(&mut tx, report, confirm_after).await?;
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
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Sqlite>;

/// The recording transaction's writes, in order.
async fn record_in(
    tx: &mut Tx<'_>,
    report: &ScanReport,
    confirm_after: std::time::Duration,
) -> Result<Recorded, StoreError> {
    write_scan(tx, report).await?;
    copy_verdicts(tx, &report.scan_id).await?;
    let newly_confirmed = apply_lifecycle(tx, report, confirm_after).await?;
    write_delta_links(tx, report).await?;
    drop_old_verdicts(tx).await?;
    Ok(Recorded {
        newly_confirmed,
        ..Recorded::default()
    })
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
            "insert into scan_tenants (scan_id, tenant_id, complete, identities, errors, requests, inventory_complete)
             values (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&report.scan_id)
        .bind(t.tenant_id.as_str())
        .bind(t.complete)
        .bind(i64::try_from(t.identities).unwrap_or(i64::MAX))
        .bind(serde_json::to_string(&t.errors).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&t.requests).unwrap_or_else(|_| "{}".into()))
        .bind(t.inventory_complete)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Every verdict of the scan, from its working database (attached as `work`).
async fn copy_verdicts(tx: &mut Tx<'_>, scan_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "insert into scan_verdicts (scan_id, tenant_id, object_id, app_id, display_name, identity_type,
             resource_id, subscription_id, resource_type, verdict, reason, detail, evidence)
         select scan_id, tenant_id, object_id, app_id, display_name, identity_type, resource_id,
             subscription_id, resource_type, verdict, reason, detail, evidence
         from work.scan_results where scan_id = ? order by tenant_id, object_key",
    )
    .bind(scan_id)
    .execute(&mut **tx)
    .await?;
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

/// Drops the verdicts of the scans beyond the newest [`KEEP_SCAN_VERDICTS`].
async fn drop_old_verdicts(tx: &mut Tx<'_>) -> Result<(), StoreError> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::report;
    use chrono::Utc;
    use sqlx::SqlitePool;

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
/// Commit time of large scans (run: `cargo test --release --lib store::record::timing -- --ignored --nocapture`).
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
                object_id: format!("{:016x}-0000-0000-0000", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).into(),
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
