//! Blast radius in the store: the role assignments of open orphans, written in the recording
//! transaction, read by the API, the notifications and the metrics.

use super::{Store, StoreError};
use crate::domain::{ObjectId, RoleAssignment, TenantId};
use crate::report::ScanReport;
use sqlx::{Row, Sqlite, Transaction};

/// Replaces the role assignments of the identities each tenant's scan judged orphaned and could read,
/// and drops those of identities that are no longer open orphans. Runs after the lifecycle.
pub(super) async fn write(
    tx: &mut Transaction<'_, Sqlite>,
    report: &ScanReport,
) -> Result<(), StoreError> {
    for t in &report.tenants {
        let tenant = t.tenant_id.as_str();
        if let Some(found) = &t.role_assignments {
            sqlx::query(
                "delete from role_assignments where tenant_id = ?1 and object_id in (
                     select object_key from work.scan_results
                     where scan_id = ?2 and tenant_id = ?1 and verdict = 'orphaned')",
            )
            .bind(tenant)
            .bind(&report.scan_id)
            .execute(&mut **tx)
            .await?;
            for (object, a) in found {
                sqlx::query(
                    "insert or replace into role_assignments
                         (tenant_id, object_id, assignment_id, role_definition_id, role_name, scope, privileged)
                     values (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(tenant)
                .bind(object.as_str())
                .bind(&a.id)
                .bind(&a.role_definition_id)
                .bind(&a.role_name)
                .bind(&a.scope)
                .bind(a.privileged)
                .execute(&mut **tx)
                .await?;
            }
        }
        sqlx::query(
            "delete from role_assignments where tenant_id = ?1 and object_id not in (
                 select object_id from findings
                 where tenant_id = ?1 and state in ('suspected', 'confirmed', 'acknowledged'))",
        )
        .bind(tenant)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The subscription a role-assignment scope or id lies in, lower-case.
fn subscription_of(scope: &str) -> Option<String> {
    let mut segs = scope.split('/').filter(|s| !s.is_empty());
    match (segs.next(), segs.next()) {
        (Some(k), Some(id)) if k.eq_ignore_ascii_case("subscriptions") => {
            Some(id.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// Replaces, per tenant, the dangling role assignments of the subscriptions this scan asked about
/// with what it found there (a tenant not judged, and subscriptions not asked, keep their rows); an
/// assignment seen before keeps when it was first seen, and is confirmed once it has been found in
/// scans spanning `confirm_after`, as an orphan is.
pub(super) async fn write_dangling(
    tx: &mut Transaction<'_, Sqlite>,
    report: &ScanReport,
    confirm_after: std::time::Duration,
) -> Result<(), StoreError> {
    let now = report.finished_at;
    let confirm_by = chrono::Duration::from_std(confirm_after)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .map(|t| t.to_rfc3339());
    for t in &report.tenants {
        let Some(check) = &t.dangling else { continue };
        let tenant = t.tenant_id.as_str();
        for d in &check.found {
            let a = &d.assignment;
            let sub = subscription_of(&a.scope).or_else(|| subscription_of(&a.id));
            sqlx::query(
                "insert into dangling_role_assignments (tenant_id, assignment_id, principal_id, role_definition_id,
                     role_name, scope, privileged, created_on, first_seen_at, last_seen_at, last_scan_id,
                     subscription_id)
                 values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11)
                 on conflict (tenant_id, assignment_id) do update set principal_id = excluded.principal_id,
                     role_definition_id = excluded.role_definition_id, role_name = excluded.role_name,
                     scope = excluded.scope, privileged = excluded.privileged, created_on = excluded.created_on,
                     last_seen_at = excluded.last_seen_at, last_scan_id = excluded.last_scan_id,
                     subscription_id = excluded.subscription_id",
            )
            .bind(tenant)
            .bind(&a.id)
            .bind(&d.principal_id)
            .bind(&a.role_definition_id)
            .bind(&a.role_name)
            .bind(&a.scope)
            .bind(a.privileged)
            .bind(d.created_on.map(|c| c.to_rfc3339()))
            .bind(now.to_rfc3339())
            .bind(&report.scan_id)
            .bind(sub)
            .execute(&mut **tx)
            .await?;
        }
        // Rows of the subscriptions asked that this scan did not find are no longer dangling.
        sqlx::query(
            "delete from dangling_role_assignments
             where tenant_id = ?1 and last_scan_id != ?2
               and (subscription_id is null or subscription_id in (select value from json_each(?3)))",
        )
        .bind(tenant)
        .bind(&report.scan_id)
        .bind(serde_json::to_string(&check.subscriptions).unwrap_or_else(|_| "[]".into()))
        .execute(&mut **tx)
        .await?;
        if let Some(by) = &confirm_by {
            sqlx::query(
                "update dangling_role_assignments set confirmed_at = ?1
                 where tenant_id = ?2 and confirmed_at is null and last_scan_id = ?3 and first_seen_at <= ?4",
            )
            .bind(now.to_rfc3339())
            .bind(tenant)
            .bind(&report.scan_id)
            .bind(by)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

fn assignment(r: &sqlx::sqlite::SqliteRow) -> Result<RoleAssignment, StoreError> {
    Ok(RoleAssignment {
        id: r.try_get("assignment_id")?,
        role_definition_id: r.try_get("role_definition_id")?,
        role_name: r.try_get("role_name")?,
        scope: r.try_get("scope")?,
        privileged: r.try_get("privileged")?,
    })
}

/// The role assignments of one identity, in a transaction (for an event being enqueued).
pub(super) async fn of_in(
    tx: &mut Transaction<'_, Sqlite>,
    tenant: &str,
    object: &str,
) -> Result<Vec<RoleAssignment>, StoreError> {
    let rows = sqlx::query(
        "select * from role_assignments where tenant_id = ? and object_id = ? order by privileged desc, assignment_id",
    )
    .bind(tenant)
    .bind(object)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(assignment).collect()
}

/// A dangling role assignment as stored: what the last scan that could judge it saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DanglingRow {
    pub tenant_id: String,
    pub assignment_id: String,
    /// The principal id the assignment names (no such service principal exists).
    pub principal_id: String,
    pub role_definition_id: String,
    pub role_name: Option<String>,
    pub scope: String,
    pub privileged: bool,
    pub created_on: Option<String>,
    /// `suspected` (seen dangling once) or `confirmed` (seen dangling by a later scan too).
    pub state: String,
    pub confirmed_at: Option<String>,
    pub first_seen_at: String,
    pub last_seen_at: String,
}

impl Store {
    /// The dangling role assignments, by tenant then assignment id (optionally of one tenant).
    pub async fn dangling_assignments(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<DanglingRow>, StoreError> {
        let rows = sqlx::query(
            "select * from dangling_role_assignments where (?1 is null or tenant_id = ?1)
             order by tenant_id, assignment_id",
        )
        .bind(tenant.map(TenantId::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let confirmed_at: Option<String> = r.try_get("confirmed_at")?;
                Ok(DanglingRow {
                    tenant_id: r.try_get("tenant_id")?,
                    assignment_id: r.try_get("assignment_id")?,
                    principal_id: r.try_get("principal_id")?,
                    role_definition_id: r.try_get("role_definition_id")?,
                    role_name: r.try_get("role_name")?,
                    scope: r.try_get("scope")?,
                    privileged: r.try_get("privileged")?,
                    created_on: r.try_get("created_on")?,
                    state: if confirmed_at.is_some() {
                        "confirmed"
                    } else {
                        "suspected"
                    }
                    .to_owned(),
                    confirmed_at,
                    first_seen_at: r.try_get("first_seen_at")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                })
            })
            .collect()
    }

    /// Dangling role assignments per tenant.
    pub async fn dangling_counts(&self) -> Result<Vec<(TenantId, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "select tenant_id, count(*) from dangling_role_assignments
             where confirmed_at is not null group by tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(t, n)| (TenantId::from(t.as_str()), u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// The role assignments an orphan's principal still holds, privileged ones first.
    pub async fn role_assignments(
        &self,
        tenant: &TenantId,
        object: &ObjectId,
    ) -> Result<Vec<RoleAssignment>, StoreError> {
        let rows = sqlx::query(
            "select * from role_assignments where tenant_id = ? and object_id = ? order by privileged desc, assignment_id",
        )
        .bind(tenant.as_str())
        .bind(object.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(assignment).collect()
    }

    /// Per tenant: open orphans holding any role assignment, and those holding a privileged one.
    pub async fn orphan_role_counts(&self) -> Result<Vec<(TenantId, u64, u64)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "select r.tenant_id, count(distinct r.object_id),
                 count(distinct case when r.privileged then r.object_id end)
             from role_assignments r join findings f on f.tenant_id = r.tenant_id and f.object_id = r.object_id
             where f.suppressed_by is null group by r.tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(t, n, p)| {
                (
                    TenantId::from(t.as_str()),
                    u64::try_from(n).unwrap_or(0),
                    u64::try_from(p).unwrap_or(0),
                )
            })
            .collect())
    }
}
