//! Throttling, server errors and expired tokens: recovered with the right verdicts, or reported as
//! unknown and incomplete — never orphaned, never "0 orphans" presented as complete.

use crate::helpers::*;
use miaudit_sim::Api;
use miaudit_sim::model::World;
use miaudit_sim::{Fault, FaultRule, SimConfig};
use std::collections::BTreeMap;
use std::time::Duration;

fn verdicts(r: &miaudit::report::ScanReport) -> BTreeMap<String, (String, String)> {
    r.findings
        .iter()
        .map(|f| {
            (
                f.object_id.to_string(),
                (f.verdict.as_str().to_owned(), f.reason.as_str().to_owned()),
            )
        })
        .collect()
}

fn once(api: Api, path: Option<&str>, fault: Fault) -> FaultRule {
    FaultRule {
        api,
        path_contains: path.map(str::to_owned),
        times: Some(1),
        fault,
    }
}

#[tokio::test]
async fn one_429_and_one_503_on_every_api_are_recovered_with_the_same_verdicts() {
    let world = World::generate(7, 300);
    let clean_env = TestEnv::start(world.clone(), SimConfig::default()).await;
    let clean = clean_env.scan().await;
    assert!(clean.complete);

    let env = TestEnv::start(world, SimConfig::default()).await;
    for api in [Api::Token, Api::Graph, Api::ResourceGraph, Api::Arm] {
        env.sim.add_fault(once(
            api,
            None,
            Fault::Throttle {
                retry_after: "0.05".into(),
            },
        ));
        env.sim.add_fault(once(api, None, Fault::Status(503)));
    }
    // And on an individual resource GET (a candidate check).
    env.sim.add_fault(once(
        Api::Arm,
        Some("/providers/Microsoft.Compute/virtualMachines/"),
        Fault::Status(503),
    ));
    let r = env.scan().await;
    assert!(r.complete, "{:?}", r.tenants);
    assert_eq!(verdicts(&r), verdicts(&clean));
    let req = &r.tenants[0].requests;
    for api in ["token", "graph", "resource_graph", "arm"] {
        assert!(
            req[api].throttled >= 1 && req[api].retries >= 2,
            "{api}: {:?}",
            req[api]
        );
    }
}

#[tokio::test]
async fn exhausted_retries_on_a_check_make_it_unknown_and_the_scan_incomplete() {
    let (mut w, sub) = world();
    let gone_id = rid(
        &sub,
        "rg",
        "Microsoft.Compute",
        "virtualMachines/flaky-gone",
    );
    let flaky = w.add_system_assigned(&gone_id);
    w.delete_resource(&gone_id);
    let other_id = rid(
        &sub,
        "rg",
        "Microsoft.Compute",
        "virtualMachines/really-gone",
    );
    let other = w.add_system_assigned(&other_id);
    w.delete_resource(&other_id);
    let healthy = w.add_system_assigned(&rid(
        &sub,
        "rg",
        "Microsoft.Compute",
        "virtualMachines/fine",
    ));
    let env = TestEnv::start(w, SimConfig::default()).await;
    env.sim.add_fault(FaultRule {
        api: Api::Arm,
        path_contains: Some("flaky-gone".into()),
        times: None,
        fault: Fault::Status(503),
    });
    let r = env.scan().await;
    assert!(!r.complete);
    assert!(!r.tenants[0].complete);
    assert_eq!(outcome(&r, &flaky), ("unknown", "check_failed"));
    assert_eq!(outcome(&r, &other), ("orphaned", "resource_not_found"));
    assert_eq!(outcome(&r, &healthy), ("healthy", "resource_present"));
    assert!(
        r.tenants[0]
            .errors
            .iter()
            .any(|e| e.contains("1 resource checks")),
        "{:?}",
        r.tenants[0].errors
    );
}

#[tokio::test]
async fn throttling_that_never_ends_is_unknown_not_orphaned() {
    let (mut w, sub) = world();
    let gone_id = rid(&sub, "rg", "Microsoft.Web", "sites/throttled");
    let p = w.add_system_assigned(&gone_id);
    w.delete_resource(&gone_id);
    let env = TestEnv::start(w, SimConfig::default()).await;
    env.sim.add_fault(FaultRule {
        api: Api::Arm,
        path_contains: Some("sites/throttled".into()),
        times: None,
        fault: Fault::Throttle {
            retry_after: "0".into(),
        },
    });
    let r = env.scan().await;
    assert_eq!(outcome(&r, &p), ("unknown", "check_failed"));
    assert!(!r.complete);
}

#[tokio::test]
async fn a_failed_inventory_reports_no_identities_and_an_incomplete_scan() {
    let (mut w, sub) = world();
    w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/vm"));
    let env = TestEnv::start(w, SimConfig::default()).await;
    env.sim.add_fault(FaultRule {
        api: Api::Graph,
        path_contains: None,
        times: None,
        fault: Fault::Status(500),
    });
    let r = env.scan().await;
    assert!(!r.complete);
    assert_eq!(r.summary.total, 0);
    assert!(
        r.tenants[0].errors[0].starts_with("inventory:"),
        "{:?}",
        r.tenants[0].errors
    );
    // 1 + 3 retries, then give up.
    assert_eq!(env.sim.requests(Api::Graph), 4);
}

#[tokio::test]
async fn resource_graph_down_falls_back_to_arm_with_the_same_verdicts() {
    let world = World::generate(3, 200);
    let clean_env = TestEnv::start(world.clone(), SimConfig::default()).await;
    let clean = clean_env.scan().await;
    let env = TestEnv::start(world, SimConfig::default()).await;
    env.sim.add_fault(FaultRule {
        api: Api::ResourceGraph,
        path_contains: None,
        times: None,
        fault: Fault::Status(500),
    });
    let r = env.scan().await;
    // ARM answered every check, but Resource Graph's second witness was missing: not fully checked.
    assert!(!r.complete, "{:?}", r.tenants);
    // Every verdict stands, except an identity ARM shows switched off: without Resource Graph's row
    // there is no second witness, so it is unknown (identity_unconfirmed), never guessed.
    let mut expected = verdicts(&clean);
    let mut unconfirmed = 0;
    for (object_id, v) in expected.iter_mut() {
        let f = clean
            .findings
            .iter()
            .find(|f| f.object_id.as_str() == object_id.as_str())
            .expect("listed");
        if v.1 == "principal_mismatch" && f.detail.contains("carries no such identity") {
            *v = ("unknown".into(), "identity_unconfirmed".into());
            unconfirmed += 1;
        }
    }
    assert!(unconfirmed > 0, "the world has an identity switched off");
    assert_eq!(verdicts(&r), expected);
    assert!(
        r.tenants[0]
            .errors
            .iter()
            .any(|e| e.starts_with("resource graph"))
    );
}

#[tokio::test]
async fn tokens_that_expire_mid_scan_are_refreshed() {
    let (mut w, sub) = world();
    let mut ids = Vec::new();
    for i in 0..6 {
        let id = rid(
            &sub,
            "rg",
            "Microsoft.Compute",
            &format!("virtualMachines/vm{i}"),
        );
        ids.push(w.add_system_assigned(&id));
        // Force ARM GETs so the scan outlives its tokens.
        w.hide_from_resource_graph(&id);
    }
    let cfg = SimConfig {
        token_lifetime_secs: 1,
        latency: Duration::from_millis(150),
        ..SimConfig::default()
    };
    let env = TestEnv::start_with(
        w,
        cfg,
        &FAST_RETRIES.replace("\"5s\"", "\"5s\"\nconcurrency = 1"),
    )
    .await;
    let r = env.scan().await;
    assert!(r.complete, "{:?}", r.tenants);
    for id in &ids {
        assert_eq!(outcome(&r, id).0, "healthy");
    }
    assert!(env.sim.requests(Api::Token) > 2, "tokens were renewed");
}

#[tokio::test]
async fn a_wrong_secret_is_one_clear_error_without_the_secret() {
    let (mut w, sub) = world();
    w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/vm"));
    let env = TestEnv::start(w, SimConfig::default()).await;
    let text = std::fs::read_to_string(&env.config_path).expect("config");
    let wrong = text.replace(miaudit_sim::model::SIM_CLIENT_SECRET, "a-wrong-secret");
    assert_ne!(text, wrong);
    std::fs::write(&env.config_path, wrong).expect("config");
    let r = env.scan().await;
    assert!(!r.complete);
    let err = &r.tenants[0].errors[0];
    assert!(
        err.contains("AADSTS7000215") && err.contains("invalid_client"),
        "{err}"
    );
    assert!(!err.contains("a-wrong-secret"));
    // One request per audience at most (Graph's and ARM's are asked side by side): a refusal is not
    // retried.
    let tokens = env.sim.requests(Api::Token);
    assert!(
        (1..=2).contains(&tokens),
        "credential errors are not retried: {tokens} token requests"
    );
}

#[tokio::test]
async fn tenants_are_scanned_side_by_side_and_one_failing_does_not_touch_the_other() {
    let (mut w, sub) = world();
    let gone_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/gone");
    let gone = w.add_system_assigned(&gone_id);
    w.delete_resource(&gone_id);
    let env = TestEnv::start(w, SimConfig::default()).await;
    let text = std::fs::read_to_string(&env.config_path).expect("config");
    let other = "0badc0de-0000-4000-8000-000000000000";
    std::fs::write(
        &env.config_path,
        format!("{text}\n[[tenants]]\nid = \"{other}\"\nname = \"elsewhere\"\n"),
    )
    .expect("config");
    let r = env.scan().await;
    assert_eq!(
        r.tenants
            .iter()
            .map(|t| t.tenant_id.as_str())
            .collect::<Vec<_>>(),
        [TENANT, other]
    );
    assert!(r.tenants[0].complete);
    assert_eq!(outcome(&r, &gone), ("orphaned", "resource_not_found"));
    assert!(!r.tenants[1].complete && r.tenants[1].identities == 0);
    assert!(
        r.tenants[1].errors[0].contains("AADSTS90002"),
        "{:?}",
        r.tenants[1].errors
    );
    assert!(!r.complete);
    assert_eq!(r.tenants[0].requests["token"].requests, 2);
    // Refused: one request per audience at most, none retried.
    assert!((1..=2).contains(&r.tenants[1].requests["token"].requests));
}

#[tokio::test]
async fn provider_lookups_are_shared_by_concurrent_checks_and_tried_again_next_scan() {
    use miaudit::domain::Trigger;
    use miaudit::scan::Scanner;
    use miaudit_sim::model::SubAccess;
    let mut world = World::new(TENANT, 7);
    let sub = world.add_subscription("prod", SubAccess::Reader);
    world.add_resource_group(&sub, "rg");
    for i in 0..24 {
        let id = World::resource_id(
            &sub,
            "rg",
            "Microsoft.Compute",
            &format!("virtualMachines/vm{i}"),
        );
        world.add_system_assigned(&id);
    }
    let env = TestEnv::start(world, SimConfig::default()).await;
    // Resource Graph down: every identity goes to ARM, 24 checks of one namespace at once (8 at a time).
    env.sim.add_fault(FaultRule {
        api: Api::ResourceGraph,
        path_contains: None,
        times: None,
        fault: Fault::Status(500),
    });
    // The providers API of that namespace fails (subscription- and tenant-level lookups both match).
    env.sim.add_fault(FaultRule {
        api: Api::Arm,
        path_contains: Some("providers/Microsoft.Compute?".into()),
        times: None,
        fault: Fault::Status(503),
    });
    let settings = env.settings();
    let scanner = Scanner::new(&settings).expect("scanner");
    let lookups = || env.sim.injected().get("status_503").copied().unwrap_or(0);
    let first = scanner.run(&settings.tenant_ids(), Trigger::Cli).await;
    // One lookup for the whole scan: (1 + 3 retries) at the subscription level, as many at the tenant level.
    assert_eq!(lookups(), 2 * 4, "concurrent checks share one lookup");
    // The versions are learnt from ARM's refusal of a probe instead; every VM is still judged.
    assert_eq!(first.summary.healthy, 24, "{:?}", first.tenants);
    // The failure is not remembered: the next scan of the same scanner asks again, once.
    scanner.run(&settings.tenant_ids(), Trigger::Cli).await;
    assert_eq!(
        lookups(),
        2 * 2 * 4,
        "a failed lookup is tried again next scan"
    );
    env.sim.clear_faults();
    let third = scanner.run(&settings.tenant_ids(), Trigger::Cli).await;
    assert!(third.complete, "{:?}", third.tenants);
    assert_eq!(third.summary.healthy, 24);
}
