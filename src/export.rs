//! Publish (support tickets): the list of open orphans with the evidence Microsoft support asks for,
//! as CSV (RFC 4180, UTF-8, via the `csv` crate) or JSON. Used by `GET /api/v1/export` and
//! `miaudit export`.
//!
//! Written as it is read ([`Export`]): a page of findings at a time is read from the store, each row
//! written to the output as it arrives, so memory does not grow with the number of findings, and no
//! reader of the output, however slow, holds the database's snapshot for longer than a page.

use crate::domain::{SubscriptionId, TenantId};
use crate::lifecycle::State;
use crate::output::JsonArray;
use crate::store::{FindingCursor, FindingFilter, StoredFinding};
use crate::store::{Store, StoreError};
use futures::TryStreamExt;
use serde::Serialize;
use std::io::Write;

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
    /// The principal still holds a privileged role (Owner, Contributor, ...).
    #[serde(default)]
    pub high_risk: bool,
    /// Its role assignments, `Role at scope; ...` (blast radius).
    #[serde(default)]
    pub role_assignments: String,
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
            high_risk: stored.high_risk,
            role_assignments: stored.role_summary.clone().unwrap_or_default(),
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

/// The columns of the CSV export, in order: [`Row`]'s fields.
const HEADERS: [&str; 20] = [
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
    "high_risk",
    "role_assignments",
];

/// Findings read per statement.
pub const PAGE: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
}

/// The export of the open orphans matching a tenant and states (default: suspected, confirmed,
/// acknowledged), being written.
pub struct Export {
    format: Format,
    /// Findings read per statement ([`PAGE`]).
    page: u32,
    filter: FindingFilter,
    after: Option<FindingCursor>,
    /// The JSON array, once opened.
    json: Option<JsonArray>,
    started: bool,
    done: bool,
}

impl Export {
    pub fn new(tenant: Option<&TenantId>, states: &[State], format: Format) -> Self {
        let states = if states.is_empty() {
            vec![State::Suspected, State::Confirmed, State::Acknowledged]
        } else {
            states.to_vec()
        };
        Self {
            format,
            page: PAGE,
            filter: FindingFilter {
                states,
                tenant_id: tenant.cloned(),
                ..FindingFilter::default()
            },
            after: None,
            json: None,
            started: false,
            done: false,
        }
    }

    /// Writes the next part of the document to `w`: with the first page its start (the CSV header, the
    /// JSON array's bracket), then each row of the page as it is read, after the last page its end.
    /// False once the document is whole.
    pub async fn write_next(
        &mut self,
        store: &Store,
        w: &mut impl Write,
    ) -> Result<bool, ExportError> {
        if self.done {
            return Ok(false);
        }
        let first = !std::mem::replace(&mut self.started, true);
        match self.format {
            Format::Csv => {
                let mut csv = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(&mut *w);
                if first {
                    csv.write_record(HEADERS).map_err(csv_io)?;
                }
                self.page(store, |row| write_csv(&mut csv, row)).await?;
                csv.flush()?;
            }
            Format::Json => {
                let mut json = self.json.take().unwrap_or_else(|| JsonArray::pretty(0));
                if first {
                    json.open(w)?;
                }
                self.page(store, |row| json.push(w, row)).await?;
                if self.done {
                    json.close(w)?;
                } else {
                    self.json = Some(json);
                }
            }
        }
        Ok(!self.done)
    }

    /// Reads the next page, each row handed to `write` as it is read; notes where the next page starts,
    /// or that this one was the last.
    async fn page(
        &mut self,
        store: &Store,
        mut write: impl FnMut(&Row) -> std::io::Result<()>,
    ) -> Result<(), ExportError> {
        let mut rows = store.stream_findings(&self.filter, self.after.as_ref(), self.page);
        let mut n = 0;
        while let Some(stored) = rows.try_next().await? {
            write(&Row::from(&stored))?;
            n += 1;
            self.after = Some((stored.finding.tenant_id, stored.finding.object_id));
        }
        self.done = n < self.page;
        Ok(())
    }

    /// Writes the whole export to `w`.
    pub async fn write_all(mut self, store: &Store, w: &mut impl Write) -> Result<(), ExportError> {
        while self.write_next(store, w).await? {}
        Ok(())
    }
}

fn write_csv(w: &mut csv::Writer<impl Write>, r: &Row) -> Result<(), std::io::Error> {
    let episode = r.episode.to_string();
    let high_risk = r.high_risk.to_string();
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
        &high_risk,
        &r.role_assignments,
    ];
    w.write_record(fields.iter().map(|f| neutralise(f)))
        .map_err(csv_io)
}

/// The writer's own error as it was (a closed pipe stays one, for the CLI to tell).
fn csv_io(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

/// The support-ticket texts: one per tenant, of its confirmed orphans that await a ticket (with
/// `include_exported`, every confirmed one), each with its evidence, its ARM request ids and the role
/// assignments it still holds, and the ask. Returns the findings written, with their episodes, for the
/// caller to mark exported once the text is safely out. A page of findings at a time.
pub async fn write_tickets(
    store: &Store,
    tenant: Option<&TenantId>,
    include_exported: bool,
    w: &mut impl Write,
) -> Result<Vec<(TenantId, crate::domain::ObjectId, u32)>, ExportError> {
    let filter = FindingFilter {
        states: vec![State::Confirmed],
        tenant_id: tenant.cloned(),
        awaiting_ticket: !include_exported,
        ..FindingFilter::default()
    };
    let mut written = Vec::new();
    let mut after: Option<FindingCursor> = None;
    let mut current: Option<TenantId> = None;
    let mut n_in_tenant = 0usize;
    loop {
        let page = store.list_findings(&filter, after.as_ref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((
            last.finding.tenant_id.clone(),
            last.finding.object_id.clone(),
        ));
        for stored in &page {
            let f = &stored.finding;
            if current.as_ref() != Some(&f.tenant_id) {
                if current.is_some() {
                    ticket_footer(w)?;
                }
                let count = store.count_awaiting(&f.tenant_id, include_exported).await?;
                ticket_header(w, &f.tenant_id, count)?;
                current = Some(f.tenant_id.clone());
                n_in_tenant = 0;
            }
            n_in_tenant += 1;
            let roles = store.role_assignments(&f.tenant_id, &f.object_id).await?;
            ticket_entry(w, n_in_tenant, stored, &roles)?;
            written.push((f.tenant_id.clone(), f.object_id.clone(), stored.episode));
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    if current.is_some() {
        ticket_footer(w)?;
    }
    Ok(written)
}

fn ticket_header(w: &mut impl Write, tenant: &TenantId, count: u64) -> std::io::Result<()> {
    writeln!(
        w,
        "Subject: Orphaned managed identity service principals in tenant {tenant}: request for removal"
    )?;
    writeln!(w)?;
    writeln!(w, "Tenant ID: {tenant}")?;
    writeln!(w, "Service principals listed: {count}")?;
    writeln!(
        w,
        "Prepared by miaudit {} at {}",
        env!("CARGO_PKG_VERSION"),
        time(Some(chrono::Utc::now()))
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "The service principals below are managed identities (servicePrincipalType ManagedIdentity) whose Azure"
    )?;
    writeln!(
        w,
        "resource has been deleted, or now carries another identity. Azure did not delete them, and a customer"
    )?;
    writeln!(
        w,
        "cannot. Each is listed with the Azure Resource Manager answer that shows its resource is gone"
    )?;
    writeln!(
        w,
        "(status, error code, x-ms-request-id, x-ms-correlation-request-id, time in UTC)."
    )?;
    writeln!(w)
}

fn ticket_entry(
    w: &mut impl Write,
    n: usize,
    stored: &StoredFinding,
    roles: &[crate::domain::RoleAssignment],
) -> std::io::Result<()> {
    let f = &stored.finding;
    let e = &f.evidence;
    // Text from Azure on one line each: a line break in a name cannot add lines to the ticket.
    let or_dash = |s: Option<&str>| {
        s.filter(|s| !s.is_empty())
            .unwrap_or("-")
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
    };
    writeln!(w, "{n}. Service principal object ID: {}", f.object_id)?;
    writeln!(
        w,
        "   Application (client) ID: {}",
        or_dash(Some(&f.app_id))
    )?;
    writeln!(w, "   Display name: {}", or_dash(Some(&f.display_name)))?;
    writeln!(
        w,
        "   Identity type: {}",
        f.identity_type.as_str().replace('_', "-")
    )?;
    writeln!(w, "   Resource ID: {}", or_dash(f.resource_id.as_deref()))?;
    writeln!(
        w,
        "   Finding: {} ({})",
        f.reason.as_str(),
        or_dash(Some(&f.detail))
    )?;
    writeln!(
        w,
        "   ARM answer: status {}, code {}, x-ms-request-id {}, x-ms-correlation-request-id {}, at {}",
        e.status.map_or("-".into(), |s| s.to_string()),
        or_dash(e.code.as_deref()),
        or_dash(e.request_id.as_deref()),
        or_dash(e.correlation_request_id.as_deref()),
        or_dash(Some(&time(e.checked_at)))
    )?;
    writeln!(
        w,
        "   First detected: {}; confirmed: {}",
        or_dash(Some(&time(stored.first_detected_at))),
        or_dash(Some(&time(stored.confirmed_at)))
    )?;
    if !roles.is_empty() {
        writeln!(
            w,
            "   Role assignments it still holds (being removed by us):"
        )?;
        for r in roles {
            writeln!(
                w,
                "     - {}{} at {} ({})",
                or_dash(Some(r.role_name.as_deref().unwrap_or("role"))),
                if r.privileged { " [privileged]" } else { "" },
                or_dash(Some(&r.scope)),
                or_dash(Some(&r.id))
            )?;
        }
    }
    writeln!(w)
}

fn ticket_footer(w: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        w,
        "Request: please delete the service principals listed above from this tenant. They belong to deleted"
    )?;
    writeln!(
        w,
        "Azure resources, cannot be removed by the customer, and may keep role assignments that grant access."
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "----------------------------------------------------------------------"
    )?;
    writeln!(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Finding, Reason, Verdict};
    use crate::report::TenantReport;

    /// The export as the previous version made it, whole: every row collected, then rendered into one
    /// string. The streamed export must write exactly this.
    mod whole {
        use super::super::*;

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

        /// The previous rendering: the whole document in one string (rows encoded by the same
        /// `write_csv`; what streaming changes is the framing: the header once, pages, the JSON array).
        pub fn render(rows: &[Row], format: Format) -> String {
            match format {
                Format::Json => serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".into()),
                Format::Csv => {
                    let mut w = csv::WriterBuilder::new()
                        .terminator(csv::Terminator::CRLF)
                        .from_writer(Vec::new());
                    let _ = w.write_record(HEADERS);
                    for r in rows {
                        let _ = write_csv(&mut w, r);
                    }
                    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
                }
            }
        }
    }

    fn orphan(tenant: &str, i: usize) -> Finding {
        let mut f = crate::store::fixtures::finding(
            &format!("o{i:03}"),
            Verdict::Orphaned,
            Reason::ResourceNotFound,
        );
        f.tenant_id = tenant.into();
        // Quoting, a formula, a line break, non-ASCII.
        f.display_name = match i % 4 {
            0 => format!("vm-{i}"),
            1 => format!("name, with \"quotes\" {i}"),
            2 => format!("=HYPERLINK(\"x\") {i}"),
            _ => format!("zwei\nZeilen ü {i}"),
        };
        f.evidence.checked_at = Some(chrono::Utc::now());
        f
    }

    /// A store with `n` orphans in each of two tenants (and a healthy identity, never exported).
    async fn store_with_orphans(pool: sqlx::SqlitePool, n: usize) -> Store {
        let store = Store::from_pool(pool).await.expect("store");
        let mut findings: Vec<Finding> = ["t1", "t2"]
            .iter()
            .flat_map(|t| (0..n).map(move |i| orphan(t, i)))
            .collect();
        let mut healthy = orphan("t1", 999);
        healthy.verdict = Verdict::Healthy;
        healthy.reason = Reason::ResourcePresent;
        findings.push(healthy);
        let mut report = crate::store::fixtures::scan("s1", 0, findings, true);
        report.tenants = vec![
            TenantReport::new(&"t1".into()),
            TenantReport::new(&"t2".into()),
        ];
        store
            .record_scan(&report, std::time::Duration::ZERO)
            .await
            .expect("recorded");
        store
    }

    /// The streamed export, a page of `page` rows at a time: what each call wrote.
    async fn streamed(
        store: &Store,
        tenant: Option<&str>,
        format: Format,
        page: u32,
    ) -> Vec<Vec<u8>> {
        let tenant = tenant.map(TenantId::from);
        let mut export = Export::new(tenant.as_ref(), &[], format);
        export.page = page;
        let mut parts = Vec::new();
        loop {
            let mut part = Vec::new();
            let more = export.write_next(store, &mut part).await.expect("written");
            parts.push(part);
            if !more {
                return parts;
            }
        }
    }

    #[sqlx::test]
    async fn the_streamed_export_is_the_whole_one_byte_for_byte(pool: sqlx::SqlitePool) {
        let store = store_with_orphans(pool, 7).await;
        for format in [Format::Csv, Format::Json] {
            for tenant in [None, Some("t2"), Some("nobody")] {
                let want = whole::render(
                    &whole::load_rows(&store, tenant.map(TenantId::from).as_ref(), &[])
                        .await
                        .expect("rows"),
                    format,
                );
                for page in [1, 3, 7, 1000] {
                    let got = streamed(&store, tenant, format, page).await.concat();
                    assert_eq!(
                        String::from_utf8(got).expect("utf-8"),
                        want,
                        "{format:?}, tenant {tenant:?}, pages of {page}"
                    );
                }
            }
            // And it parses: 14 orphans, the healthy identity left out.
            let text = streamed(&store, None, format, 3).await.concat();
            let rows: Vec<Row> = match format {
                Format::Json => serde_json::from_slice(&text).expect("one JSON document"),
                Format::Csv => csv::Reader::from_reader(text.as_slice())
                    .deserialize()
                    .collect::<Result<_, _>>()
                    .expect("CSV"),
            };
            assert_eq!(rows.len(), 14, "{format:?}");
        }
    }

    /// Memory does not grow with the findings: each call reads one page and writes its rows, and only
    /// the first and last add the document's start and end.
    #[sqlx::test]
    async fn the_export_is_written_a_page_at_a_time(pool: sqlx::SqlitePool) {
        let store = store_with_orphans(pool, 5).await;
        let parts = streamed(&store, None, Format::Csv, 3).await;
        // 10 rows in pages of 3: four pages (the last one short), the header with the first.
        let lines: Vec<usize> = parts
            .iter()
            .map(|p| {
                csv::ReaderBuilder::new()
                    .has_headers(false)
                    .from_reader(p.as_slice())
                    .records()
                    .count()
            })
            .collect();
        assert_eq!(lines, [4, 3, 3, 1]);
        let parts = streamed(&store, None, Format::Json, 4).await;
        assert_eq!(parts.len(), 3);
        assert!(parts[0].starts_with(b"[\n  {"));
        assert!(parts[2].ends_with(b"\n]"));
    }

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
            high_risk: true,
            role_assignments:
                "Owner at /subscriptions/s; Reader at /subscriptions/s/resourceGroups/rg".into(),
        };
        let text = whole::render(std::slice::from_ref(&row), Format::Csv);
        let mut rd = csv::Reader::from_reader(text.as_bytes());
        let back: Vec<Row> = rd.deserialize().collect::<Result<_, _>>().expect("parses");
        assert_eq!(back, vec![row]);
    }
}
