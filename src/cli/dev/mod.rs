//! Developer tools, not the product: `miaudit simulate` (the simulated tenant of the crate `miaudit-sim`
//! on its own, for a scan or a daemon pointed at it) and `miaudit bench` (full scans of simulated tenants
//! measured against their lower bound; [`bench`]). Only in builds with the `simulator` feature.
//!
//! The bench is here rather than in `miaudit-sim` because it measures the product itself (its
//! `App`, `Scanner` and `Store`, and the `miaudit` binary it runs in fresh processes), and the simulator
//! crate must not depend on the product.

pub mod bench;

use super::{EXIT_CONFIG, EXIT_INCOMPLETE, EXIT_OK, config_error};
use crate::config::Settings;
use miaudit_sim::{SimConfig, SimHandle, model::World};
use std::process::ExitCode;

/// The developer commands, flattened into the command line after the product's (see [`super::Command`]).
#[derive(clap::Subcommand, Debug)]
pub enum DevCommand {
    /// Developer tool: serve a simulated tenant (token endpoint, Graph, ARM, Resource Graph) until stopped; prints its
    /// URL and a configuration for it.
    Simulate {
        #[command(flatten)]
        sim: SimArgs,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Developer tool: benchmark full scans of simulated tenants of several sizes (simulator in a separate process).
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
            latencies: miaudit_sim::Latencies {
                graph_per_item: std::time::Duration::from_micros(self.per_item_us),
                resource_graph_per_row: std::time::Duration::from_micros(self.per_item_us),
                ..miaudit_sim::Latencies::ZERO
            },
            ..SimConfig::default()
        }
    }
}

/// Runs a developer command.
pub(super) async fn run(command: DevCommand) -> ExitCode {
    match command {
        DevCommand::Simulate { sim, listen } => simulate(&sim, &listen).await,
        DevCommand::Bench {
            sizes,
            latency_ms,
            per_item_us,
            graph_delta,
        } => bench(&sizes, latency_ms, per_item_us, graph_delta).await,
        DevCommand::BenchOne {
            url,
            db,
            graph_delta,
        } => bench_one(&url, &db, graph_delta).await,
    }
}

/// `simulate`: serves the simulated tenant until stopped.
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

/// The configuration of a bench scan against the simulator at `url` (the simulator's own text, plus
/// what the bench sets), built in memory.
fn bench_settings(url: &str, db: &str, graph_delta: bool) -> Result<Settings, Vec<String>> {
    let toml = format!(
        "{}\n[http]\nlisten = \"127.0.0.1:0\"\n\n[schedule]\ncron = \"0 0 0 1 1 *\"\nscan_on_start = false\n\n\
         [scan]\ngraph_delta = {graph_delta}\n",
        miaudit_sim::config_toml_at(url, db)
    );
    Settings::from_toml_str(&toml, &Default::default()).map_err(|e| e.0)
}

/// `bench-one`: one measured scan, as JSON on stdout (run by `bench` in a process of its own).
async fn bench_one(url: &str, db: &str, graph_delta: bool) -> ExitCode {
    let settings = match bench_settings(url, db, graph_delta) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    match bench::measure_one(&settings).await {
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

/// `bench`: per size, a simulator and a measured scan, each in a process of its own; a Markdown table.
async fn bench(sizes: &str, latency_ms: u64, per_item_us: u64, graph_delta: bool) -> ExitCode {
    use tokio::io::AsyncBufReadExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("miaudit: {e}");
            return ExitCode::from(EXIT_INCOMPLETE);
        }
    };
    let costs = bench::Costs {
        latency: std::time::Duration::from_millis(latency_ms),
        per_item: std::time::Duration::from_micros(per_item_us),
        arm_concurrency: 8,
    };
    println!(
        "simulated latency {latency_ms} ms per request + {per_item_us} us per page item; Resource Graph quota 15 / 5 s\n"
    );
    println!("{}", bench::HEADER);
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
            .and_then(|o| serde_json::from_slice::<bench::Measured>(&o.stdout).ok())
        {
            Some(m) => println!("{}", bench::row(size, &m, costs)),
            None => println!("| {size} | failed | | | | | | | | | | | |"),
        }
    }
    ExitCode::from(EXIT_OK)
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
