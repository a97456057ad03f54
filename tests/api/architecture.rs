//! The module graph stays a DAG (README, "How a scan works": imports point down the pipeline, never back up),
//! in the product (src/) and in the simulator (sim/src/), which does not depend on the product.
//!
//! Reads `src/` as text: every `crate::a::…` and `super::…` path outside test code is an edge from the
//! module of the file to the module it names. Two levels are checked: top-level modules (`scan`,
//! `store`, `azure`, …) and, inside each folder module, its direct children (`azure::auth` →
//! `azure::transport`). A re-export from a folder's `mod.rs` of its own children is not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path of a source file: `src/azure/http.rs` → `["azure", "http"]`, `src/azure/mod.rs` →
/// `["azure"]`; the crate root files give `None`.
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return None;
    }
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    Some(parts)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src readable").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its unit tests (`#[cfg(test)] mod tests`), which may reach anywhere.
fn production_code(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// Paths after `crate::` or `super::` in `code`, as segments (`crate::store::work::X` → store,
/// work, X), resolved against `module` for `super`.
fn referenced(code: &str, module: &[String], is_mod_rs: bool) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", {
            // `super` of `a::b` (a file `a/b.rs`) is `a`; of `a` (a file `a/mod.rs` or `a.rs`) the root.
            let mut m = module.to_vec();
            if !is_mod_rs || m.len() > 1 {
                m.pop();
            } else {
                m.clear();
            }
            m
        }),
    ] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut path = base.clone();
            let mut tail = rest;
            loop {
                let end = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                if end == 0 {
                    break;
                }
                path.push(tail[..end].to_owned());
                tail = &tail[end..];
                match tail.strip_prefix("::") {
                    Some(t) => tail = t,
                    None => break,
                }
            }
            // `use super::{a, b}` / `use crate::{a::X, b}`: each item of the group.
            if let Some(group) = tail.strip_prefix('{') {
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                for item in inner.split(',') {
                    let first = item.trim().split("::").next().unwrap_or("").trim();
                    if !first.is_empty() {
                        let mut p = path.clone();
                        p.push(first.to_owned());
                        out.push(p);
                    }
                }
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        stack.push(n.to_owned());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, edges, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

/// Edges at both levels: `top` between top-level modules, `inner[parent]` between a folder's children.
type Edges = BTreeMap<String, BTreeSet<String>>;

/// The module graph of the crate whose sources are in `src` (a directory under the workspace root).
fn module_graph(src: &str) -> (Edges, BTreeMap<String, Edges>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut top: Edges = BTreeMap::new();
    let mut inner: BTreeMap<String, Edges> = BTreeMap::new();
    for f in &files {
        let Some(module) = module_of(&src, f) else {
            continue;
        };
        // Test-only modules reach everywhere by design.
        if module == ["fuzz"] {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("readable");
        let is_mod_rs = f.file_name().is_some_and(|n| n == "mod.rs");
        top.entry(module[0].clone()).or_default();
        for path in referenced(production_code(&text), &module, is_mod_rs) {
            // The longest prefix that is a module.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p));
            let Some(target) = target else { continue };
            if target[0] != module[0] {
                top.entry(module[0].clone())
                    .or_default()
                    .insert(target[0].clone());
            } else if module.len() >= 2 && target.len() >= 2 && target[1] != module[1] {
                inner
                    .entry(module[0].clone())
                    .or_default()
                    .entry(module[1].clone())
                    .or_default()
                    .insert(target[1].clone());
            }
        }
    }
    (top, inner)
}

fn assert_no_cycle(top: &Edges, inner: &BTreeMap<String, Edges>) {
    if let Some(c) = find_cycle(top) {
        panic!("import cycle between modules: {}", c.join(" -> "));
    }
    for (parent, edges) in inner {
        if let Some(c) = find_cycle(edges) {
            panic!("import cycle inside {parent}: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_module_graph_has_no_cycle() {
    let (top, inner) = module_graph("src");
    assert!(top.len() > 10, "the source tree was read: {top:?}");
    assert_no_cycle(&top, &inner);
    // What sits below the scan never reaches back up to it.
    for (m, to) in &top {
        let allowed = ["app", "cli", "scheduler"];
        assert!(
            !to.contains("scan") || allowed.contains(&m.as_str()),
            "{m} imports scan, which runs the stages below it"
        );
    }
}

/// The simulator (sim/, crate `miaudit-sim`) stands on its own: no cycle inside it, and nothing of miaudit
/// in it, not even as a dev-dependency (Cargo would allow that cycle), so that it cannot lean on the code
/// whose behaviour it checks and the product can leave it out.
#[test]
fn the_simulator_crate_stands_on_its_own() {
    let (top, inner) = module_graph("sim/src");
    assert!(top.len() >= 4, "the simulator's sources were read: {top:?}");
    assert_no_cycle(&top, &inner);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sim");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("sim/Cargo.toml");
    let manifest: toml::Table = manifest.parse().expect("sim/Cargo.toml parses");
    let tables = ["dependencies", "dev-dependencies", "build-dependencies"];
    let mut deps: Vec<&toml::Table> = tables
        .iter()
        .filter_map(|t| manifest.get(*t)?.as_table())
        .collect();
    for target in manifest
        .get("target")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flat_map(|t| t.values())
    {
        deps.extend(tables.iter().filter_map(|t| target.get(*t)?.as_table()));
    }
    assert!(!deps.is_empty(), "sim/Cargo.toml has dependencies");
    for d in deps {
        assert!(
            !d.contains_key("miaudit"),
            "sim/Cargo.toml depends on miaudit"
        );
    }
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable");
        assert!(
            !text.contains("miaudit::"),
            "{} uses miaudit's code",
            f.display()
        );
    }
}

#[test]
fn the_cycle_check_can_fail() {
    let mut edges: Edges = BTreeMap::new();
    edges
        .entry("scan".into())
        .or_default()
        .insert("store".into());
    edges
        .entry("store".into())
        .or_default()
        .insert("report".into());
    assert_eq!(find_cycle(&edges), None);
    edges
        .entry("report".into())
        .or_default()
        .insert("scan".into());
    assert_eq!(
        find_cycle(&edges),
        Some(vec![
            "report".into(),
            "scan".into(),
            "store".into(),
            "report".into()
        ])
    );
    // Paths are read from `use` groups and `super` too.
    let refs = referenced(
        "use super::{transport::Transport, Api};\nlet x = crate::store::work::WorkFile::f();",
        &["azure".into(), "auth".into()],
        false,
    );
    assert!(
        refs.contains(&vec!["azure".into(), "transport".into()]),
        "{refs:?}"
    );
    assert!(
        refs.contains(&vec![
            "store".into(),
            "work".into(),
            "WorkFile".into(),
            "f".into()
        ]),
        "{refs:?}"
    );
}
