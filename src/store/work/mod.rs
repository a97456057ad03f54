//! The scan's working database ([`WorkStore`]; its schema: migrations/work/): the working rows of a scan
//! in progress, apart from the record. The scan writes each Graph page and each Resource Graph page here
//! as it arrives and reads identities back in key-ordered chunks, so its memory does not grow with the
//! tenant. Recording reads `scan_results` into `scan_verdicts` and the findings.
//!
//! A scan into a store works in a database file of its own beside the store's ([`WorkFile`], in `file`);
//! a scan without a store works in memory.

mod file;

pub use file::WorkFile;

use super::rows::{bind_finding_columns, corrupt, finding_columns, id, insert_rows, parse_time};
use super::{Store, StoreError};
use crate::arm::ArgHit;
use crate::domain::Verdict;
use crate::domain::{
    Answer, Evidence, EvidenceSource, Finding, GraphRow, IdentityType, ManagedIdentity, ObjectId,
    ResourceId, SubscriptionId, TenantId,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::sqlite::SqliteRow;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Row, SqliteConnection, SqlitePool};

/// The schema of a scan's working database (not the store's: see `migrations/work/`).
pub static WORK_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/work");

/// Rows read back per chunk.
pub const CHUNK: i64 = 2_000;

/// How long a stage waits for one of the working database's connections: several stages of several
/// tenants share them, and a statement at 1,000,000 identities can take seconds, so queueing is normal;
/// the tenant's deadline, not this, ends a scan that stalls.
pub(crate) const WAIT_FOR_CONNECTION: std::time::Duration = std::time::Duration::from_secs(3600);

/// Verdicts written per transaction ([`WorkStore::stage_results`]).
const RESULTS_PER_TRANSACTION: usize = 250;

/// A staged identity that Resource Graph did not vouch for: it needs an ARM check.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub object_id: ObjectId,
    pub resource: ResourceId,
}

/// Which staged identities [`WorkStore::staged_items`] reads. Once the listing has ended, the settled
/// ones are judged while Resource Graph still pages (again and again, each pass taking those settled
/// since) and while ARM confirms the candidates; the candidates once ARM has answered about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judging {
    /// Those not judged yet whose verdict no later answer can change: no resource to check, or Resource
    /// Graph shows the resource carrying the identity and no open finding asks for ARM's word. ARM
    /// never checks them ([`WorkStore::candidates`]). One that a later Resource Graph row turns into a
    /// candidate (a row for the same resource repeated with another principal) is judged again as one.
    Settled,
    /// Every identity ARM has checked that is not settled, judged or not: once ARM has answered about
    /// every candidate, the complement of the settled condition (negated, a null read as not settled),
    /// read through the checked identities' index. Their verdicts replace any staged before.
    Candidates,
    /// Those without a staged verdict: what the passes left, which they never should.
    Unjudged,
}

/// The settled condition on `scan_items i` and its Resource Graph row `a` (null when it has none);
/// `Judging::Candidates` is its negation.
macro_rules! settled {
    () => {
        "i.resource_id is null
         or a.principal_key = i.object_key
            and not exists (select 1 from scan_must_check m
              where m.scan_id = i.scan_id and m.tenant_id = i.tenant_id and m.object_key = i.object_key)"
    };
}

/// Not judged yet: no staged verdict.
macro_rules! unjudged {
    () => {
        "not exists (select 1 from scan_results r
           where r.scan_id = i.scan_id and r.tenant_id = i.tenant_id and r.object_key = i.object_key)"
    };
}

/// `staged_items`' statement: identities of `scan_items i` (read as `$from` says) after a key (and up
/// to one, with `$bound`) that meet a condition on them and their Resource Graph row `a`.
macro_rules! staged_items_sql {
    ($from:literal, $bound:literal, $($condition:tt)+) => {
        concat!(
            "select i.*, a.principal_key as arg_principal_key, a.request_id as arg_request_id,
                    a.checked_at as arg_checked_at,
                    (select e.resource_key from scan_arg_rows e
                      where e.scan_id = i.scan_id and e.tenant_id = i.tenant_id and e.principal_key = i.object_key
                        and e.resource_key != lower(rtrim(coalesce(i.resource_id, ''), '/'))
                      order by e.resource_key limit 1) as arg_elsewhere
             from ",
            $from,
            " left join scan_arg_rows a
               on i.resource_id is not null
                  and a.scan_id = i.scan_id and a.tenant_id = i.tenant_id
                  and a.resource_key = lower(rtrim(i.resource_id, '/'))
             where i.scan_id = ? and i.tenant_id = ? and i.object_key > ?",
            $bound,
            " and (",
            $($condition)+,
            ") order by i.object_key limit ?"
        )
    };
}

impl Judging {
    /// The statement; with `bounded`, it takes the highest key as its fourth parameter.
    fn staged_items_sql(self, bounded: bool) -> &'static str {
        macro_rules! both {
            ($from:literal, $($condition:tt)+) => {
                if bounded {
                    staged_items_sql!($from, " and i.object_key <= ?", $($condition)+)
                } else {
                    staged_items_sql!($from, "", $($condition)+)
                }
            };
        }
        match self {
            Self::Settled => both!("scan_items i", "(", settled!(), ") and ", unjudged!()),
            Self::Candidates => both!(
                "scan_items i indexed by scan_items_checked",
                "i.source is not null and not coalesce((",
                settled!(),
                "), 0)"
            ),
            Self::Unjudged => both!("scan_items i", unjudged!()),
        }
    }
}

/// The evidence of one ARM check, to stage.
pub struct Checked<'a> {
    pub object_id: &'a ObjectId,
    pub answer: &'a Answer,
    pub request_id: Option<&'a str>,
    pub correlation_request_id: Option<&'a str>,
    pub checked_at: chrono::DateTime<chrono::Utc>,
}

/// A scan's working database: a file of its own beside the store's ([`Store::open_work`]), or memory
/// ([`WorkStore::open_in_memory`]). Not the record: it holds only the schema of `migrations/work/`.
#[derive(Clone)]
pub struct WorkStore {
    pool: SqlitePool,
}

impl WorkStore {
    /// A working database in memory (a scan without a store).
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        // An in-memory database exists per connection: exactly one, never closed for its age or idleness
        // (the pool's defaults, 30 and 10 minutes, would replace it with an empty one mid-scan), waited
        // for as long as the scan lasts (its own deadline ends it).
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(WAIT_FOR_CONNECTION)
            .connect_with(SqliteConnectOptions::new().in_memory(true))
            .await?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Self, StoreError> {
        WORK_MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

/// What [`WorkStore::stage_results`] does with a verdict already staged for the same identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// An error (the primary key), not a silent choice of one verdict.
    Fail,
    /// It stays: the new one is dropped (a settled pass that read a row before Resource Graph's last
    /// word yields to the candidates pass that judged after it).
    Keep,
    /// It is replaced (the candidates pass's verdict, on ARM's answer, wins).
    Replace,
}

/// Writes verdicts into `scan_results` (one multi-row statement per 500).
async fn insert_results(
    conn: &mut SqliteConnection,
    scan_id: &str,
    findings: &[Finding],
    existing: Existing,
) -> Result<(), StoreError> {
    insert_rows(
        conn,
        match existing {
            Existing::Fail => "insert into scan_results (scan_id, tenant_id, object_key, object_id, app_id,
                 display_name, identity_type, resource_id, subscription_id, resource_type, verdict, reason,
                 detail, evidence)",
            Existing::Keep => "insert or ignore into scan_results (scan_id, tenant_id, object_key, object_id,
                 app_id, display_name, identity_type, resource_id, subscription_id, resource_type, verdict,
                 reason, detail, evidence)",
            Existing::Replace => "insert or replace into scan_results (scan_id, tenant_id, object_key,
                 object_id, app_id, display_name, identity_type, resource_id, subscription_id, resource_type,
                 verdict, reason, detail, evidence)",
        },
        14,
        "",
        500,
        findings,
        |q, f| {
            bind_finding_columns(
                q.bind(scan_id)
                    .bind(f.tenant_id.as_str())
                    .bind(f.object_id.as_str())
                    .bind(f.object_id.as_str()),
                f,
            )
        },
    )
    .await
}

impl WorkStore {
    /// Closes the pool (before recording attaches the file).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The distinct subscriptions (lower-case ids) the tenant's staged identities name.
    pub async fn referenced_subscriptions(
        &self,
        scan_id: &str,
        tenant: &TenantId,
    ) -> Result<Vec<SubscriptionId>, StoreError> {
        let keys: Vec<String> = sqlx::query_scalar(
            "select distinct subscription_key from scan_items
             where scan_id = ? and tenant_id = ? and subscription_key is not null",
        )
        .bind(scan_id)
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(keys.into_iter().map(SubscriptionId::from).collect())
    }

    /// One identity the tenant's inventory listed in this scan (a principal known to exist).
    pub async fn any_object(
        &self,
        scan_id: &str,
        tenant: &TenantId,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "select object_key from scan_items where scan_id = ? and tenant_id = ? limit 1",
        )
        .bind(scan_id)
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Stages one page of identities; an identity staged already (a repeated page) is replaced.
    pub async fn stage_identities(
        &self,
        scan_id: &str,
        tenant: &TenantId,
        identities: &[ManagedIdentity],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_rows(
            &mut tx,
            "insert into scan_items (scan_id, tenant_id, object_key, object_id, app_id, display_name,
                 identity_type, resource_id, subscription_key, resource_type, alternative_names)",
            11,
            " on conflict (scan_id, tenant_id, object_key) do update set object_id = excluded.object_id,
                 app_id = excluded.app_id, display_name = excluded.display_name,
                 identity_type = excluded.identity_type, resource_id = excluded.resource_id,
                 subscription_key = excluded.subscription_key, resource_type = excluded.resource_type,
                 alternative_names = excluded.alternative_names",
            500,
            identities,
            |q, i| {
                let r = i.resource.as_ref();
                q.bind(scan_id)
                    .bind(tenant.as_str())
                    .bind(i.object_id.as_str())
                    .bind(i.object_id.as_str())
                    .bind(&i.app_id)
                    .bind(&i.display_name)
                    .bind(i.identity_type.as_str())
                    .bind(r.map(ResourceId::as_str))
                    .bind(r.and_then(ResourceId::subscription_id).map(SubscriptionId::as_str))
                    .bind(r.map(ResourceId::full_type))
                    .bind(if r.is_none() {
                        serde_json::to_string(&i.alternative_names).ok()
                    } else {
                        None
                    })
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stages the tenant's inventory as of its last recorded scan in `record` (the base a Graph delta
    /// applies to): every identity of its findings except those resolved as removed, a chunk at a time.
    /// Returns how many.
    pub async fn stage_stored_inventory(
        &self,
        record: &Store,
        scan_id: &str,
        tenant: &TenantId,
    ) -> Result<u64, StoreError> {
        let mut after = String::new();
        let mut n = 0u64;
        while let Some((last, page)) = record.stored_inventory(tenant, &after).await? {
            after = last;
            n += page.len() as u64;
            self.stage_identities(scan_id, tenant, &page).await?;
        }
        Ok(n)
    }

    /// Removes every staged identity of the tenant (its listing starts over).
    pub async fn unstage_tenant(&self, scan_id: &str, tenant: &TenantId) -> Result<(), StoreError> {
        sqlx::query("delete from scan_items where scan_id = ? and tenant_id = ?")
            .bind(scan_id)
            .bind(tenant.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes the tenant's staged verdicts: a tenant whose scan was cut short (out of time, a panic)
    /// is reported with none judged, and records none.
    pub async fn unstage_results(
        &self,
        scan_id: &str,
        tenant: &TenantId,
    ) -> Result<(), StoreError> {
        // A chunk a statement: one delete of a large tenant would keep every page it changes in the
        // rollback journal, which is in memory.
        loop {
            let deleted = sqlx::query(
                "delete from scan_results where scan_id = ?1 and tenant_id = ?2 and object_key in
                   (select object_key from scan_results where scan_id = ?1 and tenant_id = ?2 limit ?3)",
            )
            .bind(scan_id)
            .bind(tenant.as_str())
            .bind(CHUNK)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if deleted == 0 {
                return Ok(());
            }
        }
    }

    /// Removes staged identities (Graph delta `@removed`).
    pub async fn unstage_identities(
        &self,
        scan_id: &str,
        tenant: &TenantId,
        objects: &[ObjectId],
    ) -> Result<(), StoreError> {
        self.per_key(
            "delete from scan_items where scan_id = ? and tenant_id = ? and object_key = ?",
            scan_id,
            tenant,
            objects,
        )
        .await
    }

    /// Runs `sql` (binding the scan id, the tenant and one object key) for each object, in one
    /// transaction.
    async fn per_key(
        &self,
        sql: &'static str,
        scan_id: &str,
        tenant: &TenantId,
        objects: &[ObjectId],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for object in objects {
            sqlx::query(sql)
                .bind(scan_id)
                .bind(tenant.as_str())
                .bind(object.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The (subscription, resource type) pairs the staged identities name.
    pub async fn staged_targets(
        &self,
        scan_id: &str,
        tenant: &TenantId,
    ) -> Result<Vec<(SubscriptionId, String)>, StoreError> {
        let rows = sqlx::query(
            "select distinct subscription_key, resource_type from scan_items
             where scan_id = ? and tenant_id = ? and subscription_key is not null and resource_type is not null",
        )
        .bind(scan_id)
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((id(r, "subscription_key")?, r.try_get("resource_type")?)))
            .collect()
    }

    /// Stages one page of Resource Graph rows.
    pub async fn stage_arg_rows(
        &self,
        scan_id: &str,
        tenant: &TenantId,
        rows: &[ArgHit],
    ) -> Result<(), StoreError> {
        let at = chrono::Utc::now().to_rfc3339();
        let mut tx = self.pool.begin().await?;
        insert_rows(
            &mut tx,
            "insert into scan_arg_rows (scan_id, tenant_id, resource_key, principal_key, request_id, checked_at)",
            6,
            " on conflict (scan_id, tenant_id, resource_key) do update set
                 principal_key = excluded.principal_key, request_id = excluded.request_id,
                 checked_at = excluded.checked_at",
            500,
            rows,
            |q, h| {
                q.bind(scan_id)
                    .bind(tenant.as_str())
                    .bind(&h.resource_key)
                    .bind(h.principal_key.as_ref().map(ObjectId::as_str))
                    .bind(h.request_id.as_deref())
                    .bind(&at)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The next chunk of identities with a resource that neither Resource Graph showed carrying their
    /// principal nor ARM has checked yet, after `after` (object key), at most `limit`; with
    /// `must_check_only`, only the open findings among them (whatever Resource Graph showed).
    pub async fn candidates(
        &self,
        scan_id: &str,
        tenant: &TenantId,
        after: &str,
        must_check_only: bool,
        limit: i64,
    ) -> Result<Vec<Candidate>, StoreError> {
        let rows = sqlx::query(
            "select i.object_key, i.resource_id from scan_items i
             where i.scan_id = ? and i.tenant_id = ? and i.object_key > ? and i.resource_id is not null
               and i.source is null
               and (exists (select 1 from scan_must_check m
                      where m.scan_id = i.scan_id and m.tenant_id = i.tenant_id and m.object_key = i.object_key)
                    or ? = 0 and not exists (select 1 from scan_arg_rows a
                      where a.scan_id = i.scan_id and a.tenant_id = i.tenant_id
                        and a.resource_key = lower(rtrim(i.resource_id, '/')) and a.principal_key = i.object_key))
             order by i.object_key limit ?",
        )
        .bind(scan_id)
        .bind(tenant.as_str())
        .bind(after)
        .bind(must_check_only)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let raw: String = r.try_get("resource_id")?;
            out.push(Candidate {
                object_id: id(r, "object_key")?,
                resource: ResourceId::parse(&raw)
                    .ok_or_else(|| corrupt("scan_items", format!("resource id {raw:?}")))?,
            });
        }
        Ok(out)
    }

    /// Marks identities that ARM must check whatever Resource Graph shows (open findings).
    pub async fn stage_must_check(
        &self,
        scan_id: &str,
        tenant: &TenantId,
        objects: &[ObjectId],
    ) -> Result<(), StoreError> {
        self.per_key(
            "insert or ignore into scan_must_check (scan_id, tenant_id, object_key) values (?, ?, ?)",
            scan_id,
            tenant,
            objects,
        )
        .await
    }

    /// Stages the evidence of ARM checks.
    pub async fn stage_checks(
        &self,
        scan_id: &str,
        tenant: &TenantId,
        checks: &[Checked<'_>],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for c in checks {
            sqlx::query(
                "update scan_items set source = 'arm', answer = ?, request_id = ?, correlation_request_id = ?,
                     checked_at = ?
                 where scan_id = ? and tenant_id = ? and object_key = ?",
            )
            .bind(serde_json::to_string(c.answer).unwrap_or_default())
            .bind(c.request_id)
            .bind(c.correlation_request_id)
            .bind(c.checked_at.to_rfc3339())
            .bind(scan_id)
            .bind(tenant.as_str())
            .bind(c.object_id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The next chunk of staged identities with their evidence (subscription visibility not set), in
    /// object id order after `after` and up to `upto` (inclusive) when given: those of `which`.
    pub async fn staged_items(
        &self,
        scan_id: &str,
        tenant: &TenantId,
        which: Judging,
        after: &str,
        upto: Option<&str>,
    ) -> Result<Vec<(ManagedIdentity, Evidence)>, StoreError> {
        // Resource Graph's row for the resource, whatever principal it shows: the evidence of health when
        // it carries this one, a second witness beside ARM's answer otherwise.
        let mut q = sqlx::query(which.staged_items_sql(upto.is_some()))
            .bind(scan_id)
            .bind(tenant.as_str())
            .bind(after);
        if let Some(upto) = upto {
            q = q.bind(upto);
        }
        let rows = q.bind(CHUNK).fetch_all(&self.pool).await?;
        rows.iter().map(|r| staged_item(r, tenant)).collect()
    }

    /// The tenant's staged verdicts counted (and how many say a check did not complete), once every
    /// staged identity has one: a verdict missing would read as an identity gone, so that is an error.
    pub async fn judged_summary(
        &self,
        scan_id: &str,
        tenant: &TenantId,
    ) -> Result<(crate::domain::Summary, u64), StoreError> {
        let items: i64 = sqlx::query_scalar(
            "select count(*) from scan_items where scan_id = ? and tenant_id = ?",
        )
        .bind(scan_id)
        .bind(tenant.as_str())
        .fetch_one(&self.pool)
        .await?;
        let rows: Vec<(String, bool, i64)> = sqlx::query_as(
            "select verdict, reason = 'check_failed', count(*) from scan_results
             where scan_id = ? and tenant_id = ? group by 1, 2",
        )
        .bind(scan_id)
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        let (mut summary, mut failed) = (crate::domain::Summary::default(), 0u64);
        for (verdict, check_failed, n) in rows {
            let v = Verdict::parse(&verdict)
                .ok_or_else(|| corrupt("scan_results", format!("verdict {verdict:?}")))?;
            let n = u64::try_from(n).unwrap_or(0);
            summary.add_n(v, n);
            if check_failed {
                failed += n;
            }
        }
        if u64::try_from(items).ok() != Some(summary.total) {
            return Err(corrupt(
                "scan_results",
                format!("{} verdicts staged for {items} identities", summary.total),
            ));
        }
        Ok((summary, failed))
    }

    /// Writes verdicts of a scan in progress; `existing` says what happens to a verdict staged before
    /// for the same identity.
    pub async fn stage_results(
        &self,
        scan_id: &str,
        findings: &[Finding],
        existing: Existing,
    ) -> Result<(), StoreError> {
        // A transaction per 250: the second judging pass inserts among the first pass's rows, a page
        // each, and the rollback journal (in memory) keeps every page a transaction changes. Chunks of
        // 2,000 took peak RSS from 45 to 77 MiB at 1,000,000 identities.
        for part in findings.chunks(RESULTS_PER_TRANSACTION) {
            let mut tx = self.pool.begin().await?;
            insert_results(&mut tx, scan_id, part, existing).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// The scan's verdicts (all, those of `verdict`, or with `non_healthy` the orphaned and unknown
    /// ones) in tenant and object order, as they are read: a report of every identity, however many,
    /// without holding them.
    pub fn stream_results(
        &self,
        scan_id: &str,
        verdict: Option<Verdict>,
        non_healthy: bool,
    ) -> BoxStream<'_, Result<Finding, StoreError>> {
        sqlx::query(
            "select * from scan_results where scan_id = ?1 and (?2 is null or verdict = ?2)
               and (?3 = 0 or verdict != 'healthy')
             order by tenant_id, object_key",
        )
        .bind(scan_id.to_owned())
        .bind(verdict.map(Verdict::as_str))
        .bind(non_healthy)
        .fetch(&self.pool)
        .map(|r| finding_columns(&r?, "scan_results"))
        .boxed()
    }
}

/// A row of [`WorkStore::staged_items`]: the identity and its evidence.
fn staged_item(
    r: &SqliteRow,
    tenant: &TenantId,
) -> Result<(ManagedIdentity, Evidence), StoreError> {
    let identity = staged_identity(r, tenant)?;
    let evidence = staged_evidence(r, &identity)?;
    Ok((identity, evidence))
}

fn staged_identity(r: &SqliteRow, tenant: &TenantId) -> Result<ManagedIdentity, StoreError> {
    let t = "scan_items";
    let kind: String = r.try_get("identity_type")?;
    let resource: Option<String> = r.try_get("resource_id")?;
    let names: Option<String> = r.try_get("alternative_names")?;
    let object_id = id(r, "object_id")?;
    Ok(ManagedIdentity {
        tenant_id: tenant.to_owned(),
        app_id: r.try_get("app_id")?,
        display_name: r.try_get("display_name")?,
        identity_type: IdentityType::parse(&kind)
            .ok_or_else(|| corrupt(t, format!("identity_type {kind:?}")))?,
        resource: resource.as_deref().and_then(ResourceId::parse),
        alternative_names: names
            .map(|n| serde_json::from_str(&n).map_err(|e| corrupt(t, e.to_string())))
            .transpose()?
            .unwrap_or_default(),
        object_id,
    })
}

/// The evidence of a staged identity: ARM's answer when it checked it, Resource Graph's row when that
/// carries the identity's principal, else none.
fn staged_evidence(r: &SqliteRow, identity: &ManagedIdentity) -> Result<Evidence, StoreError> {
    let t = "scan_items";
    let source: Option<String> = r.try_get("source")?;
    let answer: Option<String> = r.try_get("answer")?;
    let arg_checked: Option<String> = r.try_get("arg_checked_at")?;
    let arg_principal: Option<ObjectId> = r
        .try_get::<Option<String>, _>("arg_principal_key")?
        .map(ObjectId::from);
    let resource_graph = arg_checked.as_ref().map(|_| GraphRow {
        principal_id: arg_principal.clone(),
    });
    let arg_vouches = arg_checked.is_some() && arg_principal.as_ref() == Some(&identity.object_id);
    let (source, answer, request_id, checked_at) = match (source.as_deref(), arg_checked) {
        (Some("arm"), _) => (
            EvidenceSource::Arm,
            serde_json::from_str(answer.as_deref().unwrap_or_default())
                .map_err(|e| corrupt(t, e.to_string()))?,
            r.try_get("request_id")?,
            r.try_get::<Option<String>, _>("checked_at")?,
        ),
        (_, Some(at)) if arg_vouches => (
            EvidenceSource::ResourceGraph,
            Answer::Present {
                principal_id: Some(identity.object_id.clone()),
                latest_version: false,
            },
            r.try_get("arg_request_id")?,
            Some(at),
        ),
        _ => (EvidenceSource::None, Answer::NotChecked, None, None),
    };
    Ok(Evidence {
        source,
        answer,
        resource_graph,
        carried_elsewhere: r.try_get("arg_elsewhere")?,
        subscription_visible: None,
        request_id,
        correlation_request_id: r.try_get("correlation_request_id")?,
        checked_at: checked_at.map(|c| parse_time(t, &c)).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_restarted_listing_forgets_only_its_own_tenants_pages() {
        let work = WorkStore::open_in_memory().await.expect("work");
        let (t1, t2) = (TenantId::new("t1"), TenantId::new("t2"));
        let mi = |t: &TenantId, id: &str| {
            ManagedIdentity::from_alternative_names(
                t,
                id.into(),
                "app".into(),
                "name".into(),
                vec![
                    "isExplicit=False".into(),
                    format!(
                        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{id}"
                    ),
                ],
            )
        };
        work.stage_identities("s1", &t1, &[mi(&t1, "a"), mi(&t1, "b")])
            .await
            .expect("staged");
        work.stage_identities("s1", &t2, &[mi(&t2, "c")])
            .await
            .expect("staged");
        work.unstage_tenant("s1", &t1).await.expect("restart");
        work.stage_identities("s1", &t1, &[mi(&t1, "a")])
            .await
            .expect("staged");
        let keys = |t: &TenantId| {
            let (work, t) = (work.clone(), t.clone());
            async move {
                work.staged_items("s1", &t, Judging::Unjudged, "", None)
                    .await
                    .expect("items")
                    .into_iter()
                    .map(|(i, _)| i.object_id.to_string())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            keys(&t1).await,
            ["a"],
            "b was only in the abandoned listing"
        );
        assert_eq!(keys(&t2).await, ["c"]);
    }

    /// The judge's two passes ([`Judging`]): the settled pass reads no identity ARM may still check (a
    /// candidate, now or as an open finding), and the candidates pass reads exactly what the first left
    /// (the null case included: no Resource Graph row).
    #[tokio::test]
    async fn the_two_judging_passes_split_the_identities_and_no_candidate_is_settled() {
        let work = WorkStore::open_in_memory().await.expect("work");
        let t = TenantId::new("t1");
        let vm = |id: &str| {
            format!(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{id}"
            )
        };
        let mi = |id: &str, resource: bool| {
            let mut names = vec!["isExplicit=False".to_owned()];
            if resource {
                names.push(vm(id));
            }
            ManagedIdentity::from_alternative_names(&t, id.into(), "app".into(), id.into(), names)
        };
        // a: no resource; b: Resource Graph carries it; c: carried, but an open finding; d: the resource
        // carries another principal; e: Resource Graph has no row (the null case).
        let items = [
            mi("a", false),
            mi("b", true),
            mi("c", true),
            mi("d", true),
            mi("e", true),
        ];
        work.stage_identities("s1", &t, &items)
            .await
            .expect("staged");
        let hit = |id: &str, principal: &str| ArgHit {
            resource_key: vm(id).to_lowercase(),
            principal_key: Some(principal.into()),
            request_id: None,
        };
        work.stage_arg_rows("s1", &t, &[hit("b", "b"), hit("c", "c"), hit("d", "x")])
            .await
            .expect("rows");
        work.stage_must_check("s1", &t, &["c".into()])
            .await
            .expect("must check");
        let read = |which: Judging| {
            let (work, t) = (work.clone(), t.clone());
            async move {
                work.staged_items("s1", &t, which, "", None)
                    .await
                    .expect("items")
            }
        };
        let keys = |rows: &[(ManagedIdentity, Evidence)]| {
            rows.iter()
                .map(|(i, _)| i.object_id.to_string())
                .collect::<Vec<_>>()
        };
        let settled = read(Judging::Settled).await;
        assert_eq!(keys(&settled), ["a", "b"]);
        let candidates: Vec<String> = work
            .candidates("s1", &t, "", false, CHUNK)
            .await
            .expect("candidates")
            .into_iter()
            .map(|c| c.object_id.to_string())
            .collect();
        assert_eq!(candidates, ["c", "d", "e"], "none of them settled");

        let verdicts = |rows: Vec<(ManagedIdentity, Evidence)>, verdict: Verdict| {
            rows.into_iter()
                .map(|(i, ev)| Finding {
                    resource_id: i.resource.as_ref().map(|r| r.as_str().to_owned()),
                    subscription_id: None,
                    resource_type: None,
                    verdict,
                    reason: crate::domain::Reason::ResourcePresent,
                    detail: String::new(),
                    evidence: (&ev).into(),
                    tenant_id: i.tenant_id,
                    object_id: i.object_id,
                    app_id: i.app_id,
                    display_name: i.display_name,
                    identity_type: i.identity_type,
                })
                .collect::<Vec<_>>()
        };
        work.stage_results("s1", &verdicts(settled, Verdict::Healthy), Existing::Keep)
            .await
            .expect("first pass");
        assert!(
            work.judged_summary("s1", &t).await.is_err(),
            "three identities have no verdict yet"
        );
        assert!(
            read(Judging::Settled).await.is_empty(),
            "a settled pass takes only those not judged yet"
        );
        assert_eq!(
            keys(&read(Judging::Unjudged).await),
            ["c", "d", "e"],
            "what the settled pass left"
        );
        assert!(
            read(Judging::Candidates).await.is_empty(),
            "the candidates pass reads what ARM has checked"
        );
        let check = |ids: &'static [&'static str]| {
            let (work, t) = (work.clone(), t.clone());
            async move {
                let answer = crate::domain::Answer::Error {
                    status: 404,
                    code: Some("ResourceNotFound".into()),
                    message: None,
                };
                let objects: Vec<ObjectId> = ids.iter().map(|i| ObjectId::from(*i)).collect();
                let rows: Vec<Checked<'_>> = objects
                    .iter()
                    .map(|o| Checked {
                        object_id: o,
                        answer: &answer,
                        request_id: None,
                        correlation_request_id: None,
                        checked_at: chrono::Utc::now(),
                    })
                    .collect();
                work.stage_checks("s1", &t, &rows).await.expect("checks");
            }
        };
        check(&["c", "d", "e"]).await;
        let rest = read(Judging::Candidates).await;
        assert_eq!(
            keys(&rest),
            ["c", "d", "e"],
            "the complement of the settled"
        );
        // Candidates judged a range at a time: the ranges meet and do not overlap.
        let range = |after: &'static str, upto: Option<&'static str>| {
            let (work, t) = (work.clone(), t.clone());
            async move {
                let rows = work
                    .staged_items("s1", &t, Judging::Candidates, after, upto)
                    .await
                    .expect("items");
                keys(&rows)
            }
        };
        assert_eq!(range("", Some("c")).await, ["c"]);
        assert_eq!(range("c", Some("d")).await, ["d"]);
        assert_eq!(range("d", None).await, ["e"]);
        assert!(range("", Some("b")).await.is_empty());
        work.stage_results("s1", &verdicts(rest, Verdict::Orphaned), Existing::Replace)
            .await
            .expect("second pass");
        assert!(read(Judging::Unjudged).await.is_empty());
        let (summary, failed) = work.judged_summary("s1", &t).await.expect("all judged");
        assert_eq!(
            (summary.total, summary.healthy, summary.orphaned, failed),
            (5, 2, 3, 0)
        );

        // A later Resource Graph row for b's resource shows another principal: b is a candidate
        // now, and its verdict from the candidates pass replaces the settled one.
        work.stage_arg_rows("s1", &t, &[hit("b", "y")])
            .await
            .expect("rows");
        check(&["b"]).await;
        let again = read(Judging::Candidates).await;
        assert_eq!(keys(&again), ["b", "c", "d", "e"]);
        // A settled pass that read b before that row yields to the candidates pass.
        let stale = verdicts(vec![again[0].clone()], Verdict::Healthy);
        work.stage_results("s1", &verdicts(again, Verdict::Unknown), Existing::Replace)
            .await
            .expect("replaced");
        work.stage_results("s1", &stale, Existing::Keep)
            .await
            .expect("kept");
        let (summary, _) = work.judged_summary("s1", &t).await.expect("all judged");
        assert_eq!(
            (summary.total, summary.healthy, summary.unknown),
            (5, 1, 4),
            "each identity counted once, b by its last verdict"
        );
        assert!(
            work.stage_results("s1", &stale, Existing::Fail)
                .await
                .is_err(),
            "twice, without saying which wins"
        );
        work.unstage_results("s1", &t).await.expect("unstaged");
        assert!(
            work.judged_summary("s1", &t).await.is_err(),
            "a tenant cut short keeps no verdict"
        );
    }
}
