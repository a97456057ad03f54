//! Shared set-up: a simulator on a random loopback port, a temporary database and config pointing at it.

use miaudit::config::Settings;
use miaudit::domain::{Finding, Trigger};
use miaudit::report::ScanReport;
use miaudit::scan::Scanner;
use miaudit_sim::model::World;
use miaudit_sim::{SimConfig, SimHandle};
use std::path::PathBuf;
use std::time::Duration;

pub const TENANT: &str = miaudit_sim::model::SIM_TENANT_ID;

pub struct TestEnv {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

/// Fast retries for tests: the policy is the same, only the waits are short.
pub const FAST_RETRIES: &str = "\n[scan]\nmax_retries = 3\nretry_base_delay = \"5ms\"\nretry_max_delay = \"20ms\"\nrequest_timeout = \"5s\"\n";

impl TestEnv {
    pub async fn start(world: World, config: SimConfig) -> Self {
        Self::start_with(world, config, FAST_RETRIES).await
    }

    pub async fn start_with(world: World, config: SimConfig, extra_toml: &str) -> Self {
        let sim = SimHandle::start(world, config)
            .await
            .expect("simulator starts");
        assert!(
            sim.base_url().starts_with("http://127.0.0.1:"),
            "tests only talk to loopback"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite://{}", dir.path().join("miaudit.db").display());
        let config_path = dir.path().join("miaudit.toml");
        std::fs::write(&config_path, sim.config_toml(&db) + extra_toml).expect("config written");
        Self {
            sim,
            dir,
            config_path,
        }
    }

    pub fn settings(&self) -> Settings {
        Settings::load(Some(&self.config_path), &Default::default()).expect("valid settings")
    }

    pub async fn scan(&self) -> ScanReport {
        let settings = self.settings();
        let scanner = Scanner::new(&settings).expect("scanner");
        scanner.run(&settings.tenant_ids(), Trigger::Cli).await
    }
}

/// Runs a library scan of `env` in a task of its own, so that a panic or a stall becomes an `Err` that
/// says which, instead of a test that dies without context or never ends.
pub async fn scan_guarded(env: &TestEnv, limit: Duration) -> Result<ScanReport, String> {
    let settings = env.settings();
    let task = tokio::spawn(async move {
        let scanner = Scanner::new(&settings).expect("scanner");
        scanner.run(&settings.tenant_ids(), Trigger::Cli).await
    });
    let abort = task.abort_handle();
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!("the scan panicked: {msg}"))
        }
        Ok(Err(e)) => Err(format!("the scan task failed: {e}")),
        Err(_) => {
            abort.abort();
            Err(format!("the scan did not finish within {limit:?}"))
        }
    }
}

pub fn finding<'a>(report: &'a ScanReport, object_id: &str) -> &'a Finding {
    report
        .findings
        .iter()
        .find(|f| f.object_id == miaudit::domain::ObjectId::new(object_id))
        .unwrap_or_else(|| panic!("no finding for {object_id}"))
}

/// (verdict, reason) of one identity, as strings for readable assertion failures.
pub fn outcome(report: &ScanReport, object_id: &str) -> (&'static str, &'static str) {
    let f = finding(report, object_id);
    (f.verdict.as_str(), f.reason.as_str())
}

/// A small world with one readable subscription.
pub fn world() -> (World, String) {
    let mut w = World::new(TENANT, 1);
    let sub = w.add_subscription("prod", miaudit_sim::model::SubAccess::Reader);
    (w, sub)
}

pub fn rid(sub: &str, rg: &str, ns: &str, path: &str) -> String {
    World::resource_id(sub, rg, ns, path)
}

/// A daemon (`App`) running in this process on a random loopback port.
pub struct Daemon {
    pub base: String,
    pub runner: std::sync::Arc<miaudit::scheduler::ScanRunner>,
    /// The daemon's database, read to fill a scan's report with what it recorded.
    database_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Daemon {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Runs a scan to its end, as the schedule would. The daemon's report holds no verdicts (they go
    /// from the scan's working file to the store); the non-healthy ones it recorded are read back into
    /// the report's findings, as `scan --output json` lists them.
    pub async fn scan(&self) -> ScanReport {
        let mut report = self
            .runner
            .run_now(Trigger::Manual)
            .await
            .expect("no scan running")
            .expect("scan finished");
        if let Ok(store) = miaudit::store::Store::connect(&self.database_url).await
            && let Ok(verdicts) = store.load_verdicts(&report.scan_id).await
        {
            report.findings = verdicts
                .into_iter()
                .filter(|f| f.verdict.as_str() != "healthy")
                .collect();
        }
        report
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("joined").expect("clean stop");
        }
    }
}

impl TestEnv {
    /// Starts the daemon with `extra` TOML (e.g. `[lifecycle]` or `[http] api_token`); no schedule runs
    /// during a test (a cron of 1 January) and no start-up scan unless `extra` asks.
    pub async fn daemon(&self, extra: &str) -> Daemon {
        let path = self.dir.path().join("daemon.toml");
        let base = std::fs::read_to_string(&self.config_path).expect("config");
        let mut text = format!("{base}\n{extra}\n");
        if !extra.contains("[http]") {
            text.push_str("\n[http]\nlisten = \"127.0.0.1:0\"\n");
        }
        if !extra.contains("[schedule]") {
            text.push_str("\n[schedule]\ncron = \"0 0 0 1 1 *\"\nscan_on_start = false\n");
        }
        std::fs::write(&path, text).expect("config");
        let settings = Settings::load(Some(&path), &Default::default()).expect("valid");
        let database_url = settings.database.url.clone();
        let app = miaudit::app::App::build(settings)
            .await
            .expect("app builds");
        let addr = app.http_addr();
        assert!(addr.ip().is_loopback());
        let runner = app.runner();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Daemon {
            base: format!("http://{addr}"),
            runner,
            database_url,
            stop: Some(tx),
            task: Some(task),
        }
    }
}

pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.expect("request");
    let status = r.status().as_u16();
    let body = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

pub const BIN: &str = env!("CARGO_BIN_EXE_miaudit");

/// What a run of the real binary printed and how it ended.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The real binary with `args`, an environment of PATH and `env` only (later entries win).
pub async fn miaudit(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("binary runs");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits until a spawned `miaudit serve` (stderr piped) says it is serving, then keeps draining its
/// stderr in the background so it never blocks on a full pipe.
pub async fn until_serving(mut child: tokio::process::Child) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        if l.contains("serving http://") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

impl Daemon {
    /// The daemon's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }
}
