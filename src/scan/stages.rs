//! One tenant's scan, stage by stage: inventory (Graph, or the stored inventory and Graph delta), the
//! subscription list, Resource Graph in bulk, ARM confirmation of candidates, and the judge; the
//! working database is where every stage leaves its rows.
//!
//! The stages overlap where their inputs allow (issue 12): the subscription list and the open findings
//! are read while Graph pages; Resource Graph starts as soon as the first Graph page is staged, asking
//! about the subscriptions and resource types staged so far, and when the listing ends it tops up with
//! what later pages added (the rows of both rounds are disjoint, so no row is fetched twice); the open
//! findings, which ARM checks whatever Resource Graph shows, are confirmed while Resource Graph pages.
//! Only the remaining candidates wait for both. While ARM answers about them the judge takes every
//! identity whose evidence is settled (no ARM check can reach it), the dangling role assignments are
//! looked for, and once ARM has answered the candidates are judged and the orphans' role assignments
//! read, the settled pass going on beside them.

use super::{FULL_SYNC_EVERY, Scanner, TenantClients};
use crate::arm::{ARG_SUBSCRIPTION_BATCH, ArgHit, ArgTable, ArmClient, Subscription};
use crate::azure::PageSink;
use crate::classify::judge;
use crate::domain::{
    Evidence, Finding, ManagedIdentity, ObjectId, SubscriptionId, TenantId, Verdict,
};
use crate::report::TenantReport;
use crate::store::Store;
use crate::store::work::{Candidate, Checked, Existing, Judging, WorkStore};
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

/// A tenant's verdicts counted from what it staged ([`WorkStore::judged_summary`]), for its report.
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

/// The first chunk of candidates ARM checks ([`Scanner::confirm_candidates`]); each next one is four
/// times larger, up to [`MAX_CANDIDATES`].
const FIRST_CANDIDATES: i64 = 128;

/// The largest chunk of candidates: a chunk's orphans are known when ARM has answered about all of it,
/// and their role assignments are then asked of Resource Graph (15 queries per 5 s), so the last
/// chunk's lookups are what follows the last ARM answer (2,000 orphans: 20 queries, 5 s).
const MAX_CANDIDATES: i64 = 512;

/// How long after the listing ended the settled identities are first judged while Resource Graph still
/// pages, and how often after that. The first pass comes early enough that the last one, once Resource
/// Graph has answered, has only the rest to judge: at 100,000 identities (listing 17 s, Resource Graph
/// 37 s) a first pass 20 s after the listing fell on the bulk stage's end, and the one pass of 99.5k
/// identities (7.5 s) ended 2.8 s after the last ARM answer. A bulk stage that ends within the first
/// delay (10,000 identities: 0.6 s after the listing) is not held up by a pass's writes.
const SETTLED_FIRST_PASS: std::time::Duration = std::time::Duration::from_secs(5);
const SETTLED_PASS_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

/// The longest the blast-radius lookup of one tenant may take once the candidates are judged.
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
        let resolve = self.resolve_beside(&ctx, clients, record, watcher);
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
            let (notes, enriched) = resolved?;
            notes.into_report(&mut tr);
            // Counted from what is staged, which is what is recorded: a verdict the candidates pass
            // replaced is counted once.
            let counted = match ctx.work.judged_summary(scan_id, tenant).await {
                Ok(c) => Ok((c, false)),
                // The passes judge complementary sets, so none is left; if one was, judge it rather
                // than leave a verdict missing (which would read as an identity gone).
                Err(e) => {
                    let subs = enriched.subscriptions.as_ref();
                    match self.judge(&ctx, subs, Judging::Unjudged, "", None).await {
                        Ok((0, _)) => ctx
                            .work
                            .judged_summary(scan_id, tenant)
                            .await
                            .map(|c| (c, false)),
                        Ok((n, _)) => {
                            tracing::warn!(error = %e, judged = n, "the judging passes left identities; judged them after");
                            ctx.work
                                .judged_summary(scan_id, tenant)
                                .await
                                .map(|c| (c, true))
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            let ((summary, failed), late) = counted?;
            Judged { summary, failed }.into_report(&mut tr);
            tr.subscription_coverage = enriched.coverage;
            // Read for the orphans the candidates pass found; one judged later has none read, so
            // none replace the stored ones.
            tr.role_assignments = enriched.role_assignments.filter(|_| !late);
            tr.dangling = enriched.dangling;
            Ok::<_, crate::store::StoreError>(())
        };
        if let Err(e) = verdicts.await {
            // Without every verdict written, nothing about absent identities may be concluded; and
            // what was staged is not recorded (not counted, and possibly a settled verdict a later
            // Resource Graph row would have sent to ARM).
            tracing::error!(error = %e, "the scan's working rows failed");
            if let Err(e) = ctx.work.unstage_results(scan_id, tenant).await {
                tracing::error!(error = %e, "the tenant's verdicts could not be removed");
            }
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
        clients: &TenantClients,
        record: Option<&Store>,
        watcher: watch::Receiver<Progress>,
    ) -> Option<Resolved> {
        let mut failed = watcher.clone();
        tokio::select! {
            r = self.resolve(ctx, clients, record, watcher) => Some(r),
            _ = failed.wait_for(|p| p.ended == Some(false)) => None,
        }
    }

    async fn resolve(
        &self,
        ctx: &Staging<'_>,
        clients: &TenantClients,
        record: Option<&Store>,
        watcher: watch::Receiver<Progress>,
    ) -> Resolved {
        let arm = &clients.arm;
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
        let (bulk_done, bulk_watch) = watch::channel(false);
        let bulk = async {
            let r = if trust_arg {
                self.bulk(ctx, arm, subs, watcher.clone(), &mut bulk_notes)
                    .await
            } else {
                bulk_notes.failed(
                    "resource graph: not used, since the open findings could not be read".into(),
                );
                Ok(())
            };
            bulk_done.send_replace(true);
            r
        };
        // The open findings go to ARM whatever Resource Graph shows: no need to wait for it.
        let early = async {
            if listed_in_full(watcher.clone()).await {
                self.confirm_candidates(ctx, arm, subs, None, &mut early_notes)
                    .await
            } else {
                Ok(())
            }
        };
        let mut enriched = Enriched::default();
        // Once Resource Graph has answered and every identity is staged: the candidates confirmed by
        // ARM and judged a chunk at a time, the orphans' role assignments read as they are found, and
        // beside them the dangling role assignments (no verdict needed).
        let evidence = async {
            let (bulk, early) = futures::join!(bulk, early);
            bulk?;
            early?;
            if !listed_in_full(watcher.clone()).await {
                return Ok(());
            }
            let (orphans, found) = tokio::sync::mpsc::unbounded_channel();
            let (confirmed, confirmed_watch) = watch::channel(false);
            let candidates = async {
                let r = self
                    .confirm_candidates(ctx, arm, subs, Some(orphans), &mut notes)
                    .await;
                confirmed.send_replace(true);
                r
            };
            let roles = async {
                Ok(match subs {
                    Some(s) => {
                        self.bounded_blast_radius(ctx, arm, s, found, confirmed_watch)
                            .await
                    }
                    None => None,
                })
            };
            let beside = async {
                match subs {
                    Some(s) => {
                        let coverage = coverage(ctx, s).await?;
                        let dangling = bounded_dangling(ctx, clients, s).await;
                        Ok((Some(coverage), dangling))
                    }
                    None => Ok::<_, crate::store::StoreError>((None, None)),
                }
            };
            // The first error stops the others (the lookups of a tenant that failed are not wanted).
            let ((), roles, beside) = futures::try_join!(candidates, roles, beside)?;
            enriched.role_assignments = roles;
            (enriched.coverage, enriched.dangling) = beside;
            Ok::<_, crate::store::StoreError>(())
        };
        // The settled identities, judged while Resource Graph pages (each pass taking those settled
        // since the last) and while ARM confirms the candidates: the judge mostly works while the
        // services' answers are awaited. The last pass starts once Resource Graph has answered.
        let settled = async {
            if !listed_in_full(watcher.clone()).await {
                return Ok(());
            }
            let (mut done, mut gone) = (bulk_watch, false);
            let mut wait = SETTLED_FIRST_PASS;
            loop {
                if !gone && !*done.borrow_and_update() {
                    // Resource Graph still pages: a pass only once it has paged a while, so a short
                    // bulk stage (10,000 identities: 2 s) is not held up by a pass's writes.
                    let pause = tokio::time::sleep(wait);
                    wait = SETTLED_PASS_EVERY;
                    tokio::select! {
                        changed = done.changed() => {
                            // The bulk stage gone without saying it ended: one last pass; the
                            // evidence stage fails or ends with it.
                            gone = changed.is_err();
                            continue;
                        }
                        () = pause => {}
                    }
                }
                let last = gone || *done.borrow_and_update();
                self.judge(ctx, subs, Judging::Settled, "", None).await?;
                if last {
                    return Ok(());
                }
            }
        };
        // The first error stops all.
        futures::try_join!(evidence, settled)?;
        notes.absorb(bulk_notes);
        notes.absorb(early_notes);
        enriched.subscriptions = subscriptions;
        Ok((notes, enriched))
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
                    match arm
                        .fetch_identity_principals(ctx.tenant, batch, table, &types, &mut sink)
                        .await
                    {
                        Ok(_) => {}
                        // Our own database failed, not Resource Graph: the rows it did stage are
                        // lost to the judge (a principal seen on another resource among them), so
                        // the tenant fails rather than go on without them.
                        Err(crate::azure::AzureError::Staging(e)) => {
                            return Err(crate::store::StoreError::Corrupt {
                                table: "scan_arg_rows",
                                reason: format!("a Resource Graph page could not be staged: {e}"),
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, table = table.name(), "Resource Graph query failed; falling back to ARM");
                            notes.failed(format!("resource graph ({}): {e}", table.name()));
                        }
                    }
                }
            }
            if ended.is_some() || watcher.wait_for(|p| p.ended.is_some()).await.is_err() {
                return Ok(());
            }
        }
    }

    /// An ARM GET of every candidate not checked yet (anything Resource Graph did not show carrying its
    /// principal, and every open finding), a chunk at a time, [`Settings`]' concurrency at once. With
    /// `orphans` (once Resource Graph has answered in full), each chunk's key range is judged as a
    /// candidates range while ARM answers about the next one, and the orphans found are sent there;
    /// without (while Resource Graph still pages), only the open findings are checked and nothing is
    /// judged.
    async fn confirm_candidates(
        &self,
        ctx: &Staging<'_>,
        arm: &ArmClient,
        subscriptions: Option<&HashMap<SubscriptionId, Subscription>>,
        orphans: Option<tokio::sync::mpsc::UnboundedSender<Vec<ObjectId>>>,
        notes: &mut Notes,
    ) -> Result<(), crate::store::StoreError> {
        let must_check_only = orphans.is_none();
        let visible = |sub: &SubscriptionId| visibility(subscriptions, sub);
        let any_visible = subscriptions.and_then(|s| s.keys().next().cloned());
        let started = std::time::Instant::now();
        let candidates_after = |after: String, limit: i64| async move {
            ctx.work
                .candidates(ctx.scan_id, ctx.tenant, &after, must_check_only, limit)
                .await
        };
        // The first chunks small, growing: ARM starts after a short walk (the first 2,000 of 5,000
        // candidates among 1,000,000 identities were 4 s of walking), and each next walk takes less
        // than ARM takes over the chunk before it.
        let mut limit = FIRST_CANDIDATES;
        // The candidates ranges: judged up to `judged`; checked (not judged yet) up to `checked`.
        let (mut judged, mut checked) = (String::new(), None::<String>);
        let judge_range = |from: String, upto: Option<String>| {
            let orphans = orphans.clone();
            async move {
                if let Some(tx) = orphans {
                    let (_, found) = self
                        .judge(
                            ctx,
                            subscriptions,
                            Judging::Candidates,
                            &from,
                            upto.as_deref(),
                        )
                        .await?;
                    if !found.is_empty() {
                        // The receiver gone (its lookup gave up) is no reason to stop judging.
                        let _ = tx.send(found);
                    }
                }
                Ok::<_, crate::store::StoreError>(())
            }
        };
        let mut chunk = candidates_after(String::new(), limit).await?;
        while let Some(last) = chunk.last() {
            limit = (limit * 4).min(MAX_CANDIDATES);
            let after = last.object_id.to_string();
            tracing::debug!(candidates = chunk.len(), "confirming candidates with ARM");
            notes.arm_checks += chunk.len() as u64;
            let tenant = ctx.tenant;
            // The next chunk is looked for (a walk through the staged identities), and the last one
            // judged, while ARM answers about this one.
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
            let previous: futures::future::OptionFuture<_> = checked
                .take()
                .map(|upto| judge_range(std::mem::replace(&mut judged, upto.clone()), Some(upto)))
                .into();
            let (checks, next, previous) =
                futures::join!(checks, candidates_after(after.clone(), limit), previous);
            previous.transpose()?;
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
            checked = Some(after);
            chunk = next?;
        }
        // The last chunk's range, then everything after it (open findings checked early, say).
        if let Some(upto) = checked.take() {
            let from = std::mem::replace(&mut judged, upto.clone());
            judge_range(from, Some(upto)).await?;
        }
        judge_range(judged, None).await?;
        tracing::debug!(
            must_check_only,
            checks = notes.arm_checks,
            seconds = started.elapsed().as_secs_f64(),
            "candidates confirmed"
        );
        Ok(())
    }

    /// [`Self::blast_radius`], given at most [`BLAST_RADIUS_LIMIT`] once the candidates are judged
    /// (`confirmed`): enrichment, not evidence, so bounded, that it can never push a finished scan past
    /// its timeout (which would record nothing of it).
    async fn bounded_blast_radius(
        &self,
        ctx: &Staging<'_>,
        arm: &ArmClient,
        subscriptions: &HashMap<SubscriptionId, Subscription>,
        orphans: tokio::sync::mpsc::UnboundedReceiver<Vec<ObjectId>>,
        mut confirmed: watch::Receiver<bool>,
    ) -> Option<Vec<(ObjectId, crate::domain::RoleAssignment)>> {
        let lookup = self.blast_radius(ctx, arm, subscriptions, orphans);
        let limit = async {
            let _ = confirmed.wait_for(|c| *c).await;
            tokio::time::sleep(BLAST_RADIUS_LIMIT).await;
        };
        tokio::select! {
            r = lookup => r,
            () = limit => {
                tracing::warn!(
                    seconds = BLAST_RADIUS_LIMIT.as_secs(),
                    "reading the role assignments of orphans took too long; the stored ones stay"
                );
                None
            }
        }
    }

    /// The role assignments the identities judged orphaned still hold, from Resource Graph: asked about
    /// as the orphans arrive (as many a query as [`crate::arm::ROLE_QUERY_PRINCIPALS`]), the roles named
    /// once all are in. A failed lookup is logged and leaves what is stored (`None`); it never changes a
    /// verdict.
    async fn blast_radius(
        &self,
        ctx: &Staging<'_>,
        arm: &ArmClient,
        subscriptions: &HashMap<SubscriptionId, Subscription>,
        mut orphans: tokio::sync::mpsc::UnboundedReceiver<Vec<ObjectId>>,
    ) -> Option<Vec<(ObjectId, crate::domain::RoleAssignment)>> {
        let started = std::time::Instant::now();
        let mut subs: Vec<SubscriptionId> = subscriptions.keys().cloned().collect();
        subs.sort();
        let per = crate::arm::ROLE_QUERY_PRINCIPALS;
        let (mut pending, mut asked) = (Vec::new(), 0usize);
        let mut found: Vec<(ObjectId, crate::domain::RoleAssignment)> = Vec::new();
        let ask = async |batch: &[ObjectId], found: &mut Vec<_>| {
            for subs in subs.chunks(ARG_SUBSCRIPTION_BATCH) {
                found.extend(arm.fetch_role_assignments(ctx.tenant, subs, batch).await?);
            }
            Ok::<_, crate::azure::AzureError>(())
        };
        let mut outcome = Ok(());
        loop {
            let more = orphans.recv().await;
            if let Some(batch) = more.as_ref() {
                pending.extend(batch.iter().cloned());
            }
            // Whole queries while orphans arrive; what is left once they are all in.
            let take = if more.is_some() {
                pending.len() / per * per
            } else {
                pending.len()
            };
            if take > 0 && outcome.is_ok() {
                let batch: Vec<ObjectId> = pending.drain(..take).collect();
                asked += batch.len();
                for part in batch.chunks(per) {
                    outcome = ask(part, &mut found).await;
                    if outcome.is_err() {
                        break;
                    }
                }
            } else if outcome.is_err() {
                pending.clear();
            }
            if more.is_none() {
                break;
            }
        }
        let named = match outcome {
            Ok(()) => {
                let mut named = Ok(());
                for subs in subs.chunks(ARG_SUBSCRIPTION_BATCH) {
                    named = arm.name_assignments(ctx.tenant, subs, &mut found).await;
                    if named.is_err() {
                        break;
                    }
                }
                named
            }
            Err(e) => Err(e),
        };
        match named {
            Ok(()) => {
                tracing::debug!(
                    orphans = asked,
                    assignments = found.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "role assignments of orphans read"
                );
                Some(found)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the role assignments of orphans; the stored ones stay");
                None
            }
        }
    }

    /// Judges the staged identities of `which` after `after` (up to `upto` when given), a chunk at a
    /// time, and stages the verdicts (the candidates' replacing any staged before); returns how many
    /// it judged and the orphans among them.
    async fn judge(
        &self,
        ctx: &Staging<'_>,
        subscriptions: Option<&HashMap<SubscriptionId, Subscription>>,
        which: Judging,
        after: &str,
        upto: Option<&str>,
    ) -> Result<(u64, Vec<ObjectId>), crate::store::StoreError> {
        let visible = |sub: &SubscriptionId| visibility(subscriptions, sub);
        let mut after = after.to_owned();
        let started = std::time::Instant::now();
        let (mut read, mut written) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        let (mut judged, mut orphans) = (0u64, Vec::new());
        loop {
            let t = std::time::Instant::now();
            let chunk = ctx
                .work
                .staged_items(ctx.scan_id, ctx.tenant, which, &after, upto)
                .await?;
            read += t.elapsed();
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
                if j.verdict == Verdict::Orphaned {
                    orphans.push(identity.object_id.clone());
                }
                judged += 1;
                findings.push(finding(identity, &ev, j));
            }
            let t = std::time::Instant::now();
            let existing = match which {
                Judging::Settled => Existing::Keep,
                Judging::Candidates => Existing::Replace,
                Judging::Unjudged => Existing::Fail,
            };
            ctx.work
                .stage_results(ctx.scan_id, &findings, existing)
                .await?;
            written += t.elapsed();
        }
        tracing::debug!(
            ?which,
            identities = judged,
            orphans = orphans.len(),
            seconds = started.elapsed().as_secs_f64(),
            reading_seconds = read.as_secs_f64(),
            writing_seconds = written.as_secs_f64(),
            "identities judged"
        );
        Ok((judged, orphans))
    }
}

/// How many of the subscriptions the staged identities name are in the tenant's list.
async fn coverage(
    ctx: &Staging<'_>,
    subscriptions: &HashMap<SubscriptionId, Subscription>,
) -> Result<crate::report::Coverage, crate::store::StoreError> {
    let referenced = ctx
        .work
        .referenced_subscriptions(ctx.scan_id, ctx.tenant)
        .await?;
    let listed = referenced
        .iter()
        .filter(|s| subscriptions.contains_key(*s))
        .count();
    Ok(crate::report::Coverage::new(
        referenced.len() as u64,
        listed as u64,
    ))
}

/// [`dangling_assignments`] within [`BLAST_RADIUS_LIMIT`].
async fn bounded_dangling(
    ctx: &Staging<'_>,
    clients: &TenantClients,
    subscriptions: &HashMap<SubscriptionId, Subscription>,
) -> Option<crate::domain::DanglingCheck> {
    let started = std::time::Instant::now();
    match tokio::time::timeout(
        BLAST_RADIUS_LIMIT,
        dangling_assignments(ctx, clients, subscriptions),
    )
    .await
    {
        Ok(d) => {
            tracing::debug!(
                found = d.as_ref().map(|d| d.found.len()),
                seconds = started.elapsed().as_secs_f64(),
                "dangling role assignments looked for"
            );
            d
        }
        Err(_) => {
            tracing::warn!(
                "looking for dangling role assignments took too long; the stored ones stay"
            );
            None
        }
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

/// What the evidence stages read beside the verdicts: never evidence itself.
#[derive(Debug, Default)]
struct Enriched {
    /// The tenant's subscription list; `None` when it could not be read.
    subscriptions: Option<HashMap<SubscriptionId, Subscription>>,
    coverage: Option<crate::report::Coverage>,
    role_assignments: Option<Vec<(ObjectId, crate::domain::RoleAssignment)>>,
    dangling: Option<crate::domain::DanglingCheck>,
}

/// The evidence stages' outcome: notes, and what was read beside the verdicts.
type Resolved = Result<(Notes, Enriched), crate::store::StoreError>;

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
