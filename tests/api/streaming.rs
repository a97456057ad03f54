//! Output written as it is read: the export (API and CLI) longer than a page, the findings pages of the
//! API, `scan --all` reading every verdict back, and a reader of stdout that goes away.

use crate::helpers::*;
use miaudit::domain::{
    EvidenceReport, EvidenceSource, Finding, IdentityType, Reason, Summary, Trigger, Verdict,
};
use miaudit::report::{ScanReport, TenantReport};
use miaudit::store::{FindingFilter, Store};
use miaudit_sim::SimConfig;
use miaudit_sim::model::World;
use std::process::Stdio;
use tokio::io::AsyncReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_miaudit");

/// More than two pages of the export (1,000 findings each).
const ORPHANS: usize = 2_345;

fn orphan(i: usize) -> Finding {
    Finding {
        tenant_id: TENANT.into(),
        object_id: format!("{i:08x}-0000-4000-8000-000000000000").into(),
        app_id: format!("{i:08x}-1111-4000-8000-000000000000"),
        display_name: if i.is_multiple_of(7) {
            format!("=cmd|' /C calc'!A{i}, \"quoted\"")
        } else {
            format!("vm-{i}")
        },
        identity_type: IdentityType::SystemAssigned,
        resource_id: Some(format!(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-{i}"
        )),
        subscription_id: Some("s".into()),
        resource_type: Some("microsoft.compute/virtualmachines".into()),
        verdict: Verdict::Orphaned,
        reason: Reason::ResourceNotFound,
        detail: "the resource does not exist".into(),
        evidence: EvidenceReport {
            source: EvidenceSource::Arm,
            status: Some(404),
            code: Some("ResourceNotFound".into()),
            request_id: Some(format!("req-{i}")),
            correlation_request_id: None,
            checked_at: Some(chrono::Utc::now()),
        },
    }
}

/// Records a scan of `ORPHANS` orphans (and one healthy identity) into the test's database.
async fn record_orphans(env: &TestEnv) -> Store {
    let store = Store::connect(&env.settings().database.url)
        .await
        .expect("db");
    let mut findings: Vec<Finding> = (0..ORPHANS).map(orphan).collect();
    let mut healthy = orphan(ORPHANS);
    healthy.verdict = Verdict::Healthy;
    healthy.reason = Reason::ResourcePresent;
    findings.push(healthy);
    let now = chrono::Utc::now();
    let report = ScanReport {
        scan_id: "seeded".into(),
        started_at: now,
        finished_at: now,
        complete: true,
        trigger: Trigger::Cli,
        tenants: vec![TenantReport::new(&TENANT.into())],
        summary: Summary::default(),
        findings,
    };
    store
        .record_scan(&report, std::time::Duration::ZERO)
        .await
        .expect("recorded");
    store
}

async fn cli(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let cfg = env.config_path.to_str().expect("utf-8");
    let out = tokio::process::Command::new(BIN)
        .args(["--config", cfg])
        .args(args)
        .output()
        .await
        .expect("runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn an_export_longer_than_a_page_is_streamed_whole_and_the_same_as_the_cli() {
    let (w, _) = world();
    let env = TestEnv::start(w, SimConfig::default()).await;
    let store = record_orphans(&env).await;
    let d = env.daemon("").await;
    for format in ["csv", "json"] {
        let r = reqwest::get(d.url(&format!("/api/v1/export?format={format}")))
            .await
            .expect("export");
        assert_eq!(r.status().as_u16(), 200);
        // Longer than a page: sent as it is written, without a length known in advance.
        assert!(r.headers().get("content-length").is_none(), "{format}");
        let body = r.bytes().await.expect("body");
        let rows: Vec<miaudit::export::Row> = if format == "csv" {
            csv::Reader::from_reader(body.as_ref())
                .deserialize()
                .collect::<Result<_, _>>()
                .expect("RFC 4180 CSV")
        } else {
            serde_json::from_slice(&body).expect("one JSON document")
        };
        assert_eq!(rows.len(), ORPHANS, "{format}");
        let mut ids: Vec<&str> = rows.iter().map(|r| r.object_id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), ORPHANS, "{format}: no row twice");
        assert!(ids.windows(2).all(|p| p[0] < p[1]), "{format}: in order");
        let out = cli(&env, &["export", "--format", format]).await;
        assert_eq!(
            out.stdout,
            body.as_ref(),
            "{format}: the CLI writes the same"
        );
    }
    // The findings list, a page at a time: the same bytes as a page built whole (through a JSON
    // value of the page), and every finding once.
    let mut cursor: Option<String> = None;
    let mut seen = 0;
    loop {
        let url = match &cursor {
            Some(c) => d.url(&format!("/api/v1/findings?limit=1000&cursor={c}")),
            None => d.url("/api/v1/findings?limit=1000"),
        };
        let body = reqwest::get(url)
            .await
            .expect("page")
            .text()
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let after = cursor.as_deref().map(|c| {
            let parts = miaudit::api::decode_cursor(c, 2).expect("cursor");
            (parts[0].as_str().into(), parts[1].as_str().into())
        });
        let mut items = store
            .list_findings(&FindingFilter::default(), after.as_ref(), 1001)
            .await
            .expect("list");
        let more = items.len() > 1000;
        items.truncate(1000);
        let next = more.then(|| {
            let last = &items[items.len() - 1].finding;
            miaudit::api::encode_cursor(&[last.tenant_id.as_str(), last.object_id.as_str()])
        });
        assert_eq!(
            body,
            serde_json::json!({"items": items, "next_cursor": next}).to_string()
        );
        seen += v["items"].as_array().expect("items").len();
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ORPHANS);
    d.stop().await;
}

/// Starts `args`, reads a little of its stdout, closes it, and waits: the process must end on its own,
/// quietly, with `code`.
async fn reader_goes_away(env: &TestEnv, args: &[&str], code: i32) {
    let cfg = env.config_path.to_str().expect("utf-8");
    let mut child = tokio::process::Command::new(BIN)
        .args(["--config", cfg])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 100];
    stdout.read_exact(&mut first).await.expect("some output");
    drop(stdout);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("ends")
        .expect("status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.to_lowercase().contains("broken pipe"),
        "{args:?}: {stderr}"
    );
}

#[tokio::test]
async fn scan_all_reads_every_verdict_back_and_a_closed_stdout_is_no_error() {
    let env = TestEnv::start(World::generate(7, 2_000), SimConfig::default()).await;
    let out = cli(&env, &["scan", "--output", "json", "--all"]).await;
    // The write-ahead log was checkpointed (while the report printed) before the process exited.
    let wal = env.dir.path().join("miaudit.db-wal");
    let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_len(), 0, "the scan left its writes in the log");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let findings = v["findings"].as_array().expect("findings");
    assert_eq!(
        findings.len() as u64,
        v["summary"]["total"].as_u64().expect("total")
    );
    let healthy = v["summary"]["healthy"].as_u64().expect("healthy");
    assert!(healthy > 1_000, "{}", v["summary"]);
    assert_eq!(
        findings
            .iter()
            .filter(|f| f["verdict"] == "healthy")
            .count() as u64,
        healthy
    );
    // The same verdicts the store keeps for that scan.
    let store = Store::connect(&env.settings().database.url)
        .await
        .expect("db");
    let kept = store
        .load_verdicts(v["scan_id"].as_str().expect("id"))
        .await
        .expect("verdicts");
    let ids = |it: &mut dyn Iterator<Item = String>| {
        let mut v: Vec<String> = it.collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(&mut findings
            .iter()
            .map(|f| f["object_id"].as_str().expect("id").to_owned())),
        ids(&mut kept.iter().map(|f| f.object_id.to_string()))
    );
    let table = cli(&env, &["scan", "--all"]).await;
    let text = String::from_utf8(table.stdout).expect("utf-8");
    assert!(text.contains(&format!("\nHEALTHY ({healthy})\n")), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("  resource_present  "))
            .count() as u64,
        healthy
    );
    // `| head`: the rest of the report is not wanted; the scan is recorded and exits as it would.
    reader_goes_away(&env, &["scan", "--output", "json", "--all"], 0).await;
    assert_eq!(wal_len(), 0, "a report cut short still checkpoints");
    reader_goes_away(&env, &["scan", "--all"], 0).await;
    record_orphans(&env).await;
    reader_goes_away(&env, &["export"], 0).await;
    reader_goes_away(&env, &["export", "--format", "json"], 0).await;
}
