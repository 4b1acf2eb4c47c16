//! The layer order of ARCHITECTURE.md ("Layers"), checked on the source: every `crate::` path
//! in `src/` is an import of one top-level module by another. No test here starts a server:
//! the module graph is the thing under test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, from the top. A module not named here is domain (layer 0), so a new domain
/// module is checked without being listed.
const LAYERS: &[(&str, u8)] = &[("main", 4), ("cli", 4), ("server", 3), ("api", 2), ("console", 2), ("web", 1)];

fn layer(module: &str) -> u8 {
    LAYERS.iter().find(|(m, _)| *m == module).map_or(0, |(_, l)| *l)
}

fn layer_name(l: u8) -> &'static str {
    ["domain", "web", "handlers", "composition root", "binary"][l as usize]
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file (`src/web/state.rs` -> `web::state`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The module paths a source text names through `crate::` (`crate::a::b`, `crate::{a, b}`),
/// comments left out.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() {
                        out.push(name);
                    }
                }
            } else {
                let path: String =
                    after.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                out.push(path.trim_end_matches(':').to_owned());
            }
            rest = after;
        }
    }
    out
}

/// Each module path (of every file) and what it imports by `crate::` path.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        graph.insert(module_of(&src, &file), crate_paths(&text).into_iter().collect());
    }
    graph
}

fn top(path: &str) -> &str {
    path.split("::").next().unwrap_or(path)
}

/// A cycle among the graph's nodes, if there is one (as the path around it).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str()) {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// The graph of top-level modules (`a -> b` when a file of `a` names `crate::b`).
fn top_level(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, imports) in graph {
        let from = top(module).to_owned();
        let entry = out.entry(from.clone()).or_default();
        for import in imports {
            if top(import) != from {
                entry.insert(top(import).to_owned());
            }
        }
    }
    out
}

#[test]
fn no_module_imports_a_module_of_a_higher_layer() {
    let graph = top_level(&imports());
    let mut upward = Vec::new();
    for (from, imports) in &graph {
        for to in imports {
            if layer(from) < layer(to) {
                upward.push(format!("{from} ({}) imports {to} ({})", layer_name(layer(from)), layer_name(layer(to))));
            }
        }
    }
    assert!(upward.is_empty(), "imports from a lower layer to a higher one:\n{}", upward.join("\n"));
    for (module, _) in LAYERS {
        assert!(graph.contains_key(*module), "src/ has no module {module}: update LAYERS");
    }
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let graph = top_level(&imports());
    assert_eq!(find_cycle(&graph), None, "a dependency cycle among src/'s modules");
}

#[test]
fn the_handlers_import_neither_each_other_nor_the_composition_root() {
    let graph = top_level(&imports());
    for (from, to) in [("api", "console"), ("console", "api"), ("api", "server"), ("console", "server")] {
        assert!(!graph[from].contains(to), "{from} imports {to}: share through the web layer or the domain");
    }
}

#[test]
fn the_checker_sees_a_handler_set_importing_the_other() {
    let graph = top_level(&[("console::environment".to_owned(), ["api::aperture::changes".to_owned()].into())].into());
    assert!(graph["console"].contains("api"));
}

#[test]
fn the_app_state_imports_no_handler_and_no_middleware() {
    let graph = imports();
    let state = &graph["web::state"];
    let handlers: Vec<&String> = state
        .iter()
        .filter(|p| ["api", "console", "server", "cli"].contains(&top(p)) || p.starts_with("web::"))
        .collect();
    assert!(handlers.is_empty(), "web::state imports {handlers:?}");
}

#[test]
fn the_checker_sees_grouped_imports_and_cycles() {
    let paths = crate_paths("use crate::{api, web::state};\nuse crate::x::y::Z; // crate::not_this\n");
    assert_eq!(paths, ["api", "web", "x::y::Z"]);
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["c".to_owned()].into()),
        ("c".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
}
