//! Blast radius: the role assignments an orphaned principal still holds, read from Resource Graph's
//! `authorizationresources`, shown in the API, the notification and the metrics; privileged roles flag
//! the finding as high risk.

use crate::helpers::*;
use miaudit_sim::SimConfig;
use miaudit_sim::webhook::{Receiver, Script};
use std::time::Duration;

const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";

fn gauge(text: &str, name: &str) -> String {
    let series = format!("{name}{{tenant_id=\"{TENANT}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        .to_owned()
}

#[tokio::test]
async fn an_orphan_keeps_its_role_assignments_and_a_privileged_one_is_high_risk() {
    let (mut w, sub) = world();
    let sub_scope = format!("/subscriptions/{sub}");
    w.add_resource_group(&sub, "rg");
    let risky_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/risky");
    let risky = w.add_system_assigned(&risky_id);
    w.add_role_assignment(&sub_scope, OWNER, &risky);
    w.add_role_assignment(&format!("{sub_scope}/resourceGroups/rg"), READER, &risky);
    w.delete_resource(&risky_id);
    let mild_id = rid(&sub, "rg", "Microsoft.Web", "sites/mild");
    let mild = w.add_system_assigned(&mild_id);
    w.add_role_assignment(&sub_scope, READER, &mild);
    w.delete_resource(&mild_id);
    let bare_id = rid(&sub, "rg", "Microsoft.Web", "sites/bare");
    let bare = w.add_system_assigned(&bare_id);
    w.delete_resource(&bare_id);
    // A healthy identity's roles are nobody's business here.
    let alive = w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Web", "sites/alive"));
    w.add_role_assignment(&sub_scope, CONTRIBUTOR, &alive);
    let env = TestEnv::start(w, SimConfig::default()).await;
    let rx = Receiver::start(Script::default()).await.expect("receiver");
    let d = env
        .daemon(&format!(
            "[lifecycle]\nconfirm_after = \"0s\"\n\n[[notify.webhooks]]\nurl = \"{}/hook\"\n",
            rx.url()
        ))
        .await;
    d.scan().await;
    let (_, f) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{risky}"))).await;
    assert_eq!(f["high_risk"], true, "{f}");
    let roles = f["role_assignments"].as_array().expect("roles");
    assert_eq!(roles.len(), 2, "{f}");
    assert_eq!(
        (
            roles[0]["role_name"].as_str(),
            roles[0]["privileged"].as_bool(),
            roles[0]["scope"].as_str()
        ),
        (Some("Owner"), Some(true), Some(sub_scope.as_str())),
        "privileged first: {f}"
    );
    assert_eq!(roles[1]["role_name"], "Reader");
    assert!(
        roles[0]["id"]
            .as_str()
            .is_some_and(|i| i.contains("/providers/Microsoft.Authorization/roleAssignments/"))
    );
    let (_, m) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{mild}"))).await;
    assert_eq!(
        (
            m["high_risk"].as_bool(),
            m["role_assignments"].as_array().map(Vec::len)
        ),
        (Some(false), Some(1))
    );
    let (_, b) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{bare}"))).await;
    assert_eq!(b["role_assignments"].as_array().map(Vec::len), Some(0));
    let (_, a) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{alive}"))).await;
    assert_eq!(
        a["role_assignments"].as_array().map(Vec::len),
        Some(0),
        "healthy: not looked up"
    );
    // The list and the export carry it too.
    let (_, list) = get_json(&d.url("/api/v1/findings?verdict=orphaned")).await;
    let item = |o: &str| {
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["object_id"] == o)
            .cloned()
            .expect("listed")
    };
    assert_eq!(
        (
            item(&risky)["high_risk"].as_bool(),
            item(&mild)["high_risk"].as_bool()
        ),
        (Some(true), Some(false))
    );
    let csv = reqwest::get(d.url("/api/v1/export?format=csv"))
        .await
        .expect("export")
        .text()
        .await
        .expect("csv");
    let header = csv.lines().next().expect("header");
    assert!(header.ends_with("high_risk,role_assignments"), "{header}");
    let risky_line = csv.lines().find(|l| l.contains(&risky)).expect("risky row");
    assert!(risky_line.contains(",true,"), "{risky_line}");
    assert!(
        risky_line.contains(&format!("Owner at {sub_scope}")),
        "{risky_line}"
    );
    let text = d.metrics().await;
    assert_eq!(gauge(&text, "miaudit_orphans_with_role_assignments"), "2");
    assert_eq!(
        gauge(&text, "miaudit_orphans_with_privileged_role_assignments"),
        "1"
    );
    // The notification carries them.
    let start = std::time::Instant::now();
    while rx.received().len() < 3 {
        assert!(start.elapsed() < Duration::from_secs(10), "3 events");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let event = rx
        .received()
        .into_iter()
        .map(|r| r.json())
        .find(|e| e["object_id"] == risky.as_str())
        .expect("the risky orphan's event");
    assert_eq!(event["high_risk"], true);
    assert_eq!(event["role_assignments"][0]["role_name"], "Owner");
    // Support removes the principal: the finding resolves and its role assignments are no longer
    // counted as an orphan's (the dangling assignments themselves are another finding).
    env.sim.with_world(|w| w.remove_principal(&risky));
    d.scan().await;
    let text = d.metrics().await;
    assert_eq!(
        gauge(&text, "miaudit_orphans_with_privileged_role_assignments"),
        "0"
    );
    assert_eq!(gauge(&text, "miaudit_orphans_with_role_assignments"), "1");
    d.stop().await;
}

#[tokio::test]
async fn role_assignments_of_principals_that_no_longer_exist_are_reported_and_never_guessed() {
    let (mut w, sub) = world();
    let sub_scope = format!("/subscriptions/{sub}");
    let alive = w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Web", "sites/alive"));
    w.add_role_assignment(&sub_scope, READER, &alive);
    // An orphan's principal still exists: its assignments are blast radius, not dangling.
    let orphan_id = rid(&sub, "rg", "Microsoft.Web", "sites/orphan");
    let orphan = w.add_system_assigned(&orphan_id);
    w.add_role_assignment(&sub_scope, CONTRIBUTOR, &orphan);
    w.delete_resource(&orphan_id);
    // Support removed this one's principal; its Owner assignment stayed behind.
    let removed_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/removed");
    let removed = w.add_system_assigned(&removed_id);
    let dangling = w.add_role_assignment(&sub_scope, OWNER, &removed);
    w.delete_resource(&removed_id);
    w.remove_principal(&removed);
    let env = TestEnv::start(w, SimConfig::default()).await;
    let d = env.daemon("[lifecycle]\nconfirm_after = \"0s\"\n").await;
    d.scan().await;
    let (status, list) = get_json(&d.url("/api/v1/dangling-role-assignments")).await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(
        (
            items[0]["assignment_id"].as_str(),
            items[0]["principal_id"].as_str(),
            items[0]["role_name"].as_str(),
            items[0]["privileged"].as_bool()
        ),
        (
            Some(dangling.as_str()),
            Some(removed.as_str()),
            Some("Owner"),
            Some(true)
        ),
        "{list}"
    );
    assert_eq!(
        gauge(&d.metrics().await, "miaudit_dangling_role_assignments"),
        "1"
    );
    // An answer that lists nothing (not even the principals the inventory just listed) proves nothing.
    env.sim.add_fault(miaudit_sim::FaultRule {
        api: miaudit_sim::Api::Graph,
        path_contains: Some("getByIds".into()),
        times: None,
        fault: miaudit_sim::Fault::EmptyPage,
    });
    env.sim.with_world(|w| {
        w.add_role_assignment(&sub_scope, READER, &alive);
    });
    d.scan().await;
    let (_, empty) = get_json(&d.url("/api/v1/dangling-role-assignments")).await;
    assert_eq!(
        empty["items"].as_array().map(Vec::len),
        Some(1),
        "an empty answer is no evidence: {empty}"
    );
    env.sim.clear_faults();
    // Graph cannot be asked: nothing is concluded, what was found stays.
    env.sim.add_fault(miaudit_sim::FaultRule {
        api: miaudit_sim::Api::Graph,
        path_contains: Some("getByIds".into()),
        times: None,
        fault: miaudit_sim::Fault::Status(503),
    });
    env.sim.with_world(|w| {
        w.add_role_assignment(&sub_scope, READER, "0f0f0f0f-1111-2222-3333-444444444444");
    });
    d.scan().await;
    let (_, again) = get_json(&d.url("/api/v1/dangling-role-assignments")).await;
    assert_eq!(again["items"].as_array().map(Vec::len), Some(1), "{again}");
    env.sim.clear_faults();
    d.scan().await;
    let (_, later) = get_json(&d.url("/api/v1/dangling-role-assignments")).await;
    assert_eq!(later["items"].as_array().map(Vec::len), Some(2), "{later}");
    d.stop().await;
    // With a confirmation period, a new dangling assignment is suspected first and not counted.
    let d = env.daemon("[lifecycle]\nconfirm_after = \"2h\"\n").await;
    env.sim.with_world(|w| {
        w.add_role_assignment(&sub_scope, READER, "1e1e1e1e-5555-6666-7777-888888888888");
    });
    d.scan().await;
    let (_, list) = get_json(&d.url("/api/v1/dangling-role-assignments")).await;
    let fresh = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["principal_id"] == "1e1e1e1e-5555-6666-7777-888888888888")
        .cloned()
        .expect("listed");
    assert_eq!(fresh["state"], "suspected", "{fresh}");
    assert_eq!(
        gauge(&d.metrics().await, "miaudit_dangling_role_assignments"),
        "2"
    );
    d.stop().await;
}
