//! Runs scans for the daemon: on the cron schedule, at start-up, and on demand through the API. The only
//! importer of `tokio_cron_scheduler`.
//!
//! One scan at a time (an overlap guard: a scheduled run that finds a scan going is skipped and counted;
//! an API request gets 409), an overall timeout, and cancellation on shutdown. A scan that times out or is
//! cancelled records nothing of its verdicts: its row is marked `abandoned`, the previous state stays.

use crate::config::Settings;
use crate::domain::Trigger;
use crate::metrics::Metrics;
use crate::report::ScanReport;
use crate::scan::Scanner;
use crate::store::Store;
use futures::FutureExt;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

/// Checks a cron expression the way the scheduler will read it (seconds field first).
pub fn validate_cron(expr: &str) -> Result<(), String> {
    Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

/// Why a scan could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    AlreadyRunning,
    ShuttingDown,
}

pub struct ScanRunner {
    scanner: Scanner,
    store: Store,
    metrics: Metrics,
    settings: Arc<Settings>,
    guard: Arc<Mutex<()>>,
    cancel: CancellationToken,
    /// The running scan task, awaited at shutdown.
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Woken when a recorded scan may have enqueued notifications.
    notifier: Option<crate::notify::Notifier>,
}

/// How long `POST /api/v1/scans` waits for the new scan's row before answering.
pub const START_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl ScanRunner {
    pub fn new(
        scanner: Scanner,
        store: Store,
        metrics: Metrics,
        settings: Arc<Settings>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            scanner,
            store,
            metrics,
            settings,
            guard: Arc::new(Mutex::new(())),
            cancel,
            task: parking_lot::Mutex::new(None),
            notifier: None,
        }
    }

    /// Wakes the delivery worker (after a change that may have enqueued notifications).
    pub fn wake_notifier(&self) {
        if let Some(n) = &self.notifier {
            n.wake();
        }
    }

    /// Wakes this delivery worker after each recorded scan.
    pub fn notifying(mut self, notifier: crate::notify::Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub fn counters(&self) -> &Arc<crate::azure::Counters> {
        self.scanner.counters()
    }

    /// Starts a scan in the background; returns its id, or why it cannot start.
    pub fn try_start(self: &Arc<Self>, trigger: Trigger) -> Result<String, Busy> {
        self.spawn(trigger, None)
    }

    /// Starts a scan like [`Self::try_start`] and returns once its row is written, so the scan's URL
    /// answers from the moment its id is given out (`POST /api/v1/scans`).
    /// Waits at most [`START_WAIT`] for the row (a database that is slow to answer must not hold the
    /// request past its own timeout); the scan goes on either way.
    pub async fn start(self: &Arc<Self>, trigger: Trigger) -> Result<String, Busy> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = self.spawn(trigger, Some(tx))?;
        // An error only means the task ended before it could say so: the row is as written as it gets.
        let _ = tokio::time::timeout(START_WAIT, rx).await;
        Ok(id)
    }

    fn spawn(
        self: &Arc<Self>,
        trigger: Trigger,
        begun: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<String, Busy> {
        if self.cancel.is_cancelled() {
            return Err(Busy::ShuttingDown);
        }
        let Ok(guard) = self.guard.clone().try_lock_owned() else {
            return Err(Busy::AlreadyRunning);
        };
        let scan_id = uuid::Uuid::new_v4().to_string();
        let me = self.clone();
        let id = scan_id.clone();
        let handle = tokio::spawn(async move {
            let _guard = guard;
            me.execute(id, trigger, begun).await;
        });
        *self.task.lock() = Some(handle);
        Ok(scan_id)
    }

    /// Runs a scan now and waits for it (tests, CLI); `None` when one is already running.
    pub async fn run_now(self: &Arc<Self>, trigger: Trigger) -> Option<Option<ScanReport>> {
        let guard = self.guard.clone().try_lock_owned().ok()?;
        let report = self
            .execute(uuid::Uuid::new_v4().to_string(), trigger, None)
            .await;
        drop(guard);
        Some(report)
    }

    /// Waits for a running scan task to end (it ends promptly once `cancel` fires).
    pub async fn wait_idle(&self) {
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    #[tracing::instrument(skip_all, fields(scan_id = %scan_id, trigger = trigger.as_str()))]
    async fn execute(
        &self,
        scan_id: String,
        trigger: Trigger,
        begun: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Option<ScanReport> {
        let started = std::time::Instant::now();
        if let Err(e) = self
            .store
            .begin_scan(&scan_id, chrono::Utc::now(), trigger)
            .await
        {
            self.metrics.store_errors.inc();
            tracing::error!(error = %e, "could not record the start of the scan");
        }
        if let Some(tx) = begun {
            let _ = tx.send(());
        }
        let tenants = self.settings.tenant_ids();
        // A panic escaping the scan (each tenant's own are caught inside it) ends this scan like a
        // timeout: nothing recorded, the row marked abandoned, the next scan starts clean.
        let run = std::panic::AssertUnwindSafe(self.scanner.run_as(
            scan_id.clone(),
            &tenants,
            trigger,
            Some(&self.store),
        ))
        .catch_unwind();
        let mut panicked = false;
        let outcome = tokio::select! {
            r = tokio::time::timeout(self.settings.scan.timeout, run) => match r {
                Ok(Ok(report)) => Some(report),
                Ok(Err(_)) => {
                    panicked = true;
                    None
                }
                Err(_) => None,
            },
            () = self.cancel.cancelled() => None,
        };
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics.scan_duration.observe(elapsed);
        self.metrics.sync_azure(self.scanner.counters());
        if let Some(r) = &outcome
            && r.report.tenants.iter().any(|t| t.staging_failed)
        {
            self.metrics.store_errors.inc();
        }
        let Some(crate::scan::Scanned { report, work }) = outcome else {
            let why = if panicked {
                "failed"
            } else if self.cancel.is_cancelled() {
                "cancelled"
            } else {
                "timeout"
            };
            tracing::warn!(outcome = why, "scan abandoned; nothing of it is recorded");
            self.metrics.scan_runs.with_label_values(&[why]).inc();
            if let Err(e) = self.store.abandon_running_scans().await {
                self.metrics.store_errors.inc();
                tracing::error!(error = %e, "could not mark the scan abandoned");
            }
            return None;
        };
        self.record(&report, work.as_ref(), elapsed).await;
        Some(report)
    }

    /// Records a finished scan and updates the metrics; a record that fails leaves the previous state
    /// and marks the scan's row abandoned.
    async fn record(
        &self,
        report: &ScanReport,
        work: Option<&crate::store::work::WorkFile>,
        elapsed: f64,
    ) {
        let recorded = self
            .store
            .commit_scan_from(report, work, self.settings.lifecycle.confirm_after)
            .await;
        match recorded {
            Ok(recorded) => {
                let outcome = if report.complete {
                    "completed"
                } else {
                    "incomplete"
                };
                self.metrics.scan_runs.with_label_values(&[outcome]).inc();
                for (tenant, n) in &recorded.newly_confirmed {
                    self.metrics
                        .new_orphans
                        .with_label_values(&[tenant.as_str()])
                        .inc_by(*n);
                }
                log_suppressions(&recorded.suppressions);
                self.publish(report).await;
                tracing::info!(
                    notifications = recorded.notifications,
                    complete = report.complete,
                    identities = report.summary.total,
                    orphaned = report.summary.orphaned,
                    unknown = report.summary.unknown,
                    seconds = elapsed,
                    transaction_seconds = recorded.transaction.as_secs_f64(),
                    "scan recorded"
                );
                // After the scan is published (the metrics and the API show it meanwhile), and before
                // the notifier writes to the outbox: the first write after the commit would otherwise
                // pay the automatic checkpoint of the whole scan.
                // The checkpoint logs its own outcome; a failure is counted.
                if self.store.checkpoint().await.is_err() {
                    self.metrics.store_errors.inc();
                }
                if recorded.notifications > 0
                    && let Some(n) = &self.notifier
                {
                    n.wake();
                }
            }
            Err(e) => {
                self.metrics.store_errors.inc();
                self.metrics.scan_runs.with_label_values(&["failed"]).inc();
                tracing::error!(error = %e, "could not record the scan; the previous state stays");
                // Best effort: the row noted at the start should not look like it is still running.
                if self.store.abandon_running_scans().await.is_err() {
                    self.metrics.store_errors.inc();
                }
            }
        }
    }

    /// Updates the cached gauges after a recorded scan.
    async fn publish(&self, report: &ScanReport) {
        for t in &report.tenants {
            if t.inventory_complete {
                let s = &t.summary;
                let counts = [
                    (crate::domain::Verdict::Healthy, s.healthy),
                    (crate::domain::Verdict::Orphaned, s.orphaned),
                    (crate::domain::Verdict::Unknown, s.unknown),
                ];
                self.metrics.set_identities(&t.tenant_id, &counts);
            }
            if let Some(c) = t.subscription_coverage {
                self.metrics
                    .subscription_coverage
                    .with_label_values(&[&t.tenant_id])
                    .set(c.ratio);
            }
            self.metrics
                .scan_incomplete
                .with_label_values(&[&t.tenant_id])
                .set(i64::from(!t.complete));
            if t.complete {
                self.metrics
                    .last_success
                    .with_label_values(&[&t.tenant_id])
                    .set(report.finished_at.timestamp());
            }
        }
        if let Err(e) = self
            .metrics
            .refresh_findings(&self.store, &self.settings.tenant_ids())
            .await
        {
            self.metrics.store_errors.inc();
            tracing::error!(error = %e, "could not count findings");
        }
    }
}

/// Says what applying the allowlist changed: findings it now covers, and findings active again
/// because their suppression ended (expired or deleted).
pub fn log_suppressions(applied: &crate::store::suppressions::Applied) {
    if applied.suppressed > 0 {
        tracing::info!(
            findings = applied.suppressed,
            "findings suppressed by the allowlist"
        );
    }
    if applied.reactivated > 0 {
        tracing::info!(
            findings = applied.reactivated,
            suppressions = ?applied.ended,
            "suppressions ended (expired or removed): their findings are active again"
        );
    }
}

/// Starts the cron job: "on `[schedule] cron`, start a scan unless one is running".
pub async fn start_cron(
    runner: Arc<ScanRunner>,
    metrics: Metrics,
    cron: &str,
) -> anyhow::Result<JobScheduler> {
    let sched = JobScheduler::new().await?;
    let job = Job::new_async(cron, move |_, _| {
        let runner = runner.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            match runner.try_start(Trigger::Schedule) {
                Ok(id) => tracing::info!(scan_id = %id, "scheduled scan started"),
                Err(Busy::AlreadyRunning) => {
                    metrics.scans_skipped.inc();
                    tracing::warn!("scheduled scan skipped: the previous scan is still running");
                }
                Err(Busy::ShuttingDown) => {}
            }
        })
    })?;
    sched.add(job).await?;
    sched.start().await?;
    Ok(sched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions_need_a_seconds_field() {
        assert!(validate_cron("0 */30 * * * *").is_ok());
        assert!(validate_cron("*/5 * * * * *").is_ok());
        assert!(
            validate_cron("0 0 * * *").is_err(),
            "5-field cron is refused"
        );
        assert!(validate_cron("every minute").is_err());
    }
}
