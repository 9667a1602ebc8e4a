//! No import circle between the files of the trainer, operator and kube-standin crates (see
//! `mtl_test_support::modgraph` for what counts); `make lint` runs this.

use std::path::Path;

use mtl_test_support::modgraph;

fn assert_no_circle(krate: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src/lib.rs");
    let graph = modgraph::graph(&root).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        graph.edges.len() > 3,
        "{krate}: only {} files read",
        graph.edges.len()
    );
    let circles = graph.circles();
    let shown: Vec<String> = circles
        .iter()
        .map(|c| {
            let files: Vec<String> = c.iter().map(|f| f.display().to_string()).collect();
            let edges: Vec<String> = c
                .iter()
                .flat_map(|from| {
                    graph.edges[from]
                        .iter()
                        .filter(|to| c.contains(to))
                        .map(|to| {
                            let why = &graph.because[&(from.clone(), to.clone())];
                            format!("{} -> {} ({why})", from.display(), to.display())
                        })
                })
                .collect();
            format!("  {}\n    {}", files.join(", "), edges.join("\n    "))
        })
        .collect();
    assert!(
        circles.is_empty(),
        "{krate}/src has {} import circle(s):\n{}",
        circles.len(),
        shown.join("\n")
    );
}

#[test]
fn the_trainer_has_no_import_circle() {
    assert_no_circle("trainer");
}

#[test]
fn the_operator_has_no_import_circle() {
    assert_no_circle("operator");
}

#[test]
fn kube_standin_has_no_import_circle() {
    assert_no_circle("kube-standin");
}
