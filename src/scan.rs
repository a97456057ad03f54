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

use crate::arm::{ARG_SUBSCRIPTION_BATCH, ArgHit, ArgTable, ArmClient, Subscription};
use crate::azure::http::AzureHttp;
use crate::azure::transport::{RetryPolicy, Transport};
use crate::azure::{ApiCounts, Counters, PageSink, auth::TokenProvider};
use crate::classify::judge;
use crate::config::Settings;
use crate::domain::{Evidence, Finding, ManagedIdentity, Reason, Summary, Trigger};
use crate::graph::GraphClient;
use crate::report::{ScanReport, TenantReport};
use crate::store::Store;
use crate::store::work::{Candidate, Checked, WorkFile, WorkStore};
use chrono::Utc;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A scan made for a store: its report and, handed over beside it, the scan's working database, which
/// holds every verdict (`scan_results`) for recording to read and is deleted when dropped. `None` when
/// the scan worked in memory (no store, or one that cannot be written): the report then holds every
/// verdict.
pub struct Scanned {
    pub report: ScanReport,
    pub work: Option<WorkFile>,
}

/// Tenants scanned at once. Each tenant has its own principal, so its own Resource Graph and ARM
/// quotas (ARG-THR: per user; ARM-THR: per principal), and its own token.
pub const PARALLEL_TENANTS: usize = 4;

/// One tenant's clients: its token cache, provider cache and quota pacers live as long as the scanner.
struct TenantClients {
    graph: GraphClient,
    arm: ArmClient,
    counters: Arc<Counters>,
}

/// The Azure clients of scans, built from settings.
pub struct Scanner {
    client: reqwest::Client,
    policy: RetryPolicy,
    authority_host: String,
    client_id: String,
    secret: crate::config::Secret,
    graph_endpoint: String,
    arm_endpoint: String,
    graph_scope: String,
    arm_scope: String,
    /// Every tenant's counts roll up here (metrics read it).
    counters: Arc<Counters>,
    concurrency: usize,
    graph_delta: bool,
    /// How long one tenant's scan may take: a little under the whole scan's timeout.
    tenant_deadline: std::time::Duration,
    tenants: parking_lot::Mutex<HashMap<String, Arc<TenantClients>>>,
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
        let auth = &settings.auth;
        let secret = auth
            .client_secret
            .clone()
            .ok_or_else(|| anyhow::anyhow!("auth.client_secret: no client secret configured"))?;
        Ok(Self {
            client,
            policy,
            authority_host: settings.azure.authority_host.clone(),
            client_id: auth.client_id.clone().unwrap_or_default(),
            secret,
            graph_endpoint: settings.azure.graph_endpoint.clone(),
            arm_endpoint: settings.azure.arm_endpoint.clone(),
            graph_scope: settings.azure.graph_scope.clone(),
            arm_scope: settings.azure.arm_scope.clone(),
            counters: Arc::new(Counters::default()),
            concurrency: settings.scan.concurrency,
            graph_delta: settings.scan.graph_delta,
            tenant_deadline: settings.scan.timeout.mul_f64(0.9),
            tenants: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    fn clients(&self, tenant: &str) -> Arc<TenantClients> {
        let mut map = self.tenants.lock();
        map.entry(tenant.to_owned())
            .or_insert_with(|| {
                let counters = Arc::new(Counters::child_of(self.counters.clone()));
                let transport =
                    Transport::new(self.client.clone(), self.policy.clone(), counters.clone());
                let tokens = Arc::new(TokenProvider::new(
                    transport.clone(),
                    &self.authority_host,
                    self.client_id.clone(),
                    self.secret.clone(),
                ));
                let http = AzureHttp::new(
                    transport,
                    tokens,
                    self.graph_scope.clone(),
                    self.arm_scope.clone(),
                );
                Arc::new(TenantClients {
                    graph: GraphClient::new(http.clone(), &self.graph_endpoint),
                    arm: ArmClient::new(http, &self.arm_endpoint),
                    counters,
                })
            })
            .clone()
    }

    /// Scans every tenant, [`PARALLEL_TENANTS`] at a time, without a store: every verdict is in the
    /// report.
    pub async fn run(&self, tenants: &[String], trigger: Trigger) -> ScanReport {
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
        tenants: &[String],
        trigger: Trigger,
        store: Option<&Store>,
    ) -> Scanned {
        let started_at = Utc::now();
        let mut report = ScanReport {
            scan_id,
            started_at,
            finished_at: started_at,
            complete: true,
            trigger,
            tenants: Vec::new(),
            summary: Summary::default(),
            findings: Vec::new(),
        };
        // A store that can be written gets a working database file beside it; otherwise the scan works
        // in memory (a report of every verdict is wanted then anyway).
        let opened = match store.filter(|s| s.writable()) {
            Some(s) => s
                .open_work(&report.scan_id)
                .await
                .map(|(w, f)| (w, Some(f))),
            None => WorkStore::open_in_memory().await.map(|w| (w, None)),
        };
        let (staging, work) = match opened {
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
        // One deadline for every tenant of the scan, a little under the scan's own timeout, so that a
        // tenant that never ends (a service paging for ever) is reported incomplete before the whole
        // scan is abandoned; tenants run [`PARALLEL_TENANTS`] at a time, the next starting as one ends.
        let deadline = tokio::time::Instant::now() + self.tenant_deadline;
        let scan_id = report.scan_id.clone();
        let scans: Vec<_> = tenants
            .iter()
            .map(|t| self.scan_isolated(&scan_id, t, &staging, delta, store, deadline))
            .collect();
        let results: Vec<TenantReport> = futures::stream::iter(scans)
            .buffered(PARALLEL_TENANTS)
            .collect()
            .await;
        for tr in results {
            report.complete &= tr.complete;
            report.summary.merge(&tr.summary);
            report.tenants.push(tr);
        }
        match staging
            .staged_results(&report.scan_id, work.is_some())
            .await
        {
            Ok(f) => report.findings = f,
            Err(e) => {
                // The verdicts were written but cannot be read back: nothing may be concluded from them.
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
        // Closed before recording attaches the file.
        staging.close().await;
        report.finished_at = Utc::now();
        Scanned { report, work }
    }

    /// One tenant's scan, with a panic in it (a bug, never expected) turned into that tenant's error: the
    /// tenant is incomplete, the other tenants and the scan go on, and nothing shared is left poisoned.
    /// It also ends at the scan-wide `deadline` (a little under the whole scan's timeout), so a service
    /// that pages for ever makes that tenant incomplete rather than the whole scan abandoned.
    async fn scan_isolated(
        &self,
        scan_id: &str,
        tenant: &str,
        staging: &WorkStore,
        delta: Option<&Store>,
        record: Option<&Store>,
        deadline: tokio::time::Instant,
    ) -> TenantReport {
        use futures::FutureExt;
        let run = std::panic::AssertUnwindSafe(
            self.scan_counted(scan_id, tenant, staging, delta, record),
        );
        match tokio::time::timeout_at(deadline, run.catch_unwind()).await {
            Err(_) => {
                tracing::error!(tenant, deadline = ?self.tenant_deadline, "the tenant's scan ran out of time; it is reported incomplete");
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
                tracing::error!(tenant, panic = %what, "the tenant's scan panicked; it is reported incomplete");
                failed_tenant(tenant, format!("internal error (panic): {what}"))
            }
        }
    }

    /// One tenant's scan with the requests it made.
    async fn scan_counted(
        &self,
        scan_id: &str,
        tenant: &str,
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

    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    async fn scan_tenant(
        &self,
        scan_id: &str,
        tenant: &str,
        clients: &TenantClients,
        staging: &WorkStore,
        delta: Option<&Store>,
        record: Option<&Store>,
    ) -> TenantReport {
        let mut tr = TenantReport::new(tenant);
        let ctx = Staging {
            work: staging,
            scan_id,
            tenant,
        };
        if let Err(e) = self.inventory(&ctx, clients, delta, &mut tr).await {
            tracing::warn!(error = %e, "inventory failed");
            tr.staging_failed = matches!(e, crate::azure::AzureError::Staging(_));
            tr.complete = false;
            tr.inventory_complete = false;
            tr.errors.push(format!("inventory: {e}"));
            return tr;
        }
        clients.arm.begin_scan();
        let subscriptions = match clients.arm.fetch_subscriptions(tenant).await {
            Ok(s) => Some(s),
            Err(e) => {
                // Without the list, a 403 cannot be told from a subscription we cannot see, nor a
                // transfer proven: the checks still run, but the tenant was not fully checked.
                tracing::warn!(error = %e, "subscription list failed");
                tr.complete = false;
                tr.errors.push(format!("subscriptions: {e}"));
                None
            }
        };
        let verdicts = async {
            // Open findings are checked by ARM whatever Resource Graph shows: only ARM may resolve them.
            // If they cannot be read, no identity is taken on Resource Graph's word.
            let trust_arg = match record {
                None => true,
                Some(store) => match store.open_finding_keys(tenant).await {
                    Ok(keys) => {
                        ctx.work.stage_must_check(scan_id, tenant, &keys).await?;
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "open findings could not be read; every identity goes to ARM");
                        false
                    }
                },
            };
            self.resolve(
                &ctx,
                &clients.arm,
                subscriptions.as_ref(),
                trust_arg,
                &mut tr,
            )
            .await?;
            self.judge_all(&ctx, subscriptions.as_ref(), &mut tr).await
        };
        if let Err(e) = verdicts.await {
            // Without every verdict written, nothing about absent identities may be concluded.
            tracing::error!(error = %e, "the scan's working rows failed");
            tr.staging_failed = true;
            tr.complete = false;
            tr.inventory_complete = false;
            tr.errors.push(format!("working database: {e}"));
        }
        tr
    }

    /// Stages the tenant's managed identities: a full listing, or (opt-in) the last recorded inventory
    /// with what Graph delta says changed since. Any delta failure falls back to the full listing.
    async fn inventory(
        &self,
        ctx: &Staging<'_>,
        clients: &TenantClients,
        delta: Option<&Store>,
        tr: &mut TenantReport,
    ) -> Result<(), crate::azure::AzureError> {
        let staging_error =
            |e: crate::store::StoreError| crate::azure::AzureError::Staging(e.to_string());
        if let Some(store) = delta
            && let Ok(Some((link, full_at))) = store.load_delta(ctx.tenant).await
            && Utc::now() - full_at < FULL_SYNC_EVERY
        {
            match clients.graph.fetch_delta(ctx.tenant, &link).await {
                Ok(Some(delta)) => {
                    // The stored inventory, then what left it, then what changed (replacing rows).
                    ctx.work
                        .stage_stored_inventory(store, ctx.scan_id, ctx.tenant)
                        .await
                        .map_err(staging_error)?;
                    ctx.work
                        .unstage_identities(ctx.scan_id, ctx.tenant, &delta.gone)
                        .await
                        .map_err(staging_error)?;
                    let gone: std::collections::HashSet<&str> =
                        delta.gone.iter().map(String::as_str).collect();
                    let changed: Vec<ManagedIdentity> = delta
                        .changed
                        .into_iter()
                        .filter(|i| !gone.contains(i.object_id.to_ascii_lowercase().as_str()))
                        .collect();
                    ctx.work
                        .stage_identities(ctx.scan_id, ctx.tenant, &changed)
                        .await
                        .map_err(staging_error)?;
                    tr.delta_link = Some(delta.link);
                    tr.full_sync_at = Some(full_at);
                    return Ok(());
                }
                Ok(None) => tracing::info!("Graph asks for a full resync"),
                Err(e) => tracing::warn!(error = %e, "delta round failed; listing in full"),
            }
        }
        // Tracking starts before the listing, so changes made while it runs come in the next round.
        let latest = if delta.is_some() {
            Some(clients.graph.start_delta(ctx.tenant).await)
        } else {
            None
        };
        let mut sink = *ctx;
        clients
            .graph
            .fetch_managed_identities(ctx.tenant, &mut sink)
            .await?;
        match latest {
            Some(Ok(link)) => {
                tr.delta_link = Some(link);
                tr.full_sync_at = Some(Utc::now());
            }
            Some(Err(e)) => {
                tracing::info!(error = %e, "Graph delta is not available; full listings only")
            }
            None => {}
        }
        Ok(())
    }

    /// Evidence for every staged identity: Resource Graph in bulk, then an ARM GET of each identity
    /// Resource Graph did not show carrying its principal (and of every open finding).
    async fn resolve(
        &self,
        ctx: &Staging<'_>,
        arm: &ArmClient,
        subscriptions: Option<&HashMap<String, Subscription>>,
        trust_arg: bool,
        tr: &mut TenantReport,
    ) -> Result<(), crate::store::StoreError> {
        if trust_arg {
            self.bulk(ctx, arm, subscriptions, tr).await?;
        } else {
            tr.complete = false;
            tr.errors
                .push("resource graph: not used, since the open findings could not be read".into());
        }
        self.confirm_candidates(ctx, arm, subscriptions, tr).await
    }

    /// Resource Graph for every type named by identities in visible subscriptions, per table, into the
    /// working database. A failed query leaves more candidates for ARM and the tenant incomplete: its
    /// second witness (an absent identity confirmed, a principal seen on another resource) is missing.
    async fn bulk(
        &self,
        ctx: &Staging<'_>,
        arm: &ArmClient,
        subscriptions: Option<&HashMap<String, Subscription>>,
        tr: &mut TenantReport,
    ) -> Result<(), crate::store::StoreError> {
        let visible = |sub: &str| subscriptions.map(|s| s.contains_key(&sub.to_ascii_lowercase()));
        let mut bulk_subs: BTreeSet<String> = BTreeSet::new();
        let mut types: HashMap<ArgTable, BTreeSet<String>> = HashMap::new();
        for (sub, t) in ctx.work.staged_targets(ctx.scan_id, ctx.tenant).await? {
            if visible(&sub) == Some(true) && crate::arm::is_queryable_type(&t) {
                bulk_subs.insert(sub);
                types.entry(ArgTable::for_type(&t)).or_default().insert(t);
            }
        }
        let subs: Vec<String> = bulk_subs.into_iter().collect();
        let mut tables: Vec<_> = types.into_iter().collect();
        tables.sort_by_key(|(t, _)| t.name());
        for (table, tset) in tables {
            let tlist: Vec<String> = tset.into_iter().collect();
            for batch in subs.chunks(ARG_SUBSCRIPTION_BATCH) {
                let mut sink = *ctx;
                if let Err(e) = arm
                    .fetch_identity_principals(ctx.tenant, batch, table, &tlist, &mut sink)
                    .await
                {
                    tracing::warn!(error = %e, table = table.name(), "Resource Graph query failed; falling back to ARM");
                    tr.complete = false;
                    tr.errors
                        .push(format!("resource graph ({}): {e}", table.name()));
                }
            }
        }
        Ok(())
    }

    /// An ARM GET of every candidate (anything Resource Graph did not show carrying its principal, and
    /// every open finding), a chunk at a time, [`Settings`]' concurrency at once.
    async fn confirm_candidates(
        &self,
        ctx: &Staging<'_>,
        arm: &ArmClient,
        subscriptions: Option<&HashMap<String, Subscription>>,
        tr: &mut TenantReport,
    ) -> Result<(), crate::store::StoreError> {
        let visible = |sub: &str| subscriptions.map(|s| s.contains_key(&sub.to_ascii_lowercase()));
        let any_visible = subscriptions.and_then(|s| s.keys().next().cloned());
        let mut after = String::new();
        loop {
            let chunk = ctx.work.candidates(ctx.scan_id, ctx.tenant, &after).await?;
            let Some(last) = chunk.last() else { break };
            after.clone_from(&last.object_key);
            tracing::debug!(candidates = chunk.len(), "confirming candidates with ARM");
            tr.arm_checks += chunk.len() as u64;
            let tenant = ctx.tenant;
            let checks: Vec<(Candidate, crate::arm::Check)> =
                futures::stream::iter(chunk.into_iter().map(|c| {
                    // The subscription whose providers API names the api-version: the resource's when
                    // visible.
                    let sub = match c.resource.subscription_id() {
                        Some(s) if visible(s) == Some(true) => Some(s.to_owned()),
                        _ => any_visible.clone(),
                    };
                    async move {
                        let check = arm
                            .check_resource(tenant, &c.resource, sub.as_deref())
                            .await;
                        (c, check)
                    }
                }))
                .buffer_unordered(self.concurrency.max(1))
                .collect()
                .await;
            let rows: Vec<_> = checks
                .iter()
                .map(|(c, check)| Checked {
                    object_key: &c.object_key,
                    answer: &check.answer,
                    request_id: check.request_id.as_deref(),
                    correlation_request_id: check.correlation_request_id.as_deref(),
                    checked_at: check.checked_at,
                })
                .collect();
            ctx.work
                .stage_checks(ctx.scan_id, ctx.tenant, &rows)
                .await?;
        }
        Ok(())
    }

    /// Judges every staged identity, a chunk at a time, and stages the verdicts.
    async fn judge_all(
        &self,
        ctx: &Staging<'_>,
        subscriptions: Option<&HashMap<String, Subscription>>,
        tr: &mut TenantReport,
    ) -> Result<(), crate::store::StoreError> {
        let visible = |sub: &str| subscriptions.map(|s| s.contains_key(&sub.to_ascii_lowercase()));
        let mut failed = 0u64;
        let mut after = String::new();
        loop {
            let chunk = ctx
                .work
                .staged_items(ctx.scan_id, ctx.tenant, &after)
                .await?;
            let Some((last, _, _)) = chunk.last() else {
                break;
            };
            after.clone_from(last);
            let mut findings = Vec::with_capacity(chunk.len());
            for (_, identity, mut ev) in chunk {
                if let Some(r) = &identity.resource {
                    ev.subscription_visible = r.subscription_id().and_then(visible);
                }
                let j = judge(&identity, &ev);
                if j.reason == Reason::CheckFailed {
                    failed += 1;
                }
                tr.summary.add(j.verdict);
                findings.push(finding(identity, &ev, j));
            }
            ctx.work.stage_results(ctx.scan_id, &findings).await?;
        }
        tr.identities = tr.summary.total;
        if failed > 0 {
            tr.complete = false;
            tr.errors
                .push(format!("checks: {failed} resource checks did not complete"));
        }
        Ok(())
    }
}

/// A tenant whose scan could not start: incomplete, with the reason.
fn failed_tenant(tenant: &str, error: String) -> TenantReport {
    TenantReport {
        complete: false,
        inventory_complete: false,
        errors: vec![error],
        ..TenantReport::new(tenant)
    }
}

/// Where one tenant's scan keeps its working rows; also the sink of its Graph and Resource Graph pages.
#[derive(Clone, Copy)]
struct Staging<'a> {
    work: &'a WorkStore,
    scan_id: &'a str,
    tenant: &'a str,
}

impl PageSink<ManagedIdentity> for Staging<'_> {
    async fn accept(&mut self, items: Vec<ManagedIdentity>) -> Result<(), String> {
        self.work
            .stage_identities(self.scan_id, self.tenant, &items)
            .await
            .map_err(|e| e.to_string())
    }

    async fn restart(&mut self) -> Result<(), String> {
        self.work
            .unstage_tenant(self.scan_id, self.tenant)
            .await
            .map_err(|e| e.to_string())
    }
}

impl PageSink<ArgHit> for Staging<'_> {
    async fn accept(&mut self, items: Vec<ArgHit>) -> Result<(), String> {
        self.work
            .stage_arg_rows(self.scan_id, self.tenant, &items)
            .await
            .map_err(|e| e.to_string())
    }
}

fn finding(i: ManagedIdentity, ev: &Evidence, j: crate::domain::Judgement) -> Finding {
    Finding {
        resource_id: i.resource.as_ref().map(|r| r.as_str().to_owned()),
        subscription_id: i
            .resource
            .as_ref()
            .and_then(|r| r.subscription_id().map(str::to_owned)),
        resource_type: i
            .resource
            .as_ref()
            .map(crate::domain::ResourceId::full_type),
        verdict: j.verdict,
        reason: j.reason,
        detail: j.detail,
        evidence: ev.into(),
        tenant_id: i.tenant_id,
        object_id: i.object_id,
        app_id: i.app_id,
        display_name: i.display_name,
        identity_type: i.identity_type,
    }
}
