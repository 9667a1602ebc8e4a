//! Faults a test asks for, on writes to a resource until cleared: a refusal answered with an
//! error `Status` (a ResourceQuota's 403, an admission webhook's 422), as a real API server
//! answers them, or a request held without an answer (an overloaded or partitioned control
//! plane), while every other request is served as usual.

use std::sync::Mutex;

use tokio::sync::watch;

use crate::error::ApiError;

/// Writes (create, update, patch) to `resource` (the plural, e.g. `pods`) in `namespace`
/// (any when `None`) get `effect`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub resource: String,
    pub namespace: Option<String>,
    pub effect: FaultEffect,
    /// Writes let through before the fault applies (a ResourceQuota with room for that many
    /// more objects).
    pub after: u32,
}

/// What a faulty write gets.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultEffect {
    /// An error `Status` with this code and message.
    Refuse { code: u16, message: String },
    /// No answer until the fault is cleared; then the write is served as usual (as a slow
    /// network path delivers it late).
    Hang,
}

impl Fault {
    /// A ResourceQuota refusal: `403 Forbidden`.
    pub fn forbidden(resource: &str, namespace: &str, message: &str) -> Self {
        Self::refuse(resource, namespace, 403, message)
    }

    /// A validation or admission refusal: `422 Invalid`.
    pub fn invalid(resource: &str, namespace: &str, message: &str) -> Self {
        Self::refuse(resource, namespace, 422, message)
    }

    /// The same fault once `writes` more writes have gone through: a quota with room left.
    pub fn after(mut self, writes: u32) -> Self {
        self.after = writes;
        self
    }

    /// Writes held without an answer until [`StandIn::clear_faults`](crate::StandIn::clear_faults).
    pub fn hang(resource: &str, namespace: &str) -> Self {
        Self {
            resource: resource.into(),
            namespace: Some(namespace.into()),
            effect: FaultEffect::Hang,
            after: 0,
        }
    }

    fn refuse(resource: &str, namespace: &str, code: u16, message: &str) -> Self {
        Self {
            resource: resource.into(),
            namespace: Some(namespace.into()),
            effect: FaultEffect::Refuse {
                code,
                message: message.into(),
            },
            after: 0,
        }
    }
}

fn refusal(code: u16, message: &str) -> ApiError {
    let reason = match code {
        403 => "Forbidden",
        422 => "Invalid",
        409 => "Conflict",
        429 => "TooManyRequests",
        400 => "BadRequest",
        _ => "InternalError",
    };
    ApiError::new(code, reason, message.to_string())
}

pub(crate) struct Faults {
    faults: Mutex<Vec<Fault>>,
    /// Bumped on every clear: wakes held requests.
    cleared: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            faults: Mutex::new(Vec::new()),
            cleared: watch::channel(0).0,
        }
    }
}

impl Faults {
    pub fn add(&self, f: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
    }

    pub fn clear(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.cleared.send_modify(|n| *n += 1);
    }

    /// The effect of the first fault matching a write to `resource` in `namespace`; a write
    /// it still lets through counts against its `after`.
    fn find(&self, resource: &str, namespace: &str) -> Option<FaultEffect> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let f = faults.iter_mut().find(|f| {
            f.resource == resource && f.namespace.as_deref().is_none_or(|n| n == namespace)
        })?;
        if f.after > 0 {
            f.after -= 1;
            return None;
        }
        Some(f.effect.clone())
    }

    /// Waits while a write to `resource` in `namespace` is held, then gives its refusal, if
    /// one is set.
    pub async fn check(&self, resource: &str, namespace: &str) -> Result<(), ApiError> {
        // Subscribed before looking, so a clear in between is not missed.
        let mut cleared = self.cleared.subscribe();
        loop {
            match self.find(resource, namespace) {
                None => return Ok(()),
                Some(FaultEffect::Refuse { code, message }) => return Err(refusal(code, &message)),
                Some(FaultEffect::Hang) => {
                    if cleared.changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}
