// `sqlx::migrate!` embeds migrations at compile time but cannot watch the folder itself (sqlx docs).
// The git commit for `miaudit --version` and `miaudit_build_info`: MIAUDIT_GIT_COMMIT when set (a
// container build has no .git), else `git rev-parse` of this checkout (not of a repository that only
// encloses it), else "unknown"; "-dirty" when tracked files differed from the commit when it was built.
use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("--no-optional-locks")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Rebuilt when this changes, if it exists (cargo reruns a script whose watched path is missing).
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn from_git() -> Option<String> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").ok()?);
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != manifest.canonicalize().ok()? {
        return None;
    }
    // HEAD moves: HEAD itself, the branch it names (loose or packed), and the index (staged changes).
    let dir = PathBuf::from(git(&["rev-parse", "--absolute-git-dir"])?);
    let common = git(&["rev-parse", "--git-common-dir"])
        .map(|c| {
            if Path::new(&c).is_absolute() {
                PathBuf::from(c)
            } else {
                manifest.join(c)
            }
        })
        .unwrap_or_else(|| dir.clone());
    watch(&dir.join("HEAD"));
    watch(&dir.join("index"));
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(&common.join(r));
    }
    watch(&common.join("packed-refs"));
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty())?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=MIAUDIT_GIT_COMMIT");
    let commit = match std::env::var("MIAUDIT_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => from_git().unwrap_or_default(),
    };
    let safe: String = commit
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(48)
        .collect();
    let safe = if safe.is_empty() {
        "unknown".to_owned()
    } else {
        safe
    };
    println!("cargo:rustc-env=MIAUDIT_GIT_COMMIT={safe}");
}
