//! The gateway's top-level modules form no cycle: each `crate::x` a module's files name
//! is an edge, and the graph must be acyclic (issue 14: config types live beside their
//! module, the clock and backoff in their own). A cycle fails with its path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::name` references in `text`, comments included (a doc link is a dependency too).
fn referenced_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_owned())
            .expect("a name");
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        let deps = edges.entry(top.clone()).or_default();
        for m in referenced_modules(&text) {
            if m != top {
                deps.insert(m);
            }
        }
    }
    edges
}

fn find_cycle(
    node: &str,
    edges: &BTreeMap<String, BTreeSet<String>>,
    state: &mut BTreeMap<String, u8>,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    match state.get(node) {
        Some(2) => return None,
        Some(1) => {
            let start = path.iter().position(|n| n == node).unwrap_or(0);
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        _ => {}
    }
    state.insert(node.to_owned(), 1);
    path.push(node.to_owned());
    for next in edges.get(node).into_iter().flatten() {
        if let Some(c) = find_cycle(next, edges, state, path) {
            return Some(c);
        }
    }
    path.pop();
    state.insert(node.to_owned(), 2);
    None
}

#[test]
fn the_gateways_modules_form_no_cycle() {
    let edges = graph();
    assert!(
        edges.len() >= 10,
        "the modules were found: {:?}",
        edges.keys()
    );
    assert!(
        edges["ingest"].contains("store"),
        "edges are read: {edges:?}"
    );
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if let Some(cycle) = find_cycle(node, &edges, &mut state, &mut Vec::new()) {
            panic!("module cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn a_cycle_is_detected() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    edges.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    let cycle = find_cycle("a", &edges, &mut BTreeMap::new(), &mut Vec::new());
    assert_eq!(cycle, Some(vec!["a".into(), "b".into(), "a".into()]));
}
