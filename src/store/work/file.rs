//! A scan's working database file ([`WorkFile`]), beside the store's: a rollback journal in memory and no
//! fsync (nothing in it has to survive a crash), no lock shared with the API's readers or the store's writers, no growth
//! of the store's write-ahead log, and cleanup is a file deletion. Recording attaches it.
//!
//! Working files are owner-only (0600), have a random part in their name, and are alive while their
//! `.lock` sidecar is locked (an exclusive advisory `flock`, held by the scan's process until the files
//! are deleted); another process — a daemon starting while `miaudit scan` runs — deletes only the files
//! whose lock it can take. The lock is on a sidecar rather than the database file itself so that it never
//! meets SQLite's own (POSIX) locks on that file, which on some file systems are the same kind.

use super::WorkStore;
use crate::store::{PAGE_CACHE, SLOW_STATEMENT, Store, StoreError, create_private};
use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    /// The working database again, read-only: to read a finished scan's verdicts back (the scan has
    /// closed its own connections).
    pub async fn reopen(&self) -> Result<WorkStore, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(&self.path)
            .read_only(true)
            .pragma("cache_size", PAGE_CACHE)
            .log_slow_statements(log::LevelFilter::Debug, SLOW_STATEMENT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        Ok(WorkStore { pool })
    }

    /// Creates the lock sidecar, locks it, then the (empty) database file: both new, both owner-only.
    fn create(path: PathBuf) -> Result<Self, StoreError> {
        let io = |what, p: &Path| {
            let path = p.display().to_string();
            move |source| StoreError::File { what, path, source }
        };
        let lock_path = lock_path(&path);
        let lock = create_private(&lock_path)
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
        if let Err(e) = create_private(&path) {
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
            // A rollback journal in memory, not none: a tenant's evidence stages are dropped mid-write
            // when its inventory fails, and SQLite leaves ROLLBACK undefined without a journal, in a
            // file other tenants of the scan share. Durability is still not wanted (synchronous off).
            .journal_mode(SqliteJournalMode::Memory)
            .synchronous(SqliteSynchronous::Off)
            .busy_timeout(Duration::from_secs(30))
            // 512 KiB a connection (three): the working rows are written once and read back in
            // key-ordered chunks, so a larger cache buys little (figures beside the main database's
            // cache size).
            .pragma("cache_size", PAGE_CACHE)
            .log_slow_statements(log::LevelFilter::Debug, SLOW_STATEMENT);
        // Three: once the listing has ended, the settled pass, the walk for the next candidates, the
        // judging of the last chunk's and the staging of Resource Graph's pages or ARM's answers all
        // run at once; with two, a candidates range waited 4 s for a connection at 1,000,000.
        let pool = SqlitePoolOptions::new()
            .max_connections(3)
            .acquire_timeout(super::WAIT_FOR_CONNECTION)
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

    /// Peak RSS follows the page caches (README, "Performance"): every connection of the main database, of a
    /// scan's working file and of the file reopened for reading runs with the small cache.
    #[tokio::test]
    async fn every_connection_runs_with_the_small_page_cache() {
        async fn cache_size(pool: &sqlx::SqlitePool) -> Vec<i64> {
            // Hold every connection at once, so each one of the pool is asked, not the same one again.
            let mut conns = Vec::new();
            for _ in 0..pool.options().get_max_connections() {
                conns.push(pool.acquire().await.expect("connection"));
            }
            let mut sizes = Vec::new();
            for c in &mut conns {
                sizes.push(
                    sqlx::query_scalar("pragma cache_size")
                        .fetch_one(&mut **c)
                        .await
                        .expect("pragma"),
                );
            }
            sizes
        }
        let want: i64 = PAGE_CACHE.parse().expect("a number");
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let store = Store::connect(&url).await.expect("store");
        let main = cache_size(store.pool()).await;
        let (work, file) = store.open_work("scan/1").await.expect("work");
        let working = cache_size(&work.pool).await;
        work.close().await;
        let reopened = file.reopen().await.expect("reopen");
        let read_back = cache_size(&reopened.pool).await;
        for (what, sizes) in [
            ("main", main),
            ("working", working),
            ("reopened", read_back),
        ] {
            assert!(!sizes.is_empty(), "{what}: no connection");
            assert!(sizes.iter().all(|&s| s == want), "{what}: {sizes:?}");
        }
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
        work.stage_results("s", &[], crate::store::work::Existing::Fail)
            .await
            .expect("staged");
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
