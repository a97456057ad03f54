//! Writes of findings rows: one finding's lifecycle and its history, the multi-row upserts of a scan's
//! chunk (both used by `lifecycle`), and an operator's acknowledgement, one finding in one transaction.

use super::queries::StoredFinding;
use super::rows::{bind_finding_columns, bind_tracked, insert_rows, tracked_of};
use super::{Store, StoreError};
use crate::domain::{Finding, ObjectId, TenantId};
use crate::lifecycle::{self, AckRefused, Resolution, State, Step, Tracked};
use chrono::{DateTime, Utc};
use sqlx::{Sqlite, Transaction};

/// The outcome of an acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub enum Acknowledged {
    Done(Box<StoredFinding>),
    NotFound,
    Refused(AckRefused),
}

/// Writes the step's transition, if it has one, into the finding's history.
pub(super) async fn write_history(
    tx: &mut Transaction<'_, Sqlite>,
    tenant: &TenantId,
    object: &ObjectId,
    step: &Step,
    at: DateTime<Utc>,
    scan_id: Option<&str>,
) -> Result<(), StoreError> {
    if let Some(t) = &step.transition {
        sqlx::query(
            "insert into finding_history (tenant_id, object_id, episode, at, scan_id, from_state, to_state, resolution)
             values (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.as_str())
        .bind(object.as_str())
        .bind(i64::from(t.episode))
        .bind(at.to_rfc3339())
        .bind(scan_id)
        .bind(t.from.map(State::as_str))
        .bind(t.to.as_str())
        .bind(t.resolution.map(Resolution::as_str))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Writes a finding's lifecycle (`next`); with a scan, as seen by it.
pub(super) async fn write_lifecycle(
    tx: &mut Transaction<'_, Sqlite>,
    tenant: &TenantId,
    object: &ObjectId,
    next: &Tracked,
    scan_id: Option<&str>,
) -> Result<(), StoreError> {
    let q = sqlx::query(
        "update findings set state = ?, episode = ?, resolution = ?, ticket = ?, note = ?,
             first_detected_at = ?, last_orphaned_at = ?, confirmed_at = ?, resolved_at = ?,
             last_scan_id = coalesce(?, last_scan_id)
         where tenant_id = ? and object_id = ?",
    );
    let q = bind_tracked(q, next)
        .bind(scan_id)
        .bind(tenant.as_str())
        .bind(object.as_str());
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Rows per multi-row statement: 23 parameters each stays well under SQLite's 32,766.
const BATCH: usize = 400;

/// Writes findings in multi-row upserts: identity, lifecycle and, with `take_verdict`, the verdict and
/// evidence columns (otherwise the stored, last authoritative ones stay).
pub(super) async fn upsert_findings(
    tx: &mut Transaction<'_, Sqlite>,
    rows: &[(Finding, Tracked)],
    take_verdict: bool,
    seen_at: DateTime<Utc>,
    scan_id: &str,
) -> Result<(), StoreError> {
    const COLS: &str = "tenant_id, object_id, app_id, display_name, identity_type, resource_id, subscription_id,
        resource_type, verdict, reason, detail, evidence, last_seen_at, last_scan_id, state, episode, resolution,
        ticket, note, first_detected_at, last_orphaned_at, confirmed_at, resolved_at";
    const LIFECYCLE: &str = "app_id = excluded.app_id, display_name = excluded.display_name,
        last_seen_at = excluded.last_seen_at, last_scan_id = excluded.last_scan_id, state = excluded.state,
        episode = excluded.episode, resolution = excluded.resolution, ticket = excluded.ticket,
        note = excluded.note, first_detected_at = excluded.first_detected_at,
        last_orphaned_at = excluded.last_orphaned_at, confirmed_at = excluded.confirmed_at,
        resolved_at = excluded.resolved_at";
    const VERDICT: &str =
        ", identity_type = excluded.identity_type, resource_id = excluded.resource_id,
        subscription_id = excluded.subscription_id, resource_type = excluded.resource_type,
        verdict = excluded.verdict, reason = excluded.reason, detail = excluded.detail,
        evidence = excluded.evidence";
    let seen = seen_at.to_rfc3339();
    let tail = format!(
        " on conflict (tenant_id, object_id) do update set {LIFECYCLE}{}",
        if take_verdict { VERDICT } else { "" }
    );
    insert_rows(
        tx,
        &format!("insert into findings ({COLS})"),
        23,
        &tail,
        BATCH,
        rows,
        |q, (f, t)| {
            bind_tracked(
                bind_finding_columns(q.bind(f.tenant_id.as_str()).bind(f.object_id.as_str()), f)
                    .bind(&seen)
                    .bind(scan_id),
                t,
            )
        },
    )
    .await?;
    Ok(())
}

impl Store {
    /// Records a support ticket on a suspected or confirmed finding.
    pub async fn acknowledge(
        &self,
        tenant: &TenantId,
        object: &ObjectId,
        ticket: String,
        note: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Acknowledged, StoreError> {
        // Immediate: the row is read, then written. A deferred transaction would take its snapshot at the
        // read, and a write by another connection in between (the daemon starting, a scan being recorded)
        // would fail the update at once with SQLITE_BUSY, which the busy timeout does not wait out.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query("select * from findings where tenant_id = ? and object_id = ?")
            .bind(tenant.as_str())
            .bind(object.as_str())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Acknowledged::NotFound);
        };
        let prev = tracked_of(&row)?;
        let step = match lifecycle::acknowledge(&prev, ticket, note) {
            Ok(s) => s,
            Err(refused) => return Ok(Acknowledged::Refused(refused)),
        };
        let next = step.next.as_ref().expect("acknowledge keeps the finding");
        write_lifecycle(&mut tx, tenant, object, next, None).await?;
        write_history(&mut tx, tenant, object, &step, now, None).await?;
        tx.commit().await?;
        match self.load_finding(tenant, object).await? {
            Some(f) => Ok(Acknowledged::Done(Box::new(f))),
            None => Ok(Acknowledged::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Reason, Verdict};
    use crate::store::FindingFilter;
    use crate::store::fixtures::{T, finding, scan};
    use sqlx::SqlitePool;
    use std::time::Duration;

    /// An acknowledgement while another connection writes (a scan being recorded, the daemon starting)
    /// waits for the write lock and succeeds, rather than failing on a snapshot the other write made
    /// stale.
    #[tokio::test]
    async fn an_acknowledgement_waits_for_a_concurrent_write() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .expect("store");
        let orphan = finding("o1", Verdict::Orphaned, Reason::ResourceNotFound);
        store
            .record_scan(&scan("s1", 0, vec![orphan], true), Duration::ZERO)
            .await
            .expect("s1");
        let mut writer = store
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .expect("lock");
        sqlx::query("update scans set trigger = trigger")
            .execute(&mut *writer)
            .await
            .expect("write");
        let acknowledging = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .acknowledge(&T.into(), &"o1".into(), "TKT-1".into(), None, Utc::now())
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.commit().await.expect("commit");
        let done = acknowledging.await.expect("task").expect("acknowledged");
        assert!(matches!(done, Acknowledged::Done(_)), "{done:?}");
    }

    #[sqlx::test]
    async fn acknowledge_reopen_and_filters(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store");
        let now = Utc::now();
        store
            .record_scan(
                &scan(
                    "s1",
                    0,
                    vec![
                        finding("o1", Verdict::Orphaned, Reason::ResourceNotFound),
                        finding("u1", Verdict::Unknown, Reason::AccessDenied),
                        finding("h1", Verdict::Healthy, Reason::ResourcePresent),
                    ],
                    true,
                ),
                Duration::ZERO,
            )
            .await
            .expect("s1");
        assert_eq!(
            store
                .acknowledge(&T.into(), &"nope".into(), "x".into(), None, now)
                .await
                .expect("ack"),
            Acknowledged::NotFound
        );
        assert!(matches!(
            store
                .acknowledge(&T.into(), &"u1".into(), "x".into(), None, now)
                .await
                .expect("ack"),
            Acknowledged::Refused(_)
        ));
        let Acknowledged::Done(f) = store
            .acknowledge(
                &T.into(),
                &"o1".into(),
                "TKT-9".into(),
                Some("n".into()),
                now,
            )
            .await
            .expect("ack")
        else {
            panic!("acknowledged");
        };
        assert_eq!(f.state, Some(State::Acknowledged));
        assert_eq!(f.ticket.as_deref(), Some("TKT-9"));
        // Default list: non-healthy, unresolved.
        let all = store
            .list_findings(&FindingFilter::default(), None, 100)
            .await
            .expect("list");
        assert_eq!(
            all.iter()
                .map(|f| f.finding.object_id.as_str())
                .collect::<Vec<_>>(),
            ["o1", "u1"]
        );
        let healthy = store
            .list_findings(
                &FindingFilter {
                    verdict: Some(Verdict::Healthy),
                    ..Default::default()
                },
                None,
                100,
            )
            .await
            .expect("list");
        assert_eq!(healthy.len(), 1);
        let page1 = store
            .list_findings(&FindingFilter::default(), None, 1)
            .await
            .expect("list");
        let cursor = (
            page1[0].finding.tenant_id.clone(),
            page1[0].finding.object_id.clone(),
        );
        let page2 = store
            .list_findings(&FindingFilter::default(), Some(&cursor), 1)
            .await
            .expect("list");
        assert_eq!(page2[0].finding.object_id, "u1");
        // Restored, then orphaned again: a new episode without the ticket.
        store
            .record_scan(
                &scan(
                    "s2",
                    1,
                    vec![finding("o1", Verdict::Healthy, Reason::ResourcePresent)],
                    true,
                ),
                Duration::ZERO,
            )
            .await
            .expect("s2");
        let resolved = store
            .list_findings(
                &FindingFilter {
                    states: vec![State::Resolved],
                    ..Default::default()
                },
                None,
                100,
            )
            .await
            .expect("list");
        assert_eq!(resolved.len(), 1);
        assert!(matches!(
            store
                .acknowledge(&T.into(), &"o1".into(), "x".into(), None, now)
                .await
                .expect("ack"),
            Acknowledged::Refused(_)
        ));
        store
            .record_scan(
                &scan(
                    "s3",
                    2,
                    vec![finding("o1", Verdict::Orphaned, Reason::PrincipalMismatch)],
                    true,
                ),
                Duration::ZERO,
            )
            .await
            .expect("s3");
        let f = store
            .load_finding(&T.into(), &"o1".into())
            .await
            .expect("load")
            .expect("f");
        assert_eq!(
            (f.state, f.episode, f.ticket.clone()),
            (Some(State::Confirmed), 2, None)
        );
        assert_eq!(
            store
                .load_history(&T.into(), &"o1".into())
                .await
                .expect("h")
                .len(),
            4
        );
        let counts = store.count_findings_by_state().await.expect("counts");
        assert!(counts.contains(&(T.into(), Some(State::Confirmed), 1)));
    }
}
