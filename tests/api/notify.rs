//! Notifications: the daemon (and `scan`) deliver confirmed and resolved orphans to webhooks through the
//! durable outbox, against the simulator's webhook receiver on loopback.

use crate::helpers::*;
use miaudit::notify::sign;
use miaudit_sim::SimConfig;
use miaudit_sim::webhook::{Received, Receiver, Script};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const SECRET: &str = "whsec-test-4b1d6c0e";

/// Waits until `f` holds for the receiver's requests, or fails after `limit`.
async fn until(rx: &Receiver, limit: Duration, what: &str, f: impl Fn(&[Received]) -> bool) {
    let start = std::time::Instant::now();
    loop {
        if f(&rx.received()) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; received {:?}",
            rx.received()
                .iter()
                .map(|r| (r.status, r.json()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn delivered(rs: &[Received]) -> Vec<&Received> {
    rs.iter().filter(|r| r.status == 200).collect()
}

/// A webhook table for `url` (json, signed) with fast retries.
fn json_hook(url: &str, extra: &str) -> String {
    format!(
        "[lifecycle]\nconfirm_after = \"0s\"\n\n[notify]\nretry_base_delay = \"50ms\"\nretry_max_delay = \"200ms\"\n{extra}\n\n[[notify.webhooks]]\nname = \"soc\"\nurl = \"{url}/hook\"\nkind = \"json\"\nsecret = \"{SECRET}\"\n"
    )
}

/// Two orphans (resources deleted) and a healthy identity.
fn orphans() -> (miaudit_sim::model::World, Vec<String>) {
    let (mut w, sub) = world();
    let mut ids = Vec::new();
    for name in ["gone-a", "gone-b"] {
        let id = rid(
            &sub,
            "rg",
            "Microsoft.Compute",
            &format!("virtualMachines/{name}"),
        );
        ids.push(w.add_system_assigned(&id));
        w.delete_resource(&id);
    }
    w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Web", "sites/alive"));
    (w, ids)
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value")
}

#[tokio::test]
async fn json_webhook_gets_one_signed_delivery_per_event() {
    let (w, ids) = orphans();
    let env = TestEnv::start(w, SimConfig::default()).await;
    let rx = Receiver::start(Script::default()).await.expect("receiver");
    let d = env.daemon(&json_hook(rx.url(), "")).await;
    d.scan().await;
    until(&rx, Duration::from_secs(10), "two confirmed events", |r| {
        delivered(r).len() == 2
    })
    .await;
    let got = rx.received();
    let mut objects = BTreeSet::new();
    for r in &got {
        assert_eq!(r.path, "/hook");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let ts: i64 = r
            .header("x-miaudit-timestamp")
            .expect("timestamp")
            .parse()
            .expect("unix seconds");
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
        let sig = r.header("x-miaudit-signature").expect("signature");
        assert!(
            sign::verify(SECRET, ts, &r.body, sig),
            "signature verifies over <timestamp>.<raw body>"
        );
        assert!(!sign::verify("another secret", ts, &r.body, sig));
        let e = r.json();
        assert_eq!(r.header("x-miaudit-event-id"), e["event_id"].as_str());
        assert_eq!(e["type"], "orphan.confirmed");
        assert_eq!(e["tenant_id"], TENANT);
        assert_eq!(e["state"], "confirmed");
        assert_eq!(e["reason"], "resource_not_found");
        assert_eq!(e["identity_type"], "system_assigned");
        assert_eq!(e["episode"], 1);
        assert_eq!(e["evidence"]["status"], 404);
        assert!(e["evidence"]["request_id"].is_string(), "{e}");
        assert!(
            e["resource_id"]
                .as_str()
                .is_some_and(|s| s.contains("virtualMachines/gone-"))
        );
        assert!(e["role_assignments"].is_array());
        for k in ["occurred_at", "app_id", "display_name", "object_id"] {
            assert!(e[k].is_string(), "{k}: {e}");
        }
        objects.insert(e["object_id"].as_str().expect("object").to_owned());
    }
    assert_eq!(objects, ids.iter().cloned().collect::<BTreeSet<_>>());
    // Support removes one principal: a resolved event; an unchanged scan after it sends nothing.
    env.sim.with_world(|w| w.remove_principal(&ids[0]));
    d.scan().await;
    until(&rx, Duration::from_secs(10), "the resolved event", |r| {
        delivered(r).len() == 3
    })
    .await;
    let resolved = rx.received()[2].json();
    assert_eq!(
        (
            resolved["type"].as_str(),
            resolved["object_id"].as_str(),
            resolved["resolution"].as_str()
        ),
        (
            Some("orphan.resolved"),
            Some(ids[0].as_str()),
            Some("identity_removed")
        )
    );
    d.scan().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.received().len(), 3, "an unchanged scan notifies nothing");
    let m = d.metrics().await;
    assert_eq!(
        metric(
            &m,
            "miaudit_notifications_total{outcome=\"delivered\",sink=\"soc\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            "miaudit_notifications_total{outcome=\"dead\",sink=\"soc\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(&m, "miaudit_notification_outbox_pending{sink=\"soc\"}"),
        0.0
    );
    d.stop().await;
}

#[tokio::test]
async fn undelivered_events_survive_a_restart_and_go_out_once() {
    let (w, _) = orphans();
    let env = TestEnv::start(w, SimConfig::default()).await;
    // The receiver is down (503 with a Retry-After) while the first daemon runs.
    let rx = Receiver::start(Script {
        always: Some(503),
        retry_after: Some("1".into()),
        ..Script::default()
    })
    .await
    .expect("receiver");
    let hook = json_hook(rx.url(), "max_attempts = 1000");
    let d = env.daemon(&hook).await;
    d.scan().await;
    until(&rx, Duration::from_secs(10), "failed attempts", |r| {
        r.len() >= 4
    })
    .await;
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "miaudit_notification_outbox_pending{sink=\"soc\"}"),
        2.0
    );
    assert!(
        metric(
            &m,
            "miaudit_notifications_total{outcome=\"failed\",sink=\"soc\"}"
        ) >= 2.0
    );
    d.stop().await;
    // Back up; a new daemon (no scan) delivers what the first one could not, each event once.
    rx.set_script(Script::default());
    let d = env.daemon(&hook).await;
    until(&rx, Duration::from_secs(10), "both events delivered", |r| {
        delivered(r).len() >= 2
    })
    .await;
    d.stop().await;
    let d = env.daemon(&hook).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    d.stop().await;
    let mut per_event: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in rx.received() {
        let id = r.header("x-miaudit-event-id").expect("event id").to_owned();
        assert_eq!(
            Some(id.as_str()),
            r.json()["event_id"].as_str(),
            "the header names the body's event"
        );
        let e = per_event.entry(id).or_default();
        if r.status == 200 { e.0 += 1 } else { e.1 += 1 }
    }
    assert_eq!(per_event.len(), 2, "{per_event:?}");
    for (id, (ok, failed)) in &per_event {
        assert_eq!(*ok, 1, "{id}: delivered once, never again after a restart");
        assert!(*failed >= 1, "{id}: the same event id was retried");
    }
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_dead_letters_and_a_redirect_is_not_followed() {
    let (w, _) = orphans();
    let env = TestEnv::start(w, SimConfig::default()).await;
    let elsewhere = Receiver::start(Script::default()).await.expect("receiver");
    let rx = Receiver::start(Script {
        always: Some(307),
        location: Some(format!("{}/stolen", elsewhere.url())),
        ..Script::default()
    })
    .await
    .expect("receiver");
    let d = env.daemon(&json_hook(rx.url(), "max_attempts = 3")).await;
    d.scan().await;
    until(
        &rx,
        Duration::from_secs(10),
        "three attempts per event",
        |r| r.len() == 6,
    )
    .await;
    // Dead after the third: no fourth attempt.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rx.received().len(), 6);
    assert!(
        elsewhere.received().is_empty(),
        "a redirect is never followed"
    );
    let m = d.metrics().await;
    assert_eq!(
        metric(
            &m,
            "miaudit_notifications_total{outcome=\"dead\",sink=\"soc\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "miaudit_notifications_total{outcome=\"failed\",sink=\"soc\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(&m, "miaudit_notification_outbox_pending{sink=\"soc\"}"),
        0.0
    );
    let (status, list) = get_json(&d.url("/api/v1/notifications?state=dead")).await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    for i in items {
        assert_eq!(
            (i["sink"].as_str(), i["attempts"].as_u64()),
            (Some("soc"), Some(3))
        );
        assert!(
            i["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("redirect")),
            "{i}"
        );
        assert!(
            !i.to_string().contains(rx.url()),
            "the webhook URL is not shown: {i}"
        );
    }
    d.stop().await;
}

#[tokio::test]
async fn slack_and_teams_get_one_digest_per_scan() {
    let (mut w, sub) = world();
    for n in 0..12 {
        let id = rid(
            &sub,
            "rg",
            "Microsoft.Compute",
            &format!("virtualMachines/vm-{n:02}"),
        );
        w.add_system_assigned(&id);
        w.delete_resource(&id);
    }
    let env = TestEnv::start(w, SimConfig::default()).await;
    let rx = Receiver::start(Script::default()).await.expect("receiver");
    let url = rx.url();
    let d = env
        .daemon(&format!(
            "[lifecycle]\nconfirm_after = \"0s\"\n\n[notify]\npublic_url = \"https://miaudit.example.com\"\n\n[[notify.webhooks]]\nname = \"slack\"\nurl = \"{url}/slack\"\nkind = \"slack\"\n\n[[notify.webhooks]]\nname = \"teams\"\nurl = \"{url}/teams\"\nkind = \"teams\"\nevents = [\"confirmed\"]\n"
        ))
        .await;
    d.scan().await;
    until(&rx, Duration::from_secs(10), "a digest per sink", |r| {
        delivered(r).len() == 2
    })
    .await;
    d.scan().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = rx.received();
    assert_eq!(
        got.len(),
        2,
        "one digest per scan and sink, none for an unchanged scan"
    );
    let slack = got
        .iter()
        .find(|r| r.path == "/slack")
        .expect("slack")
        .json();
    assert_eq!(slack["text"], "miaudit: 12 new orphaned managed identities");
    let section = slack["blocks"][1]["text"]["text"]
        .as_str()
        .expect("section");
    assert_eq!(section.matches("• ").count(), 10, "{section}");
    assert!(section.contains("and 2 more"), "{section}");
    assert!(
        slack
            .to_string()
            .contains("https://miaudit.example.com/api/v1/export?format=csv")
    );
    let teams = got.iter().find(|r| r.path == "/teams").expect("teams");
    assert!(
        teams.header("x-miaudit-signature").is_none(),
        "only json sinks are signed"
    );
    let card = &teams.json()["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(
        card["content"]["body"][1]["facts"].as_array().map(Vec::len),
        Some(10)
    );
    d.stop().await;
}

#[tokio::test]
async fn scan_from_the_command_line_delivers_and_never_shows_a_webhook_secret() {
    let (w, _) = orphans();
    let env = TestEnv::start(w, SimConfig::default()).await;
    let rx = Receiver::start(Script {
        always: Some(500),
        ..Script::default()
    })
    .await
    .expect("receiver");
    let path_secret = "T0PSECRETPATHc0ffee";
    let config = env.dir.path().join("cli.toml");
    let base = std::fs::read_to_string(&env.config_path).expect("config");
    std::fs::write(
        &config,
        format!(
            "{base}\n[lifecycle]\nconfirm_after = \"0s\"\n\n[notify]\nmax_attempts = 2\nretry_base_delay = \"10ms\"\nretry_max_delay = \"10ms\"\n\n[[notify.webhooks]]\nurl = \"{}/services/{path_secret}\"\nsecret = \"{SECRET}\"\n",
            rx.url()
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let run = miaudit(
        &["--config", config, "scan", "--output", "json"],
        &[("RUST_LOG", "trace")],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        rx.received().len(),
        1,
        "the scan itself attempts once; the receiver is down (500), so the other event waits with it"
    );
    // The next run retries what is due (and dead-letters it: max_attempts 2).
    rx.set_script(Script::default());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = miaudit(&["--config", config, "scan"], &[("RUST_LOG", "trace")]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(delivered(&rx.received()).len(), 2);
    for out in [&run.stdout, &run.stderr, &again.stdout, &again.stderr] {
        assert!(!out.contains(path_secret), "the webhook URL leaked");
        assert!(!out.contains(SECRET), "the signing secret leaked");
    }
    assert!(
        run.stderr.contains("notification not delivered"),
        "the failure is logged (without the URL)"
    );
    // The default name labels it.
    assert!(run.stderr.contains("webhook-1"));
}

/// The real `miaudit serve`, started on `config`; returns once it serves.
async fn serve(config: &std::path::Path) -> tokio::process::Child {
    let child = tokio::process::Command::new(BIN)
        .args(["--config", config.to_str().expect("utf-8"), "serve"])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    until_serving(child).await
}

#[tokio::test]
async fn sigkill_mid_delivery_then_restart_delivers_every_event() {
    let (w, ids) = orphans();
    let env = TestEnv::start(w, SimConfig::default()).await;
    // The receiver takes its time answering: the daemon is killed while a delivery is in flight.
    let rx = Receiver::start(Script {
        delay: Duration::from_secs(30),
        ..Script::default()
    })
    .await
    .expect("receiver");
    let config = env.dir.path().join("serve.toml");
    let base = std::fs::read_to_string(&env.config_path).expect("config");
    std::fs::write(
        &config,
        format!(
            "{base}\n[http]\nlisten = \"127.0.0.1:0\"\n[schedule]\ncron = \"0 0 0 1 1 *\"\nscan_on_start = true\n{}",
            json_hook(rx.url(), "")
        ),
    )
    .expect("config");
    let mut first = serve(&config).await;
    let start = std::time::Instant::now();
    while rx.arrived() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no delivery started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;
    // A new process, the receiver answering at once: every event arrives, without waiting for the dead
    // process's claim to lapse.
    rx.set_script(Script::default());
    let mut second = serve(&config).await;
    until(
        &rx,
        Duration::from_secs(15),
        "every event delivered after the restart",
        |r| {
            let ok: BTreeSet<String> = delivered(r)
                .iter()
                .filter_map(|r| r.json()["object_id"].as_str().map(str::to_owned))
                .collect();
            ok == ids.iter().cloned().collect::<BTreeSet<_>>()
        },
    )
    .await;
    second.start_kill().expect("kill");
    let _ = second.wait().await;
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for r in delivered(&rx.received()) {
        let sig = r.header("x-miaudit-signature").expect("signed");
        let ts: i64 = r
            .header("x-miaudit-timestamp")
            .expect("ts")
            .parse()
            .expect("int");
        assert!(sign::verify(SECRET, ts, &r.body, sig));
        *per_event
            .entry(r.header("x-miaudit-event-id").expect("id").to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_event.len(), 2, "{per_event:?}");
    assert!(
        per_event.values().all(|n| *n == 1),
        "each event delivered once after the restart: {per_event:?}"
    );
}
