//! What people and tools read besides the JSON: the page at `/` (every open orphan, escaped, never an
//! all-clear before a scan or after an incomplete one), the OpenAPI document of the API (every route
//! described, every documented GET answering as documented), `--version` and `healthcheck`.

use crate::helpers::*;
use miaudit_sim::SimConfig;

/// A world with an orphan whose display name is markup, a healthy identity and an orphan that will be
/// acknowledged.
fn hostile_world() -> (miaudit_sim::model::World, String, String, String) {
    let (mut w, sub) = world();
    let gone = rid(&sub, "rg", "Microsoft.Web", "sites/gone");
    let orphan = w.add_system_assigned(&gone);
    w.delete_resource(&gone);
    if let Some(p) = w.principals.iter_mut().find(|p| p.id == orphan) {
        p.display_name = "<script>alert('x')</script>\"><img src=https://evil.example/x>".into();
    }
    let healthy = w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Web", "sites/alive"));
    let other_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/old");
    let other = w.add_system_assigned(&other_id);
    w.delete_resource(&other_id);
    (w, orphan, healthy, other)
}

async fn page(d: &Daemon, query: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = reqwest::get(d.url(&format!("/{query}")))
        .await
        .expect("page");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("html"))
}

#[tokio::test]
async fn the_page_lists_the_open_orphans_escaped_and_is_never_an_all_clear_before_a_scan() {
    let (w, orphan, healthy, other) = hostile_world();
    let env = TestEnv::start(w, SimConfig::default()).await;
    let d = env
        .daemon("[http]\nlisten = \"127.0.0.1:0\"\napi_token = \"t0ken-for-tests\"\n")
        .await;

    let (status, headers, html) = page(&d, "").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{headers:?}"
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        html.contains("No scan has finished yet"),
        "before any scan the page says so:\n{html}"
    );

    d.scan().await;
    let (_, _, html) = page(&d, "").await;
    assert!(html.contains(&orphan) && html.contains(&other), "{html}");
    assert!(
        !html.contains(&healthy),
        "healthy identities are not listed"
    );
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&gt;&lt;img"),
        "the display name is shown, escaped:\n{html}"
    );
    for bad in ["<script", "<img", "https://evil.example/x>"] {
        assert!(!html.contains(bad), "{bad:?} in the page:\n{html}");
    }
    assert!(html.contains("/api/v1/export?format=csv"));
    assert!(html.contains("<label for=\"f-state\">"));
    assert_eq!(
        html.matches("<tr>\n<td>").count(),
        2,
        "one row per open orphan:\n{html}"
    );

    // Acknowledged stays open; the state filter narrows; a bad filter is a 400, not a page.
    let c = reqwest::Client::new();
    let r = c
        .post(d.url(&format!("/api/v1/findings/{TENANT}/{other}/acknowledge")))
        .bearer_auth("t0ken-for-tests")
        .json(&serde_json::json!({"ticket": "2412020010001234"}))
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status().as_u16(), 200);
    let (_, _, html) = page(&d, "?state=acknowledged").await;
    assert!(html.contains(&other) && !html.contains(&orphan), "{html}");
    assert!(
        html.contains("ticket <strong>2412020010001234</strong>"),
        "{html}"
    );
    let (_, _, html) = page(&d, "").await;
    assert!(html.contains(&other) && html.contains(&orphan), "{html}");
    let (_, _, html) = page(&d, "?state=confirmed").await;
    assert!(html.contains("No finding matches these filters"), "{html}");
    let (status, _, _) = page(&d, "?state=bogus").await;
    assert_eq!(status, 400);
    let (status, _, _) = page(&d, "?nonsense=1").await;
    assert_eq!(status, 400);
    d.stop().await;
}

#[tokio::test]
async fn an_incomplete_last_scan_is_said_on_the_page() {
    let (mut w, sub) = world();
    w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Web", "sites/alive"));
    let env = TestEnv::start(w, SimConfig::default()).await;
    env.sim.add_fault(miaudit_sim::FaultRule {
        api: miaudit_sim::Api::Graph,
        path_contains: None,
        times: None,
        fault: miaudit_sim::Fault::Status(503),
    });
    let d = env.daemon("").await;
    let _ = d.runner.run_now(miaudit::domain::Trigger::Manual).await;
    let (_, _, html) = page(&d, "").await;
    assert!(
        html.contains("That scan was incomplete") && html.contains("not</strong> an all-clear"),
        "{html}"
    );
    d.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_each_get_answers_as_documented() {
    let (w, orphan, _, _) = hostile_world();
    let env = TestEnv::start(w, SimConfig::default()).await;
    let d = env.daemon("").await;
    let report = d.scan().await;
    let (status, doc) = get_json(&d.url("/api/v1/openapi.json")).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/findings",
        "/api/v1/findings/{tenant_id}/{object_id}",
        "/api/v1/findings/{tenant_id}/{object_id}/acknowledge",
        "/api/v1/scans",
        "/api/v1/scans/{scan_id}",
        "/api/v1/export",
        "/api/v1/notifications",
        "/api/v1/dangling-role-assignments",
        "/api/v1/suppressions",
        "/api/v1/suppressions/{id}",
    ] {
        assert!(paths.contains_key(p), "{p} is described");
    }
    // Each GET, with its path's ids filled from the data, answers one of its documented statuses,
    // and one that takes query parameters refuses an undocumented one with a documented 400.
    let mut checked = 0;
    for (path, item) in paths {
        let Some(op) = item.get("get") else { continue };
        let url = path
            .replace("{tenant_id}", TENANT)
            .replace("{object_id}", &orphan)
            .replace("{scan_id}", &report.scan_id);
        let r = reqwest::get(d.url(&url)).await.expect("get");
        let status = r.status().as_u16().to_string();
        assert!(
            op["responses"].get(&status).is_some(),
            "GET {url} answered {status}, not among {:?}",
            op["responses"]
                .as_object()
                .map(|o| o.keys().collect::<Vec<_>>())
        );
        assert_eq!(status, "200", "GET {url}");
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if !declared.is_empty() {
            let r = reqwest::get(d.url(&format!("{url}?undocumented=1")))
                .await
                .expect("get");
            assert_eq!(r.status().as_u16(), 400, "GET {url}?undocumented=1");
        }
        checked += 1;
    }
    assert!(checked >= 11, "{checked} GET operations");
    // The mutating operations name the bearer scheme.
    for (path, method) in [
        ("/api/v1/scans", "post"),
        ("/api/v1/suppressions", "post"),
        ("/api/v1/suppressions/{id}", "delete"),
        (
            "/api/v1/findings/{tenant_id}/{object_id}/acknowledge",
            "post",
        ),
    ] {
        assert!(
            doc["paths"][path][method]["security"][0]
                .get("bearer")
                .is_some(),
            "{method} {path}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    d.stop().await;
}

#[tokio::test]
async fn version_names_the_commit_and_healthcheck_asks_the_daemon() {
    let v = miaudit(&["--version"], &[]).await;
    assert_eq!(v.code, 0);
    assert!(
        v.stdout
            .starts_with(&format!("miaudit {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{}",
        v.stdout
    );

    let (w, _) = world();
    let env = TestEnv::start(w, SimConfig::default()).await;
    let d = env.daemon("").await;
    let ok = miaudit(&["healthcheck", "--url", &d.url("/healthz")], &[]).await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let listen = d.base.trim_start_matches("http://").to_owned();
    let by_env = miaudit(&["healthcheck"], &[("MIAUDIT_HTTP__LISTEN", &listen)]).await;
    assert_eq!(by_env.code, 0, "{}", by_env.stderr);
    d.stop().await;
    let down = miaudit(&["healthcheck"], &[("MIAUDIT_HTTP__LISTEN", &listen)]).await;
    assert_eq!(down.code, 1);
    assert!(down.stderr.contains("could not connect"), "{}", down.stderr);
    let not_found = miaudit(
        &[
            "healthcheck",
            "--url",
            &format!("{}/nothing", env.sim.base_url()),
        ],
        &[],
    )
    .await;
    assert_eq!(not_found.code, 1, "a 404 is not healthy");
}

#[tokio::test]
async fn an_abandoned_newer_scan_is_said_on_the_page_and_layer_errors_are_problems() {
    let (w, orphan, _, _) = hostile_world();
    let env = TestEnv::start(w, SimConfig::default()).await;
    let d = env
        .daemon("[http]\nlisten = \"127.0.0.1:0\"\napi_token = \"t0ken-for-tests\"\n")
        .await;
    d.scan().await;
    let (_, _, html) = page(&d, "?state=confirmed").await;
    assert!(!html.contains("did not finish"), "{html}");
    // A scan that started and never finished (the process stopped during it): what the page shows is
    // as of the last finished scan, and an empty list is not an all-clear.
    let store = miaudit::store::Store::connect(&env.settings().database.url)
        .await
        .expect("store");
    store
        .begin_scan(
            "abandoned-1",
            chrono::Utc::now(),
            miaudit::domain::Trigger::Schedule,
        )
        .await
        .expect("begin");
    store.abandon_running_scans().await.expect("abandon");
    let (_, _, html) = page(&d, "?state=confirmed").await;
    assert!(html.contains("1 newer scan(s) did not finish"), "{html}");
    assert!(!html.contains("A scan is running"), "{html}");
    assert!(html.contains("not</strong> an all-clear"), "{html}");
    let (_, _, html) = page(&d, "").await;
    assert!(html.contains(&orphan), "the findings stay listed");

    // A body over the limit is refused by a layer: still a problem document.
    let r = reqwest::Client::new()
        .post(d.url("/api/v1/suppressions"))
        .bearer_auth("t0ken-for-tests")
        .header("content-type", "application/json")
        .body(vec![b' '; 200 * 1024])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["status"], 413);
    d.stop().await;
}
