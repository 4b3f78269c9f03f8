//! The dependency rule, checked on the source: which of docent's top-level modules may
//! import which (ARCHITECTURE.md, "Dependency rule").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Imports that break the rule today and are still to be removed (issue 16's redesign).
/// The test fails when one of them goes away too, so the list only ever shrinks.
const KNOWN_DEBT: &[(&str, &str)] = &[];

/// Modules at the edge: they wire the rest together and nothing inside imports them.
const EDGES: &[&str] = &["main", "cli", "commands", "server", "bench", "eval"];

/// The edge's own wiring: the CLI's commands (`commands`, and `eval` and `bench`, the
/// commands of their own) read their flags, `serve` and the bench start a node through
/// `server::Launch`, the one start-up there is, and the bench scores retrieval as the eval
/// does (`eval::beir`, `eval::score_queries`).
const EDGE_WIRING: &[(&str, &str)] = &[
    ("commands", "server"),
    ("commands", "cli"),
    ("eval", "cli"),
    ("bench", "cli"),
    ("bench", "server"),
    ("bench", "eval"),
];

/// The edge's frameworks (argument parsing, HTTP, the OpenAPI document, progress bars):
/// only the edge names them.
const FRAMEWORKS: &[&str] = &["clap", "actix_web", "utoipa", "indicatif"];

/// Framework names the core still uses. This list only shrinks (it is empty: the API's
/// schemas of core types live in `server/schemas.rs`).
const FRAMEWORK_DEBT: &[(&str, &str)] = &[];

/// Modules that import nothing else of docent.
const LEAVES: &[&str] = &["domain", "telemetry", "index", "keyword", "retry", "ids"];

/// The adapters behind the state ports (`ports`): the redb store, the in-process search,
/// and PostgreSQL with pgvector. Only the edge and `app` (which wire a node) name them; the
/// core reaches state through the ports, so another engine plugs in without touching it.
const STATE_ADAPTERS: &[&str] = &["store", "search", "pg"];

/// What the ports (traits and the records they carry) may name: the domain, and the key
/// and account records the key and account stores keep.
const PORTS_IMPORT: &[&str] = &["domain", "keys", "accounts"];

/// `crate::NAME` references outside comments and test modules, by top-level module.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap();
            let module = first.as_os_str().to_str().unwrap().trim_end_matches(".rs");
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let targets = graph.entry(module.to_string()).or_default();
            for line in code.lines() {
                let line = line.split("//").next().unwrap();
                for framework in FRAMEWORKS {
                    let named = line.contains(&format!("{framework}::"))
                        || line.trim_start().starts_with(&format!("use {framework}"));
                    if named {
                        targets.insert(format!("extern:{framework}"));
                    }
                }
                for (at, _) in line.match_indices("crate::") {
                    let name: String = line[at + "crate::".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    assert!(
                        !name.is_empty(),
                        "{}: grouped `crate::{{…}}` import",
                        path.display()
                    );
                    if name != module {
                        targets.insert(name);
                    }
                }
            }
        }
    }
    graph
}

fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(module) = stack.pop() {
        for next in graph.get(&module).into_iter().flatten() {
            if next == to {
                return true;
            }
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    false
}

#[test]
fn top_level_modules_import_each_other_without_cycles_and_only_downwards() {
    // The edge's frameworks are found, so their absence elsewhere means something.
    let graph = imports();
    assert!(graph["server"].contains("extern:actix_web"), "{graph:?}");
    assert!(graph["cli"].contains("extern:clap"), "{graph:?}");
    assert!(
        graph.contains_key("domain") && graph.contains_key("server"),
        "{graph:?}"
    );
    // The adapters are wired somewhere, so their absence from the core means something.
    for adapter in STATE_ADAPTERS {
        assert!(graph["app"].contains(*adapter), "{graph:?}");
    }
    let debt: BTreeSet<(String, String)> = KNOWN_DEBT
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .chain(
            FRAMEWORK_DEBT
                .iter()
                .map(|(a, b)| (a.to_string(), format!("extern:{b}"))),
        )
        .collect();
    let mut broken = Vec::new();
    for (module, targets) in &graph {
        for target in targets {
            let edge = (module.clone(), target.clone());
            if debt.contains(&edge) {
                continue;
            }
            if let Some(framework) = target.strip_prefix("extern:") {
                if !EDGES.contains(&module.as_str()) {
                    broken.push(format!("{module} names {framework}: only the edge does"));
                }
                continue;
            }
            if reaches(&graph, target, module) {
                broken.push(format!("{module} -> {target}: a cycle"));
            }
            let wires_a_node = EDGES.contains(&module.as_str()) || module == "app";
            if STATE_ADAPTERS.contains(&target.as_str()) && !wires_a_node {
                broken.push(format!(
                    "{module} -> {target}: the core reaches state through `ports`"
                ));
            }
            if module == "ports" && !PORTS_IMPORT.contains(&target.as_str()) {
                broken.push(format!(
                    "ports -> {target}: ports name only {PORTS_IMPORT:?}"
                ));
            }
            if LEAVES.contains(&module.as_str()) {
                broken.push(format!(
                    "{module} -> {target}: {module} imports nothing of docent"
                ));
            }
            let wiring =
                module == "main" || EDGE_WIRING.contains(&(module.as_str(), target.as_str()));
            if EDGES.contains(&target.as_str()) && !wiring {
                broken.push(format!(
                    "{module} -> {target}: only the edge imports the edge"
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "the dependency rule is broken:\n{}",
        broken.join("\n")
    );
    let paid: Vec<_> = debt
        .iter()
        .filter(|(a, b)| !graph.get(a).is_some_and(|t| t.contains(b)))
        .collect();
    assert!(
        paid.is_empty(),
        "remove from KNOWN_DEBT, it is gone: {paid:?}"
    );
}

#[test]
fn a_node_starts_one_way_through_launch() {
    // `serve`, the bench and the tests build the shared state only through
    // `server::Launch`; a second copy of the start-up would drift from it.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut builders = Vec::new();
    let mut stack = vec![root.join("src"), root.join("tests")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && std::fs::read_to_string(&path)
                    .unwrap()
                    .contains(concat!("AppState::", "new("))
            {
                builders.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    assert_eq!(builders, ["src/server/mod.rs"]);
}
