//! The command line: `miaudit [--config FILE] <command>`.
//!
//! Exit codes (README, "Commands and exit codes"): 0 completed, 1 orphans found with `--fail-on-orphans`, 2 usage or
//! configuration error (one clear line per problem on stderr), 3 scan incomplete. An incomplete scan
//! exits 3 even when it also found orphans: its "all clear" elsewhere cannot be trusted.
//!
//! The product's commands (`scan`, `serve`, `export`) are here. With the `simulator` feature (on by
//! default) come those that run against the simulated tenant of the crate `miaudit-sim`: `demo` (the
//! daemon against it, to try miaudit without Azure; [`demo`]) and the developer tools `simulate` and
//! `bench` ([`dev`]). A build without the feature (`cargo build --no-default-features`) answers those
//! three with one line saying that it leaves them out, and exit 2.

pub mod check;
#[cfg(feature = "simulator")]
pub mod demo;
#[cfg(feature = "simulator")]
pub mod dev;
mod healthcheck;

use crate::config::{Settings, process_env};
use crate::domain::{TenantId, Trigger, Verdict};
use crate::report::{Listed, ScanReport, WriteError, own_listed, write_json, write_table};
use crate::scan::Scanner;
use crate::store::Store;
use crate::store::work::{WorkFile, WorkStore};
use clap::{Parser, Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ORPHANS: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_INCOMPLETE: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "miaudit",
    version = crate::VERSION,
    about = "Finds orphaned managed identities in Microsoft Entra ID tenants",
    after_help = AFTER_HELP
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

#[cfg(feature = "simulator")]
const AFTER_HELP: &str = "demo runs against a built-in simulated tenant; simulate and bench are developer tools \
(the simulator on its own, benchmarks). All three come with the `simulator` feature, on by default.";
#[cfg(not(feature = "simulator"))]
const AFTER_HELP: &str = "This build leaves out the simulator (built without the `simulator` feature): \
no demo, simulate or bench.";

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
    /// The doctor: checks the configuration, every token, one Graph call, the subscription listing and
    /// one Resource Graph query per tenant, and prints each check with the fix for what failed. Exit 0
    /// only when everything works.
    Check {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The support-ticket list of open orphans (suspected, confirmed, acknowledged) on stdout.
    Export {
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Only this tenant (ids compare case-insensitively).
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Only these states (comma-separated: suspected, confirmed, acknowledged, resolved).
        #[arg(long)]
        state: Option<String>,
        /// With --format ticket: also the confirmed orphans already exported into a ticket text (their
        /// export time is renewed).
        #[arg(long)]
        include_exported: bool,
    },
    /// Asks a running daemon's /healthz (for container health checks; images have no curl). Exit 0
    /// when it answers 200, 1 otherwise.
    Healthcheck {
        /// The URL to ask (default: http://<[http] listen>/healthz, an unspecified address asked on
        /// loopback).
        #[arg(long)]
        url: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// The daemon against a built-in simulated tenant that changes every few minutes (no Azure
    /// account needed). With --once: one scan, report on stdout.
    #[cfg(feature = "simulator")]
    Demo(demo::DemoArgs),
    /// The developer tools (`simulate`, `bench`), listed after the product's commands.
    #[cfg(feature = "simulator")]
    #[command(flatten)]
    Dev(dev::DevCommand),
    /// `demo`, `simulate` and `bench` in a build without the simulator: says so.
    #[cfg(not(feature = "simulator"))]
    #[command(
        name = "demo",
        aliases = ["simulate", "bench"],
        hide = true,
        disable_help_flag = true
    )]
    LeftOut {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
    /// One ticket-ready text per tenant of the confirmed orphans that await a ticket; marks them
    /// exported, so a list is never filed twice.
    Ticket,
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
        Command::Check { output } => {
            check::run(cli.config.as_deref(), output, cli.log_format).await
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
            include_exported,
        } => {
            let settings = match load(cli.config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            if matches!(format, ExportFormat::Ticket) {
                if state.is_some() {
                    return config_error(&[
                        "--state: a ticket lists confirmed orphans; leave --state out".into(),
                    ]);
                }
                return export_tickets(&settings, tenant.as_ref(), include_exported).await;
            }
            if include_exported {
                return config_error(&["--include-exported: only with --format ticket".into()]);
            }
            export(&settings, format, tenant.as_ref(), state.as_deref()).await
        }
        Command::Healthcheck { url, timeout } => {
            healthcheck::run(url, cli.config.as_deref(), timeout).await
        }
        #[cfg(feature = "simulator")]
        Command::Demo(args) => demo::run(args, cli.log_format == Some(LogFormat::Json)).await,
        #[cfg(feature = "simulator")]
        Command::Dev(command) => dev::run(command).await,
        #[cfg(not(feature = "simulator"))]
        Command::LeftOut { .. } => {
            eprintln!(
                "miaudit: this build leaves out the simulator (built without the `simulator` feature): \
                 no demo, simulate or bench; build with the default features to have them"
            );
            ExitCode::from(EXIT_CONFIG)
        }
    }
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
    tenant: Option<&TenantId>,
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
                    "--state: {s:?} is not one of suspected, confirmed, acknowledged, resolved, unverified, suppressed"
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
        ExportFormat::Json | ExportFormat::Ticket => crate::export::Format::Json,
    };
    let export = crate::export::Export::new(tenant, &states, fmt);
    let mut out = stdout();
    let written = match export.write_all(&store, &mut out).await {
        Ok(()) => out.flush().map_err(crate::export::ExportError::from),
        Err(e) => Err(e),
    };
    match written {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(crate::export::ExportError::Io(e)) if reader_gone(&e) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("miaudit: export failed: {e}");
            ExitCode::from(EXIT_INCOMPLETE)
        }
    }
}

/// `export --format ticket`: the ticket texts on stdout; once they are all written and flushed, the
/// findings in them are marked exported (a text cut short marks nothing).
async fn export_tickets(
    settings: &Settings,
    tenant: Option<&TenantId>,
    include_exported: bool,
) -> ExitCode {
    let store = match open_store(settings).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut out = stdout();
    let written =
        match crate::export::write_tickets(&store, tenant, include_exported, &mut out).await {
            Ok(w) => out
                .flush()
                .map(|()| w)
                .map_err(crate::export::ExportError::from),
            Err(e) => Err(e),
        };
    match written {
        Ok(keys) if keys.is_empty() => {
            eprintln!("miaudit: no confirmed orphan awaits a ticket");
            ExitCode::from(EXIT_OK)
        }
        Ok(keys) => match store.mark_exported(&keys, chrono::Utc::now()).await {
            Ok(n) => {
                eprintln!(
                    "miaudit: {n} findings marked exported (acknowledge each with the case number once filed)"
                );
                ExitCode::from(EXIT_OK)
            }
            Err(e) => {
                eprintln!(
                    "miaudit: the tickets were written but could not be marked exported: {e}"
                );
                ExitCode::from(EXIT_INCOMPLETE)
            }
        },
        Err(e) => {
            eprintln!("miaudit: export failed: {e}");
            ExitCode::from(EXIT_INCOMPLETE)
        }
    }
}

/// Standard output through one buffer: reports and exports are written to it as they are produced.
fn stdout() -> std::io::BufWriter<std::io::Stdout> {
    std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout())
}

/// The reader of standard output went away (`miaudit export | head`): the rest is not wanted, which is
/// no error (Rust ignores SIGPIPE, so the write fails instead of killing the process).
fn reader_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// Opens the configured database; a failure is a configuration error (exit 2) naming the key.
async fn open_store(settings: &Settings) -> Result<Store, ExitCode> {
    Store::connect(&settings.database.url)
        .await
        .map(|s| {
            s.retaining(settings.database.retain_scans)
                .notifying(settings.notify.subscribers())
                .suppressing(settings.suppressions.clone())
        })
        .map_err(|e| {
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
    let crate::scan::Scanned { report, work } = scanner
        .run_as(
            uuid::Uuid::new_v4().to_string(),
            &settings.tenant_ids(),
            trigger,
            Some(&store),
        )
        .await;
    // Recorded first, then printed: run side by side (both only read the working file) they took 62 s
    // at 1M identities where one after the other took 24 s, and peaked 4 MiB higher. The checkpoint of
    // the store's write-ahead log, which does not read the working file, runs while the report prints.
    let recorded = store
        .commit_scan_from(&report, work.as_ref(), settings.lifecycle.confirm_after)
        .await;
    let committed = recorded.is_ok();
    let code = match recorded {
        Ok(r) => {
            tracing::info!(
                transaction_seconds = r.transaction.as_secs_f64(),
                "scan recorded"
            );
            exit_code(&report, fail_on_orphans)
        }
        Err(e) => {
            eprintln!("miaudit: could not record the scan: {e}");
            EXIT_INCOMPLETE
        }
    };
    // The checkpoint logs its own outcome.
    let checkpoint = async {
        if committed {
            let _ = store.checkpoint().await;
        }
    };
    let (printed, ()) = tokio::join!(
        print_report(&report, output, all, work.as_ref()),
        checkpoint
    );
    deliver_once(settings, &store).await;
    match printed {
        Ok(()) => ExitCode::from(code),
        Err(WriteError::Io(e)) if reader_gone(&e) => ExitCode::from(code),
        // The report on stdout is cut short: say so, and do not exit as if it were whole.
        Err(e) => {
            eprintln!("miaudit: {e}");
            ExitCode::from(EXIT_INCOMPLETE)
        }
    }
}

/// After a scan from the command line: one delivery attempt of each notification due (this scan's and
/// any earlier one's), so a `scan` run by cron notifies without a daemon; what fails stays in the outbox
/// for the next run or the daemon, with its back-off.
async fn deliver_once(settings: &Settings, store: &Store) {
    if settings.notify.webhooks.is_empty() {
        return;
    }
    let metrics = crate::metrics::Metrics::new(&[]);
    match crate::notify::Notifier::new(
        store.clone(),
        &settings.notify,
        settings.http.listen,
        metrics,
    ) {
        Ok(n) => {
            let cancel = tokio_util::sync::CancellationToken::new();
            let pass = n.deliver_due(&cancel);
            if tokio::time::timeout(std::time::Duration::from_secs(120), pass)
                .await
                .is_err()
            {
                tracing::warn!(
                    "notifications not all attempted within 2 minutes; the rest stay in the outbox"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "could not start delivering notifications"),
    }
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

/// Writes the report to stdout as it is produced. A scan into a store leaves its verdicts in its working
/// database `work`: the listed identities (the non-healthy ones, with `all` every one) are read from
/// there as they are written, however many there are; otherwise they are the report's own. If the
/// working database cannot be read, nothing is printed as if it were the whole report.
async fn print_report(
    report: &ScanReport,
    output: Output,
    all: bool,
    work: Option<&WorkFile>,
) -> Result<(), WriteError> {
    let verdicts = match work {
        Some(w) => Some(
            w.reopen()
                .await
                .map_err(|e| WriteError::Read(e.to_string()))?,
        ),
        None => None,
    };
    let mut out = stdout();
    match output {
        Output::Json => {
            let listed = match &verdicts {
                Some(db) => read_back(db, &report.scan_id, None, !all),
                None => own_listed(report, all, None),
            };
            write_json(report, listed, &mut out).await?;
        }
        Output::Table => match &verdicts {
            Some(db) => {
                let source = |v: Verdict| read_back(db, &report.scan_id, Some(v), false);
                write_table(report, all, Some(&source), &mut out).await?;
            }
            None => write_table(report, all, None, &mut out).await?,
        },
    }
    out.flush()?;
    if let Some(db) = verdicts {
        db.close().await;
    }
    Ok(())
}

/// The scan's verdicts (all, of `verdict`, or the non-healthy ones) read back from its working database.
fn read_back<'a>(
    db: &'a WorkStore,
    scan_id: &str,
    verdict: Option<Verdict>,
    non_healthy: bool,
) -> Listed<'a> {
    db.stream_results(scan_id, verdict, non_healthy)
        .map_err(|e| e.to_string())
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// `demo`, `simulate` and `bench` parse in both builds: as commands with the simulator, as the one
    /// that says the build leaves them out without it.
    #[test]
    fn simulator_commands_exist_or_are_said_to_be_left_out() {
        for args in [
            &["miaudit", "demo", "--once"][..],
            &["miaudit", "simulate", "--identities", "10"],
            &["miaudit", "bench", "--sizes", "10"],
        ] {
            let cli = Cli::try_parse_from(args).expect("parses");
            #[cfg(feature = "simulator")]
            assert!(
                matches!(cli.command, Command::Demo(_) | Command::Dev(_)),
                "{args:?}"
            );
            #[cfg(not(feature = "simulator"))]
            assert!(matches!(cli.command, Command::LeftOut { .. }), "{args:?}");
        }
    }
}
