//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics:
//! - a candidate judges expiry by its own clock: the lease has expired when its record (holder,
//!   times, transitions) has not changed for `leaseDurationSeconds` since the candidate first
//!   saw it as it is, whatever `renewTime` says (the holder's clock may be skewed either way);
//! - the holder gives leadership up when it has not renewed for `renew_deadline` (shorter
//!   than the lease), each renewal bounded by what is left of it, so a hung call cannot keep a
//!   leader acting after others may have taken over;
//! - every write is a create or a resourceVersion-guarded replace, so two replicas racing for
//!   the lease cannot both win.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    /// This replica's identity (the pod name in a cluster).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    /// The holder steps down when it has not renewed for this long (client-go's
    /// RenewDeadline; less than `lease_duration`).
    pub renew_deadline: Duration,
    /// How often the holder renews (well under `renew_deadline`).
    pub renew_interval: Duration,
    /// How often a candidate retries, and the holder after a failed renewal.
    pub retry_interval: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: a 15 s lease, a 10 s renew deadline, 2 s retries.
    pub fn new(name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self::with_duration(name, identity, Duration::from_secs(15))
    }

    /// A lease of `duration`, renewed every third of it, given up after two thirds of it
    /// without a renewal, retried every fifth of it (at least every 0.5 s).
    pub fn with_duration(
        name: impl Into<String>,
        identity: impl Into<String>,
        duration: Duration,
    ) -> Self {
        Self {
            name: name.into(),
            identity: identity.into(),
            lease_duration: duration,
            renew_deadline: duration * 2 / 3,
            renew_interval: duration / 3,
            retry_interval: (duration / 5).max(Duration::from_millis(500)),
        }
    }
}

/// What a candidate does next, given the lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// No lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds a valid lease.
    Wait { holder: String },
}

/// The lease's record as this replica last saw it, and when (by this replica's clock): what
/// expiry is judged by (client-go's observedRecord and observedTime).
#[derive(Clone, Debug, Default)]
pub struct Observed(Option<(LeaseSpec, Instant)>);

/// Decides the next step, noting in `seen` when the record last changed (pure: tested in
/// `tests.rs`).
pub fn next_step(
    lease: Option<&Lease>,
    identity: &str,
    seen: &mut Observed,
    now: Instant,
) -> LeaseStep {
    let Some(lease) = lease else {
        return LeaseStep::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let changed_at = match &seen.0 {
        Some((record, at)) if *record == spec => *at,
        _ => {
            seen.0 = Some((spec.clone(), now));
            now
        }
    };
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == identity {
        return LeaseStep::Renew;
    }
    if holder.is_empty() {
        return LeaseStep::TakeOver;
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
    if now.saturating_duration_since(changed_at) < duration {
        LeaseStep::Wait { holder }
    } else {
        LeaseStep::TakeOver
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Holds or waits for the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    seen: Mutex<Observed>,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, cfg: LeaseConfig) -> Self {
        Self {
            api,
            cfg,
            seen: Mutex::new(Observed::default()),
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    fn err(&self, e: kube::Error) -> Error {
        Error::Lease {
            lease: self.cfg.name.clone(),
            message: e.to_string(),
        }
    }

    fn held_spec(
        &self,
        now: Timestamp,
        transitions: i32,
        acquired: Option<MicroTime>,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One round: creates, renews or takes over the lease when it can. Ok(true) while this replica
    /// holds it; Ok(false) when another replica does (or won a race just now).
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(|e| self.err(e))?;
        let step = next_step(
            current.as_ref(),
            &self.cfg.identity,
            &mut self.seen.lock().unwrap_or_else(PoisonError::into_inner),
            Instant::now(),
        );
        let result = match (step, current) {
            (LeaseStep::Wait { .. }, _) => return Ok(false),
            (LeaseStep::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.held_spec(now, 0, None)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (LeaseStep::Renew, Some(mut lease)) => {
                let spec = lease.spec.clone().unwrap_or_default();
                lease.spec = Some(self.held_spec(
                    now,
                    spec.lease_transitions.unwrap_or(0),
                    spec.acquire_time,
                ));
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
            }
            (LeaseStep::TakeOver, Some(mut lease)) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let transitions = spec.lease_transitions.unwrap_or(0) + 1;
                lease.spec = Some(self.held_spec(now, transitions, None));
                let previous = spec.holder_identity.unwrap_or_default();
                info!(lease = %self.cfg.name, previous = %previous, "taking over expired lease");
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        let mut logged_holder = String::new();
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.cfg.name, identity = %self.cfg.identity, "acquired leadership");
                    return;
                }
                Ok(false) => {
                    if let Ok(Some(l)) = self.api.get_opt(&self.cfg.name).await {
                        let holder = l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
                        if holder != logged_holder {
                            info!(lease = %self.cfg.name, holder = %holder, "standing by; another replica leads");
                            logged_holder = holder;
                        }
                    }
                }
                Err(e) => warn!(error = %e, "lease acquisition failed"),
            }
            tokio::time::sleep(self.cfg.retry_interval).await;
        }
    }

    /// Renews the lease until it is lost; returns the reason. Leadership is lost when another
    /// replica holds the lease, or when no renewal succeeded for `renew_deadline`: each call is
    /// bounded by what is left of it, so a hung request ends leadership in time, before any
    /// candidate can see the lease as expired (`lease_duration` after the last renewal).
    pub async fn hold(&self) -> Error {
        let lost = |message: String| Error::Lease {
            lease: self.cfg.name.clone(),
            message,
        };
        let deadline = self.cfg.renew_deadline;
        let mut last_renewal = Instant::now();
        let mut wait = self.cfg.renew_interval;
        loop {
            tokio::time::sleep(wait).await;
            let left = deadline.saturating_sub(last_renewal.elapsed());
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    last_renewal = Instant::now();
                    wait = self.cfg.renew_interval;
                    continue;
                }
                Ok(Ok(false)) => return lost("another replica holds the lease".into()),
                Ok(Err(e)) => warn!(error = %e, "lease renewal failed"),
                Err(_) => {}
            }
            if last_renewal.elapsed() + self.cfg.retry_interval >= deadline {
                return lost(format!(
                    "not renewed within the renew deadline ({:?}; the lease lasts {:?})",
                    deadline, self.cfg.lease_duration
                ));
            }
            wait = self.cfg.retry_interval;
        }
    }

    /// Gives the lease up (on clean shutdown) so a standby takes over at once.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                info!(lease = %self.cfg.name, "released leadership");
                Ok(())
            }
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }
}

#[cfg(test)]
mod tests;
