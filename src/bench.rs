//! `miaudit bench`: full scans of simulated tenants of several sizes, the simulator in a separate
//! process (`miaudit simulate`) and each scan in a fresh process of its own (so its peak RSS is its own),
//! reported against the lower bound the services' page sizes and quotas allow.
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
use crate::scan::{Scanner, Trigger};
use crate::store::Store;
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
    let store = Store::connect(&settings.database.url).await?;
    let scanner = Scanner::new(settings)?;
    let started = Instant::now();
    let report = scanner
        .run_as(
            uuid::Uuid::new_v4().to_string(),
            &settings.tenant_ids(),
            Trigger::Cli,
            Some(&store),
        )
        .await;
    let wall = started.elapsed();
    let scan_peak = peak_rss_mib();
    let t = Instant::now();
    let recorded = store
        .record_scan(&report, settings.lifecycle.confirm_after)
        .await?;
    let record = t.elapsed();
    let commit = recorded.transaction;
    let candidates: u64 = report.tenants.iter().map(|t| t.arm_checks).sum();
    let arm = scanner.counters().get(Api::Arm);
    let subscription_pages = 1;
    Ok(Measured {
        identities: report.summary.total,
        wall_s: wall.as_secs_f64(),
        commit_s: commit.as_secs_f64(),
        record_s: record.as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
        scan_peak_rss_mib: scan_peak,
        requests: scanner.counters().snapshot(),
        candidates,
        provider_lookups: (arm.requests - arm.retries)
            .saturating_sub(candidates + subscription_pages),
        complete: report.complete,
        orphaned: report.summary.orphaned,
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
    format!(
        "| {size} | {:.1} | {:.1} | {:.2} | {} / {} / {} / {} | {total} | {min} | {:.3} | {throttled} | {:.0} | {:.2} |",
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

pub const HEADER: &str = "| identities | wall s | lower bound s | ratio | requests token / graph / ARG / ARM | total | minimum | total / min | throttled | peak RSS MiB | commit s |\n|---|---|---|---|---|---|---|---|---|---|---|";
