//! One tenant's scan, stage by stage: inventory (Graph, or the stored inventory and Graph delta), the
//! subscription list, Resource Graph in bulk, ARM confirmation of candidates, and the judge; the
//! working database is where every stage leaves its rows.

use super::{FULL_SYNC_EVERY, Scanner, TenantClients};
use crate::arm::{ARG_SUBSCRIPTION_BATCH, ArgHit, ArgTable, ArmClient, Subscription};
use crate::azure::PageSink;
use crate::classify::judge;
use crate::domain::{
    Evidence, Finding, ManagedIdentity, ObjectId, Reason, SubscriptionId, TenantId,
};
use crate::report::TenantReport;
use crate::store::Store;
use crate::store::work::{Candidate, Checked, WorkStore};
use chrono::Utc;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};

impl Scanner {
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub(super) async fn scan_tenant(
        &self,
        scan_id: &str,
        tenant: &TenantId,
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
                    let gone: std::collections::HashSet<&ObjectId> = delta.gone.iter().collect();
                    let changed: Vec<ManagedIdentity> = delta
                        .changed
                        .into_iter()
                        .filter(|i| !gone.contains(&i.object_id))
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
        subscriptions: Option<&HashMap<SubscriptionId, Subscription>>,
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
        subscriptions: Option<&HashMap<SubscriptionId, Subscription>>,
        tr: &mut TenantReport,
    ) -> Result<(), crate::store::StoreError> {
        let visible = |sub: &SubscriptionId| visibility(subscriptions, sub);
        let mut bulk_subs: BTreeSet<SubscriptionId> = BTreeSet::new();
        let mut types: HashMap<ArgTable, BTreeSet<String>> = HashMap::new();
        for (sub, t) in ctx.work.staged_targets(ctx.scan_id, ctx.tenant).await? {
            if visible(&sub) == Some(true) && crate::arm::is_queryable_type(&t) {
                bulk_subs.insert(sub);
                types.entry(ArgTable::for_type(&t)).or_default().insert(t);
            }
        }
        let subs: Vec<SubscriptionId> = bulk_subs.into_iter().collect();
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
        subscriptions: Option<&HashMap<SubscriptionId, Subscription>>,
        tr: &mut TenantReport,
    ) -> Result<(), crate::store::StoreError> {
        let visible = |sub: &SubscriptionId| visibility(subscriptions, sub);
        let any_visible = subscriptions.and_then(|s| s.keys().next().cloned());
        let mut after = String::new();
        loop {
            let chunk = ctx.work.candidates(ctx.scan_id, ctx.tenant, &after).await?;
            let Some(last) = chunk.last() else { break };
            after = last.object_id.to_string();
            tracing::debug!(candidates = chunk.len(), "confirming candidates with ARM");
            tr.arm_checks += chunk.len() as u64;
            let tenant = ctx.tenant;
            let checks: Vec<(Candidate, crate::arm::Check)> =
                futures::stream::iter(chunk.into_iter().map(|c| {
                    // The subscription whose providers API names the api-version: the resource's when
                    // visible.
                    let sub = match c.resource.subscription_id() {
                        Some(s) if visible(s) == Some(true) => Some(s.clone()),
                        _ => any_visible.clone(),
                    };
                    async move {
                        let check = arm.check_resource(tenant, &c.resource, sub.as_ref()).await;
                        (c, check)
                    }
                }))
                .buffer_unordered(self.concurrency.max(1))
                .collect()
                .await;
            let rows: Vec<_> = checks
                .iter()
                .map(|(c, check)| Checked {
                    object_id: &c.object_id,
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
        subscriptions: Option<&HashMap<SubscriptionId, Subscription>>,
        tr: &mut TenantReport,
    ) -> Result<(), crate::store::StoreError> {
        let visible = |sub: &SubscriptionId| visibility(subscriptions, sub);
        let mut failed = 0u64;
        let mut after = String::new();
        loop {
            let chunk = ctx
                .work
                .staged_items(ctx.scan_id, ctx.tenant, &after)
                .await?;
            let Some((last, _)) = chunk.last() else {
                break;
            };
            after = last.object_id.to_string();
            let mut findings = Vec::with_capacity(chunk.len());
            for (identity, mut ev) in chunk {
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

/// Where one tenant's scan keeps its working rows; also the sink of its Graph and Resource Graph pages.
#[derive(Clone, Copy)]
struct Staging<'a> {
    work: &'a WorkStore,
    scan_id: &'a str,
    tenant: &'a TenantId,
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
            .and_then(|r| r.subscription_id().cloned()),
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

/// Whether the subscription is in the tenant's subscription list; `None` when the list could not be read.
fn visibility(
    subscriptions: Option<&HashMap<SubscriptionId, Subscription>>,
    sub: &SubscriptionId,
) -> Option<bool> {
    subscriptions.map(|s| s.contains_key(sub))
}
