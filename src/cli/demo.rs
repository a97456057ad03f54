//! `miaudit demo`: the daemon (or, with `--once`, one scan) against a built-in simulated tenant of the
//! crate `miaudit-sim`, which changes every few minutes: miaudit to try without an Azure account. The
//! default command of the container image. Only in builds with the `simulator` feature.

use super::{EXIT_INCOMPLETE, EXIT_OK, Output, config_error, scan_and_print};
use crate::config::Settings;
use crate::domain::Trigger;
use miaudit_sim::{SimConfig, SimHandle, model::World};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Managed identities in the simulated tenant.
    #[arg(long, default_value_t = 1000)]
    pub identities: usize,
    /// Seed of the simulated tenant.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Orphans in the simulated tenant (default: 0.5 % of the identities).
    #[arg(long)]
    pub orphans: Option<usize>,
    /// Scan once, print the report and exit.
    #[arg(long)]
    pub once: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
    /// Address of the HTTP server (metrics, API).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Seconds between changes of the simulated tenant.
    #[arg(long, default_value_t = 120)]
    pub churn_every: u64,
}

/// Runs `miaudit demo`; `json`: log lines as JSON.
pub(super) async fn run(args: DemoArgs, json: bool) -> ExitCode {
    let DemoArgs {
        identities,
        seed,
        orphans,
        once,
        output,
        listen,
        churn_every,
    } = args;
    let world = match orphans {
        Some(n) => World::generate_with_orphans(seed, identities, n),
        None => World::generate(seed, identities),
    };
    crate::telemetry::init(if once { "warn" } else { "info" }, json);
    let identities = world
        .principals
        .iter()
        .filter(|p| p.sp_type == "ManagedIdentity")
        .count();
    let sim = match SimHandle::start(world, SimConfig::default()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("miaudit: cannot start the simulator: {e}");
            return ExitCode::from(EXIT_INCOMPLETE);
        }
    };
    let dir = std::env::temp_dir().join(format!("miaudit-demo-{}", std::process::id()));
    let settings = match demo_settings(&sim, &dir, listen) {
        Ok(s) => s,
        Err(code) => return code,
    };
    eprintln!(
        "miaudit demo: a simulated tenant of {identities} managed identities served at {} (seed {seed})",
        sim.base_url()
    );
    let db_file = dir.join("demo.db");
    if once {
        let code = scan_and_print(&settings, output, false, false, Trigger::Cli).await;
        eprintln!("miaudit demo: database at {}", db_file.display());
        return code;
    }
    serve(settings, sim, churn_every, &db_file).await
}

/// The demo's settings: the simulator's endpoints and credentials, a database in `dir` (created), the
/// API on `listen`, and a short confirmation window and a scan every minute, so findings visibly move.
fn demo_settings(sim: &SimHandle, dir: &Path, listen: SocketAddr) -> Result<Settings, ExitCode> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("miaudit: cannot create {}: {e}", dir.display());
        return Err(ExitCode::from(EXIT_INCOMPLETE));
    }
    let db = format!("sqlite://{}", dir.join("demo.db").display());
    let toml = format!(
        "{}\n[http]\nlisten = \"{listen}\"\napi_token = \"demo-token\"\n\n[schedule]\ncron = \"0 * * * * *\"\nscan_on_start = true\n\n[lifecycle]\nconfirm_after = \"2m\"\n",
        sim.config_toml(&db)
    );
    // Built in memory, checked as a configuration file is; the environment's overrides do not apply.
    Settings::from_toml_str(&toml, &Default::default()).map_err(|e| config_error(&e.0))
}

/// The daemon against the simulated tenant, which changes every `churn_every` seconds, until a signal
/// stops it.
async fn serve(settings: Settings, sim: SimHandle, churn_every: u64, db_file: &Path) -> ExitCode {
    let app = match crate::app::App::build(settings).await {
        Ok(a) => a,
        Err(e) => return config_error(&[format!("{e:#}")]),
    };
    print_endpoints(app.http_addr(), churn_every, db_file);
    let churn = tokio::spawn(churn(sim, churn_every));
    let res = app.run_until_stopped(crate::app::shutdown_signal()).await;
    churn.abort();
    match res {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("miaudit: {e:#}");
            ExitCode::from(EXIT_INCOMPLETE)
        }
    }
}

/// Where to look while the demo runs.
fn print_endpoints(addr: SocketAddr, churn_every: u64, db_file: &Path) {
    eprintln!(
        "miaudit demo: scans every minute; findings confirm after 2 minutes; the tenant changes every {churn_every} s"
    );
    eprintln!("  metrics   http://{addr}/metrics");
    eprintln!("  findings  http://{addr}/api/v1/findings");
    eprintln!("  scans     http://{addr}/api/v1/scans");
    eprintln!("  export    http://{addr}/api/v1/export?format=csv");
    eprintln!(
        "  scan now  curl -X POST -H 'Authorization: Bearer demo-token' http://{addr}/api/v1/scans"
    );
    eprintln!("  database  {}", db_file.display());
}

/// Changes the simulated tenant every `every` seconds (at least one), for ever.
async fn churn(sim: SimHandle, every: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(every.max(1)));
    tick.tick().await;
    loop {
        tick.tick().await;
        for e in sim.with_world(World::churn) {
            eprintln!("miaudit demo: the simulated tenant changed: {e}");
        }
    }
}
