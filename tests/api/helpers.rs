//! Shared set-up: a simulator on a random loopback port, a temporary database and config pointing at it.

use miaudit::config::Settings;
use miaudit::scan::{Finding, ScanReport, Scanner, Trigger};
use miaudit::simulator::model::World;
use miaudit::simulator::{SimConfig, SimHandle};
use std::path::PathBuf;

pub const TENANT: &str = miaudit::simulator::model::SIM_TENANT_ID;

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

pub fn finding<'a>(report: &'a ScanReport, object_id: &str) -> &'a Finding {
    report
        .findings
        .iter()
        .find(|f| f.object_id.eq_ignore_ascii_case(object_id))
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
    let sub = w.add_subscription("prod", miaudit::simulator::model::SubAccess::Reader);
    (w, sub)
}

pub fn rid(sub: &str, rg: &str, ns: &str, path: &str) -> String {
    World::resource_id(sub, rg, ns, path)
}
