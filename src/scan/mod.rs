//! One scan through the pipeline: inventory (Graph) -> parse -> resolve (Resource Graph in bulk, ARM to
//! confirm candidates) -> judge -> report. The imperative shell: decisions are `classify`'s, storage is
//! `store`'s.
//!
//! Memory: nothing per identity is held across stages. Graph and Resource Graph pages go into the scan's
//! working database (`store::work`) as they arrive, and candidates, evidence and verdicts move through
//! it in key-ordered chunks of [`crate::store::work::CHUNK`]; what the process holds is a few pages,
//! one chunk, and the small sets of subscriptions and resource types that Resource Graph is asked about.
//!
//! Completeness: a tenant is complete when its Graph inventory was read to the end and no check ended
//! in `check_failed`. Unknown verdicts that are answers (403, a subscription we cannot see, unreadable
//! `alternativeNames`) do not make a scan incomplete; failures to get an answer do.

use crate::arm::ArmClient;
use crate::azure::http::AzureHttp;
use crate::azure::transport::{RetryPolicy, Transport};
use crate::azure::{ApiCounts, Counters, auth::TokenProvider};
use crate::config::Settings;
use crate::domain::{Summary, TenantId, Trigger};
use crate::graph::GraphClient;
use crate::report::{ScanReport, TenantReport};
use crate::store::work::{WorkFile, WorkStore};
use crate::store::{Store, StoreError};
use chrono::Utc;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;

/// A scan made for a store: its report and, handed over beside it, the scan's working database, which
/// holds every verdict (`scan_results`) for recording to read and is deleted when dropped. `None` when
/// the scan worked in memory (no store, or one that cannot be written): the report then holds every
/// verdict.
pub struct Scanned {
    pub report: ScanReport,
    pub work: Option<WorkFile>,
}

/// One tenant's clients: its token cache, provider cache and quota pacers live as long as the scanner.
struct TenantClients {
    graph: GraphClient,
    arm: ArmClient,
    tokens: Arc<TokenProvider>,
    counters: Arc<Counters>,
}

/// The Azure clients of scans, built from settings.
pub struct Scanner {
    client: reqwest::Client,
    policy: RetryPolicy,
    authority_host: String,
    /// `[auth]`, and the tenants with a `[tenants.auth]` of their own.
    auth: crate::config::AuthSettings,
    tenant_auth: HashMap<TenantId, crate::config::AuthSettings>,
    /// The tenants in another cloud than `[azure]`'s, with that cloud's endpoints and audiences.
    tenant_azure: HashMap<TenantId, crate::config::AzureSettings>,
    graph_endpoint: String,
    arm_endpoint: String,
    graph_scope: String,
    arm_scope: String,
    /// Every tenant's counts roll up here (metrics read it).
    counters: Arc<Counters>,
    max_concurrent_tenants: usize,
    concurrency: usize,
    graph_delta: bool,
    /// How long one tenant's scan may take: a little under the whole scan's timeout.
    tenant_deadline: std::time::Duration,
    tenants: parking_lot::Mutex<HashMap<TenantId, Arc<TenantClients>>>,
}

/// A full listing at least this often, even with delta (directory delta tokens live 7 days, G-DELTA).
const FULL_SYNC_EVERY: chrono::TimeDelta = chrono::TimeDelta::days(6);

impl Scanner {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        // Redirects are never followed: a 307/308 would re-send the token request (and its secret) or a
        // bearer token to wherever it points, and an answer from elsewhere is no answer about the resource.
        let client = reqwest::Client::builder()
            .user_agent(concat!("miaudit/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(
                settings
                    .scan
                    .request_timeout
                    .min(std::time::Duration::from_secs(10)),
            )
            .build()?;
        let policy = RetryPolicy {
            timeout: settings.scan.request_timeout,
            max_retries: settings.scan.max_retries,
            base_delay: settings.scan.retry_base_delay,
            max_delay: settings.scan.retry_max_delay,
            max_server_wait: settings.scan.max_server_wait,
            max_response_bytes: settings.scan.max_response_bytes,
        };
        Ok(Self {
            client,
            policy,
            authority_host: settings.azure.authority_host.clone(),
            auth: settings.auth.clone(),
            tenant_azure: settings
                .tenants
                .iter()
                .filter_map(|t| Some((t.id.clone(), t.azure.clone()?)))
                .collect(),
            tenant_auth: settings
                .tenants
                .iter()
                .filter_map(|t| Some((t.id.clone(), t.auth.clone()?)))
                .collect(),
            graph_endpoint: settings.azure.graph_endpoint.clone(),
            arm_endpoint: settings.azure.arm_endpoint.clone(),
            graph_scope: settings.azure.graph_scope.clone(),
            arm_scope: settings.azure.arm_scope.clone(),
            counters: Arc::new(Counters::default()),
            concurrency: settings.scan.concurrency,
            max_concurrent_tenants: settings.scan.max_concurrent_tenants,
            graph_delta: settings.scan.graph_delta,
            tenant_deadline: settings.scan.timeout.mul_f64(0.9),
            tenants: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// A tenant's `.default` audiences for Graph and ARM.
    fn scopes(&self, tenant: &TenantId) -> (&str, &str) {
        match self.tenant_azure.get(tenant) {
            Some(c) => (&c.graph_scope, &c.arm_scope),
            None => (&self.graph_scope, &self.arm_scope),
        }
    }

    fn clients(&self, tenant: &TenantId) -> Arc<TenantClients> {
        let mut map = self.tenants.lock();
        map.entry(tenant.clone())
            .or_insert_with(|| {
                let counters = Arc::new(Counters::child_of(self.counters.clone()));
                let transport =
                    Transport::new(self.client.clone(), self.policy.clone(), counters.clone());
                let cloud = self.tenant_azure.get(tenant);
                let authority = cloud.map_or(&self.authority_host, |c| &c.authority_host);
                let tokens = Arc::new(TokenProvider::new(
                    transport.clone(),
                    authority,
                    self.tenant_auth.get(tenant).unwrap_or(&self.auth),
                ));
                let http = AzureHttp::new(
                    transport,
                    tokens.clone(),
                    cloud.map_or(&self.graph_scope, |c| &c.graph_scope).clone(),
                    cloud.map_or(&self.arm_scope, |c| &c.arm_scope).clone(),
                );
                Arc::new(TenantClients {
                    graph: GraphClient::new(
                        http.clone(),
                        cloud.map_or(&self.graph_endpoint, |c| &c.graph_endpoint),
                    ),
                    arm: ArmClient::new(
                        http,
                        cloud.map_or(&self.arm_endpoint, |c| &c.arm_endpoint),
                    ),
                    tokens,
                    counters,
                })
            })
            .clone()
    }

    /// Scans every tenant, `[scan] max_concurrent_tenants` at a time, without a store: every verdict is in the
    /// report.
    pub async fn run(&self, tenants: &[TenantId], trigger: Trigger) -> ScanReport {
        self.run_as(uuid::Uuid::new_v4().to_string(), tenants, trigger, None)
            .await
            .report
    }

    /// [`Scanner::run`] with a scan id chosen by the caller (the daemon announces it before the scan).
    /// With a store that can be written, the scan works in its staging tables (memory stays flat; the
    /// report has its `work` file) and the opt-in Graph delta inventory continues from the last recorded
    /// scan.
    /// Without one, it works in a private in-memory database and the report holds every verdict.
    pub async fn run_as(
        &self,
        scan_id: String,
        tenants: &[TenantId],
        trigger: Trigger,
        store: Option<&Store>,
    ) -> Scanned {
        let mut report = started_report(scan_id, trigger);
        let (staging, work) = match open_working_database(store, &report.scan_id).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "cannot open a working database for the scan");
                report.complete = false;
                report.tenants = tenants
                    .iter()
                    .map(|t| {
                        let mut tr = failed_tenant(t, format!("working database: {e}"));
                        tr.staging_failed = true;
                        tr
                    })
                    .collect();
                return Scanned { report, work: None };
            }
        };
        // The stored inventory a Graph delta continues from: only when opted in and scanning for a store.
        let delta = store.filter(|_| self.graph_delta && work.is_some());
        let results = self
            .scan_tenants(&report.scan_id, tenants, &staging, delta, store)
            .await;
        for tr in results {
            report.complete &= tr.complete;
            report.summary.merge(&tr.summary);
            report.tenants.push(tr);
        }
        // A scan into a store leaves its verdicts in the working file it hands over (recording and the
        // report on stdout read them from there as they go); a scan in memory puts them in the report.
        if work.is_none() {
            read_back_verdicts(&staging, &mut report).await;
        }
        // Closed before recording attaches the file.
        staging.close().await;
        report.finished_at = Utc::now();
        Scanned { report, work }
    }

    /// Every tenant's scan under one deadline, a little under the scan's own timeout, so that a tenant
    /// that never ends (a service paging for ever) is reported incomplete before the whole scan is
    /// abandoned; tenants run `[scan] max_concurrent_tenants` at a time (each has its own principal, so its
    /// own Resource Graph and ARM quotas (ARG-THR: per user; ARM-THR: per principal), and its own token), the next starting as one ends. In the
    /// order of `tenants`.
    async fn scan_tenants(
        &self,
        scan_id: &str,
        tenants: &[TenantId],
        staging: &WorkStore,
        delta: Option<&Store>,
        store: Option<&Store>,
    ) -> Vec<TenantReport> {
        let deadline = tokio::time::Instant::now() + self.tenant_deadline;
        let scans: Vec<_> = tenants
            .iter()
            .map(|t| self.scan_isolated(scan_id, t, staging, delta, store, deadline))
            .collect();
        futures::stream::iter(scans)
            .buffered(self.max_concurrent_tenants.max(1))
            .collect()
            .await
    }

    /// One tenant's scan, with a panic in it (a bug, never expected) turned into that tenant's error: the
    /// tenant is incomplete, the other tenants and the scan go on, and nothing shared is left poisoned.
    /// It also ends at the scan-wide `deadline` (a little under the whole scan's timeout), so a service
    /// that pages for ever makes that tenant incomplete rather than the whole scan abandoned.
    async fn scan_isolated(
        &self,
        scan_id: &str,
        tenant: &TenantId,
        staging: &WorkStore,
        delta: Option<&Store>,
        record: Option<&Store>,
        deadline: tokio::time::Instant,
    ) -> TenantReport {
        use futures::FutureExt;
        let run = std::panic::AssertUnwindSafe(
            self.scan_counted(scan_id, tenant, staging, delta, record),
        );
        let outcome = tokio::time::timeout_at(deadline, run.catch_unwind()).await;
        if !matches!(outcome, Ok(Ok(_))) {
            // Reported with none judged, so none of the verdicts it had staged is recorded.
            if let Err(e) = staging.unstage_results(scan_id, tenant).await {
                tracing::error!(%tenant, error = %e, "the verdicts of a tenant cut short could not be removed");
            }
        }
        match outcome {
            Err(_) => {
                tracing::error!(%tenant, deadline = ?self.tenant_deadline, "the tenant's scan ran out of time; it is reported incomplete");
                failed_tenant(
                    tenant,
                    format!(
                        "the scan's tenants did not all finish within {:?} (90% of [scan] timeout)",
                        self.tenant_deadline
                    ),
                )
            }
            Ok(Ok(tr)) => tr,
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .map_or_else(|| "unknown cause".into(), |m| crate::azure::shorten(&m));
                tracing::error!(%tenant, panic = %what, "the tenant's scan panicked; it is reported incomplete");
                failed_tenant(tenant, format!("internal error (panic): {what}"))
            }
        }
    }

    /// One tenant's scan with the requests it made.
    async fn scan_counted(
        &self,
        scan_id: &str,
        tenant: &TenantId,
        staging: &WorkStore,
        delta: Option<&Store>,
        record: Option<&Store>,
    ) -> TenantReport {
        let clients = self.clients(tenant);
        let before = clients.counters.snapshot();
        let mut tr = self
            .scan_tenant(scan_id, tenant, &clients, staging, delta, record)
            .await;
        let after = clients.counters.snapshot();
        tr.requests = after
            .into_iter()
            .map(|(k, a)| {
                let b = before.get(&k).copied().unwrap_or_default();
                (
                    k,
                    ApiCounts {
                        requests: a.requests - b.requests,
                        throttled: a.throttled - b.throttled,
                        retries: a.retries - b.retries,
                        failures: a.failures - b.failures,
                    },
                )
            })
            .collect();
        tr
    }
}

/// The report of a scan starting now, complete until something fails.
fn started_report(scan_id: String, trigger: Trigger) -> ScanReport {
    let started_at = Utc::now();
    ScanReport {
        scan_id,
        started_at,
        finished_at: started_at,
        complete: true,
        trigger,
        tenants: Vec::new(),
        summary: Summary::default(),
        findings: Vec::new(),
    }
}

/// The scan's working database: for a store that can be written, a file beside it (handed over with the
/// report); otherwise memory (a report of every verdict is wanted then anyway).
async fn open_working_database(
    store: Option<&Store>,
    scan_id: &str,
) -> Result<(WorkStore, Option<WorkFile>), StoreError> {
    match store.filter(|s| s.writable()) {
        Some(s) => s.open_work(scan_id).await.map(|(w, f)| (w, Some(f))),
        None => WorkStore::open_in_memory().await.map(|w| (w, None)),
    }
}

/// Every verdict of a scan without a store, read back from its working database into the report.
/// Verdicts that were written but cannot be read back leave every tenant incomplete: nothing may be
/// concluded from them.
async fn read_back_verdicts(staging: &WorkStore, report: &mut ScanReport) {
    let verdicts = staging.stream_results(&report.scan_id, None, false);
    match futures::TryStreamExt::try_collect(verdicts).await {
        Ok(f) => report.findings = f,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the scan's verdicts back");
            report.complete = false;
            for t in &mut report.tenants {
                t.staging_failed = true;
                t.complete = false;
                t.inventory_complete = false;
                t.errors.push(format!("working database: {e}"));
            }
        }
    }
}

/// A tenant whose scan could not start: incomplete, with the reason.
fn failed_tenant(tenant: &TenantId, error: String) -> TenantReport {
    TenantReport {
        complete: false,
        inventory_complete: false,
        errors: vec![error],
        ..TenantReport::new(tenant)
    }
}

pub mod check;
mod stages;
