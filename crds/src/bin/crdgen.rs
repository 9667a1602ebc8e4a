//! Prints a CRD as YAML (`make crds` writes them to crds/):
//!
//!     crdgen [job] [--allow-volume-types hostPath,nfs]   # MultiTaskTrainingJob
//!     crdgen policy                                      # MultiTaskTrainingPolicy
//!
//! `--allow-volume-types` widens the job CRD's volume rule beyond the restricted Pod Security
//! Standard's types, as the operator's flag of the same name widens its own check.

use kube::CustomResourceExt;
use mtl_crds::MultiTaskTrainingPolicy;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let which = match args.peek().map(String::as_str) {
        Some("job" | "policy") => args.next(),
        _ => None,
    };
    let mut extra = Vec::new();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--allow-volume-types") {
            Some("") => args.next().unwrap_or_default(),
            Some(v) if v.starts_with('=') => v[1..].to_string(),
            _ => return Err(format!("crdgen: unknown argument {arg:?}").into()),
        };
        extra.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from),
        );
    }
    let crd = match which.as_deref() {
        Some("policy") if extra.is_empty() => MultiTaskTrainingPolicy::crd(),
        Some("policy") => return Err("crdgen: --allow-volume-types is for the job CRD".into()),
        _ => mtl_crds::job_crd(&extra),
    };
    print!("{}", serde_yaml::to_string(&crd)?);
    Ok(())
}
