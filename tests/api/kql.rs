//! Every Resource Graph query miaudit can send is checked by Microsoft's Kusto language service
//! (npm `@kusto/language-service-next`, pinned in tests/kql/package-lock.json; the test installs it
//! with `npm ci` when tests/kql/node_modules is missing, so `cargo test` needs only Node.js).

use miaudit::arm::{ArgTable, identity_query};
use miaudit_sim::model::default_providers;

#[test]
fn resource_graph_queries_have_no_kusto_syntax_diagnostics() {
    let all_types: Vec<String> = default_providers()
        .iter()
        .flat_map(|(ns, types)| {
            types
                .iter()
                .map(move |(t, _)| format!("{ns}/{t}").to_ascii_lowercase())
        })
        .collect();
    let mut queries = Vec::new();
    for table in [ArgTable::Resources, ArgTable::PolicyResources] {
        queries.push(identity_query(table, &all_types));
        for t in &all_types {
            queries.push(identity_query(table, std::slice::from_ref(t)));
        }
        queries.push(identity_query(
            table,
            &["microsoft.web/sites/slots".into(), "my-rp.x_y/t-1".into()],
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("queries.json");
    std::fs::write(&file, serde_json::to_string(&queries).expect("json")).expect("write");
    let kql_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kql");
    if !std::path::Path::new(kql_dir)
        .join("node_modules/@kusto/language-service-next")
        .exists()
    {
        let npm = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix", kql_dir])
            .status()
            .expect("npm runs (install Node.js and npm)");
        assert!(npm.success(), "npm ci in tests/kql failed");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kql/check.js");
    let out = std::process::Command::new("node")
        .arg(script)
        .arg(&file)
        .output()
        .expect("node runs (install Node.js; .ci/run installs the Kusto language service)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Kusto diagnostics:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("checked {} queries", queries.len())),
        "{stdout}"
    );
}
