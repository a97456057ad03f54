//! The shipped Prometheus alerting rules: valid, unit-tested with promtool (each alert firing and not
//! firing), and reading only metrics the daemon exports from start-up.

use crate::helpers::*;
use miaudit_sim::SimConfig;
use miaudit_sim::model::World;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir())
        .output()
        .expect("promtool runs (Debian package prometheus; .ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The alerts the alerting issue asks for, and the ones added beside them.
const ALERTS: &[&str] = &[
    "MiauditNewOrphans",
    "MiauditOrphanWithoutTicket",
    "MiauditOrphanWithPrivilegedRole",
    "MiauditScanFailing",
    "MiauditScanStale",
    "MiauditScanIncomplete",
    "MiauditThrottled",
    "MiauditCoverageBelowFull",
    "MiauditNotificationsDead",
    "MiauditDown",
];

#[test]
fn the_rules_load_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "miaudit-rules.yml"]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{checked}"
    );
    promtool(&["test", "rules", "miaudit-rules.test.yml"]);
}

#[test]
fn every_alert_has_annotations_and_is_tested_firing_and_not_firing() {
    let rules = std::fs::read_to_string(dir().join("miaudit-rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir().join("miaudit-rules.test.yml")).expect("tests");
    let cases: Vec<&str> = tests.split("- eval_time:").skip(1).collect();
    for alert in ALERTS {
        let at = rules
            .find(&format!("- alert: {alert}\n"))
            .unwrap_or_else(|| panic!("{alert} missing from the rules"));
        let rule = &rules[at..];
        let rule = &rule[..rule[1..].find("- alert:").map_or(rule.len(), |n| n + 1)];
        for key in ["summary:", "description:", "runbook_url:", "severity:"] {
            assert!(rule.contains(key), "{alert} has no {key}");
        }
        let mine: Vec<&&str> = cases
            .iter()
            .filter(|c| c.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            mine.iter().any(|c| c.contains("exp_alerts: []")),
            "{alert} is never tested not firing"
        );
        assert!(
            mine.iter().any(|c| c.contains("exp_labels:")),
            "{alert} is never tested firing"
        );
    }
}

/// The PromQL of every panel of the Grafana dashboard, with Grafana's variables filled in as Grafana
/// would (`$tenant` all tenants, `$__rate_interval` a scrape-sized window).
fn dashboard_exprs() -> Vec<String> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/miaudit-dashboard.json");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let e = t["expr"].as_str().expect("expr");
            exprs.push(e.replace("$tenant", ".*").replace("$__rate_interval", "5m"));
        }
    }
    exprs
}

#[test]
fn every_dashboard_expression_is_valid_promql() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 14, "{exprs:?}");
    // promtool checks PromQL as Prometheus parses it: each expression as a recording rule.
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        yaml.push_str(&format!(
            "      - record: dashboard:panel_{i}\n        expr: '{}'\n",
            e.replace('\'', "''")
        ));
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("dashboard-rules.yml");
    std::fs::write(&file, yaml).expect("write");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn every_metric_a_rule_or_the_dashboard_reads_is_exported_from_start_up() {
    let rules = std::fs::read_to_string(dir().join("miaudit-rules.yml")).expect("rules")
        + &dashboard_exprs().join("\n");
    let mut names: Vec<String> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("miaudit_"))
        // A histogram's series are read through its _bucket.
        .map(|w| w.trim_end_matches("_bucket").to_owned())
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 9, "{names:?}");
    let env = TestEnv::start(World::generate(7, 20), SimConfig::default()).await;
    // A webhook configured, so its series exist; no scan has run.
    let d = env
        .daemon("[[notify.webhooks]]\nname = \"soc\"\nurl = \"http://127.0.0.1:9/hook\"\n")
        .await;
    let text = d.metrics().await;
    for name in &names {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name}{{"))
                || l.starts_with(&format!("{name}_bucket{{"))),
            "{name} is read by a rule but not exported before the first scan:\n{text}"
        );
    }
    d.stop().await;
}
