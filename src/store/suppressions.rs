//! The allowlist in the store: suppressions made through the API, and which open finding each active
//! suppression (the configuration's and the API's) covers now (`findings.suppressed_by`).

use super::{Store, StoreError};
use crate::domain::Suppression;
use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection};

fn suppression_of(r: &sqlx::sqlite::SqliteRow) -> Result<Suppression, StoreError> {
    let expires: Option<String> = r.try_get("expires_at")?;
    Ok(Suppression {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        subscription_id: r.try_get("subscription_id")?,
        object_id: r.try_get("object_id")?,
        resource_id: r.try_get("resource_id")?,
        reason: r.try_get("reason")?,
        owner: r.try_get("owner")?,
        expires_at: expires
            .map(|e| {
                DateTime::parse_from_rfc3339(&e)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|x| super::rows::corrupt("suppressions", x.to_string()))
            })
            .transpose()?,
        source: "api".into(),
    })
}

async fn stored(conn: &mut SqliteConnection) -> Result<Vec<Suppression>, StoreError> {
    let rows = sqlx::query("select * from suppressions order by created_at, id")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(suppression_of).collect()
}

/// What applying the suppressions changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Open findings covered now that were not before.
    pub suppressed: u64,
    /// Open findings covered before that are not now (their suppression expired or went away).
    pub reactivated: u64,
    /// The suppressions that ended since they last covered a finding (expired or deleted).
    pub ended: Vec<String>,
    /// (tenant, object) of the confirmed or acknowledged findings active again: announced now.
    pub reactivated_keys: Vec<(String, String)>,
}

/// Sets `suppressed_by` of every open finding from `active` (the first suppression that covers it;
/// none: null). Open findings are the few; each is matched in Rust (resource-id patterns).
pub(super) async fn apply(
    conn: &mut SqliteConnection,
    active: &[Suppression],
) -> Result<Applied, StoreError> {
    let rows = sqlx::query(
        "select tenant_id, object_id, subscription_id, resource_id, suppressed_by, state from findings
         where state is not null
           and (state in ('suspected', 'confirmed', 'acknowledged') or suppressed_by is not null)",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut applied = Applied::default();
    for r in &rows {
        let tenant: String = r.try_get("tenant_id")?;
        let object: String = r.try_get("object_id")?;
        let sub: Option<String> = r.try_get("subscription_id")?;
        let resource: Option<String> = r.try_get("resource_id")?;
        let before: Option<String> = r.try_get("suppressed_by")?;
        let state: Option<String> = r.try_get("state")?;
        let open = matches!(
            state.as_deref(),
            Some("suspected" | "confirmed" | "acknowledged")
        );
        let now = if open {
            active
                .iter()
                .find(|s| s.matches(&tenant, sub.as_deref(), &object, resource.as_deref()))
                .map(|s| s.id.clone())
        } else {
            None
        };
        if now == before {
            continue;
        }
        match (&before, &now) {
            (None, Some(_)) => applied.suppressed += 1,
            (Some(b), None) => {
                if open {
                    applied.reactivated += 1;
                    if matches!(state.as_deref(), Some("confirmed" | "acknowledged")) {
                        applied
                            .reactivated_keys
                            .push((tenant.clone(), object.clone()));
                    }
                }
                if !applied.ended.contains(b) && !active.iter().any(|s| &s.id == b) {
                    applied.ended.push(b.clone());
                }
            }
            _ => {}
        }
        sqlx::query("update findings set suppressed_by = ? where tenant_id = ? and object_id = ?")
            .bind(&now)
            .bind(&tenant)
            .bind(&object)
            .execute(&mut *conn)
            .await?;
    }
    Ok(applied)
}

/// The configuration's suppressions and the stored ones in force at `now`.
pub(super) async fn active_in(
    conn: &mut SqliteConnection,
    config: &[Suppression],
    now: DateTime<Utc>,
) -> Result<Vec<Suppression>, StoreError> {
    let mut all = config.to_vec();
    all.extend(stored(conn).await?);
    all.retain(|s| s.active(now));
    Ok(all)
}

impl Store {
    /// Every suppression, the configuration's first, active or not.
    pub async fn suppressions(&self) -> Result<Vec<Suppression>, StoreError> {
        let mut all = self.config_suppressions.as_ref().clone();
        all.extend(stored(&mut *self.pool.acquire().await?).await?);
        Ok(all)
    }

    /// Stores a suppression made through the API.
    pub async fn add_suppression(
        &self,
        s: &Suppression,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "insert into suppressions (id, tenant_id, subscription_id, object_id, resource_id, reason, owner,
                 expires_at, created_at)
             values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(&s.tenant_id)
        .bind(&s.subscription_id)
        .bind(&s.object_id)
        .bind(&s.resource_id)
        .bind(&s.reason)
        .bind(&s.owner)
        .bind(s.expires_at.map(|e| e.to_rfc3339()))
        .bind(now.to_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes a suppression made through the API; false when there is none with that id.
    pub async fn delete_suppression(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("delete from suppressions where id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Applies the suppressions in force at `now` to the open findings (after a change, and
    /// periodically so that an expiry takes effect without waiting for a scan).
    pub async fn apply_suppressions(&self, now: DateTime<Utc>) -> Result<Applied, StoreError> {
        // Immediate: it reads, then writes; another writer between the two would fail a deferred one.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let active = active_in(&mut tx, &self.config_suppressions, now).await?;
        let applied = apply(&mut tx, &active).await?;
        super::outbox::enqueue_reactivated(
            &mut tx,
            &applied.reactivated_keys,
            &self.subscribers,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(applied)
    }
}
