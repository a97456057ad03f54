//! Crash safety and storage faults: the real `miaudit serve` killed with SIGKILL at random points during
//! scans (20 times), and a database locked by another writer.
//!
//! More kills: `MIAUDIT_CRASH_KILLS=200 cargo test --test api crash -- --nocapture`.

use crate::helpers::*;
use miaudit_sim::SimConfig;
use miaudit_sim::model::{Rng, World};
use std::time::Duration;

async fn counts(db: &str) -> (i64, i64, String) {
    let store = miaudit::store::Store::connect(db)
        .await
        .expect("db opens after a kill");
    let ok: String = sqlx::query_scalar("pragma integrity_check")
        .fetch_one(store.pool())
        .await
        .expect("check");
    let history: i64 = sqlx::query_scalar("select count(*) from finding_history")
        .fetch_one(store.pool())
        .await
        .expect("history");
    let done: i64 = sqlx::query_scalar(
        "select count(*) from scans where outcome in ('completed','incomplete')",
    )
    .fetch_one(store.pool())
    .await
    .expect("scans");
    // Every recorded scan is whole: tenants present, verdicts all there (or all pruned by retention).
    let broken: i64 = sqlx::query_scalar(
        "select count(*) from scans s where s.outcome in ('completed','incomplete') and (
             not exists (select 1 from scan_tenants t where t.scan_id = s.scan_id)
             or ((select count(*) from scan_verdicts v where v.scan_id = s.scan_id) not in (0, s.total)))",
    ).fetch_one(store.pool()).await.expect("whole scans");
    assert_eq!(broken, 0, "a half-written scan");
    // Every finding that was ever an orphan has its history.
    let orphans_without_history: i64 = sqlx::query_scalar(
        "select count(*) from findings f where f.state in ('suspected','confirmed','acknowledged','resolved')
           and not exists (select 1 from finding_history h where h.tenant_id = f.tenant_id and h.object_id = f.object_id)",
    ).fetch_one(store.pool()).await.expect("history check");
    assert_eq!(orphans_without_history, 0);
    store.pool().close().await;
    (history, done, ok)
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_never_loses_or_half_writes_anything() {
    let kills: u64 = std::env::var("MIAUDIT_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let env = TestEnv::start(
        World::generate(13, 400),
        SimConfig {
            latency: Duration::from_millis(3),
            ..SimConfig::default()
        },
    )
    .await;
    let path = env.dir.path().join("crash.toml");
    let base = std::fs::read_to_string(&env.config_path).expect("config");
    std::fs::write(&path, format!("{base}\n[http]\nlisten = \"127.0.0.1:0\"\n[schedule]\ncron = \"* * * * * *\"\nscan_on_start = true\n[lifecycle]\nconfirm_after = \"0s\"\n")).expect("config");
    let db = env.settings().database.url;
    let mut rng = Rng::new(2026);
    let (mut last_history, mut last_done) = (0i64, 0i64);
    for round in 0..kills {
        // The tenant changes between runs, so scans have lifecycle work to do.
        let victim = format!("virtualMachines/virtualmachines-{}", rng.below(400));
        env.sim.with_world(|w| {
            let id = w
                .resources
                .keys()
                .find(|k| k.ends_with(&victim.to_ascii_lowercase()))
                .cloned();
            if let Some(id) = id {
                w.delete_resource(&id);
            }
        });
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_miaudit"))
            .args(["--config", path.to_str().expect("utf-8"), "serve"])
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("serve starts");
        let mut child = until_serving(child).await;
        tokio::time::sleep(Duration::from_millis(50 + rng.below(1200))).await;
        child.start_kill().expect("SIGKILL");
        let _ = child.wait().await;
        let (history, done, ok) = counts(&db).await;
        assert_eq!(ok, "ok", "round {round}: integrity");
        assert!(
            history >= last_history,
            "round {round}: history rows lost ({last_history} -> {history})"
        );
        assert!(done >= last_done, "round {round}: recorded scans lost");
        last_history = history;
        last_done = done;
    }
    // After all that, the next scan completes.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_miaudit"))
        .args(["--config", path.to_str().expect("utf-8"), "serve"])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let mut completed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, done, _) = counts(&db).await;
        if done > last_done {
            completed = true;
            break;
        }
    }
    child.start_kill().expect("kill");
    let _ = child.wait().await;
    assert!(completed, "a scan completes after the crashes");
    println!(
        "crash safety: {kills} SIGKILLs, {last_done} scans recorded, {last_history} history rows, integrity ok, nothing half-written"
    );
}

#[tokio::test]
async fn a_locked_database_fails_the_record_cleanly_and_loses_nothing() {
    let (mut w, sub) = world();
    let gone_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/gone");
    let gone = w.add_system_assigned(&gone_id);
    w.delete_resource(&gone_id);
    let env = TestEnv::start(w, SimConfig::default()).await;
    let d = env.daemon("[lifecycle]\nconfirm_after = \"0s\"\n").await;
    d.scan().await;
    // Another process holds the write lock past the busy timeout.
    let other = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&env.settings().database.url)
        .await
        .expect("second connection");
    let mut conn = other.acquire().await.expect("conn");
    sqlx::query("begin immediate")
        .execute(&mut *conn)
        .await
        .expect("lock");
    let r = d.scan().await;
    // The scan works in a database file of its own, which the lock does not touch.
    assert!(r.complete, "the scan itself worked");
    let m = reqwest::get(d.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        m.contains("miaudit_scan_runs_total{outcome=\"failed\"} 1"),
        "{m}"
    );
    assert!(!m.contains("miaudit_store_errors_total 0"));
    // Reads keep answering while the lock is held (WAL).
    let (status, v) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{gone}"))).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("confirmed")));
    sqlx::query("rollback")
        .execute(&mut *conn)
        .await
        .expect("unlock");
    drop(conn);
    other.close().await;
    // When the fault clears, the next scan records and nothing was lost.
    d.scan().await;
    let (_, v) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{gone}"))).await;
    assert_eq!(v["state"], "confirmed");
    assert_eq!(v["history"].as_array().expect("history").len(), 1);
    let (_, scans) = get_json(&d.url("/api/v1/scans")).await;
    let outcomes: Vec<&str> = scans["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|s| s["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "completed").count(),
        2,
        "{outcomes:?}"
    );
    d.stop().await;
}

/// Unmounts the test's small file system even when the test fails.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn mount(args: &[&str]) {
    let st = std::process::Command::new("mount")
        .args(args)
        .status()
        .expect("mount runs");
    assert!(
        st.success(),
        "mount {args:?} failed (the test needs root, as CI has)"
    );
}

#[tokio::test]
async fn a_full_disk_fails_the_record_cleanly_and_loses_nothing() {
    let (mut w, sub) = world();
    let gone_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/gone");
    let gone = w.add_system_assigned(&gone_id);
    w.delete_resource(&gone_id);
    let env = TestEnv::start(w, SimConfig::default()).await;
    let fs = env.dir.path().join("smallfs");
    std::fs::create_dir(&fs).expect("mount point");
    let fs_str = fs.to_str().expect("utf-8").to_owned();
    // Room for a new database (its migrations' write-ahead log, ~300 KB before the checkpoint at open)
    // and the first small scan, not for the grown tenant's working rows. (512 KiB until migrations 0009-0014
    // made a new database larger than the first scan's room.)
    mount(&["-t", "tmpfs", "-o", "size=768k", "tmpfs", &fs_str]);
    let _guard = Mount(fs.clone());
    let extra = format!(
        "[database]\nurl = \"sqlite://{fs_str}/miaudit.db\"\n[lifecycle]\nconfirm_after = \"0s\"\n"
    );
    let text = std::fs::read_to_string(&env.config_path).expect("config");
    let without_db: String = text.split("[database]").next().expect("head").to_owned();
    std::fs::write(&env.config_path, without_db).expect("config");
    let d = env.daemon(&extra).await;
    let first = d.scan().await;
    let metric = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The tenant grows beyond what the disk holds.
    env.sim.with_world(|w| {
        for i in 0..1500 {
            w.add_system_assigned(&World::resource_id(
                &sub,
                "rg-big",
                "Microsoft.Storage",
                &format!("storageAccounts/st{i}"),
            ));
        }
    });
    let r = d.scan().await;
    // The working rows no longer fit: the scan stops and says so, its inventory not taken as complete.
    assert!(
        !r.complete
            && r.tenants
                .iter()
                .all(|t| t.staging_failed && !t.inventory_complete)
    );
    let m = reqwest::get(d.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    // The working file is beside the database, on the same full disk: the scan stops there. Recording
    // that incomplete scan may fit or fail; either way the store error is counted and nothing moves.
    let failed_on_full_disk = metric(&m, "miaudit_scan_runs_total{outcome=\"failed\"}");
    assert_eq!(
        failed_on_full_disk + metric(&m, "miaudit_scan_runs_total{outcome=\"incomplete\"}"),
        1,
        "disk full: {m}"
    );
    assert!(metric(&m, "miaudit_store_errors_total") >= 1, "{m}");
    let (status, v) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{gone}"))).await;
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("confirmed")),
        "reads answer on a full disk"
    );
    // The fault clears: the next scan records, the first scan's findings and history are intact.
    mount(&["-o", "remount,size=64m", &fs_str]);
    let last = d.scan().await;
    let (_, s) = get_json(&d.url(&format!("/api/v1/scans/{}", last.scan_id))).await;
    assert_eq!(s["outcome"], "completed", "{s}");
    let (_, v) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{gone}"))).await;
    assert_eq!(
        (v["state"].as_str(), v["episode"].as_u64()),
        (Some("confirmed"), Some(1))
    );
    assert_eq!(v["history"].as_array().expect("history").len(), 1);
    assert_eq!(v["history"][0]["scan_id"], first.scan_id.as_str());
    let m = reqwest::get(d.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(
        metric(
            &m,
            &format!("miaudit_managed_identities{{tenant_id=\"{TENANT}\",verdict=\"healthy\"}}")
        ),
        1500,
        "the grown tenant is recorded"
    );
    assert_eq!(
        metric(&m, "miaudit_scan_runs_total{outcome=\"failed\"}"),
        failed_on_full_disk,
        "the scan after the fault cleared did not fail"
    );
    d.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_read_only_database_keeps_serving_reads_and_counts_failed_records() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncBufReadExt;
    let (mut w, sub) = world();
    let gone_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/gone");
    let gone = w.add_system_assigned(&gone_id);
    w.delete_resource(&gone_id);
    let env = TestEnv::start(w, SimConfig::default()).await;
    // A recorded scan first, written as root.
    let d = env.daemon("[lifecycle]\nconfirm_after = \"0s\"\n[http]\nlisten = \"127.0.0.1:0\"\napi_token = \"t\"\n").await;
    let first = d.scan().await;
    d.stop().await;
    let dir = env.dir.path();
    let daemon_toml = dir.join("daemon.toml");
    let text = std::fs::read_to_string(&daemon_toml)
        .expect("config")
        .replace("scan_on_start = false", "scan_on_start = true");
    std::fs::write(&daemon_toml, text).expect("config");
    // The binary, the config and the database readable by an unprivileged user, nothing writable.
    let bin = dir.join("miaudit");
    std::fs::copy(env!("CARGO_BIN_EXE_miaudit"), &bin).expect("copy binary");
    let set = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    for entry in std::fs::read_dir(dir).expect("dir") {
        let p = entry.expect("entry").path();
        if p.is_file() {
            set(&p, if p == bin { 0o755 } else { 0o444 });
        }
    }
    set(dir, 0o555);
    let mut child = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(["--config", daemon_toml.to_str().expect("utf-8"), "serve"])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("setpriv runs (util-linux)");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut addr = None;
    let mut said_read_only = false;
    let mut early = Vec::new();
    while let Ok(Some(l)) = lines.next_line().await {
        early.push(l.clone());
        said_read_only |= l.contains("cannot be written");
        if let Some(rest) = l.split("serving http://").nth(1) {
            addr = rest.split('/').next().map(str::to_owned);
            break;
        }
    }
    let log = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            all.push(l);
        }
        all
    });
    let base = format!(
        "http://{}",
        addr.unwrap_or_else(|| panic!("the daemon serves a read-only database: {early:?}"))
    );
    assert!(
        said_read_only,
        "one clear line says the database is read-only"
    );
    // The start-up scan runs and fails to record.
    let mut failed = 0;
    for _ in 0..100 {
        let m = reqwest::get(format!("{base}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        failed = m
            .lines()
            .find(|l| l.starts_with("miaudit_scan_runs_total{outcome=\"failed\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if failed > 0 {
            assert!(!m.contains("miaudit_store_errors_total 0"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed, 1);
    let (status, v) = get_json(&format!("{base}/api/v1/findings/{TENANT}/{gone}")).await;
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("confirmed")),
        "reads keep answering"
    );
    let (status, _) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 200);
    let pid = child.id().expect("pid");
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let st = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert_eq!(st.code(), Some(0), "no crash: {:?}", log.await.ok());
    // The fault clears: writable again, the next scan records, nothing was lost.
    set(dir, 0o755);
    for entry in std::fs::read_dir(dir).expect("dir") {
        let p = entry.expect("entry").path();
        if p.is_file() {
            set(&p, 0o644);
        }
    }
    let d = env.daemon("[lifecycle]\nconfirm_after = \"0s\"\n").await;
    d.scan().await;
    let (_, v) = get_json(&d.url(&format!("/api/v1/findings/{TENANT}/{gone}"))).await;
    assert_eq!(v["state"], "confirmed");
    assert_eq!(v["history"][0]["scan_id"], first.scan_id.as_str());
    let (_, scans) = get_json(&d.url("/api/v1/scans")).await;
    let completed = scans["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|s| s["outcome"] == "completed")
        .count();
    assert_eq!(completed, 2);
    d.stop().await;
}
