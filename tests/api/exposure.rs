//! Exposure: reads and metrics behind the bearer token when configured, the warning about open reads on a
//! non-loopback address, owner-only database files, and working files no other process deletes.

use crate::helpers::*;
use miaudit_sim::SimConfig;
use serde_json::Value;

const TOKEN: &str = "r3ads-need-this-t0ken";

/// A world with one orphan, scanned once by a daemon with `extra` [http] settings.
async fn scanned_daemon(http: &str) -> (TestEnv, Daemon, String) {
    let (mut w, sub) = world();
    let gone_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/gone");
    let gone = w.add_system_assigned(&gone_id);
    w.delete_resource(&gone_id);
    let env = TestEnv::start(w, SimConfig::default()).await;
    let d = env
        .daemon(&format!(
            "[http]\nlisten = \"127.0.0.1:0\"\napi_token = \"{TOKEN}\"\n{http}"
        ))
        .await;
    d.scan().await;
    (env, d, gone)
}

/// Status, `www-authenticate` and body of a GET with an optional bearer token.
async fn get(url: &str, token: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let auth = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = r.text().await.expect("body");
    if status == 401 {
        assert_eq!(ctype, "application/problem+json", "{url}");
        let p: Value = serde_json::from_str(&body).expect("problem JSON");
        assert_eq!(p["status"], 401);
        assert!(!body.contains(TOKEN));
    }
    (status, auth, body)
}

#[tokio::test]
async fn with_require_token_for_reads_every_read_needs_the_bearer_token() {
    let (_env, d, gone) = scanned_daemon("require_token_for_reads = true\n").await;
    let (_, scans) = {
        let (s, _, body) = get(&d.url("/api/v1/scans"), Some(TOKEN)).await;
        (s, serde_json::from_str::<Value>(&body).expect("json"))
    };
    let scan_id = scans["items"][0]["scan_id"]
        .as_str()
        .expect("id")
        .to_owned();
    for (path, ok) in [
        ("/api/v1/findings".to_owned(), 200),
        ("/api/v1/findings?state=suspected&limit=5".to_owned(), 200),
        (format!("/api/v1/findings/{TENANT}/{gone}"), 200),
        ("/api/v1/scans".to_owned(), 200),
        (format!("/api/v1/scans/{scan_id}"), 200),
        ("/api/v1/export?format=csv".to_owned(), 200),
        ("/api/v1/export?format=json".to_owned(), 200),
        ("/api/v1/openapi.json".to_owned(), 200),
        // The page shows the findings too.
        ("/".to_owned(), 200),
        ("/?state=confirmed".to_owned(), 200),
        // Unknown paths do not tell a stranger what exists.
        ("/api/v1/nothing".to_owned(), 404),
        ("/nothing".to_owned(), 404),
    ] {
        let url = d.url(&path);
        let (s, auth, body) = get(&url, None).await;
        assert_eq!((s, auth.as_deref()), (401, Some("Bearer")), "{path}");
        assert!(!body.contains(&gone), "{path}: nothing leaks");
        let (s, _, _) = get(&url, Some("wrong-token")).await;
        assert_eq!(s, 401, "{path}");
        let (s, _, _) = get(&url, Some(&format!("{TOKEN}x"))).await;
        assert_eq!(s, 401, "{path}");
        let (s, _, body) = get(&url, Some(TOKEN)).await;
        assert_eq!(s, ok, "{path}: {body}");
    }
    // A browser sends the token as the Basic password (it asks when told the realm); reads only.
    let basic = |user: &str, password: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let c = reqwest::Client::new();
    let r = c.get(d.url("/")).send().await.expect("page");
    assert_eq!(r.status().as_u16(), 401);
    let challenges: Vec<&str> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        challenges.contains(&"Bearer") && challenges.iter().any(|c| c.starts_with("Basic realm=")),
        "{challenges:?}"
    );
    for (path, auth, want) in [
        ("/", basic("anyone", TOKEN), 200),
        ("/api/v1/findings", basic("", TOKEN), 200),
        ("/", basic("anyone", "wrong"), 401),
        ("/", basic(TOKEN, ""), 401),
        ("/", "Basic !!!".to_owned(), 401),
    ] {
        let r = c
            .get(d.url(path))
            .header("authorization", &auth)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), want, "{path} {auth}");
    }
    let r = c
        .post(d.url("/api/v1/scans"))
        .header("authorization", basic("anyone", TOKEN))
        .send()
        .await
        .expect("post");
    assert_eq!(
        r.status().as_u16(),
        401,
        "mutations take the bearer token only"
    );
    // Health checks stay open; metrics keep their own setting (open here).
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (s, _, _) = get(&d.url(path), None).await;
        assert_eq!(s, 200, "{path}");
    }
    // Mutating endpoints are unchanged: the token, or 401.
    let r = reqwest::Client::new()
        .post(d.url(&format!("/api/v1/findings/{TENANT}/{gone}/acknowledge")))
        .json(&serde_json::json!({"ticket": "T-1"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 401);
    d.stop().await;
}

#[tokio::test]
async fn metrics_require_token_guards_only_metrics() {
    let (_env, d, _) = scanned_daemon("metrics_require_token = true\n").await;
    let (s, auth, _) = get(&d.url("/metrics"), None).await;
    assert_eq!((s, auth.as_deref()), (401, Some("Bearer")));
    let (s, _, _) = get(&d.url("/metrics"), Some("nope")).await;
    assert_eq!(s, 401);
    let (s, _, text) = get(&d.url("/metrics"), Some(TOKEN)).await;
    assert_eq!(s, 200);
    assert!(text.contains("miaudit_managed_identities"));
    for path in ["/api/v1/findings", "/api/v1/scans", "/healthz", "/readyz"] {
        let (s, _, _) = get(&d.url(path), None).await;
        assert_eq!(s, 200, "{path}: reads stay open by default");
    }
    d.stop().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_miaudit");

/// Runs `miaudit serve` with `listen` until it exits on its own; its exit code and stderr.
async fn serve_once(env: &TestEnv, http: &str) -> (Option<i32>, String) {
    let path = env.dir.path().join("exposed.toml");
    let base = std::fs::read_to_string(&env.config_path).expect("config");
    std::fs::write(
        &path,
        format!(
            "{base}\n[http]\n{http}\n[schedule]\ncron = \"0 0 0 1 1 *\"\nscan_on_start = false\n"
        ),
    )
    .expect("config");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::process::Command::new(BIN)
            .args(["--config", path.to_str().expect("utf-8"), "serve"])
            .env_clear()
            .output(),
    )
    .await
    .expect("serve gives up on an address it cannot bind")
    .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn open_reads_on_a_non_loopback_address_are_warned_about_at_start() {
    let (w, _) = world();
    let env = TestEnv::start(w, SimConfig::default()).await;
    // 192.0.2.1 (TEST-NET-1, RFC 5737) is on no interface: the bind fails, so nothing is ever exposed,
    // and the warning is logged before it.
    let (code, stderr) = serve_once(&env, "listen = \"192.0.2.1:9464\"\n").await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("reads need no token"),
        "{stderr}"
    );
    assert!(stderr.contains("MIAUDIT_HTTP__REQUIRE_TOKEN_FOR_READS=true"));
    let (code, stderr) = serve_once(
        &env,
        &format!(
            "listen = \"192.0.2.1:9464\"\napi_token = \"{TOKEN}\"\nrequire_token_for_reads = true\n"
        ),
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("reads need no token"), "{stderr}");
    assert!(!stderr.contains(TOKEN));
    // Without a token to require: a configuration error, exit 2, before anything starts.
    let (code, stderr) = serve_once(
        &env,
        "listen = \"127.0.0.1:0\"\nrequire_token_for_reads = true\n",
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("http.require_token_for_reads: needs a token"),
        "{stderr}"
    );
}

/// The working databases (not their lock files) beside the store in `dir`.
fn work_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("miaudit.db.work-"))
        })
        .collect()
}

#[tokio::test]
async fn a_daemon_starting_during_a_cli_scan_leaves_its_working_file_alone() {
    let env = TestEnv::start(
        miaudit_sim::model::World::generate(5, 200),
        SimConfig {
            latency: std::time::Duration::from_millis(200),
            ..SimConfig::default()
        },
    )
    .await;
    // A scan run by hand, in another process.
    let mut scan = tokio::process::Command::new(BIN)
        .args([
            "--config",
            env.config_path.to_str().expect("utf-8"),
            "scan",
            "--output",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("scan starts");
    let mut live = Vec::new();
    for _ in 0..200 {
        live = work_files(env.dir.path());
        if live.iter().any(|p| !p.to_string_lossy().ends_with(".lock")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let work = live
        .into_iter()
        .find(|p| !p.to_string_lossy().ends_with(".lock"))
        .expect("the scan made its working file");
    // The daemon starts meanwhile and cleans up working files of dead scans.
    let d = env.daemon("").await;
    assert!(work.exists(), "the live scan's working file was deleted");
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        use tokio::io::AsyncReadExt;
        let (mut o, mut e) = (
            scan.stdout.take().expect("stdout"),
            scan.stderr.take().expect("stderr"),
        );
        let _ = tokio::join!(o.read_to_end(&mut stdout), e.read_to_end(&mut stderr));
        (scan.wait().await.expect("status"), stdout, stderr)
    })
    .await
    .expect("the scan ends");
    let (status, stdout, stderr) = out;
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&stderr)
    );
    let v: Value = serde_json::from_slice(&stdout).expect("JSON report");
    assert_eq!(v["complete"], true);
    // Recorded, and its files gone with it.
    let (_, scans) = get_json(&d.url("/api/v1/scans")).await;
    assert_eq!(scans["items"][0]["scan_id"], v["scan_id"]);
    assert_eq!(scans["items"][0]["complete"], true);
    d.stop().await;
    assert!(work_files(env.dir.path()).is_empty());
}

#[cfg(unix)]
#[tokio::test]
async fn database_files_are_created_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::start(
        miaudit_sim::model::World::generate(6, 100),
        SimConfig {
            latency: std::time::Duration::from_millis(100),
            ..SimConfig::default()
        },
    )
    .await;
    let path = env.dir.path().join("serve.toml");
    let base = std::fs::read_to_string(&env.config_path).expect("config");
    std::fs::write(
        &path,
        format!("{base}\n[http]\nlisten = \"127.0.0.1:0\"\n[schedule]\ncron = \"0 0 0 1 1 *\"\nscan_on_start = true\n"),
    )
    .expect("config");
    // The usual umask, which would make SQLite's files world-readable (0644).
    let child = tokio::process::Command::new("sh")
        .args([
            "-c",
            "umask 022; exec \"$0\" --config \"$1\" serve",
            BIN,
            path.to_str().expect("utf-8"),
        ])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let mut child = until_serving(child).await;
    // While it runs (the start-up scan under way): the database, its WAL and shared memory, and the
    // scan's working files.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..100 {
        for e in std::fs::read_dir(env.dir.path()).expect("dir").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("miaudit.db") {
                let mode = e.metadata().expect("meta").permissions().mode() & 0o777;
                let kind = if name.contains(".work-") {
                    "work"
                } else {
                    name.trim_start_matches("miaudit.db")
                };
                seen.insert(kind.to_owned(), format!("{mode:o}"));
            }
        }
        if ["", "-wal", "-shm", "work"]
            .iter()
            .all(|k| seen.contains_key(*k))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid = child.id().expect("pid");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait()).await;
    for kind in ["", "-wal", "-shm", "work"] {
        assert_eq!(
            seen.get(kind).map(String::as_str),
            Some("600"),
            "miaudit.db{kind}: {seen:?}"
        );
    }
}
