//! The host's modules depend on each other in one direction only: no module of `host/src` reaches,
//! through `crate::` paths (use lists and lib.rs's re-exports included), one that reaches it back.
//! A module is its file and its submodules' (`src/acme/*.rs` are `acme`'s). Tests are left out: a
//! module's tests may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module -> the modules its non-test code names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .filter_map(|entry| {
            entry
                .unwrap()
                .path()
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
        })
        .filter(|module| module != "main" && module != "lib")
        .collect();
    // `pub use access_log::{Event, Stats, log};` -> Event, Stats and log are access_log's.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let mut owner = BTreeMap::new();
    for line in lib.lines().filter_map(|line| line.strip_prefix("pub use ")) {
        let (module, names) = line.trim_end_matches(';').split_once("::").unwrap();
        for name in names.trim_matches(['{', '}']).split(',') {
            owner.insert(name.trim().to_owned(), module.to_owned());
        }
    }
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut named = BTreeSet::new();
        for code in non_test_code(&src, module) {
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                let names = match rest.strip_prefix('{') {
                    Some(list) => list[..list.find('}').unwrap()]
                        .split(',')
                        .map(|name| name.trim().split("::").next().unwrap())
                        .collect(),
                    None => vec![
                        rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                            .next()
                            .unwrap(),
                    ],
                };
                for name in names {
                    let target = owner.get(name).cloned().unwrap_or_else(|| name.to_owned());
                    if modules.contains(&target) && target != *module {
                        named.insert(target);
                    }
                }
            }
        }
        graph.insert(module.clone(), named);
    }
    graph
}

/// The code of `module` that is not compiled for tests only: its file and its submodules' files
/// (`src/acme/order.rs` is `acme`'s), each up to its first item for tests; `tests.rs` files left out.
fn non_test_code(src: &Path, module: &str) -> Vec<String> {
    let mut files = vec![src.join(format!("{module}.rs"))];
    if let Ok(entries) = std::fs::read_dir(src.join(module)) {
        files.extend(
            entries
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.file_name().is_some_and(|name| name != "tests.rs")),
        );
    }
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            let end = ["#[cfg(test)]", "#[cfg(all(test"]
                .iter()
                .filter_map(|mark| text.find(mark))
                .min()
                .unwrap_or(text.len());
            text[..end].to_owned()
        })
        .collect()
}

/// A path that comes back to where it started, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|open| open == module) {
            return Some([&path[at..], &[module.to_owned()]].concat());
        }
        if !done.insert(module.to_owned()) {
            return None;
        }
        path.push(module.to_owned());
        let found = graph[module]
            .iter()
            .find_map(|next| visit(next, graph, path, done));
        path.pop();
        found
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_of_the_host_imports_one_that_imports_it_back() {
    let graph = module_graph();
    assert!(
        graph["server"].contains("admission") && graph["admission"].contains("sandbox"),
        "the graph is read: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("an import cycle: {}", cycle.join(" -> "));
    }
}

/// The check above can fail: a graph with a cycle in it is caught.
#[test]
fn a_cycle_is_found() {
    let mut graph = module_graph();
    graph.get_mut("certs").unwrap().insert("server".to_owned());
    let cycle = find_cycle(&graph).expect("certs -> server -> ... -> certs");
    assert_eq!(cycle.first(), cycle.last());
    assert!(cycle.contains(&"certs".to_owned()), "{cycle:?}");
}
