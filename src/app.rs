//! The daemon, assembled: `App::build` binds the listener, opens and migrates the store, builds the Azure
//! clients, metrics and scan runner, and returns without running anything; `App::run_until_stopped`
//! serves HTTP and runs the schedule until the shutdown future resolves.

use crate::api::{self, AppState};
use crate::config::Settings;
use crate::domain::Trigger;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::scan::Scanner;
use crate::scheduler::{ScanRunner, start_cron};
use crate::store::Store;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct App {
    listener: tokio::net::TcpListener,
    settings: Arc<Settings>,
    state: AppState,
    cancel: CancellationToken,
    notifier: Notifier,
}

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        // Said before anything is opened or bound, so it is in the log even when binding fails.
        if settings.http.reads_exposed() {
            tracing::warn!(
                listen = %settings.http.listen,
                "the HTTP API listens on a non-loopback address and its reads need no token: anyone who \
                 can reach it can read every finding, scan and export. Set [http] api_token and \
                 require_token_for_reads = true (MIAUDIT_HTTP__API_TOKEN, \
                 MIAUDIT_HTTP__REQUIRE_TOKEN_FOR_READS=true), or listen on 127.0.0.1"
            );
        }
        let store = Store::connect(&settings.database.url)
            .await
            .with_context(|| format!("opening the database {}", settings.database.url))?
            .retaining(settings.database.retain_scans)
            .notifying(settings.notify.subscribers())
            .suppressing(settings.suppressions.clone());
        let tenants = settings.tenant_ids();
        let metrics = Metrics::new(&tenants);
        match store.abandon_running_scans().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                abandoned = n,
                "scans left running by a previous process were marked abandoned"
            ),
            // A read-only database still serves reads.
            Err(e) => {
                metrics.store_errors.inc();
                tracing::error!(error = %e, "could not mark abandoned scans");
            }
        }
        // Working files of scans a previous process never recorded (a crash).
        match store.remove_stale_work() {
            0 => {}
            n => tracing::info!(removed = n, "removed the working files of unrecorded scans"),
        }
        // Gauges start from what the database holds, so a restart does not zero them.
        for (tenant, verdict, n) in store.latest_verdict_counts().await? {
            metrics
                .managed_identities
                .with_label_values(&[tenant.as_str(), verdict.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        metrics.refresh_findings(&store, &tenants).await?;
        for (tenant, c) in store.latest_coverage().await? {
            metrics
                .subscription_coverage
                .with_label_values(&[tenant.as_str()])
                .set(c.ratio);
        }
        for (tenant, complete, last_success) in store.latest_scan_health().await? {
            metrics
                .scan_incomplete
                .with_label_values(&[tenant.as_str()])
                .set(i64::from(!complete));
            if let Some(at) = last_success {
                metrics
                    .last_success
                    .with_label_values(&[tenant.as_str()])
                    .set(at.timestamp());
            }
        }
        let cancel = CancellationToken::new();
        let scanner = Scanner::new(&settings)?;
        let notifier = Notifier::new(
            store.clone(),
            &settings.notify,
            settings.http.listen,
            metrics.clone(),
        )?;
        let runner = Arc::new(
            ScanRunner::new(
                scanner,
                store.clone(),
                metrics.clone(),
                settings.clone(),
                cancel.clone(),
            )
            .notifying(notifier.clone()),
        );
        let listener = tokio::net::TcpListener::bind(settings.http.listen)
            .await
            .with_context(|| format!("listening on {}", settings.http.listen))?;
        let state = AppState {
            store,
            metrics,
            runner,
            api_token: settings.http.api_token.clone(),
            require_token_for_reads: settings.http.require_token_for_reads,
            metrics_require_token: settings.http.metrics_require_token,
            tenants: Arc::new(tenants),
        };
        Ok(Self {
            listener,
            settings,
            state,
            cancel,
            notifier,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn runner(&self) -> Arc<ScanRunner> {
        self.state.runner.clone()
    }

    /// Serves until `shutdown` resolves: stops accepting, cancels a running scan (nothing partial is
    /// recorded), stops the schedule, returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let cancel = self.cancel.clone();
        tokio::spawn({
            let cancel = cancel.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down");
                cancel.cancel();
            }
        });
        let mut sched = start_cron(
            self.state.runner.clone(),
            self.state.metrics.clone(),
            &self.settings.schedule.cron,
        )
        .await
        .context("starting the schedule")?;
        if self.settings.schedule.scan_on_start {
            let _ = self.state.runner.try_start(Trigger::Startup);
        }
        // The outbox is delivered from start-up: what a previous process enqueued and did not deliver
        // goes out now.
        let delivery = self
            .notifier
            .is_configured()
            .then(|| tokio::spawn(self.notifier.clone().run(cancel.clone())));
        // Suppressions expire on their own clock: re-applied every minute, not only after scans.
        let expiry = tokio::spawn(watch_suppressions(
            self.state.runner.clone(),
            self.state.store.clone(),
            self.state.metrics.clone(),
            self.state.tenants.clone(),
            cancel.clone(),
        ));
        let runner = self.state.runner.clone();
        let store = self.state.store.clone();
        let app = api::router(self.state);
        tracing::info!(addr = %self.listener.local_addr()?, "serving");
        axum::serve(self.listener, app)
            .with_graceful_shutdown(cancel.clone().cancelled_owned())
            .await
            .context("serving HTTP")?;
        cancel.cancel();
        let _ = sched.shutdown().await;
        runner.wait_idle().await;
        if let Some(d) = delivery {
            let _ = d.await;
        }
        let _ = expiry.await;
        store.close().await;
        Ok(())
    }
}

/// Applies the allowlist every minute (and at start), so that a suppression that expires re-activates
/// its findings when it expires, logged, with the finding gauges updated.
async fn watch_suppressions(
    runner: Arc<ScanRunner>,
    store: crate::store::Store,
    metrics: Metrics,
    tenants: Arc<Vec<crate::domain::TenantId>>,
    cancel: CancellationToken,
) {
    loop {
        match store.apply_suppressions(chrono::Utc::now()).await {
            Ok(applied) => {
                crate::scheduler::log_suppressions(&applied);
                if !applied.reactivated_keys.is_empty() {
                    runner.wake_notifier();
                }
                if applied.suppressed + applied.reactivated > 0
                    && let Err(e) = metrics.refresh_findings(&store, &tenants).await
                {
                    metrics.store_errors.inc();
                    tracing::error!(error = %e, "could not count findings");
                }
            }
            Err(e) => {
                metrics.store_errors.inc();
                tracing::error!(error = %e, "could not apply the suppressions");
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
