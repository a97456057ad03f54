//! The report of a scan (`ScanReport`, one `TenantReport` per tenant) and its rendering for the CLI: JSON
//! (the schema in README, "JSON report") or a table for a terminal: the summary, then non-healthy
//! identities grouped by verdict.
//!
//! An incomplete scan never reads as an all-clear: the table says so at the top and in place of the
//! "nothing found" line, and names per tenant what failed and how many identities could not be judged;
//! the JSON keeps `complete: false`, each tenant's errors, `inventory_complete` and `unjudged`.
//!
//! Both are written as they are produced ([`write_json`], [`write_table`]): the identities come as a
//! stream (with `--all` after a scan into a store, every verdict read from the scan's working database),
//! each written as it arrives, so the report's memory does not grow with the tenant.

use crate::azure::ApiCounts;
use crate::domain::{Finding, Reason, Summary, TenantId, Trigger, Verdict};
use crate::output::{JsonArray, close_object, open_object_field};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

/// Per-tenant outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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
    /// Identities whose check got no answer (`check_failed`), counted by the judge: a report made for a
    /// store does not hold its verdicts (they are streamed from the scan's working database).
    #[serde(skip)]
    pub unjudged: u64,
    /// How much of the estate the credential sees: the subscriptions its managed identities name, and
    /// how many of those the subscription listing shows (absent when the inventory or the listing
    /// failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_coverage: Option<Coverage>,
    /// Blast radius: the role assignments the identities judged orphaned in this scan still hold
    /// (`None` when the lookup failed or did not run: what is stored stays).
    #[serde(skip)]
    pub role_assignments: Option<Vec<(crate::domain::ObjectId, crate::domain::RoleAssignment)>>,
    /// Role assignments to service principals that no longer exist (`None`: not judged in this scan).
    #[serde(skip)]
    pub dangling: Option<crate::domain::DanglingCheck>,
}

/// Subscriptions referenced by a tenant's managed identities, and those of them the credential lists.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Coverage {
    pub referenced: u64,
    pub listed: u64,
    /// `listed / referenced`, 1 when no identity names a subscription.
    pub ratio: f64,
}

impl Coverage {
    pub fn new(referenced: u64, listed: u64) -> Self {
        let ratio = if referenced == 0 {
            1.0
        } else {
            listed as f64 / referenced as f64
        };
        Self {
            referenced,
            listed,
            ratio,
        }
    }
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
            unjudged: 0,
            staging_failed: false,
            subscription_coverage: None,
            role_assignments: None,
            dangling: None,
        }
    }
}

/// The result of one scan. Scanned without a store, `findings` holds every identity (the CLI filters
/// healthy ones out unless `--all`). Scanned for a store, every verdict is in the scan's working
/// database (the scanner hands its file over beside the report), which recording and the printed report
/// read as they go, and `findings` is empty: a tenant of unknowns would otherwise be held whole.
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
/// The judge's count, or, for a report built with its verdicts and no count, the report's own.
fn unjudged(report: &ScanReport, tenant: &TenantReport) -> Option<u64> {
    tenant.inventory_complete.then(|| {
        let own = report
            .findings
            .iter()
            .filter(|f| f.tenant_id == tenant.tenant_id && f.reason == Reason::CheckFailed)
            .count() as u64;
        tenant.unjudged.max(own)
    })
}

/// The JSON report but for its `findings`, which follow it.
#[derive(Serialize)]
struct JsonHead<'a> {
    scan_id: &'a str,
    started_at: String,
    finished_at: String,
    complete: bool,
    tenants: Vec<JsonTenant<'a>>,
    summary: &'a Summary,
}

impl<'a> JsonHead<'a> {
    fn of(report: &'a ScanReport) -> Self {
        Self {
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
        }
    }
}

/// Identities a report lists, as they are read; an error is the source's (the working database).
pub type Listed<'a> = BoxStream<'a, Result<Finding, String>>;

/// The identities of the report's own `findings` it lists, of `verdict` or all: the non-healthy ones,
/// and with `all` the healthy ones too.
pub fn own_listed(report: &ScanReport, all: bool, verdict: Option<Verdict>) -> Listed<'_> {
    futures::stream::iter(
        report
            .findings
            .iter()
            .filter(move |f| {
                (all || f.verdict != Verdict::Healthy) && verdict.is_none_or(|v| f.verdict == v)
            })
            .cloned()
            .map(Ok),
    )
    .boxed()
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
    #[error("reading the scan's verdicts: {0}")]
    Read(String),
}

/// Writes the JSON report (and a line break) to `w`, the identities of `listed` in its `findings`, each
/// as it arrives: byte for byte what serializing the whole report at once writes.
pub async fn write_json(
    report: &ScanReport,
    mut listed: Listed<'_>,
    w: &mut impl Write,
) -> Result<(), WriteError> {
    open_object_field(w, &JsonHead::of(report), "findings")?;
    let mut findings = JsonArray::pretty(1);
    findings.open(w)?;
    while let Some(f) = listed.try_next().await.map_err(WriteError::Read)? {
        findings.push(w, &f)?;
    }
    findings.close(w)?;
    close_object(w)?;
    w.write_all(b"\n")?;
    Ok(())
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

/// Writes the table to `w`: the summary, the tenants, then the listed identities grouped by verdict,
/// orphaned first; with `all` the healthy ones last. The identities of each verdict come from `source`
/// (a stream per verdict, counted by the report's summary: every verdict of a scan into a store, read
/// from its working database as it is written) or else from the report's own findings.
pub async fn write_table<'a>(
    report: &ScanReport,
    all: bool,
    source: Option<&dyn Fn(Verdict) -> Listed<'a>>,
    w: &mut impl Write,
) -> Result<(), WriteError> {
    let mut head = String::new();
    let s = &report.summary;
    let _ = writeln!(
        head,
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
        head,
        "identities: {}   healthy: {}   orphaned: {}   unknown: {}",
        s.total, s.healthy, s.orphaned, s.unknown
    );
    if !report.complete {
        let _ = writeln!(
            head,
            "INCOMPLETE SCAN: not every identity could be checked. The counts and lists below cover only the \
             identities that were judged; orphans may be among the rest. This is not an all-clear."
        );
    }
    render_tenants(&mut head, report);
    w.write_all(head.as_bytes())?;
    let mut any = false;
    for verdict in [Verdict::Orphaned, Verdict::Unknown, Verdict::Healthy] {
        if verdict == Verdict::Healthy && !all {
            continue;
        }
        let (n, mut rows) = match source {
            Some(listed) => (s.count(verdict), listed(verdict)),
            None => {
                let own = report.findings.iter().filter(|f| f.verdict == verdict);
                (own.count() as u64, own_listed(report, all, Some(verdict)))
            }
        };
        if n == 0 {
            continue;
        }
        any = true;
        writeln!(w, "\n{} ({n})", verdict.as_str().to_uppercase())?;
        writeln!(
            w,
            "  {:<36}  {:<15}  {:<30}  {:<28}  RESOURCE",
            "OBJECT ID", "TYPE", "REASON", "NAME"
        )?;
        while let Some(f) = rows.try_next().await.map_err(WriteError::Read)? {
            writeln!(
                w,
                "  {:<36}  {:<15}  {:<30}  {:<28}  {}",
                f.object_id,
                f.identity_type.as_str(),
                f.reason.as_str(),
                clip(&f.display_name, 28),
                f.resource_id.as_deref().unwrap_or("-")
            )?;
        }
    }
    if !any {
        if report.complete {
            writeln!(w, "\nno orphaned or unknown identities")?;
        } else {
            writeln!(
                w,
                "\nINCOMPLETE: nothing orphaned or unknown among the identities judged, but the scan did not \
                 check everything (see the errors above); this is not an all-clear"
            )?;
        }
    }
    Ok(())
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

    /// The table as `miaudit scan` prints it, from the report's own findings.
    fn render_table(r: &ScanReport, all: bool) -> String {
        let mut out = Vec::new();
        futures::executor::block_on(write_table(r, all, None, &mut out)).expect("written");
        String::from_utf8(out).expect("utf-8")
    }

    /// The JSON report as `miaudit scan --output json` prints it, from the report's own findings.
    fn render_json(r: &ScanReport, all: bool) -> String {
        let mut out = Vec::new();
        futures::executor::block_on(write_json(r, own_listed(r, all, None), &mut out))
            .expect("written");
        String::from_utf8(out).expect("utf-8")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn identity(tenant: &str, n: u32, verdict: Verdict, reason: Reason) -> Finding {
        let mut f = check_failed(tenant);
        f.object_id = format!("00000000-0000-0000-0000-00000000000{n}").into();
        f.app_id = format!("10000000-0000-0000-0000-00000000000{n}");
        f.verdict = verdict;
        f.reason = reason;
        f.resource_id = Some(format!(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm{n}"
        ));
        f.subscription_id = Some("s".into());
        f.resource_type = Some("microsoft.compute/virtualmachines".into());
        f.detail = format!("detail of {n}");
        f.evidence = EvidenceReport {
            source: EvidenceSource::Arm,
            status: Some(404),
            code: Some("ResourceNotFound".into()),
            request_id: Some(format!("req-{n}")),
            correlation_request_id: None,
            checked_at: Some(at("2026-03-01T10:00:30.5Z")),
        };
        f
    }

    /// Reports whose rendering by the previous version (whole strings) is kept in tests/golden: a
    /// complete scan of two tenants, one with failed checks, and an empty one. Their findings are
    /// every verdict with `all`, else the non-healthy ones (as a scan into a store reports).
    pub(super) fn golden_reports(all: bool) -> Vec<(&'static str, ScanReport)> {
        let mut t1 = tenant("72f988bf-86f1-41af-91ab-2d7cd011db47", true, true, 4);
        t1.requests.insert(
            "arm".into(),
            serde_json::from_value(
                serde_json::json!({"requests": 3, "throttled": 1, "retries": 1, "failures": 0}),
            )
            .expect("counts"),
        );
        let t2 = tenant("t2", false, true, 2);
        let mut orphan = identity(
            t1.tenant_id.as_str(),
            1,
            Verdict::Orphaned,
            Reason::ResourceNotFound,
        );
        orphan.display_name = "vm-één, \"quoted\"".into();
        let mut long = identity(
            t1.tenant_id.as_str(),
            2,
            Verdict::Healthy,
            Reason::ResourcePresent,
        );
        long.display_name = "a-display-name-much-longer-than-the-column-allows".into();
        let mut denied = identity(
            t1.tenant_id.as_str(),
            3,
            Verdict::Unknown,
            Reason::AccessDenied,
        );
        denied.resource_id = None;
        let healthy = identity(
            t1.tenant_id.as_str(),
            4,
            Verdict::Healthy,
            Reason::ResourcePresent,
        );
        let mut failed = identity("t2", 5, Verdict::Unknown, Reason::CheckFailed);
        failed.detail = "no answer:\nthe second line".into();
        failed.evidence.status = None;
        let mismatch = identity("t2", 6, Verdict::Orphaned, Reason::PrincipalMismatch);
        let findings: Vec<Finding> = [orphan, long, denied, healthy, failed, mismatch]
            .into_iter()
            .filter(|f| all || f.verdict != Verdict::Healthy)
            .collect();
        let mut full = report(vec![t1.clone(), t2], findings);
        full.scan_id = "3f2c0a8e-0000-4000-8000-000000000001".into();
        full.started_at = at("2026-03-01T10:00:00.123Z");
        full.finished_at = at("2026-03-01T10:00:42.9Z");
        full.summary = Summary {
            total: 6,
            healthy: 2,
            orphaned: 2,
            unknown: 2,
        };
        let mut empty = report(vec![t1], vec![]);
        empty.scan_id = "3f2c0a8e-0000-4000-8000-000000000002".into();
        empty.started_at = full.started_at;
        empty.finished_at = full.finished_at;
        vec![("full", full), ("empty", empty)]
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

    fn golden(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        std::fs::read_to_string(&path).expect("golden file")
    }

    fn streamed(findings: Vec<Finding>) -> Listed<'static> {
        futures::stream::iter(findings.into_iter().map(Ok)).boxed()
    }

    /// The streamed report is, byte for byte, what the previous version printed (tests/golden, written
    /// by its whole-string renderer): from the report's own findings; with `--all` after a scan into a
    /// store, from the report's non-healthy findings and a stream of every verdict (JSON) or of the
    /// healthy ones (table); with `--all` after a scan without a store, from a report holding them all.
    #[test]
    fn the_streamed_report_is_the_previous_format_byte_for_byte() {
        for ((name, stored), (_, whole)) in
            golden_reports(false).into_iter().zip(golden_reports(true))
        {
            let json = |all: bool| golden(&format!("report-{name}-all-{all}.json"));
            let table = |all: bool| golden(&format!("report-{name}-all-{all}.txt"));
            assert_eq!(render_json(&stored, false), json(false), "{name}");
            assert_eq!(render_table(&stored, false), table(false), "{name}");
            assert_eq!(render_json(&whole, true), json(true), "{name}");
            assert_eq!(render_table(&whole, true), table(true), "{name}");

            // A report made for a store holds no verdicts: they are streamed from the working database,
            // and the judge counted the unjudged ones.
            let mut bare = stored.clone();
            bare.findings.clear();
            for t in &mut bare.tenants {
                t.unjudged = whole
                    .findings
                    .iter()
                    .filter(|f| f.tenant_id == t.tenant_id && f.reason == Reason::CheckFailed)
                    .count() as u64;
            }
            let of = |keep: &dyn Fn(&Finding) -> bool| -> Listed<'static> {
                streamed(whole.findings.iter().filter(|f| keep(f)).cloned().collect())
            };
            let by_verdict = |v: Verdict| of(&|f: &Finding| f.verdict == v);
            for all in [false, true] {
                let mut out = Vec::new();
                let listed = of(&|f: &Finding| all || f.verdict != Verdict::Healthy);
                futures::executor::block_on(write_json(&bare, listed, &mut out)).expect("written");
                assert_eq!(String::from_utf8(out).expect("utf-8"), json(all), "{name}");
                let mut out = Vec::new();
                futures::executor::block_on(write_table(&bare, all, Some(&by_verdict), &mut out))
                    .expect("written");
                assert_eq!(String::from_utf8(out).expect("utf-8"), table(all), "{name}");
            }

            let v: serde_json::Value =
                serde_json::from_str(&json(true)).expect("one JSON document");
            assert_eq!(
                v["findings"].as_array().map(Vec::len),
                Some(whole.findings.len())
            );
        }
    }

    /// The writers consume the stream as they write: each identity is written before the next is
    /// asked for, so nothing is collected, whatever the number.
    #[test]
    fn each_identity_is_written_before_the_next_is_read() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        /// Counts what reaches it.
        struct Counting(Arc<AtomicUsize>);
        impl Write for Counting {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.fetch_add(buf.len(), Ordering::SeqCst);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (_, whole) = golden_reports(true).remove(0);
        let n = 10_000;
        for json in [true, false] {
            let written = Arc::new(AtomicUsize::new(0));
            // What had been written when each identity was asked for.
            let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
            let (w, s) = (written.clone(), seen.clone());
            let template = whole.findings[1].clone();
            let rows: Listed<'_> = futures::stream::iter(0..n)
                .map(move |i| {
                    s.lock().push(w.load(Ordering::SeqCst));
                    let mut f = template.clone();
                    f.object_id = format!("{i:08}").into();
                    Ok(f)
                })
                .boxed();
            let mut out = Counting(written.clone());
            let done = if json {
                futures::executor::block_on(write_json(&whole, rows, &mut out))
            } else {
                let mut whole = whole.clone();
                whole.summary.healthy = n as u64;
                let rows = std::cell::RefCell::new(Some(rows));
                let source = |v: Verdict| -> Listed<'_> {
                    let taken = if v == Verdict::Healthy {
                        rows.borrow_mut().take()
                    } else {
                        None
                    };
                    taken.unwrap_or_else(|| futures::stream::empty().boxed())
                };
                futures::executor::block_on(write_table(&whole, true, Some(&source), &mut out))
            };
            done.expect("written");
            let seen = seen.lock();
            assert_eq!(seen.len(), n);
            assert!(
                seen.windows(2).all(|p| p[1] > p[0]),
                "an identity was asked for before the previous one was written (json: {json})"
            );
        }
    }
}
