//! Scan rows: a scan noted when it starts, abandoned when its process died, read back with its tenants;
//! and what a scan reads of the record before it runs (open findings, the Graph delta link, the recorded
//! inventory a delta continues).

use super::rows::{corrupt, count, id, parse_time};
use super::work::CHUNK;
use super::{Store, StoreError};
use crate::domain::{IdentityType, ManagedIdentity, ObjectId, Summary, TenantId, Trigger};
use crate::report::TenantReport;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// A scan as listed, without its verdicts.
#[derive(Debug, Clone, serde::Serialize, PartialEq, utoipa::ToSchema)]
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

    /// Fills in the tenants of `scans` with one statement, however many scans (a page of 1,000 made
    /// 1,001 queries when each scan read its own): the ids go in as one JSON array parameter, so the
    /// statement is the same for every page size.
    async fn attach_tenants(&self, scans: &mut [ScanRecord]) -> Result<(), StoreError> {
        if scans.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = scans.iter().map(|s| s.scan_id.as_str()).collect();
        let rows = sqlx::query(
            "select scan_id, tenant_id, complete, identities, errors, requests, inventory_complete,
                    subscriptions_referenced, subscriptions_listed
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
            subscription_coverage: coverage_of(r)?,
            role_assignments: None,
            dangling: None,
            unjudged: 0,
            tenant_id: id(r, "tenant_id")?,
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
}

/// A tenant's open findings, from the partial index of the rows with a state.
pub(super) const OPEN_FINDING_KEYS: &str = "select object_id from findings
     where tenant_id = ? and state in ('suspected', 'confirmed', 'acknowledged') order by object_id";

/// What a scan reads of the record.
impl Store {
    /// Object ids of the tenant's open findings (suspected, confirmed, acknowledged): ARM checks them in
    /// every scan, since only ARM's word may resolve them.
    pub async fn open_finding_keys(&self, tenant: &TenantId) -> Result<Vec<ObjectId>, StoreError> {
        let keys: Vec<String> = sqlx::query_scalar(OPEN_FINDING_KEYS)
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(keys.into_iter().map(ObjectId::from).collect())
    }

    /// The stored Graph delta link of a tenant and the time of its last full listing.
    pub async fn load_delta(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let row =
            sqlx::query("select delta_link, full_sync_at from graph_delta where tenant_id = ?")
                .bind(tenant.as_str())
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

    /// The next chunk of the tenant's recorded inventory after the object id `after`: the identities of
    /// its findings except those resolved as removed, as Graph would list them, with the object id to
    /// continue after; `None` past the last.
    pub async fn stored_inventory(
        &self,
        tenant: &TenantId,
        after: &str,
    ) -> Result<Option<(String, Vec<ManagedIdentity>)>, StoreError> {
        let rows = sqlx::query(
            "select object_id, app_id, display_name, identity_type, resource_id from findings
             where tenant_id = ? and object_id > ?
               and not (coalesce(state, '') = 'resolved' and coalesce(resolution, '') = 'identity_removed')
             order by object_id limit ?",
        )
        .bind(tenant.as_str())
        .bind(after)
        .bind(CHUNK)
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
                id(r, "object_id")?,
                r.try_get("app_id")?,
                r.try_get("display_name")?,
                names,
            ));
        }
        Ok(Some((last, page)))
    }
}

/// A `scan_tenants` row's coverage, when it was recorded.
fn coverage_of(r: &sqlx::sqlite::SqliteRow) -> Result<Option<crate::report::Coverage>, StoreError> {
    let referenced: Option<i64> = r.try_get("subscriptions_referenced")?;
    let listed: Option<i64> = r.try_get("subscriptions_listed")?;
    Ok(match (referenced, listed) {
        (Some(a), Some(b)) => Some(crate::report::Coverage::new(count(a), count(b))),
        _ => None,
    })
}

impl Store {
    /// Each tenant's coverage in its newest recorded scan that has one (for the metric at start-up).
    pub async fn latest_coverage(
        &self,
    ) -> Result<Vec<(TenantId, crate::report::Coverage)>, StoreError> {
        let rows = sqlx::query(
            "select t.tenant_id, t.subscriptions_referenced, t.subscriptions_listed
             from scan_tenants t join scans s on s.scan_id = t.scan_id
             where t.subscriptions_referenced is not null and s.seq = (
                 select max(s2.seq) from scan_tenants t2 join scans s2 on s2.scan_id = t2.scan_id
                 where t2.tenant_id = t.tenant_id and t2.subscriptions_referenced is not null)",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .filter_map(|r| {
                let c = coverage_of(r).transpose()?;
                Some(c.and_then(|c| Ok((id(r, "tenant_id")?, c))))
            })
            .collect()
    }

    /// Per tenant: whether its newest recorded scan was complete, and the finish time of its newest
    /// complete scan (for the health metrics at start-up, so a restart neither hides nor invents
    /// trouble).
    pub async fn latest_scan_health(
        &self,
    ) -> Result<Vec<(TenantId, bool, Option<DateTime<Utc>>)>, StoreError> {
        let rows: Vec<(String, bool, Option<String>)> = sqlx::query_as(
            "select t.tenant_id,
                 (select t2.complete from scan_tenants t2 join scans s2 on s2.scan_id = t2.scan_id
                  where t2.tenant_id = t.tenant_id and s2.seq is not null
                  order by s2.seq desc limit 1),
                 (select max(s3.finished_at) from scan_tenants t3 join scans s3 on s3.scan_id = t3.scan_id
                  where t3.tenant_id = t.tenant_id and t3.complete)
             from (select distinct tenant_id from scan_tenants) t",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(t, complete, at)| {
                let at = at
                    .map(|a| {
                        DateTime::parse_from_rfc3339(&a)
                            .map(|d| d.with_timezone(&Utc))
                            .map_err(|e| corrupt("scans", e.to_string()))
                    })
                    .transpose()?;
                Ok((TenantId::from(t.as_str()), complete, at))
            })
            .collect()
    }

    /// Per tenant, the confirmation time of its oldest confirmed finding that has no ticket yet.
    pub async fn oldest_unacknowledged(
        &self,
    ) -> Result<Vec<(TenantId, DateTime<Utc>)>, StoreError> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "select tenant_id, min(confirmed_at) from findings
             where state = 'confirmed' and suppressed_by is null group by tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(t, at)| {
                let at = DateTime::parse_from_rfc3339(&at?).ok()?.with_timezone(&Utc);
                Some((TenantId::from(t.as_str()), at))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Verdict;
    use crate::store::fixtures::report;
    use sqlx::SqlitePool;

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
        assert_eq!(counts, vec![("t1".into(), Verdict::Orphaned, 1)]);
    }
}
