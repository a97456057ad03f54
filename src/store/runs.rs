//! The per-scan verdicts, kept as runs (migration 0007): the scans of a tenant, one after another, that
//! listed an identity with the same verdict — identity columns, verdict, reason, detail, and the evidence
//! but for the request ids and check time every scan renews. An unchanged identity costs no write per
//! scan; a change, an appearance or a disappearance costs one row.
//!
//! A current run is held by the identity's findings row (`findings.run_since`, the seq of its first
//! scan) when the row has exactly the run's columns, which is the usual case; otherwise, and once it has
//! ended, by a row of `verdict_runs`. Recording a scan, inside its transaction: [`end_runs`] before the
//! lifecycle rewrites the findings rows (a run the row held is copied out first), [`start_runs`] after
//! it, and [`expire`] at the end. The verdicts of a scan are read back through the view
//! `scan_verdicts`.

use super::StoreError;
use sqlx::{Sqlite, Transaction};

type Tx<'c> = Transaction<'c, Sqlite>;

/// The columns of a run, in `verdict_runs`, `findings` and `work.scan_results` alike.
const COLUMNS: &str = "object_id, app_id, display_name, identity_type, resource_id, subscription_id, \
     resource_type, verdict, reason, detail, evidence";

/// SQL: the rows `a` and `b` have the same run columns. `is` compares nulls as values; the cheap
/// comparisons come first (SQLite stops at the first that fails).
fn same(a: &str, b: &str) -> String {
    let substance = |t: &str| {
        format!(
            "json_remove({t}.evidence, '$.request_id', '$.correlation_request_id', '$.checked_at')"
        )
    };
    let mut sql: String = [
        "verdict",
        "reason",
        "identity_type",
        "object_id",
        "app_id",
        "display_name",
        "resource_id",
        "subscription_id",
        "resource_type",
        "detail",
    ]
    .iter()
    .map(|c| format!("{a}.{c} is {b}.{c} and "))
    .collect();
    sql.push_str(&format!("{} is {}", substance(a), substance(b)));
    sql
}

/// One tenant of the scan being recorded.
#[derive(Clone, Copy)]
pub(super) struct TenantRuns<'a> {
    pub scan_id: &'a str,
    pub tenant: &'a str,
    /// This scan's seq.
    pub seq: i64,
    /// The lifecycle inserts the identities new to the tenant and judged healthy with their run held
    /// by the row ([`super::lifecycle::new_healthy_hold_their_runs`]): they are left out of the runs
    /// gathered (at a first scan, nearly every identity: three passes over all of them saved).
    pub new_healthy_held: bool,
}

/// Numbers the scan being recorded (its `scans` row written): the next seq in recording order.
pub(super) async fn number_scan(tx: &mut Tx<'_>, scan_id: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "update scans set seq = (select coalesce(max(seq), 0) + 1 from scans) where scan_id = ?
         returning seq",
    )
    .bind(scan_id)
    .fetch_one(&mut **tx)
    .await?)
}

/// Before the lifecycle: ends the current runs of the tenant's identities that this scan lists with
/// another verdict or does not list, and gathers into `temp.run_keys` every identity that starts a run
/// in this scan (`listed`) or ended one (`ended`). [`start_runs`] reads them after the lifecycle and
/// [`done`] drops them.
pub(super) async fn end_runs(tx: &mut Tx<'_>, scan: TenantRuns<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "create temp table if not exists run_keys (tenant_id text not null, object_key text not null,
             listed integer not null, ended integer not null, primary key (tenant_id, object_key))
             without rowid",
    )
    .execute(&mut **tx)
    .await?;
    // Listed, and not in a current run with the same columns (new, changed, or back); but for the new
    // healthy identities whose rows the lifecycle inserts holding their runs (`findings.run_since` set
    // when the object id is lower-case, the condition here), which have no run to end either.
    let changed = format!(
        "insert or ignore into temp.run_keys (tenant_id, object_key, listed, ended)
         select r.tenant_id, r.object_key, 1, f.run_since is not null or o.since is not null
         from work.scan_results r
         left join findings f on f.tenant_id = r.tenant_id and f.object_id = r.object_key
         left join verdict_runs o on o.tenant_id = r.tenant_id and o.object_key = r.object_key and o.until is null
         where r.scan_id = ?1 and r.tenant_id = ?2
           and not (f.run_since is not null and {})
           and not (o.since is not null and {})
           and not (?3 and f.object_id is null and o.since is null
                    and r.verdict = 'healthy' and r.object_id = r.object_key)",
        same("r", "f"),
        same("r", "o"),
    );
    sqlx::query(sqlx::AssertSqlSafe(changed))
        .bind(scan.scan_id)
        .bind(scan.tenant)
        .bind(scan.new_healthy_held)
        .execute(&mut **tx)
        .await?;
    // In a current run, and not listed (gone, or missing from an incomplete inventory).
    sqlx::query(
        "insert or ignore into temp.run_keys (tenant_id, object_key, listed, ended)
         select f.tenant_id, f.object_id, 0, 1 from findings f
         where f.tenant_id = ?2 and f.run_since is not null and not exists (
             select 1 from work.scan_results r
             where r.scan_id = ?1 and r.tenant_id = ?2 and r.object_key = f.object_id)
         union all
         select o.tenant_id, o.object_key, 0, 1 from verdict_runs o
         where o.tenant_id = ?2 and o.until is null and not exists (
             select 1 from work.scan_results r
             where r.scan_id = ?1 and r.tenant_id = ?2 and r.object_key = o.object_key)",
    )
    .bind(scan.scan_id)
    .bind(scan.tenant)
    .execute(&mut **tx)
    .await?;
    // The ended runs' last scan: the tenant's previous numbered scan (0 when its scans have expired:
    // the run then ends before every kept scan).
    let last: i64 = sqlx::query_scalar(
        "select coalesce(max(s.seq), 0) from scans s join scan_tenants t on t.scan_id = s.scan_id
         where t.tenant_id = ? and s.seq < ?",
    )
    .bind(scan.tenant)
    .bind(scan.seq)
    .fetch_one(&mut **tx)
    .await?;
    // Runs the findings rows held are copied out before the lifecycle rewrites the rows.
    let copy = format!(
        "insert into verdict_runs (tenant_id, object_key, since, until, {COLUMNS})
         select f.tenant_id, f.object_id, f.run_since, ?2, {}
         from temp.run_keys k
         cross join findings f on f.tenant_id = k.tenant_id and f.object_id = k.object_key
         where k.tenant_id = ?1 and k.ended and f.run_since is not null",
        prefixed("f")
    );
    sqlx::query(sqlx::AssertSqlSafe(copy))
        .bind(scan.tenant)
        .bind(last)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "update findings set run_since = null
         where tenant_id = ?1 and run_since is not null
           and object_id in (select object_key from temp.run_keys where tenant_id = ?1 and ended)",
    )
    .bind(scan.tenant)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "update verdict_runs set until = ?2
         where tenant_id = ?1 and until is null
           and object_key in (select object_key from temp.run_keys where tenant_id = ?1 and ended)",
    )
    .bind(scan.tenant)
    .bind(last)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// After the lifecycle: starts the runs [`end_runs`] gathered, held by the findings row when it has the
/// scan's columns, else by a row of its own.
pub(super) async fn start_runs(tx: &mut Tx<'_>, scan: TenantRuns<'_>) -> Result<(), StoreError> {
    let held = format!(
        "update findings set run_since = ?3
         where tenant_id = ?2 and run_since is null
           and object_id in (select object_key from temp.run_keys where tenant_id = ?2 and listed)
           and exists (select 1 from work.scan_results r
                       where r.scan_id = ?1 and r.tenant_id = ?2 and r.object_key = findings.object_id
                         and {})",
        same("r", "findings")
    );
    sqlx::query(sqlx::AssertSqlSafe(held))
        .bind(scan.scan_id)
        .bind(scan.tenant)
        .bind(scan.seq)
        .execute(&mut **tx)
        .await?;
    let own = format!(
        "insert into verdict_runs (tenant_id, object_key, since, until, {COLUMNS})
         select r.tenant_id, r.object_key, ?3, null, {}
         from temp.run_keys k
         -- From the keys (few, after a first scan) to their verdicts, not the other way round.
         cross join work.scan_results r
             on r.scan_id = ?1 and r.tenant_id = k.tenant_id and r.object_key = k.object_key
         where k.tenant_id = ?2 and k.listed and not exists (select 1 from findings f
             where f.tenant_id = ?2 and f.object_id = k.object_key and f.run_since = ?3)",
        prefixed("r")
    );
    sqlx::query(sqlx::AssertSqlSafe(own))
        .bind(scan.scan_id)
        .bind(scan.tenant)
        .bind(scan.seq)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Drops `temp.run_keys` once every tenant's runs are started (a failed transaction rolls its creation
/// back with everything else).
pub(super) async fn done(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    sqlx::query("drop table if exists temp.run_keys")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Keeps the verdicts of the newest `retain` recorded scans: the older ones lose their seq, and the
/// runs that ended before the oldest kept scan are deleted.
pub(super) async fn expire(tx: &mut Tx<'_>, retain: u32) -> Result<(), StoreError> {
    sqlx::query(
        "update scans set seq = null
         where seq <= (select seq from scans where seq is not null order by seq desc limit 1 offset ?)",
    )
    .bind(i64::from(retain))
    .execute(&mut **tx)
    .await?;
    sqlx::query("delete from verdict_runs where until < (select coalesce(min(seq), 0) from scans)")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// [`COLUMNS`] of the table aliased `t`.
fn prefixed(t: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("{t}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use crate::domain::{Finding, Reason, Verdict};
    use crate::report::{ScanReport, TenantReport};
    use crate::store::Store;
    use crate::store::fixtures::{TWO_H, finding, scan};
    use sqlx::SqlitePool;

    /// A finding's verdict as a scan of unchanged identities may show it: the request ids and check
    /// time are those of the answer the stored run holds.
    fn substance(mut f: Finding) -> Finding {
        f.evidence.request_id = None;
        f.evidence.correlation_request_id = None;
        f.evidence.checked_at = None;
        f
    }

    const VERDICTS: [(Verdict, Reason); 4] = [
        (Verdict::Healthy, Reason::ResourcePresent),
        (Verdict::Orphaned, Reason::ResourceNotFound),
        (Verdict::Unknown, Reason::CheckFailed),
        (Verdict::Unknown, Reason::AccessDenied),
    ];

    /// Two tenants, `ta` and `tb`, whose identities change at random between scans: they appear,
    /// change verdict, reason, name, detail or evidence, disappear and come back, go missing from
    /// incomplete inventories; some have upper-case object ids. Every scan renews the request ids.
    struct Tenants {
        rng: fastrand::Rng,
        /// Per tenant and identity: present?, verdict index, name and detail, evidence status.
        identities: Vec<Vec<(bool, usize, u32, u16)>>,
        scans: i64,
    }

    impl Tenants {
        fn new(seed: u64) -> Self {
            Self {
                rng: fastrand::Rng::with_seed(seed),
                identities: vec![vec![(false, 0, 0, 404); 24]; 2],
                scans: 0,
            }
        }

        fn next_scan(&mut self) -> ScanReport {
            let n = self.scans;
            self.scans += 1;
            let id = format!("s{n:02}");
            let mut r = scan(&id, n, Vec::new(), true);
            r.tenants.clear();
            for (tenant, identities) in ["ta", "tb"].into_iter().zip(&mut self.identities) {
                let rng = &mut self.rng;
                for (present, v, name, status) in identities.iter_mut() {
                    // Mostly unchanged.
                    match rng.u32(0..20) {
                        0 => *present = !*present,
                        1 => *v = rng.usize(0..VERDICTS.len()),
                        2 => *name = (*name + 1) % 4,
                        3 => *status = if *status == 404 { 410 } else { 404 },
                        _ if n == 0 => *present = rng.bool(),
                        _ => {}
                    }
                }
                let complete = rng.u32(0..6) != 0;
                let mut listed = 0;
                for (i, &(present, v, name, status)) in identities.iter().enumerate() {
                    // An incomplete inventory misses some.
                    if !present || !(complete || rng.bool()) {
                        continue;
                    }
                    let id = if i % 5 == 0 {
                        format!("ID{i:02}")
                    } else {
                        format!("id{i:02}")
                    };
                    let mut f = finding(&id, VERDICTS[v].0, VERDICTS[v].1);
                    f.tenant_id = tenant.into();
                    f.display_name = format!("name-{i}-{}", name / 2);
                    f.detail = format!("detail {}", name % 2);
                    f.evidence.status = Some(status);
                    f.evidence.request_id = Some(format!("req-{n}-{i}"));
                    r.findings.push(f);
                    listed += 1;
                }
                let mut t = TenantReport::new(&tenant.into());
                t.inventory_complete = complete;
                t.complete = complete;
                t.identities = listed;
                r.complete &= complete;
                r.tenants.push(t);
            }
            r.findings
                .sort_by(|a, b| (&a.tenant_id, &a.object_id).cmp(&(&b.tenant_id, &b.object_id)));
            r
        }
    }

    /// Every scan of `said` whose verdicts are kept (the newest `kept`) reads back as its verdicts;
    /// older ones read back none.
    async fn check_read_back(store: &Store, said: &[ScanReport], kept: usize) {
        for (k, r) in said.iter().enumerate() {
            let back = store.load_verdicts(&r.scan_id).await.expect("verdicts");
            if k + kept < said.len() {
                assert!(back.is_empty(), "scan {} expired", r.scan_id);
                continue;
            }
            let want: Vec<Finding> = r.findings.iter().cloned().map(substance).collect();
            let got: Vec<Finding> = back.into_iter().map(substance).collect();
            assert_eq!(
                got,
                want,
                "scan {} read back after {}",
                r.scan_id,
                said.len()
            );
        }
    }

    #[sqlx::test]
    async fn every_kept_scan_reads_back_its_own_verdicts(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store").retaining(6);
        let mut tenants = Tenants::new(12);
        let mut said = Vec::new();
        for _ in 0..40 {
            let r = tenants.next_scan();
            store.record_scan(&r, TWO_H).await.expect("recorded");
            said.push(r);
            check_read_back(&store, &said, 6).await;
        }
    }

    /// A database of the previous schema, which kept every verdict of the newest scans in a table,
    /// reads back the same verdicts once migrated, and records further scans as runs.
    #[sqlx::test(migrations = false)]
    async fn kept_verdicts_of_the_previous_schema_become_runs(pool: SqlitePool) {
        // The scans as the previous version recorded them: the findings as this version writes them
        // (the same columns), every verdict of the newest eight scans in `scan_verdicts`.
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("new.db");
        let new = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("store");
        let mut tenants = Tenants::new(7);
        let mut said = Vec::new();
        for _ in 0..12 {
            let r = tenants.next_scan();
            new.record_scan(&r, TWO_H).await.expect("recorded");
            said.push(r);
        }
        new.close().await;
        crate::store::MIGRATOR
            .run_to(5, &pool)
            .await
            .expect("schema 5");
        let mut conn = pool.acquire().await.expect("conn");
        sqlx::query("attach database ? as new")
            .bind(path.to_string_lossy().into_owned())
            .execute(&mut *conn)
            .await
            .expect("attach");
        for copy in [
            "insert into scans select scan_id, started_at, finished_at, complete, trigger, total, healthy,
                 orphaned, unknown, outcome from new.scans",
            "insert into scan_tenants select scan_id, tenant_id, complete, identities, errors, requests,
                 inventory_complete from new.scan_tenants",
            "insert into tenant_inventory select * from new.tenant_inventory",
            "insert into finding_history select * from new.finding_history",
            "insert into findings select tenant_id, object_id, app_id, display_name, identity_type,
                 resource_id, subscription_id, resource_type, verdict, reason, detail, evidence, state,
                 episode, resolution, ticket, note, first_detected_at, last_orphaned_at, confirmed_at,
                 resolved_at, last_seen_at, last_scan_id from new.findings",
        ] {
            sqlx::query(copy).execute(&mut *conn).await.expect(copy);
        }
        sqlx::query("detach database new")
            .execute(&mut *conn)
            .await
            .expect("detach");
        for r in &said[4..] {
            for f in &r.findings {
                let q = sqlx::query(
                    "insert into scan_verdicts (scan_id, tenant_id, object_id, app_id, display_name,
                         identity_type, resource_id, subscription_id, resource_type, verdict, reason,
                         detail, evidence)
                     values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&r.scan_id)
                .bind(f.tenant_id.as_str())
                .bind(f.object_id.as_str());
                crate::store::rows::bind_finding_columns(q, f)
                    .execute(&mut *conn)
                    .await
                    .expect("verdict");
            }
        }
        drop(conn);
        let store = Store::from_pool(pool).await.expect("migrated").retaining(8);
        check_read_back(&store, &said, 8).await;
        for _ in 0..12 {
            let r = tenants.next_scan();
            store.record_scan(&r, TWO_H).await.expect("recorded");
            said.push(r);
            check_read_back(&store, &said, 8).await;
        }
    }
    /// Scans that change nothing write no run, and the verdict counts come from the current runs.
    #[sqlx::test]
    async fn an_unchanged_identity_costs_no_row_per_scan(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store");
        let listed = |n: usize| {
            let mut v = vec![
                finding("o1", Verdict::Orphaned, Reason::ResourceNotFound),
                finding("u1", Verdict::Unknown, Reason::AccessDenied),
                finding("h1", Verdict::Healthy, Reason::ResourcePresent),
                finding("h2", Verdict::Healthy, Reason::ResourcePresent),
            ];
            for f in &mut v {
                f.evidence.request_id = Some(format!("req-{n}"));
            }
            v
        };
        let rows = || async {
            let n: i64 = sqlx::query_scalar("select count(*) from verdict_runs")
                .fetch_one(store.pool())
                .await
                .expect("count");
            n
        };
        store
            .record_scan(&scan("s0", 0, listed(0), true), TWO_H)
            .await
            .expect("s0");
        let first = rows().await;
        assert_eq!(first, 0, "every run is held by its findings row");
        for n in 1..5 {
            store
                .record_scan(&scan(&format!("s{n}"), n, listed(n as usize), true), TWO_H)
                .await
                .expect("recorded");
        }
        assert_eq!(rows().await, first);
        assert_eq!(store.load_verdicts("s0").await.expect("s0").len(), 4);
        let mut counts = store.latest_verdict_counts().await.expect("counts");
        counts.sort_by_key(|c| c.1.as_str());
        assert_eq!(
            counts.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(),
            [
                (Verdict::Healthy, 2),
                (Verdict::Orphaned, 1),
                (Verdict::Unknown, 1)
            ]
        );
    }
}
