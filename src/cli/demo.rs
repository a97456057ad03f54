//! `miaudit demo`: the daemon (or, with `--once`, one scan) against a built-in simulated tenant of the
//! crate `miaudit-sim`, which changes every few minutes: miaudit to try without an Azure account. The
//! default command of the container image. Only in builds with the `simulator` feature.

use super::{EXIT_INCOMPLETE, EXIT_OK, Output, config_error, scan_and_print};
use crate::config::Settings;
use crate::domain::Trigger;
use miaudit_sim::{SimConfig, SimHandle, model::World};
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
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("miaudit: cannot create {}: {e}", dir.display());
        return ExitCode::from(EXIT_INCOMPLETE);
    }
    let db = format!("sqlite://{}", dir.join("demo.db").display());
    // A short confirmation window and a scan every minute, so findings visibly move.
    let toml = format!(
        "{}\n[http]\nlisten = \"{listen}\"\napi_token = \"demo-token\"\n\n[schedule]\ncron = \"0 * * * * *\"\nscan_on_start = true\n\n[lifecycle]\nconfirm_after = \"2m\"\n",
        sim.config_toml(&db)
    );
    // Built in memory, checked as a configuration file is; the environment's overrides do not apply.
    let settings = match Settings::from_toml_str(&toml, &Default::default()) {
        Ok(s) => s,
        Err(e) => return config_error(&e.0),
    };
    eprintln!(
        "miaudit demo: a simulated tenant of {identities} managed identities served at {} (seed {seed})",
        sim.base_url()
    );
    if once {
        let code = scan_and_print(&settings, output, false, false, Trigger::Cli).await;
        eprintln!(
            "miaudit demo: database at {}",
            dir.join("demo.db").display()
        );
        return code;
    }
    let app = match crate::app::App::build(settings).await {
        Ok(a) => a,
        Err(e) => return config_error(&[format!("{e:#}")]),
    };
    let addr = app.http_addr();
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
    eprintln!("  database  {}", dir.join("demo.db").display());
    let churn = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(churn_every.max(1)));
        tick.tick().await;
        loop {
            tick.tick().await;
            for e in sim.with_world(World::churn) {
                eprintln!("miaudit demo: the simulated tenant changed: {e}");
            }
        }
    });
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
