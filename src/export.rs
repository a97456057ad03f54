//! Publish (support tickets): the list of open orphans with the evidence Microsoft support asks for,
//! as CSV (RFC 4180, UTF-8, via the `csv` crate) or JSON. Used by `GET /api/v1/export` and
//! `miaudit export`.

use crate::domain::{SubscriptionId, TenantId};
use crate::lifecycle::State;
use crate::store::{FindingFilter, StoredFinding};
use crate::store::{Store, StoreError};
use serde::Serialize;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

/// One row of the export.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Row {
    pub tenant_id: String,
    pub object_id: String,
    pub app_id: String,
    pub display_name: String,
    pub identity_type: String,
    pub resource_id: String,
    pub subscription_id: String,
    pub reason: String,
    pub state: String,
    pub episode: u32,
    pub first_detected_at: String,
    /// The latest scan that judged the identity orphaned.
    pub last_confirmed_at: String,
    pub ticket: String,
    pub evidence_status: String,
    pub evidence_code: String,
    pub evidence_request_id: String,
    pub evidence_correlation_request_id: String,
    pub evidence_checked_at: String,
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl From<&StoredFinding> for Row {
    fn from(stored: &StoredFinding) -> Self {
        let f = &stored.finding;
        Self {
            tenant_id: f.tenant_id.to_string(),
            object_id: f.object_id.to_string(),
            app_id: f.app_id.clone(),
            display_name: f.display_name.clone(),
            identity_type: f.identity_type.as_str().to_owned(),
            resource_id: f.resource_id.clone().unwrap_or_default(),
            subscription_id: f
                .subscription_id
                .as_ref()
                .map(SubscriptionId::to_string)
                .unwrap_or_default(),
            reason: f.reason.as_str().to_owned(),
            state: stored
                .state
                .map(State::as_str)
                .unwrap_or_default()
                .to_owned(),
            episode: stored.episode,
            first_detected_at: time(stored.first_detected_at),
            last_confirmed_at: time(stored.last_orphaned_at),
            ticket: stored.ticket.clone().unwrap_or_default(),
            evidence_status: f.evidence.status.map(|s| s.to_string()).unwrap_or_default(),
            evidence_code: f.evidence.code.clone().unwrap_or_default(),
            evidence_request_id: f.evidence.request_id.clone().unwrap_or_default(),
            evidence_correlation_request_id: f
                .evidence
                .correlation_request_id
                .clone()
                .unwrap_or_default(),
            evidence_checked_at: time(f.evidence.checked_at),
        }
    }
}

/// Neutralises a field a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, and tab / carriage
/// return, per OWASP's CSV injection guidance) by prefixing a single quote.
pub fn neutralise(field: &str) -> String {
    if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_owned()
    }
}

/// The open orphans matching `tenant` and `states` (default: suspected, confirmed, acknowledged).
pub async fn load_rows(
    store: &Store,
    tenant: Option<&TenantId>,
    states: &[State],
) -> Result<Vec<Row>, StoreError> {
    let states = if states.is_empty() {
        vec![State::Suspected, State::Confirmed, State::Acknowledged]
    } else {
        states.to_vec()
    };
    let filter = FindingFilter {
        states,
        tenant_id: tenant.cloned(),
        ..FindingFilter::default()
    };
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_findings(&filter, after.as_ref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some((
            last.finding.tenant_id.clone(),
            last.finding.object_id.clone(),
        ));
        rows.extend(page.iter().map(Row::from));
        if page.len() < 1000 {
            break;
        }
    }
    Ok(rows)
}

pub fn render(rows: &[Row], format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".into()),
        Format::Csv => {
            let mut w = csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(Vec::new());
            let headers = [
                "tenant_id",
                "object_id",
                "app_id",
                "display_name",
                "identity_type",
                "resource_id",
                "subscription_id",
                "reason",
                "state",
                "episode",
                "first_detected_at",
                "last_confirmed_at",
                "ticket",
                "evidence_status",
                "evidence_code",
                "evidence_request_id",
                "evidence_correlation_request_id",
                "evidence_checked_at",
            ];
            let _ = w.write_record(headers);
            for r in rows {
                let episode = r.episode.to_string();
                let fields = [
                    &r.tenant_id,
                    &r.object_id,
                    &r.app_id,
                    &r.display_name,
                    &r.identity_type,
                    &r.resource_id,
                    &r.subscription_id,
                    &r.reason,
                    &r.state,
                    &episode,
                    &r.first_detected_at,
                    &r.last_confirmed_at,
                    &r.ticket,
                    &r.evidence_status,
                    &r.evidence_code,
                    &r.evidence_request_id,
                    &r.evidence_correlation_request_id,
                    &r.evidence_checked_at,
                ];
                let _ = w.write_record(fields.iter().map(|f| neutralise(f)));
            }
            String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(neutralise("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(neutralise("+1"), "'+1");
        assert_eq!(neutralise("-2"), "'-2");
        assert_eq!(neutralise("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(neutralise("vm-1"), "vm-1");
    }

    #[test]
    fn csv_quotes_and_round_trips() {
        let row = Row {
            tenant_id: "t".into(),
            object_id: "o".into(),
            app_id: "a".into(),
            display_name: "name, with \"quotes\"\nand a line".into(),
            identity_type: "system_assigned".into(),
            resource_id: "/subscriptions/s/x".into(),
            subscription_id: "s".into(),
            reason: "resource_not_found".into(),
            state: "confirmed".into(),
            episode: 1,
            first_detected_at: "2026-01-01T00:00:00Z".into(),
            last_confirmed_at: "2026-01-01T02:00:00Z".into(),
            ticket: String::new(),
            evidence_status: "404".into(),
            evidence_code: "ResourceNotFound".into(),
            evidence_request_id: "r".into(),
            evidence_correlation_request_id: "c".into(),
            evidence_checked_at: "2026-01-01T02:00:00Z".into(),
        };
        let text = render(std::slice::from_ref(&row), Format::Csv);
        let mut rd = csv::Reader::from_reader(text.as_bytes());
        let back: Vec<Row> = rd.deserialize().collect::<Result<_, _>>().expect("parses");
        assert_eq!(back, vec![row]);
    }
}
