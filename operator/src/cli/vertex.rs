//! `mtl-operator vertex submit|status|cancel`: the Vertex AI backend without a cluster.
//!
//! Reads the same job.yaml the operator reconciles (a whole manifest or just its spec). A file
//! without metadata is named after its stem, in namespace `default`. Its CustomJobs carry the
//! same labels as the operator's, with a UID derived from namespace and name, so `status` and
//! `cancel` find them again and a repeated `submit` does not start a second job while one runs.

use std::fmt;
use std::path::Path;

use google_cloud_aiplatform_v1::model::CustomJob;
use kube::api::ObjectMeta;
use mtl_crds::{JobPhase, MultiTaskTrainingJob};

use crate::backend::vertex::client::{CancelOutcome, RetryPolicy, VertexClient, regional_endpoint};
use crate::backend::vertex::custom_job::{attempt_label, validate_for_vertex};
use crate::backend::vertex::error::{Error, Operation, Result};
use crate::backend::vertex::observe::observe;

/// One CustomJob as the CLI reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct CliSummary {
    /// The CustomJob resource name.
    pub name: String,
    pub display_name: String,
    pub attempt: Option<u32>,
    /// Vertex state, e.g. `JOB_STATE_RUNNING`.
    pub state: String,
    pub phase: JobPhase,
    pub message: String,
    pub console_url: Option<String>,
    /// What this command did to it: created, adopted, cancel requested, ….
    pub action: String,
}

impl CliSummary {
    fn of(cj: &CustomJob, action: impl Into<String>) -> Self {
        let seen = observe(cj);
        Self {
            name: cj.name.clone(),
            display_name: cj.display_name.clone(),
            attempt: attempt_label(cj),
            state: seen.state,
            phase: seen.phase,
            message: seen.message,
            console_url: seen.console_url,
            action: action.into(),
        }
    }
}

impl fmt::Display for CliSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.action, self.name)?;
        writeln!(f, "  display name: {}", self.display_name)?;
        if let Some(a) = self.attempt {
            writeln!(f, "  attempt:      {a}")?;
        }
        writeln!(
            f,
            "  state:        {} (phase {})",
            self.state,
            self.phase.as_str()
        )?;
        writeln!(f, "  message:      {}", self.message)?;
        if let Some(url) = &self.console_url {
            writeln!(f, "  console:      {url}")?;
        }
        Ok(())
    }
}

/// The CLI commands, with the endpoint and retry policy they use.
#[derive(Clone, Debug, Default)]
pub struct VertexCli {
    endpoint: Option<String>,
    retry: RetryPolicy,
}

impl VertexCli {
    /// Regional endpoints and Application Default Credentials, or `MTL_VERTEX_ENDPOINT`
    /// (anonymous) when set.
    pub fn from_env() -> Self {
        Self::default()
    }

    /// Talks to `endpoint` with anonymous credentials (a local stand-in).
    pub fn with_endpoint(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            ..Self::default()
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    async fn client(&self, region: &str) -> Result<VertexClient> {
        let client = match &self.endpoint {
            Some(e) => VertexClient::with_endpoint(e.clone()).await?,
            None => VertexClient::for_region(region).await?,
        };
        Ok(client.with_retry(self.retry.clone()))
    }

    /// Submits the job in `path` as a CustomJob, unless one of its CustomJobs is still active
    /// (then reports that one). Each submit after a finished one is a new attempt.
    pub async fn submit(&self, path: &Path) -> Result<Vec<CliSummary>> {
        let job = load_job(path)?;
        let region = validate_for_vertex(&job)?.region.clone();
        let client = self.client(&region).await?;
        let existing = client.list_for(&job).await?;
        if let Some(active) = existing.iter().find(|cj| !observe(cj).terminal) {
            return Ok(vec![CliSummary::of(
                active,
                "already active, not submitting another (cancel it first)",
            )]);
        }
        let attempt = existing
            .iter()
            .filter_map(attempt_label)
            .max()
            .map_or(1, |a| a + 1);
        let submitted = client.ensure_created(&job, attempt).await?;
        let action = if submitted.adopted {
            "adopted"
        } else {
            "submitted"
        };
        Ok(vec![CliSummary::of(&submitted.custom_job, action)])
    }

    /// Status of a CustomJob: `target` is its resource name (`projects/…/customJobs/…`) or a
    /// job file (then its newest attempt).
    pub async fn status(&self, target: &str) -> Result<Vec<CliSummary>> {
        if let Some(region) = region_of_name(target) {
            let client = self.client(region).await?;
            let cj = client.get(target).await?.ok_or_else(|| Error::NotFound {
                op: Operation::Get,
                target: target.to_string(),
            })?;
            return Ok(vec![CliSummary::of(&cj, "status")]);
        }
        let job = load_job(Path::new(target))?;
        let vertex = validate_for_vertex(&job)?;
        let client = self.client(&vertex.region).await?;
        let jobs = client.list_for(&job).await?;
        match jobs.last() {
            Some(newest) => Ok(vec![CliSummary::of(newest, "status")]),
            None => Err(Error::NotFound {
                op: Operation::List,
                target: format!(
                    "no CustomJob of {target} in projects/{}/locations/{} (submit it first)",
                    vertex.project, vertex.region
                ),
            }),
        }
    }

    /// Cancels a CustomJob by resource name, or every active CustomJob of a job file.
    /// Already finished or missing jobs are reported, not errors.
    pub async fn cancel(&self, target: &str) -> Result<Vec<CliSummary>> {
        let (client, names) = if let Some(region) = region_of_name(target) {
            (self.client(region).await?, vec![target.to_string()])
        } else {
            let job = load_job(Path::new(target))?;
            let region = validate_for_vertex(&job)?.region.clone();
            let client = self.client(&region).await?;
            let names = client
                .list_for(&job)
                .await?
                .into_iter()
                .filter(|cj| !observe(cj).terminal)
                .map(|cj| cj.name)
                .collect();
            (client, names)
        };
        let mut out = Vec::new();
        for name in names {
            let action = match client.cancel(&name).await? {
                CancelOutcome::Requested => "cancel requested",
                CancelOutcome::AlreadyFinished => "already finished, nothing to cancel",
                CancelOutcome::NotFound => "not found, nothing to cancel",
            };
            match client.get(&name).await? {
                Some(cj) => out.push(CliSummary::of(&cj, action)),
                None => out.push(CliSummary {
                    name: name.clone(),
                    display_name: String::new(),
                    attempt: None,
                    state: "NOT_FOUND".into(),
                    phase: JobPhase::Suspended,
                    message: format!("{name} does not exist"),
                    console_url: None,
                    action: action.into(),
                }),
            }
        }
        Ok(out)
    }
}

/// `mtl-operator vertex submit job.yaml`.
pub async fn cli_submit(path: &Path) -> Result<Vec<CliSummary>> {
    VertexCli::from_env().submit(path).await
}

/// `mtl-operator vertex status job.yaml|projects/…/customJobs/…`.
pub async fn cli_status(target: &str) -> Result<Vec<CliSummary>> {
    VertexCli::from_env().status(target).await
}

/// `mtl-operator vertex cancel job.yaml|projects/…/customJobs/…`.
pub async fn cli_cancel(target: &str) -> Result<Vec<CliSummary>> {
    VertexCli::from_env().cancel(target).await
}

/// The region of a CustomJob resource name, or `None` when `target` is not one.
fn region_of_name(target: &str) -> Option<&str> {
    let parts: Vec<&str> = target.split('/').collect();
    match parts.as_slice() {
        ["projects", _, "locations", region, "customJobs", _] if !region.is_empty() => Some(region),
        _ => None,
    }
}

/// Reads a job file as `MultiTaskTrainingJob`: the spec through `mtl_crds::read_job`, the name
/// and namespace from `metadata` when the file is a manifest, else the file stem and `default`.
pub fn load_job(path: &Path) -> Result<MultiTaskTrainingJob> {
    let spec = mtl_crds::read_job(path)?;
    // read_job has just read and parsed the same text; a failure here is a race with an edit.
    let text = std::fs::read_to_string(path).map_err(|source| mtl_crds::Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| mtl_crds::Error::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    let meta = value.get("metadata");
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .filter(|s| !s.is_empty())
    };
    let name = field("name")
        .or_else(|| {
            path.file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
        })
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: cannot name the job (no metadata.name, no file stem)",
                path.display()
            ))
        })?;
    // The manifest's labels go onto the CustomJob as the operator copies them.
    let labels: std::collections::BTreeMap<String, String> = meta
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.as_mapping())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let mut job = MultiTaskTrainingJob::new(&name, spec);
    job.metadata = ObjectMeta {
        name: Some(name),
        namespace: Some(field("namespace").unwrap_or_else(|| "default".into())),
        labels: (!labels.is_empty()).then_some(labels),
        ..ObjectMeta::default()
    };
    Ok(job)
}

/// Where `submit` would send the job in `path` (for dry runs and messages).
pub fn endpoint_for(path: &Path) -> Result<String> {
    let job = load_job(path)?;
    let vertex = validate_for_vertex(&job)?;
    Ok(std::env::var(crate::backend::vertex::client::ENDPOINT_ENV)
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| regional_endpoint(&vertex.region)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(
            region_of_name("projects/p/locations/us-central1/customJobs/42"),
            Some("us-central1")
        );
        assert_eq!(region_of_name("examples/job.yaml"), None);
    }
}
