//! The command line: `miaudit [--config FILE] <command>`.
//!
//! Exit codes (ARCHITECTURE.md): 0 completed, 1 orphans found with `--fail-on-orphans`, 2 usage or
//! configuration error (one clear line per problem on stderr), 3 scan incomplete. An incomplete scan
//! exits 3 even when it also found orphans: its "all clear" elsewhere cannot be trusted.

use crate::config::{Settings, process_env};
use crate::report::{render_json, render_table};
use crate::scan::{ScanReport, Scanner, Trigger};
use crate::simulator::{SimConfig, SimHandle, model::World};
use crate::store::Store;
use clap::{Parser, Subcommand, ValueEnum};
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
    #[command(subcommand)]
    pub command: Command,
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
    /// Scan the built-in simulated tenant (no Azure account needed) and print the report.
    Demo {
        /// Managed identities in the simulated tenant.
        #[arg(long, default_value_t = 1000)]
        identities: usize,
        /// Seed of the simulated tenant.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
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

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Scan {
            output,
            all,
            fail_on_orphans,
        } => {
            let settings = match Settings::load(cli.config.as_deref(), &process_env()) {
                Ok(s) => s,
                Err(e) => return config_error(&e.0),
            };
            if let Err(e) = settings.check_scan_ready() {
                return config_error(&e.0);
            }
            crate::telemetry::init(&settings.log.level, settings.log.json);
            scan_and_print(&settings, output, all, fail_on_orphans, Trigger::Cli).await
        }
        Command::Demo {
            identities,
            seed,
            output,
        } => demo(identities, seed, output).await,
    }
}

/// Runs one scan, records it, prints it; returns the exit code.
pub async fn scan_and_print(
    settings: &Settings,
    output: Output,
    all: bool,
    fail_on_orphans: bool,
    trigger: Trigger,
) -> ExitCode {
    let store = match Store::connect(&settings.database.url).await {
        Ok(s) => s,
        Err(e) => {
            return config_error(&[format!(
                "database.url: cannot open {}: {e}",
                settings.database.url
            )]);
        }
    };
    let scanner = match Scanner::new(settings) {
        Ok(s) => s,
        Err(e) => return config_error(&[format!("{e:#}")]),
    };
    let report = scanner.run(&settings.tenant_ids(), trigger).await;
    if let Err(e) = store
        .record_scan(&report, settings.lifecycle.confirm_after)
        .await
    {
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

async fn demo(identities: usize, seed: u64, output: Output) -> ExitCode {
    crate::telemetry::init("warn", false);
    let world = World::generate(seed, identities);
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
    let toml = sim.config_toml(&db);
    let path = dir.join("demo.toml");
    if let Err(e) = std::fs::write(&path, toml) {
        eprintln!("miaudit: cannot write {}: {e}", path.display());
        return ExitCode::from(EXIT_INCOMPLETE);
    }
    let settings = match Settings::load(Some(&path), &Default::default()) {
        Ok(s) => s,
        Err(e) => return config_error(&e.0),
    };
    eprintln!(
        "miaudit demo: scanning a simulated tenant of {identities} managed identities served at {} (seed {seed})",
        sim.base_url()
    );
    let code = scan_and_print(&settings, output, false, false, Trigger::Cli).await;
    eprintln!(
        "miaudit demo: database at {}",
        dir.join("demo.db").display()
    );
    code
}
