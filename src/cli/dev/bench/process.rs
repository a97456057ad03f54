//! A measured child process: its wall time, its peak resident set, what it wrote on stdout (counted, the
//! first bytes kept) and when the first byte came.
//!
//! The peak is the whole process's `VmHWM` (the kernel's high-water mark of its resident set, what
//! `getrusage` reports as `ru_maxrss`), read from `/proc/<pid>/status` every [`SAMPLE_EVERY`] while the
//! process runs, with its `VmRSS` (the kernel updates the mark only at some events, so the current
//! resident set can be above it): the largest reading is the figure. The mark only grows, so a sample
//! misses a peak only if the process first reaches it in its last few milliseconds.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// How often `/proc/<pid>/status` is read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// How much of stdout is kept (the report's head: everything before its findings).
const HEAD_BYTES: usize = 1 << 20;

/// What a measured process did.
#[derive(Debug)]
pub struct Measured {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Spawn to exit.
    pub wall: Duration,
    /// The largest `VmHWM` (or `VmRSS`) read, in KiB.
    pub peak_rss_kib: u64,
    /// Bytes written on stdout (read and counted, then dropped).
    pub stdout_bytes: u64,
    /// The first [`HEAD_BYTES`] of stdout.
    pub head: Vec<u8>,
    /// When the first byte of stdout arrived.
    pub first_byte_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The end of stderr (its last 16 KiB), for a failure's message.
    pub stderr_tail: String,
}

/// `VmRSS` and `VmHWM` of `pid` in KiB, or `None` once it has exited.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) `pid` has used, in seconds. Linux counts it in clock ticks of 1/100 s
/// (`USER_HZ`, 100 on every architecture Linux runs on today).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing parenthesis):
    // state is field 3, utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some((ticks(14)? + ticks(15)?) as f64 / 100.0)
}

/// Samples `pid`'s resident set until it exits or `stop` fires; returns the largest `VmHWM` or `VmRSS`
/// read (KiB). With `trace`, every sample (seconds since the start, `VmRSS` and `VmHWM` in KiB) is
/// written there.
pub async fn sample_peak(
    pid: u32,
    stop: tokio_util::sync::CancellationToken,
    mut trace: Option<std::fs::File>,
) -> u64 {
    let started = Instant::now();
    let mut peak = 0;
    loop {
        match rss_kib(pid) {
            Some((rss, hwm)) => {
                // The kernel folds the current RSS into VmHWM only at some events (an unmap, the
                // exit), so a sample's VmRSS can be above every VmHWM read so far: the peak is the
                // larger of the two over all samples.
                peak = peak.max(hwm).max(rss);
                if let Some(f) = trace.as_mut() {
                    let _ = writeln!(f, "{:.3},{rss},{hwm}", started.elapsed().as_secs_f64());
                }
            }
            None => return peak,
        }
        tokio::select! {
            () = stop.cancelled() => return peak,
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

/// Runs `cmd` to its end: stdout read and counted, stderr's tail kept (all of it written to `log` when
/// given), the resident set sampled.
pub async fn run(
    mut cmd: tokio::process::Command,
    trace: Option<&Path>,
    log: Option<&Path>,
) -> anyhow::Result<Measured> {
    let trace = match trace {
        Some(p) => {
            let mut f = std::fs::File::create(p)?;
            writeln!(f, "seconds,vm_rss_kib,vm_hwm_kib")?;
            Some(f)
        }
        None => None,
    };
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("the child has no pid"))?;
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn(sample_peak(pid, stop.clone(), trace));
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let log = log.map(Path::to_path_buf);
    let err_task = tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all).await;
        if let Some(p) = log {
            let _ = tokio::fs::write(p, &all).await;
        }
        let from = all.len().saturating_sub(16 * 1024);
        String::from_utf8_lossy(&all[from..]).into_owned()
    });
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut head, mut first_byte_at) = (0u64, Vec::new(), None);
    loop {
        let n = stdout.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        first_byte_at.get_or_insert_with(chrono::Utc::now);
        bytes += n as u64;
        let keep = n.min(HEAD_BYTES.saturating_sub(head.len()));
        head.extend_from_slice(&buf[..keep]);
    }
    let status = child.wait().await?;
    let wall = started.elapsed();
    stop.cancel();
    Ok(Measured {
        code: status.code(),
        wall,
        peak_rss_kib: sampler.await.unwrap_or(0),
        stdout_bytes: bytes,
        head,
        first_byte_at,
        stderr_tail: err_task.await.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_set_and_cpu_time() {
        let (rss, hwm) = rss_kib(std::process::id()).expect("status");
        assert!(rss > 0 && hwm >= rss);
        assert!(cpu_seconds(std::process::id()).is_some());
    }
}
