//! The node crate's layering, checked over its source: every `crate::…` and `super::…` path
//! in `src/` (comments excluded) is an import edge. The top-level modules may only point down
//! the declared layers, and inside every directory the sibling modules form no cycle. A new
//! top-level module must be given a layer here, so the rule cannot be bypassed by adding one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layer of each top-level module: a module may import only modules of a lower layer.
const LAYERS: &[(&str, u8)] = &[
    ("abort", 0),
    ("backup", 0),
    ("blobs", 0),
    ("client", 0),
    ("config", 0),
    ("metrics", 0),
    ("cluster", 1),
    ("api", 2),
    ("services", 2),
    ("server", 3),
    ("cli", 4),
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `api/inventory.rs` → ["api", "inventory"]; `api/mod.rs` → ["api"]; `lib.rs` → [].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Source with `//` comments removed (doc links are not imports).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// Module paths named after `prefix` (`crate::x`, `crate::{x, y}`), one level deep.
fn names_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let n = ident_at(part.trim());
                if !n.is_empty() {
                    out.push(n);
                }
            }
        } else {
            let n = ident_at(rest);
            if !n.is_empty() {
                out.push(n);
            }
        }
    }
    out
}

struct Graph {
    /// module path → (module path it references, file:line of the reference)
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in files {
        let m = module_of(&src, &f);
        let text = code(&std::fs::read_to_string(&f).unwrap());
        let entry = edges.entry(m.clone()).or_default();
        for n in names_after(&text, "crate::") {
            entry.insert(vec![n]);
        }
        // `super::x` from a file: a sibling `x` of this module (or an item of the parent).
        if m.len() >= 2 {
            let parent = &m[..m.len() - 1];
            for n in names_after(&text, "super::") {
                let mut t = parent.to_vec();
                t.push(n);
                entry.insert(t);
            }
        }
    }
    Graph { edges }
}

fn layer(top: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(n, _)| *n == top)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("module `{top}` has no layer in tests/layering.rs LAYERS"))
}

#[test]
fn top_level_modules_import_only_lower_layers() {
    let g = graph();
    let tops: BTreeSet<&str> = LAYERS.iter().map(|(n, _)| *n).collect();
    let mut bad = Vec::new();
    for (from, tos) in &g.edges {
        let Some(ftop) = from.first() else { continue };
        let fl = layer(ftop);
        for to in tos {
            let ttop = &to[0];
            if ttop == ftop || !tops.contains(ttop.as_str()) {
                continue; // inside the module, or an item of lib.rs / an external path
            }
            if layer(ttop) >= fl {
                bad.push(format!("{} -> {}", from.join("::"), to.join("::")));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports that do not point down:\n{}",
        bad.join("\n")
    );
}

#[test]
fn sibling_modules_form_no_cycle() {
    let g = graph();
    // Edges between siblings (same parent, both submodules of it), at file granularity,
    // resolved to the child of the common parent.
    let mut sib: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, tos) in &g.edges {
        for to in tos {
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            if common >= from.len() || common >= to.len() {
                continue; // a module and its own ancestor or descendant
            }
            let a = from[..=common].to_vec();
            let b = to[..=common].to_vec();
            if g.edges.contains_key(&b) || g.edges.keys().any(|k| k.starts_with(&b)) {
                sib.entry(a).or_default().insert(b);
            }
        }
    }
    // Depth-first search for a cycle.
    fn visit(
        n: &Vec<String>,
        sib: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            return Some(stack[i..].iter().map(|m| m.join("::")).collect());
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.clone());
        for next in sib.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, sib, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.clone());
        None
    }
    let mut done = BTreeSet::new();
    for n in sib.keys() {
        if let Some(cycle) = visit(n, &sib, &mut Vec::new(), &mut done) {
            panic!("import cycle: {} -> (back)", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_edges() {
    // Negative control: the graph is not empty, and a known downward edge is present.
    let g = graph();
    let server = g.edges.get(&vec!["server".to_string()]).expect("server.rs");
    assert!(server.contains(&vec!["cluster".to_string()]));
    assert!(names_after("use crate::{a, b::c};", "crate::") == ["a", "b"]);
}
