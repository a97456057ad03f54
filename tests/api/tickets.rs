//! The support-ticket ledger: `export --format ticket` writes one ticket text per tenant of the confirmed
//! orphans awaiting a ticket, with their evidence and role assignments, and marks them exported so the
//! same list is never filed twice; the API shows which findings await a ticket.

use crate::helpers::*;
use miaudit_sim::SimConfig;

#[tokio::test]
async fn a_ticket_lists_each_confirmed_orphan_once_with_its_evidence() {
    let (mut w, sub) = world();
    let a_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/gone-a");
    let a = w.add_system_assigned(&a_id);
    w.add_role_assignment(
        &format!("/subscriptions/{sub}"),
        "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        &a,
    );
    w.delete_resource(&a_id);
    let b_id = rid(&sub, "rg", "Microsoft.Web", "sites/gone-b");
    let b = w.add_system_assigned(&b_id);
    w.delete_resource(&b_id);
    w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Web", "sites/alive"));
    let env = TestEnv::start(w, SimConfig::default()).await;
    let config = env.dir.path().join("tickets.toml");
    let base = std::fs::read_to_string(&env.config_path).expect("config");
    std::fs::write(
        &config,
        format!("{base}\n[lifecycle]\nconfirm_after = \"0s\"\n"),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let scan = miaudit(&["--config", config, "scan"], &[]).await;
    assert_eq!(scan.code, 0, "{}", scan.stderr);

    let first = miaudit(&["--config", config, "export", "--format", "ticket"], &[]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let text = &first.stdout;
    assert!(text.contains(&format!("Tenant ID: {TENANT}")), "{text}");
    assert!(text.contains("Service principals listed: 2"), "{text}");
    for id in [&a, &b] {
        assert_eq!(text.matches(id.as_str()).count(), 1, "{id} once:\n{text}");
    }
    assert!(
        text.contains("status 404, code ResourceNotFound, x-ms-request-id "),
        "{text}"
    );
    assert!(
        !text.contains("x-ms-request-id -,"),
        "every entry has its request id:\n{text}"
    );
    assert!(
        text.contains("Owner [privileged] at /subscriptions/"),
        "{text}"
    );
    assert!(text.contains("Request: please delete the service principals listed above"));
    assert!(
        first.stderr.contains("2 findings marked exported"),
        "{}",
        first.stderr
    );

    // Never filed twice: the next export has nothing; --include-exported lists them again.
    let second = miaudit(&["--config", config, "export", "--format", "ticket"], &[]).await;
    assert_eq!(
        (second.code, second.stdout.as_str()),
        (0, ""),
        "{}",
        second.stderr
    );
    assert!(
        second
            .stderr
            .contains("no confirmed orphan awaits a ticket")
    );
    let again = miaudit(
        &[
            "--config",
            config,
            "export",
            "--format",
            "ticket",
            "--include-exported",
        ],
        &[],
    )
    .await;
    assert!(again.stdout.contains(&a) && again.stdout.contains(&b));
    let refused = miaudit(
        &[
            "--config",
            config,
            "export",
            "--format",
            "csv",
            "--include-exported",
        ],
        &[],
    )
    .await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);

    // The API: exported findings no longer await a ticket, and say when they were exported.
    let d = env.daemon("").await;
    let (_, awaiting) = get_json(&d.url("/api/v1/findings?awaiting_ticket=true")).await;
    assert_eq!(
        awaiting["items"].as_array().map(Vec::len),
        Some(0),
        "{awaiting}"
    );
    let (_, f) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{a}"))).await;
    assert!(f["exported_at"].is_string(), "{f}");
    assert_eq!(f["awaiting_ticket"], false);
    let (status, _) = get_json(&d.url("/api/v1/findings?awaiting_ticket=maybe")).await;
    assert_eq!(status, 400);
    d.stop().await;
}

#[tokio::test]
async fn confirmed_orphans_await_a_ticket_until_exported_and_the_api_preview_marks_nothing() {
    let (mut w, sub) = world();
    let id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/gone");
    let o = w.add_system_assigned(&id);
    w.delete_resource(&id);
    let env = TestEnv::start(w, SimConfig::default()).await;
    let d = env.daemon("[lifecycle]\nconfirm_after = \"0s\"\n").await;
    d.scan().await;
    let (_, awaiting) = get_json(&d.url("/api/v1/findings?awaiting_ticket=true")).await;
    let items = awaiting["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{awaiting}");
    assert_eq!(items[0]["object_id"], o.as_str());
    assert_eq!(items[0]["awaiting_ticket"], true);
    let preview = reqwest::get(d.url("/api/v1/export?format=ticket"))
        .await
        .expect("export");
    assert_eq!(preview.status(), 200);
    assert!(preview.text().await.expect("text").contains(&o));
    let (_, still) = get_json(&d.url("/api/v1/findings?awaiting_ticket=true")).await;
    assert_eq!(
        still["items"].as_array().map(Vec::len),
        Some(1),
        "a preview marks nothing"
    );
    d.stop().await;
}
