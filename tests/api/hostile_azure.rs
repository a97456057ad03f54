//! Hostile answers from the Azure side: gateways, proxies, redirects, impostors, older api-versions,
//! extreme numbers and foreign paging links (issue 10, "Trust only answers that prove it").
//!
//! The first half proves the simulator really produces each hostile answer (raw HTTP, redirects not
//! followed). The second half scans tenants behind those answers and holds the client to the promise:
//! never a false orphan, never a panic or a stall, every genuine orphan still found, a scan that could
//! not check something is incomplete, and nothing is ever sent where a redirect or a paging link points.

use crate::helpers::*;
use miaudit::domain::{Reason, Verdict};
use miaudit::report::ScanReport;
use miaudit_sim::Api;
use miaudit_sim::hostile::{HostileWorld, NON_PROVING_404};
use miaudit_sim::model::{OddId, SIM_CLIENT_ID, SIM_CLIENT_SECRET, World};
use miaudit_sim::{
    Fault, FaultPlan, FaultRule, LinkTo, REDIRECT_TARGET_PREFIX, RedirectTo, SimConfig, SimHandle,
};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::time::Duration;

const ARM_SCOPE: &str = "https://management.azure.com/.default";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const VM_VERSION: &str = "2024-07-01";

// ---------------------------------------------------------------------------------------------------
// Raw HTTP against the simulator.

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

struct Got {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Any of ARM's evidence headers (RPC: every answer of ARM carries `x-ms-request-id`).
    fn has_arm_ids(&self) -> bool {
        [
            "x-ms-request-id",
            "x-ms-correlation-request-id",
            "x-ms-routing-request-id",
        ]
        .iter()
        .any(|h| self.headers.contains_key(*h))
    }
    fn error_code(&self) -> Option<String> {
        self.json()
            .pointer("/error/code")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

async fn got(rb: reqwest::RequestBuilder) -> Got {
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.expect("body");
    Got {
        status,
        headers,
        body,
    }
}

fn token_form(scope: &str) -> [(&'static str, String); 4] {
    [
        ("client_id", SIM_CLIENT_ID.to_owned()),
        ("client_secret", SIM_CLIENT_SECRET.to_owned()),
        ("scope", scope.to_owned()),
        ("grant_type", "client_credentials".to_owned()),
    ]
}

fn token_url(sim: &SimHandle) -> String {
    format!("{}/{TENANT}/oauth2/v2.0/token", sim.base_url())
}

async fn token(c: &reqwest::Client, sim: &SimHandle, scope: &str) -> String {
    let r = got(c.post(token_url(sim)).form(&token_form(scope))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn get(c: &reqwest::Client, sim: &SimHandle, token: &str, path_and_query: &str) -> Got {
    got(c
        .get(format!("{}{path_and_query}", sim.base_url()))
        .bearer_auth(token))
    .await
}

async fn arg_query(c: &reqwest::Client, sim: &SimHandle, token: &str, sub: &str, q: &str) -> Got {
    got(c
        .post(format!(
            "{}/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01",
            sim.base_url()
        ))
        .bearer_auth(token)
        .json(&json!({"subscriptions": [sub], "query": q, "options": {"resultFormat": "objectArray"}})))
    .await
}

fn once(api: Api, needle: Option<&str>, fault: Fault) -> FaultRule {
    FaultRule {
        api,
        path_contains: needle.map(str::to_owned),
        times: Some(1),
        fault,
    }
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["value"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn lower_sorted(xs: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = xs.iter().map(|s| s.to_ascii_lowercase()).collect();
    v.sort();
    v
}

/// A small tenant: two VMs in `rg`, one in `rg2`, a web app with a slot.
struct Small {
    sim: SimHandle,
    sub: String,
    vm_a: String,
    vm_a_principal: String,
    vm_b: String,
    vm_c: String,
    slot: String,
}

async fn small(config: SimConfig) -> Small {
    let (mut w, sub) = world();
    let vm_a = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/vm-a");
    let vm_a_principal = w.add_system_assigned(&vm_a);
    let vm_b = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/vm-b");
    w.add_system_assigned(&vm_b);
    let vm_c = rid(&sub, "rg2", "Microsoft.Compute", "virtualMachines/vm-c");
    w.add_system_assigned(&vm_c);
    w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Web", "sites/app"));
    let slot = rid(&sub, "rg", "Microsoft.Web", "sites/app/slots/staging");
    w.add_system_assigned(&slot);
    let sim = SimHandle::start(w, config).await.expect("simulator");
    Small {
        sim,
        sub,
        vm_a,
        vm_a_principal,
        vm_b,
        vm_c,
        slot,
    }
}

// ---------------------------------------------------------------------------------------------------
// The simulator produces each hostile answer.

#[tokio::test]
async fn collection_paths_answer_the_list_of_that_type_in_that_scope() {
    let s = small(SimConfig::default()).await;
    let c = no_redirects();
    let t = token(&c, &s.sim, ARM_SCOPE).await;
    let rg_vms = format!(
        "/subscriptions/{}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines",
        s.sub
    );
    let r = get(
        &c,
        &s.sim,
        &t,
        &format!("{rg_vms}?api-version={VM_VERSION}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("x-ms-request-id").is_some());
    assert_eq!(ids(&r.json()), lower_sorted(&[&s.vm_a, &s.vm_b]));

    // At subscription scope, a top-level type is listed across resource groups.
    let r = get(
        &c,
        &s.sim,
        &t,
        &format!(
            "/subscriptions/{}/providers/Microsoft.Compute/virtualMachines?api-version={VM_VERSION}",
            s.sub
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ids(&r.json()), lower_sorted(&[&s.vm_a, &s.vm_b, &s.vm_c]));

    // An id ending in `..` becomes this very collection URL once a URL library drops the dot segment
    // (the `url` crate's `PathSegmentsMut` skips `.` and `..`).
    let mut u = url::Url::parse(s.sim.base_url()).expect("base");
    u.path_segments_mut()
        .expect("segments")
        .pop_if_empty()
        .extend(format!("{rg_vms}/..").trim_start_matches('/').split('/'));
    u.query_pairs_mut().append_pair("api-version", VM_VERSION);
    assert_eq!(u.path(), rg_vms);
    let r = got(c.get(u).bearer_auth(&t)).await;
    assert_eq!(r.status, 200);
    assert_eq!(ids(&r.json()), lower_sorted(&[&s.vm_a, &s.vm_b]));

    // Nested children, and a parent that is not there.
    let slots = format!(
        "/subscriptions/{}/resourceGroups/rg/providers/Microsoft.Web/sites/app/slots?api-version=2024-04-01",
        s.sub
    );
    let r = get(&c, &s.sim, &t, &slots).await;
    assert_eq!(ids(&r.json()), lower_sorted(&[&s.slot]));
    let r = get(&c, &s.sim, &t, &slots.replace("sites/app/", "sites/nope/")).await;
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (404, Some("ParentResourceNotFound"))
    );
    // Collections are checked like resources: an api-version the type does not take is refused.
    let r = get(&c, &s.sim, &t, &format!("{rg_vms}?api-version=1900-01-01")).await;
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (400, Some("NoRegisteredProviderFound"))
    );
}

#[tokio::test]
async fn request_paths_are_read_segment_by_segment_as_arm_reads_them() {
    let s = small(SimConfig::default()).await;
    let c = no_redirects();
    let t = token(&c, &s.sim, ARM_SCOPE).await;
    let q = format!("?api-version={VM_VERSION}");
    // Keywords and names compare case-insensitively (RPC); the answer spells the id as ARM stores it.
    let shouted = s
        .vm_a
        .replace("/subscriptions/", "/SUBSCRIPTIONS/")
        .replace("/resourceGroups/rg/", "/RESOURCEGROUPS/RG/")
        .replace(
            "/providers/Microsoft.Compute/virtualMachines/vm-a",
            "/PROVIDERS/microsoft.compute/VIRTUALMACHINES/VM-A",
        );
    let r = get(&c, &s.sim, &t, &format!("{shouted}{q}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["id"], json!(s.vm_a));
    // Each segment is percent-decoded by itself.
    let r = get(
        &c,
        &s.sim,
        &t,
        &format!("{}{q}", s.vm_a.replace("vm-a", "vm%2Da")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // An escaped `?` or `#` is part of the name: no such resource, ARM's own 404.
    for suffix in ["%3Fapi-version=1", "%23identity", "%20"] {
        let r = get(&c, &s.sim, &t, &format!("{}{suffix}{q}", s.vm_a)).await;
        assert_eq!(
            (r.status, r.error_code().as_deref()),
            (404, Some("ResourceNotFound")),
            "{suffix}"
        );
        assert!(r.header("x-ms-request-id").is_some());
    }
    // An escaped separator does not split a segment.
    let r = get(
        &c,
        &s.sim,
        &t,
        &format!(
            "{}{q}",
            s.vm_a
                .replace("virtualMachines/vm-a", "virtualMachines%2Fvm-a")
        ),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (404, Some("InvalidResourceType"))
    );
    let r = get(
        &c,
        &s.sim,
        &t,
        &format!("{}{q}", s.vm_a.replace("vm-a", "vm-a%2Fextensions%2Fx")),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (404, Some("ResourceNotFound"))
    );
    // An empty segment is not routed.
    let r = get(
        &c,
        &s.sim,
        &t,
        &format!(
            "{}{q}",
            s.vm_a.replace("/virtualMachines/", "/virtualMachines//")
        ),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (400, Some("InvalidRequestUri"))
    );
}

#[tokio::test]
async fn two_hundreds_that_are_not_the_resource() {
    let s = small(SimConfig::default()).await;
    let c = no_redirects();
    let t = token(&c, &s.sim, ARM_SCOPE).await;
    let url = format!("{}?api-version={VM_VERSION}", s.vm_a);

    s.sim
        .add_fault(once(Api::Arm, Some("vm-a"), Fault::GatewayEmptyObject));
    let r = get(&c, &s.sim, &t, &url).await;
    assert_eq!((r.status, r.json()), (200, json!({})));
    assert!(!r.has_arm_ids(), "a gateway's answer: {:?}", r.headers);

    s.sim
        .add_fault(once(Api::Arm, Some("vm-a"), Fault::CollectionBody));
    let r = get(&c, &s.sim, &t, &url).await;
    assert_eq!(r.status, 200);
    assert_eq!(ids(&r.json()), lower_sorted(&[&s.vm_a, &s.vm_b]));
    assert!(r.header("x-ms-request-id").is_some(), "ARM's own list");

    s.sim
        .add_fault(once(Api::Arm, Some("vm-a"), Fault::OtherResourceBody));
    let r = get(&c, &s.sim, &t, &url).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["id"], json!(s.vm_b), "a sibling of the same type");
    assert_ne!(body["identity"]["principalId"], json!(s.vm_a_principal));
    assert!(r.header("x-ms-request-id").is_some());

    s.sim
        .add_fault(once(Api::Arm, Some("vm-a"), Fault::NotJson));
    let r = get(&c, &s.sim, &t, &url).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("text/html"))
    );
    assert!(r.body.starts_with("<html>"));

    // The faults were used up: the resource itself.
    let r = get(&c, &s.sim, &t, &url).await;
    assert_eq!(r.json()["id"], json!(s.vm_a));
    assert_eq!(r.json()["identity"]["principalId"], json!(s.vm_a_principal));
}

#[tokio::test]
async fn redirects_point_where_they_say_and_whatever_follows_them_is_recorded() {
    let s = small(SimConfig::default()).await;
    let c = no_redirects();
    let t = token(&c, &s.sim, ARM_SCOPE).await;
    let url = format!("{}?api-version={VM_VERSION}", s.vm_a);
    let base = url::Url::parse(s.sim.base_url()).expect("base");
    let mut followed = Vec::new();
    for status in [301u16, 302, 307, 308] {
        for to in [
            RedirectTo::Collection,
            RedirectTo::OtherHost,
            RedirectTo::OtherPath,
        ] {
            s.sim
                .add_fault(once(Api::Arm, Some("vm-a"), Fault::Redirect { status, to }));
            let r = get(&c, &s.sim, &t, &url).await;
            assert_eq!(r.status, status, "{to:?}");
            assert!(r.body.is_empty() && !r.has_arm_ids(), "{to:?}");
            let loc = url::Url::parse(r.header("location").expect("Location")).expect("a URL");
            assert_eq!(
                loc.query(),
                Some(format!("api-version={VM_VERSION}").as_str())
            );
            match to {
                RedirectTo::Collection => {
                    assert_eq!(loc.origin(), base.origin());
                    assert_eq!(
                        loc.path(),
                        s.vm_a.trim_end_matches("/vm-a"),
                        "the collection of the resource"
                    );
                }
                RedirectTo::OtherHost => {
                    assert_ne!(loc.origin(), base.origin());
                    let ip: std::net::IpAddr = loc
                        .host_str()
                        .expect("host")
                        .parse()
                        .expect("an IP literal");
                    assert!(ip.is_loopback(), "never real outbound traffic: {loc}");
                    assert_eq!(loc.path(), s.vm_a);
                    followed.push(loc);
                }
                RedirectTo::OtherPath => {
                    assert_eq!(loc.origin(), base.origin());
                    assert_eq!(loc.path(), format!("{REDIRECT_TARGET_PREFIX}{}", s.vm_a));
                    followed.push(loc);
                }
            }
        }
    }
    assert!(s.sim.strays().is_empty(), "{:?}", s.sim.strays());
    // What a client that follows meets there: an impostor's ARM-looking 404, and the request is noted.
    for loc in &followed[..2] {
        let r = got(c.get(loc.clone()).bearer_auth(&t)).await;
        assert_eq!(
            (r.status, r.error_code().as_deref()),
            (404, Some("ResourceNotFound"))
        );
    }
    let strays = s.sim.strays();
    assert_eq!(
        strays.iter().map(|s| s.place).collect::<Vec<_>>(),
        ["decoy host", "redirect target"]
    );
    assert!(strays.iter().all(|s| s.authorization && s.method == "GET"));
    assert!(strays[0].target.ends_with(&url));
}

#[tokio::test]
async fn a_redirected_token_request_that_is_followed_re_posts_the_secret_and_is_recorded() {
    let s = small(SimConfig::default()).await;
    let c = no_redirects();
    s.sim.add_fault(once(
        Api::Token,
        None,
        Fault::Redirect {
            status: 307,
            to: RedirectTo::OtherPath,
        },
    ));
    let r = got(c.post(token_url(&s.sim)).form(&token_form(ARM_SCOPE))).await;
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location"),
        Some(
            format!(
                "{}{REDIRECT_TARGET_PREFIX}/{TENANT}/oauth2/v2.0/token",
                s.sim.base_url()
            )
            .as_str()
        )
    );
    assert!(s.sim.strays().is_empty());

    // A client with reqwest's default policy follows, and 307/308 re-send the form with the secret.
    let follower = reqwest::Client::new();
    for (status, to, place) in [
        (307, RedirectTo::OtherPath, "redirect target"),
        (308, RedirectTo::OtherHost, "decoy host"),
    ] {
        s.sim
            .add_fault(once(Api::Token, None, Fault::Redirect { status, to }));
        let r = got(follower
            .post(token_url(&s.sim))
            .form(&token_form(ARM_SCOPE)))
        .await;
        assert_eq!(r.status, 404, "the impostor's answer");
        let last = s.sim.strays().pop().expect("recorded");
        assert_eq!(
            (last.place, last.method.as_str(), last.client_secret),
            (place, "POST", true)
        );
    }
}

#[tokio::test]
async fn not_found_answers_that_prove_nothing() {
    let s = small(SimConfig::default()).await;
    let c = no_redirects();
    let t = token(&c, &s.sim, ARM_SCOPE).await;
    let url = format!("{}?api-version={VM_VERSION}", s.vm_a);

    s.sim.add_fault(once(
        Api::Arm,
        Some("vm-a"),
        Fault::ProxyNotFound { html: true },
    ));
    let r = get(&c, &s.sim, &t, &url).await;
    assert_eq!(r.status, 404);
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("text/html"))
    );
    assert!(r.body.contains("nginx") && r.json().is_null());
    assert!(!r.has_arm_ids());

    s.sim.add_fault(once(
        Api::Arm,
        Some("vm-a"),
        Fault::ProxyNotFound { html: false },
    ));
    let r = get(&c, &s.sim, &t, &url).await;
    assert_eq!((r.status, r.body.as_str()), (404, ""));
    assert!(!r.has_arm_ids());

    s.sim
        .add_fault(once(Api::Arm, Some("vm-a"), Fault::ImitationNotFound));
    let r = get(&c, &s.sim, &t, &url).await;
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (404, Some("ResourceNotFound"))
    );
    assert!(!r.has_arm_ids(), "not ARM: {:?}", r.headers);

    for (code, _) in NON_PROVING_404 {
        s.sim.add_fault(once(
            Api::Arm,
            Some("vm-a"),
            Fault::ArmNotFound {
                code: (*code).to_owned(),
            },
        ));
        let r = get(&c, &s.sim, &t, &url).await;
        assert_eq!((r.status, r.error_code().as_deref()), (404, Some(*code)));
        assert!(
            r.header("x-ms-request-id").is_some()
                && r.header("x-ms-correlation-request-id").is_some()
        );
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            !message.is_empty() && !message.contains('{'),
            "{code}: {message}"
        );
    }
}

#[tokio::test]
async fn extreme_numbers_are_sent_verbatim() {
    let s = small(SimConfig::default()).await;
    let c = no_redirects();
    let t = token(&c, &s.sim, ARM_SCOPE).await;
    let url = format!("{}?api-version={VM_VERSION}", s.vm_a);
    let for_arg = |h: &str| h.starts_with("x-ms-user-quota");
    for fault in Fault::extreme_numbers() {
        match &fault {
            Fault::ThrottleHeader { header, value } => {
                let r = if for_arg(header) {
                    s.sim
                        .add_fault(once(Api::ResourceGraph, None, fault.clone()));
                    arg_query(&c, &s.sim, &t, &s.sub, "Resources | project id").await
                } else {
                    s.sim.add_fault(once(Api::Arm, Some("vm-a"), fault.clone()));
                    get(&c, &s.sim, &t, &url).await
                };
                assert_eq!(r.status, 429, "{fault:?}");
                assert_eq!(r.header(header), Some(value.as_str()), "{fault:?}");
                if header != "retry-after" {
                    assert!(r.header("retry-after").is_none(), "{fault:?}");
                }
            }
            Fault::QuotaHeader { header, value } => {
                let r = if for_arg(header) {
                    s.sim
                        .add_fault(once(Api::ResourceGraph, None, fault.clone()));
                    arg_query(&c, &s.sim, &t, &s.sub, "Resources | project id").await
                } else {
                    s.sim.add_fault(once(Api::Arm, Some("vm-a"), fault.clone()));
                    get(&c, &s.sim, &t, &url).await
                };
                assert_eq!(r.status, 200, "{fault:?}: {}", r.body);
                assert_eq!(r.header(header), Some(value.as_str()), "{fault:?}");
                if for_arg(header) {
                    assert!(r.json()["data"].is_array());
                } else {
                    assert_eq!(r.json()["id"], json!(s.vm_a));
                }
            }
            Fault::TokenExpiresIn(v) => {
                s.sim.add_fault(once(Api::Token, None, fault.clone()));
                let r = got(c.post(token_url(&s.sim)).form(&token_form(ARM_SCOPE))).await;
                assert_eq!(r.status, 200);
                let body = r.json();
                assert_eq!(&body["expires_in"], v, "{}", r.body);
                assert!(body["access_token"].as_str().is_some_and(|a| !a.is_empty()));
            }
            other => panic!("not an extreme number: {other:?}"),
        }
    }
    let injected = s.sim.injected();
    assert_eq!(
        injected.values().sum::<u64>(),
        Fault::extreme_numbers().len() as u64,
        "{injected:?}"
    );
}

#[tokio::test]
async fn paging_links_can_point_at_another_host_or_another_path() {
    let s = small(SimConfig {
        graph_max_page: 2,
        subscriptions_page: 1,
        ..SimConfig::default()
    })
    .await;
    s.sim.with_world(|w| {
        w.add_subscription("second", miaudit_sim::model::SubAccess::Reader);
    });
    let c = no_redirects();
    let graph = token(&c, &s.sim, GRAPH_SCOPE).await;
    let arm = token(&c, &s.sim, ARM_SCOPE).await;
    let decoy = s.sim.decoy_base_url().to_owned();
    let base = s.sim.base_url().to_owned();
    let link = |r: &Got, key: &str| r.json()[key].as_str().unwrap_or("").to_owned();

    // A Graph page whose next link names another host: the same listing, on the decoy.
    s.sim.add_fault(once(
        Api::Graph,
        None,
        Fault::ForeignNextLink(LinkTo::OtherHost),
    ));
    let r = get(&c, &s.sim, &graph, "/v1.0/servicePrincipals?$top=2").await;
    let l = link(&r, "@odata.nextLink");
    assert!(
        l.starts_with(&format!("{decoy}/v1.0/servicePrincipals?")) && l.contains("skiptoken"),
        "{l}"
    );
    // Even a last page (no real link) gets one.
    s.sim.add_fault(once(
        Api::Graph,
        None,
        Fault::ForeignNextLink(LinkTo::OtherHost),
    ));
    let r = get(&c, &s.sim, &graph, "/v1.0/servicePrincipals?$top=999").await;
    assert!(link(&r, "@odata.nextLink").starts_with(&decoy));
    // Another path on the same host.
    s.sim.add_fault(once(
        Api::Graph,
        None,
        Fault::ForeignNextLink(LinkTo::OtherPath),
    ));
    let r = get(&c, &s.sim, &graph, "/v1.0/servicePrincipals?$top=2").await;
    let l = link(&r, "@odata.nextLink");
    assert_eq!(l, format!("{base}/v1.0/users?$skiptoken=sim-foreign-link"));
    // A delta page: a next link instead of its delta link.
    s.sim.add_fault(once(
        Api::Graph,
        None,
        Fault::ForeignNextLink(LinkTo::OtherHost),
    ));
    let r = get(&c, &s.sim, &graph, "/v1.0/servicePrincipals/delta").await;
    assert!(link(&r, "@odata.nextLink").starts_with(&decoy));
    assert!(r.json().get("@odata.deltaLink").is_none());

    // ARM's subscription list.
    s.sim.add_fault(once(
        Api::Arm,
        None,
        Fault::ForeignNextLink(LinkTo::OtherHost),
    ));
    let r = get(&c, &s.sim, &arm, "/subscriptions?api-version=2022-12-01").await;
    let l = link(&r, "nextLink");
    assert!(
        l.starts_with(&format!("{decoy}/subscriptions?api-version=2022-12-01")),
        "{l}"
    );
    s.sim.add_fault(once(
        Api::Arm,
        None,
        Fault::ForeignNextLink(LinkTo::OtherPath),
    ));
    let r = get(&c, &s.sim, &arm, "/subscriptions?api-version=2022-12-01").await;
    let l = link(&r, "nextLink");
    assert!(
        l.starts_with(&format!("{base}/subscriptions/")) && l.contains("/resourceGroups?"),
        "{l}"
    );
    assert!(s.sim.strays().is_empty());

    // Following a foreign path is recorded.
    let r = got(c.get(&l).bearer_auth(&arm)).await;
    assert_eq!(r.status, 200, "a resource-group list, not subscriptions");
    let strays = s.sim.strays();
    assert_eq!(strays.len(), 1);
    assert_eq!(strays[0].place, "foreign link");
}

#[tokio::test]
async fn the_stable_version_of_a_late_identity_type_hides_the_identity_the_preview_shows() {
    let (mut w, sub) = world();
    w.register_type(
        "Microsoft.ServiceBus",
        "namespaces",
        &["2017-04-01", "2018-01-01-preview"],
    );
    let id = rid(&sub, "rg", "Microsoft.ServiceBus", "namespaces/sb1");
    let p = w.add_system_assigned(&id);
    w.set_identity_since(&id, "2018-01-01-preview");
    let sim = SimHandle::start(w, SimConfig::default())
        .await
        .expect("simulator");
    let c = no_redirects();
    let t = token(&c, &sim, ARM_SCOPE).await;

    let r = get(
        &c,
        &sim,
        &t,
        &format!("/subscriptions/{sub}/providers/Microsoft.ServiceBus?api-version=2021-04-01"),
    )
    .await;
    assert_eq!(
        r.json()["resourceTypes"][0]["apiVersions"],
        json!(["2017-04-01", "2018-01-01-preview"])
    );
    let r = get(&c, &sim, &t, &format!("{id}?api-version=2017-04-01")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], json!(id));
    assert!(r.json().get("identity").is_none(), "{}", r.body);
    let r = get(
        &c,
        &sim,
        &t,
        &format!("{id}?api-version=2018-01-01-preview"),
    )
    .await;
    assert_eq!(r.json()["identity"]["principalId"], json!(p));
    let coll = id.trim_end_matches("/sb1");
    let r = get(&c, &sim, &t, &format!("{coll}?api-version=2017-04-01")).await;
    assert!(r.json()["value"][0].get("identity").is_none());
    // Resource Graph reads with the newest stable version: no identity there either.
    let r = arg_query(
        &c,
        &sim,
        &t,
        &sub,
        "Resources | where type =~ 'microsoft.servicebus/namespaces' | project id, identity",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"][0]["id"], json!(id));
    assert!(r.json()["data"][0]["identity"].is_null(), "{}", r.body);
}

#[tokio::test]
async fn graph_lists_odd_alternative_names_verbatim_for_resources_that_exist() {
    let (mut w, sub) = world();
    let mut expected = Vec::new();
    for (i, odd) in OddId::ALL.iter().enumerate() {
        let id = rid(
            &sub,
            "rg",
            "Microsoft.Compute",
            &format!("virtualMachines/odd{i}"),
        );
        let p = w.add_with_odd_alternative_name(&id, *odd);
        let graph_form = World::alternative_names(&id, false)[1].clone();
        expected.push((p, id, odd.apply(&graph_form)));
    }
    let sim = SimHandle::start(w, SimConfig::default())
        .await
        .expect("simulator");
    let c = no_redirects();
    let graph = token(&c, &sim, GRAPH_SCOPE).await;
    let arm = token(&c, &sim, ARM_SCOPE).await;
    let r = get(&c, &sim, &graph, "/v1.0/servicePrincipals?$top=999").await;
    let listed = r.json()["value"].as_array().expect("value").clone();
    for (p, id, odd) in &expected {
        let sp = listed.iter().find(|v| v["id"] == json!(p)).expect("listed");
        assert_eq!(sp["alternativeNames"], json!(["isExplicit=False", odd]));
        let r = get(&c, &sim, &arm, &format!("{id}?api-version={VM_VERSION}")).await;
        assert_eq!(r.json()["identity"]["principalId"], json!(p), "{id}");
    }
}

#[tokio::test]
async fn fault_plans_draw_each_hostile_kind_only_where_it_can_happen() {
    let s = small(SimConfig {
        arg_quota: 1_000_000,
        ..SimConfig::default()
    })
    .await;
    let c = no_redirects();
    let arm = token(&c, &s.sim, ARM_SCOPE).await;
    let graph = token(&c, &s.sim, GRAPH_SCOPE).await;
    let vm = format!("{}?api-version={VM_VERSION}", s.vm_a);
    let provider = format!(
        "/subscriptions/{}/providers/Microsoft.Compute?api-version=2021-04-01",
        s.sub
    );
    // Requests, in order: token, Graph list, Resource Graph, ARM subscription list, ARM resource, ARM
    // providers API.
    let names = [
        "token",
        "graph",
        "resource_graph",
        "subscriptions",
        "resource",
        "provider",
    ];
    let expect = |f: &Fault| -> [bool; 6] {
        let user_quota = |h: &str| h.starts_with("x-ms-user-quota");
        match f {
            Fault::GatewayEmptyObject | Fault::NotJson | Fault::ProxyNotFound { .. } => [true; 6],
            Fault::Redirect {
                to: RedirectTo::Collection,
                ..
            }
            | Fault::CollectionBody
            | Fault::OtherResourceBody => [false, false, false, false, true, false],
            Fault::Redirect { .. } => [true; 6],
            Fault::ImitationNotFound | Fault::ArmNotFound { .. } => {
                [false, false, false, true, true, true]
            }
            Fault::ThrottleHeader { header, .. } if user_quota(header) => {
                [false, false, true, false, false, false]
            }
            Fault::ThrottleHeader { .. } => [true; 6],
            Fault::QuotaHeader { header, .. } if user_quota(header) => {
                [false, false, true, false, false, false]
            }
            Fault::QuotaHeader { .. } => [false, false, false, true, true, true],
            Fault::TokenExpiresIn(_) => [true, false, false, false, false, false],
            Fault::ForeignNextLink(_) => [false, true, false, true, false, false],
            other => panic!("not a hostile kind: {other:?}"),
        }
    };
    let total = |sim: &SimHandle| sim.injected().values().sum::<u64>();
    for fault in Fault::hostile_answers()
        .into_iter()
        .chain(Fault::extreme_numbers())
    {
        s.sim.set_fault_plan(FaultPlan {
            seed: 1,
            per_thousand: 1000,
            apis: Api::ALL.to_vec(),
            kinds: vec![fault.clone()],
        });
        let mut applied = [false; 6];
        for (i, slot) in applied.iter_mut().enumerate() {
            let before = total(&s.sim);
            let _ = match i {
                0 => got(c.post(token_url(&s.sim)).form(&token_form(ARM_SCOPE))).await,
                1 => get(&c, &s.sim, &graph, "/v1.0/servicePrincipals?$top=5").await,
                2 => arg_query(&c, &s.sim, &arm, &s.sub, "Resources | project id").await,
                3 => get(&c, &s.sim, &arm, "/subscriptions?api-version=2022-12-01").await,
                4 => get(&c, &s.sim, &arm, &vm).await,
                _ => get(&c, &s.sim, &arm, &provider).await,
            };
            *slot = total(&s.sim) > before;
        }
        s.sim.clear_faults();
        let want = expect(&fault);
        assert_eq!(
            applied,
            want,
            "{fault:?} applied to {:?}",
            names
                .iter()
                .zip(applied)
                .filter(|(_, a)| *a)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Scans: the client against hostile answers. These hold the client to the promise; see the module doc.

fn describe(r: &ScanReport, object_id: &str) -> String {
    r.findings
        .iter()
        .find(|f| f.object_id == miaudit::domain::ObjectId::new(object_id))
        .map_or_else(
            || "no verdict".to_owned(),
            |f| format!("{}/{}: {}", f.verdict.as_str(), f.reason.as_str(), f.detail),
        )
}

fn verdict_of(r: &ScanReport, object_id: &str) -> Option<(Verdict, Reason)> {
    r.findings
        .iter()
        .find(|f| f.object_id == miaudit::domain::ObjectId::new(object_id))
        .map(|f| (f.verdict, f.reason))
}

fn stray_problems(sim: &SimHandle) -> Vec<String> {
    sim.strays()
        .iter()
        .map(|s| {
            format!(
                "a request went where it must not: {} {} at the {} (authorization: {}, client_secret: {})",
                s.method, s.target, s.place, s.authorization, s.client_secret
            )
        })
        .collect()
}

fn label(h: &HostileWorld, object_id: &str) -> String {
    if let Some(b) = h.behind.iter().find(|b| b.principal == object_id) {
        return format!("behind {:?}", b.fault);
    }
    if let Some((_, o)) = h.odd.iter().find(|(p, _)| p == object_id) {
        return format!("odd alternativeNames {o:?}");
    }
    if h.preview_identity == object_id {
        return "identity only in a preview api-version".into();
    }
    "plain healthy".into()
}

/// False orphans among the world's healthy identities (with `listed`, a healthy identity missing from
/// the report counts too) and genuine orphans not found with their reason.
fn orphan_problems(h: &HostileWorld, r: &ScanReport, listed: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for p in h.healthy() {
        let v = verdict_of(r, &p).map(|(v, _)| v);
        if v == Some(Verdict::Orphaned) || (listed && v.is_none()) {
            problems.push(format!(
                "false orphan ({}): {p} {}",
                label(h, &p),
                describe(r, &p)
            ));
        }
    }
    for (p, reason) in &h.orphans {
        if verdict_of(r, p).is_none_or(|(v, why)| v != Verdict::Orphaned || why.as_str() != *reason)
        {
            problems.push(format!(
                "genuine orphan not found as orphaned/{reason}: {p} {}",
                describe(r, p)
            ));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_behind_hostile_answers_gets_no_false_orphan_and_every_real_one() {
    let h = World::hostile(11);
    let env = TestEnv::start(h.world.clone(), SimConfig::default()).await;
    env.sim.add_faults(h.rules.clone());
    let r = scan_guarded(&env, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut problems = orphan_problems(&h, &r, true);
    // Every identity behind a hostile answer could not be checked: the scan says so.
    if r.complete {
        problems.push(format!(
            "the scan claims to be complete although {} checks met only hostile answers",
            h.behind.len()
        ));
    }
    if r.complete && r.findings.iter().any(|f| f.reason == Reason::CheckFailed) {
        problems.push("a check failed but the scan claims to be complete".into());
    }
    problems.extend(stray_problems(&env.sim));
    assert!(
        problems.is_empty(),
        "{} problems in the hostile scan:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // The hostile network goes away; the world stays: the next scan completes with the truth.
    env.sim.clear_faults();
    let r = scan_guarded(&env, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("second scan: {e}"));
    let mut problems = Vec::new();
    if !r.complete {
        problems.push(format!("second scan incomplete: {:?}", r.tenants));
    }
    for b in &h.behind {
        if verdict_of(&r, &b.principal).map(|(v, _)| v) != Some(Verdict::Healthy) {
            problems.push(format!(
                "{} no longer behind {:?} but not healthy: {}",
                b.principal,
                b.fault,
                describe(&r, &b.principal)
            ));
        }
    }
    problems.extend(orphan_problems(&h, &r, false));
    problems.extend(stray_problems(&env.sim));
    assert!(
        problems.is_empty(),
        "{} problems in the scan after the hostile answers stopped:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[tokio::test]
async fn an_identity_absent_in_the_stable_version_is_read_again_with_the_preview() {
    let (mut w, sub) = world();
    w.register_type(
        "Microsoft.ServiceBus",
        "namespaces",
        &["2017-04-01", "2018-01-01-preview"],
    );
    let late = rid(&sub, "rg", "Microsoft.ServiceBus", "namespaces/late");
    let healthy = w.add_system_assigned(&late);
    w.set_identity_since(&late, "2018-01-01-preview");
    let replaced = rid(&sub, "rg", "Microsoft.ServiceBus", "namespaces/replaced");
    let recreated = w.add_system_assigned(&replaced);
    w.set_identity_since(&replaced, "2018-01-01-preview");
    w.recreate_resource(&replaced);
    // A type whose every version shows identity, switched off: still an orphan.
    let off = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/off");
    let switched_off = w.add_system_assigned(&off);
    w.disable_system_identity(&off);
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = scan_guarded(&env, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        outcome(&r, &healthy),
        ("healthy", "resource_present"),
        "{}",
        describe(&r, &healthy)
    );
    assert_eq!(outcome(&r, &recreated), ("orphaned", "principal_mismatch"));
    assert_eq!(
        outcome(&r, &switched_off),
        ("orphaned", "principal_mismatch")
    );
    assert!(r.complete, "{:?}", r.tenants);
}

#[tokio::test]
async fn odd_alternative_names_are_unrecognized_never_orphaned() {
    let (mut w, sub) = world();
    w.register_type(
        "Microsoft.Compute",
        "virtualMachines/extensions",
        &["2024-07-01", "2023-09-01"],
    );
    let odd: Vec<(String, OddId)> = OddId::ALL
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let id = rid(
                &sub,
                "rg",
                "Microsoft.Compute",
                &format!("virtualMachines/odd{i}"),
            );
            (w.add_with_odd_alternative_name(&id, *o), *o)
        })
        .collect();
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = scan_guarded(&env, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let wrong: Vec<String> = odd
        .iter()
        .filter(|(p, _)| {
            verdict_of(&r, p) != Some((Verdict::Unknown, Reason::UnrecognizedAlternativeNames))
        })
        .map(|(p, o)| format!("{o:?}: {}", describe(&r, p)))
        .collect();
    assert!(
        wrong.is_empty(),
        "odd ids not judged unknown/unrecognized_alternative_names:\n{}",
        wrong.join("\n")
    );
    assert!(stray_problems(&env.sim).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_redirects_never_gets_the_secret_resent() {
    let mut problems = Vec::new();
    for (status, to) in [
        (307, RedirectTo::OtherPath),
        (308, RedirectTo::OtherHost),
        (302, RedirectTo::OtherPath),
        (301, RedirectTo::OtherHost),
    ] {
        let (mut w, sub) = world();
        w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/vm"));
        let env = TestEnv::start(w, SimConfig::default()).await;
        env.sim.add_fault(FaultRule {
            api: Api::Token,
            path_contains: None,
            times: None,
            fault: Fault::Redirect { status, to },
        });
        match scan_guarded(&env, Duration::from_secs(60)).await {
            Err(e) => problems.push(format!("{status} {to:?}: {e}")),
            Ok(r) => {
                if r.complete {
                    problems.push(format!("{status} {to:?}: complete without a token"));
                }
                if r.findings.iter().any(|f| f.verdict == Verdict::Orphaned) {
                    problems.push(format!("{status} {to:?}: an orphan without a token"));
                }
            }
        }
        problems.extend(
            stray_problems(&env.sim)
                .into_iter()
                .map(|p| format!("{status} {to:?}: {p}")),
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_paging_links_are_refused_and_leave_the_scan_incomplete() {
    let world = World::generate(5, 60);
    let cfg = SimConfig {
        graph_max_page: 25,
        subscriptions_page: 1,
        ..SimConfig::default()
    };
    let clean = TestEnv::start(world.clone(), cfg.clone()).await;
    let base = scan_guarded(&clean, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(base.complete, "{:?}", base.tenants);
    let mut problems = Vec::new();
    for (api, to) in [
        (Api::Graph, LinkTo::OtherHost),
        (Api::Graph, LinkTo::OtherPath),
        (Api::Arm, LinkTo::OtherHost),
        (Api::Arm, LinkTo::OtherPath),
    ] {
        let env = TestEnv::start(world.clone(), cfg.clone()).await;
        env.sim
            .add_fault(once(api, None, Fault::ForeignNextLink(to)));
        let case = format!("{api} {to:?}");
        match scan_guarded(&env, Duration::from_secs(60)).await {
            Err(e) => problems.push(format!("{case}: {e}")),
            Ok(r) => {
                if r.complete {
                    problems.push(format!(
                        "{case}: the scan is complete after a foreign paging link"
                    ));
                }
                if api == Api::Graph && r.tenants.iter().any(|t| t.inventory_complete) {
                    problems.push(format!(
                        "{case}: the inventory is complete after a foreign paging link"
                    ));
                }
                for f in &r.findings {
                    if f.verdict == Verdict::Orphaned
                        && verdict_of(&base, f.object_id.as_str()).map(|(v, _)| v)
                            != Some(Verdict::Orphaned)
                    {
                        problems.push(format!("{case}: false orphan {} {}", f.object_id, f.detail));
                    }
                }
            }
        }
        problems.extend(
            stray_problems(&env.sim)
                .into_iter()
                .map(|p| format!("{case}: {p}")),
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Each extreme number once, on the API that sends it, each in its own simulator and scan (run side by
/// side). A scan may fail a check over one, but it may not panic, stall, or call a healthy identity
/// orphaned. The bound: far beyond what these retry settings (5-20 ms steps, 3 retries) take; a number
/// the server sends must not stretch a wait beyond the client's own limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_numbers_neither_panic_nor_stall_nor_invent_orphans() {
    const LIMIT: Duration = Duration::from_secs(20);
    let (mut w, sub) = world();
    let mut healthy = Vec::new();
    for i in 0..4 {
        let id = rid(
            &sub,
            "rg",
            "Microsoft.Compute",
            &format!("virtualMachines/vm{i}"),
        );
        healthy.push(w.add_system_assigned(&id));
        // ARM is asked about these, one after another.
        w.hide_from_resource_graph(&id);
    }
    healthy.push(w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Web", "sites/visible")));
    let gone_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/gone");
    let gone = w.add_system_assigned(&gone_id);
    w.delete_resource(&gone_id);

    let mut cases: Vec<(Api, Option<&str>, Fault)> = Vec::new();
    for f in Fault::extreme_numbers() {
        match &f {
            Fault::ThrottleHeader { header, .. } | Fault::QuotaHeader { header, .. }
                if header.starts_with("x-ms-user-quota") =>
            {
                cases.push((Api::ResourceGraph, None, f.clone()));
            }
            Fault::ThrottleHeader { .. } => {
                cases.push((Api::Arm, Some("virtualMachines/"), f.clone()));
                cases.push((Api::Graph, None, f.clone()));
                cases.push((Api::Token, None, f.clone()));
            }
            Fault::QuotaHeader { .. } => {
                cases.push((Api::Arm, Some("virtualMachines/"), f.clone()))
            }
            Fault::TokenExpiresIn(_) => cases.push((Api::Token, None, f.clone())),
            other => panic!("not an extreme number: {other:?}"),
        }
    }
    let extra = FAST_RETRIES.replace("\"5s\"", "\"5s\"\nconcurrency = 1");
    let runs = cases.into_iter().map(|(api, needle, fault)| {
        let world = w.clone();
        let extra = extra.clone();
        async move {
            let env = TestEnv::start_with(world, SimConfig::default(), &extra).await;
            env.sim.add_fault(once(api, needle, fault.clone()));
            let case = format!("{api} {fault:?}");
            let result = scan_guarded(&env, LIMIT).await;
            (case, result, env)
        }
    });
    let mut problems = Vec::new();
    for (case, result, env) in futures::future::join_all(runs).await {
        match result {
            Err(e) => problems.push(format!("{case}: {e}")),
            Ok(r) => {
                for p in &healthy {
                    if verdict_of(&r, p).is_some_and(|(v, _)| v == Verdict::Orphaned) {
                        problems.push(format!("{case}: false orphan {}", describe(&r, p)));
                    }
                }
                if verdict_of(&r, &gone).is_some_and(|(v, _)| v == Verdict::Healthy) {
                    problems.push(format!("{case}: a deleted resource judged healthy"));
                }
            }
        }
        if env.sim.injected().values().sum::<u64>() == 0 {
            problems.push(format!("{case}: never injected"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The real binary, scanning the hostile world: the HTTP client it builds must not follow redirects
/// either, and its report must carry no false orphan; the scan is incomplete (exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_scanning_the_hostile_world_reports_no_false_orphan_and_exits_incomplete() {
    let h = World::hostile(12);
    let env = TestEnv::start(h.world.clone(), SimConfig::default()).await;
    env.sim.add_faults(h.rules.clone());
    let cfg = env.config_path.to_str().expect("utf-8 path").to_owned();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_miaudit"))
            .args(["--config", &cfg, "scan", "--output", "json", "--all"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output(),
    )
    .await
    .expect("the binary finishes")
    .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings = v["findings"].as_array().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    for p in h.healthy() {
        let f = findings.iter().find(|f| f["object_id"] == json!(p));
        if f.is_none_or(|f| f["verdict"] == "orphaned") {
            problems.push(format!(
                "false orphan ({}): {p} {}",
                label(&h, &p),
                f.map_or("no verdict".into(), |f| format!(
                    "{}/{}: {}",
                    f["verdict"], f["reason"], f["detail"]
                ))
            ));
        }
    }
    if out.status.code() != Some(3) {
        problems.push(format!(
            "exit code {:?}, want 3 (incomplete); complete = {}",
            out.status.code(),
            v["complete"]
        ));
    }
    problems.extend(stray_problems(&env.sim));
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The daemon keeps its per-tenant clients (tokens, provider lists, pacers) across scans: a scan behind
/// hostile answers and extreme numbers must leave nothing behind that breaks the next one, its scan row
/// must be finished, and the findings API must never show a healthy identity as an orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_survives_a_hostile_scan_and_its_next_scan_completes() {
    let h = World::hostile(13);
    let env = TestEnv::start(h.world.clone(), SimConfig::default()).await;
    env.sim.add_faults(h.rules.clone());
    // Extreme numbers on every API, a few times each, on top of the hostile answers.
    for f in Fault::extreme_numbers() {
        let api = match &f {
            Fault::TokenExpiresIn(_) => Api::Token,
            Fault::ThrottleHeader { header, .. } | Fault::QuotaHeader { header, .. }
                if header.starts_with("x-ms-user-quota") =>
            {
                Api::ResourceGraph
            }
            _ => Api::Arm,
        };
        env.sim.add_fault(FaultRule {
            api,
            path_contains: None,
            times: Some(1),
            fault: f,
        });
    }
    let d = env.daemon("[lifecycle]\nconfirm_after = \"0s\"\n").await;
    let first = tokio::time::timeout(Duration::from_secs(180), d.scan())
        .await
        .expect("the hostile scan ends");
    assert!(!first.complete, "hostile answers left checks undone");
    let orphaned_in_api = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|f| f["verdict"] == "orphaned")
            .map(|f| f["object_id"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let healthy: Vec<String> = h
        .healthy()
        .into_iter()
        .map(|p| p.to_ascii_lowercase())
        .collect();
    let (_, list) = get_json(&d.url("/api/v1/findings?limit=1000")).await;
    for o in orphaned_in_api(&list) {
        assert!(
            !healthy.contains(&o.to_ascii_lowercase()),
            "false orphan in the API: {o}"
        );
    }

    env.sim.clear_faults();
    let second = tokio::time::timeout(Duration::from_secs(180), d.scan())
        .await
        .expect("the next scan ends");
    assert!(second.complete, "{:?}", second.tenants);
    let (_, list) = get_json(&d.url("/api/v1/findings?limit=1000")).await;
    let orphans = orphaned_in_api(&list);
    for o in &orphans {
        assert!(
            !healthy.contains(&o.to_ascii_lowercase()),
            "false orphan in the API: {o}"
        );
    }
    for (p, _) in &h.orphans {
        assert!(
            orphans.iter().any(|o| o.eq_ignore_ascii_case(p)),
            "genuine orphan {p} missing from the API"
        );
    }
    let (_, scans) = get_json(&d.url("/api/v1/scans")).await;
    for s in scans["items"].as_array().expect("items") {
        assert!(!s["finished_at"].is_null(), "a scan row left running: {s}");
    }
    d.stop().await;
}
