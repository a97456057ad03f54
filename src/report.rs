//! Publish (CLI): the scan report as JSON (the schema promised in ARCHITECTURE.md) or as a table for a
//! terminal: the summary, then non-healthy identities grouped by verdict.

use crate::domain::Verdict;
use crate::scan::{Finding, ScanReport};
use serde::Serialize;
use std::fmt::Write;

#[derive(Serialize)]
struct JsonTenant<'a> {
    tenant_id: &'a str,
    complete: bool,
    identities: u64,
    errors: &'a [String],
    requests: &'a std::collections::BTreeMap<String, crate::azure::ApiCounts>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    scan_id: &'a str,
    started_at: String,
    finished_at: String,
    complete: bool,
    tenants: Vec<JsonTenant<'a>>,
    summary: &'a crate::scan::Summary,
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
                tenant_id: &t.tenant_id,
                complete: t.complete,
                identities: t.identities,
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
    for t in &report.tenants {
        let _ = writeln!(
            out,
            "tenant {}: {} identities, {}",
            t.tenant_id,
            t.identities,
            if t.complete { "complete" } else { "incomplete" }
        );
        for e in &t.errors {
            let _ = writeln!(out, "  error: {e}");
        }
    }
    let rows = listed(report, all);
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
    if rows.is_empty() {
        let _ = writeln!(out, "\nno orphaned or unknown identities");
    }
    out
}
