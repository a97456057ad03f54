//! The never-cry-wolf property: under seeded fault schedules on every API (failures, and the hostile
//! answers of gateways, proxies, redirects and impostors, with extreme numbers), a scan never judges
//! orphaned an identity that the fault-free scan does not, never panics or stalls, never sends anything
//! where a redirect or paging link points; every check it could not complete is unknown /
//! check_failed; the scan is incomplete exactly when some check or the inventory failed; and the
//! findings' lifecycle changes only where evidence was authoritative.
//!
//! `MIAUDIT_FAULT_SCHEDULES` sets the number of schedules (CI: 200); a longer run:
//! `MIAUDIT_FAULT_SCHEDULES=2000 cargo test --release --test api cry_wolf -- --nocapture`.

use crate::helpers::*;
use miaudit::domain::{Reason, Verdict};
use miaudit_sim::Api;
use miaudit_sim::model::World;
use miaudit_sim::{Fault, FaultPlan, FaultRule, SimConfig};
use std::collections::BTreeMap;
use std::time::Duration;

fn all_kinds() -> Vec<Fault> {
    let mut kinds = vec![
        Fault::Throttle {
            retry_after: "0.01".into(),
        },
        Fault::Status(500),
        Fault::Status(502),
        Fault::Status(503),
        Fault::Status(504),
        Fault::Reset,
        Fault::Slow(Duration::from_millis(400)),
        Fault::Truncated,
        Fault::NotJson,
        Fault::EmptyPage,
        Fault::ExpiredPageToken,
        Fault::SkipTokenError,
        Fault::ExpireToken,
    ];
    // The hostile answers of gateways, proxies, redirects and impostors, and extreme numbers in wait
    // hints, quota headers and token lifetimes (issue 10). Left out: a 404 `SubscriptionNotFound` on one
    // resource of a subscription that is listed, which the verdict rules let a client judge unknown /
    // subscription_not_accessible, an answer this test's baseline comparison would count as a verdict
    // changed without a failed check.
    kinds.extend(
        Fault::hostile_answers().into_iter().filter(
            |f| !matches!(f, Fault::ArmNotFound { code } if code == "SubscriptionNotFound"),
        ),
    );
    kinds.extend(Fault::extreme_numbers());
    kinds
}

/// A scan under a fault schedule may fail checks, but it may not panic or stall: far beyond what the
/// retry settings below take, whatever wait or lifetime a server names.
const SCAN_LIMIT: Duration = Duration::from_secs(60);

const TIGHT: &str = "\n[scan]\nmax_retries = 3\nretry_base_delay = \"2ms\"\nretry_max_delay = \"10ms\"\nrequest_timeout = \"250ms\"\nconcurrency = 4\n";

type Snapshot = BTreeMap<String, (Option<String>, String, String, u32)>;

async fn snapshot(store: &miaudit::store::Store) -> Snapshot {
    let f = miaudit::store::FindingFilter {
        states: miaudit::lifecycle::State::ALL.to_vec(),
        ..Default::default()
    };
    let mut rows = store.list_findings(&f, None, 1000).await.expect("findings");
    let h = miaudit::store::FindingFilter {
        verdict: Some(Verdict::Healthy),
        ..Default::default()
    };
    rows.extend(store.list_findings(&h, None, 1000).await.expect("healthy"));
    rows.into_iter()
        .map(|r| {
            (
                r.finding.object_id.to_string(),
                (
                    r.state.map(|s| s.as_str().to_owned()),
                    r.finding.verdict.as_str().to_owned(),
                    r.finding.reason.as_str().to_owned(),
                    r.episode,
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_schedules_never_produce_a_false_orphan() {
    let schedules: u64 = std::env::var("MIAUDIT_FAULT_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let world = World::generate(77, 120);
    // A quota this test does not want to wait for; pacing is tested elsewhere.
    let cfg = SimConfig {
        graph_max_page: 40,
        arg_max_page: 60,
        arg_quota: 1_000_000,
        ..SimConfig::default()
    };
    let env = TestEnv::start_with(world, cfg, TIGHT).await;
    let baseline = scan_guarded(&env, SCAN_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("baseline: {e}"));
    assert!(baseline.complete, "{:?}", baseline.tenants);
    let base: BTreeMap<String, (Verdict, Reason)> = baseline
        .findings
        .iter()
        .map(|f| (f.object_id.to_string(), (f.verdict, f.reason)))
        .collect();
    let store = miaudit::store::Store::connect(&env.settings().database.url)
        .await
        .expect("db");
    store
        .record_scan(&baseline, Duration::ZERO)
        .await
        .expect("baseline recorded");
    let before = snapshot(&store).await;

    let (mut false_orphans, mut failed_checks, mut answered, mut incomplete_scans) =
        (0u64, 0u64, 0u64, 0u64);
    // First every kind alone, often enough that a scan meets it (so the check below that each was
    // injected does not rest on chance), then `schedules` mixes of all kinds at varied rates.
    let alone = all_kinds().into_iter().map(|kind| (300, vec![kind]));
    let mixed = (0..schedules).map(|seed| (50 + (seed * 37) % 350, all_kinds()));
    for (seed, (per_thousand, kinds)) in (0u64..).zip(alone.chain(mixed)) {
        env.sim.set_fault_plan(FaultPlan {
            seed,
            per_thousand,
            apis: Api::ALL.to_vec(),
            kinds,
        });
        let r = scan_guarded(&env, SCAN_LIMIT)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        env.sim.clear_faults();
        // Nothing may follow a redirect or a paging link away from the service.
        let strays = env.sim.strays();
        assert!(strays.is_empty(), "seed {seed}: {strays:?}");
        let inventory_ok = r.tenants.iter().all(|t| t.inventory_complete);
        let any_failed = r.findings.iter().any(|f| f.reason == Reason::CheckFailed);
        let subscriptions_ok = r.tenants.iter().all(|t| {
            !t.errors
                .iter()
                .any(|e| e.starts_with("subscriptions:") || e.starts_with("resource graph"))
        });
        assert_eq!(
            r.complete,
            inventory_ok && subscriptions_ok && !any_failed,
            "seed {seed}: completeness {:?}",
            r.tenants
        );
        incomplete_scans += u64::from(!r.complete);
        if inventory_ok {
            assert_eq!(
                r.findings.len(),
                base.len(),
                "seed {seed}: a complete inventory lists every identity"
            );
        }
        for f in &r.findings {
            let (bv, br) = base
                .get(f.object_id.as_str())
                .unwrap_or_else(|| panic!("seed {seed}: invented identity {}", f.object_id));
            if f.verdict == Verdict::Orphaned && *bv != Verdict::Orphaned {
                false_orphans += 1;
            }
            // No answer, or an absent identity that Resource Graph (down under the faults) could not
            // confirm: the verdict may only fall back to unknown.
            let unconfirmed = matches!(f.reason, Reason::CheckFailed | Reason::IdentityUnconfirmed);
            if unconfirmed && f.reason != *br {
                failed_checks += 1;
            } else {
                answered += 1;
                assert_eq!(
                    (f.verdict, f.reason),
                    (*bv, *br),
                    "seed {seed}: {} changed without a failed check",
                    f.object_id
                );
            }
        }
        store
            .record_scan(&r, Duration::ZERO)
            .await
            .expect("recorded");
        assert_eq!(
            snapshot(&store).await,
            before,
            "seed {seed}: the lifecycle moved without authoritative evidence"
        );
    }
    let injected = env.sim.injected();
    let total: u64 = injected.values().sum();
    println!("never-cry-wolf: {schedules} schedules, {total} faults injected {injected:?}");
    println!(
        "never-cry-wolf: false orphans {false_orphans}, verdicts still answered {answered} of {} ({:.1} %), incomplete scans {incomplete_scans}",
        answered + failed_checks,
        100.0 * answered as f64 / (answered + failed_checks).max(1) as f64
    );
    assert_eq!(false_orphans, 0);
    assert!(total >= schedules, "faults were injected: {injected:?}");
    for kind in [
        "connection_reset",
        "truncated_body",
        "empty_page",
        "token_expired",
        "expired_page_token",
        "gateway_empty_object",
        "collection_body",
        "redirect_other_host",
        "arm_404_not_about_resource",
        "extreme_throttle_header",
    ] {
        assert!(
            injected.contains_key(kind),
            "{kind} never injected: {injected:?}"
        );
    }
}

fn once(api: Api, fault: Fault) -> FaultRule {
    FaultRule {
        api,
        path_contains: None,
        times: Some(1),
        fault,
    }
}

#[tokio::test]
async fn each_kind_of_fault_is_recovered_from_when_it_passes() {
    let world = World::generate(21, 150);
    let cfg = SimConfig {
        graph_max_page: 50,
        arg_max_page: 50,
        ..SimConfig::default()
    };
    let env = TestEnv::start_with(world, cfg, TIGHT).await;
    let clean = env.scan().await;
    let verdicts = |r: &miaudit::report::ScanReport| {
        r.findings
            .iter()
            .map(|f| (f.object_id.clone(), f.verdict, f.reason))
            .collect::<Vec<_>>()
    };
    for (api, fault) in [
        (Api::Graph, Fault::Reset),
        (Api::Arm, Fault::Reset),
        (Api::Graph, Fault::Truncated),
        (Api::ResourceGraph, Fault::Truncated),
        (Api::Arm, Fault::NotJson),
        (Api::Token, Fault::NotJson),
        (Api::Graph, Fault::EmptyPage),
        (Api::ResourceGraph, Fault::EmptyPage),
        (Api::Graph, Fault::ExpiredPageToken),
        (Api::ResourceGraph, Fault::SkipTokenError),
        (Api::Arm, Fault::ExpireToken),
        (Api::Graph, Fault::ExpireToken),
        (Api::Arm, Fault::Slow(Duration::from_millis(400))),
    ] {
        env.sim.add_fault(once(api, fault.clone()));
        let r = env.scan().await;
        env.sim.clear_faults();
        assert!(r.complete, "{api:?} {fault:?}: {:?}", r.tenants);
        assert_eq!(verdicts(&r), verdicts(&clean), "{api:?} {fault:?}");
    }
    let injected = env.sim.injected();
    assert_eq!(injected.values().sum::<u64>(), 13, "{injected:?}");
}

#[tokio::test]
async fn an_expired_page_token_restarts_the_inventory_a_bounded_number_of_times() {
    let world = World::generate(5, 100);
    let cfg = SimConfig {
        graph_max_page: 30,
        ..SimConfig::default()
    };
    let env = TestEnv::start_with(world, cfg, TIGHT).await;
    env.sim.add_fault(FaultRule {
        api: Api::Graph,
        path_contains: Some("skiptoken".into()),
        times: Some(2),
        fault: Fault::ExpiredPageToken,
    });
    let r = env.scan().await;
    assert!(r.complete, "{:?}", r.tenants);
    assert_eq!(r.summary.total, 104);
    // For good: after three restarts the inventory gives up, incomplete, no verdicts.
    env.sim.add_fault(FaultRule {
        api: Api::Graph,
        path_contains: Some("skiptoken".into()),
        times: None,
        fault: Fault::ExpiredPageToken,
    });
    let r = env.scan().await;
    assert!(!r.complete && !r.tenants[0].inventory_complete);
    assert_eq!(r.summary.total, 0);
    assert!(
        r.tenants[0].errors[0].contains("Directory_ExpiredPageToken"),
        "{:?}",
        r.tenants[0].errors
    );
}
