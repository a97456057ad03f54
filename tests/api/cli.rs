//! The real binary: exit codes, the JSON report schema, configuration errors.

use crate::helpers::*;
use miaudit_sim::Api;
use miaudit_sim::model::World;
use miaudit_sim::{Fault, FaultRule, SimConfig};
use serde_json::Value;

fn orphan_world() -> (World, String, String) {
    let (mut w, sub) = world();
    let healthy =
        w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/ok"));
    let gone_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/gone");
    let gone = w.add_system_assigned(&gone_id);
    w.delete_resource(&gone_id);
    (w, healthy, gone)
}

#[tokio::test]
async fn scan_json_follows_the_promised_schema_and_exit_codes() {
    let (w, healthy, gone) = orphan_world();
    let env = TestEnv::start(w, SimConfig::default()).await;
    let cfg = env.config_path.to_str().expect("utf-8 path");
    let run = miaudit(&["--config", cfg, "scan", "--output", "json"], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    for key in [
        "scan_id",
        "started_at",
        "finished_at",
        "complete",
        "tenants",
        "summary",
        "findings",
    ] {
        assert!(v.get(key).is_some(), "{key} missing");
    }
    assert_eq!(v["complete"], true);
    assert!(
        chrono::DateTime::parse_from_rfc3339(v["started_at"].as_str().expect("string")).is_ok()
    );
    assert_eq!(v["tenants"][0]["tenant_id"], TENANT);
    assert_eq!(v["tenants"][0]["identities"], 2);
    assert_eq!(v["tenants"][0]["errors"], Value::Array(vec![]));
    assert_eq!(
        v["summary"],
        serde_json::json!({"total": 2, "healthy": 1, "orphaned": 1, "unknown": 0})
    );
    let findings = v["findings"].as_array().expect("array");
    assert_eq!(
        findings.len(),
        1,
        "healthy identities are left out without --all"
    );
    let f = &findings[0];
    assert_eq!(f["object_id"], gone.as_str());
    assert_eq!(f["identity_type"], "system_assigned");
    assert_eq!(f["verdict"], "orphaned");
    assert_eq!(f["reason"], "resource_not_found");
    assert!(
        f["resource_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("/subscriptions/"))
    );
    for key in ["tenant_id", "app_id", "display_name", "detail"] {
        assert!(f[key].is_string(), "{key}");
    }
    assert_eq!(f["evidence"]["status"], 404);
    assert_eq!(f["evidence"]["code"], "ResourceNotFound");
    assert!(f["evidence"]["request_id"].is_string() && f["evidence"]["checked_at"].is_string());

    let all = miaudit(&["--config", cfg, "scan", "--output", "json", "--all"], &[]).await;
    let v: Value = serde_json::from_str(&all.stdout).expect("JSON");
    assert!(
        v["findings"]
            .as_array()
            .expect("array")
            .iter()
            .any(|f| f["object_id"] == healthy.as_str())
    );

    let fail = miaudit(&["--config", cfg, "scan", "--fail-on-orphans"], &[]).await;
    assert_eq!(fail.code, 1);
    assert!(
        fail.stdout.contains("ORPHANED (1)") && fail.stdout.contains(&gone),
        "{}",
        fail.stdout
    );

    // Every scan was recorded.
    let store = miaudit::store::Store::connect(&env.settings().database.url)
        .await
        .expect("db");
    assert_eq!(store.list_scans(10, None).await.expect("scans").len(), 3);

    // [database] retain_scans: the older scans lose their verdicts and keep their summary.
    let run = miaudit(
        &["--config", cfg, "scan"],
        &[("MIAUDIT_DATABASE__RETAIN_SCANS", "2")],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let scans = store.list_scans(10, None).await.expect("scans");
    assert_eq!(scans.len(), 4);
    for (n, s) in scans.iter().enumerate() {
        let verdicts = store.load_verdicts(&s.scan_id).await.expect("verdicts");
        assert_eq!(verdicts.len(), if n < 2 { 2 } else { 0 }, "scan {n}");
        assert_eq!(s.summary.total, 2);
    }
}

#[tokio::test]
async fn exhausted_retries_exit_3_and_never_report_the_orphan() {
    let (w, _, gone) = orphan_world();
    let env = TestEnv::start(w, SimConfig::default()).await;
    env.sim.add_fault(FaultRule {
        api: Api::Arm,
        path_contains: Some("virtualMachines/gone".into()),
        times: None,
        fault: Fault::Status(504),
    });
    let cfg = env.config_path.to_str().expect("utf-8 path");
    let run = miaudit(
        &[
            "--config",
            cfg,
            "scan",
            "--output",
            "json",
            "--fail-on-orphans",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["complete"], false);
    assert_eq!(v["summary"]["orphaned"], 0);
    let f = v["findings"]
        .as_array()
        .expect("array")
        .iter()
        .find(|f| f["object_id"] == gone.as_str())
        .expect("listed");
    assert_eq!(f["verdict"], "unknown");
    assert_eq!(f["reason"], "check_failed");
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_every_key() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[azure]\ncloud = \"moon\"\n[scan]\nconcurency = 3\n[[tenants]]\nid = \"not a tenant\"\n",
    )
    .expect("write");
    let run = miaudit(
        &["--config", path.to_str().expect("utf-8"), "scan"],
        &[("MIAUDIT_HTTP__LISTEN", "nowhere")],
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(run.stdout.is_empty());
    let lines: Vec<&str> = run.stderr.lines().collect();
    for key in [
        "azure.cloud",
        "scan.concurency",
        "tenants[0].id",
        "http.listen",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(key)),
            "{key} not named in:\n{}",
            run.stderr
        );
    }
    assert_eq!(lines.len(), 4, "one line per problem:\n{}", run.stderr);

    let missing = miaudit(&["--config", "/nonexistent/miaudit.toml", "scan"], &[]).await;
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("/nonexistent/miaudit.toml"));

    // Without a method the credential is chosen when tokens are first asked for: only the tenant is
    // missing up front. A method that needs a secret names it.
    let no_tenant = miaudit(&["scan"], &[]).await;
    assert_eq!(no_tenant.code, 2);
    assert!(no_tenant.stderr.contains("tenants"), "{}", no_tenant.stderr);
    let no_creds = miaudit(
        &["scan"],
        &[
            ("AZURE_TENANT_ID", TENANT),
            ("MIAUDIT_AUTH__METHOD", "client_secret"),
        ],
    )
    .await;
    assert_eq!(no_creds.code, 2);
    assert!(
        no_creds.stderr.contains("auth.client_id")
            && no_creds.stderr.contains("auth.client_secret"),
        "{}",
        no_creds.stderr
    );

    let usage = miaudit(&["scan", "--output", "yaml"], &[]).await;
    assert_eq!(usage.code, 2);
}

#[tokio::test]
async fn credentials_from_the_sdk_variables_work_and_never_show_up_in_output() {
    let (mut w, _, _) = orphan_world();
    w.client_secret = "s3cr3t-value-from-env".into();
    let env = TestEnv::start(w, SimConfig::default()).await;
    // A config without credentials; they come from AZURE_* variables.
    let base = env.sim.base_url().to_owned();
    let db = format!("sqlite://{}", env.dir.path().join("env.db").display());
    let path = env.dir.path().join("env.toml");
    std::fs::write(&path, format!("[azure]\nauthority_host = \"{base}\"\ngraph_endpoint = \"{base}\"\narm_endpoint = \"{base}\"\n[database]\nurl = \"{db}\"\n")).expect("write");
    let cfg = path.to_str().expect("utf-8");
    let vars = [
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", miaudit_sim::model::SIM_CLIENT_ID),
        ("AZURE_CLIENT_SECRET", "s3cr3t-value-from-env"),
        ("RUST_LOG", "miaudit=trace"),
    ];
    let ok = miaudit(
        &["--config", cfg, "scan", "--output", "json", "--all"],
        &vars,
    )
    .await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(!ok.stdout.contains("s3cr3t") && !ok.stderr.contains("s3cr3t"));
    assert!(!ok.stderr.contains("Bearer"), "no token in logs");

    let wrong = miaudit(
        &["--config", cfg, "scan"],
        &[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", miaudit_sim::model::SIM_CLIENT_ID),
            ("AZURE_CLIENT_SECRET", "wrong-s3cr3t"),
        ],
    )
    .await;
    assert_eq!(wrong.code, 3);
    assert!(wrong.stdout.contains("AADSTS7000215"), "{}", wrong.stdout);
    assert!(!wrong.stdout.contains("wrong-s3cr3t") && !wrong.stderr.contains("wrong-s3cr3t"));
}

// The binary has `demo` only with the simulator (the tests themselves always have it, a dev-dependency).
#[cfg(feature = "simulator")]
#[tokio::test]
async fn demo_scans_the_built_in_tenant_without_azure() {
    let run = miaudit(
        &["demo", "--once", "--identities", "300", "--output", "json"],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["complete"], true);
    assert!(v["summary"]["orphaned"].as_u64().expect("count") > 0);
    assert!(run.stderr.contains("http://127.0.0.1:"));
}

#[tokio::test]
async fn a_tenant_listed_twice_exits_2_naming_both_positions() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("dup.toml");
    let db = format!("sqlite://{}", dir.path().join("dup.db").display());
    std::fs::write(
        &path,
        format!(
            "[auth]\nclient_id = \"c\"\nclient_secret = \"s3cr3t-dup\"\n[database]\nurl = \"{db}\"\n\
             [[tenants]]\nid = \"{TENANT}\"\n[[tenants]]\nid = \"{}\"\n",
            TENANT.to_ascii_uppercase()
        ),
    )
    .expect("write");
    let run = miaudit(&["--config", path.to_str().expect("utf-8"), "scan"], &[]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].contains("tenants[1].id") && lines[0].contains("tenants[0].id"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("UNIQUE"), "{}", run.stderr);
    // Nothing was scanned or recorded.
    assert!(!dir.path().join("dup.db").exists());
}

#[tokio::test]
async fn configuration_errors_never_print_a_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("broken.toml");
    let cfg = path.to_str().expect("utf-8");
    let secret = "Sup3r-S3cret-Client-Value";
    let token = "t0ken-4-the-api";
    // A syntax error on the secret's own line (an unterminated string), as every command meets it.
    std::fs::write(
        &path,
        format!("[auth]\nclient_id = \"c\"\nclient_secret = \"{secret}\n"),
    )
    .expect("write");
    for args in [
        &["--config", cfg, "scan"][..],
        &["--config", cfg, "serve"],
        &["--config", cfg, "export"],
        &["--config", cfg, "--log-format", "json", "scan"],
    ] {
        let run = miaudit(args, &[]).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("line 3, column"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains(secret), "{args:?}: {}", run.stderr);
        assert!(!run.stdout.contains(secret));
    }
    // A bare token on the api_token line.
    std::fs::write(&path, format!("[http]\napi_token = {token}\n")).expect("write");
    let run = miaudit(&["--config", cfg, "scan"], &[]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("line 2, column"), "{}", run.stderr);
    assert!(!run.stderr.contains(token), "{}", run.stderr);
    // Secrets from the environment pasted into the wrong variables.
    std::fs::write(&path, "").expect("write");
    let run = miaudit(
        &["--config", cfg, "scan"],
        &[
            ("MIAUDIT_AUTH__CLIENT_SECRET", secret),
            ("MIAUDIT_SCAN__MAX_RETRIES", secret),
            ("MIAUDIT_HTTP__API_TOKEN", token),
            ("MIAUDIT_HTTP__LISTEN", token),
            ("AZURE_CLIENT_SECRET", "azure-env-s3cret"),
            ("MIAUDIT_LIFECYCLE__CONFIRM_AFTER", "azure-env-s3cret"),
        ],
    )
    .await;
    assert_eq!(run.code, 2);
    for key in ["scan.max_retries", "http.listen", "lifecycle.confirm_after"] {
        assert!(run.stderr.contains(key), "{key}: {}", run.stderr);
    }
    for s in [secret, token, "azure-env-s3cret"] {
        assert!(!run.stderr.contains(s), "{s}: {}", run.stderr);
    }
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_without_secrets_or_colours() {
    let (mut w, _, _) = orphan_world();
    w.client_secret = "json-l0g-s3cret-value".into();
    let env = TestEnv::start(w, SimConfig::default()).await;
    let base = env.sim.base_url().to_owned();
    let db = format!("sqlite://{}", env.dir.path().join("json.db").display());
    let path = env.dir.path().join("json.toml");
    std::fs::write(&path, format!("[azure]\nauthority_host = \"{base}\"\ngraph_endpoint = \"{base}\"\narm_endpoint = \"{base}\"\n[database]\nurl = \"{db}\"\n[http]\napi_token = \"json-l0g-api-t0ken\"\n")).expect("write");
    let cfg = path.to_str().expect("utf-8");
    let creds = [
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", miaudit_sim::model::SIM_CLIENT_ID),
        ("AZURE_CLIENT_SECRET", "json-l0g-s3cret-value"),
        // Everything, every crate.
        ("RUST_LOG", "trace"),
    ];
    let check = |run: &Run, json: bool| {
        assert!(!run.stderr.is_empty());
        for secret in ["json-l0g-s3cret-value", "json-l0g-api-t0ken", "Bearer ey"] {
            assert!(!run.stderr.contains(secret), "{secret} in the logs");
            assert!(!run.stdout.contains(secret));
        }
        assert!(!run.stderr.contains('\x1b'), "no colours on a pipe");
        for line in run.stderr.lines() {
            let parsed = serde_json::from_str::<Value>(line);
            assert_eq!(parsed.is_ok(), json, "{line}");
        }
    };
    // The flag.
    let run = miaudit(
        &[
            "--config",
            cfg,
            "scan",
            "--log-format",
            "json",
            "--output",
            "json",
        ],
        &creds,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    check(&run, true);
    assert!(run.stderr.lines().any(|l| {
        serde_json::from_str::<Value>(l)
            .is_ok_and(|v| v["level"].is_string() && v["fields"].is_object())
    }));
    // The configuration ([log] format), and the flag overriding it.
    let mut with_cfg = creds.to_vec();
    with_cfg.push(("MIAUDIT_LOG__FORMAT", "json"));
    let run = miaudit(&["--config", cfg, "scan"], &with_cfg).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    check(&run, true);
    let run = miaudit(
        &["--log-format", "text", "--config", cfg, "scan"],
        &with_cfg,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    check(&run, false);
    let bad = miaudit(&["--log-format", "yaml", "scan"], &[]).await;
    assert_eq!(bad.code, 2);
}

#[tokio::test]
async fn an_incomplete_scan_table_says_what_it_could_not_check_and_never_all_clear() {
    // The inventory fails: nothing could be judged.
    let (w, _, _) = orphan_world();
    let env = TestEnv::start(w, SimConfig::default()).await;
    env.sim.add_fault(FaultRule {
        api: Api::Graph,
        path_contains: None,
        times: None,
        fault: Fault::Status(500),
    });
    let cfg = env.config_path.to_str().expect("utf-8 path");
    let run = miaudit(&["--config", cfg, "scan"], &[]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    let out = &run.stdout;
    assert!(!out.contains("no orphaned or unknown identities"), "{out}");
    assert!(out.contains("INCOMPLETE SCAN"), "{out}");
    assert!(
        out.contains(&format!(
            "tenant {TENANT}: INCOMPLETE: its identities could not be listed, so none were judged"
        )),
        "{out}"
    );
    assert!(out.contains("  error: inventory:"), "{out}");
    assert!(out.contains("this is not an all-clear"), "{out}");
    let run = miaudit(&["--config", cfg, "scan", "--output", "json"], &[]).await;
    assert_eq!(run.code, 3);
    let v: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["complete"], false);
    let t = &v["tenants"][0];
    assert_eq!(
        (t["complete"].as_bool(), t["inventory_complete"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(t["unjudged"], Value::Null, "unknown how many");
    assert!(
        t["errors"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("inventory:"))
    );

    // The inventory is read, but checks fail: how many could not be judged.
    env.sim.clear_faults();
    env.sim.add_fault(FaultRule {
        api: Api::Arm,
        path_contains: Some("virtualMachines/gone".into()),
        times: None,
        fault: Fault::Status(503),
    });
    let run = miaudit(&["--config", cfg, "scan"], &[]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains(&format!(
            "tenant {TENANT}: INCOMPLETE: 1 of 2 identities could not be judged"
        )),
        "{out}"
    );
    assert!(
        out.contains("UNKNOWN (1)") && out.contains("check_failed"),
        "{out}"
    );
    assert!(!out.contains("no orphaned or unknown identities"), "{out}");
    let run = miaudit(&["--config", cfg, "scan", "--output", "json"], &[]).await;
    let v: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["tenants"][0]["unjudged"], 1);
    assert_eq!(v["tenants"][0]["inventory_complete"], true);
}
