//! Developer tools, not the product: `miaudit simulate` (the simulated tenant of the crate `miaudit-sim`
//! on its own, for a scan or a daemon pointed at it) and `miaudit bench` (the real binary, scans and the
//! daemon, measured against the simulator; [`bench`]). Only in builds with the `simulator` feature.
//!
//! The bench is here rather than in `miaudit-sim` because it measures the product itself (the `miaudit`
//! binary it runs in processes of their own, with configurations the product checks), and the simulator
//! crate must not depend on the product.

pub mod bench;

use super::{EXIT_CONFIG, EXIT_INCOMPLETE, EXIT_OK};
use miaudit_sim::{Latencies, SimConfig, SimHandle, model::World};
use std::process::ExitCode;
use std::time::Duration;

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
    /// Developer tool: benchmark the binary as users run it (scans, then the daemon) against simulated tenants of
    /// several sizes.
    Bench(bench::BenchArgs),
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
    /// Added to every simulated answer, in milliseconds, on top of the latencies per API.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    #[command(flatten)]
    pub latencies: LatencyArgs,
}

/// How long the simulated services take to answer. The defaults are [`Latencies::documented`]:
/// figures from published measurements where there are any (docs/azure-behaviour.md §11), so that
/// `simulate` and `bench` see the waits a scan of a real tenant sees. (The library's default, which the
/// tests use, is no latency at all: tests measure behaviour, not time, and stay fast.)
#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    /// Entra token endpoint, per token (ms).
    #[arg(long, default_value_t = ms(Latencies::documented().token))]
    pub token_ms: u64,
    /// Microsoft Graph, per request (ms).
    #[arg(long, default_value_t = ms(Latencies::documented().graph))]
    pub graph_ms: u64,
    /// Microsoft Graph, per service principal of a page (µs).
    #[arg(long, default_value_t = us(Latencies::documented().graph_per_item))]
    pub graph_per_item_us: u64,
    /// Resource Graph, per query (ms).
    #[arg(long, default_value_t = ms(Latencies::documented().resource_graph))]
    pub arg_ms: u64,
    /// Resource Graph, per row of a page (µs).
    #[arg(long, default_value_t = us(Latencies::documented().resource_graph_per_row))]
    pub arg_per_row_us: u64,
    /// ARM, per request (ms).
    #[arg(long, default_value_t = ms(Latencies::documented().arm))]
    pub arm_ms: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl LatencyArgs {
    pub fn latencies(&self) -> Latencies {
        Latencies {
            token: Duration::from_millis(self.token_ms),
            graph: Duration::from_millis(self.graph_ms),
            graph_per_item: Duration::from_micros(self.graph_per_item_us),
            resource_graph: Duration::from_millis(self.arg_ms),
            resource_graph_per_row: Duration::from_micros(self.arg_per_row_us),
            arm: Duration::from_millis(self.arm_ms),
        }
    }

    /// The same options on a command line (for `simulate` run by `bench`).
    pub fn to_args(&self) -> Vec<String> {
        [
            ("--token-ms", self.token_ms),
            ("--graph-ms", self.graph_ms),
            ("--graph-per-item-us", self.graph_per_item_us),
            ("--arg-ms", self.arg_ms),
            ("--arg-per-row-us", self.arg_per_row_us),
            ("--arm-ms", self.arm_ms),
        ]
        .into_iter()
        .flat_map(|(flag, v)| [flag.to_owned(), v.to_string()])
        .collect()
    }

    /// One line saying what they are.
    pub fn describe(&self) -> String {
        format!(
            "token {} ms; Graph {} ms + {} µs per item; Resource Graph {} ms + {} µs per row; ARM {} ms",
            self.token_ms,
            self.graph_ms,
            self.graph_per_item_us,
            self.arg_ms,
            self.arg_per_row_us,
            self.arm_ms
        )
    }
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
            latency: Duration::from_millis(self.latency_ms),
            latencies: self.latencies.latencies(),
            ..SimConfig::default()
        }
    }
}

/// Runs a developer command.
pub(super) async fn run(command: DevCommand) -> ExitCode {
    match command {
        DevCommand::Simulate { sim, listen } => simulate(&sim, &listen).await,
        DevCommand::Bench(args) => bench::run(args).await,
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
        "# latencies: {}{}\n# requests counted per API: GET {}{}\n# a configuration for this simulated tenant:\n{}",
        sim.latencies.describe(),
        if sim.latency_ms > 0 {
            format!(", plus {} ms on every answer", sim.latency_ms)
        } else {
            String::new()
        },
        handle.base_url(),
        miaudit_sim::stats::STATS_PATH,
        handle.config_toml("sqlite://miaudit-sim.db")
    );
    crate::app::shutdown_signal().await;
    ExitCode::from(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        latencies: LatencyArgs,
    }

    /// The flags default to the documented latencies, and `bench` hands them to `simulate` unchanged.
    #[test]
    fn latency_flags_default_to_the_documented_figures_and_round_trip() {
        let defaults = Cli::parse_from(["x"]).latencies;
        assert_eq!(defaults.latencies(), Latencies::documented());
        let custom = Cli::parse_from(["x", "--graph-ms", "7", "--arg-per-row-us", "3"]).latencies;
        let again =
            Cli::parse_from(std::iter::once("x".to_owned()).chain(custom.to_args())).latencies;
        assert_eq!(again.latencies(), custom.latencies());
        assert_eq!(custom.latencies().graph, Duration::from_millis(7));
    }
}
