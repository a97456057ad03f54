//! The report of a scan (`ScanReport`, one `TenantReport` per tenant) and its rendering for the CLI: JSON
//! (the schema in README, "JSON report") or a table for a terminal: the summary, then non-healthy
//! identities grouped by verdict.
//!
//! An incomplete scan never reads as an all-clear: the table says so at the top and in place of the
//! "nothing found" line, and names per tenant what failed and how many identities could not be judged;
//! the JSON keeps `complete: false`, each tenant's errors, `inventory_complete` and `unjudged`.

use crate::azure::ApiCounts;
use crate::domain::{Finding, Reason, Summary, TenantId, Trigger, Verdict};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Per-tenant outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TenantReport {
    pub tenant_id: TenantId,
    pub complete: bool,
    /// The Graph inventory was read to the end (checks may still have failed).
    #[serde(default = "yes")]
    pub inventory_complete: bool,
    pub identities: u64,
    pub errors: Vec<String>,
    /// Requests made per API during this tenant's scan.
    pub requests: BTreeMap<String, ApiCounts>,
    /// Graph delta link to store with this scan (opt-in delta inventory).
    #[serde(skip)]
    pub delta_link: Option<String>,
    /// When the last full listing of the tenant was made (kept with the delta link).
    #[serde(skip)]
    pub full_sync_at: Option<DateTime<Utc>>,
    /// This tenant's verdicts (not stored per tenant; the scan's summary is).
    #[serde(skip)]
    pub summary: Summary,
    /// Identities checked with an ARM GET (the candidates Resource Graph did not vouch for).
    #[serde(skip)]
    pub arm_checks: u64,
    /// The scan's working rows could not be written or read (the database failed, not Azure).
    #[serde(skip)]
    pub staging_failed: bool,
}

fn yes() -> bool {
    true
}

impl TenantReport {
    /// A tenant about to be scanned: complete until something fails.
    pub fn new(tenant: &TenantId) -> Self {
        Self {
            tenant_id: tenant.clone(),
            complete: true,
            inventory_complete: true,
            identities: 0,
            errors: Vec::new(),
            requests: BTreeMap::new(),
            delta_link: None,
            full_sync_at: None,
            summary: Summary::default(),
            arm_checks: 0,
            staging_failed: false,
        }
    }
}

/// The result of one scan. Scanned without a store, `findings` holds every identity (the CLI filters
/// healthy ones out unless `--all`). Scanned for a store, every verdict is in the scan's working
/// database (the scanner hands its file over beside the report), which recording reads, and `findings`
/// holds only the non-healthy ones (few, and what a report or a notification names).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanReport {
    pub scan_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub complete: bool,
    pub trigger: Trigger,
    pub tenants: Vec<TenantReport>,
    pub summary: Summary,
    pub findings: Vec<Finding>,
}

#[derive(Serialize)]
struct JsonTenant<'a> {
    tenant_id: &'a str,
    complete: bool,
    /// The Graph inventory was read to the end.
    inventory_complete: bool,
    identities: u64,
    /// Identities that could not be judged (`check_failed`); `null` when the inventory is incomplete,
    /// since how many identities the tenant has is then not known.
    unjudged: Option<u64>,
    errors: &'a [String],
    requests: &'a std::collections::BTreeMap<String, crate::azure::ApiCounts>,
}

/// Identities of `tenant` whose check got no answer, or `None` when its inventory is incomplete (how
/// many were never listed is not known).
fn unjudged(report: &ScanReport, tenant: &TenantReport) -> Option<u64> {
    tenant.inventory_complete.then(|| {
        report
            .findings
            .iter()
            .filter(|f| f.tenant_id == tenant.tenant_id && f.reason == Reason::CheckFailed)
            .count() as u64
    })
}

#[derive(Serialize)]
struct JsonReport<'a> {
    scan_id: &'a str,
    started_at: String,
    finished_at: String,
    complete: bool,
    tenants: Vec<JsonTenant<'a>>,
    summary: &'a Summary,
    findings: Vec<&'a Finding>,
}

/// The identities a report lists: non-healthy ones, or all with `--all`.
fn listed(report: &ScanReport, all: bool) -> Vec<&Finding> {
    report
        .findings
        .iter()
        .filter(|f| all || f.verdict != Verdict::Healthy)
        .collect()
}

pub fn render_json(report: &ScanReport, all: bool) -> String {
    let view = JsonReport {
        scan_id: &report.scan_id,
        started_at: report
            .started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        finished_at: report
            .finished_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        complete: report.complete,
        tenants: report
            .tenants
            .iter()
            .map(|t| JsonTenant {
                tenant_id: t.tenant_id.as_str(),
                complete: t.complete,
                inventory_complete: t.inventory_complete,
                identities: t.identities,
                unjudged: unjudged(report, t),
                errors: &t.errors,
                requests: &t.requests,
            })
            .collect(),
        summary: &report.summary,
        findings: listed(report, all),
    };
    serde_json::to_string_pretty(&view).unwrap_or_else(|_| "{}".into())
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

pub fn render_table(report: &ScanReport, all: bool) -> String {
    let mut out = String::new();
    let s = &report.summary;
    let _ = writeln!(
        out,
        "miaudit scan {}  {}  {}",
        report.scan_id,
        report.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
        if report.complete {
            "complete"
        } else {
            "INCOMPLETE"
        }
    );
    let _ = writeln!(
        out,
        "identities: {}   healthy: {}   orphaned: {}   unknown: {}",
        s.total, s.healthy, s.orphaned, s.unknown
    );
    if !report.complete {
        let _ = writeln!(
            out,
            "INCOMPLETE SCAN: not every identity could be checked. The counts and lists below cover only the \
             identities that were judged; orphans may be among the rest. This is not an all-clear."
        );
    }
    render_tenants(&mut out, report);
    let rows = listed(report, all);
    render_groups(&mut out, &rows);
    if rows.is_empty() {
        if report.complete {
            let _ = writeln!(out, "\nno orphaned or unknown identities");
        } else {
            let _ = writeln!(
                out,
                "\nINCOMPLETE: nothing orphaned or unknown among the identities judged, but the scan did not \
                 check everything (see the errors above); this is not an all-clear"
            );
        }
    }
    out
}

/// One line per tenant (complete, or what could not be judged), with its errors.
fn render_tenants(out: &mut String, report: &ScanReport) {
    for t in &report.tenants {
        if t.complete {
            let _ = writeln!(
                out,
                "tenant {}: {} identities, complete",
                t.tenant_id, t.identities
            );
        } else {
            let what = match unjudged(report, t) {
                Some(n) => format!(
                    "{n} of {} identities could not be judged (no answer from Azure)",
                    t.identities
                ),
                None if t.identities == 0 => {
                    "its identities could not be listed, so none were judged".to_owned()
                }
                None => format!(
                    "{} identities judged before the scan failed; the rest of the tenant was not judged",
                    t.identities
                ),
            };
            let _ = writeln!(out, "tenant {}: INCOMPLETE: {what}", t.tenant_id);
        }
        for e in &t.errors {
            let _ = writeln!(out, "  error: {e}");
        }
    }
}

/// The listed identities grouped by verdict, orphaned first.
fn render_groups(out: &mut String, rows: &[&Finding]) {
    for verdict in [Verdict::Orphaned, Verdict::Unknown, Verdict::Healthy] {
        let group: Vec<&&Finding> = rows.iter().filter(|f| f.verdict == verdict).collect();
        if group.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{} ({})",
            verdict.as_str().to_uppercase(),
            group.len()
        );
        let _ = writeln!(
            out,
            "  {:<36}  {:<15}  {:<30}  {:<28}  RESOURCE",
            "OBJECT ID", "TYPE", "REASON", "NAME"
        );
        for f in group {
            let _ = writeln!(
                out,
                "  {:<36}  {:<15}  {:<30}  {:<28}  {}",
                f.object_id,
                f.identity_type.as_str(),
                f.reason.as_str(),
                clip(&f.display_name, 28),
                f.resource_id.as_deref().unwrap_or("-")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EvidenceReport;
    use crate::domain::{EvidenceSource, IdentityType};

    fn tenant(id: &str, complete: bool, inventory_complete: bool, identities: u64) -> TenantReport {
        serde_json::from_value(serde_json::json!({
            "tenant_id": id, "complete": complete, "inventory_complete": inventory_complete,
            "identities": identities, "errors": if complete { vec![] } else { vec!["inventory: boom"] },
            "requests": {}
        }))
        .expect("tenant report")
    }

    fn check_failed(tenant: &str) -> Finding {
        Finding {
            tenant_id: tenant.into(),
            object_id: "o1".into(),
            app_id: "a".into(),
            display_name: "vm".into(),
            identity_type: IdentityType::SystemAssigned,
            resource_id: None,
            subscription_id: None,
            resource_type: None,
            verdict: Verdict::Unknown,
            reason: Reason::CheckFailed,
            detail: "no answer".into(),
            evidence: EvidenceReport {
                source: EvidenceSource::Arm,
                status: None,
                code: None,
                request_id: None,
                correlation_request_id: None,
                checked_at: None,
            },
        }
    }

    fn report(tenants: Vec<TenantReport>, findings: Vec<Finding>) -> ScanReport {
        let now = chrono::Utc::now();
        ScanReport {
            scan_id: "s".into(),
            started_at: now,
            finished_at: now,
            complete: tenants.iter().all(|t| t.complete),
            trigger: Trigger::Cli,
            tenants,
            summary: Summary::default(),
            findings,
        }
    }

    #[test]
    fn a_complete_scan_without_findings_is_an_all_clear() {
        let r = report(vec![tenant("t1", true, true, 3)], vec![]);
        let table = render_table(&r, false);
        assert!(
            table.contains("no orphaned or unknown identities"),
            "{table}"
        );
        assert!(!table.contains("INCOMPLETE"), "{table}");
        let v: serde_json::Value = serde_json::from_str(&render_json(&r, false)).expect("json");
        assert_eq!(v["tenants"][0]["unjudged"], 0);
        assert_eq!(v["tenants"][0]["inventory_complete"], true);
    }

    #[test]
    fn an_incomplete_scan_never_reads_as_an_all_clear() {
        // One tenant's inventory failed; another's checks partly failed.
        let r = report(
            vec![tenant("t1", false, false, 0), tenant("t2", false, true, 5)],
            vec![check_failed("t2")],
        );
        let table = render_table(&r, false);
        assert!(
            !table.contains("no orphaned or unknown identities"),
            "{table}"
        );
        assert!(table.contains("INCOMPLETE SCAN"), "{table}");
        assert!(
            table.contains("tenant t1: INCOMPLETE: its identities could not be listed"),
            "{table}"
        );
        assert!(table.contains("  error: inventory: boom"), "{table}");
        assert!(
            table.contains("tenant t2: INCOMPLETE: 1 of 5 identities could not be judged"),
            "{table}"
        );
        let v: serde_json::Value = serde_json::from_str(&render_json(&r, false)).expect("json");
        assert_eq!(v["complete"], false);
        assert_eq!(v["tenants"][0]["inventory_complete"], false);
        assert_eq!(v["tenants"][0]["unjudged"], serde_json::Value::Null);
        assert_eq!(v["tenants"][0]["errors"][0], "inventory: boom");
        assert_eq!(v["tenants"][1]["unjudged"], 1);

        // Nothing listed at all: still no all-clear line.
        let r = report(vec![tenant("t1", false, false, 0)], vec![]);
        let table = render_table(&r, false);
        assert!(
            !table.contains("no orphaned or unknown identities"),
            "{table}"
        );
        assert!(table.contains("this is not an all-clear"), "{table}");
    }
}
