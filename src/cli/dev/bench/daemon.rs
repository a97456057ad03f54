//! The daemon as users run it (`miaudit serve`, a process of its own): its HTTP API is queried while
//! idle, then while a scan it was asked for (`POST /api/v1/scans`) runs and is recorded — `/metrics` and
//! the pages of `/api/v1/findings` (following `next_cursor`, from the first page again after the last),
//! each requested back to back, about 50 times a second.

use super::process::sample_peak;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

/// The API token the bench's configuration gives the daemon (to ask it for a scan).
pub const API_TOKEN: &str = "bench-api-token-0123456789abcdef";

/// Requests per endpoint while idle.
const IDLE_REQUESTS: usize = 200;

/// Latencies of one endpoint, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub idle_p50: f64,
    pub idle_p99: f64,
    pub scan_p50: f64,
    pub scan_p99: f64,
    pub scan_max: f64,
    /// Requests during the scan, and how many of them failed.
    pub scan_requests: usize,
    pub scan_failed: usize,
}

/// What the daemon's measured scan gave.
#[derive(Debug, Clone, Default)]
pub struct Daemon {
    /// `POST /api/v1/scans` to the "scan recorded" log line.
    pub wall_s: f64,
    /// The scan itself (its `started_at` to `finished_at`).
    pub scan_s: f64,
    /// Its `finished_at` to the "scan recorded" log line.
    pub record_s: f64,
    /// The daemon's `VmHWM` (its whole life), in KiB.
    pub peak_rss_kib: u64,
    pub metrics: Latency,
    pub findings: Latency,
    /// The scan was recorded (not abandoned, not failed).
    pub recorded: bool,
}

/// The `q` quantile (0..=1) of `v`, which is sorted here.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// One request; its latency in ms, or `None` when it failed. The body is read to its end. With
/// `cursor`, a findings page: the page's `next_cursor` goes there (`None` after the last page).
async fn timed(
    client: &reqwest::Client,
    url: &str,
    cursor: Option<&mut Option<String>>,
) -> Option<f64> {
    let t = Instant::now();
    let res = client.get(url).send().await.ok()?;
    if !res.status().is_success() {
        return None;
    }
    let body = res.bytes().await.ok()?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if let Some(c) = cursor {
        *c = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("next_cursor")?.as_str().map(str::to_owned));
    }
    Some(ms)
}

/// Requests `endpoint` (`/metrics`, or findings pages for `/api/v1/findings`) back to back until `stop`
/// or `n` requests; the latencies in ms and the number of failures.
async fn probe(
    client: reqwest::Client,
    base: String,
    endpoint: &'static str,
    n: Option<usize>,
    stop: CancellationToken,
) -> (Vec<f64>, usize) {
    let (mut out, mut failed) = (Vec::new(), 0);
    let mut cursor: Option<String> = None;
    while n.is_none_or(|n| out.len() + failed < n) && !stop.is_cancelled() {
        let ms = if endpoint == "/metrics" {
            timed(&client, &format!("{base}{endpoint}"), None).await
        } else {
            let url = match &cursor {
                Some(c) => format!("{base}{endpoint}?limit=100&cursor={c}"),
                None => format!("{base}{endpoint}?limit=100"),
            };
            timed(&client, &url, Some(&mut cursor)).await
        };
        match ms {
            Some(ms) => out.push(ms),
            None => failed += 1,
        }
        // About 50 requests a second per endpoint: a busy dashboard, not a load test.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (out, failed)
}

/// A line of the daemon's JSON log: its time, message and fields.
struct LogLine {
    at: Option<chrono::DateTime<chrono::Utc>>,
    message: String,
    fields: serde_json::Value,
}

fn parse_log(line: &str) -> Option<LogLine> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?.clone();
    Some(LogLine {
        at: v
            .get("timestamp")
            .and_then(|t| t.as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc)),
        message: fields.get("message")?.as_str()?.to_owned(),
        fields,
    })
}

/// Starts `miaudit --config <config> --log-format json serve`, queries its API idle, asks it for a scan,
/// queries it while the scan runs and is recorded, then stops it (SIGTERM).
pub async fn measure(exe: &std::path::Path, config: &std::path::Path) -> anyhow::Result<Daemon> {
    let mut child = tokio::process::Command::new(exe)
        .arg("--config")
        .arg(config)
        .args(["--log-format", "json", "serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let stop_sampling = CancellationToken::new();
    let sampler = tokio::spawn(sample_peak(pid, stop_sampling.clone(), None));
    // The log, line by line, to this task.
    let (tx, mut log) = tokio::sync::mpsc::unbounded_channel::<LogLine>();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(l) = parse_log(&l) {
                let _ = tx.send(l);
            }
        }
    });
    let result = async {
        let addr = loop {
            let l = tokio::time::timeout(Duration::from_secs(60), log.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the daemon stopped before it served"))?;
            if let Some(a) = l.fields.get("addr").and_then(|a| a.as_str()) {
                break a.to_owned();
            }
        };
        let base = format!("http://{addr}");
        let client = reqwest::Client::new();
        let never = CancellationToken::new();
        let mut idle = Vec::new();
        for endpoint in ["/metrics", "/api/v1/findings"] {
            let (ms, _) = probe(
                client.clone(),
                base.clone(),
                endpoint,
                Some(IDLE_REQUESTS),
                never.clone(),
            )
            .await;
            idle.push(ms);
        }
        let stop = CancellationToken::new();
        let probes: Vec<_> = ["/metrics", "/api/v1/findings"]
            .into_iter()
            .map(|e| tokio::spawn(probe(client.clone(), base.clone(), e, None, stop.clone())))
            .collect();
        let asked = Instant::now();
        let started: serde_json::Value = client
            .post(format!("{base}/api/v1/scans"))
            .bearer_auth(API_TOKEN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let scan_id = started["scan_id"].as_str().unwrap_or_default().to_owned();
        let (recorded, recorded_at) = loop {
            let Some(l) = log.recv().await else {
                break (false, None);
            };
            match l.message.as_str() {
                "scan recorded" => break (true, l.at),
                m if m.starts_with("scan abandoned") || m.starts_with("could not record") => {
                    break (false, l.at);
                }
                _ => {}
            }
        };
        let wall_s = asked.elapsed().as_secs_f64();
        stop.cancel();
        let mut during = Vec::new();
        for p in probes {
            during.push(p.await?);
        }
        let scan: serde_json::Value = client
            .get(format!("{base}/api/v1/scans/{scan_id}"))
            .send()
            .await?
            .json()
            .await?;
        let time = |k: &str| {
            scan[k]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        let secs = |a: Option<chrono::DateTime<chrono::Utc>>,
                    b: Option<chrono::DateTime<chrono::Utc>>| {
            match (a, b) {
                (Some(a), Some(b)) => (b - a).as_seconds_f64(),
                _ => f64::NAN,
            }
        };
        let latency = |mut idle: Vec<f64>, (mut during, failed): (Vec<f64>, usize)| Latency {
            idle_p50: quantile(&mut idle, 0.5),
            idle_p99: quantile(&mut idle, 0.99),
            scan_p50: quantile(&mut during, 0.5),
            scan_p99: quantile(&mut during, 0.99),
            scan_max: quantile(&mut during, 1.0),
            scan_requests: during.len() + failed,
            scan_failed: failed,
        };
        let mut idle = idle.into_iter();
        let mut during = during.into_iter();
        Ok(Daemon {
            wall_s,
            scan_s: secs(time("started_at"), time("finished_at")),
            record_s: secs(time("finished_at"), recorded_at),
            peak_rss_kib: 0,
            metrics: latency(
                idle.next().unwrap_or_default(),
                during.next().unwrap_or_default(),
            ),
            findings: latency(
                idle.next().unwrap_or_default(),
                during.next().unwrap_or_default(),
            ),
            recorded,
        })
    }
    .await;
    // SIGTERM, as a service manager stops it; a kill if it does not stop within a minute.
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    if tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
    }
    stop_sampling.cancel();
    let peak = sampler.await.unwrap_or(0);
    result.map(|d| Daemon {
        peak_rss_kib: peak,
        ..d
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_from_the_sorted_values() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&mut v, 0.5), 3.0);
        assert_eq!(quantile(&mut v, 1.0), 5.0);
        assert_eq!(quantile(&mut [], 0.99), 0.0);
    }

    #[test]
    fn log_lines_give_their_time_and_message() {
        let l = parse_log(
            r#"{"timestamp":"2026-01-02T03:04:05.678901Z","level":"INFO","fields":{"message":"scan recorded","seconds":1.5}}"#,
        )
        .expect("parses");
        assert_eq!(l.message, "scan recorded");
        assert!(l.at.is_some());
        assert!(parse_log("miaudit: serving").is_none());
    }
}
