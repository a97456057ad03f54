//! The measurement behind `miaudit bench`, a developer tool: full scans of simulated tenants of several
//! sizes, the simulator in a separate process (`miaudit simulate`) and each scan in a fresh process of its
//! own (so its peak RSS is its own), reported against the lower bound the services' page sizes and quotas
//! allow.
//!
//! Lower bound of one scan (stages run one after the other: the inventory names the types and
//! subscriptions that Resource Graph is asked about, Resource Graph names the candidates ARM confirms):
//!
//! ```text
//! T_graph = ceil(N / 999) * (L + 999 u)                       Graph pages are sequential (next links)
//! T_arg   = (W - 1) * 5 s + (Q - 15 (W - 1)) * (L + 1000 u)  Q pages in W = ceil(Q / 15) quota windows
//! T_arm   = ceil(C / k) * L + n * L                           C candidate GETs, k at once; n provider lookups
//! LB      = T_graph + T_arg + T_arm
//! ```
//! with N identities, L the simulated latency per request, u the cost per item of a page, k the ARM
//! concurrency. Resource Graph allows 15 queries per 5-second window per user (ARG-THR): W - 1 windows
//! are spent whole, and the last one's pages run back to back (15 pages take 0.6 s, far less than a
//! window, so the quota binds, not the latency). Minimum requests: 2 tokens + ceil(N/999) Graph pages + the subscription pages + Q + n + C.

use crate::azure::Api;
use crate::config::Settings;
use crate::domain::Trigger;
use crate::scan::Scanner;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What one measured scan reports (printed as JSON by `miaudit bench-one`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub identities: u64,
    pub wall_s: f64,
    /// The recording transaction, begin to commit.
    pub commit_s: f64,
    /// All of recording: attaching the scan's working database, the transaction, detaching.
    #[serde(default)]
    pub record_s: f64,
    pub peak_rss_mib: f64,
    /// Peak RSS when the scan had finished, before it was recorded.
    pub scan_peak_rss_mib: f64,
    pub requests: std::collections::BTreeMap<String, crate::azure::ApiCounts>,
    pub candidates: u64,
    pub provider_lookups: u64,
    pub complete: bool,
    pub orphaned: u64,
    /// A second scan of the unchanged tenant, recorded over the first, while the daemon's HTTP API is
    /// queried without pause.
    #[serde(default)]
    pub repeat: Option<Repeat>,
}

/// The repeat scan and the API's latency before and during it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Repeat {
    pub wall_s: f64,
    pub commit_s: f64,
    /// Graph requests of the repeat scan (with Graph delta: one per delta page).
    #[serde(default)]
    pub graph_requests: u64,
    #[serde(default)]
    pub peak_rss_mib: f64,
    /// `GET /metrics`.
    pub metrics: Latency,
    /// `GET /api/v1/findings` (the default page: open findings).
    pub findings: Latency,
}

/// Latencies of one endpoint, in milliseconds: idle (before the scan) and while the scan and its
/// recording run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub idle_p50_ms: f64,
    pub idle_p99_ms: f64,
    pub scan_p50_ms: f64,
    pub scan_p99_ms: f64,
    pub scan_max_ms: f64,
    pub scan_requests: u64,
}

/// The `q` quantile (0..=1) of `v`, which is sorted here.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Requests `url` one after the other until `stop`, or `n` times; latencies in ms. A failed request
/// counts as an infinitely slow one.
async fn probe(
    client: &reqwest::Client,
    url: &str,
    n: Option<usize>,
    stop: &tokio_util::sync::CancellationToken,
) -> Vec<f64> {
    let mut out = Vec::new();
    while n.is_none_or(|n| out.len() < n) && !stop.is_cancelled() {
        let t = Instant::now();
        let ok = match client.get(url).send().await {
            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        out.push(if ok {
            t.elapsed().as_secs_f64() * 1000.0
        } else {
            f64::INFINITY
        });
        // About 50 requests a second per endpoint: a busy dashboard, not a load test.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out
}

/// One scan recorded, with its timings.
struct Run {
    report: crate::report::ScanReport,
    wall: Duration,
    /// Peak RSS when the scan had finished, before it was recorded.
    scan_peak: f64,
    /// All of recording (attach, transaction, detach).
    record: Duration,
    recorded: crate::store::Recorded,
}

async fn scan_and_record(
    scanner: &Scanner,
    settings: &Settings,
    store: &crate::store::Store,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let crate::scan::Scanned { report, work } = scanner
        .run_as(
            uuid::Uuid::new_v4().to_string(),
            &settings.tenant_ids(),
            Trigger::Cli,
            Some(store),
        )
        .await;
    let wall = started.elapsed();
    let scan_peak = peak_rss_mib();
    let t = Instant::now();
    let recorded = store
        .record_scan_from(&report, work.as_ref(), settings.lifecycle.confirm_after)
        .await?;
    Ok(Run {
        report,
        wall,
        scan_peak,
        record: t.elapsed(),
        recorded,
    })
}

/// Scans again while the daemon serves its API, probing two endpoints.
async fn measure_repeat(settings: &Settings, app: crate::app::App) -> anyhow::Result<Repeat> {
    let store = app.store();
    let base = format!("http://{}", app.http_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let urls = [format!("{base}/metrics"), format!("{base}/api/v1/findings")];
    let never = tokio_util::sync::CancellationToken::new();
    let mut idle = Vec::new();
    for u in &urls {
        idle.push(probe(&client, u, Some(200), &never).await);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let probes: Vec<_> = urls
        .iter()
        .map(|u| {
            let (client, u, stop) = (client.clone(), u.clone(), stop.clone());
            tokio::spawn(async move { probe(&client, &u, None, &stop).await })
        })
        .collect();
    let scanner = Scanner::new(settings)?;
    let run = scan_and_record(&scanner, settings, &store).await?;
    stop.cancel();
    let mut during = Vec::new();
    for p in probes {
        during.push(p.await?);
    }
    let _ = tx.send(());
    let _ = server.await;
    let latency = |mut idle: Vec<f64>, mut during: Vec<f64>| Latency {
        idle_p50_ms: quantile(&mut idle, 0.5),
        idle_p99_ms: quantile(&mut idle, 0.99),
        scan_p50_ms: quantile(&mut during, 0.5),
        scan_p99_ms: quantile(&mut during, 0.99),
        scan_max_ms: quantile(&mut during, 1.0),
        scan_requests: during.len() as u64,
    };
    let mut during = during.into_iter();
    let mut idle = idle.into_iter();
    Ok(Repeat {
        wall_s: run.wall.as_secs_f64(),
        commit_s: run.recorded.transaction.as_secs_f64(),
        graph_requests: scanner.counters().get(Api::Graph).requests,
        peak_rss_mib: peak_rss_mib(),
        metrics: latency(
            idle.next().unwrap_or_default(),
            during.next().unwrap_or_default(),
        ),
        findings: latency(
            idle.next().unwrap_or_default(),
            during.next().unwrap_or_default(),
        ),
    })
}

/// Peak resident set of this process (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// One scan against a running simulator, recorded into a fresh database.
pub async fn measure_one(settings: &Settings) -> anyhow::Result<Measured> {
    // The daemon, assembled but not yet serving: the scans record through its store, as its scheduler's do.
    let app = crate::app::App::build(settings.clone()).await?;
    let store = app.store();
    let scanner = Scanner::new(settings)?;
    let Run {
        report,
        wall,
        scan_peak,
        record,
        recorded,
    } = scan_and_record(&scanner, settings, &store).await?;
    let commit = recorded.transaction;
    let candidates: u64 = report.tenants.iter().map(|t| t.arm_checks).sum();
    let (complete, orphaned, identities) = (
        report.complete,
        report.summary.orphaned,
        report.summary.total,
    );
    let arm = scanner.counters().get(Api::Arm);
    let subscription_pages = 1;
    let requests = scanner.counters().snapshot();
    drop(report);
    let repeat = measure_repeat(settings, app).await?;
    Ok(Measured {
        identities,
        wall_s: wall.as_secs_f64(),
        commit_s: commit.as_secs_f64(),
        record_s: record.as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
        scan_peak_rss_mib: scan_peak,
        requests,
        candidates,
        provider_lookups: (arm.requests - arm.retries)
            .saturating_sub(candidates + subscription_pages),
        complete,
        orphaned,
        repeat: Some(repeat),
    })
}

/// The simulated costs a bench runs with.
#[derive(Debug, Clone, Copy)]
pub struct Costs {
    pub latency: Duration,
    pub per_item: Duration,
    pub arm_concurrency: u64,
}

/// Lower bound and minimum requests for a measured scan.
pub fn lower_bound(m: &Measured, c: Costs) -> (f64, u64) {
    let l = c.latency.as_secs_f64();
    let u = c.per_item.as_secs_f64();
    let graph_pages = m.identities.div_ceil(999).max(1);
    let arg = m
        .requests
        .get("resource_graph")
        .copied()
        .unwrap_or_default();
    let q = arg.requests - arg.retries;
    let t_graph = graph_pages as f64 * (l + 999.0 * u);
    let page = l + 1000.0 * u;
    let windows = q.div_ceil(15).max(1);
    let t_arg =
        ((windows - 1) as f64 * 5.0 + (q - 15 * (windows - 1)) as f64 * page).max(q as f64 * page);
    let t_arm =
        m.candidates.div_ceil(c.arm_concurrency.max(1)) as f64 * l + m.provider_lookups as f64 * l;
    let min_requests = 2 + graph_pages + 1 + q + m.provider_lookups + m.candidates;
    (t_graph + t_arg + t_arm, min_requests)
}

/// A Markdown table row.
pub fn row(size: usize, m: &Measured, c: Costs) -> String {
    let (lb, min) = lower_bound(m, c);
    let total: u64 = m.requests.values().map(|a| a.requests).sum();
    let throttled: u64 = m.requests.values().map(|a| a.throttled).sum();
    let r = |api: &str| m.requests.get(api).map_or(0, |a| a.requests);
    let (repeat_commit, api) = match &m.repeat {
        Some(rp) => (
            format!(
                "{:.1} / {} / {:.2}",
                rp.wall_s, rp.graph_requests, rp.commit_s
            ),
            format!(
                "{:.1} → {:.1} / {:.1} → {:.1}",
                rp.metrics.idle_p99_ms,
                rp.metrics.scan_p99_ms,
                rp.findings.idle_p99_ms,
                rp.findings.scan_p99_ms
            ),
        ),
        None => ("–".into(), "–".into()),
    };
    format!(
        "| {size} | {:.1} | {:.1} | {:.2} | {} / {} / {} / {} | {total} | {min} | {:.3} | {throttled} | {:.0} | {:.2} | {repeat_commit} | {api} |",
        m.wall_s,
        lb,
        m.wall_s / lb.max(1e-9),
        r("token"),
        r("graph"),
        r("resource_graph"),
        r("arm"),
        total as f64 / min.max(1) as f64,
        m.peak_rss_mib,
        m.commit_s
    )
}

pub const HEADER: &str = "| identities | wall s | lower bound s | ratio | requests token / graph / ARG / ARM | total | minimum | total / min | throttled | peak RSS MiB | commit s (first) | repeat scan: wall s / Graph requests / commit s | API p99 ms idle → during repeat scan: /metrics / /api/v1/findings |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";
