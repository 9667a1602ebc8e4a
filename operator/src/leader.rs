//! Leader election on a `coordination.k8s.io/v1` Lease, the protocol client-go uses: the holder
//! renews `renewTime` well within `leaseDurationSeconds`; anyone may take the lease over once it
//! has expired; every write is a create or a resourceVersion-guarded replace, so two replicas
//! racing for it cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    /// This replica's identity (the pod name in a cluster).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews (well under `lease_duration`).
    pub renew_interval: Duration,
    /// How often a candidate retries.
    pub retry_interval: Duration,
}

impl LeaseConfig {
    pub fn new(name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(2),
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

/// Decides the next step (pure: tested below).
pub fn next_step(lease: Option<&Lease>, identity: &str, now: Timestamp) -> LeaseStep {
    let Some(lease) = lease else {
        return LeaseStep::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == identity {
        return LeaseStep::Renew;
    }
    if holder.is_empty() {
        return LeaseStep::TakeOver;
    }
    let renewed = spec
        .renew_time
        .map(|t| t.0)
        .or(spec.acquire_time.map(|t| t.0));
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match renewed {
        Some(t) if t.checked_add(duration).unwrap_or(Timestamp::MAX) > now => {
            LeaseStep::Wait { holder }
        }
        _ => LeaseStep::TakeOver,
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Holds or waits for the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, cfg: LeaseConfig) -> Self {
        Self { api, cfg }
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
        let step = next_step(current.as_ref(), &self.cfg.identity, now);
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
    /// replica holds the lease, or when renewals keep failing until the lease would have expired.
    pub async fn hold(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_interval).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    return Error::Lease {
                        lease: self.cfg.name.clone(),
                        message: "another replica holds the lease".into(),
                    };
                }
                Err(e) => {
                    warn!(error = %e, "lease renewal failed");
                    if last_renewal.elapsed() + self.cfg.renew_interval >= self.cfg.lease_duration {
                        return Error::Lease {
                            lease: self.cfg.name.clone(),
                            message: format!("could not renew before expiry: {e}"),
                        };
                    }
                }
            }
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
