//! The daemon: lifecycle across scans, the JSON API, auth, export, metrics, restarts, overlap, SIGTERM.

use crate::helpers::*;
use miaudit_sim::SimConfig;
use miaudit_sim::model::World;
use serde_json::Value;
use std::collections::BTreeSet;

fn states(v: &Value) -> Vec<(String, String)> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|f| {
            (
                f["object_id"].as_str().expect("id").to_owned(),
                f["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn findings_move_through_their_lifecycle_across_scans() {
    let (mut w, sub) = world();
    let removed_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/removed");
    let removed = w.add_system_assigned(&removed_id);
    w.delete_resource(&removed_id);
    let restored_id = rid(&sub, "rg", "Microsoft.Web", "sites/restored");
    let restored = w.add_system_assigned(&restored_id);
    let graveyard = w
        .resources
        .remove(&restored_id.to_ascii_lowercase())
        .expect("resource");
    let env = TestEnv::start(w, SimConfig::default()).await;
    let d = env.daemon("[lifecycle]\nconfirm_after = \"0s\"\n").await;
    d.scan().await;
    let (_, f) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{removed}"))).await;
    assert_eq!(
        f["state"], "confirmed",
        "confirm_after 0s confirms at once: {f}"
    );
    assert_eq!(f["episode"], 1);
    // An incomplete inventory changes nothing.
    env.sim.with_world(|w| w.remove_principal(&removed));
    env.sim.add_fault(miaudit_sim::FaultRule {
        api: miaudit_sim::Api::Graph,
        path_contains: None,
        times: None,
        fault: miaudit_sim::Fault::Status(503),
    });
    let r = d.scan().await;
    assert!(!r.complete);
    let (_, f) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{removed}"))).await;
    assert_eq!(f["state"], "confirmed");
    // A complete one resolves by removal; the restored resource resolves by restoration.
    env.sim.clear_faults();
    env.sim.with_world(|w| {
        w.resources.insert(graveyard.key(), graveyard.clone());
    });
    d.scan().await;
    let (_, f) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{removed}"))).await;
    assert_eq!(
        (f["state"].as_str(), f["resolution"].as_str()),
        (Some("resolved"), Some("identity_removed"))
    );
    let (_, g) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{restored}"))).await;
    assert_eq!(
        (g["state"].as_str(), g["resolution"].as_str()),
        (Some("resolved"), Some("resource_restored"))
    );
    // Gone again: a new episode, history kept.
    env.sim.with_world(|w| w.delete_resource(&restored_id));
    d.scan().await;
    let (_, g) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{restored}"))).await;
    assert_eq!(
        (g["state"].as_str(), g["episode"].as_u64()),
        (Some("confirmed"), Some(2))
    );
    let hist: Vec<(Value, Value)> = g["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| (h["from"].clone(), h["to"].clone()))
        .collect();
    assert_eq!(
        hist,
        vec![
            (Value::Null, "confirmed".into()),
            ("confirmed".into(), "resolved".into()),
            ("resolved".into(), "confirmed".into()),
        ]
    );
    assert!(g["history"][0]["scan_id"].is_string() && g["history"][0]["at"].is_string());
    let m = reqwest::get(d.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        m.contains(&format!(
            "miaudit_new_orphans_total{{tenant_id=\"{TENANT}\"}} 3"
        )),
        "{m}"
    );
    d.stop().await;
}

#[tokio::test]
async fn findings_api_filters_and_pages_to_the_end_without_gaps() {
    let env = TestEnv::start(World::generate(11, 600), SimConfig::default()).await;
    let d = env.daemon("").await;
    let report = d.scan().await;
    let expected: BTreeSet<String> = report
        .findings
        .iter()
        .filter(|f| f.verdict.as_str() != "healthy")
        .map(|f| f.object_id.to_string())
        .collect();
    assert!(expected.len() >= 6);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => d.url(&format!("/api/v1/findings?limit=2&cursor={c}")),
            None => d.url("/api/v1/findings?limit=2"),
        };
        let (status, v) = get_json(&url).await;
        assert_eq!(status, 200, "{v}");
        pages += 1;
        seen.extend(states(&v).into_iter().map(|(id, _)| id));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), expected.len(), "no duplicates");
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "no gaps"
    );
    assert!(pages >= 3);
    let (_, v) =
        get_json(&d.url("/api/v1/findings?verdict=orphaned&reason=resource_not_found")).await;
    assert!(
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|f| f["reason"] == "resource_not_found")
    );
    let (_, v) = get_json(&d.url("/api/v1/findings?state=unverified")).await;
    assert!(
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|f| f["verdict"] == "unknown")
    );
    let (_, v) = get_json(&d.url("/api/v1/findings?verdict=healthy&limit=1000")).await;
    assert_eq!(
        v["items"].as_array().expect("items").len() as u64,
        report.summary.healthy
    );
    let (_, v) = get_json(&d.url("/api/v1/findings?resource_type=microsoft.compute/virtualmachines&identity_type=system_assigned")).await;
    assert!(
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|f| f["resource_type"] == "microsoft.compute/virtualmachines")
    );
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=garbage",
        "state=gone",
        "verdict=maybe",
        "nope=1",
        "limit=5&limit=6",
        "tenant_id=../../etc",
    ] {
        let r = reqwest::get(d.url(&format!("/api/v1/findings?{bad}")))
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 400, "{bad}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{bad}"
        );
        let p: Value = r.json().await.expect("problem json");
        assert_eq!(p["status"], 400);
        assert!(p["detail"].is_string() && p["title"].is_string());
    }
    let r = reqwest::get(d.url("/api/v1/findings/x/y"))
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 404);
    let r = reqwest::get(d.url("/api/v1/nothing"))
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    d.stop().await;
}

#[tokio::test]
async fn mutating_endpoints_need_the_bearer_token() {
    let (mut w, sub) = world();
    let gone_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/gone");
    let gone = w.add_system_assigned(&gone_id);
    w.delete_resource(&gone_id);
    let ok = w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/ok"));
    let env = TestEnv::start(w, SimConfig::default()).await;
    let client = reqwest::Client::new();
    let ack_url =
        |d: &Daemon, id: &str| d.url(&format!("/api/v1/findings/{TENANT}/{id}/acknowledge"));
    let body = serde_json::json!({"ticket": "2511290010001234", "note": "filed with Microsoft"});

    // No token configured: disabled.
    let d = env.daemon("").await;
    d.scan().await;
    let r = client
        .post(d.url("/api/v1/scans"))
        .bearer_auth("anything")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    let r = client
        .post(ack_url(&d, &gone))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    d.stop().await;

    let d = env
        .daemon("[http]\nlisten = \"127.0.0.1:0\"\napi_token = \"s3cret-token\"\n")
        .await;
    for (auth, want) in [
        (None, 401),
        (Some("wrong"), 401),
        (Some("s3cret-token"), 200),
    ] {
        let mut req = client.post(ack_url(&d, &gone)).json(&body);
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("post");
        assert_eq!(r.status().as_u16(), want, "{auth:?}");
        if want == 401 {
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
        } else {
            let f: Value = r.json().await.expect("json");
            assert_eq!(
                (f["state"].as_str(), f["ticket"].as_str()),
                (Some("acknowledged"), Some("2511290010001234"))
            );
            assert_eq!(f["note"], "filed with Microsoft");
        }
    }
    // Healthy identity: not an open finding.
    let r = client
        .post(ack_url(&d, &ok))
        .bearer_auth("s3cret-token")
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 409);
    let r = client
        .post(ack_url(&d, "00000000-0000-0000-0000-000000000000"))
        .bearer_auth("s3cret-token")
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 404);
    for bad in [
        "{",
        "[]",
        "{\"ticket\":\"\"}",
        "{\"note\":\"x\"}",
        "{\"ticket\":\"x\",\"extra\":1}",
    ] {
        let r = client
            .post(ack_url(&d, &gone))
            .bearer_auth("s3cret-token")
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 400, "{bad}");
    }
    let r = client
        .post(ack_url(&d, &gone))
        .bearer_auth("s3cret-token")
        .body(vec![b'x'; 200_000])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 413);
    // Scan now: 202 with an id that the scans API knows.
    let r = client
        .post(d.url("/api/v1/scans"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.expect("json");
    let id = v["scan_id"].as_str().expect("id").to_owned();
    for _ in 0..100 {
        let (_, s) = get_json(&d.url(&format!("/api/v1/scans/{id}"))).await;
        if s["finished_at"].is_string() {
            assert_eq!(s["trigger"], "manual");
            assert_eq!(s["complete"], true);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, list) = get_json(&d.url("/api/v1/scans?limit=1")).await;
    assert_eq!(list["items"][0]["scan_id"], id.as_str());
    assert!(list["next_cursor"].is_string());
    d.stop().await;
}

#[tokio::test]
async fn a_second_scan_request_while_one_runs_is_409() {
    let env = TestEnv::start(
        World::generate(3, 100),
        SimConfig {
            latency: std::time::Duration::from_millis(150),
            ..SimConfig::default()
        },
    )
    .await;
    let d = env
        .daemon("[http]\nlisten = \"127.0.0.1:0\"\napi_token = \"t\"\n")
        .await;
    let client = reqwest::Client::new();
    let first = client
        .post(d.url("/api/v1/scans"))
        .bearer_auth("t")
        .send()
        .await
        .expect("post");
    assert_eq!(first.status().as_u16(), 202);
    let second = client
        .post(d.url("/api/v1/scans"))
        .bearer_auth("t")
        .send()
        .await
        .expect("post");
    assert_eq!(second.status().as_u16(), 409);
    assert!(
        d.runner
            .run_now(miaudit::domain::Trigger::Schedule)
            .await
            .is_none(),
        "the schedule would skip too"
    );
    // The API keeps answering during the scan.
    let (s, _) = get_json(&d.url("/api/v1/scans")).await;
    assert_eq!(s, 200);
    d.stop().await;
}

#[tokio::test]
async fn export_lists_open_orphans_and_parses_back() {
    let (mut w, sub) = world();
    let mut gone = BTreeSet::new();
    for i in 0..3 {
        let id = rid(
            &sub,
            "rg",
            "Microsoft.Compute",
            &format!("virtualMachines/gone{i}"),
        );
        gone.insert(w.add_system_assigned(&id));
        w.delete_resource(&id);
    }
    let evil_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/evil");
    let evil = w.add_system_assigned(&evil_id);
    w.principals
        .iter_mut()
        .find(|p| p.id == evil)
        .expect("sp")
        .display_name = "=HYPERLINK(\"http://x\")".into();
    w.delete_resource(&evil_id);
    gone.insert(evil.clone());
    w.add_principal("ManagedIdentity", "unknown-one", None);
    w.add_system_assigned(&rid(
        &sub,
        "rg",
        "Microsoft.Compute",
        "virtualMachines/fine",
    ));
    let env = TestEnv::start(w, SimConfig::default()).await;
    let d = env
        .daemon("[http]\nlisten = \"127.0.0.1:0\"\napi_token = \"t\"\n")
        .await;
    d.scan().await;
    let first = gone.iter().next().expect("one").clone();
    reqwest::Client::new()
        .post(d.url(&format!("/api/v1/findings/{TENANT}/{first}/acknowledge")))
        .bearer_auth("t")
        .json(&serde_json::json!({"ticket": "TKT-42"}))
        .send()
        .await
        .expect("ack");
    let r = reqwest::get(d.url("/api/v1/export?format=csv"))
        .await
        .expect("export");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/csv")
    );
    let text = r.text().await.expect("text");
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<miaudit::export::Row> = rd
        .deserialize()
        .collect::<Result<_, _>>()
        .expect("RFC 4180 CSV");
    assert_eq!(
        rows.iter()
            .map(|r| r.object_id.clone())
            .collect::<BTreeSet<_>>(),
        gone,
        "open orphans only"
    );
    let acked = rows.iter().find(|r| r.object_id == first).expect("row");
    assert_eq!(
        (acked.state.as_str(), acked.ticket.as_str()),
        ("acknowledged", "TKT-42")
    );
    let e = rows.iter().find(|r| r.object_id == evil).expect("row");
    assert_eq!(
        e.display_name, "'=HYPERLINK(\"http://x\")",
        "formula neutralised"
    );
    for r in &rows {
        assert_eq!(
            (r.evidence_status.as_str(), r.evidence_code.as_str()),
            ("404", "ResourceNotFound")
        );
        assert!(
            !r.evidence_request_id.is_empty()
                && !r.evidence_checked_at.is_empty()
                && !r.first_detected_at.is_empty()
        );
    }
    let (_, json) = get_json(&d.url("/api/v1/export?format=json&state=acknowledged")).await;
    assert_eq!(json.as_array().expect("array").len(), 1);
    let r = reqwest::get(d.url("/api/v1/export?format=xml"))
        .await
        .expect("export");
    assert_eq!(r.status().as_u16(), 400);
    // The CLI export gives the same rows.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_miaudit"))
        .args([
            "--config",
            env.dir.path().join("daemon.toml").to_str().expect("utf-8"),
            "export",
            "--format",
            "csv",
        ])
        .output()
        .await
        .expect("runs");
    assert!(out.status.success());
    let mut rd = csv::Reader::from_reader(out.stdout.as_slice());
    let cli_rows: Vec<miaudit::export::Row> =
        rd.deserialize().collect::<Result<_, _>>().expect("csv");
    assert_eq!(cli_rows, rows);
    d.stop().await;
}

#[tokio::test]
async fn metrics_after_a_scan_and_after_a_restart() {
    let env = TestEnv::start(World::generate(42, 300), SimConfig::default()).await;
    let d = env.daemon("").await;
    let before = reqwest::get(d.url("/metrics")).await.expect("metrics");
    assert_eq!(
        before.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = before.text().await.expect("text");
    assert!(text.contains(&format!(
        "miaudit_managed_identities{{tenant_id=\"{TENANT}\",verdict=\"orphaned\"}} 0"
    )));
    let r = d.scan().await;
    let text = reqwest::get(d.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .rsplit(' ')
            .next()
            .expect("value")
            .to_owned()
    };
    assert_eq!(
        line(&format!(
            "miaudit_managed_identities{{tenant_id=\"{TENANT}\",verdict=\"orphaned\"}}"
        )),
        r.summary.orphaned.to_string()
    );
    assert_eq!(
        line(&format!(
            "miaudit_managed_identities{{tenant_id=\"{TENANT}\",verdict=\"healthy\"}}"
        )),
        r.summary.healthy.to_string()
    );
    assert_eq!(
        line(&format!(
            "miaudit_findings{{state=\"suspected\",tenant_id=\"{TENANT}\"}}"
        )),
        r.summary.orphaned.to_string()
    );
    assert_eq!(line("miaudit_scan_runs_total{outcome=\"completed\"}"), "1");
    assert_eq!(line("miaudit_scan_duration_seconds_count"), "1");
    assert_eq!(
        line(&format!(
            "miaudit_last_scan_success_timestamp_seconds{{tenant_id=\"{TENANT}\"}}"
        )),
        r.finished_at.timestamp().to_string()
    );
    assert!(
        line("miaudit_azure_requests_total{api=\"graph\",status_class=\"2xx\"}")
            .parse::<u64>()
            .expect("n")
            >= 1
    );
    assert!(
        !text.contains(r.findings[0].object_id.as_str()),
        "no per-identity labels"
    );
    let findings_before = get_json(&d.url("/api/v1/findings?limit=1000")).await.1;
    d.stop().await;

    // A restart keeps findings, history and the cached gauges.
    let d = env.daemon("").await;
    let findings_after = get_json(&d.url("/api/v1/findings?limit=1000")).await.1;
    assert_eq!(findings_before, findings_after);
    let text = reqwest::get(d.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(&format!(
            "miaudit_managed_identities{{tenant_id=\"{TENANT}\",verdict=\"orphaned\"}} {}",
            r.summary.orphaned
        )),
        "{text}"
    );
    let (h, _) = get_json(&d.url("/healthz")).await;
    let (rd, _) = get_json(&d.url("/readyz")).await;
    assert_eq!((h, rd), (200, 200));
    d.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_during_a_scan_exits_cleanly_and_keeps_the_previous_state() {
    use tokio::io::AsyncBufReadExt;
    let env = TestEnv::start(World::generate(9, 200), SimConfig::default()).await;
    // A first, whole scan.
    let d = env.daemon("").await;
    // The report holds the scan's working file (and its lock) while it lives: kept only for its id and size.
    let first = {
        let r = d.scan().await;
        (r.scan_id.clone(), r.summary.total)
    };
    d.stop().await;
    let first_id = &first.0;
    let path = env.dir.path().join("daemon.toml");
    let text = std::fs::read_to_string(&path)
        .expect("config")
        .replace("scan_on_start = false", "scan_on_start = true");
    std::fs::write(&path, text).expect("config");
    // Slow the simulator so the start-up scan is under way when SIGTERM arrives.
    env.sim
        .with_config(|c| c.latency = std::time::Duration::from_millis(300));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_miaudit"))
        .args(["--config", path.to_str().expect("utf-8"), "serve"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut serving = false;
    while let Ok(Some(l)) = lines.next_line().await {
        if l.contains("serving http://") {
            serving = true;
            break;
        }
    }
    assert!(serving);
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let pid = child.id().expect("pid");
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("exits in time")
        .expect("status");
    assert_eq!(status.code(), Some(0));
    let store = miaudit::store::Store::connect(&env.settings().database.url)
        .await
        .expect("db");
    let scans = store.list_scans(10, None).await.expect("scans");
    assert_eq!(scans.len(), 2);
    assert_eq!(scans[0].outcome, "abandoned", "{scans:?}");
    assert_eq!(&scans[1].scan_id, first_id);
    assert_eq!(
        store.load_verdicts(first_id).await.expect("verdicts").len() as u64,
        first.1
    );
    assert!(
        store
            .load_verdicts(&scans[0].scan_id)
            .await
            .expect("verdicts")
            .is_empty(),
        "nothing partial"
    );
    let ok: String = sqlx::query_scalar("pragma integrity_check")
        .fetch_one(store.pool())
        .await
        .expect("check");
    assert_eq!(ok, "ok");
    // Neither the recorded scan nor the cancelled one left its working database behind.
    let db = env
        .settings()
        .database
        .url
        .trim_start_matches("sqlite://")
        .to_owned();
    let dir = std::path::Path::new(&db)
        .parent()
        .expect("dir")
        .to_path_buf();
    let left: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".work-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The running daemon checkpoints the write-ahead log (truncating it) after each recorded scan, so the
/// log does not keep the size of a scan's writes until the next one.
#[tokio::test]
async fn the_daemon_truncates_the_log_after_a_recorded_scan() {
    let env = TestEnv::start(World::generate(5, 600), SimConfig::default()).await;
    let d = env.daemon("").await;
    let wal = env.dir.path().join("miaudit.db-wal");
    let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    for _ in 0..2 {
        // The scan as the schedule runs it (`Daemon::scan` opens the database afterwards).
        d.runner
            .run_now(miaudit::domain::Trigger::Manual)
            .await
            .expect("no scan running")
            .expect("scan finished");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while wal_len() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the log still holds {} B",
                wal_len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    d.stop().await;
}

#[tokio::test]
async fn the_exposition_passes_promtool() {
    use tokio::io::AsyncWriteExt;
    let env = TestEnv::start(World::generate(4, 200), SimConfig::default()).await;
    let d = env.daemon("").await;
    d.scan().await;
    let text = reqwest::get(d.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    d.stop().await;
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .await
        .expect("write");
    let out = child.wait_with_output().await.expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn graph_delta_reads_only_what_changed_and_falls_back_to_a_full_listing() {
    use miaudit_sim::Api;
    let (mut w, sub) = world();
    for i in 0..30 {
        w.add_system_assigned(&rid(
            &sub,
            "rg",
            "Microsoft.Compute",
            &format!("virtualMachines/vm{i}"),
        ));
    }
    let orphan_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/gone");
    let orphan = w.add_system_assigned(&orphan_id);
    w.delete_resource(&orphan_id);
    let cfg = SimConfig {
        graph_max_page: 10,
        ..SimConfig::default()
    };
    let env = TestEnv::start_with(w, cfg, &format!("{FAST_RETRIES}graph_delta = true\n")).await;
    let d = env.daemon("[lifecycle]\nconfirm_after = \"0s\"\n").await;
    let graph = || env.sim.requests(Api::Graph);
    let verdicts = |r: &miaudit::report::ScanReport| {
        let mut v: Vec<(String, &str)> = r
            .findings
            .iter()
            .map(|f| (f.object_id.to_string(), f.reason.as_str()))
            .collect();
        v.sort();
        v
    };
    let g = graph();
    let first = d.scan().await;
    assert!(first.complete);
    assert_eq!(
        graph() - g,
        1 + 4,
        "$deltaToken=latest, then 31 identities at 10 a page"
    );
    // Unchanged: one delta request, the same verdicts.
    let g = graph();
    let second = d.scan().await;
    assert!(second.complete, "{:?}", second.tenants);
    assert_eq!(graph() - g, 1);
    assert_eq!(verdicts(&second), verdicts(&first));
    // Support removes the orphan; a new orphan appears; an application is created (not audited).
    let new_id = rid(&sub, "rg2", "Microsoft.Web", "sites/fresh");
    let fresh = env.sim.with_world(|w| {
        w.remove_principal(&orphan);
        let p = w.add_system_assigned(&new_id);
        w.delete_resource(&new_id);
        w.add_principal("Application", "portal", None);
        p
    });
    let g = graph();
    let third = d.scan().await;
    assert_eq!(graph() - g, 1);
    assert_eq!(third.summary.total, 31);
    assert_eq!(outcome(&third, &fresh), ("orphaned", "resource_not_found"));
    let (_, f) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{orphan}"))).await;
    assert_eq!(
        (f["state"].as_str(), f["resolution"].as_str()),
        (Some("resolved"), Some("identity_removed"))
    );
    // The service forgot the token (410 syncStateNotFound): a full listing, same verdicts.
    env.sim.forget_delta_tokens();
    let g = graph();
    let fourth = d.scan().await;
    assert!(fourth.complete);
    assert_eq!(
        graph() - g,
        1 + 1 + 4,
        "410, then latest and the full listing"
    );
    assert_eq!(verdicts(&fourth), verdicts(&third));
    d.stop().await;
}
