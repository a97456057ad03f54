// `sqlx::migrate!` embeds migrations at compile time but cannot watch the folder itself (sqlx docs).
// The git commit for `miaudit --version` and `miaudit_build_info`: MIAUDIT_GIT_COMMIT when set (a
// container build has no .git), else `git rev-parse` of the checkout, else "unknown"; "-dirty" when
// tracked files differ from the commit.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=MIAUDIT_GIT_COMMIT");
    let commit = match std::env::var("MIAUDIT_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => {
            // Rebuilt when HEAD moves: HEAD itself, the branch it names, and the index.
            if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                println!("cargo:rerun-if-changed={dir}/HEAD");
                println!("cargo:rerun-if-changed={dir}/index");
                if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    println!("cargo:rerun-if-changed={dir}/{r}");
                }
                println!("cargo:rerun-if-changed={dir}/packed-refs");
            }
            match git(&["rev-parse", "--short=12", "HEAD"]) {
                Some(c) if !c.is_empty() => {
                    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                        .is_some_and(|s| !s.is_empty());
                    if dirty { format!("{c}-dirty") } else { c }
                }
                _ => "unknown".to_owned(),
            }
        }
    };
    let safe: String = commit
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(48)
        .collect();
    println!("cargo:rustc-env=MIAUDIT_GIT_COMMIT={safe}");
}
