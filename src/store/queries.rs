//! Read queries of the API and the export: the findings list (filters, keyset cursor), one finding and
//! its history, counts per state and per verdict, a scan's verdicts.

use super::rows::{corrupt, count, finding_columns, id, parse_time, tracked_of};
use super::{Store, StoreError};
use crate::domain::{Finding, IdentityType, ObjectId, Reason, SubscriptionId, TenantId, Verdict};
use crate::lifecycle::{Resolution, State};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sqlx::Row;

/// A finding as the API and the export show it: the identity's last authoritative verdict with its
/// evidence (the same fields as in a scan), and its lifecycle.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct StoredFinding {
    #[serde(flatten)]
    pub finding: Finding,
    pub state: Option<State>,
    pub episode: u32,
    pub resolution: Option<Resolution>,
    pub ticket: Option<String>,
    pub note: Option<String>,
    pub first_detected_at: Option<DateTime<Utc>>,
    pub last_seen_at: DateTime<Utc>,
    pub last_orphaned_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub last_scan_id: String,
    /// When `export --format ticket` put this episode of the finding into a ticket text.
    pub exported_at: Option<DateTime<Utc>>,
    /// Confirmed, without a ticket number, and not exported in this episode: the next ticket's content.
    pub awaiting_ticket: bool,
    /// The suppression (allowlist entry) that covers this open orphan now; its `state` then reads
    /// `suppressed` and `lifecycle_state` keeps the state underneath.
    pub suppressed_by: Option<String>,
    pub lifecycle_state: Option<State>,
    /// The principal still holds a privileged role assignment (blast radius).
    pub high_risk: bool,
    /// Its role assignments in one line (`Role at scope; ...`), for the export.
    #[serde(skip)]
    pub role_summary: Option<String>,
}

/// One transition of a finding.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub scan_id: Option<String>,
    pub episode: u32,
    pub from: Option<State>,
    pub to: State,
    pub resolution: Option<Resolution>,
}

/// Filters of the findings list; all optional.
#[derive(Debug, Clone, Default)]
pub struct FindingFilter {
    pub states: Vec<State>,
    pub verdict: Option<Verdict>,
    pub reason: Option<Reason>,
    pub tenant_id: Option<TenantId>,
    pub identity_type: Option<IdentityType>,
    pub subscription_id: Option<SubscriptionId>,
    pub resource_type: Option<String>,
    /// Only confirmed findings not yet exported into a ticket text in their current episode.
    pub awaiting_ticket: bool,
}

/// Keyset cursor of the findings list: the last (tenant_id, object_id) of the previous page.
pub type FindingCursor = (TenantId, ObjectId);

fn finding_of(r: &sqlx::sqlite::SqliteRow) -> Result<StoredFinding, StoreError> {
    let t = "findings";
    let tracked = tracked_of(r)?;
    let base = finding_columns(r, t)?;
    // Unchanged healthy rows are not rewritten each scan: they were seen in the tenant's latest complete
    // inventory when that is newer than the row's own time (see migration 0004).
    let own_seen = parse_time(t, &r.try_get::<String, _>("last_seen_at")?)?;
    let inventory: Option<String> = r.try_get("inventory_at")?;
    let inventory = inventory.map(|i| parse_time(t, &i)).transpose()?;
    let (last_seen_at, last_scan_id) = match inventory {
        Some(at) if at > own_seen => (at, r.try_get::<String, _>("inventory_scan_id")?),
        _ => (own_seen, r.try_get::<String, _>("last_scan_id")?),
    };
    let exported_episode: Option<i64> = r.try_get("exported_episode")?;
    let exported_at = match (
        exported_episode,
        r.try_get::<Option<String>, _>("exported_at")?,
    ) {
        (Some(e), Some(at)) if e == i64::from(tracked.episode) => Some(parse_time(t, &at)?),
        _ => None,
    };
    let suppressed_by: Option<String> = r.try_get("suppressed_by")?;
    let covered = suppressed_by.is_some() && tracked.state.is_some_and(State::is_open_orphan);
    let awaiting_ticket =
        !covered && tracked.state == Some(State::Confirmed) && exported_at.is_none();
    let lifecycle_state = tracked.state;
    let state = if covered {
        Some(State::Suppressed)
    } else {
        tracked.state
    };
    // Present in the list's statement (`ROLES`); a statement without them reads as none.
    let high_risk = r.try_get::<bool, _>("high_risk").unwrap_or(false);
    let role_summary = r
        .try_get::<Option<String>, _>("role_summary")
        .unwrap_or(None);
    Ok(StoredFinding {
        high_risk,
        role_summary,
        exported_at,
        awaiting_ticket,
        suppressed_by: suppressed_by.filter(|_| covered),
        lifecycle_state,
        finding: base,
        state,
        episode: tracked.episode,
        resolution: tracked.resolution,
        ticket: tracked.ticket,
        note: tracked.note,
        first_detected_at: tracked.first_detected_at,
        last_seen_at,
        last_orphaned_at: tracked.last_orphaned_at,
        confirmed_at: tracked.confirmed_at,
        resolved_at: tracked.resolved_at,
        last_scan_id,
    })
}

/// A finding's blast radius in its row: whether a privileged role is held, and the roles in one line
/// (each a primary-key probe of `role_assignments`).
const ROLES: &str = "coalesce((select max(r.privileged) from role_assignments r
         where r.tenant_id = f.tenant_id and r.object_id = f.object_id), 0) as high_risk,
     (select group_concat(coalesce(r.role_name, r.role_definition_id) || ' at ' || r.scope, '; ')
         from role_assignments r where r.tenant_id = f.tenant_id and r.object_id = f.object_id) as role_summary";

/// The statement of the findings list and its values, in order (then the limit).
fn list_statement(f: &FindingFilter, after: Option<&FindingCursor>) -> (String, Vec<String>) {
    let mut sql = format!(
        "select f.*, i.last_inventory_at as inventory_at, i.last_scan_id as inventory_scan_id, {ROLES}
         from findings f left join tenant_inventory i on i.tenant_id = f.tenant_id where 1 = 1",
    );
    let mut binds: Vec<String> = Vec::new();
    if f.states.is_empty() && f.verdict.is_none() {
        sql.push_str(" and f.verdict != 'healthy' and (f.state is null or f.state != 'resolved')");
    }
    if !f.states.is_empty() {
        // An open orphan covered by a suppression is in state `suppressed`, not in its own.
        let mut any = Vec::new();
        let stored: Vec<&State> = f
            .states
            .iter()
            .filter(|s| **s != State::Suppressed)
            .collect();
        if !stored.is_empty() {
            any.push(format!(
                "(f.state in ({}) and (f.suppressed_by is null or f.state not in ('suspected', 'confirmed', 'acknowledged')))",
                vec!["?"; stored.len()].join(", ")
            ));
            binds.extend(stored.iter().map(|s| s.as_str().to_owned()));
        }
        if f.states.contains(&State::Suppressed) {
            any.push(
                "(f.suppressed_by is not null and f.state in ('suspected', 'confirmed', 'acknowledged'))"
                    .to_owned(),
            );
        }
        // `state is not null` first: the partial index of findings with a state serves the page.
        sql.push_str(&format!(
            " and f.state is not null and ({})",
            any.join(" or ")
        ));
    }
    let mut eq = |col: &str, v: Option<String>| {
        if let Some(v) = v {
            sql.push_str(&format!(" and f.{col} = ?"));
            binds.push(v);
        }
    };
    eq("verdict", f.verdict.map(|v| v.as_str().to_owned()));
    eq("reason", f.reason.map(|v| v.as_str().to_owned()));
    eq(
        "identity_type",
        f.identity_type.map(|v| v.as_str().to_owned()),
    );
    if let Some(t) = &f.tenant_id {
        // Unless healthy identities are wanted whatever their state (nearly every row of the tenant, in
        // primary-key order), a partial index holds the rows wanted in key order (findings_by_state,
        // findings_not_healthy); `+` keeps SQLite from walking the tenant's every row by primary key
        // for each page instead.
        sql.push_str(
            if f.states.is_empty() && f.verdict == Some(Verdict::Healthy) {
                " and f.tenant_id = ?"
            } else {
                " and +f.tenant_id = ?"
            },
        );
        binds.push(t.to_string());
    }
    if f.verdict.is_some_and(|v| v != Verdict::Healthy) {
        // Implied, and lets SQLite read the partial index of non-healthy rows.
        sql.push_str(" and f.verdict != 'healthy'");
    }
    if let Some(s) = &f.subscription_id {
        sql.push_str(" and f.subscription_id = ?");
        binds.push(s.to_string());
    }
    if let Some(t) = &f.resource_type {
        sql.push_str(" and f.resource_type = ?");
        binds.push(t.to_ascii_lowercase());
    }
    if f.awaiting_ticket {
        sql.push_str(
            " and f.state = 'confirmed' and f.suppressed_by is null
              and (f.exported_episode is null or f.exported_episode != f.episode)",
        );
    }
    if let Some((t, o)) = after {
        sql.push_str(" and (f.tenant_id, f.object_id) > (?, ?)");
        binds.push(t.to_string());
        binds.push(o.to_string());
    }
    sql.push_str(" order by f.tenant_id, f.object_id limit ?");
    (sql, binds)
}

/// Findings per tenant and state, among the rows with a state (the partial index `findings_by_state`).
const COUNT_BY_STATE: &str = "select tenant_id,
         case when suppressed_by is not null and state in ('suspected', 'confirmed', 'acknowledged')
              then 'suppressed' else state end as shown,
         count(*) as n
     from findings where state is not null group by tenant_id, shown";

/// The verdicts of one scan (the view over the runs, migration 0007).
const SCAN_VERDICTS: &str =
    "select * from scan_verdicts where scan_id = ? order by tenant_id, object_id";

impl Store {
    /// Marks findings as put into a ticket text, each in the episode it was exported in (a finding that
    /// has moved to another episode since is not marked).
    pub async fn mark_exported(
        &self,
        keys: &[(TenantId, ObjectId, u32)],
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // Immediate, as every read-then-write transaction of the API: the write lock is waited for up front.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut n = 0;
        for (t, o, episode) in keys {
            n += sqlx::query(
                "update findings set exported_episode = ?, exported_at = ?
                 where tenant_id = ? and object_id = ? and episode = ?",
            )
            .bind(i64::from(*episode))
            .bind(at.to_rfc3339())
            .bind(t.as_str())
            .bind(o.as_str())
            .bind(i64::from(*episode))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// How many of the tenant's findings a ticket text lists: confirmed ones awaiting a ticket (with
    /// `include_exported`, every confirmed one).
    pub async fn count_awaiting(
        &self,
        tenant: &TenantId,
        include_exported: bool,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from findings where tenant_id = ? and state = 'confirmed'
               and suppressed_by is null
               and (? or exported_episode is null or exported_episode != episode)",
        )
        .bind(tenant.as_str())
        .bind(include_exported)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Findings in (tenant_id, object_id) order, at most `limit`, as they are read (nothing is
    /// collected). With no state and no verdict filter: the non-healthy, unresolved ones. `after`
    /// continues from a previous page.
    pub fn stream_findings(
        &self,
        f: &FindingFilter,
        after: Option<&FindingCursor>,
        limit: u32,
    ) -> BoxStream<'_, Result<StoredFinding, StoreError>> {
        let (sql, binds) = list_statement(f, after);
        // Only static fragments and placeholders went into `sql`; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        q.bind(i64::from(limit))
            .fetch(&self.pool)
            .map(|r| finding_of(&r?))
            .boxed()
    }

    /// [`Store::stream_findings`], collected: a page of the API.
    pub async fn list_findings(
        &self,
        f: &FindingFilter,
        after: Option<&FindingCursor>,
        limit: u32,
    ) -> Result<Vec<StoredFinding>, StoreError> {
        self.stream_findings(f, after, limit).try_collect().await
    }

    pub async fn load_finding(
        &self,
        tenant: &TenantId,
        object: &ObjectId,
    ) -> Result<Option<StoredFinding>, StoreError> {
        let row = sqlx::query(
            "select f.*, i.last_inventory_at as inventory_at, i.last_scan_id as inventory_scan_id
             from findings f left join tenant_inventory i on i.tenant_id = f.tenant_id
             where f.tenant_id = ? and f.object_id = ?",
        )
        .bind(tenant.as_str())
        .bind(object.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(finding_of).transpose()
    }

    /// Every transition of a finding, across episodes, oldest first.
    pub async fn load_history(
        &self,
        tenant: &TenantId,
        object: &ObjectId,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(
            "select * from finding_history where tenant_id = ? and object_id = ? order by id",
        )
        .bind(tenant.as_str())
        .bind(object.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let t = "finding_history";
                let from: Option<String> = r.try_get("from_state")?;
                let to: String = r.try_get("to_state")?;
                let resolution: Option<String> = r.try_get("resolution")?;
                Ok(HistoryEntry {
                    at: parse_time(t, &r.try_get::<String, _>("at")?)?,
                    scan_id: r.try_get("scan_id")?,
                    episode: u32::try_from(r.try_get::<i64, _>("episode")?).unwrap_or(1),
                    from: from
                        .map(|s| State::parse(&s).ok_or_else(|| corrupt(t, format!("state {s:?}"))))
                        .transpose()?,
                    to: State::parse(&to).ok_or_else(|| corrupt(t, format!("state {to:?}")))?,
                    resolution: resolution.as_deref().and_then(Resolution::parse),
                })
            })
            .collect()
    }

    /// Findings per tenant and state (identities that never were a finding, with no state, are not
    /// counted: the count would read every row).
    pub async fn count_findings_by_state(
        &self,
    ) -> Result<Vec<(TenantId, Option<State>, u64)>, StoreError> {
        let rows = sqlx::query(COUNT_BY_STATE).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let s: Option<String> = r.try_get("shown")?;
                Ok((
                    id(r, "tenant_id")?,
                    s.as_deref().and_then(State::parse),
                    count(r.try_get("n")?),
                ))
            })
            .collect()
    }

    /// Identities per verdict and tenant in the newest recorded scan that listed each tenant's inventory
    /// to the end (none for a tenant whose verdicts of that scan have expired). As the scheduler
    /// publishes them: a scan whose inventory was cut short lists only part of the tenant, and its
    /// counts would read as fewer orphans than there are.
    pub async fn latest_verdict_counts(&self) -> Result<Vec<(TenantId, Verdict, u64)>, StoreError> {
        let rows = sqlx::query(
            // Each tenant's latest scan first; its verdicts are the tenant's current runs (a run is
            // current while every scan of the tenant lists the identity with that verdict).
            "with latest as (
                 select d.tenant_id,
                        (select s.seq from scan_tenants t join scans s on s.scan_id = t.scan_id
                         where t.tenant_id = d.tenant_id and t.inventory_complete and s.seq is not null
                         order by s.seq desc limit 1) as seq
                 from (select distinct tenant_id from scan_tenants) d),
             current as (
                 select f.tenant_id, f.verdict from latest l
                 join findings f on f.tenant_id = l.tenant_id and f.run_since <= l.seq
                 union all
                 select r.tenant_id, r.verdict from latest l
                 join verdict_runs r on r.tenant_id = l.tenant_id and r.since <= l.seq
                     and (r.until is null or r.until >= l.seq))
             select tenant_id, verdict, count(*) as n from current group by tenant_id, verdict",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let v: String = r.try_get("verdict")?;
                Ok((
                    id(r, "tenant_id")?,
                    Verdict::parse(&v)
                        .ok_or_else(|| corrupt("scan_verdicts", format!("verdict {v:?}")))?,
                    count(r.try_get("n")?),
                ))
            })
            .collect()
    }

    /// The verdicts of one scan, ordered by tenant and object id (none once they have expired). An
    /// identity the scans before listed with the same verdict has the request ids and check time of the
    /// answer its stored row holds (see `runs`).
    pub async fn load_verdicts(&self, scan_id: &str) -> Result<Vec<Finding>, StoreError> {
        let rows = sqlx::query(SCAN_VERDICTS)
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
    use crate::store::fixtures::{T, TWO_H, finding, scan};
    use sqlx::SqlitePool;

    /// The plan of `sql` (EXPLAIN QUERY PLAN), one step a line.
    async fn plan(store: &Store, sql: &str, binds: &[&str]) -> String {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(format!("explain query plan {sql}")));
        for b in binds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(store.pool()).await.expect("plan");
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").expect("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The API's reads go through the index each was given, and none through the two indices of
    /// every row that migration 0007 dropped.
    #[sqlx::test]
    async fn reads_use_their_indices(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store");
        let list = |f: FindingFilter| list_statement(&f, None).0;
        let cases: Vec<(String, Vec<&str>, &str)> = vec![
            (
                list(FindingFilter::default()),
                vec![],
                "SCAN f USING INDEX findings_not_healthy",
            ),
            (
                list(FindingFilter {
                    verdict: Some(Verdict::Orphaned),
                    ..Default::default()
                }),
                vec!["orphaned", "9"],
                "SCAN f USING INDEX findings_not_healthy",
            ),
            (
                list(FindingFilter {
                    states: vec![State::Suspected, State::Confirmed],
                    ..Default::default()
                }),
                vec!["suspected", "confirmed", "9"],
                "SCAN f USING INDEX findings_by_state",
            ),
            (
                list(FindingFilter {
                    states: vec![State::Suppressed, State::Confirmed],
                    ..Default::default()
                }),
                vec!["confirmed", "9"],
                "SCAN f USING INDEX findings_by_state",
            ),
            (
                list(FindingFilter {
                    states: vec![State::Suspected, State::Confirmed],
                    tenant_id: Some(T.into()),
                    ..Default::default()
                }),
                vec!["suspected", "confirmed", T, "9"],
                "SCAN f USING INDEX findings_by_state",
            ),
            (
                list(FindingFilter {
                    tenant_id: Some(T.into()),
                    ..Default::default()
                }),
                vec![T, "9"],
                "SCAN f USING INDEX findings_not_healthy",
            ),
            (
                list(FindingFilter {
                    verdict: Some(Verdict::Healthy),
                    ..Default::default()
                }),
                vec!["healthy", "9"],
                // Nearly every row, in primary-key order: no sort.
                "SCAN f",
            ),
            (
                COUNT_BY_STATE.into(),
                vec![],
                "COVERING INDEX findings_by_state",
            ),
            (
                crate::store::scans::OPEN_FINDING_KEYS.into(),
                vec![T],
                "COVERING INDEX findings_by_state (tenant_id=?)",
            ),
            (
                SCAN_VERDICTS.into(),
                vec!["s"],
                "SEARCH r USING PRIMARY KEY (tenant_id=?)",
            ),
            (
                SCAN_VERDICTS.into(),
                vec!["s"],
                "SEARCH f USING PRIMARY KEY (tenant_id=?)",
            ),
        ];
        for (sql, binds, want) in cases {
            let got = plan(&store, &sql, &binds).await;
            assert!(got.contains(want), "{sql}\n{got}\nwants {want}");
            if sql.starts_with("select f.*") {
                // A page is read in key order, never by sorting every matching row.
                assert!(!got.contains("FOR ORDER BY"), "{sql}\n{got}");
            }
        }
    }

    #[sqlx::test]
    async fn unchanged_healthy_rows_are_seen_in_the_latest_complete_inventory(pool: SqlitePool) {
        let store = Store::from_pool(pool).await.expect("store");
        let h = || finding("h1", Verdict::Healthy, Reason::ResourcePresent);
        store
            .record_scan(&scan("s1", 0, vec![h()], true), TWO_H)
            .await
            .expect("s1");
        store
            .record_scan(&scan("s2", 1, vec![h()], true), TWO_H)
            .await
            .expect("s2");
        let f = store
            .load_finding(&T.into(), &"h1".into())
            .await
            .expect("load")
            .expect("present");
        assert_eq!(f.last_scan_id, "s2");
        assert_eq!(f.last_seen_at, scan("x", 1, vec![], true).finished_at);
        // An incomplete inventory did not see it.
        store
            .record_scan(&scan("s3", 2, vec![], false), TWO_H)
            .await
            .expect("s3");
        let f = store
            .load_finding(&T.into(), &"h1".into())
            .await
            .expect("load")
            .expect("present");
        assert_eq!(f.last_scan_id, "s2");
        let listed = store
            .list_findings(
                &FindingFilter {
                    verdict: Some(Verdict::Healthy),
                    ..Default::default()
                },
                None,
                10,
            )
            .await
            .expect("list");
        assert_eq!(listed[0].last_scan_id, "s2");
    }
}
