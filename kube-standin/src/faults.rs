//! Refusals a test asks for: writes to a resource answered with an error `Status` (a
//! ResourceQuota's 403, an admission webhook's 422) until cleared, as a real API server
//! answers them.

use std::sync::Mutex;

use crate::error::ApiError;

/// Writes (create, update, patch) to `resource` (the plural, e.g. `pods`) in `namespace`
/// (any when `None`) are refused with `code` and `message`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub resource: String,
    pub namespace: Option<String>,
    pub code: u16,
    pub message: String,
}

impl Fault {
    /// A ResourceQuota refusal: `403 Forbidden`.
    pub fn forbidden(resource: &str, namespace: &str, message: &str) -> Self {
        Self {
            resource: resource.into(),
            namespace: Some(namespace.into()),
            code: 403,
            message: message.into(),
        }
    }

    /// A validation or admission refusal: `422 Invalid`.
    pub fn invalid(resource: &str, namespace: &str, message: &str) -> Self {
        Self {
            code: 422,
            ..Self::forbidden(resource, namespace, message)
        }
    }

    fn error(&self) -> ApiError {
        let reason = match self.code {
            403 => "Forbidden",
            422 => "Invalid",
            409 => "Conflict",
            429 => "TooManyRequests",
            400 => "BadRequest",
            _ => "InternalError",
        };
        ApiError::new(self.code, reason, self.message.clone())
    }
}

#[derive(Default)]
pub(crate) struct Faults(Mutex<Vec<Fault>>);

impl Faults {
    pub fn add(&self, f: Fault) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(f);
    }

    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The refusal for a write to `resource` in `namespace`, if one is set.
    pub fn check(&self, resource: &str, namespace: &str) -> Result<(), ApiError> {
        let faults = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match faults.iter().find(|f| {
            f.resource == resource && f.namespace.as_deref().is_none_or(|n| n == namespace)
        }) {
            Some(f) => Err(f.error()),
            None => Ok(()),
        }
    }
}
