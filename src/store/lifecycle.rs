//! The store side of the findings' lifecycle: a recorded scan's verdicts, and the identities it no longer
//! lists, go through the pure decision ([`crate::lifecycle::advance`]) into the findings and their
//! history, inside the scan's transaction. Each step is loaded, decided and written by a function of its
//! own; the row writes themselves are `findings`'.

use super::StoreError;
use super::findings::{upsert_findings, write_history, write_lifecycle};
use super::rows::{bind_tracked, finding_columns, id, tracked_of};
use super::work::CHUNK;
use crate::domain::{Finding, ObjectId, Reason, TenantId, Verdict};
use crate::lifecycle::{self, Observation, Step, Tracked};
use crate::report::ScanReport;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};
use std::collections::BTreeMap;
use std::time::Duration;

/// One tenant of a scan being recorded: what every lifecycle read and write of it needs.
#[derive(Clone, Copy)]
struct TenantScan<'a> {
    scan_id: &'a str,
    tenant: &'a TenantId,
    /// The scan's finish time: the time of every change it causes.
    now: DateTime<Utc>,
    confirm_after: Duration,
}

impl TenantScan<'_> {
    /// The pure lifecycle decision for one identity, at this scan's time.
    fn advance(&self, prev: Option<&Tracked>, obs: Observation) -> Step {
        lifecycle::advance(prev, obs, self.now, self.confirm_after)
    }
}

/// Applies one scan to the findings of every tenant it covered; returns, per tenant, how many findings
/// entered `confirmed`.
pub(super) async fn apply_lifecycle(
    tx: &mut Transaction<'_, Sqlite>,
    report: &ScanReport,
    confirm_after: Duration,
) -> Result<BTreeMap<TenantId, u64>, StoreError> {
    let mut newly_confirmed = BTreeMap::new();
    for tenant in &report.tenants {
        let scan = TenantScan {
            scan_id: &report.scan_id,
            tenant: &tenant.tenant_id,
            now: report.finished_at,
            confirm_after,
        };
        // Whether the tenant had rows that can be absent before this scan's: without any (its first
        // scan), every row after the lifecycle is one the scan listed, and absence is not looked for.
        let had_rows: bool = sqlx::query_scalar(
            "select exists (select 1 from findings where tenant_id = ? and state is not 'resolved')",
        )
        .bind(scan.tenant.as_str())
        .fetch_one(&mut **tx)
        .await?;
        insert_new_healthy(tx, scan).await?;
        let confirmed = apply_verdicts(tx, scan).await?;
        // Only a complete inventory tells which identities are gone; after an incomplete one the
        // lifecycle leaves the absent ones as they are, so they are not read.
        if tenant.inventory_complete {
            if had_rows {
                apply_absence(tx, scan).await?;
            }
            note_inventory(tx, scan).await?;
        }
        newly_confirmed.insert(tenant.tenant_id.clone(), confirmed);
    }
    Ok(newly_confirmed)
}

/// A verdict of the scan with its identity's stored row, if it has one.
struct Judged {
    finding: Finding,
    stored: Option<Stored>,
}

/// An identity's stored lifecycle, verdict and reason.
struct Stored {
    tracked: Tracked,
    verdict: String,
    reason: String,
}

impl Judged {
    fn prev(&self) -> Option<&Tracked> {
        self.stored.as_ref().map(|s| &s.tracked)
    }

    fn observation(&self) -> Observation {
        Observation::Judged {
            verdict: self.finding.verdict,
            reason: self.finding.reason,
        }
    }
}

/// The scan's verdicts of the tenant through the lifecycle, a chunk at a time, each with the stored
/// lifecycle and (verdict, reason) of its identity, so neither the verdicts nor the findings are ever all
/// in memory; only identities that may change are visited ([`mark_changing`]). Returns how many findings
/// entered `confirmed`.
async fn apply_verdicts(
    tx: &mut Transaction<'_, Sqlite>,
    scan: TenantScan<'_>,
) -> Result<u64, StoreError> {
    mark_changing(tx, scan).await?;
    let mut confirmed = 0u64;
    let mut after = String::new();
    loop {
        let chunk = load_judged(tx, scan, &after).await?;
        let Some(last) = chunk.last() else { break };
        after = last.finding.object_id.to_string();
        let mut upserts = Upserts::default();
        for judged in chunk {
            let step = scan.advance(judged.prev(), judged.observation());
            let Some(next) = step.next.clone() else {
                continue;
            };
            confirmed += u64::from(step.newly_confirmed);
            write_judged(tx, scan, judged, &step, next, &mut upserts).await?;
        }
        // In key order already: the upserts walk the B-tree instead of jumping around it.
        upsert_findings(tx, &upserts.taking, true, scan.now, scan.scan_id).await?;
        upsert_findings(tx, &upserts.keeping, false, scan.now, scan.scan_id).await?;
    }
    sqlx::query("drop table temp.lifecycle_keys")
        .execute(&mut **tx)
        .await?;
    Ok(confirmed)
}

/// Gathers into `temp.lifecycle_keys` the identities whose verdict may change something: a verdict other
/// than healthy / resource_present now, or a stored row that is a finding or not healthy /
/// resource_present. Every other identity is healthy before and now and never a finding (new ones were
/// inserted just before, [`insert_new_healthy`]): the lifecycle leaves it unchanged and it needs no write
/// ([`Upsert::Skip`]; the test `a_healthy_identity_stays_unchanged` pins the lifecycle side). The keys
/// are gathered once, in this transaction's connection, rather than joining all 100k verdicts to the
/// findings.
async fn mark_changing(
    tx: &mut Transaction<'_, Sqlite>,
    scan: TenantScan<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "create temp table if not exists lifecycle_keys (object_key text primary key) without rowid",
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query("delete from temp.lifecycle_keys")
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "insert or ignore into temp.lifecycle_keys
         select object_key from work.scan_results
         where scan_id = ? and tenant_id = ? and (verdict != 'healthy' or reason != 'resource_present')
         union
         select object_id from findings
         where tenant_id = ? and (state is not null or verdict != 'healthy' or reason != 'resource_present')",
    )
    .bind(scan.scan_id)
    .bind(scan.tenant.as_str())
    .bind(scan.tenant.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The next chunk of the verdicts [`mark_changing`] gathered, after the object key `after`.
async fn load_judged(
    tx: &mut Transaction<'_, Sqlite>,
    scan: TenantScan<'_>,
    after: &str,
) -> Result<Vec<Judged>, StoreError> {
    let rows = sqlx::query(
        "select r.*, f.object_id as known, f.state, f.episode, f.resolution, f.ticket, f.note,
             f.first_detected_at, f.last_orphaned_at, f.confirmed_at, f.resolved_at,
             f.verdict as stored_verdict, f.reason as stored_reason
         from temp.lifecycle_keys k
         join work.scan_results r on r.scan_id = ? and r.tenant_id = ? and r.object_key = k.object_key
         left join findings f on f.tenant_id = r.tenant_id and f.object_id = r.object_key
         where k.object_key > ?
         order by k.object_key limit ?",
    )
    .bind(scan.scan_id)
    .bind(scan.tenant.as_str())
    .bind(after)
    .bind(CHUNK)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(judged_of).collect()
}

fn judged_of(r: &SqliteRow) -> Result<Judged, StoreError> {
    let known: Option<String> = r.try_get("known")?;
    let stored = match known {
        Some(_) => Some(Stored {
            tracked: tracked_of(r)?,
            verdict: r.try_get("stored_verdict")?,
            reason: r.try_get("stored_reason")?,
        }),
        None => None,
    };
    Ok(Judged {
        finding: finding_columns(r, "scan_results")?,
        stored,
    })
}

/// The rows of a chunk to upsert, by whether they take the scan's verdict.
#[derive(Default)]
struct Upserts {
    taking: Vec<(Finding, Tracked)>,
    keeping: Vec<(Finding, Tracked)>,
}

/// What a judged identity's row needs written.
#[derive(Debug, PartialEq)]
enum Upsert {
    /// Nothing: an unchanged healthy identity.
    Skip,
    /// Its lifecycle and the scan's verdict and evidence.
    WithVerdict,
    /// Its lifecycle; the stored (last authoritative) verdict and evidence stay.
    LifecycleOnly,
}

impl Upsert {
    fn of(judged: &Judged, step: &Step, next: &Tracked) -> Self {
        let f = &judged.finding;
        // An unchanged healthy identity needs no write: its last_seen_at is the tenant's inventory time
        // (tenant_inventory), its verdict and lifecycle are as stored.
        let unchanged_healthy = f.verdict == Verdict::Healthy
            && judged.stored.as_ref().is_some_and(|s| {
                s.tracked == *next
                    && s.verdict == f.verdict.as_str()
                    && s.reason == f.reason.as_str()
            });
        if unchanged_healthy {
            Self::Skip
        } else if step.take_verdict || judged.stored.is_none() {
            // A new identity always gets its columns, even from an unknown verdict.
            Self::WithVerdict
        } else {
            Self::LifecycleOnly
        }
    }
}

/// Writes one judged identity's step: its transition into the history now, its row (`next`) into
/// `upserts` for the chunk's statements.
async fn write_judged(
    tx: &mut Transaction<'_, Sqlite>,
    scan: TenantScan<'_>,
    judged: Judged,
    step: &Step,
    next: Tracked,
    upserts: &mut Upserts,
) -> Result<(), StoreError> {
    let object = &judged.finding.object_id;
    write_history(tx, scan.tenant, object, step, scan.now, Some(scan.scan_id)).await?;
    match Upsert::of(&judged, step, &next) {
        Upsert::Skip => {}
        Upsert::WithVerdict => upserts.taking.push((judged.finding, next)),
        Upsert::LifecycleOnly => upserts.keeping.push((judged.finding, next)),
    }
    Ok(())
}

/// Identities of earlier scans that this complete inventory did not list, a chunk at a time.
async fn apply_absence(
    tx: &mut Transaction<'_, Sqlite>,
    scan: TenantScan<'_>,
) -> Result<(), StoreError> {
    if !any_absent(tx, scan).await? {
        return Ok(());
    }
    let gone = Observation::Absent {
        inventory_complete: true,
    };
    let mut after = String::new();
    loop {
        let absent = load_absent(tx, scan, &after).await?;
        let Some((last, _)) = absent.last() else {
            break;
        };
        after = last.to_string();
        for (object, prev) in absent {
            let step = scan.advance(Some(&prev), gone);
            write_absent(tx, scan, &object, &step).await?;
        }
    }
    Ok(())
}

/// Whether any identity with a row is absent from the scan. Every identity of this scan has a row by
/// now, so the rows beyond the scan's count are the absent ones. Resolved rows kept for their history
/// change nothing when absent (the lifecycle leaves them), so only the others are counted; when none is
/// absent (the usual case) the anti-join over every row is skipped.
async fn any_absent(
    tx: &mut Transaction<'_, Sqlite>,
    scan: TenantScan<'_>,
) -> Result<bool, StoreError> {
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from findings where tenant_id = ? and state is not 'resolved'",
    )
    .bind(scan.tenant.as_str())
    .fetch_one(&mut **tx)
    .await?;
    let listed: i64 = sqlx::query_scalar(
        "select (select count(*) from work.scan_results where scan_id = ?1 and tenant_id = ?2)
              - (select count(*) from findings f join work.scan_results r
                   on r.scan_id = ?1 and r.tenant_id = f.tenant_id and r.object_key = f.object_id
                 where f.tenant_id = ?2 and f.state = 'resolved')",
    )
    .bind(scan.scan_id)
    .bind(scan.tenant.as_str())
    .fetch_one(&mut **tx)
    .await?;
    Ok(stored > listed)
}

/// The next chunk of unresolved rows the scan did not list, after the object id `after`, with their
/// lifecycle.
async fn load_absent(
    tx: &mut Transaction<'_, Sqlite>,
    scan: TenantScan<'_>,
    after: &str,
) -> Result<Vec<(ObjectId, Tracked)>, StoreError> {
    let rows = sqlx::query(
        "select f.* from findings f
         where f.tenant_id = ? and f.object_id > ? and f.state is not 'resolved' and not exists (
             select 1 from work.scan_results r
             where r.scan_id = ? and r.tenant_id = f.tenant_id and r.object_key = f.object_id)
         order by f.object_id limit ?",
    )
    .bind(scan.tenant.as_str())
    .bind(after)
    .bind(scan.scan_id)
    .bind(CHUNK)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| Ok((id(r, "object_id")?, tracked_of(r)?)))
        .collect()
}

/// Writes one absent identity's step: a row the lifecycle lets go is deleted, a transition is written
/// with its history, and anything else stays as stored.
async fn write_absent(
    tx: &mut Transaction<'_, Sqlite>,
    scan: TenantScan<'_>,
    object: &ObjectId,
    step: &Step,
) -> Result<(), StoreError> {
    match &step.next {
        None => {
            sqlx::query("delete from findings where tenant_id = ? and object_id = ?")
                .bind(scan.tenant.as_str())
                .bind(object.as_str())
                .execute(&mut **tx)
                .await?;
        }
        Some(next) if step.transition.is_some() => {
            write_lifecycle(tx, scan.tenant, object, next, Some(scan.scan_id)).await?;
            write_history(tx, scan.tenant, object, step, scan.now, Some(scan.scan_id)).await?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// Notes the tenant's complete inventory: the time its unchanged healthy rows were last seen.
async fn note_inventory(
    tx: &mut Transaction<'_, Sqlite>,
    scan: TenantScan<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into tenant_inventory (tenant_id, last_inventory_at, last_scan_id) values (?, ?, ?)
         on conflict (tenant_id) do update set last_inventory_at = excluded.last_inventory_at,
             last_scan_id = excluded.last_scan_id",
    )
    .bind(scan.tenant.as_str())
    .bind(scan.now.to_rfc3339())
    .bind(scan.scan_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The lifecycle of an identity new to the tenant and judged healthy, when it is the plain one (no
/// transition, nothing confirmed): the new healthy identities are then inserted in one statement
/// ([`insert_new_healthy`]).
fn fresh_healthy(now: DateTime<Utc>, confirm_after: Duration) -> Option<Tracked> {
    let fresh = lifecycle::advance(
        None,
        Observation::Judged {
            verdict: Verdict::Healthy,
            reason: Reason::ResourcePresent,
        },
        now,
        confirm_after,
    );
    match (fresh.next, fresh.transition, fresh.newly_confirmed) {
        (Some(t), None, false) => Some(t),
        _ => None,
    }
}

/// Whether recording a scan finished at `now` inserts the identities new to a tenant and judged healthy
/// with their run of verdicts already held by the row (`findings.run_since`, when the object id is
/// lower-case): ending and starting the runs of verdicts (`runs`) then leaves them out.
pub(super) fn new_healthy_hold_their_runs(now: DateTime<Utc>, confirm_after: Duration) -> bool {
    fresh_healthy(now, confirm_after).is_some()
}

/// Inserts, in one statement, every identity of the scan that is new to the tenant's findings and judged
/// healthy: at a first scan nearly all of them. The lifecycle gives each the same fresh state with no
/// transition (checked here, not assumed: otherwise they take the row-by-row path), and the row-by-row
/// pass then finds them stored and unchanged. 100k identities: ~0.4 s instead of ~2.5 s of bound rows.
async fn insert_new_healthy(
    tx: &mut Transaction<'_, Sqlite>,
    scan: TenantScan<'_>,
) -> Result<(), StoreError> {
    let Some(t) = fresh_healthy(scan.now, scan.confirm_after) else {
        return Ok(());
    };
    // A row that has exactly the scan's columns (its object id already lower-case) holds the run of
    // verdicts the identity starts in this scan (`runs`): its seq is set here rather than by a second
    // write of every new row.
    let q = sqlx::query(
        "insert into findings (tenant_id, object_id, app_id, display_name, identity_type, resource_id,
             subscription_id, resource_type, verdict, reason, detail, evidence, last_seen_at, last_scan_id,
             state, episode, resolution, ticket, note, first_detected_at, last_orphaned_at, confirmed_at,
             resolved_at, run_since)
         select r.tenant_id, r.object_key, r.app_id, r.display_name, r.identity_type, r.resource_id,
             r.subscription_id, r.resource_type, r.verdict, r.reason, r.detail, r.evidence, ?, ?,
             ?, ?, ?, ?, ?, ?, ?, ?, ?,
             case when r.object_id = r.object_key then (select seq from scans where scan_id = r.scan_id) end
         from work.scan_results r
         where r.scan_id = ? and r.tenant_id = ? and r.verdict = 'healthy'
         order by r.object_key
         on conflict (tenant_id, object_id) do nothing",
    )
    .bind(scan.now.to_rfc3339())
    .bind(scan.scan_id);
    bind_tracked(q, &t)
        .bind(scan.scan_id)
        .bind(scan.tenant.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Resolution, State};
    use crate::store::Store;
    use crate::store::fixtures::{T, TWO_H, finding, scan};
    use sqlx::SqlitePool;

    #[test]
    fn a_judged_step_writes_only_what_it_changed() {
        let now = Utc::now();
        let judged = |verdict, reason, stored: Option<(&Tracked, &str, &str)>| Judged {
            finding: finding("o1", verdict, reason),
            stored: stored.map(|(t, v, r)| Stored {
                tracked: t.clone(),
                verdict: v.into(),
                reason: r.into(),
            }),
        };
        let upsert = |j: &Judged| {
            let step = lifecycle::advance(j.prev(), j.observation(), now, TWO_H);
            let next = step.next.clone().expect("a judged identity is kept");
            Upsert::of(j, &step, &next)
        };
        let healthy = Tracked::new();
        let (ok, present) = (Verdict::Healthy, Reason::ResourcePresent);
        let unchanged = judged(ok, present, Some((&healthy, "healthy", "resource_present")));
        assert_eq!(upsert(&unchanged), Upsert::Skip);
        let was_denied = judged(ok, present, Some((&healthy, "unknown", "access_denied")));
        assert_eq!(upsert(&was_denied), Upsert::WithVerdict);
        let new = judged(Verdict::Unknown, Reason::CheckFailed, None);
        assert_eq!(
            upsert(&new),
            Upsert::WithVerdict,
            "a new identity gets its columns"
        );
        let orphan = lifecycle::advance(None, new_orphan(), now, TWO_H)
            .next
            .expect("suspected");
        let failed = judged(
            Verdict::Unknown,
            Reason::CheckFailed,
            Some((&orphan, "orphaned", "resource_not_found")),
        );
        assert_eq!(
            upsert(&failed),
            Upsert::LifecycleOnly,
            "the last authoritative verdict stays"
        );
    }

    fn new_orphan() -> Observation {
        Observation::Judged {
            verdict: Verdict::Orphaned,
            reason: Reason::ResourceNotFound,
        }
    }

    #[sqlx::test]
    async fn orphan_is_suspected_then_confirmed_then_resolved_by_removal(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store");
        let orphan = || finding("o1", Verdict::Orphaned, Reason::ResourceNotFound);
        let healthy = || finding("h1", Verdict::Healthy, Reason::ResourcePresent);
        let r = store
            .record_scan(&scan("s1", 0, vec![orphan(), healthy()], true), TWO_H)
            .await
            .expect("s1");
        assert_eq!(r.newly_confirmed[T], 0);
        let f = store
            .load_finding(&T.into(), &"O1".into())
            .await
            .expect("load")
            .expect("present");
        assert_eq!(f.state, Some(State::Suspected));
        assert_eq!(f.finding.evidence.request_id.as_deref(), Some("req-o1"));
        let r = store
            .record_scan(&scan("s2", 3, vec![orphan(), healthy()], true), TWO_H)
            .await
            .expect("s2");
        assert_eq!(r.newly_confirmed[T], 1);
        // An incomplete inventory without the orphan changes nothing.
        store
            .record_scan(&scan("s3", 4, vec![], false), TWO_H)
            .await
            .expect("s3");
        assert_eq!(
            store
                .load_finding(&T.into(), &"o1".into())
                .await
                .expect("load")
                .expect("f")
                .state,
            Some(State::Confirmed)
        );
        // A complete inventory without it resolves it; the healthy identity that left is forgotten.
        store
            .record_scan(&scan("s4", 5, vec![], true), TWO_H)
            .await
            .expect("s4");
        let f = store
            .load_finding(&T.into(), &"o1".into())
            .await
            .expect("load")
            .expect("f");
        assert_eq!(f.state, Some(State::Resolved));
        assert_eq!(f.resolution, Some(Resolution::IdentityRemoved));
        assert!(
            store
                .load_finding(&T.into(), &"h1".into())
                .await
                .expect("load")
                .is_none()
        );
        let h = store
            .load_history(&T.into(), &"o1".into())
            .await
            .expect("history");
        let path: Vec<_> = h
            .iter()
            .map(|e| (e.from, e.to, e.scan_id.clone()))
            .collect();
        assert_eq!(
            path,
            vec![
                (None, State::Suspected, Some("s1".into())),
                (Some(State::Suspected), State::Confirmed, Some("s2".into())),
                (Some(State::Confirmed), State::Resolved, Some("s4".into())),
            ]
        );
    }

    #[sqlx::test]
    async fn failed_checks_keep_state_and_last_authoritative_verdict(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store");
        store
            .record_scan(
                &scan(
                    "s1",
                    0,
                    vec![finding("o1", Verdict::Orphaned, Reason::ResourceNotFound)],
                    true,
                ),
                TWO_H,
            )
            .await
            .expect("s1");
        let mut failed = finding("o1", Verdict::Unknown, Reason::CheckFailed);
        failed.evidence.status = None;
        store
            .record_scan(&scan("s2", 5, vec![failed], false), TWO_H)
            .await
            .expect("s2");
        let f = store
            .load_finding(&T.into(), &"o1".into())
            .await
            .expect("load")
            .expect("f");
        assert_eq!(f.state, Some(State::Suspected));
        assert_eq!(f.finding.verdict, Verdict::Orphaned);
        assert_eq!(f.finding.evidence.status, Some(404));
        assert_eq!(f.last_scan_id, "s2", "seen in s2");
    }
}
