//! Paging: Graph by `@odata.nextLink`, ARM subscriptions by `nextLink`, Resource Graph by `$skipToken`,
//! and Resource Graph's per-user quota respected by pacing, not by bouncing off 429s.

use crate::helpers::*;
use miaudit::domain::EvidenceSource;
use miaudit_sim::Api;
use miaudit_sim::SimConfig;
use miaudit_sim::model::SubAccess;
use std::time::Duration;

/// Besides the identity queries, every scan makes one `authorizationresources` query for dangling role
/// assignments (these tenants have no orphans, so no blast-radius query, and no role assignments, so
/// no role-definition query and no Graph `getByIds`).
const ROLE_QUERIES: u64 = 1;

/// `n` virtual machines with a system-assigned identity in `sub`; their principals.
fn virtual_machines(w: &mut miaudit_sim::model::World, sub: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            w.add_system_assigned(&rid(
                sub,
                "rg",
                "Microsoft.Compute",
                &format!("virtualMachines/vm{i}"),
            ))
        })
        .collect()
}

/// A simulator whose Graph pages hold at most `n` service principals.
fn graph_pages_of(n: usize) -> SimConfig {
    SimConfig {
        graph_max_page: n,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn graph_pages_are_followed_until_next_link_is_absent() {
    let (mut w, sub) = world();
    let ids = virtual_machines(&mut w, &sub, 10);
    // Non-managed principals interleaved: the server filters them, pages stay short.
    w.add_principal("Application", "app", None);
    let env = TestEnv::start(w, graph_pages_of(3)).await;
    let r = env.scan().await;
    assert!(r.complete);
    assert_eq!(env.sim.requests(Api::Graph), 4, "10 identities at 3 a page");
    for id in &ids {
        assert_eq!(outcome(&r, id).0, "healthy");
    }
    assert_eq!(r.summary.total, 10);
}

/// The simulator's statistics (what `miaudit bench` reads): a throttled answer and its retry are two
/// requests but one distinct one; a change of the world shows in the next listing.
#[tokio::test]
async fn the_simulator_counts_requests_retries_and_distinct_pages() {
    let (mut w, sub) = world();
    let ids = virtual_machines(&mut w, &sub, 7);
    let env = TestEnv::start(w, graph_pages_of(3)).await;
    env.sim.add_fault(miaudit_sim::FaultRule {
        api: Api::Graph,
        path_contains: None,
        times: Some(1),
        fault: miaudit_sim::Fault::Throttle {
            retry_after: "0".into(),
        },
    });
    assert!(env.scan().await.complete);
    let s = env.sim.stats(true);
    assert_eq!(s.identities, 7);
    let graph = s.api(Api::Graph);
    assert_eq!(
        (graph.requests, graph.throttled, graph.distinct),
        (4, 1, 3),
        "3 pages, the first retried once"
    );
    assert_eq!(s.api(Api::Token).distinct, 2, "one token per audience");
    assert_eq!(s.arm("subscription_list"), 1);
    assert_eq!(env.sim.stats(false).api(Api::Graph).requests, 0, "reset");
    env.sim.with_world(|w| w.remove_principal(&ids[0]));
    let r = env.scan().await;
    assert_eq!(r.summary.total, 6, "the listing follows the changed world");
    assert_eq!(env.sim.stats(false).api(Api::Graph).distinct, 2);
}

#[tokio::test]
async fn resource_graph_and_subscription_pages_are_followed() {
    let (mut w, sub) = world();
    let sub2 = w.add_subscription("second", SubAccess::Reader);
    let sub3 = w.add_subscription("third", SubAccess::Reader);
    let mut ids = Vec::new();
    for (n, s) in [&sub, &sub2, &sub3].iter().enumerate() {
        for i in 0..3 {
            ids.push(w.add_system_assigned(&rid(
                s,
                "rg",
                "Microsoft.Web",
                &format!("sites/app{n}-{i}"),
            )));
        }
    }
    let cfg = SimConfig {
        arg_max_page: 2,
        subscriptions_page: 1,
        ..SimConfig::default()
    };
    let env = TestEnv::start(w, cfg).await;
    let r = env.scan().await;
    assert!(r.complete, "{:?}", r.tenants);
    for id in &ids {
        assert_eq!(outcome(&r, id), ("healthy", "resource_present"));
        assert_eq!(
            finding(&r, id).evidence.source,
            EvidenceSource::ResourceGraph
        );
    }
    assert_eq!(
        env.sim.requests(Api::ResourceGraph) - ROLE_QUERIES,
        5,
        "9 rows at 2 a page"
    );
    assert_eq!(
        env.sim.requests(Api::Arm),
        3,
        "3 subscription pages, no resource GETs"
    );
}

#[tokio::test]
async fn resource_graph_quota_is_paced_without_throttling() {
    let (mut w, sub) = world();
    let ids: Vec<String> = (0..6)
        .map(|i| {
            w.add_system_assigned(&rid(
                &sub,
                "rg",
                "Microsoft.Storage",
                &format!("storageAccounts/st{i}"),
            ))
        })
        .collect();
    let cfg = SimConfig {
        arg_max_page: 1,
        arg_quota: 2,
        arg_window: Duration::from_millis(400),
        ..SimConfig::default()
    };
    let env = TestEnv::start(w, cfg).await;
    let started = std::time::Instant::now();
    let r = env.scan().await;
    assert!(r.complete);
    for id in &ids {
        assert_eq!(outcome(&r, id).0, "healthy");
    }
    let arg = &r.tenants[0].requests["resource_graph"];
    assert_eq!(
        arg.throttled, 0,
        "paced by x-ms-user-quota-* headers: {arg:?}"
    );
    assert_eq!(arg.requests, 6 + ROLE_QUERIES);
    // 6 queries at 2 per 400 ms need at least two waits for the window.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn arm_reads_are_paced_to_the_subscription_bucket_without_throttling() {
    let (mut w, sub) = world();
    let mut ids = Vec::new();
    for i in 0..60 {
        let id = rid(
            &sub,
            "rg",
            "Microsoft.Compute",
            &format!("virtualMachines/gone{i}"),
        );
        ids.push(w.add_system_assigned(&id));
        w.delete_resource(&id);
    }
    let cfg = SimConfig {
        arm_bucket: (20.0, 100.0),
        ..SimConfig::default()
    };
    let env = TestEnv::start(w, cfg).await;
    let r = env.scan().await;
    assert!(r.complete, "{:?}", r.tenants);
    for id in &ids {
        assert_eq!(outcome(&r, id), ("orphaned", "resource_not_found"));
    }
    let arm = &r.tenants[0].requests["arm"];
    assert_eq!(
        arm.throttled, 0,
        "paced by x-ms-ratelimit-remaining-subscription-reads: {arm:?}"
    );
    assert!(arm.requests >= 61);
}

/// Resource Graph does not wait for the last Graph page (issue 12): it asks about the subscriptions
/// and types of the first page while Graph is still paging.
#[tokio::test]
async fn resource_graph_starts_before_the_last_graph_page() {
    let (mut w, sub) = world();
    let ids: Vec<String> = (0..30)
        .map(|i| w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Web", &format!("sites/app{i}"))))
        .collect();
    let cfg = SimConfig {
        graph_max_page: 3,
        latency: Duration::from_millis(60),
        ..SimConfig::default()
    };
    let env = TestEnv::start(w, cfg).await;
    let scan = env.scan();
    tokio::pin!(scan);
    // Graph needs 10 pages; sample what has been asked while it pages.
    let mut graph_pages_when_resource_graph_began = None;
    let r = loop {
        tokio::select! {
            r = &mut scan => break r,
            () = tokio::time::sleep(Duration::from_millis(5)) => {
                let graph = env.sim.requests(Api::Graph);
                if env.sim.requests(Api::ResourceGraph) > 0
                    && graph_pages_when_resource_graph_began.is_none()
                {
                    graph_pages_when_resource_graph_began = Some(graph);
                }
            }
        }
    };
    assert!(r.complete, "{:?}", r.tenants);
    for id in &ids {
        assert_eq!(outcome(&r, id), ("healthy", "resource_present"));
    }
    let began = graph_pages_when_resource_graph_began.expect("Resource Graph was asked");
    assert!(
        began < 10,
        "Resource Graph began after Graph page {began} of 10"
    );
    assert_eq!(
        env.sim.requests(Api::ResourceGraph) - ROLE_QUERIES,
        1,
        "one query: every later page named the same subscription and type"
    );
}

/// Subscriptions and types that only later Graph pages name are asked about in a top-up when the
/// listing ends: every identity is vouched for by Resource Graph, no row is asked for twice, and no
/// identity falls to ARM for want of a query.
#[tokio::test]
async fn what_later_graph_pages_name_is_topped_up_without_asking_twice() {
    let (mut w, sub) = world();
    let sub2 = w.add_subscription("second", SubAccess::Reader);
    let mut ids = Vec::new();
    // Page 1 (3 a page): web sites in the first subscription only.
    for i in 0..3 {
        ids.push(w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Web", &format!("sites/a{i}"))));
    }
    // Later pages: a new type in the first subscription, then both types in a new subscription.
    for i in 0..3 {
        ids.push(w.add_system_assigned(&rid(
            &sub,
            "rg",
            "Microsoft.Storage",
            &format!("storageAccounts/s{i}"),
        )));
    }
    for i in 0..2 {
        ids.push(w.add_system_assigned(&rid(&sub2, "rg", "Microsoft.Web", &format!("sites/b{i}"))));
        ids.push(w.add_system_assigned(&rid(
            &sub2,
            "rg",
            "Microsoft.Storage",
            &format!("storageAccounts/t{i}"),
        )));
    }
    let cfg = SimConfig {
        graph_max_page: 3,
        latency: Duration::from_millis(40),
        ..SimConfig::default()
    };
    let env = TestEnv::start(w, cfg).await;
    let r = env.scan().await;
    assert!(r.complete, "{:?}", r.tenants);
    for id in &ids {
        assert_eq!(outcome(&r, id), ("healthy", "resource_present"));
        assert_eq!(
            finding(&r, id).evidence.source,
            EvidenceSource::ResourceGraph,
            "{id}"
        );
    }
    let arg = env.sim.requests(Api::ResourceGraph) - ROLE_QUERIES;
    assert!(
        (1..=3).contains(&arg),
        "a first round and at most two top-ups (new types everywhere, old types in new subscriptions): {arg}"
    );
    assert_eq!(env.sim.requests(Api::Arm), 1, "the subscription list only");
}
