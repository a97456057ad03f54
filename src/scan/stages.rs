//! One tenant's scan, stage by stage: inventory (Graph, or the stored inventory and Graph delta), the
//! subscription list, Resource Graph in bulk, ARM confirmation of candidates, and the judge; the
//! working database is where every stage leaves its rows.
//!
//! The stages overlap where their inputs allow (issue 12): the subscription list and the open findings
//! are read while Graph pages; Resource Graph starts as soon as the first Graph page is staged, asking
//! about the subscriptions and resource types staged so far, and when the listing ends it tops up with
//! what later pages added (the rows of both rounds are disjoint, so no row is fetched twice); the open
//! findings, which ARM checks whatever Resource Graph shows, are confirmed while Resource Graph pages.
//! Only the remaining candidates wait for both, and while ARM answers about them the judge takes every
//! identity whose evidence is settled (no ARM check can reach it); the rest is judged after.

use super::{FULL_SYNC_EVERY, Scanner, TenantClients};
use crate::arm::{ARG_SUBSCRIPTION_BATCH, ArgHit, ArgTable, ArmClient, Subscription};
use crate::azure::PageSink;
use crate::classify::judge;
use crate::domain::{
    Evidence, Finding, ManagedIdentity, ObjectId, Reason, SubscriptionId, TenantId,
};
use crate::report::TenantReport;
use crate::store::Store;
use crate::store::work::{Candidate, Checked, Judging, WorkStore};
use chrono::Utc;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use tokio::sync::watch;

/// How far the inventory has come, for the stages that start before it ends.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Graph pages staged so far (a listing that starts over keeps counting).
    pages: u64,
    /// The inventory ended: `Some(true)` read to the end, `Some(false)` failed.
    ended: Option<bool>,
}

/// What a stage running beside others notes for the tenant's report; merged when all are done.
#[derive(Debug, Default)]
struct Notes {
    incomplete: bool,
    errors: Vec<String>,
    arm_checks: u64,
}

/// What the judge counted: a tenant's identities are judged in two passes ([`Judging`]).
#[derive(Debug, Default)]
struct Judged {
    summary: crate::domain::Summary,
    /// Identities whose check did not complete.
    failed: u64,
}

impl Judged {
    fn into_report(self, tr: &mut TenantReport) {
        tr.summary.merge(&self.summary);
        tr.identities = tr.summary.total;
        tr.unjudged = self.failed;
        if self.failed > 0 {
            tr.complete = false;
            tr.errors.push(format!(
                "checks: {} resource checks did not complete",
                self.failed
            ));
        }
    }
}

impl Notes {
    fn failed(&mut self, error: String) {
        self.incomplete = true;
        self.errors.push(error);
    }

    fn absorb(&mut self, other: Notes) {
        self.incomplete |= other.incomplete;
        self.errors.extend(other.errors);
        self.arm_checks += other.arm_checks;
    }

    fn into_report(self, tr: &mut TenantReport) {
        tr.complete &= !self.incomplete;
        tr.errors.extend(self.errors);
        tr.arm_checks += self.arm_checks;
    }
}

/// The longest the blast-radius lookup of one tenant may take.
const BLAST_RADIUS_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The subscriptions and resource types (per table) Resource Graph has been asked about.
#[derive(Debug, Default)]
struct Asked {
    subs: BTreeSet<SubscriptionId>,
    types: HashMap<ArgTable, BTreeSet<String>>,
}

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
        let (progress, watcher) = watch::channel(Progress::default());
        let ctx = Staging {
            work: staging,
            scan_id,
            tenant,
            progress: Some(&progress),
        };
        clients.arm.begin_scan();
        let inventory = async {
            let r = self.inventory(&ctx, clients, delta, &mut tr).await;
            progress.send_modify(|p| p.ended = Some(r.is_ok()));
            r
        };
        let resolve = self.resolve_beside(&ctx, &clients.arm, record, watcher);
        let (listed, resolved) = futures::join!(inventory, resolve);
        if let Err(e) = listed {
            tracing::warn!(error = %e, "inventory failed");
            tr.staging_failed = matches!(e, crate::azure::AzureError::Staging(_));
            tr.complete = false;
            tr.inventory_complete = false;
            tr.errors.push(format!("inventory: {e}"));
            return tr;
        }
        // The evidence stages give up only when the inventory fails, which returned above.
        let Some(resolved) = resolved else {
            tr.complete = false;
            tr.errors
                .push("internal error: the evidence stages stopped early".into());
            return tr;
        };
        let verdicts = async {
            let (subscriptions, notes, mut judged) = resolved?;
            notes.into_report(&mut tr);
            // The rest, now that ARM has answered about every candidate. What was judged is counted
            // in the report even when this fails, since those verdicts are recorded.
            let rest = self
                .judge(&ctx, subscriptions.as_ref(), Judging::Unjudged, &mut judged)
                .await;
            let counted = judged.summary.total;
            judged.into_report(&mut tr);
            rest?;
            ctx.work.verify_judged(scan_id, tenant, counted).await?;
            if let Some(subs) = &subscriptions {
                let referenced = ctx.work.referenced_subscriptions(scan_id, tenant).await?;
                let listed = referenced.iter().filter(|s| subs.contains_key(*s)).count();
                tr.subscription_coverage = Some(crate::report::Coverage::new(
                    referenced.len() as u64,
                    listed as u64,
                ));
                // Enrichment, not evidence: bounded, so that it can never push a finished scan past
                // its timeout (which would record nothing of it).
                tr.role_assignments = match tokio::time::timeout(
                    BLAST_RADIUS_LIMIT,
                    self.blast_radius(&ctx, &clients.arm, subs),
                )
                .await
                {
                    Ok(r) => r?,
                    Err(_) => {
                        tracing::warn!(
                            seconds = BLAST_RADIUS_LIMIT.as_secs(),
                            "reading the role assignments of orphans took too long; the stored ones stay"
                        );
                        None
                    }
                };
                tr.dangling = match tokio::time::timeout(
                    BLAST_RADIUS_LIMIT,
                    dangling_assignments(&ctx, clients, subs),
                )
                .await
                {
                    Ok(d) => d,
                    Err(_) => {
                        tracing::warn!(
                            "looking for dangling role assignments took too long; the stored ones stay"
                        );
                        None
                    }
                };
            }
            Ok::<_, crate::store::StoreError>(())
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

    /// Evidence for every staged identity, beside the inventory: the subscription list and the open
    /// findings first, then Resource Graph in bulk (from the first staged Graph page on), the open
    /// findings' ARM checks once the inventory has ended, and last an ARM GET of every other candidate.
    /// Gives up (`None`) as soon as the inventory fails: its verdicts would not be used.
    async fn resolve_beside(
        &self,
        ctx: &Staging<'_>,
        arm: &ArmClient,
        record: Option<&Store>,
        watcher: watch::Receiver<Progress>,
    ) -> Option<Resolved> {
        let mut failed = watcher.clone();
        tokio::select! {
            r = self.resolve(ctx, arm, record, watcher) => Some(r),
            _ = failed.wait_for(|p| p.ended == Some(false)) => None,
        }
    }

    async fn resolve(
        &self,
        ctx: &Staging<'_>,
        arm: &ArmClient,
        record: Option<&Store>,
        watcher: watch::Receiver<Progress>,
    ) -> Resolved {
        let mut notes = Notes::default();
        let (subscriptions, trust_arg) = futures::join!(
            arm.fetch_subscriptions(ctx.tenant),
            self.stage_open_findings(ctx, record)
        );
        let trust_arg = trust_arg?;
        let subscriptions = subscriptions
            .map_err(|e| {
                // Without the list, a 403 cannot be told from a subscription we cannot see, nor a
                // transfer proven: the checks still run, but the tenant was not fully checked.
                tracing::warn!(error = %e, "subscription list failed");
                notes.failed(format!("subscriptions: {e}"));
            })
            .ok();
        let subs = subscriptions.as_ref();
        let (mut bulk_notes, mut early_notes) = (Notes::default(), Notes::default());
        let bulk = async {
            if trust_arg {
                self.bulk(ctx, arm, subs, watcher.clone(), &mut bulk_notes)
                    .await
            } else {
                bulk_notes.failed(
                    "resource graph: not used, since the open findings could not be read".into(),
                );
                Ok(())
            }
        };
        // The open findings go to ARM whatever Resource Graph shows: no need to wait for it.
        let early = async {
            if listed_in_full(watcher.clone()).await {
                self.confirm_candidates(ctx, arm, subs, true, &mut early_notes)
                    .await
            } else {
                Ok(())
            }
        };
        let (bulk, early) = futures::join!(bulk, early);
        bulk?;
        early?;
        let mut judged = Judged::default();
        if listed_in_full(watcher).await {
            // Resource Graph has answered and every identity is staged: those no ARM answer can change
            // are judged while ARM confirms the candidates (the judge mostly works while ARM's answers
            // are awaited). The first error stops both.
            futures::try_join!(
                self.confirm_candidates(ctx, arm, subs, false, &mut notes),
                self.judge(ctx, subs, Judging::Settled, &mut judged)
            )?;
        }
        notes.absorb(bulk_notes);
        notes.absorb(early_notes);
        Ok((subscriptions, notes, judged))
    }

    /// Marks the tenant's open findings as must-check. `false` when they could not be read: then no
    /// identity is taken on Resource Graph's word.
    async fn stage_open_findings(
        &self,
        ctx: &Staging<'_>,
        record: Option<&Store>,
    ) -> Result<bool, crate::store::StoreError> {
        let Some(store) = record else {
            return Ok(true);
        };
        match store.open_finding_keys(ctx.tenant).await {
            Ok(keys) => {
                ctx.work
                    .stage_must_check(ctx.scan_id, ctx.tenant, &keys)
                    .await?;
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "open findings could not be read; every identity goes to ARM");
                Ok(false)
            }
        }
    }

    /// Resource Graph for every type named by identities in visible subscriptions, per table, into the
    /// working database, beside the inventory: a first round as soon as a Graph page is staged, and a
    /// top-up when the listing has ended for the subscriptions and types that later pages added. A
    /// failed query leaves more candidates for ARM and the tenant incomplete: its second witness (an
    /// absent identity confirmed, a principal seen on another resource) is missing.
    async fn bulk(
        &self,
        ctx: &Staging<'_>,
        arm: &ArmClient,
        subscriptions: Option<&HashMap<SubscriptionId, Subscription>>,
        mut watcher: watch::Receiver<Progress>,
        notes: &mut Notes,
    ) -> Result<(), crate::store::StoreError> {
        let mut asked = Asked::default();
        if watcher
            .wait_for(|p| p.pages > 0 || p.ended.is_some())
            .await
            .is_err()
        {
            return Ok(());
        }
        loop {
            // Read before the staged rows: once ended, they are the whole inventory.
            let ended = watcher.borrow().ended;
            if ended == Some(false) {
                return Ok(());
            }
            let targets = ctx.work.staged_targets(ctx.scan_id, ctx.tenant).await?;
            for (table, types, subs) in asked.extend(targets, |s| visibility(subscriptions, s)) {
                for batch in subs.chunks(ARG_SUBSCRIPTION_BATCH) {
                    let mut sink = *ctx;
                    if let Err(e) = arm
                        .fetch_identity_principals(ctx.tenant, batch, table, &types, &mut sink)
                        .await
                    {
                        tracing::warn!(error = %e, table = table.name(), "Resource Graph query failed; falling back to ARM");
                        notes.failed(format!("resource graph ({}): {e}", table.name()));
                    }
                }
            }
            if ended.is_some() || watcher.wait_for(|p| p.ended.is_some()).await.is_err() {
                return Ok(());
            }
        }
    }

    /// An ARM GET of every candidate not checked yet (anything Resource Graph did not show carrying its
    /// principal, and every open finding; with `must_check_only`, only the open findings), a chunk at a
    /// time, [`Settings`]' concurrency at once.
    async fn confirm_candidates(
        &self,
        ctx: &Staging<'_>,
        arm: &ArmClient,
        subscriptions: Option<&HashMap<SubscriptionId, Subscription>>,
        must_check_only: bool,
        notes: &mut Notes,
    ) -> Result<(), crate::store::StoreError> {
        let visible = |sub: &SubscriptionId| visibility(subscriptions, sub);
        let any_visible = subscriptions.and_then(|s| s.keys().next().cloned());
        let started = std::time::Instant::now();
        let candidates_after = |after: String| async move {
            ctx.work
                .candidates(ctx.scan_id, ctx.tenant, &after, must_check_only)
                .await
        };
        let mut chunk = candidates_after(String::new()).await?;
        while let Some(last) = chunk.last() {
            let after = last.object_id.to_string();
            tracing::debug!(candidates = chunk.len(), "confirming candidates with ARM");
            notes.arm_checks += chunk.len() as u64;
            let tenant = ctx.tenant;
            // The next chunk is looked for (a walk through the staged identities) while ARM answers
            // about this one.
            let checks = futures::stream::iter(chunk.into_iter().map(|c| {
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
            .collect::<Vec<(Candidate, crate::arm::Check)>>();
            let (checks, next) = futures::join!(checks, candidates_after(after));
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
            chunk = next?;
        }
        tracing::debug!(
            must_check_only,
            checks = notes.arm_checks,
            seconds = started.elapsed().as_secs_f64(),
            "candidates confirmed"
        );
        Ok(())
    }

    /// The role assignments the identities judged orphaned still hold, from Resource Graph. A failed
    /// lookup is logged and leaves what is stored (`None`); it never changes a verdict.
    async fn blast_radius(
        &self,
        ctx: &Staging<'_>,
        arm: &ArmClient,
        subscriptions: &HashMap<SubscriptionId, Subscription>,
    ) -> Result<Option<Vec<(ObjectId, crate::domain::RoleAssignment)>>, crate::store::StoreError>
    {
        let orphaned = ctx.work.orphaned_objects(ctx.scan_id, ctx.tenant).await?;
        if orphaned.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut subs: Vec<SubscriptionId> = subscriptions.keys().cloned().collect();
        subs.sort();
        let mut all = Ok(Vec::new());
        for batch in subs.chunks(ARG_SUBSCRIPTION_BATCH) {
            match arm
                .fetch_role_assignments(ctx.tenant, batch, &orphaned)
                .await
            {
                Ok(found) => {
                    if let Ok(a) = &mut all {
                        a.extend(found);
                    }
                }
                Err(e) => {
                    all = Err(e);
                    break;
                }
            }
        }
        match all {
            Ok(found) => {
                tracing::debug!(
                    orphans = orphaned.len(),
                    assignments = found.len(),
                    "role assignments of orphans read"
                );
                Ok(Some(found))
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the role assignments of orphans; the stored ones stay");
                Ok(None)
            }
        }
    }

    /// Judges the staged identities of `which`, a chunk at a time, and stages the verdicts.
    async fn judge(
        &self,
        ctx: &Staging<'_>,
        subscriptions: Option<&HashMap<SubscriptionId, Subscription>>,
        which: Judging,
        judged: &mut Judged,
    ) -> Result<(), crate::store::StoreError> {
        let visible = |sub: &SubscriptionId| visibility(subscriptions, sub);
        let mut after = String::new();
        let started = std::time::Instant::now();
        let before = judged.summary.total;
        loop {
            let chunk = ctx
                .work
                .staged_items(ctx.scan_id, ctx.tenant, which, &after)
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
                    judged.failed += 1;
                }
                judged.summary.add(j.verdict);
                findings.push(finding(identity, &ev, j));
            }
            ctx.work.stage_results(ctx.scan_id, &findings).await?;
        }
        tracing::debug!(
            ?which,
            identities = judged.summary.total - before,
            seconds = started.elapsed().as_secs_f64(),
            "identities judged"
        );
        Ok(())
    }
}

/// Role assignments to service principals that no longer exist: every assignment to a service
/// principal in the tenant's own subscriptions the credential sees (Resource Graph), its principals
/// asked of Graph (`getByIds`, with a principal the inventory just listed as a canary); an assignment
/// whose principal Graph did not return is dangling. Made in the last hour is left for later (Graph
/// replicates new principals with a delay). Subscriptions of other tenants (delegated through Azure
/// Lighthouse, say) are not judged: their principals live in their own directory. `None` when anything
/// could not be asked: a principal Graph could not be asked about is unknown, not gone.
async fn dangling_assignments(
    ctx: &Staging<'_>,
    clients: &TenantClients,
    subscriptions: &HashMap<SubscriptionId, Subscription>,
) -> Option<crate::domain::DanglingCheck> {
    let tenant = ctx.tenant;
    let mut subs: Vec<SubscriptionId> = subscriptions
        .iter()
        .filter(|(_, s)| s.tenant_id.as_ref() == Some(tenant))
        .map(|(id, _)| id.clone())
        .collect();
    subs.sort();
    if subs.is_empty() {
        return None;
    }
    let Ok(Some(canary)) = ctx.work.any_object(ctx.scan_id, tenant).await else {
        return None;
    };
    let mut all = Vec::new();
    for batch in subs.chunks(ARG_SUBSCRIPTION_BATCH) {
        match clients
            .arm
            .fetch_service_principal_assignments(tenant, batch)
            .await
        {
            Ok(found) => all.extend(found),
            Err(e) => {
                tracing::warn!(error = %e, "could not list role assignments; dangling ones are not judged in this scan");
                return None;
            }
        }
    }
    let mut principals: Vec<String> = all
        .iter()
        .map(|d| d.principal_id.clone())
        .filter(|p| crate::domain::is_guid(p))
        .collect();
    principals.sort();
    principals.dedup();
    let existing = if principals.is_empty() {
        Default::default()
    } else {
        match clients
            .graph
            .existing_principals(tenant, &principals, canary.as_str())
            .await
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "could not ask Graph which principals exist; dangling role assignments are not judged in this scan");
                return None;
            }
        }
    };
    let settled = Utc::now() - chrono::Duration::hours(1);
    let mut found: Vec<crate::domain::DanglingAssignment> = all
        .into_iter()
        .filter(|d| {
            crate::domain::is_guid(&d.principal_id)
                && !existing.contains(&d.principal_id)
                && d.created_on.is_some_and(|c| c < settled)
        })
        .collect();
    if !found.is_empty()
        && let Err(e) = clients.arm.name_roles(tenant, &subs, &mut found).await
    {
        tracing::warn!(error = %e, "could not read the role names of dangling assignments");
    }
    Some(crate::domain::DanglingCheck {
        subscriptions: subs.iter().map(|s| s.as_str().to_owned()).collect(),
        found,
    })
}

/// Where one tenant's scan keeps its working rows; also the sink of its Graph and Resource Graph pages.
#[derive(Clone, Copy)]
struct Staging<'a> {
    work: &'a WorkStore,
    scan_id: &'a str,
    tenant: &'a TenantId,
    /// Told of each staged Graph page (Resource Graph starts on the first).
    progress: Option<&'a watch::Sender<Progress>>,
}

impl PageSink<ManagedIdentity> for Staging<'_> {
    async fn accept(&mut self, items: Vec<ManagedIdentity>) -> Result<(), String> {
        self.work
            .stage_identities(self.scan_id, self.tenant, &items)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(p) = self.progress {
            p.send_modify(|p| p.pages += 1);
        }
        Ok(())
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

/// The evidence stages' outcome: the subscription list (`None` when it could not be read), notes, and
/// what the judge counted of the identities it could judge beside them.
type Resolved = Result<
    (Option<HashMap<SubscriptionId, Subscription>>, Notes, Judged),
    crate::store::StoreError,
>;

/// Waits for the inventory's end: `true` when it was read to the end.
async fn listed_in_full(mut watcher: watch::Receiver<Progress>) -> bool {
    watcher
        .wait_for(|p| p.ended.is_some())
        .await
        .is_ok_and(|p| p.ended == Some(true))
}

impl Asked {
    /// Takes the (subscription, type) pairs staged so far and returns the queries that cover what has
    /// not been asked: per table, the new types in every subscription, and the types asked before in
    /// the new subscriptions. The areas are disjoint from what was asked, so no row comes twice.
    fn extend(
        &mut self,
        targets: Vec<(SubscriptionId, String)>,
        visible: impl Fn(&SubscriptionId) -> Option<bool>,
    ) -> Vec<(ArgTable, Vec<String>, Vec<SubscriptionId>)> {
        let mut subs = BTreeSet::new();
        let mut types: HashMap<ArgTable, BTreeSet<String>> = HashMap::new();
        for (sub, t) in targets {
            if visible(&sub) == Some(true) && crate::arm::is_queryable_type(&t) {
                subs.insert(sub);
                types.entry(ArgTable::for_type(&t)).or_default().insert(t);
            }
        }
        let new_subs: Vec<SubscriptionId> = subs.difference(&self.subs).cloned().collect();
        self.subs.extend(subs);
        let all_subs: Vec<SubscriptionId> = self.subs.iter().cloned().collect();
        let mut tables: Vec<ArgTable> = types.keys().chain(self.types.keys()).copied().collect();
        tables.sort_by_key(|t| t.name());
        tables.dedup();
        let mut queries = Vec::new();
        for table in tables {
            let tset = types.remove(&table).unwrap_or_default();
            let before = self.types.entry(table).or_default();
            let old: Vec<String> = before.iter().cloned().collect();
            let new: Vec<String> = tset.difference(before).cloned().collect();
            before.extend(new.iter().cloned());
            if !new.is_empty() {
                queries.push((table, new, all_subs.clone()));
            }
            if !old.is_empty() && !new_subs.is_empty() {
                queries.push((table, old, new_subs.clone()));
            }
        }
        queries
    }
}

/// Whether the subscription is in the tenant's subscription list; `None` when the list could not be read.
fn visibility(
    subscriptions: Option<&HashMap<SubscriptionId, Subscription>>,
    sub: &SubscriptionId,
) -> Option<bool> {
    subscriptions.map(|s| s.contains_key(sub))
}
