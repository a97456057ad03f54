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

/// What a set of events is enqueued as: a recorded scan, or a change of the allowlist.
struct Batch<'a> {
    /// The scan id (or the allowlist change's label) the rows and digests carry.
    scan_id: &'a str,
    occurred_at: String,
    now_ms: i64,
}

/// Enqueues the events of the scan being recorded: per transition into `confirmed` of a finding no
/// suppression covers, and into `resolved` from `confirmed` or `acknowledged` of one that was not
/// suppressed before this scan (a suspected or suppressed finding was never announced), a row per json
/// sink that wants it; per slack or teams sink, one digest of the scan if it has any event that sink
/// wants. `temp.pre_suppressed` holds the findings suppressed before this scan's allowlist was applied.
/// Returns how many rows were written.
pub(super) async fn enqueue(
    tx: &mut Transaction<'_, Sqlite>,
    report: &ScanReport,
    subscribers: &[Subscriber],
) -> Result<u64, StoreError> {
    if subscribers.is_empty() {
        return Ok(0);
    }
    let batch = Batch {
        scan_id: &report.scan_id,
        occurred_at: report.finished_at.to_rfc3339(),
        now_ms: Utc::now().timestamp_millis(),
    };
    let mut writer = Writer::new(subscribers);
    let mut after = 0i64;
    loop {
        let rows = sqlx::query(
            "select h.id, h.tenant_id, h.object_id, h.episode, h.at, h.from_state, h.to_state, h.resolution,
                 f.app_id, f.display_name, f.identity_type, f.resource_id, f.verdict, f.reason, f.detail,
                 f.evidence
             from finding_history h
             join findings f on f.tenant_id = h.tenant_id and f.object_id = h.object_id
             where h.scan_id = ? and h.id > ?
               and ((h.to_state = 'confirmed' and f.suppressed_by is null)
                    or (h.to_state = 'resolved' and h.from_state in ('confirmed', 'acknowledged')
                        and not exists (select 1 from temp.pre_suppressed p
                                        where p.tenant_id = h.tenant_id and p.object_id = h.object_id)))
             order by h.id limit ?",
        )
        .bind(&report.scan_id)
        .bind(after)
        .bind(CHUNK)
        .fetch_all(&mut **tx)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("id")?;
        writer.rows(tx, &rows, &batch).await?;
    }
    writer.digests(tx, &batch).await
}

/// Notes, before the allowlist is applied in a recording, which findings it covered
/// (`temp.pre_suppressed`, read by [`enqueue`]).
pub(super) async fn note_suppressed(tx: &mut Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    sqlx::query(
        "create temp table if not exists pre_suppressed (tenant_id text, object_id text, primary key (tenant_id, object_id))",
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query("delete from temp.pre_suppressed")
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "insert into temp.pre_suppressed select tenant_id, object_id from findings
         where state is not null and suppressed_by is not null",
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Enqueues `orphan.confirmed` for confirmed (or acknowledged) findings a suppression no longer covers:
/// they were never announced while it did. The event id is the one of their confirmation, so one that
/// was announced before the suppression is not sent again.
pub(super) async fn enqueue_reactivated(
    tx: &mut Transaction<'_, Sqlite>,
    keys: &[(String, String)],
    subscribers: &[Subscriber],
    at: chrono::DateTime<Utc>,
) -> Result<u64, StoreError> {
    if subscribers.is_empty() || keys.is_empty() {
        return Ok(0);
    }
    let label = format!("allowlist-{}", at.timestamp_millis());
    let batch = Batch {
        scan_id: &label,
        occurred_at: at.to_rfc3339(),
        now_ms: Utc::now().timestamp_millis(),
    };
    let mut writer = Writer::new(subscribers);
    for (tenant, object) in keys {
        let rows = sqlx::query(
            "select f.episode, ? as at, null as from_state, 'confirmed' as to_state, null as resolution,
                 f.tenant_id, f.object_id, f.app_id, f.display_name, f.identity_type, f.resource_id,
                 f.verdict, f.reason, f.detail, f.evidence
             from findings f
             where f.tenant_id = ? and f.object_id = ? and f.suppressed_by is null
               and f.state in ('confirmed', 'acknowledged')",
        )
        .bind(&batch.occurred_at)
        .bind(tenant)
        .bind(object)
        .fetch_all(&mut **tx)
        .await?;
        writer.rows(tx, &rows, &batch).await?;
    }
    writer.digests(tx, &batch).await
}

/// Writes events to the outbox for each sink that wants them, gathering the digests.
struct Writer<'s> {
    subscribers: &'s [Subscriber],
    digests: Vec<(&'s Subscriber, Digest)>,
    written: u64,
}

impl<'s> Writer<'s> {
    fn new(subscribers: &'s [Subscriber]) -> Self {
        Self {
            subscribers,
            digests: subscribers
                .iter()
                .filter(|s| s.kind.is_digest())
                .map(|s| (s, Digest::default()))
                .collect(),
            written: 0,
        }
    }

    async fn rows(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        rows: &[sqlx::sqlite::SqliteRow],
        batch: &Batch<'_>,
    ) -> Result<(), StoreError> {
        for r in rows {
            let (event, mut doc) = event_document(r)?;
            let tenant = doc["tenant_id"].as_str().unwrap_or_default().to_owned();
            let object = doc["object_id"].as_str().unwrap_or_default().to_owned();
            let roles = super::roles::of_in(tx, &tenant, &object).await?;
            doc["high_risk"] = json!(roles.iter().any(|a| a.privileged));
            doc["role_assignments"] = serde_json::to_value(&roles).unwrap_or_default();
            let id = doc["event_id"].as_str().unwrap_or_default().to_owned();
            let body = doc.to_string();
            for s in self
                .subscribers
                .iter()
                .filter(|s| !s.kind.is_digest() && s.events.contains(&event))
            {
                self.written += insert(
                    tx,
                    &s.sink,
                    &id,
                    event.event_name(),
                    Some(&tenant),
                    batch,
                    &body,
                )
                .await?;
            }
            for (s, d) in &mut self.digests {
                if s.events.contains(&event) {
                    d.add(event, &doc);
                }
            }
        }
        Ok(())
    }

    async fn digests(
        self,
        tx: &mut Transaction<'_, Sqlite>,
        batch: &Batch<'_>,
    ) -> Result<u64, StoreError> {
        let mut written = self.written;
        for (s, d) in self.digests {
            if d.total() == 0 {
                continue;
            }
            let body = json!({
                "scan_id": batch.scan_id,
                "occurred_at": batch.occurred_at,
                "confirmed": d.confirmed,
                "resolved": d.resolved,
                "findings": d.first,
            })
            .to_string();
            let id = digest_id(batch.scan_id, &s.sink);
            written += insert(tx, &s.sink, &id, "digest", None, batch, &body).await?;
        }
        Ok(written)
    }
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

async fn insert(
    tx: &mut Transaction<'_, Sqlite>,
    sink: &str,
    event_id: &str,
    kind: &str,
    tenant: Option<&str>,
    batch: &Batch<'_>,
    body: &str,
) -> Result<u64, StoreError> {
    // `or ignore`: the same event enqueued twice (a confirmation announced again after its suppression
    // ends, say) keeps the first row and its delivery state.
    let done = sqlx::query(
        "insert or ignore into outbox (sink, event_id, type, tenant_id, scan_id, occurred_at, body, next_attempt_ms)
         values (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(sink)
    .bind(event_id)
    .bind(kind)
    .bind(tenant)
    .bind(batch.scan_id)
    .bind(&batch.occurred_at)
    .bind(body)
    .bind(batch.now_ms)
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
    /// Pending deliveries to `sinks` due at `now_ms` and not being attempted, oldest first (rows of a
    /// sink no longer configured wait for it to come back).
    pub async fn outbox_due(
        &self,
        now_ms: i64,
        sinks: &[String],
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "select * from outbox
             where state = 'pending' and next_attempt_ms <= ?1 and coalesce(claimed_until, 0) <= ?1
               and sink in (select value from json_each(?3))
             order by attempts, next_attempt_ms, occurred_at limit ?2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .bind(serde_json::to_string(sinks).unwrap_or_else(|_| "[]".into()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// When the next pending delivery to one of `sinks` is due (Unix ms), if any.
    pub async fn outbox_next_due(&self, sinks: &[String]) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "select min(max(next_attempt_ms, coalesce(claimed_until, 0))) from outbox
             where state = 'pending' and sink in (select value from json_each(?))",
        )
        .bind(serde_json::to_string(sinks).unwrap_or_else(|_| "[]".into()))
        .fetch_one(&self.pool)
        .await?)
    }

    /// Holds back every other due delivery of a sink that just failed until `until_ms` (its own next
    /// attempt), without counting an attempt: a receiver that is down is not asked once per event.
    pub async fn outbox_postpone_sink(&self, sink: &str, until_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "update outbox set next_attempt_ms = ?1
             where sink = ?2 and state = 'pending' and next_attempt_ms < ?1 and claimed_until is null",
        )
        .bind(until_ms)
        .bind(sink)
        .execute(&self.pool)
        .await?;
        Ok(())
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
            "update outbox set claimed_until = ?1
             where sink = ?2 and event_id = ?3 and state = 'pending' and coalesce(claimed_until, 0) <= ?4
               and next_attempt_ms <= ?4",
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
