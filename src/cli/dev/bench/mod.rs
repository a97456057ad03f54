//! `miaudit bench`, a developer tool: the real binary, run as users run it, against the simulator with
//! latencies close to Azure's, for tenants of several sizes.
//!
//! Per size:
//!
//! 1. `miaudit simulate` in a process of its own (the tenant is generated before anything is timed);
//! 2. `miaudit --config <file> scan --output json --all` as a child process into an empty database: its
//!    wall time, the peak resident set of the whole process (`VmHWM`, [`process`]), its stdout read and
//!    counted (then dropped), and when its first byte came;
//! 3. repeat scans of the unchanged tenant into the same database (`--scans`; the second without `--all`,
//!    for the peak of `scan --output json`), the database and its write-ahead log measured after each;
//! 4. `miaudit serve` with a scan asked of it while its API is queried ([`daemon`]).
//!
//! What the figures are made of:
//!
//! - **wall / lower bound**: the first scan's process, spawn to exit, against the bound the services'
//!   latencies, page sizes and quotas allow ([`bound`]; `--bound` picks the design, the output says which);
//! - **requests / minimum**: what the simulator counted (`GET /_sim/stats`): requests against distinct
//!   requests (a retry, a throttled request or a page read twice is a request, not a distinct one);
//! - **scan / record / checkpoint / first byte / print**: the report's `started_at` and `finished_at`
//!   (the scan itself); the record's transaction, from the process's "scan recorded" log line; the
//!   checkpoint of the store's write-ahead log that follows it while the report prints, from its
//!   "write-ahead log checkpointed" line; `finished_at` to the first byte on stdout (the record, then
//!   reading the verdicts back); the first byte to exit;
//! - **database**: after each scan process has exited, the database's size (its page count times its page
//!   size, read through a read-only connection: what a full checkpoint would leave, the WAL's pages
//!   included; per identity) and the `-wal` file left beside it;
//! - **simulator CPU**: the CPU time the simulator used during the scan, to show it is not what the scan
//!   waits for.

pub mod bound;
mod daemon;
mod process;

use super::LatencyArgs;
use crate::config::Settings;
use bound::{Bound, Design};
use miaudit_sim::{Api, Stats};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use tokio::io::AsyncBufReadExt;

/// `miaudit bench`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Tenant sizes (managed identities), comma-separated. Allow about 10 minutes for 100,000 and 30 for
    /// 1,000,000 with the documented latencies.
    #[arg(long, default_value = "10000,100000,1000000")]
    pub sizes: String,
    /// Scans per size: the first into an empty database, then repeats of the unchanged tenant (default
    /// 10 up to 100,000 identities, 2 above).
    #[arg(long)]
    pub scans: Option<usize>,
    #[command(flatten)]
    pub latencies: LatencyArgs,
    /// The design the lower bound is computed for.
    #[arg(long, value_enum, default_value = "overlapped")]
    pub bound: Design,
    /// Scans with the opt-in Graph delta inventory (`[scan] graph_delta`): repeat scans then read only
    /// what changed.
    #[arg(long)]
    pub graph_delta: bool,
    /// Write each measured process's resident set over time (CSV: seconds, VmRSS and VmHWM in KiB) into
    /// this directory.
    #[arg(long)]
    pub rss_trace: Option<PathBuf>,
    /// Keep each size's database and each scan process's log, `scan-<n>.log` (its directory is printed;
    /// `RUST_LOG` reaches the scan processes).
    #[arg(long)]
    pub keep: bool,
    /// Leave out the daemon.
    #[arg(long)]
    pub no_daemon: bool,
}

/// The simulator, in a process of its own.
struct Simulator {
    child: tokio::process::Child,
    pid: u32,
    url: String,
    client: reqwest::Client,
    /// How long it took to generate the tenant and listen.
    ready_s: f64,
}

impl Simulator {
    async fn start(exe: &Path, size: usize, lat: &LatencyArgs) -> anyhow::Result<Self> {
        let t = Instant::now();
        let mut child = tokio::process::Command::new(exe)
            .args(["simulate", "--identities", &size.to_string()])
            .args(lat.to_args())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        let url = match lines.next_line().await? {
            Some(l) => l.trim_start_matches("listening ").to_owned(),
            None => anyhow::bail!("the simulator did not start"),
        };
        Ok(Self {
            child,
            pid,
            url,
            client: reqwest::Client::new(),
            ready_s: t.elapsed().as_secs_f64(),
        })
    }

    /// Its counts since the last reset; starts them over.
    async fn take_stats(&self) -> anyhow::Result<Stats> {
        let v: serde_json::Value = self
            .client
            .get(format!(
                "{}{}?reset=true",
                self.url,
                miaudit_sim::stats::STATS_PATH
            ))
            .send()
            .await?
            .json()
            .await?;
        Stats::from_json(&v).ok_or_else(|| anyhow::anyhow!("unreadable simulator statistics"))
    }

    fn cpu_s(&self) -> f64 {
        process::cpu_seconds(self.pid).unwrap_or(f64::NAN)
    }

    /// `VmHWM` in MiB.
    fn peak_mib(&self) -> f64 {
        process::rss_kib(self.pid).map_or(f64::NAN, |(_, hwm)| mib(hwm * 1024))
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The report's head: what comes before its findings.
#[derive(Debug, Clone, PartialEq)]
struct Head {
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: chrono::DateTime<chrono::Utc>,
    complete: bool,
    total: u64,
}

/// Reads the head of a JSON report from its first bytes (the whole report, or a prefix that reaches its
/// `findings`).
fn report_head(bytes: &[u8]) -> Option<Head> {
    let v: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            let before = text[..text.find("\"findings\"")?]
                .trim_end()
                .trim_end_matches(',');
            serde_json::from_str(&format!("{before}}}")).ok()?
        }
    };
    let time = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(v.get(k)?.as_str()?)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    Some(Head {
        started_at: time("started_at")?,
        finished_at: time("finished_at")?,
        complete: v.get("complete")?.as_bool()?,
        total: v.pointer("/summary/total")?.as_u64()?,
    })
}

/// One measured scan process.
struct ScanRun {
    all: bool,
    proc: process::Measured,
    spawned_at: chrono::DateTime<chrono::Utc>,
    head: Option<Head>,
    stats: Stats,
    sim_cpu_s: f64,
    /// The database file and its `-wal`, as the scan process left them.
    db_bytes: u64,
    wal_bytes: u64,
    /// The database's own size, WAL included: its pages, as a full checkpoint would leave the file.
    logical_bytes: u64,
}

impl ScanRun {
    fn wall(&self) -> f64 {
        self.proc.wall.as_secs_f64()
    }

    /// The scan itself, `started_at` to `finished_at`.
    fn scan_s(&self) -> f64 {
        self.head
            .as_ref()
            .map_or(f64::NAN, |h| secs(h.started_at, h.finished_at))
    }

    /// The record: its transaction, from the scan's "scan recorded" log line.
    fn record_s(&self) -> f64 {
        logged_seconds(
            &self.proc.stderr_tail,
            "scan recorded",
            "transaction_seconds",
        )
        .unwrap_or(f64::NAN)
    }

    /// The checkpoint of the store's write-ahead log after the record (beside the printing).
    fn checkpoint_s(&self) -> f64 {
        logged_seconds(&self.proc.stderr_tail, CHECKPOINTED, "seconds").unwrap_or(f64::NAN)
    }

    /// `finished_at` to the first byte of the report.
    fn first_byte_s(&self) -> f64 {
        match (&self.head, self.proc.first_byte_at) {
            (Some(h), Some(first)) => secs(h.finished_at, first),
            _ => f64::NAN,
        }
    }

    /// The first byte to exit.
    fn print_s(&self) -> f64 {
        self.proc
            .first_byte_at
            .map_or(f64::NAN, |first| self.wall() - secs(self.spawned_at, first))
    }

    fn ok(&self) -> bool {
        self.head.is_some() && matches!(self.proc.code, Some(0 | 3))
    }
}

/// Everything measured for one size.
struct SizeRun {
    size: usize,
    identities: u64,
    scans: Vec<ScanRun>,
    daemon: Option<Result<daemon::Daemon, String>>,
    daemon_stats: Option<Stats>,
    bound: Bound,
    concurrency: u64,
}

fn secs(a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>) -> f64 {
    (b - a).as_seconds_f64()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// The size of the database at `path`, its write-ahead log included: page count times page size, read
/// through a read-only connection (which neither checkpoints nor writes).
async fn logical_size(path: &Path) -> anyhow::Result<u64> {
    use sqlx::Connection;
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
    let pages: i64 = sqlx::query_scalar("pragma page_count")
        .fetch_one(&mut conn)
        .await?;
    let size: i64 = sqlx::query_scalar("pragma page_size")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(u64::try_from(pages * size).unwrap_or(0))
}

/// The configuration the bench's processes read: the simulator's, plus an HTTP listener on a free port
/// with an API token (to ask the daemon for a scan), no scheduled or start-up scan.
fn config_text(url: &str, db_url: &str, graph_delta: bool) -> String {
    format!(
        "{}\n[http]\nlisten = \"127.0.0.1:0\"\napi_token = \"{}\"\n\n[schedule]\ncron = \"0 0 0 1 1 *\"\n\
         scan_on_start = false\n\n[scan]\ngraph_delta = {graph_delta}\n",
        miaudit_sim::config_toml_at(url, db_url),
        daemon::API_TOKEN
    )
}

/// Runs `miaudit --config <config> scan --output json [--all]` and measures it.
async fn run_scan(
    exe: &Path,
    config: &Path,
    db: &Path,
    all: bool,
    sim: &Simulator,
    trace: Option<PathBuf>,
    log: Option<PathBuf>,
) -> anyhow::Result<ScanRun> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--config")
        .arg(config)
        .args(["--log-format", "json", "scan", "--output", "json"])
        .args(all.then_some("--all"));
    let cpu = sim.cpu_s();
    let spawned_at = chrono::Utc::now();
    let proc = process::run(cmd, trace.as_deref(), log.as_deref()).await?;
    let sim_cpu_s = sim.cpu_s() - cpu;
    let stats = sim.take_stats().await?;
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    Ok(ScanRun {
        all,
        head: report_head(&proc.head),
        proc,
        spawned_at,
        stats,
        sim_cpu_s,
        db_bytes: file_len(db),
        wal_bytes: file_len(&wal),
        logical_bytes: logical_size(db).await.unwrap_or(0),
    })
}

/// One size: the simulator, the scans, the daemon.
async fn run_size(exe: &Path, size: usize, args: &BenchArgs) -> anyhow::Result<SizeRun> {
    let sim = Simulator::start(exe, size, &args.latencies).await?;
    let dir = std::env::temp_dir().join(format!("miaudit-bench-{}-{size}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("bench.db");
    let config = dir.join("miaudit.toml");
    let text = config_text(
        &sim.url,
        &format!("sqlite://{}", db.display()),
        args.graph_delta,
    );
    let settings = Settings::from_toml_str(&text, &Default::default())
        .map_err(|e| anyhow::anyhow!("the bench's configuration: {}", e.0.join("; ")))?;
    std::fs::write(&config, text)?;
    println!(
        "\n## {size} identities\n\nsimulator: ready in {:.1} s (tenant generated), {:.0} MiB; database in {}\n",
        sim.ready_s,
        sim.peak_mib(),
        dir.display()
    );
    println!("{SCAN_HEADER}");
    sim.take_stats().await?;
    let n_scans = args
        .scans
        .unwrap_or(if size <= 100_000 { 10 } else { 2 })
        .max(1);
    let mut scans = Vec::new();
    for i in 0..n_scans {
        // The second scan (the first repeat) without --all: the issue's `scan --output json` figure.
        let all = i != 1;
        let trace = args
            .rss_trace
            .as_ref()
            .map(|d| d.join(format!("scan-{size}-{}.csv", i + 1)));
        let log = args.keep.then(|| dir.join(format!("scan-{}.log", i + 1)));
        let run = run_scan(exe, &config, &db, all, &sim, trace, log).await?;
        println!("{}", scan_row(i + 1, &run));
        if !run.ok() {
            println!(
                "\nscan {} failed (exit {:?}); its stderr ends:\n{}",
                i + 1,
                run.proc.code,
                run.proc.stderr_tail
            );
            scans.push(run);
            break;
        }
        scans.push(run);
    }
    let (daemon, daemon_stats) = if args.no_daemon {
        (None, None)
    } else {
        let d = daemon::measure(exe, &config)
            .await
            .map_err(|e| format!("{e:#}"));
        (Some(d), sim.take_stats().await.ok())
    };
    let identities = scans.first().map_or(size as u64, |s| s.stats.identities);
    let concurrency = settings.scan.concurrency as u64;
    let bound = scans.first().map_or_else(Bound::default, |s| {
        Bound::of(&s.stats, &args.latencies.latencies(), concurrency)
    });
    let run = SizeRun {
        size,
        identities,
        scans,
        daemon,
        daemon_stats,
        bound,
        concurrency,
    };
    println!("\n{}", size_details(&run, args.bound));
    println!("simulator: peak {:.0} MiB over the run", sim.peak_mib());
    sim.stop().await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(run)
}

const SCAN_HEADER: &str = "| scan | output | wall s | scan s | record s | checkpoint s | first byte s | print s | stdout MB | peak RSS MiB | requests token / graph / ARG / ARM (distinct) | throttled | database MB (file + WAL) | simulator CPU s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn scan_row(i: usize, r: &ScanRun) -> String {
    let api = |a: Api| {
        let s = r.stats.api(a);
        format!("{} ({})", s.requests, s.distinct)
    };
    let throttled: u64 = r.stats.apis.values().map(|a| a.throttled).sum();
    format!(
        "| {i} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {} / {} / {} / {} | {throttled} | {:.1} ({:.1} + {:.1}) | {:.1} |",
        if r.all { "json --all" } else { "json" },
        r.wall(),
        r.scan_s(),
        r.record_s(),
        r.checkpoint_s(),
        r.first_byte_s(),
        r.print_s(),
        r.proc.stdout_bytes as f64 / 1e6,
        mib(r.proc.peak_rss_kib * 1024),
        api(Api::Token),
        api(Api::Graph),
        api(Api::ResourceGraph),
        api(Api::Arm),
        r.logical_bytes as f64 / 1e6,
        r.db_bytes as f64 / 1e6,
        r.wal_bytes as f64 / 1e6,
        r.sim_cpu_s,
    )
}

/// The bound's pieces and the daemon's figures for one size.
fn size_details(run: &SizeRun, design: Design) -> String {
    let b = &run.bound;
    let mut out = format!(
        "lower bound (first scan; ARM checks {} at once): T_token {:.2} s, T_graph {:.1} s, T_sub {:.2} s, \
         T_arg {:.1} s, T_arm {:.1} s → sequential {:.1} s, overlapped {:.1} s; used: {} = {}\n",
        run.concurrency,
        b.token,
        b.graph,
        b.sub,
        b.arg,
        b.arm,
        b.total(Design::Sequential),
        b.total(Design::Overlapped),
        design.name(),
        design.formula(),
    );
    match &run.daemon {
        None => {}
        Some(Err(e)) => {
            let _ = writeln!(out, "daemon: failed: {e}");
        }
        Some(Ok(d)) => {
            let requests = run.daemon_stats.as_ref().map_or(String::new(), |s| {
                format!(
                    ", requests {} / minimum {}",
                    bound::total_requests(s),
                    bound::minimum_requests(s)
                )
            });
            let _ = writeln!(
                out,
                "daemon (`serve`, a scan asked by POST /api/v1/scans{}): wall {:.1} s, scan {:.1} s, record {:.2} s{requests}, \
                 peak RSS {:.0} MiB; latency ms p50 / p99 idle → during the scan (max, requests, failed): \
                 /metrics {:.1} / {:.1} → {:.1} / {:.1} ({:.1}, {}, {}); /api/v1/findings pages {:.1} / {:.1} → {:.1} / {:.1} ({:.1}, {}, {})",
                if d.recorded { "" } else { "; NOT RECORDED" },
                d.wall_s,
                d.scan_s,
                d.record_s,
                mib(d.peak_rss_kib * 1024),
                d.metrics.idle_p50,
                d.metrics.idle_p99,
                d.metrics.scan_p50,
                d.metrics.scan_p99,
                d.metrics.scan_max,
                d.metrics.scan_requests,
                d.metrics.scan_failed,
                d.findings.idle_p50,
                d.findings.idle_p99,
                d.findings.scan_p50,
                d.findings.scan_p99,
                d.findings.scan_max,
                d.findings.scan_requests,
                d.findings.scan_failed,
            );
        }
    }
    out
}

/// A cell of the summary table, per figure.
fn summary_cells(run: &SizeRun, design: Design) -> [String; 8] {
    let na = || "–".to_owned();
    let n = run.identities.max(1) as f64;
    let first = run.scans.first().filter(|s| s.ok());
    let last = run.scans.last().filter(|s| s.ok());
    let wall = first.map_or_else(na, |s| {
        let lb = run.bound.total(design);
        format!(
            "{:.2} ({:.1} s / {:.1} s)",
            s.wall() / lb.max(1e-9),
            s.wall(),
            lb
        )
    });
    let requests = first.map_or_else(na, |s| {
        let (total, min) = (
            bound::total_requests(&s.stats),
            bound::minimum_requests(&s.stats),
        );
        format!("{:.3} ({total} / {min})", total as f64 / min.max(1) as f64)
    });
    let rss = |all: bool| {
        run.scans
            .iter()
            .filter(|s| s.ok() && s.all == all)
            .map(|s| s.proc.peak_rss_kib)
            .max()
            .map_or_else(na, |kib| format!("{:.0} MiB", mib(kib * 1024)))
    };
    let disk = first.map_or_else(na, |s| {
        format!(
            "{:.0} B per identity ({:.1} MB) + a {:.1} MB WAL left",
            s.logical_bytes as f64 / n,
            s.logical_bytes as f64 / 1e6,
            s.wal_bytes as f64 / 1e6
        )
    });
    let growth = match (first, last) {
        (Some(f), Some(l)) if run.scans.len() > 1 => {
            let k = run.scans.len();
            format!(
                "{:+.0} B per identity (after {k} scans: {:.0} B per identity + a {:.1} MB WAL left)",
                (l.logical_bytes as f64 - f.logical_bytes as f64) / (k - 1) as f64 / n,
                l.logical_bytes as f64 / n,
                l.wal_bytes as f64 / 1e6
            )
        }
        _ => na(),
    };
    let record = first.map_or_else(na, |s| {
        format!(
            "{:.2} s ({:.1} % of the scan's {:.1} s; then the checkpoint, {:.2} s, beside the printing)",
            s.record_s(),
            100.0 * s.record_s() / s.scan_s(),
            s.scan_s(),
            s.checkpoint_s()
        )
    });
    let api = match &run.daemon {
        Some(Ok(d)) => format!("{:.1} / {:.1} ms", d.findings.scan_p99, d.metrics.scan_p99),
        Some(Err(_)) => "failed".to_owned(),
        None => na(),
    };
    [
        wall,
        requests,
        rss(false),
        rss(true),
        disk,
        growth,
        record,
        api,
    ]
}

/// The figures of issue 12, one column per size.
fn summary(runs: &[SizeRun], design: Design) -> String {
    const FIGURES: [(&str, &str); 8] = [
        (
            "wall / lower bound, `scan --output json --all` (first scan)",
            "≤ 1.15",
        ),
        ("requests / minimum (first scan)", "≤ 1.02"),
        ("peak RSS, `scan --output json` (repeat scan)", "≤ 48 MiB"),
        ("peak RSS, `scan --output json --all`", "≤ 64 MiB"),
        (
            "database on disk after one scan",
            "≤ 1 KiB per identity, WAL checkpointed",
        ),
        (
            "each further scan of an unchanged tenant",
            "≤ +64 B per identity",
        ),
        (
            "record, first scan (the transaction, up to the commit)",
            "< 5 % of the scan",
        ),
        (
            "API p99 during a daemon scan: `/api/v1/findings` pages / `/metrics`",
            "< 50 ms",
        ),
    ];
    let cells: Vec<[String; 8]> = runs.iter().map(|r| summary_cells(r, design)).collect();
    let mut out = String::from("| figure |");
    for r in runs {
        let _ = write!(out, " {} identities |", r.size);
    }
    out.push_str(" goal |\n|---|");
    for _ in runs {
        out.push_str("---|");
    }
    out.push_str("---|\n");
    for (i, (figure, goal)) in FIGURES.iter().enumerate() {
        let _ = write!(out, "| {figure} |");
        for c in &cells {
            let _ = write!(out, " {} |", c[i]);
        }
        let _ = writeln!(out, " {goal} |");
    }
    out
}

/// `miaudit bench`.
pub async fn run(args: BenchArgs) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("miaudit: {e}");
            return ExitCode::from(super::EXIT_INCOMPLETE);
        }
    };
    if let Some(d) = &args.rss_trace
        && let Err(e) = std::fs::create_dir_all(d)
    {
        eprintln!("miaudit: --rss-trace {}: {e}", d.display());
        return ExitCode::from(super::EXIT_CONFIG);
    }
    let sizes: Vec<usize> = args
        .sizes
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "miaudit bench: `miaudit scan --output json --all` as a child process (stdout read and counted), against \
         `miaudit simulate` in another process; repeat scans into the same database; then `miaudit serve` with a \
         scan while its API is queried.\nsimulated latencies: {} (docs/azure-behaviour.md §11); Resource Graph \
         quota 15 queries / 5 s.\nlower bound: {} = {}.\nmachine: {} cores, load average {}",
        args.latencies.describe(),
        args.bound.name(),
        args.bound.formula(),
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    let mut runs = Vec::new();
    let mut failed = false;
    for size in sizes {
        match run_size(&exe, size, &args).await {
            Ok(r) => {
                failed |= r.scans.iter().any(|s| !s.ok());
                runs.push(r);
            }
            Err(e) => {
                println!("\n{size} identities: the bench failed: {e:#}");
                failed = true;
            }
        }
    }
    println!("\n## Summary\n\n{}", summary(&runs, args.bound));
    ExitCode::from(if failed {
        super::EXIT_INCOMPLETE
    } else {
        super::EXIT_OK
    })
}

/// The message of the log line that says how long the checkpoint after a record took.
const CHECKPOINTED: &str = "write-ahead log checkpointed";

/// The seconds in `field` of the last JSON log line on stderr whose message is `message`.
fn logged_seconds(stderr: &str, message: &str, field: &str) -> Option<f64> {
    stderr.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        let f = v.get("fields")?;
        (f.get("message")?.as_str()? == message).then_some(())?;
        f.get(field)?.as_f64()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_valid() {
        let text = config_text("http://127.0.0.1:1", "sqlite://bench.db", true);
        let s = Settings::from_toml_str(&text, &Default::default()).expect("valid");
        assert!(s.scan.graph_delta);
        assert!(!s.schedule.scan_on_start);
    }

    #[test]
    fn the_head_of_a_report_is_read_before_its_findings() {
        let report = r#"{"scan_id":"s","started_at":"2026-01-01T00:00:00.000Z","finished_at":"2026-01-01T00:00:01.500Z","complete":true,"tenants":[],"summary":{"total":3,"healthy":3,"orphaned":0,"unknown":0},"findings":[{"object_id":"a"},{"obj"#;
        let head = report_head(report.as_bytes()).expect("head");
        assert_eq!(secs(head.started_at, head.finished_at), 1.5);
        assert_eq!(head.total, 3);
        assert!(head.complete);
        let whole = r#"{"started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:00Z","complete":false,"summary":{"total":0},"findings":[]}"#;
        assert!(!report_head(whole.as_bytes()).expect("whole").complete);
    }
    #[test]
    fn the_record_time_is_read_from_its_log_line() {
        let stderr = "miaudit: something\n{\"timestamp\":\"2026-01-02T03:04:05Z\",\"level\":\"INFO\",\"fields\":{\"message\":\"scan recorded\",\"transaction_seconds\":1.25}}\n{\"fields\":{\"message\":\"write-ahead log checkpointed\",\"seconds\":0.5}}\n";
        let recorded = |s| logged_seconds(s, "scan recorded", "transaction_seconds");
        assert_eq!(recorded(stderr), Some(1.25));
        assert_eq!(logged_seconds(stderr, CHECKPOINTED, "seconds"), Some(0.5));
        assert_eq!(recorded("{\"fields\":{\"message\":\"other\"}}"), None);
        assert_eq!(recorded(""), None);
    }
}
