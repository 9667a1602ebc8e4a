//! `crd-costs CRD.yaml…`: each CEL rule's estimated cost as the API server computes it when
//! the CRD is written, how many times it can run in one object, and the totals against the
//! limits; exits 1 when the API server would refuse the CRD.

use std::process::ExitCode;

use kube_standin::{RULE_COST_LIMIT, SCHEMA_COST_LIMIT, rule_costs};

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: crd-costs CRD.yaml...");
        return ExitCode::from(2);
    }
    let mut refused = false;
    for file in &files {
        let crd = std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_yaml::from_str(&text).map_err(|e| e.to_string()));
        let crd: serde_json::Value = match crd {
            Ok(crd) => crd,
            Err(e) => {
                eprintln!("{file}: {e}");
                return ExitCode::from(2);
            }
        };
        let (costs, errors) = match rule_costs(&crd) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{file}: {e}");
                return ExitCode::from(2);
            }
        };
        println!("{file}");
        println!("{:>12} {:>9} {:>12}  rule", "cost", "× times", "= total");
        for c in &costs {
            println!(
                "{:>12} {:>9} {:>12}  {}\n{:>37}{}",
                c.cost, c.cardinality, c.total, c.path, "", c.rule
            );
        }
        let dearest = costs.iter().map(|c| c.total).max().unwrap_or(0);
        let total = costs.iter().fold(0u64, |s, c| s.saturating_add(c.total));
        println!(
            "dearest rule {dearest} of {RULE_COST_LIMIT}; all rules {total} of {SCHEMA_COST_LIMIT}"
        );
        for e in &errors {
            println!("refused: {e}");
        }
        refused |= !errors.is_empty();
    }
    if refused {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
