//! The command line: `miaudit [--config FILE] <command>`.
//!
//! Exit codes (README, "Commands and exit codes"): 0 completed, 1 orphans found with `--fail-on-orphans`, 2 usage or
//! configuration error (one clear line per problem on stderr), 3 scan incomplete. An incomplete scan
//! exits 3 even when it also found orphans: its "all clear" elsewhere cannot be trusted.

use crate::config::{Settings, process_env};
use crate::domain::Trigger;
use crate::report::ScanReport;
use crate::report::{render_json, render_table};
use crate::scan::Scanner;
use crate::store::Store;
use clap::{Parser, Subcommand, ValueEnum};
use miaudit_sim::{SimConfig, SimHandle, model::World};
use std::path::PathBuf;
use std::process::ExitCode;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ORPHANS: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_INCOMPLETE: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "miaudit",
    version,
    about = "Finds orphaned managed identities in Microsoft Entra ID tenants"
)]
pub struct Cli {
    /// Configuration file (TOML). Every key can be overridden by MIAUDIT_<SECTION>__<KEY>.
    #[arg(long, global = true, env = "MIAUDIT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log lines on stderr as text or JSON (one object a line, for collectors); overrides [log] format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Whether logs are JSON: the flag, else the configuration.
fn log_json(flag: Option<LogFormat>, settings: &Settings) -> bool {
    flag.map_or(settings.log.json, |f| f == LogFormat::Json)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Audit the configured tenants now, record the result and print the report.
    Scan {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
        /// List healthy identities too.
        #[arg(long)]
        all: bool,
        /// Exit 1 when orphans are found.
        #[arg(long)]
        fail_on_orphans: bool,
    },
    /// The daemon: scans on the schedule, serves metrics and the JSON API.
    Serve,
    /// The support-ticket list of open orphans (suspected, confirmed, acknowledged) on stdout.
    Export {
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only these states (comma-separated: suspected, confirmed, acknowledged, resolved).
        #[arg(long)]
        state: Option<String>,
    },
    /// Serve a simulated tenant (token endpoint, Graph, ARM, Resource Graph) until stopped; prints its
    /// URL and a configuration for it.
    Simulate {
        #[command(flatten)]
        sim: SimArgs,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Benchmark full scans of simulated tenants of several sizes (simulator in a separate process).
    Bench {
        /// Tenant sizes, comma-separated.
        #[arg(long, default_value = "1000,10000,100000")]
        sizes: String,
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        #[arg(long, default_value_t = 20)]
        per_item_us: u64,
        /// Scans with the opt-in Graph delta inventory (`[scan] graph_delta`): the repeat scan then
        /// reads only what changed.
        #[arg(long)]
        graph_delta: bool,
    },
    /// (internal) One measured scan against a running simulator, as JSON on stdout.
    #[command(hide = true)]
    BenchOne {
        #[arg(long)]
        url: String,
        #[arg(long)]
        db: String,
        #[arg(long)]
        graph_delta: bool,
    },
    /// The daemon against a built-in simulated tenant that changes every few minutes (no Azure
    /// account needed). With --once: one scan, report on stdout.
    Demo {
        /// Managed identities in the simulated tenant.
        #[arg(long, default_value_t = 1000)]
        identities: usize,
        /// Seed of the simulated tenant.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Orphans in the simulated tenant (default: 0.5 % of the identities).
        #[arg(long)]
        orphans: Option<usize>,
        /// Scan once, print the report and exit.
        #[arg(long)]
        once: bool,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
        /// Address of the HTTP server (metrics, API).
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: std::net::SocketAddr,
        /// Seconds between changes of the simulated tenant.
        #[arg(long, default_value_t = 120)]
        churn_every: u64,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Managed identities in the simulated tenant.
    #[arg(long, default_value_t = 1000)]
    pub identities: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Orphans (default 0.5 % of the identities).
    #[arg(long)]
    pub orphans: Option<usize>,
    /// Latency of every simulated answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra latency per item of a Graph or Resource Graph page, in microseconds.
    #[arg(long, default_value_t = 0)]
    pub per_item_us: u64,
}

impl SimArgs {
    fn world(&self) -> World {
        match self.orphans {
            Some(n) => World::generate_with_orphans(self.seed, self.identities, n),
            None => World::generate(self.seed, self.identities),
        }
    }

    fn config(&self) -> SimConfig {
        SimConfig {
            latency: std::time::Duration::from_millis(self.latency_ms),
            per_item: std::time::Duration::from_micros(self.per_item_us),
            ..SimConfig::default()
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

fn config_error(lines: &[String]) -> ExitCode {
    for l in lines {
        eprintln!("miaudit: configuration error: {l}");
    }
    ExitCode::from(EXIT_CONFIG)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("miaudit: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_INCOMPLETE);
        }
    };
    runtime.block_on(run(cli))
}

fn load(config: Option<&std::path::Path>) -> Result<Settings, ExitCode> {
    Settings::load(config, &process_env()).map_err(|e| config_error(&e.0))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Scan {
            output,
            all,
            fail_on_orphans,
        } => {
            let settings = match load(cli.config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            if let Err(e) = settings.check_scan_ready() {
                return config_error(&e.0);
            }
            crate::telemetry::init(&settings.log.level, log_json(cli.log_format, &settings));
            scan_and_print(&settings, output, all, fail_on_orphans, Trigger::Cli).await
        }
        Command::Serve => {
            let settings = match load(cli.config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let json = log_json(cli.log_format, &settings);
            serve(settings, json).await
        }
        Command::Export {
            format,
            tenant,
            state,
        } => {
            let settings = match load(cli.config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            export(&settings, format, tenant.as_deref(), state.as_deref()).await
        }
        Command::Simulate { sim, listen } => simulate(&sim, &listen).await,
        Command::Bench {
            sizes,
            latency_ms,
            per_item_us,
            graph_delta,
        } => bench(&sizes, latency_ms, per_item_us, graph_delta).await,
        Command::BenchOne {
            url,
            db,
            graph_delta,
        } => bench_one(&url, &db, graph_delta).await,
        Command::Demo {
            identities,
            seed,
            orphans,
            once,
            output,
            listen,
            churn_every,
        } => {
            let world = match orphans {
                Some(n) => World::generate_with_orphans(seed, identities, n),
                None => World::generate(seed, identities),
            };
            let json = cli.log_format == Some(LogFormat::Json);
            demo(world, seed, once, output, listen, churn_every, json).await
        }
    }
}

async fn simulate(sim: &SimArgs, listen: &str) -> ExitCode {
    let handle = match SimHandle::start_on(listen, sim.world(), sim.config()).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("miaudit: cannot start the simulator on {listen}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    println!("listening {}", handle.base_url());
    eprintln!(
        "# a configuration for this simulated tenant:\n{}",
        handle.config_toml("sqlite://miaudit-sim.db")
    );
    crate::app::shutdown_signal().await;
    ExitCode::from(EXIT_OK)
}

/// The configuration of a bench scan against the simulator at `url`.
fn bench_settings(url: &str, db: &str, graph_delta: bool) -> Result<Settings, Vec<String>> {
    use miaudit_sim::model::{SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_TENANT_ID};
    let toml = format!(
        "[azure]\nauthority_host = \"{url}\"\ngraph_endpoint = \"{url}\"\narm_endpoint = \"{url}\"\n\
         [auth]\nclient_id = \"{SIM_CLIENT_ID}\"\nclient_secret = \"{SIM_CLIENT_SECRET}\"\n\
         [[tenants]]\nid = \"{SIM_TENANT_ID}\"\n[database]\nurl = \"{db}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[schedule]\ncron = \"0 0 0 1 1 *\"\nscan_on_start = false\n\
         [scan]\ngraph_delta = {graph_delta}\n"
    );
    Settings::from_toml_str(&toml, &Default::default()).map_err(|e| e.0)
}

async fn bench_one(url: &str, db: &str, graph_delta: bool) -> ExitCode {
    let settings = match bench_settings(url, db, graph_delta) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    match crate::bench::measure_one(&settings).await {
        Ok(m) => {
            println!("{}", serde_json::to_string(&m).unwrap_or_default());
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            eprintln!("miaudit: bench scan failed: {e:#}");
            ExitCode::from(EXIT_INCOMPLETE)
        }
    }
}

async fn bench(sizes: &str, latency_ms: u64, per_item_us: u64, graph_delta: bool) -> ExitCode {
    use tokio::io::AsyncBufReadExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("miaudit: {e}");
            return ExitCode::from(EXIT_INCOMPLETE);
        }
    };
    let costs = crate::bench::Costs {
        latency: std::time::Duration::from_millis(latency_ms),
        per_item: std::time::Duration::from_micros(per_item_us),
        arm_concurrency: 8,
    };
    println!(
        "simulated latency {latency_ms} ms per request + {per_item_us} us per page item; Resource Graph quota 15 / 5 s\n"
    );
    println!("{}", crate::bench::HEADER);
    for size in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        let mut sim = match tokio::process::Command::new(&exe)
            .args([
                "simulate",
                "--identities",
                &size.to_string(),
                "--latency-ms",
                &latency_ms.to_string(),
                "--per-item-us",
                &per_item_us.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("miaudit: cannot start the simulator: {e}");
                return ExitCode::from(EXIT_INCOMPLETE);
            }
        };
        let mut lines = tokio::io::BufReader::new(sim.stdout.take().expect("piped")).lines();
        let url = match lines.next_line().await {
            Ok(Some(l)) => l.trim_start_matches("listening ").to_owned(),
            _ => {
                eprintln!("miaudit: the simulator did not start");
                return ExitCode::from(EXIT_INCOMPLETE);
            }
        };
        let db_dir =
            std::env::temp_dir().join(format!("miaudit-bench-{}-{size}", std::process::id()));
        let _ = std::fs::create_dir_all(&db_dir);
        let db = format!("sqlite://{}", db_dir.join("bench.db").display());
        let out = tokio::process::Command::new(&exe)
            .args(["bench-one", "--url", &url, "--db", &db])
            .args(graph_delta.then_some("--graph-delta"))
            .output()
            .await;
        let _ = sim.start_kill();
        let _ = std::fs::remove_dir_all(&db_dir);
        match out
            .ok()
            .and_then(|o| serde_json::from_slice::<crate::bench::Measured>(&o.stdout).ok())
        {
            Some(m) => println!("{}", crate::bench::row(size, &m, costs)),
            None => println!("| {size} | failed | | | | | | | | | | | |"),
        }
    }
    ExitCode::from(EXIT_OK)
}

async fn serve(settings: Settings, json: bool) -> ExitCode {
    if let Err(e) = settings.check_scan_ready() {
        return config_error(&e.0);
    }
    if let Err(e) = crate::scheduler::validate_cron(&settings.schedule.cron) {
        return config_error(&[format!(
            "schedule.cron: {:?} does not parse: {e}",
            settings.schedule.cron
        )]);
    }
    crate::telemetry::init(&settings.log.level, json);
    let app = match crate::app::App::build(settings).await {
        Ok(a) => a,
        Err(e) => return config_error(&[format!("{e:#}")]),
    };
    let addr = app.http_addr();
    // With JSON logs, stderr stays one JSON object a line.
    if json {
        tracing::info!(%addr, "serving http://{addr}/metrics and http://{addr}/api/v1/findings");
    } else {
        eprintln!("miaudit: serving http://{addr}/metrics and http://{addr}/api/v1/findings");
    }
    match app.run_until_stopped(crate::app::shutdown_signal()).await {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("miaudit: {e:#}");
            ExitCode::from(EXIT_INCOMPLETE)
        }
    }
}

async fn export(
    settings: &Settings,
    format: ExportFormat,
    tenant: Option<&str>,
    state: Option<&str>,
) -> ExitCode {
    let mut states = Vec::new();
    for s in state
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match crate::lifecycle::State::parse(s) {
            Some(st) => states.push(st),
            None => {
                return config_error(&[format!(
                    "--state: {s:?} is not one of suspected, confirmed, acknowledged, resolved, unverified"
                )]);
            }
        }
    }
    let store = match open_store(settings).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let fmt = match format {
        ExportFormat::Csv => crate::export::Format::Csv,
        ExportFormat::Json => crate::export::Format::Json,
    };
    match crate::export::load_rows(
        &store,
        tenant.map(str::to_ascii_lowercase).as_deref(),
        &states,
    )
    .await
    {
        Ok(rows) => {
            print!("{}", crate::export::render(&rows, fmt));
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            eprintln!("miaudit: export failed: {e}");
            ExitCode::from(EXIT_INCOMPLETE)
        }
    }
}

/// Opens the configured database; a failure is a configuration error (exit 2) naming the key.
async fn open_store(settings: &Settings) -> Result<Store, ExitCode> {
    Store::connect(&settings.database.url).await.map_err(|e| {
        config_error(&[format!(
            "database.url: cannot open {}: {e}",
            settings.database.url
        )])
    })
}

/// Runs one scan, records it, prints it; returns the exit code.
pub async fn scan_and_print(
    settings: &Settings,
    output: Output,
    all: bool,
    fail_on_orphans: bool,
    trigger: Trigger,
) -> ExitCode {
    let store = match open_store(settings).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let scanner = match Scanner::new(settings) {
        Ok(s) => s,
        Err(e) => return config_error(&[format!("{e:#}")]),
    };
    let crate::scan::Scanned { mut report, work } = scanner
        .run_as(
            uuid::Uuid::new_v4().to_string(),
            &settings.tenant_ids(),
            trigger,
            Some(&store),
        )
        .await;
    let recorded = store
        .record_scan_from(&report, work.as_ref(), settings.lifecycle.confirm_after)
        .await;
    // A report scanned for a store names only the non-healthy identities; `--all` reads every verdict
    // of the recorded scan back.
    if all
        && work.is_some()
        && let Ok(_) = &recorded
    {
        match store.load_verdicts(&report.scan_id).await {
            Ok(f) => report.findings = f,
            Err(e) => eprintln!("miaudit: could not read the scan's verdicts back: {e}"),
        }
    }
    if let Err(e) = recorded {
        eprintln!("miaudit: could not record the scan: {e}");
        print_report(&report, output, all);
        return ExitCode::from(EXIT_INCOMPLETE);
    }
    print_report(&report, output, all);
    ExitCode::from(exit_code(&report, fail_on_orphans))
}

pub fn exit_code(report: &ScanReport, fail_on_orphans: bool) -> u8 {
    if !report.complete {
        EXIT_INCOMPLETE
    } else if fail_on_orphans && report.summary.orphaned > 0 {
        EXIT_ORPHANS
    } else {
        EXIT_OK
    }
}

fn print_report(report: &ScanReport, output: Output, all: bool) {
    match output {
        Output::Json => println!("{}", render_json(report, all)),
        Output::Table => print!("{}", render_table(report, all)),
    }
}

async fn demo(
    world: World,
    seed: u64,
    once: bool,
    output: Output,
    listen: std::net::SocketAddr,
    churn_every: u64,
    json: bool,
) -> ExitCode {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_settings_are_built_in_memory() {
        let s = bench_settings("http://127.0.0.1:1", "sqlite://bench.db", true).expect("valid");
        assert!(s.scan.graph_delta);
        assert_eq!(
            s.tenant_ids(),
            [miaudit_sim::model::SIM_TENANT_ID.to_owned()]
        );
    }
}
