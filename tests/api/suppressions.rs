//! The allowlist: suppressions from the configuration and the API cover open orphans, which stay listed
//! and counted as `suppressed` but are neither notified, exported nor alerted on; an expired or deleted
//! suppression makes them active again.

use crate::helpers::*;
use miaudit_sim::SimConfig;
use miaudit_sim::webhook::{Receiver, Script};
use std::time::Duration;

const TOKEN: &str = "suppress-test-token-7f3a";

fn state_count(text: &str, state: &str) -> String {
    let series = format!("miaudit_findings{{state=\"{state}\",tenant_id=\"{TENANT}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        .to_owned()
}

async fn state_of(d: &Daemon, object: &str) -> serde_json::Value {
    get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{object}")))
        .await
        .1
}

#[tokio::test]
async fn suppressed_orphans_are_kept_and_counted_but_not_notified_exported_or_alerted() {
    let (mut w, sub) = world();
    let orphan = |w: &mut miaudit_sim::model::World, rg: &str, name: &str| {
        let id = rid(
            &sub,
            rg,
            "Microsoft.Compute",
            &format!("virtualMachines/{name}"),
        );
        let o = w.add_system_assigned(&id);
        w.delete_resource(&id);
        o
    };
    let sandbox = orphan(&mut w, "Sandbox", "a");
    let expired = orphan(&mut w, "prod", "b");
    let plain = orphan(&mut w, "prod", "c");
    let later = orphan(&mut w, "prod", "d");
    let env = TestEnv::start(w, SimConfig::default()).await;
    let rx = Receiver::start(Script::default()).await.expect("receiver");
    let d = env
        .daemon(&format!(
            "[lifecycle]\nconfirm_after = \"0s\"\n[http]\nlisten = \"127.0.0.1:0\"\napi_token = \"{TOKEN}\"\n\n\
             [[notify.webhooks]]\nurl = \"{}/hook\"\n\n\
             [[suppressions]]\nresource_id = \"/subscriptions/*/resourceGroups/sandbox/*\"\nreason = \"sandbox, cleaned monthly\"\nowner = \"platform-team\"\n\n\
             [[suppressions]]\nobject_id = \"{expired}\"\nreason = \"was waiting for support\"\nowner = \"secops\"\nexpires = \"2020-01-01\"\n",
            rx.url()
        ))
        .await;
    // Suppressed through the API before its first scan: never announced while covered.
    let c = reqwest::Client::new();
    let r = c
        .post(d.url("/api/v1/suppressions"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"object_id": later, "reason": "triage", "owner": "carol"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    let later_id = r.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    d.scan().await;
    let a = state_of(&d, &sandbox).await;
    assert_eq!(
        (a["state"].as_str(), a["suppressed_by"].as_str()),
        (Some("suppressed"), Some("config-1")),
        "{a}"
    );
    assert_eq!(
        a["lifecycle_state"], "confirmed",
        "the lifecycle goes on underneath: {a}"
    );
    assert_eq!(
        state_of(&d, &expired).await["state"],
        "confirmed",
        "an expired suppression covers nothing"
    );
    assert_eq!(state_of(&d, &plain).await["state"], "confirmed");
    let m = d.metrics().await;
    assert_eq!(state_count(&m, "suppressed"), "2");
    assert_eq!(state_count(&m, "confirmed"), "2");
    assert!(
        m.contains(&format!(
            "miaudit_new_orphans_total{{tenant_id=\"{TENANT}\"}} 2"
        )),
        "{m}"
    );
    // Kept and listed (never silently hidden), filterable.
    let (_, all) = get_json(&d.url("/api/v1/findings")).await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(4));
    let (_, sup) = get_json(&d.url("/api/v1/findings?state=suppressed")).await;
    assert_eq!(sup["items"].as_array().map(Vec::len), Some(2));
    let (_, mixed) = get_json(&d.url("/api/v1/findings?state=suppressed,confirmed")).await;
    assert_eq!(mixed["items"].as_array().map(Vec::len), Some(4));
    let (_, conf) = get_json(&d.url("/api/v1/findings?state=confirmed")).await;
    assert_eq!(conf["items"].as_array().map(Vec::len), Some(2));
    // Not exported, not notified.
    let csv = reqwest::get(d.url("/api/v1/export?format=csv"))
        .await
        .expect("export")
        .text()
        .await
        .expect("csv");
    assert!(!csv.contains(&sandbox) && csv.contains(&plain), "{csv}");
    let start = std::time::Instant::now();
    while rx.received().len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let notified: Vec<String> = rx
        .received()
        .iter()
        .map(|r| {
            r.json()["object_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(notified.len(), 2);
    assert!(!notified.contains(&sandbox) && !notified.contains(&later));
    // Its suppression deleted, the confirmed orphan is active again and announced now, once.
    let del = c
        .delete(d.url(&format!("/api/v1/suppressions/{later_id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), 204);
    let start = std::time::Instant::now();
    while rx.received().len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the reactivated orphan is announced"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let announced = rx.received()[2].json();
    assert_eq!(
        (announced["object_id"].as_str(), announced["type"].as_str()),
        (Some(later.as_str()), Some("orphan.confirmed"))
    );
    // A suppressed orphan that resolves was never announced: no resolved event either.
    env.sim.with_world(|w| w.remove_principal(&sandbox));
    d.scan().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        rx.received().len(),
        3,
        "{:?}",
        rx.received().iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    assert_eq!(state_of(&d, &sandbox).await["state"], "resolved");

    // Through the API: needs the token, covers at once, and ends when deleted or expired.
    let body = serde_json::json!({"object_id": plain, "reason": "accepted risk", "owner": "alice"});
    let r = c
        .post(d.url("/api/v1/suppressions"))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    let r = c
        .post(d.url("/api/v1/suppressions"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    let made: serde_json::Value = r.json().await.expect("json");
    let id = made["id"].as_str().expect("id").to_owned();
    assert_eq!(state_of(&d, &plain).await["state"], "suppressed");
    assert_eq!(state_count(&d.metrics().await, "suppressed"), "1");
    let everything = c
        .post(d.url("/api/v1/suppressions"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"resource_id": "/*", "reason": "all", "owner": "x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(everything.status(), 400, "a pattern of only '*' is refused");
    let bad = c
        .post(d.url("/api/v1/suppressions"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"reason": "no selector", "owner": "x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
    let (_, list) = get_json(&d.url("/api/v1/suppressions")).await;
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{list}");
    assert_eq!(
        items[1]["active"], false,
        "the expired one is listed as inactive: {list}"
    );
    let del = c
        .delete(d.url("/api/v1/suppressions/config-1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), 409, "the configuration's are removed there");
    let del = c
        .delete(d.url(&format!("/api/v1/suppressions/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), 204);
    assert_eq!(
        state_of(&d, &plain).await["state"],
        "confirmed",
        "active again once deleted"
    );
    // One that expires: covers now, and the next application after its expiry re-activates.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let r = c.post(d.url("/api/v1/suppressions")).bearer_auth(TOKEN)
        .json(&serde_json::json!({"object_id": plain, "reason": "short", "owner": "bob", "expires_at": soon}))
        .send().await.expect("post");
    assert_eq!(r.status(), 201);
    assert_eq!(state_of(&d, &plain).await["state"], "suppressed");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    d.scan().await;
    assert_eq!(
        state_of(&d, &plain).await["state"],
        "confirmed",
        "expired: active again"
    );
    d.stop().await;
}

#[test]
fn a_suppression_needs_a_selector_a_reason_and_an_owner() {
    let err = miaudit::config::Settings::from_toml_str(
        "[[suppressions]]\nreason = \"x\"\n\n[[suppressions]]\nobject_id = \"o\"\nexpires = \"tomorrow\"\ncolour = \"red\"\n",
        &Default::default(),
    )
    .expect_err("refused")
    .to_string();
    for needle in [
        "suppressions[0]: needs at least one of object_id",
        "suppressions[0].owner: missing",
        "suppressions[1].reason: missing",
        "suppressions[1].expires: \"tomorrow\" is not a date",
        "suppressions[1].colour: unknown key",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
}
