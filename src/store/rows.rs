//! Row codecs shared by the record and the scan's working database: binding and reading the identity,
//! verdict and lifecycle columns their tables share, multi-row inserts, and the errors of a stored row
//! that does not parse.

use super::StoreError;
use crate::domain::{EvidenceReport, Finding, IdentityType, Reason, SubscriptionId, Verdict};
use crate::lifecycle::{Resolution, State, Tracked};
use chrono::{DateTime, Utc};
use sqlx::Row;

/// A statement being built against SQLite.
pub(super) type SqliteQuery<'q> =
    sqlx::query::Query<'q, sqlx::Sqlite, <sqlx::Sqlite as sqlx::Database>::Arguments>;

/// Binds the columns `scan_verdicts` and `findings` share, in the order both statements list them:
/// `app_id, display_name, identity_type, resource_id, subscription_id, resource_type, verdict, reason,
/// detail, evidence`.
pub(super) fn bind_finding_columns<'q>(q: SqliteQuery<'q>, f: &'q Finding) -> SqliteQuery<'q> {
    q.bind(&f.app_id)
        .bind(&f.display_name)
        .bind(f.identity_type.as_str())
        .bind(&f.resource_id)
        .bind(f.subscription_id.as_ref().map(SubscriptionId::as_str))
        .bind(&f.resource_type)
        .bind(f.verdict.as_str())
        .bind(f.reason.as_str())
        .bind(&f.detail)
        .bind(serde_json::to_string(&f.evidence).unwrap_or_else(|_| "{}".into()))
}

/// Inserts `rows` with multi-row statements of up to `per` rows each: `head` is `insert into t (cols)`,
/// `tail` follows the values (an `on conflict` clause, or nothing), `bind` binds one row's `cols`
/// values in order. The statements are prepared per use (`persistent(false)`): one of thousands of
/// placeholders is large, and sqlx would otherwise keep one per distinct row count in every
/// connection's statement cache (peak RSS of a 100k scan varied 59-75 MiB with them cached).
pub(super) async fn insert_rows<'q, T>(
    conn: &mut sqlx::SqliteConnection,
    head: &str,
    cols: usize,
    tail: &str,
    per: usize,
    rows: &'q [T],
    bind: impl Fn(SqliteQuery<'q>, &'q T) -> SqliteQuery<'q>,
) -> Result<(), StoreError> {
    let one = format!("({})", vec!["?"; cols].join(", "));
    for chunk in rows.chunks(per) {
        let sql = format!(
            "{head} values {}{tail}",
            vec![one.as_str(); chunk.len()].join(", ")
        );
        // Only the caller's static fragments and placeholders are in `sql`; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for row in chunk {
            q = bind(q, row);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The identity, verdict and evidence columns that `scan_verdicts` and `findings` share.
pub(super) fn finding_columns(
    r: &sqlx::sqlite::SqliteRow,
    t: &'static str,
) -> Result<Finding, StoreError> {
    let identity_type: String = r.try_get("identity_type")?;
    let verdict: String = r.try_get("verdict")?;
    let reason: String = r.try_get("reason")?;
    let evidence: String = r.try_get("evidence")?;
    Ok(Finding {
        tenant_id: id(r, "tenant_id")?,
        object_id: id(r, "object_id")?,
        app_id: r.try_get("app_id")?,
        display_name: r.try_get("display_name")?,
        identity_type: IdentityType::parse(&identity_type)
            .ok_or_else(|| corrupt(t, format!("identity_type {identity_type:?}")))?,
        resource_id: r.try_get("resource_id")?,
        subscription_id: r
            .try_get::<Option<String>, _>("subscription_id")?
            .map(SubscriptionId::from),
        resource_type: r.try_get("resource_type")?,
        verdict: Verdict::parse(&verdict)
            .ok_or_else(|| corrupt(t, format!("verdict {verdict:?}")))?,
        reason: Reason::parse(&reason).ok_or_else(|| corrupt(t, format!("reason {reason:?}")))?,
        detail: r.try_get("detail")?,
        evidence: serde_json::from_str::<EvidenceReport>(&evidence)
            .map_err(|e| corrupt(t, e.to_string()))?,
    })
}

/// An id column (tenant, object, subscription), in the id's type.
pub(super) fn id<T: From<String>>(
    r: &sqlx::sqlite::SqliteRow,
    column: &str,
) -> Result<T, StoreError> {
    Ok(T::from(r.try_get::<String, _>(column)?))
}

pub(super) fn corrupt(table: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: reason.into(),
    }
}

pub(super) fn parse_time(table: &'static str, s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt(table, format!("time {s:?}: {e}")))
}

pub(super) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(super) fn time_opt(s: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.map(|v| parse_time("findings", &v)).transpose()
}

pub(super) fn tracked_of(r: &sqlx::sqlite::SqliteRow) -> Result<Tracked, StoreError> {
    let state: Option<String> = r.try_get("state")?;
    let resolution: Option<String> = r.try_get("resolution")?;
    Ok(Tracked {
        state: state
            .map(|s| State::parse(&s).ok_or_else(|| corrupt("findings", format!("state {s:?}"))))
            .transpose()?,
        episode: u32::try_from(r.try_get::<i64, _>("episode")?).unwrap_or(1),
        first_detected_at: time_opt(r.try_get("first_detected_at")?)?,
        last_orphaned_at: time_opt(r.try_get("last_orphaned_at")?)?,
        confirmed_at: time_opt(r.try_get("confirmed_at")?)?,
        resolved_at: time_opt(r.try_get("resolved_at")?)?,
        resolution: resolution
            .map(|s| {
                Resolution::parse(&s)
                    .ok_or_else(|| corrupt("findings", format!("resolution {s:?}")))
            })
            .transpose()?,
        ticket: r.try_get("ticket")?,
        note: r.try_get("note")?,
    })
}

/// Binds the lifecycle columns in the order every statement lists them: `state, episode, resolution,
/// ticket, note, first_detected_at, last_orphaned_at, confirmed_at, resolved_at`.
pub(super) fn bind_tracked<'q>(q: SqliteQuery<'q>, t: &'q Tracked) -> SqliteQuery<'q> {
    q.bind(t.state.map(State::as_str))
        .bind(i64::from(t.episode))
        .bind(t.resolution.map(Resolution::as_str))
        .bind(&t.ticket)
        .bind(&t.note)
        .bind(ts(t.first_detected_at))
        .bind(ts(t.last_orphaned_at))
        .bind(ts(t.confirmed_at))
        .bind(ts(t.resolved_at))
}

fn ts(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339())
}
