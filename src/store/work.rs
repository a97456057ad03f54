//! The scan's working database ([`WorkStore`]; its schema: migrations/work/): the working rows of a scan
//! in progress, apart from the record. The scan writes each Graph page and each Resource Graph page here
//! as it arrives and reads identities back in key-ordered chunks, so its memory does not grow with the
//! tenant. Recording reads `scan_results` into `scan_verdicts` and the findings.
//!
//! A scan into a store works in a database file of its own beside the store's ([`WorkFile`]): no journal
//! and no fsync (nothing in it has to survive a crash), no lock shared with the API's readers or the
//! store's writers, no growth of the store's write-ahead log, and cleanup is a file deletion. Recording
//! attaches it. A scan without a store works in memory.
//!
//! Working files are owner-only (0600), have a random part in their name, and are alive while their
//! `.lock` sidecar is locked (an exclusive advisory `flock`, held by the scan's process until the files
//! are deleted); another process — a daemon starting while `miaudit scan` runs — deletes only the files
//! whose lock it can take. The lock is on a sidecar rather than the database file itself so that it never
//! meets SQLite's own (POSIX) locks on that file, which on some file systems are the same kind.

use super::rows::{bind_finding_columns, corrupt, finding_columns, insert_rows, parse_time};
use super::{Store, StoreError};
use crate::arm::ArgHit;
use crate::domain::Finding;
use crate::domain::{
    Answer, Evidence, EvidenceSource, GraphRow, IdentityType, ManagedIdentity, ResourceId,
};
use sqlx::sqlite::SqliteRow;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema of a scan's working database (not the store's: see `migrations/work/`).
pub static WORK_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/work");

/// Rows read back per chunk.
pub const CHUNK: i64 = 2_000;

/// A staged identity that Resource Graph did not vouch for: it needs an ARM check.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub object_key: String,
    pub resource: ResourceId,
}

/// The evidence of one ARM check, to stage.
pub struct Checked<'a> {
    pub object_key: &'a str,
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

/// Writes verdicts into `scan_results` (one multi-row statement per 500). The same identity twice is an
/// error (the primary key), not a silent choice of one verdict.
async fn insert_results(
    conn: &mut SqliteConnection,
    scan_id: &str,
    findings: &[Finding],
) -> Result<(), StoreError> {
    insert_rows(
        conn,
        "insert into scan_results (scan_id, tenant_id, object_key, object_id, app_id, display_name,
             identity_type, resource_id, subscription_id, resource_type, verdict, reason, detail, evidence)",
        14,
        "",
        500,
        findings,
        |q, f| {
            bind_finding_columns(
                q.bind(scan_id)
                    .bind(&f.tenant_id)
                    .bind(f.object_id.to_ascii_lowercase())
                    .bind(&f.object_id),
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

    /// Stages one page of identities; an identity staged already (a repeated page) is replaced.
    pub async fn stage_identities(
        &self,
        scan_id: &str,
        tenant: &str,
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
                    .bind(tenant)
                    .bind(i.object_id.to_ascii_lowercase())
                    .bind(&i.object_id)
                    .bind(&i.app_id)
                    .bind(&i.display_name)
                    .bind(i.identity_type.as_str())
                    .bind(r.map(ResourceId::as_str))
                    .bind(r.and_then(|r| r.subscription_id().map(str::to_ascii_lowercase)))
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
        tenant: &str,
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
    pub async fn unstage_tenant(&self, scan_id: &str, tenant: &str) -> Result<(), StoreError> {
        sqlx::query("delete from scan_items where scan_id = ? and tenant_id = ?")
            .bind(scan_id)
            .bind(tenant)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes staged identities by lower-case object id (Graph delta `@removed`).
    pub async fn unstage_identities(
        &self,
        scan_id: &str,
        tenant: &str,
        object_keys: &[String],
    ) -> Result<(), StoreError> {
        self.per_key(
            "delete from scan_items where scan_id = ? and tenant_id = ? and object_key = ?",
            scan_id,
            tenant,
            object_keys,
        )
        .await
    }

    /// Runs `sql` (binding the scan id, the tenant and one object key) for each key, in one transaction.
    async fn per_key(
        &self,
        sql: &'static str,
        scan_id: &str,
        tenant: &str,
        object_keys: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for key in object_keys {
            sqlx::query(sql)
                .bind(scan_id)
                .bind(tenant)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The (lower-case subscription, resource type) pairs the staged identities name.
    pub async fn staged_targets(
        &self,
        scan_id: &str,
        tenant: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "select distinct subscription_key, resource_type from scan_items
             where scan_id = ? and tenant_id = ? and subscription_key is not null and resource_type is not null",
        )
        .bind(scan_id)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Stages one page of Resource Graph rows.
    pub async fn stage_arg_rows(
        &self,
        scan_id: &str,
        tenant: &str,
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
                    .bind(tenant)
                    .bind(&h.resource_key)
                    .bind(&h.principal_key)
                    .bind(h.request_id.as_deref())
                    .bind(&at)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The next chunk of identities with a resource that neither Resource Graph showed carrying their
    /// principal nor ARM has checked yet, after `after` (object key).
    pub async fn candidates(
        &self,
        scan_id: &str,
        tenant: &str,
        after: &str,
    ) -> Result<Vec<Candidate>, StoreError> {
        let rows = sqlx::query(
            "select i.object_key, i.resource_id from scan_items i
             where i.scan_id = ? and i.tenant_id = ? and i.object_key > ? and i.resource_id is not null
               and i.source is null
               and (exists (select 1 from scan_must_check m
                      where m.scan_id = i.scan_id and m.tenant_id = i.tenant_id and m.object_key = i.object_key)
                    or not exists (select 1 from scan_arg_rows a
                      where a.scan_id = i.scan_id and a.tenant_id = i.tenant_id
                        and a.resource_key = lower(rtrim(i.resource_id, '/')) and a.principal_key = i.object_key))
             order by i.object_key limit ?",
        )
        .bind(scan_id)
        .bind(tenant)
        .bind(after)
        .bind(CHUNK)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let raw: String = r.try_get("resource_id")?;
            out.push(Candidate {
                object_key: r.try_get("object_key")?,
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
        tenant: &str,
        object_keys: &[String],
    ) -> Result<(), StoreError> {
        self.per_key(
            "insert or ignore into scan_must_check (scan_id, tenant_id, object_key) values (?, ?, ?)",
            scan_id,
            tenant,
            object_keys,
        )
        .await
    }

    /// Stages the evidence of ARM checks.
    pub async fn stage_checks(
        &self,
        scan_id: &str,
        tenant: &str,
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
            .bind(tenant)
            .bind(c.object_key)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The next chunk of staged identities with their evidence (subscription visibility not set), in
    /// object key order after `after`.
    pub async fn staged_items(
        &self,
        scan_id: &str,
        tenant: &str,
        after: &str,
    ) -> Result<Vec<(String, ManagedIdentity, Evidence)>, StoreError> {
        // Resource Graph's row for the resource, whatever principal it shows: the evidence of health when
        // it carries this one, a second witness beside ARM's answer otherwise.
        let rows = sqlx::query(
            "select i.*, a.principal_key as arg_principal_key, a.request_id as arg_request_id,
                    a.checked_at as arg_checked_at,
                    (select e.resource_key from scan_arg_rows e
                      where e.scan_id = i.scan_id and e.tenant_id = i.tenant_id and e.principal_key = i.object_key
                        and e.resource_key != lower(rtrim(coalesce(i.resource_id, ''), '/'))
                      order by e.resource_key limit 1) as arg_elsewhere
             from scan_items i left join scan_arg_rows a
               on i.resource_id is not null
                  and a.scan_id = i.scan_id and a.tenant_id = i.tenant_id
                  and a.resource_key = lower(rtrim(i.resource_id, '/'))
             where i.scan_id = ? and i.tenant_id = ? and i.object_key > ?
             order by i.object_key limit ?",
        )
        .bind(scan_id)
        .bind(tenant)
        .bind(after)
        .bind(CHUNK)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| staged_item(r, tenant)).collect()
    }

    /// Writes verdicts of a scan in progress.
    pub async fn stage_results(
        &self,
        scan_id: &str,
        findings: &[Finding],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_results(&mut tx, scan_id, findings).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Staged verdicts of a scan (all, or only the non-healthy ones), in tenant and object order.
    pub async fn staged_results(
        &self,
        scan_id: &str,
        non_healthy_only: bool,
    ) -> Result<Vec<Finding>, StoreError> {
        let sql = if non_healthy_only {
            "select * from scan_results where scan_id = ? and verdict != 'healthy' order by tenant_id, object_key"
        } else {
            "select * from scan_results where scan_id = ? order by tenant_id, object_key"
        };
        let rows = sqlx::query(sql).bind(scan_id).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| finding_columns(r, "scan_results"))
            .collect()
    }
}

/// A row of [`WorkStore::staged_items`]: the object key, the identity, and its evidence.
fn staged_item(
    r: &SqliteRow,
    tenant: &str,
) -> Result<(String, ManagedIdentity, Evidence), StoreError> {
    let object_key: String = r.try_get("object_key")?;
    let identity = staged_identity(r, tenant)?;
    let evidence = staged_evidence(r, &identity, &object_key)?;
    Ok((object_key, identity, evidence))
}

fn staged_identity(r: &SqliteRow, tenant: &str) -> Result<ManagedIdentity, StoreError> {
    let t = "scan_items";
    let kind: String = r.try_get("identity_type")?;
    let resource: Option<String> = r.try_get("resource_id")?;
    let names: Option<String> = r.try_get("alternative_names")?;
    let object_id: String = r.try_get("object_id")?;
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
fn staged_evidence(
    r: &SqliteRow,
    identity: &ManagedIdentity,
    object_key: &str,
) -> Result<Evidence, StoreError> {
    let t = "scan_items";
    let source: Option<String> = r.try_get("source")?;
    let answer: Option<String> = r.try_get("answer")?;
    let arg_checked: Option<String> = r.try_get("arg_checked_at")?;
    let arg_principal: Option<String> = r.try_get("arg_principal_key")?;
    let resource_graph = arg_checked.as_ref().map(|_| GraphRow {
        principal_id: arg_principal.clone(),
    });
    let arg_vouches = arg_checked.is_some() && arg_principal.as_deref() == Some(object_key);
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

/// A scan's working database file; deleted when the last handle to it is dropped (a scan cancelled
/// mid-way included).
#[derive(Debug)]
pub struct WorkFile {
    path: PathBuf,
    /// `<path>.lock`, exclusively locked for as long as this handle lives; closed (unlocked) only after
    /// the files are deleted, so whoever takes the lock finds a dead scan's leftovers, never a live one.
    _lock: std::fs::File,
}

impl WorkFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the lock sidecar, locks it, then the (empty) database file: both new, both owner-only.
    fn create(path: PathBuf) -> Result<Self, StoreError> {
        let io = |what, p: &Path| {
            let path = p.display().to_string();
            move |source| StoreError::File { what, path, source }
        };
        let lock_path = lock_path(&path);
        let lock = super::create_private(&lock_path)
            .map_err(io("cannot create the scan's lock file", &lock_path))?;
        match lock.try_lock() {
            // A clean-up that ran between creating and locking the sidecar may have taken the lock
            // first and unlinked the file: then ours is a lock on nothing. Refuse (the caller's scan
            // fails and says so) rather than run with a working file a later clean-up would delete.
            Ok(()) if !same_file(&lock, &lock_path) => {
                return Err(io(
                    "the scan's lock file was removed while it was taken",
                    &lock_path,
                )(std::io::ErrorKind::NotFound.into()));
            }
            Ok(()) => {}
            // A file system without advisory locks: the scan goes on. Nobody else can take the lock
            // there either, so the file is never deleted as dead — only, after a crash, not cleaned up.
            Err(std::fs::TryLockError::Error(e)) => tracing::warn!(
                path = %lock_path.display(), error = %e,
                "cannot lock the scan's working file; if this scan dies, remove its files by hand"
            ),
            // Impossible for a file just created under a random name; refuse rather than share it.
            Err(std::fs::TryLockError::WouldBlock) => {
                let _ = std::fs::remove_file(&lock_path);
                return Err(io("cannot lock", &lock_path)(
                    std::io::ErrorKind::WouldBlock.into(),
                ));
            }
        }
        if let Err(e) = super::create_private(&path) {
            let _ = std::fs::remove_file(&lock_path);
            return Err(io("cannot create the scan's working database", &path)(e));
        }
        Ok(Self { path, _lock: lock })
    }
}

impl Drop for WorkFile {
    fn drop(&mut self) {
        remove_work_files(&self.path);
        let _ = std::fs::remove_file(lock_path(&self.path));
        // `_lock` closes after this body: the lock outlives the files it guards.
    }
}

/// Whether the open `file` is still the one at `path` (not unlinked or replaced meanwhile).
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

/// The lock sidecar of a working database.
fn lock_path(work: &Path) -> PathBuf {
    let mut p = work.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Suffixes of the files that belong to a working database `<work>`: its lock and any journal SQLite
/// may have made (it runs without one; a file left by a crash is removed all the same).
const WORK_SUFFIXES: &[&str] = &[".lock", "-journal", "-wal", "-shm"];

/// Deletes a working database and its journals (not its lock).
fn remove_work_files(work: &Path) {
    let _ = std::fs::remove_file(work);
    for suffix in &WORK_SUFFIXES[1..] {
        let mut p = work.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Deletes the working files at `work` if no live scan holds their lock: true when it did.
///
/// Safe against a scan starting or ending meanwhile: a scan creates (and locks) its `.lock` before its
/// database and deletes its database before its `.lock`, names are never reused, and a lock file held by
/// a live process cannot be locked here. A database without a lock file is a leftover (of a crash
/// between the two deletions, or of a version without locks).
fn remove_if_dead(work: &Path) -> bool {
    let lock_path = lock_path(work);
    let claimed = match std::fs::File::open(&lock_path) {
        Ok(f) => match f.try_lock() {
            Ok(()) => Some(f),
            // Live (WouldBlock), or a lock we cannot take: not ours to delete.
            Err(_) => return false,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => return false,
    };
    remove_work_files(work);
    if claimed.is_some() {
        let _ = std::fs::remove_file(&lock_path);
    }
    true
}

/// The name prefix of the working files of the store at `db`.
fn work_prefix(db: &Path) -> String {
    format!(
        "{}.work-",
        db.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    )
}

impl Store {
    /// Opens a fresh working database for `scan_id`: beside the store's file, or (a store in memory)
    /// in the temporary directory; `<db>.work-<scan id>.<random>` (the random part keeps the name
    /// unguessable, e.g. in a shared temporary directory, and unique whoever chose the scan id).
    pub async fn open_work(&self, scan_id: &str) -> Result<(WorkStore, WorkFile), StoreError> {
        let safe: String = scan_id
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let random = uuid::Uuid::new_v4().simple();
        let path = match &self.file {
            Some(db) => db.with_file_name(format!("{}{safe}.{random}", work_prefix(db))),
            None => std::env::temp_dir().join(format!("miaudit.work-{safe}.{random}")),
        };
        let file = WorkFile::create(path)?;
        let opts = SqliteConnectOptions::new()
            .filename(file.path())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Off)
            .synchronous(SqliteSynchronous::Off)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", "-4096");
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await?;
        Ok((WorkStore::migrated(pool).await?, file))
    }

    /// Deletes the working files of scans that died (a crash) and leaves those of live scans, of this
    /// process or another (a `miaudit scan` run by hand while the daemon starts); returns how many.
    pub fn remove_stale_work(&self) -> usize {
        let Some(db) = &self.file else { return 0 };
        let prefix = work_prefix(db);
        let dir = match db.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        // Each working database once, whichever of its files the listing shows.
        let works: std::collections::BTreeSet<PathBuf> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(&prefix) {
                    return None;
                }
                let base = WORK_SUFFIXES
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                Some(dir.join(base))
            })
            .collect();
        works.iter().filter(|w| remove_if_dead(w)).count()
    }
}

impl WorkStore {
    /// A working database in memory (a scan without a store).
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        // An in-memory database exists per connection: exactly one.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(SqliteConnectOptions::new().in_memory(true))
            .await?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Self, StoreError> {
        WORK_MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_unlinked_or_replaced_is_not_the_same_file() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("x.lock");
        let f = std::fs::File::create(&p).expect("create");
        assert!(same_file(&f, &p));
        std::fs::remove_file(&p).expect("unlink");
        assert!(!same_file(&f, &p), "unlinked");
        let _other = std::fs::File::create(&p).expect("recreate");
        assert!(
            !same_file(&f, &p),
            "replaced by another file of the same name"
        );
    }

    #[tokio::test]
    async fn a_restarted_listing_forgets_only_its_own_tenants_pages() {
        let work = WorkStore::open_in_memory().await.expect("work");
        let mi = |t: &str, id: &str| {
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
        work.stage_identities("s1", "t1", &[mi("t1", "a"), mi("t1", "b")])
            .await
            .expect("staged");
        work.stage_identities("s1", "t2", &[mi("t2", "c")])
            .await
            .expect("staged");
        work.unstage_tenant("s1", "t1").await.expect("restart");
        work.stage_identities("s1", "t1", &[mi("t1", "a")])
            .await
            .expect("staged");
        let keys = |t: &'static str| {
            let work = work.clone();
            async move {
                work.staged_items("s1", t, "")
                    .await
                    .expect("items")
                    .into_iter()
                    .map(|(k, _, _)| k)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            keys("t1").await,
            ["a"],
            "b was only in the abandoned listing"
        );
        assert_eq!(keys("t2").await, ["c"]);
    }

    #[tokio::test]
    async fn a_scans_working_file_lives_beside_the_store_and_goes_with_its_last_handle() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let store = Store::connect(&url).await.expect("store");
        let (work, file) = store.open_work("scan/1").await.expect("work");
        let path = file.path().to_path_buf();
        assert_eq!(path.parent(), Some(dir.path()));
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let random = name.strip_prefix("m.db.work-scan_1.").expect("prefix");
        assert!(
            random.len() == 32 && random.chars().all(|c| c.is_ascii_hexdigit()),
            "{name}"
        );
        let (_w2, other) = store.open_work("scan/1").await.expect("same scan id");
        assert_ne!(other.path(), path, "names are never reused");
        assert!(lock_path(&path).exists());
        // The working schema only: none of the store's tables.
        let tables: Vec<String> = sqlx::query_scalar(
            "select name from sqlite_master where type = 'table' and name like 'scan_%' order by name",
        )
        .fetch_all(&work.pool)
        .await
        .expect("tables");
        assert_eq!(
            tables,
            [
                "scan_arg_rows",
                "scan_items",
                "scan_must_check",
                "scan_results"
            ]
        );
        work.close().await;
        assert!(path.exists());
        drop(file);
        assert!(!path.exists(), "deleted with its handle");
        assert!(!lock_path(&path).exists(), "and its lock file");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn working_files_are_owner_only_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let store = Store::connect(&url).await.expect("store");
        let (work, file) = store.open_work("s").await.expect("work");
        // Written through SQLite, as a scan does.
        work.stage_results("s", &[]).await.expect("staged");
        for p in [file.path().to_path_buf(), lock_path(file.path())] {
            let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", p.display());
        }
        // In memory, the working file goes to the shared temporary directory: random name, 0600.
        let mem = Store::connect("sqlite::memory:")
            .await
            .expect("memory store");
        let (_w, f) = mem.open_work("s").await.expect("work");
        assert_eq!(f.path().parent(), Some(std::env::temp_dir().as_path()));
        let mode = std::fs::metadata(f.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn cleanup_removes_dead_scans_files_and_never_a_live_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let store = Store::connect(&url).await.expect("store");
        // A live scan, whose lock is held.
        let (live_db, live) = store.open_work("live").await.expect("work");
        live_db.close().await;
        // A scan whose process died: its files stay, its lock went with the process.
        let dead = dir
            .path()
            .join("m.db.work-dead.0123456789abcdef0123456789abcdef");
        std::fs::write(&dead, b"x").expect("dead");
        std::fs::write(lock_path(&dead), b"").expect("dead lock");
        std::fs::write(dir.path().join(format!("{}-journal", dead.display())), b"").expect("j");
        // A leftover of a version without locks (no random part, no lock file).
        let legacy = dir.path().join("m.db.work-legacy");
        std::fs::write(&legacy, b"x").expect("legacy");
        // A lock file whose database is gone (a crash between the two deletions).
        let orphan_lock = dir
            .path()
            .join("m.db.work-gone.ffffffffffffffffffffffffffffffff.lock");
        std::fs::write(&orphan_lock, b"").expect("lock");
        // Another store's file.
        std::fs::write(dir.path().join("other.db.work-x"), b"x").expect("other");

        // Another handle of the store (as another process would see it) cleans up.
        let other = Store::connect(&url).await.expect("store");
        assert_eq!(other.remove_stale_work(), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".work-"))
            .collect();
        left.sort();
        let live_name = live
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            left,
            [
                live_name.clone(),
                format!("{live_name}.lock"),
                "other.db.work-x".to_owned()
            ]
        );
        assert_eq!(other.remove_stale_work(), 0, "the live scan stays");
        // Once the scan is over its files go, and nothing is left to clean up.
        drop(live);
        assert_eq!(other.remove_stale_work(), 0);
        assert!(dir.path().join("m.db").exists());
    }
}
