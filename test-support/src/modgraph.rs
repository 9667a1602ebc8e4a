//! The import graph between the files of one crate, and its circles.
//!
//! A file depends on another when its non-test code names something defined there: through a
//! `use` of its own, or a path in code (`crate::a::b::f()`, `super::X`, `child::Y`). Re-exports
//! (`pub use`) are followed to where the item is defined and are not dependencies in themselves,
//! so a facade (`lib.rs`, a `mod.rs`) that re-exports its children is not a circle with them;
//! declaring `mod child;` is not a dependency either. Code under `#[cfg(test)]` is left out:
//! tests may reach anywhere.
//!
//! A circle is a strongly connected component of two or more files: each of them depends,
//! through the others, on itself. `make lint` fails on one (see `tests/import_circles.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module: its file, its child modules, what its `use` items bring in, and its items' names.
#[derive(Debug, Default)]
struct Module {
    file: PathBuf,
    children: BTreeSet<String>,
    /// Name → the absolute path it stands for (`crate::a::b`), and whether it is a re-export.
    aliases: BTreeMap<String, (Vec<String>, bool)>,
    /// Modules whose items a glob (`use a::*`) brings in.
    globs: Vec<Vec<String>>,
    items: BTreeSet<String>,
}

/// The import graph of one crate: file → the files it depends on.
#[derive(Debug, Default)]
pub struct Graph {
    pub edges: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    /// For each edge, the first path (as written) that makes it.
    pub because: BTreeMap<(PathBuf, PathBuf), String>,
}

/// What went wrong reading a crate's sources.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// The import graph of the crate whose root is `root` (`src/lib.rs` or `src/main.rs`); file
/// paths in it are relative to the root's folder.
pub fn graph(root: &Path) -> Result<Graph, Error> {
    let base = root.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut modules = BTreeMap::new();
    let mut bodies = Vec::new();
    load(&base, root, &mut Vec::new(), &mut modules, &mut bodies)?;
    let mut graph = Graph::default();
    for (module, file, items) in &bodies {
        let mut paths = Paths::default();
        for item in items {
            paths.visit_item(item);
        }
        let own_uses = use_paths(items)
            .into_iter()
            .filter(|(_, reexport)| !reexport);
        let named = paths.found.into_iter().chain(own_uses.map(|(p, _)| p));
        let targets = graph.edges.entry(file.clone()).or_default();
        for path in named {
            if let Some(to) = resolve(&modules, module, &path)
                && &to != file
            {
                graph
                    .because
                    .entry((file.clone(), to.clone()))
                    .or_insert_with(|| path.join("::"));
                targets.insert(to);
            }
        }
    }
    Ok(graph)
}

impl Graph {
    /// The circles, each as its files in order, smallest file name first.
    pub fn circles(&self) -> Vec<Vec<PathBuf>> {
        let nodes: Vec<&PathBuf> = self.edges.keys().collect();
        let index: BTreeMap<&PathBuf, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let adjacency: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                self.edges[*n]
                    .iter()
                    .filter_map(|t| index.get(t).copied())
                    .collect()
            })
            .collect();
        strongly_connected(&adjacency)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|mut c| {
                c.sort();
                c.into_iter().map(|i| nodes[i].clone()).collect()
            })
            .collect()
    }
}

/// Tarjan's strongly connected components (iterative, so deep graphs do not overflow).
fn strongly_connected(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = adjacency.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut next = 0;
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        let mut work = vec![(start, 0usize)];
        while let Some(&mut (v, ref mut edge)) = work.last_mut() {
            if *edge == 0 {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = adjacency[v].get(*edge) {
                *edge += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

type Bodies = Vec<(Vec<String>, PathBuf, Vec<syn::Item>)>;

/// Reads `file` as module `module` and, recursively, the files of its `mod x;` children.
fn load(
    base: &Path,
    file: &Path,
    module: &mut Vec<String>,
    modules: &mut BTreeMap<Vec<String>, Module>,
    bodies: &mut Bodies,
) -> Result<(), Error> {
    let text =
        std::fs::read_to_string(file).map_err(|e| Error(format!("{}: {e}", file.display())))?;
    let parsed = syn::parse_file(&text).map_err(|e| Error(format!("{}: {e}", file.display())))?;
    let relative = file.strip_prefix(base).unwrap_or(file).to_path_buf();
    // Where `mod x;` looks: beside a root or `mod.rs`, else in the folder named after the file.
    let dir = match file.file_name().and_then(|n| n.to_str()) {
        Some("lib.rs" | "main.rs" | "mod.rs") => file.parent().unwrap_or(base).to_path_buf(),
        _ => file.with_extension(""),
    };
    let items: Vec<syn::Item> = parsed
        .items
        .into_iter()
        .filter(|i| !is_test(attrs(i)))
        .collect();
    declare(base, &dir, &relative, module, &items, modules, bodies)
}

/// Records module `module` (in `file`) with `items`, and loads or declares its children.
fn declare(
    base: &Path,
    dir: &Path,
    file: &Path,
    module: &mut Vec<String>,
    items: &[syn::Item],
    modules: &mut BTreeMap<Vec<String>, Module>,
    bodies: &mut Bodies,
) -> Result<(), Error> {
    let mut entry = Module {
        file: file.to_path_buf(),
        ..Module::default()
    };
    for item in items {
        if let syn::Item::Mod(m) = item {
            entry.children.insert(m.ident.to_string());
        }
    }
    for item in items {
        match item {
            syn::Item::Mod(_) => {}
            syn::Item::Use(u) => {
                let public = !matches!(u.vis, syn::Visibility::Inherited);
                let mut flat = Vec::new();
                flatten(&u.tree, &mut Vec::new(), &mut flat);
                for (name, path) in flat {
                    let absolute = absolute(module, &entry.children, &path);
                    match name {
                        Some(name) => {
                            entry.aliases.insert(name, (absolute, public));
                        }
                        None => entry.globs.push(absolute),
                    }
                }
            }
            other => {
                if let Some(name) = item_name(other) {
                    entry.items.insert(name);
                }
            }
        }
    }
    modules.insert(module.clone(), entry);
    bodies.push((module.clone(), file.to_path_buf(), items.to_vec()));
    for item in items {
        let syn::Item::Mod(m) = item else { continue };
        module.push(m.ident.to_string());
        match &m.content {
            Some((_, inner)) => {
                let inner: Vec<syn::Item> = inner
                    .iter()
                    .filter(|i| !is_test(attrs(i)))
                    .cloned()
                    .collect();
                declare(
                    base,
                    &dir.join(m.ident.to_string()),
                    file,
                    module,
                    &inner,
                    modules,
                    bodies,
                )?;
            }
            None => {
                let name = m.ident.to_string();
                let flat = dir.join(format!("{name}.rs"));
                let nested = dir.join(&name).join("mod.rs");
                let child = if flat.is_file() { flat } else { nested };
                load(base, &child, module, modules, bodies)?;
            }
        }
        module.pop();
    }
    Ok(())
}

/// `path` as written in module `module` with children `children`, made absolute when it starts
/// with `crate`, `self`, `super` or a child; any other path (an external crate) is returned as is
/// with a leading `::` marker.
fn absolute(module: &[String], children: &BTreeSet<String>, path: &[String]) -> Vec<String> {
    let mut out: Vec<String> = module.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            out.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                out.pop();
                rest = &rest[1..];
            }
        }
        Some(first) if children.contains(first) => {}
        _ => {
            let mut external = vec!["::".to_string()];
            external.extend(path.iter().cloned());
            return external;
        }
    }
    out.extend(rest.iter().cloned());
    out
}

/// The file defining what `path` (as written in `module`) names, if it is in this crate.
fn resolve(
    modules: &BTreeMap<Vec<String>, Module>,
    module: &[String],
    path: &[String],
) -> Option<PathBuf> {
    let here = modules.get(module)?;
    let first = path.first()?;
    let start = match first.as_str() {
        "crate" | "self" | "super" => absolute(module, &here.children, path),
        name if here.children.contains(name) => absolute(module, &here.children, path),
        name => {
            let (target, _) = here.aliases.get(name)?;
            let mut full = target.clone();
            full.extend(path[1..].iter().cloned());
            full
        }
    };
    locate(modules, &start, 0)
}

/// Walks an absolute path down the module tree, following aliases and globs.
fn locate(
    modules: &BTreeMap<Vec<String>, Module>,
    path: &[String],
    depth: usize,
) -> Option<PathBuf> {
    if depth > 16 || path.first().map(String::as_str) == Some("::") {
        return None;
    }
    let mut current: Vec<String> = Vec::new();
    for (i, segment) in path.iter().enumerate() {
        let module = modules.get(&current)?;
        if module.children.contains(segment) {
            current.push(segment.clone());
            continue;
        }
        if module.items.contains(segment) {
            return Some(module.file.clone());
        }
        if let Some((target, _)) = module.aliases.get(segment) {
            let mut full = target.clone();
            full.extend(path[i + 1..].iter().cloned());
            return locate(modules, &full, depth + 1);
        }
        for glob in &module.globs {
            let mut full = glob.clone();
            full.extend(path[i..].iter().cloned());
            if let Some(found) = locate(modules, &full, depth + 1) {
                return Some(found);
            }
        }
        // A name this module defines in a way not read here (a macro's output): its file.
        return Some(module.file.clone());
    }
    modules.get(&current).map(|m| m.file.clone())
}

/// Every leaf of a use tree: the name it binds (`None` for a glob) and its path.
fn flatten(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Option<String>, Vec<String>)>,
) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            if name == "self" {
                out.push((prefix.last().cloned(), prefix.clone()));
            } else {
                let mut path = prefix.clone();
                path.push(name.clone());
                out.push((Some(name), path));
            }
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            if r.ident != "self" {
                path.push(r.ident.to_string());
            }
            out.push((Some(r.rename.to_string()), path));
        }
        syn::UseTree::Glob(_) => out.push((None, prefix.clone())),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten(t, prefix, out);
            }
        }
    }
}

/// The paths of a module's own `use` items (not inside functions), and whether each is `pub`.
fn use_paths(items: &[syn::Item]) -> Vec<(Vec<String>, bool)> {
    let mut out = Vec::new();
    for item in items {
        if let syn::Item::Use(u) = item {
            let public = !matches!(u.vis, syn::Visibility::Inherited);
            let mut flat = Vec::new();
            flatten(&u.tree, &mut Vec::new(), &mut flat);
            out.extend(flat.into_iter().map(|(_, p)| (p, public)));
        }
    }
    out
}

fn item_name(item: &syn::Item) -> Option<String> {
    let ident = match item {
        syn::Item::Const(i) => &i.ident,
        syn::Item::Enum(i) => &i.ident,
        syn::Item::Fn(i) => &i.sig.ident,
        syn::Item::Static(i) => &i.ident,
        syn::Item::Struct(i) => &i.ident,
        syn::Item::Trait(i) => &i.ident,
        syn::Item::TraitAlias(i) => &i.ident,
        syn::Item::Type(i) => &i.ident,
        syn::Item::Union(i) => &i.ident,
        syn::Item::Macro(i) => i.ident.as_ref()?,
        _ => return None,
    };
    Some(ident.to_string())
}

fn attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::ExternCrate(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::ForeignMod(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::TraitAlias(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// `#[cfg(test)]`, alone or inside `all(...)`/`any(...)`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta.require_list().is_ok_and(|l| {
                l.tokens
                    .clone()
                    .into_iter()
                    .any(|t| t.to_string() == "test")
            })
    })
}

/// The paths named in code (types, expressions, patterns, macros), outside nested test code and
/// outside `use` items (read by [`use_paths`]).
#[derive(Default)]
struct Paths {
    found: Vec<Vec<String>>,
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() > 1 {
            self.found
                .push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_item_use(&mut self, _: &'ast syn::ItemUse) {}

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // Inline modules are read as modules of their own.
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    fn circles(files: &[(&str, &str)]) -> Vec<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), files);
        graph(&dir.path().join("lib.rs"))
            .unwrap()
            .circles()
            .into_iter()
            .map(|c| c.iter().map(|p| p.display().to_string()).collect())
            .collect()
    }

    #[test]
    fn a_use_in_each_direction_is_a_circle() {
        let found = circles(&[
            ("lib.rs", "mod a; mod b;"),
            ("a.rs", "use crate::b::B; pub struct A;"),
            (
                "b.rs",
                "pub struct B; fn f() -> crate::a::A { crate::a::A }",
            ),
        ]);
        assert_eq!(found, vec![vec!["a.rs", "b.rs"]]);
    }

    #[test]
    fn a_circle_through_three_files_and_a_reexport_is_found() {
        let found = circles(&[
            ("lib.rs", "mod a; mod b; mod c; pub use c::C;"),
            ("a.rs", "use crate::b::B; pub struct A;"),
            ("b/mod.rs", "mod inner; pub use inner::B;"),
            ("b/inner.rs", "pub struct B(crate::C);"),
            (
                "c.rs",
                "pub struct C; impl C { fn f() { let _ = super::a::A; } }",
            ),
        ]);
        assert_eq!(found, vec![vec!["a.rs", "b/inner.rs", "c.rs"]]);
    }

    #[test]
    fn facades_declarations_and_tests_are_not_circles() {
        let found = circles(&[
            // The root re-exports its children, which use the root's re-export of the error.
            (
                "lib.rs",
                "mod error; mod a; pub use error::Error; pub use a::run;",
            ),
            ("error.rs", "pub struct Error;"),
            (
                "a.rs",
                "use crate::Error; pub fn run() -> Result<(), Error> { Ok(()) } \
                 mod child; pub use child::Step; \
                 #[cfg(test)] mod tests { use crate::a::run; }",
            ),
            (
                "a/child.rs",
                "pub struct Step; #[cfg(test)] fn t() { super::run(); }",
            ),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_child_using_its_parents_item_while_the_parent_uses_the_child_is_a_circle() {
        let found = circles(&[
            ("lib.rs", "mod train;"),
            (
                "train/mod.rs",
                "mod step; pub struct State; fn run() { step::go(); }",
            ),
            ("train/step.rs", "use super::State; pub fn go() {}"),
        ]);
        assert_eq!(found, vec![vec!["train/mod.rs", "train/step.rs"]]);
    }

    #[test]
    fn an_unparsable_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[("lib.rs", "mod a;"), ("a.rs", "fn (")]);
        let err = graph(&dir.path().join("lib.rs")).unwrap_err().to_string();
        assert!(err.contains("a.rs: "), "{err}");
    }
}
