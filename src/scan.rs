//! One scan through the pipeline: inventory (Graph) -> parse -> resolve (Resource Graph in bulk, ARM to
//! confirm candidates) -> judge -> report. The imperative shell: decisions are `classify`'s, storage is
//! `store`'s.
//!
//! Completeness: a tenant is complete when its Graph inventory was read to the end and no check ended
//! in `check_failed`. Unknown verdicts that are answers (403, a subscription we cannot see, unreadable
//! `alternativeNames`) do not make a scan incomplete; failures to get an answer do.

use crate::arm::{ARG_SUBSCRIPTION_BATCH, ArgRow, ArgTable, ArmClient, Subscription, fold_hash};
use crate::azure::http::{AzureHttp, RetryPolicy};
use crate::azure::{ApiCounts, Counters, auth::TokenProvider};
use crate::classify::judge;
use crate::config::Settings;
use crate::domain::{
    Answer, Evidence, EvidenceSource, IdentityType, ManagedIdentity, Reason, Verdict,
};
use crate::graph::GraphClient;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// What started a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Manual,
    Startup,
    Cli,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Startup => "startup",
            Self::Cli => "cli",
        }
    }
}

/// The evidence of a finding, as reported and stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvidenceReport {
    pub source: EvidenceSource,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub request_id: Option<String>,
    pub correlation_request_id: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
}

impl From<&Evidence> for EvidenceReport {
    fn from(e: &Evidence) -> Self {
        Self {
            source: e.source,
            status: e.status(),
            code: e.code().map(str::to_owned),
            request_id: e.request_id.clone(),
            correlation_request_id: e.correlation_request_id.clone(),
            checked_at: e.checked_at,
        }
    }
}

/// One identity's verdict in a scan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    pub tenant_id: String,
    pub object_id: String,
    pub app_id: String,
    pub display_name: String,
    pub identity_type: IdentityType,
    pub resource_id: Option<String>,
    pub subscription_id: Option<String>,
    pub resource_type: Option<String>,
    pub verdict: Verdict,
    pub reason: Reason,
    pub detail: String,
    pub evidence: EvidenceReport,
}

/// Per-tenant outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TenantReport {
    pub tenant_id: String,
    pub complete: bool,
    /// The Graph inventory was read to the end (checks may still have failed).
    #[serde(default = "yes")]
    pub inventory_complete: bool,
    pub identities: u64,
    pub errors: Vec<String>,
    /// Requests made per API during this tenant's scan.
    pub requests: BTreeMap<String, ApiCounts>,
    /// Graph delta link to store with this scan (opt-in delta inventory).
    #[serde(skip)]
    pub delta_link: Option<String>,
    /// When the last full listing of the tenant was made (kept with the delta link).
    #[serde(skip)]
    pub full_sync_at: Option<DateTime<Utc>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub total: u64,
    pub healthy: u64,
    pub orphaned: u64,
    pub unknown: u64,
}

impl Summary {
    fn add(&mut self, v: Verdict) {
        self.total += 1;
        match v {
            Verdict::Healthy => self.healthy += 1,
            Verdict::Orphaned => self.orphaned += 1,
            Verdict::Unknown => self.unknown += 1,
        }
    }
}

/// The result of one scan; `findings` holds every identity (the CLI filters healthy ones out unless
/// `--all`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanReport {
    pub scan_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub complete: bool,
    pub trigger: Trigger,
    pub tenants: Vec<TenantReport>,
    pub summary: Summary,
    pub findings: Vec<Finding>,
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
    secret: crate::azure::auth::Secret,
    graph_endpoint: String,
    arm_endpoint: String,
    graph_scope: String,
    arm_scope: String,
    /// Every tenant's counts roll up here (metrics read it).
    counters: Arc<Counters>,
    concurrency: usize,
    graph_delta: bool,
    tenants: std::sync::Mutex<HashMap<String, Arc<TenantClients>>>,
}

/// A full listing at least this often, even with delta (directory delta tokens live 7 days, G-DELTA).
const FULL_SYNC_EVERY: chrono::TimeDelta = chrono::TimeDelta::days(6);

impl Scanner {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("miaudit/", env!("CARGO_PKG_VERSION")))
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
            ..RetryPolicy::default()
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
            tenants: std::sync::Mutex::new(HashMap::new()),
        })
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    fn clients(&self, tenant: &str) -> Arc<TenantClients> {
        let mut map = self.tenants.lock().expect("tenant clients lock");
        map.entry(tenant.to_owned())
            .or_insert_with(|| {
                let counters = Arc::new(Counters::child_of(self.counters.clone()));
                let tokens = Arc::new(TokenProvider::new(
                    self.client.clone(),
                    &self.authority_host,
                    self.client_id.clone(),
                    self.secret.clone(),
                    self.policy.clone(),
                    counters.clone(),
                ));
                let http = AzureHttp::new(
                    self.client.clone(),
                    self.policy.clone(),
                    tokens,
                    counters.clone(),
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

    /// Scans every tenant, [`PARALLEL_TENANTS`] at a time.
    pub async fn run(&self, tenants: &[String], trigger: Trigger) -> ScanReport {
        self.run_as(uuid::Uuid::new_v4().to_string(), tenants, trigger, None)
            .await
    }

    /// [`Scanner::run`] with a scan id chosen by the caller (the daemon announces it before the scan).
    /// With a store, the opt-in Graph delta inventory can continue from the last recorded scan.
    pub async fn run_as(
        &self,
        scan_id: String,
        tenants: &[String],
        trigger: Trigger,
        store: Option<&crate::store::Store>,
    ) -> ScanReport {
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
        for chunk in tenants.chunks(PARALLEL_TENANTS) {
            let scans: Vec<_> = chunk.iter().map(|t| self.scan_counted(t, store)).collect();
            for (tr, findings) in futures::future::join_all(scans).await {
                report.complete &= tr.complete;
                for f in &findings {
                    report.summary.add(f.verdict);
                }
                report.findings.extend(findings);
                report.tenants.push(tr);
            }
        }
        report.finished_at = Utc::now();
        report
    }

    /// One tenant's scan with the requests it made.
    async fn scan_counted(
        &self,
        tenant: &str,
        store: Option<&crate::store::Store>,
    ) -> (TenantReport, Vec<Finding>) {
        let clients = self.clients(tenant);
        let before = clients.counters.snapshot();
        let (mut tr, findings) = self.scan_tenant(tenant, &clients, store).await;
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
        (tr, findings)
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    async fn scan_tenant(
        &self,
        tenant: &str,
        clients: &TenantClients,
        store: Option<&crate::store::Store>,
    ) -> (TenantReport, Vec<Finding>) {
        let mut tr = TenantReport {
            tenant_id: tenant.to_owned(),
            complete: true,
            inventory_complete: true,
            identities: 0,
            errors: Vec::new(),
            requests: BTreeMap::new(),
            delta_link: None,
            full_sync_at: None,
        };
        let inventory = match self.inventory(tenant, clients, store, &mut tr).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "inventory failed");
                tr.complete = false;
                tr.inventory_complete = false;
                tr.errors.push(format!("inventory: {e}"));
                return (tr, Vec::new());
            }
        };
        tr.identities = inventory.identities.len() as u64;
        let subscriptions = match clients.arm.fetch_subscriptions(tenant).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "subscription list failed");
                tr.errors.push(format!("subscriptions: {e}"));
                None
            }
        };
        let evidence = self
            .resolve(
                tenant,
                &clients.arm,
                &inventory.identities,
                subscriptions.as_ref(),
                &mut tr.errors,
            )
            .await;
        let mut findings = Vec::with_capacity(inventory.identities.len());
        // The inventory is consumed as findings are made, so both are never whole in memory at once.
        for (identity, ev) in inventory.identities.into_iter().zip(evidence) {
            let j = judge(&identity, &ev);
            if j.reason == Reason::CheckFailed {
                tr.complete = false;
            }
            findings.push(finding(identity, &ev, j));
        }
        let failed = findings
            .iter()
            .filter(|f| f.reason == Reason::CheckFailed)
            .count();
        if failed > 0 {
            tr.errors
                .push(format!("checks: {failed} resource checks did not complete"));
        }
        (tr, findings)
    }

    /// The tenant's managed identities: a full listing, or (opt-in) the last recorded inventory with
    /// what Graph delta says changed since. Any delta failure falls back to the full listing.
    async fn inventory(
        &self,
        tenant: &str,
        clients: &TenantClients,
        store: Option<&crate::store::Store>,
        tr: &mut TenantReport,
    ) -> Result<crate::graph::Inventory, crate::azure::AzureError> {
        let Some(store) = store.filter(|_| self.graph_delta) else {
            return clients.graph.fetch_managed_identities(tenant).await;
        };
        if let Ok(Some((link, full_at))) = store.load_delta(tenant).await
            && Utc::now() - full_at < FULL_SYNC_EVERY
        {
            match clients.graph.fetch_delta(tenant, &link).await {
                Ok(Some(delta)) => match store.load_inventory(tenant).await {
                    Ok(base) => {
                        // Merged in one pass over the stored inventory, without a second map of it.
                        let gone: std::collections::HashSet<String> =
                            delta.gone.into_iter().collect();
                        let mut changed: HashMap<String, ManagedIdentity> = delta
                            .changed
                            .into_iter()
                            .map(|i| (i.object_id.to_ascii_lowercase(), i))
                            .collect();
                        let mut identities: Vec<ManagedIdentity> = base
                            .into_iter()
                            .filter_map(|i| {
                                let key = i.object_id.to_ascii_lowercase();
                                if gone.contains(&key) {
                                    None
                                } else {
                                    Some(changed.remove(&key).unwrap_or(i))
                                }
                            })
                            .collect();
                        identities.extend(
                            changed
                                .into_values()
                                .filter(|i| !gone.contains(&i.object_id.to_ascii_lowercase())),
                        );
                        tr.delta_link = Some(delta.link);
                        tr.full_sync_at = Some(full_at);
                        return Ok(crate::graph::Inventory {
                            identities,
                            ..Default::default()
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "stored inventory unreadable; listing in full")
                    }
                },
                Ok(None) => tracing::info!("Graph asks for a full resync"),
                Err(e) => tracing::warn!(error = %e, "delta round failed; listing in full"),
            }
        }
        // Tracking starts before the listing, so changes made while it runs come in the next round.
        let latest = clients.graph.start_delta(tenant).await;
        let inventory = clients.graph.fetch_managed_identities(tenant).await?;
        match latest {
            Ok(link) => {
                tr.delta_link = Some(link);
                tr.full_sync_at = Some(Utc::now());
            }
            Err(e) => {
                tracing::info!(error = %e, "Graph delta is not available; full listings only")
            }
        }
        Ok(inventory)
    }

    /// Evidence for each identity, in inventory order.
    async fn resolve(
        &self,
        tenant: &str,
        arm: &ArmClient,
        identities: &[ManagedIdentity],
        subscriptions: Option<&HashMap<String, Subscription>>,
        errors: &mut Vec<String>,
    ) -> Vec<Evidence> {
        let visible = |sub: &str| subscriptions.map(|s| s.contains_key(&sub.to_ascii_lowercase()));
        let mut evidence: Vec<Evidence> =
            identities.iter().map(|_| Evidence::not_checked()).collect();

        // Bulk: every type named by identities in visible subscriptions, per table.
        let mut bulk_subs: BTreeSet<String> = BTreeSet::new();
        let mut types: HashMap<ArgTable, BTreeSet<String>> = HashMap::new();
        for i in identities {
            if let Some(r) = &i.resource
                && let Some(sub) = r.subscription_id()
                && visible(sub) == Some(true)
            {
                let t = r.full_type();
                if crate::arm::is_queryable_type(&t) {
                    bulk_subs.insert(sub.to_ascii_lowercase());
                    types.entry(ArgTable::for_type(&t)).or_default().insert(t);
                }
            }
        }
        let mut arg: HashMap<u128, ArgRow> = HashMap::new();
        let subs: Vec<String> = bulk_subs.into_iter().collect();
        let mut tables: Vec<_> = types.into_iter().collect();
        tables.sort_by_key(|(t, _)| t.name());
        for (table, tset) in tables {
            let tlist: Vec<String> = tset.into_iter().collect();
            for batch in subs.chunks(ARG_SUBSCRIPTION_BATCH) {
                if let Err(e) = arm
                    .fetch_identity_principals(tenant, batch, table, &tlist, &mut arg)
                    .await
                {
                    // Resource Graph only saves ARM calls; without it every identity is a candidate.
                    tracing::warn!(error = %e, table = table.name(), "Resource Graph query failed; falling back to ARM");
                    errors.push(format!("resource graph ({}): {e}", table.name()));
                }
            }
        }

        // Candidates: anything Resource Graph did not show carrying this principal.
        let any_visible = subscriptions.and_then(|s| s.keys().next().cloned());
        let mut candidates = Vec::new();
        for (idx, i) in identities.iter().enumerate() {
            let Some(r) = &i.resource else { continue };
            let sub_visible = r.subscription_id().and_then(visible);
            evidence[idx].subscription_visible = sub_visible;
            if let Some(row) = arg.get(&fold_hash(r.as_str()))
                && row.principal == Some(fold_hash(&i.object_id))
            {
                evidence[idx].source = EvidenceSource::ResourceGraph;
                evidence[idx].answer = Answer::Present {
                    principal_id: Some(i.object_id.clone()),
                };
                evidence[idx].request_id = row.request_id.as_deref().map(str::to_owned);
                evidence[idx].checked_at = Some(Utc::now());
                continue;
            }
            let provider_sub = match (r.subscription_id(), sub_visible) {
                (Some(s), Some(true)) => Some(s.to_owned()),
                _ => any_visible.clone(),
            };
            candidates.push((idx, provider_sub));
        }
        tracing::debug!(
            candidates = candidates.len(),
            "confirming candidates with ARM"
        );
        let mut checks = futures::stream::iter(candidates.into_iter().map(|(idx, sub)| {
            let resource = identities[idx]
                .resource
                .as_ref()
                .expect("candidates have a resource");
            async move {
                (
                    idx,
                    arm.check_resource(tenant, resource, sub.as_deref()).await,
                )
            }
        }))
        .buffer_unordered(self.concurrency.max(1));
        while let Some((idx, check)) = checks.next().await {
            let ev = &mut evidence[idx];
            ev.source = EvidenceSource::Arm;
            ev.answer = check.answer;
            ev.request_id = check.request_id;
            ev.correlation_request_id = check.correlation_request_id;
            ev.checked_at = Some(check.checked_at);
        }
        evidence
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
