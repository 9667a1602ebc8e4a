//! The Helm chart's Deployment passes only flags that `mtl-operator run` accepts (the chart
//! checker, charts/check_chart.py, renders the chart but cannot run the binary).

use std::process::Command;

#[test]
fn every_flag_the_chart_passes_is_one_the_operator_accepts() {
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/mtl-operator/templates/deployment.yaml"
    ))
    .expect("the chart's deployment template");
    let flags: Vec<&str> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- --"))
        .map(|f| f.split(['=', ' ']).next().unwrap_or(f))
        .collect();
    assert!(flags.len() >= 8, "too few flags found: {flags:?}");
    let help = Command::new(env!("CARGO_BIN_EXE_mtl-operator"))
        .args(["run", "--help"])
        .output()
        .expect("mtl-operator runs");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in flags {
        assert!(
            help.contains(&format!("--{flag} ")) || help.contains(&format!("--{flag}\n")),
            "the chart passes --{flag}, which `mtl-operator run` does not accept:\n{help}"
        );
    }
}
