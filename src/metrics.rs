//! Publish (Prometheus): the daemon's metrics in its own registry (never the global one), rendered in
//! the text exposition format 0.0.4. Labels are bounded: tenant ids from configuration, verdicts,
//! states, API names, status classes, outcomes. No per-identity label, ever.

use crate::azure::{Api, Counters, ErrorKind, STATUS_CLASSES};
use crate::domain::{TenantId, Verdict};
use crate::lifecycle::State;
use parking_lot::Mutex;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Outcomes of scan runs.
pub const SCAN_OUTCOMES: [&str; 5] = ["completed", "incomplete", "failed", "timeout", "cancelled"];

/// Per API: answers per status class, and 429s, as last exported.
type Exported = ([[u64; 5]; 4], [u64; 4], [[u64; 6]; 4]);

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub managed_identities: IntGaugeVec,
    pub new_orphans: IntCounterVec,
    pub last_success: IntGaugeVec,
    pub scan_duration: Histogram,
    pub findings: IntGaugeVec,
    pub scan_runs: IntCounterVec,
    pub scans_skipped: IntCounter,
    pub azure_requests: IntCounterVec,
    pub azure_throttled: IntCounterVec,
    pub azure_failures: IntCounterVec,
    pub azure_quota: IntGaugeVec,
    pub store_errors: IntCounter,
    pub build_info: IntGaugeVec,
    pub subscription_coverage: prometheus::GaugeVec,
    pub notifications: IntCounterVec,
    pub outbox_pending: IntGaugeVec,
    pub scan_incomplete: IntGaugeVec,
    pub oldest_unacknowledged: IntGaugeVec,
    pub orphans_with_roles: IntGaugeVec,
    pub orphans_privileged: IntGaugeVec,
    pub dangling: IntGaugeVec,
    /// Azure counters already exported, so only deltas are added.
    seen: std::sync::Arc<Mutex<Exported>>,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique within the registry");
    c
}

impl Metrics {
    /// Creates every metric, with zeroed series for each configured tenant.
    pub fn new(tenants: &[TenantId]) -> Self {
        let r = Registry::new();
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let m = Self {
            managed_identities: gauge_vec(
                "miaudit_managed_identities",
                "Managed identities by verdict in the latest scan of each tenant (cached, not live).",
                &["tenant_id", "verdict"],
            ),
            new_orphans: counter_vec(
                "miaudit_new_orphans_total",
                "Findings that entered the confirmed state since this process started.",
                &["tenant_id"],
            ),
            last_success: gauge_vec(
                "miaudit_last_scan_success_timestamp_seconds",
                "Unix time of the latest complete scan of each tenant (0: none yet).",
                &["tenant_id"],
            ),
            scan_duration: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("miaudit_scan_duration_seconds", "Duration of scan runs.")
                        .buckets(vec![
                            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0,
                        ]),
                )
                .expect("valid metric"),
            ),
            findings: gauge_vec(
                "miaudit_findings",
                "Findings by lifecycle state after the latest scan (cached, not live).",
                &["tenant_id", "state"],
            ),
            scan_runs: counter_vec(
                "miaudit_scan_runs_total",
                "Scan runs by outcome: completed, incomplete, failed, timeout, cancelled.",
                &["outcome"],
            ),
            scans_skipped: register(
                &r,
                IntCounter::new(
                    "miaudit_scans_skipped_total",
                    "Scheduled scans skipped because a scan was still running.",
                )
                .expect("valid metric"),
            ),
            azure_requests: counter_vec(
                "miaudit_azure_requests_total",
                "Requests to Azure APIs by API and answer status class (error: no answer).",
                &["api", "status_class"],
            ),
            azure_throttled: counter_vec(
                "miaudit_azure_throttled_total",
                "HTTP 429 answers from Azure APIs.",
                &["api"],
            ),
            azure_failures: counter_vec(
                "miaudit_azure_failures_total",
                "Azure calls that gave no usable answer, by API and kind (throttled, transient, denied, not_found, malformed, storage).",
                &["api", "kind"],
            ),
            azure_quota: gauge_vec(
                "miaudit_azure_quota_remaining",
                "Last remaining request quota an Azure API announced (Resource Graph user quota, ARM reads).",
                &["api"],
            ),
            store_errors: register(
                &r,
                IntCounter::new(
                    "miaudit_store_errors_total",
                    "Database errors while recording scans or answering the API.",
                )
                .expect("valid metric"),
            ),
            build_info: gauge_vec(
                "miaudit_build_info",
                "Build information; the value is always 1.",
                &["version", "commit"],
            ),
            subscription_coverage: register(
                &r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "miaudit_subscription_coverage_ratio",
                        "Share of the subscriptions named by a tenant's managed identities that its credential can list, after the latest scan that listed both (1: all).",
                    ),
                    &["tenant_id"],
                )
                .expect("valid metric"),
            ),
            notifications: counter_vec(
                "miaudit_notifications_total",
                "Notification delivery attempts by webhook and outcome: delivered, failed (will retry), dead (given up).",
                &["sink", "outcome"],
            ),
            outbox_pending: gauge_vec(
                "miaudit_notification_outbox_pending",
                "Notifications waiting in the outbox for delivery, by webhook.",
                &["sink"],
            ),
            scan_incomplete: gauge_vec(
                "miaudit_scan_incomplete",
                "1 when the latest recorded scan of the tenant was incomplete (some identities unknown, or the inventory cut short), else 0.",
                &["tenant_id"],
            ),
            oldest_unacknowledged: gauge_vec(
                "miaudit_oldest_unacknowledged_orphan_timestamp_seconds",
                "Unix time the oldest confirmed orphan without a support ticket was confirmed (0: none).",
                &["tenant_id"],
            ),
            orphans_with_roles: gauge_vec(
                "miaudit_orphans_with_role_assignments",
                "Open orphans whose principal still holds Azure role assignments (after the latest scan).",
                &["tenant_id"],
            ),
            orphans_privileged: gauge_vec(
                "miaudit_orphans_with_privileged_role_assignments",
                "Open orphans whose principal still holds a privileged role (Owner, Contributor, User Access Administrator, ...): high risk.",
                &["tenant_id"],
            ),
            dangling: gauge_vec(
                "miaudit_dangling_role_assignments",
                "Role assignments to service principals that no longer exist (\"Identity not found\"), confirmed across scans spanning confirm_after, after the latest scan that could judge them.",
                &["tenant_id"],
            ),
            registry: r,
            seen: Default::default(),
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::GIT_COMMIT])
            .set(1);
        m.zero_series(tenants);
        m
    }

    /// Every series a rule or a dashboard reads exists from start-up, at zero: per configured tenant,
    /// per scan outcome, per API, status class and error kind.
    fn zero_series(&self, tenants: &[TenantId]) {
        for t in tenants.iter().map(TenantId::as_str) {
            for v in Verdict::ALL {
                self.managed_identities
                    .with_label_values(&[t, v.as_str()])
                    .set(0);
            }
            for s in State::ALL {
                self.findings.with_label_values(&[t, s.as_str()]).set(0);
            }
            self.new_orphans.with_label_values(&[t]);
            self.last_success.with_label_values(&[t]).set(0);
            self.scan_incomplete.with_label_values(&[t]).set(0);
            self.oldest_unacknowledged.with_label_values(&[t]).set(0);
            self.orphans_with_roles.with_label_values(&[t]).set(0);
            self.orphans_privileged.with_label_values(&[t]).set(0);
            self.dangling.with_label_values(&[t]).set(0);
            // Unknown until a scan lists both (NaN: no comparison is true, so no alert on it).
            self.subscription_coverage
                .with_label_values(&[t])
                .set(f64::NAN);
        }
        for o in SCAN_OUTCOMES {
            self.scan_runs.with_label_values(&[o]);
        }
        for api in Api::ALL {
            self.azure_throttled.with_label_values(&[api.as_str()]);
            for k in ErrorKind::ALL {
                self.azure_failures
                    .with_label_values(&[api.as_str(), k.as_str()]);
            }
            for c in STATUS_CLASSES {
                self.azure_requests.with_label_values(&[api.as_str(), c]);
            }
        }
    }

    /// Adds what the Azure counters gained since the last call.
    pub fn sync_azure(&self, counters: &Counters) {
        let mut seen = self.seen.lock();
        for api in Api::ALL {
            let i = api as usize;
            let classes = counters.by_class(api);
            for (c, now) in classes.iter().enumerate() {
                let delta = now.saturating_sub(seen.0[i][c]);
                if delta > 0 {
                    self.azure_requests
                        .with_label_values(&[api.as_str(), STATUS_CLASSES[c]])
                        .inc_by(delta);
                }
                seen.0[i][c] = *now;
            }
            let throttled = counters.get(api).throttled;
            let delta = throttled.saturating_sub(seen.1[i]);
            if delta > 0 {
                self.azure_throttled
                    .with_label_values(&[api.as_str()])
                    .inc_by(delta);
            }
            seen.1[i] = throttled;
            for (k, now) in counters.failures_by_kind(api).iter().enumerate() {
                let delta = now.saturating_sub(seen.2[i][k]);
                if delta > 0 {
                    self.azure_failures
                        .with_label_values(&[api.as_str(), ErrorKind::ALL[k].as_str()])
                        .inc_by(delta);
                }
                seen.2[i][k] = *now;
            }
            if let Some(q) = counters.last_quota(api) {
                self.azure_quota.with_label_values(&[api.as_str()]).set(q);
            }
        }
    }

    /// Sets the finding gauges from the store's counts (states absent from the counts are zero).
    pub fn set_findings(&self, tenants: &[TenantId], counts: &[(TenantId, Option<State>, u64)]) {
        for t in tenants {
            for s in State::ALL {
                let n = counts
                    .iter()
                    .find(|(ct, cs, _)| ct == t && *cs == Some(s))
                    .map_or(0, |c| c.2);
                self.findings
                    .with_label_values(&[t.as_str(), s.as_str()])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// Sets every gauge of findings from the store: counts per state, the oldest unacknowledged orphan,
    /// orphans with (privileged) role assignments, dangling role assignments. After anything that moves
    /// findings: a recorded scan, an acknowledgement, the allowlist, start-up.
    pub async fn refresh_findings(
        &self,
        store: &crate::store::Store,
        tenants: &[TenantId],
    ) -> Result<(), crate::store::StoreError> {
        self.set_findings(tenants, &store.count_findings_by_state().await?);
        self.set_oldest_unacknowledged(tenants, &store.oldest_unacknowledged().await?);
        self.set_orphan_roles(tenants, &store.orphan_role_counts().await?);
        self.set_dangling(tenants, &store.dangling_counts().await?);
        Ok(())
    }

    /// Sets the oldest-unacknowledged gauges from the store (tenants absent from `oldest` have none).
    pub fn set_oldest_unacknowledged(
        &self,
        tenants: &[TenantId],
        oldest: &[(TenantId, chrono::DateTime<chrono::Utc>)],
    ) {
        for t in tenants {
            let at = oldest
                .iter()
                .find(|(ot, _)| ot == t)
                .map_or(0, |o| o.1.timestamp());
            self.oldest_unacknowledged
                .with_label_values(&[t.as_str()])
                .set(at);
        }
    }

    /// Sets the blast-radius gauges from the store's counts (tenants absent from them have none).
    pub fn set_orphan_roles(&self, tenants: &[TenantId], counts: &[(TenantId, u64, u64)]) {
        for t in tenants {
            let (n, p) = counts
                .iter()
                .find(|(ct, _, _)| ct == t)
                .map_or((0, 0), |c| (c.1, c.2));
            self.orphans_with_roles
                .with_label_values(&[t.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
            self.orphans_privileged
                .with_label_values(&[t.as_str()])
                .set(i64::try_from(p).unwrap_or(i64::MAX));
        }
    }

    /// Sets the dangling-assignment gauges from the store's counts.
    pub fn set_dangling(&self, tenants: &[TenantId], counts: &[(TenantId, u64)]) {
        for t in tenants {
            let n = counts.iter().find(|(ct, _)| ct == t).map_or(0, |c| c.1);
            self.dangling
                .with_label_values(&[t.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sets the identity gauges of one tenant from its latest scan.
    pub fn set_identities(&self, tenant: &TenantId, counts: &[(Verdict, u64)]) {
        for v in Verdict::ALL {
            let n = counts.iter().find(|(cv, _)| *cv == v).map_or(0, |c| c.1);
            self.managed_identities
                .with_label_values(&[tenant.as_str(), v.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenant_has_zero_series_from_the_start() {
        let m = Metrics::new(&["t1".into()]);
        let text = m.render();
        assert!(
            text.contains(r#"miaudit_managed_identities{tenant_id="t1",verdict="orphaned"} 0"#)
        );
        assert!(text.contains(r#"miaudit_findings{state="confirmed",tenant_id="t1"} 0"#));
        assert!(text.contains(r#"miaudit_new_orphans_total{tenant_id="t1"} 0"#));
        assert!(text.contains(r#"miaudit_last_scan_success_timestamp_seconds{tenant_id="t1"} 0"#));
        assert!(text.contains(&format!(
            "miaudit_build_info{{commit=\"{}\",version=\"{}\"}} 1",
            crate::GIT_COMMIT,
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains("# HELP miaudit_findings Findings by lifecycle state after the latest scan (cached, not live)."));
    }

    #[test]
    fn azure_counters_are_added_as_deltas() {
        let m = Metrics::new(&[]);
        let c = Counters::default();
        c.answered(Api::Graph, Some(200));
        c.answered(Api::Graph, Some(429));
        c.throttled(Api::Graph);
        c.failure(Api::Arm, ErrorKind::Malformed);
        m.sync_azure(&c);
        m.sync_azure(&c);
        c.answered(Api::Graph, None);
        m.sync_azure(&c);
        let text = m.render();
        assert!(
            text.contains(r#"miaudit_azure_requests_total{api="graph",status_class="2xx"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"miaudit_azure_requests_total{api="graph",status_class="4xx"} 1"#));
        assert!(
            text.contains(r#"miaudit_azure_requests_total{api="graph",status_class="error"} 1"#)
        );
        assert!(text.contains(r#"miaudit_azure_throttled_total{api="graph"} 1"#));
        assert!(text.contains(r#"miaudit_azure_failures_total{api="arm",kind="malformed"} 1"#));
        assert!(text.contains(r#"miaudit_azure_failures_total{api="arm",kind="throttled"} 0"#));
    }
}
