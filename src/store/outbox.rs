//! The notification outbox: events enqueued inside the recording transaction of the scan whose lifecycle
//! transitions they report (so a crash never loses one, nor sends one for a scan that was not recorded),
//! and the delivery worker's reads and writes: due rows, a claim, delivered, failed or dead.

use super::{Store, StoreError};
use crate::domain::{EventType, Subscriber};
use crate::report::ScanReport;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{Row, Sqlite, Transaction};

/// Findings a digest (Slack, Teams) names; the rest are counted.
pub const DIGEST_FINDINGS: usize = 10;

/// Namespace of event ids: an event id is the UUID v5 of `tenant/object/episode/type` in it, the same for
/// every sink and every time the same transition is enqueued.
const EVENT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d69_6175_6469_7400_8000_6f75_7462_6f78);

/// The stable id of one event (tenant, object, episode, type).
pub fn event_id(tenant: &str, object: &str, episode: i64, event: EventType) -> String {
    let name = format!("{tenant}/{object}/{episode}/{}", event.event_name());
    uuid::Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes()).to_string()
}

/// The stable id of one scan's digest for one sink.
fn digest_id(scan_id: &str, sink: &str) -> String {
    uuid::Uuid::new_v5(
        &EVENT_NAMESPACE,
        format!("digest/{scan_id}/{sink}").as_bytes(),
    )
    .to_string()
}

/// One delivery waiting in (or taken from) the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub sink: String,
    pub event_id: String,
    /// `orphan.confirmed`, `orphan.resolved` or `digest`.
    pub kind: String,
    pub scan_id: String,
    pub body: String,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub occurred_at: String,
    pub delivered_at: Option<String>,
}

fn outbox_row(r: &sqlx::sqlite::SqliteRow) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        sink: r.try_get("sink")?,
        event_id: r.try_get("event_id")?,
        kind: r.try_get("type")?,
        scan_id: r.try_get("scan_id")?,
        body: r.try_get("body")?,
        state: r.try_get("state")?,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_ms: r.try_get("next_attempt_ms")?,
        last_error: r.try_get("last_error")?,
        occurred_at: r.try_get("occurred_at")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

/// Transitions read per statement while enqueueing.
const CHUNK: i64 = 500;

/// Enqueues the events of the scan being recorded: per transition into `confirmed`, and into `resolved`
/// from `confirmed` or `acknowledged` (a suspected finding that resolves itself was never announced), a
/// row per json sink that wants it; per slack or teams sink, one digest of the scan if it has any event
/// that sink wants. Returns how many rows were written.
pub(super) async fn enqueue(
    tx: &mut Transaction<'_, Sqlite>,
    report: &ScanReport,
    subscribers: &[Subscriber],
) -> Result<u64, StoreError> {
    if subscribers.is_empty() {
        return Ok(0);
    }
    let now_ms = Utc::now().timestamp_millis();
    let mut written = 0u64;
    let digests: Vec<&Subscriber> = subscribers.iter().filter(|s| s.kind.is_digest()).collect();
    let mut digest = vec![Digest::default(); digests.len()];
    let mut after = 0i64;
    loop {
        let rows = sqlx::query(
            "select h.id, h.tenant_id, h.object_id, h.episode, h.at, h.from_state, h.to_state, h.resolution,
                 f.app_id, f.display_name, f.identity_type, f.resource_id, f.verdict, f.reason, f.detail,
                 f.evidence
             from finding_history h
             join findings f on f.tenant_id = h.tenant_id and f.object_id = h.object_id
             where h.scan_id = ? and h.id > ? and f.suppressed_by is null
               and (h.to_state = 'confirmed'
                    or (h.to_state = 'resolved' and h.from_state in ('confirmed', 'acknowledged')))
             order by h.id limit ?",
        )
        .bind(&report.scan_id)
        .bind(after)
        .bind(CHUNK)
        .fetch_all(&mut **tx)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("id")?;
        for r in &rows {
            let (event, mut doc) = event_document(r)?;
            let roles = super::roles::of_in(
                tx,
                doc["tenant_id"].as_str().unwrap_or_default(),
                doc["object_id"].as_str().unwrap_or_default(),
            )
            .await?;
            doc["high_risk"] = json!(roles.iter().any(|a| a.privileged));
            doc["role_assignments"] = serde_json::to_value(&roles).unwrap_or_default();
            let id = doc["event_id"].as_str().unwrap_or_default().to_owned();
            let body = doc.to_string();
            for s in subscribers
                .iter()
                .filter(|s| !s.kind.is_digest() && s.events.contains(&event))
            {
                written += insert(
                    tx,
                    &s.sink,
                    &id,
                    event.event_name(),
                    Some(doc["tenant_id"].as_str().unwrap_or_default()),
                    report,
                    &body,
                    now_ms,
                )
                .await?;
            }
            for (s, d) in digests.iter().zip(digest.iter_mut()) {
                if s.events.contains(&event) {
                    d.add(event, &doc);
                }
            }
        }
    }
    for (s, d) in digests.iter().zip(digest) {
        if d.total() == 0 {
            continue;
        }
        let body = json!({
            "scan_id": report.scan_id,
            "occurred_at": report.finished_at.to_rfc3339(),
            "confirmed": d.confirmed,
            "resolved": d.resolved,
            "findings": d.first,
        })
        .to_string();
        let id = digest_id(&report.scan_id, &s.sink);
        written += insert(tx, &s.sink, &id, "digest", None, report, &body, now_ms).await?;
    }
    Ok(written)
}

/// A scan's events as one sink's digest counts and shows them.
#[derive(Debug, Clone, Default)]
struct Digest {
    confirmed: u64,
    resolved: u64,
    first: Vec<Value>,
}

impl Digest {
    fn add(&mut self, event: EventType, doc: &Value) {
        match event {
            EventType::Confirmed => self.confirmed += 1,
            EventType::Resolved => self.resolved += 1,
        }
        if self.first.len() < DIGEST_FINDINGS {
            self.first.push(doc.clone());
        }
    }

    fn total(&self) -> u64 {
        self.confirmed + self.resolved
    }
}

#[allow(clippy::too_many_arguments)]
async fn insert(
    tx: &mut Transaction<'_, Sqlite>,
    sink: &str,
    event_id: &str,
    kind: &str,
    tenant: Option<&str>,
    report: &ScanReport,
    body: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    // `or ignore`: the same event enqueued twice (it cannot be, each transition is written once; but a
    // stable id makes a second one harmless) keeps the first row and its delivery state.
    let done = sqlx::query(
        "insert or ignore into outbox (sink, event_id, type, tenant_id, scan_id, occurred_at, body, next_attempt_ms)
         values (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(sink)
    .bind(event_id)
    .bind(kind)
    .bind(tenant)
    .bind(&report.scan_id)
    .bind(report.finished_at.to_rfc3339())
    .bind(body)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// The event document of one transition (the json sinks' body) and its type.
fn event_document(r: &sqlx::sqlite::SqliteRow) -> Result<(EventType, Value), StoreError> {
    let to: String = r.try_get("to_state")?;
    let event = if to == "confirmed" {
        EventType::Confirmed
    } else {
        EventType::Resolved
    };
    let tenant: String = r.try_get("tenant_id")?;
    let object: String = r.try_get("object_id")?;
    let episode: i64 = r.try_get("episode")?;
    let evidence: String = r.try_get("evidence")?;
    let evidence: Value = serde_json::from_str(&evidence).unwrap_or(Value::Null);
    let doc = json!({
        "event_id": event_id(&tenant, &object, episode, event),
        "type": event.event_name(),
        "occurred_at": r.try_get::<String, _>("at")?,
        "tenant_id": tenant,
        "object_id": object,
        "app_id": r.try_get::<String, _>("app_id")?,
        "display_name": r.try_get::<String, _>("display_name")?,
        "identity_type": r.try_get::<String, _>("identity_type")?,
        "resource_id": r.try_get::<Option<String>, _>("resource_id")?,
        "verdict": r.try_get::<String, _>("verdict")?,
        "reason": r.try_get::<String, _>("reason")?,
        "detail": r.try_get::<String, _>("detail")?,
        "state": to,
        "previous_state": r.try_get::<Option<String>, _>("from_state")?,
        "resolution": r.try_get::<Option<String>, _>("resolution")?,
        "episode": episode,
        "evidence": evidence,
        "role_assignments": [],
    });
    Ok((event, doc))
}

impl Store {
    /// Pending deliveries due at `now_ms` and not being attempted, oldest first.
    pub async fn outbox_due(&self, now_ms: i64, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "select * from outbox
             where state = 'pending' and next_attempt_ms <= ?1 and coalesce(claimed_until, 0) <= ?1
             order by next_attempt_ms, occurred_at limit ?2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// When the next pending delivery is due (Unix ms), if any.
    pub async fn outbox_next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "select min(max(next_attempt_ms, coalesce(claimed_until, 0))) from outbox where state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Takes a due row for one attempt until `until_ms`, unless another worker holds it (another process
    /// delivering from the same database: a `scan` beside the daemon). A worker that dies mid-attempt
    /// leaves the row to the next one after `until_ms`, or at once to a daemon that starts
    /// ([`Store::outbox_release_claims`]).
    pub async fn outbox_claim(
        &self,
        row: &OutboxRow,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "update outbox set claimed_until = ?
             where sink = ? and event_id = ? and state = 'pending' and coalesce(claimed_until, 0) <= ?",
        )
        .bind(until_ms)
        .bind(&row.sink)
        .bind(&row.event_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Releases every claim: a daemon starting up retries at once what a killed process was attempting
    /// (the receiver may have got it: at-least-once, the same event id).
    pub async fn outbox_release_claims(&self) -> Result<u64, StoreError> {
        let done =
            sqlx::query("update outbox set claimed_until = null where claimed_until is not null")
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// Records a delivery the receiver accepted, at once (a restart right after it must not resend).
    pub async fn outbox_delivered(
        &self,
        row: &OutboxRow,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "update outbox set state = 'delivered', attempts = attempts + 1, delivered_at = ?, last_error = null,
                 claimed_until = null
             where sink = ? and event_id = ?",
        )
        .bind(at.to_rfc3339())
        .bind(&row.sink)
        .bind(&row.event_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt: due again at `retry_at_ms`, or dead (`None`).
    pub async fn outbox_failed(
        &self,
        row: &OutboxRow,
        retry_at_ms: Option<i64>,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "update outbox set attempts = attempts + 1, last_error = ?,
                 state = case when ? is null then 'dead' else 'pending' end,
                 next_attempt_ms = coalesce(?, next_attempt_ms), claimed_until = null
             where sink = ? and event_id = ?",
        )
        .bind(error)
        .bind(retry_at_ms)
        .bind(retry_at_ms)
        .bind(&row.sink)
        .bind(&row.event_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Pending deliveries per sink.
    pub async fn outbox_pending(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "select sink, count(*) from outbox where state = 'pending' group by sink",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(s, n)| (s, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// The outbox, newest first, optionally of one state, after the cursor `(occurred_at, sink,
    /// event_id)` of the previous page's last row (the API's view of it).
    pub async fn outbox_list(
        &self,
        state: Option<&str>,
        after: Option<(&str, &str, &str)>,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let (at, sink, id) = after.unwrap_or(("\u{10FFFF}", "", ""));
        let rows = sqlx::query(
            "select * from outbox where (?1 is null or state = ?1)
               and (occurred_at < ?2 or (occurred_at = ?2 and (sink > ?3 or (sink = ?3 and event_id > ?4))))
             order by occurred_at desc, sink, event_id limit ?5",
        )
        .bind(state)
        .bind(at)
        .bind(sink)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// Forgets delivered and dead rows that occurred before `before`: the outbox does not grow forever.
    pub async fn outbox_prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "delete from outbox where state in ('delivered', 'dead') and occurred_at < ?",
        )
        .bind(before.to_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
