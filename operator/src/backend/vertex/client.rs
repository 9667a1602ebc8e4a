//! [`VertexClient`]: CustomJob create/adopt, get, cancel, delete over `google-cloud-aiplatform-v1`'s
//! `JobService` (REST/JSON transport), with bounded retries of 429/503.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use google_cloud_aiplatform_v1::client::JobService;
use google_cloud_aiplatform_v1::model::{CustomJob, JobState};
use google_cloud_gax::retry_policy::NeverRetry;
use mtl_crds::MultiTaskTrainingJob;
use tracing::{debug, info, warn};

use super::custom_job::{
    LABEL_ATTEMPT, LABEL_UID, attempt_label, build_custom_job, is_attempt_of, job_labels, parent,
    uid_of, validate_for_vertex, warn_local_paths,
};
use super::error::{
    CallContext, Error, Failure, Operation, Result, classify, is_failed_precondition,
};
use super::observe::observe;

/// Overrides the Vertex AI endpoint (e.g. `http://127.0.0.1:8089` for a local stand-in); the
/// client then uses anonymous credentials.
pub const ENDPOINT_ENV: &str = "MTL_VERTEX_ENDPOINT";

/// Pages read at most when listing a job's CustomJobs (100 per page).
const MAX_LIST_PAGES: usize = 50;
const PAGE_SIZE: i32 = 100;

/// `https://{region}-aiplatform.googleapis.com`: Vertex AI's regional endpoint.
pub fn regional_endpoint(region: &str) -> String {
    format!("https://{region}-aiplatform.googleapis.com")
}

fn endpoint_from_env() -> Option<String> {
    std::env::var(ENDPOINT_ENV)
        .ok()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
}

/// Bounded exponential backoff for 429, 503 and connection errors.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second try; doubles after each retry.
    pub initial_backoff: Duration,
    /// Cap on one wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 4 tries, waiting about 0.5 s, 1 s, 2 s: a reconcile is held for at most a few seconds,
    /// after which the error's [`super::ErrorKind::Transient`] requeues it.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `tries` (1-based): initial × 2^(tries-1), capped, with
    /// up to 25% jitter taken off so that many jobs do not retry in lockstep.
    pub fn backoff(&self, tries: u32) -> Duration {
        mtl_storage::Backoff {
            base: self.initial_backoff,
            max: self.max_backoff,
        }
        .jittered(tries, 4)
    }
}

/// What [`VertexClient::ensure_created`] did.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub custom_job: CustomJob,
    /// True when a CustomJob of this attempt already existed (an operator restart between create
    /// and the status write) and was adopted instead of creating a second one.
    pub adopted: bool,
}

/// What [`VertexClient::cancel`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Vertex AI accepted the cancellation; the job moves through CANCELLING to CANCELLED.
    Requested,
    /// The job had already finished (Vertex answered FAILED_PRECONDITION).
    AlreadyFinished,
    /// No such CustomJob (404): already gone, nothing to cancel.
    NotFound,
}

/// What [`VertexClient::delete`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Deletion started; the long-running operation's name.
    Deleting { operation: String },
    /// No such CustomJob (404).
    NotFound,
}

/// Progress of [`VertexClient::stop`] (suspend, deletion).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopState {
    /// No CustomJob of this Kubernetes object is running any more: safe to remove the finalizer
    /// or to report Suspended.
    Stopped,
    /// Cancellation requested or in progress for these CustomJobs; look again soon.
    Stopping { names: Vec<String> },
}

/// A JobService client for one endpoint (one region).
#[derive(Clone, Debug)]
pub struct VertexClient {
    service: JobService,
    endpoint: String,
    retry: RetryPolicy,
}

impl VertexClient {
    /// The client for `region`: `https://{region}-aiplatform.googleapis.com` with Application
    /// Default Credentials, or, when `MTL_VERTEX_ENDPOINT` is set, that endpoint with anonymous
    /// credentials.
    pub async fn for_region(region: &str) -> Result<Self> {
        match endpoint_from_env() {
            Some(endpoint) => Self::with_endpoint(endpoint).await,
            None => Self::build(regional_endpoint(region), false).await,
        }
    }

    /// A client for `endpoint` (a local stand-in) with anonymous credentials.
    pub async fn with_endpoint(endpoint: impl Into<String>) -> Result<Self> {
        Self::build(endpoint.into(), true).await
    }

    /// A client for `endpoint` with Application Default Credentials (e.g. a private endpoint).
    pub async fn with_endpoint_and_adc(endpoint: impl Into<String>) -> Result<Self> {
        Self::build(endpoint.into(), false).await
    }

    async fn build(endpoint: String, anonymous: bool) -> Result<Self> {
        // Retries are ours (see `retrying`): the crate's own loop would retry GETs a second time
        // and never a create, which needs the adopt-before-create check in between.
        let mut builder = JobService::builder()
            .with_endpoint(endpoint.clone())
            .with_retry_policy(NeverRetry);
        if anonymous {
            builder = builder.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        let service = builder.build().await.map_err(|e| Error::Client {
            endpoint: endpoint.clone(),
            message: e.to_string(),
        })?;
        debug!(%endpoint, anonymous, "Vertex AI client ready");
        Ok(Self {
            service,
            endpoint,
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry policy (tests use millisecond backoffs).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// After a retryable failure on try `tries`: waits and returns `Ok` when another try is
    /// allowed, or returns the error to give up with.
    async fn backoff_or_fail(
        &self,
        op: Operation,
        ctx: &CallContext,
        e: &google_cloud_gax::error::Error,
        tries: u32,
    ) -> Result<()> {
        match classify(op, ctx, e) {
            Failure::Fatal(err) => {
                warn!(%op, target = %ctx.target, kind = ?err.kind(), "{err}");
                Err(err)
            }
            Failure::Retryable(message) if tries < self.retry.max_attempts.max(1) => {
                let wait = self.retry.backoff(tries);
                warn!(%op, target = %ctx.target, tries, ?wait, "Vertex AI call failed, retrying: {message}");
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Failure::Retryable(message) => {
                let err = Error::Transient {
                    op,
                    target: ctx.target.clone(),
                    attempts: tries,
                    message,
                };
                warn!(%op, target = %ctx.target, "{err}");
                Err(err)
            }
        }
    }

    /// Runs `call` with the retry policy.
    async fn retrying<T, F, Fut>(&self, op: Operation, ctx: &CallContext, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = google_cloud_aiplatform_v1::Result<T>>,
    {
        let mut tries = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) => self.backoff_or_fail(op, ctx, &e, tries).await?,
            }
            tries += 1;
        }
    }

    /// Makes sure exactly one CustomJob exists for `attempt` of `job`, and returns it.
    ///
    /// Lists the project's CustomJobs labelled with the job's UID and the attempt first and
    /// adopts a match, so an operator restart between the create and the status write (or a
    /// create whose response was lost to a 503) does not start a second CustomJob. A retryable
    /// create failure lists again before the next create for the same reason.
    pub async fn ensure_created(
        &self,
        job: &MultiTaskTrainingJob,
        attempt: u32,
    ) -> Result<Submitted> {
        let vertex = validate_for_vertex(job)?;
        let parent = parent(vertex);
        let body = build_custom_job(job, attempt);
        warn_local_paths(job);
        let ctx = CallContext {
            target: format!("{parent} (CustomJob {})", body.display_name),
            project: vertex.project.clone(),
            region: vertex.region.clone(),
            job_service_account: vertex.service_account.clone().filter(|s| !s.is_empty()),
            machine: Some(format!(
                "machineType {:?}, acceleratorType {:?}, acceleratorCount {}",
                vertex.effective_machine_type().unwrap_or_default(),
                vertex.accelerator_type.as_deref().unwrap_or(""),
                vertex.accelerator_count
            )),
        };
        let mut tries = 1;
        loop {
            if let Some(existing) = self.find(job, attempt).await? {
                info!(name = %existing.name, attempt, "adopted existing Vertex AI CustomJob");
                return Ok(Submitted {
                    custom_job: existing,
                    adopted: true,
                });
            }
            let created = self
                .service
                .create_custom_job()
                .set_parent(parent.clone())
                .set_custom_job(body.clone())
                .send()
                .await;
            match created {
                Ok(custom_job) => {
                    info!(name = %custom_job.name, display_name = %custom_job.display_name, attempt, "created Vertex AI CustomJob");
                    return Ok(Submitted {
                        custom_job,
                        adopted: false,
                    });
                }
                Err(e) => {
                    self.backoff_or_fail(Operation::Create, &ctx, &e, tries)
                        .await?
                }
            }
            tries += 1;
        }
    }

    /// The CustomJob of `attempt` of `job`, if one exists (found by its labels). Several (two
    /// leaders at once, each creating the attempt): the oldest is the attempt, and every other
    /// one still live is cancelled so that only one trains and bills.
    pub async fn find(
        &self,
        job: &MultiTaskTrainingJob,
        attempt: u32,
    ) -> Result<Option<CustomJob>> {
        let labels = job_labels(job, attempt);
        let filter = format!(
            "labels.{LABEL_UID}=\"{}\" AND labels.{LABEL_ATTEMPT}=\"{}\"",
            labels[LABEL_UID], labels[LABEL_ATTEMPT]
        );
        let mut found: Vec<CustomJob> = self
            .list(job, &filter)
            .await?
            .into_iter()
            .filter(|cj| is_attempt_of(cj, job, attempt))
            .collect();
        found.sort_by_key(|cj| {
            (
                cj.create_time.map(|t| (t.seconds(), t.nanos())),
                cj.name.clone(),
            )
        });
        let mut found = found.into_iter();
        let oldest = found.next();
        for duplicate in found.filter(|cj| !observe(cj).terminal) {
            warn!(
                kept = oldest.as_ref().map(|cj| cj.name.as_str()).unwrap_or_default(),
                cancelling = %duplicate.name,
                attempt,
                "several Vertex AI CustomJobs carry the same attempt label; cancelling all but the oldest"
            );
            if let Err(e) = self.cancel(&duplicate.name).await {
                // The next look tries again; the oldest is followed either way.
                warn!(name = %duplicate.name, error = %e, "could not cancel a duplicate CustomJob");
            }
        }
        Ok(oldest)
    }

    /// Every CustomJob of `job` (all attempts), oldest attempt first.
    pub async fn list_for(&self, job: &MultiTaskTrainingJob) -> Result<Vec<CustomJob>> {
        let uid = job_labels(job, 0).remove(LABEL_UID).unwrap_or_default();
        let filter = format!("labels.{LABEL_UID}=\"{uid}\"");
        let want_uid = super::custom_job::sanitize_label_value(&uid_of(job));
        let mut jobs: Vec<CustomJob> = self
            .list(job, &filter)
            .await?
            .into_iter()
            .filter(|cj| cj.labels.get(LABEL_UID) == Some(&want_uid))
            .collect();
        jobs.sort_by_key(|cj| attempt_label(cj).unwrap_or(0));
        Ok(jobs)
    }

    async fn list(&self, job: &MultiTaskTrainingJob, filter: &str) -> Result<Vec<CustomJob>> {
        let vertex = validate_for_vertex(job)?;
        let parent = parent(vertex);
        let ctx = CallContext {
            target: format!("{parent} (filter {filter})"),
            project: vertex.project.clone(),
            region: vertex.region.clone(),
            ..CallContext::default()
        };
        let mut out = Vec::new();
        let mut token = String::new();
        for _ in 0..MAX_LIST_PAGES {
            let page = self
                .retrying(Operation::List, &ctx, || {
                    self.service
                        .list_custom_jobs()
                        .set_parent(parent.clone())
                        .set_filter(filter)
                        .set_page_size(PAGE_SIZE)
                        .set_page_token(token.clone())
                        .send()
                })
                .await?;
            out.extend(page.custom_jobs);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
        warn!(%parent, filter, "stopped listing Vertex AI CustomJobs after {MAX_LIST_PAGES} pages");
        Ok(out)
    }

    /// The CustomJob called `name`, or `None` when it does not exist (deleted outside the
    /// operator).
    pub async fn get(&self, name: &str) -> Result<Option<CustomJob>> {
        let ctx = name_context(name);
        match self
            .retrying(Operation::Get, &ctx, || {
                self.service.get_custom_job().set_name(name).send()
            })
            .await
        {
            Ok(cj) => Ok(Some(cj)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks Vertex AI to cancel `name`. A missing job (404) or one that already finished is not
    /// an error.
    pub async fn cancel(&self, name: &str) -> Result<CancelOutcome> {
        let ctx = name_context(name);
        let outcome = self
            .retrying(Operation::Cancel, &ctx, || async {
                match self.service.cancel_custom_job().set_name(name).send().await {
                    Ok(()) => Ok(CancelOutcome::Requested),
                    Err(e) if is_failed_precondition(&e) => Ok(CancelOutcome::AlreadyFinished),
                    Err(e) => Err(e),
                }
            })
            .await;
        match outcome {
            Ok(o) => {
                info!(%name, outcome = ?o, "cancelled Vertex AI CustomJob");
                Ok(o)
            }
            Err(Error::NotFound { .. }) => {
                info!(%name, "Vertex AI CustomJob already gone, nothing to cancel");
                Ok(CancelOutcome::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the CustomJob resource `name` (Vertex AI refuses for a job that is still
    /// running: cancel it first). A missing job is not an error. Does not wait for the
    /// long-running operation.
    pub async fn delete(&self, name: &str) -> Result<DeleteOutcome> {
        let ctx = name_context(name);
        match self
            .retrying(Operation::Delete, &ctx, || {
                self.service.delete_custom_job().set_name(name).send()
            })
            .await
        {
            Ok(op) => {
                info!(%name, operation = %op.name, "deleting Vertex AI CustomJob");
                Ok(DeleteOutcome::Deleting { operation: op.name })
            }
            Err(Error::NotFound { .. }) => Ok(DeleteOutcome::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Stops every CustomJob of `job` (all attempts): cancels those still queued, pending,
    /// running or paused. `Stopped` once none is left running; call again while `Stopping`.
    /// Finds the jobs by label, so it also stops one whose name never reached the status.
    pub async fn stop(&self, job: &MultiTaskTrainingJob) -> Result<StopState> {
        if job.spec.vertex_ai.is_none() {
            return Ok(StopState::Stopped);
        }
        let mut names = Vec::new();
        for cj in self.list_for(job).await? {
            let seen = observe(&cj);
            if seen.terminal {
                continue;
            }
            if cj.state != JobState::Cancelling {
                match self.cancel(&cj.name).await? {
                    CancelOutcome::Requested => {}
                    CancelOutcome::AlreadyFinished | CancelOutcome::NotFound => continue,
                }
            }
            names.push(cj.name);
        }
        Ok(if names.is_empty() {
            StopState::Stopped
        } else {
            StopState::Stopping { names }
        })
    }
}

/// Context for calls on a CustomJob name `projects/{p}/locations/{l}/customJobs/{id}`.
fn name_context(name: &str) -> CallContext {
    let parts: Vec<&str> = name.split('/').collect();
    CallContext {
        target: name.to_string(),
        project: parts.get(1).copied().unwrap_or_default().to_string(),
        region: parts.get(3).copied().unwrap_or_default().to_string(),
        ..CallContext::default()
    }
}

/// Vertex clients by region, built on first use and shared (each holds a connection pool).
/// The controller keeps one of these in its context.
#[derive(Debug, Default)]
pub struct VertexClients {
    endpoint: Option<String>,
    retry: RetryPolicy,
    cache: Mutex<HashMap<String, VertexClient>>,
}

impl VertexClients {
    /// Regional endpoints with Application Default Credentials, unless `MTL_VERTEX_ENDPOINT`
    /// names a stand-in (anonymous credentials).
    pub fn from_env() -> Self {
        Self {
            endpoint: endpoint_from_env(),
            ..Self::default()
        }
    }

    /// Every region served by `endpoint` with anonymous credentials (tests, stand-ins).
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

    /// The client for `region`.
    pub async fn for_region(&self, region: &str) -> Result<VertexClient> {
        if let Some(c) = self.lock().get(region) {
            return Ok(c.clone());
        }
        let client = match &self.endpoint {
            Some(endpoint) => VertexClient::with_endpoint(endpoint.clone()).await?,
            None => VertexClient::build(regional_endpoint(region), false).await?,
        }
        .with_retry(self.retry.clone());
        self.lock().insert(region.to_string(), client.clone());
        Ok(client)
    }

    /// The client for the region in `job`'s `spec.vertexAI` (checked first).
    pub async fn for_job(&self, job: &MultiTaskTrainingJob) -> Result<VertexClient> {
        let vertex = validate_for_vertex(job)?;
        self.for_region(&vertex.region).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VertexClient>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        let b1 = p.backoff(1);
        assert!(b1 <= Duration::from_millis(100) && b1 >= Duration::from_millis(75));
        let b2 = p.backoff(2);
        assert!(b2 <= Duration::from_millis(200) && b2 >= Duration::from_millis(150));
        assert!(p.backoff(9) <= Duration::from_millis(350));
        assert!(p.backoff(u32::MAX) <= Duration::from_millis(350));
    }

    #[test]
    fn regional() {
        assert_eq!(
            regional_endpoint("europe-west4"),
            "https://europe-west4-aiplatform.googleapis.com"
        );
    }
}
