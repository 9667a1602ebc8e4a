//! Reading the job: a `MultiTaskTrainingJob` manifest or bare spec from a file, or the spec
//! as JSON (how the operator passes it to a pod), plus command-line overrides.

use std::path::{Path, PathBuf};

use mtl_crds::MultiTaskTrainingJobSpec;
use mtl_storage::is_gcs;

use crate::{Error, Result};

/// Reads a job file; relative local paths in it are resolved against the file's directory.
pub fn load_file(path: &Path) -> Result<MultiTaskTrainingJobSpec> {
    let mut spec = mtl_crds::read_job(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    resolve_paths(&mut spec, base);
    Ok(spec)
}

/// Reads the spec passed as JSON (`--job-json`). Paths are used as given.
pub fn from_json(json: &str) -> Result<MultiTaskTrainingJobSpec> {
    let spec: MultiTaskTrainingJobSpec =
        serde_json::from_str(json).map_err(|e| Error::Invalid(format!("--job-json: {e}")))?;
    spec.validate()
        .map_err(|m| Error::Invalid(format!("--job-json: invalid job: {m}")))?;
    Ok(spec)
}

fn resolve(base: &Path, p: &mut String) {
    if is_gcs(p) || Path::new(p.as_str()).is_absolute() {
        return;
    }
    let joined: PathBuf = base.join(p.as_str());
    *p = normalize(&joined).display().to_string();
}

/// Removes `.` and `a/..` components without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir
                if out
                    .components()
                    .next_back()
                    .is_some_and(|l| matches!(l, std::path::Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

pub fn resolve_paths(spec: &mut MultiTaskTrainingJobSpec, base: &Path) {
    resolve(base, &mut spec.model.pretrained);
    resolve(base, &mut spec.checkpoints.uri);
    for t in &mut spec.tasks {
        resolve(base, &mut t.train);
        for p in [&mut t.validation, &mut t.test].into_iter().flatten() {
            resolve(base, p);
        }
    }
}

/// Command-line overrides of spec fields.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Stop after this many optimizer steps.
    #[arg(long)]
    pub max_steps: Option<u64>,
    #[arg(long)]
    pub epochs: Option<f64>,
    #[arg(long)]
    pub batch_size: Option<u32>,
    #[arg(long)]
    pub learning_rate: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Checkpoint location (spec.checkpoints.uri).
    #[arg(long)]
    pub output: Option<String>,
    /// Evaluate every N steps (spec.training.evalEverySteps).
    #[arg(long)]
    pub eval_every_steps: Option<u64>,
}

impl Overrides {
    pub fn apply(&self, spec: &mut MultiTaskTrainingJobSpec) {
        let t = &mut spec.training;
        if let Some(v) = self.max_steps {
            t.max_steps = Some(v);
        }
        if let Some(v) = self.epochs {
            t.epochs = v;
        }
        if let Some(v) = self.batch_size {
            t.batch_size = v;
        }
        if let Some(v) = self.learning_rate {
            t.learning_rate = v;
        }
        if let Some(v) = self.seed {
            t.seed = v;
        }
        if let Some(v) = self.eval_every_steps {
            t.eval_every_steps = v;
        }
        if let Some(v) = &self.output {
            spec.checkpoints.uri = v.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_job_file() {
        assert_eq!(
            normalize(Path::new("examples/../.cache/minilm")),
            PathBuf::from(".cache/minilm")
        );
        assert_eq!(normalize(Path::new("/a/b/../c")), PathBuf::from("/a/c"));
        let mut p = "../out/run".to_string();
        resolve(Path::new("/work/examples"), &mut p);
        assert_eq!(p, "/work/out/run");
        let mut g = "gs://b/x".to_string();
        resolve(Path::new("/work"), &mut g);
        assert_eq!(g, "gs://b/x");
    }
}
