//! What a platform team allows jobs to run as, set by operator flags (chart values `policy.*`).
//!
//! Anyone who may create a MultiTaskTrainingJob gets the operator to create pods and Vertex AI
//! CustomJobs with the operator's own identity: without limits they could run any image with
//! any service account of their namespace, and on Vertex AI target any project and service
//! account the operator may act as. A job that breaks the policy fails at once with reason
//! `PolicyViolation`, before anything is created. Empty lists allow everything. Pure: tested
//! below.

use mtl_crds::{Backend, MultiTaskTrainingJobSpec};

/// The operator's policy. Every list empty (the default): anything goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The job's image must start with one of these, e.g. `us-docker.pkg.dev/acme/mtl/`.
    pub image_prefixes: Vec<String>,
    /// Kubernetes service accounts trainer pods may run as (`resources.serviceAccountName`;
    /// unset means the namespace's `default`, which is checked as `default`).
    pub service_accounts: Vec<String>,
    /// Google Cloud projects Vertex AI jobs may run in (`vertexAI.project`).
    pub vertex_projects: Vec<String>,
    /// Service accounts Vertex AI jobs may run as (`vertexAI.serviceAccount`; unset means
    /// Vertex AI's own service agent, which is always allowed).
    pub vertex_service_accounts: Vec<String>,
}

impl Policy {
    /// Checks `spec` (as the job runs: its image already defaulted); the message names the
    /// field, its value and what is allowed.
    pub fn check(&self, spec: &MultiTaskTrainingJobSpec) -> Result<(), String> {
        if !self.image_prefixes.is_empty() {
            let image = spec.image.as_deref().unwrap_or_default();
            if !self.image_prefixes.iter().any(|p| image.starts_with(p)) {
                return Err(format!(
                    "spec.image {image:?} is not allowed: images must start with {}",
                    list(&self.image_prefixes)
                ));
            }
        }
        match spec.backend {
            Backend::Kubernetes => {
                let sa = spec
                    .resources
                    .as_ref()
                    .and_then(|r| r.service_account_name.as_deref())
                    .unwrap_or("default");
                if !self.service_accounts.is_empty()
                    && !self.service_accounts.iter().any(|a| a == sa)
                {
                    return Err(format!(
                        "spec.resources.serviceAccountName {sa:?} is not allowed: pods may run as {}",
                        list(&self.service_accounts)
                    ));
                }
            }
            Backend::VertexAi => {
                let Some(v) = spec.vertex_ai.as_ref() else {
                    return Ok(());
                };
                if !self.vertex_projects.is_empty() && !self.vertex_projects.contains(&v.project) {
                    return Err(format!(
                        "spec.vertexAI.project {:?} is not allowed: Vertex AI jobs may run in {}",
                        v.project,
                        list(&self.vertex_projects)
                    ));
                }
                if let Some(sa) = v.service_account.as_deref().filter(|s| !s.is_empty())
                    && !self.vertex_service_accounts.is_empty()
                    && !self.vertex_service_accounts.iter().any(|a| a == sa)
                {
                    return Err(format!(
                        "spec.vertexAI.serviceAccount {sa:?} is not allowed: Vertex AI jobs may run as {}",
                        list(&self.vertex_service_accounts)
                    ));
                }
            }
        }
        Ok(())
    }
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> MultiTaskTrainingJobSpec {
        let mut v = serde_json::json!({
            "image": "us-docker.pkg.dev/acme/mtl/mtl-trainer:1",
            "model": {"pretrained": "gs://m/roberta"},
            "tasks": [{"name": "stsb", "type": "regression", "train": "gs://d/stsb.tsv",
                       "format": "glueTsv", "textFields": ["s1", "s2"], "labelField": "score"}],
            "checkpoints": {"uri": "gs://b/out"}
        });
        for (k, e) in extra.as_object().unwrap() {
            v[k] = e.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn policy() -> Policy {
        Policy {
            image_prefixes: vec!["us-docker.pkg.dev/acme/mtl/".into()],
            service_accounts: vec!["trainer".into()],
            vertex_projects: vec!["acme-ml".into()],
            vertex_service_accounts: vec!["trainer@acme-ml.iam.gserviceaccount.com".into()],
        }
    }

    #[test]
    fn an_empty_policy_allows_everything() {
        Policy::default()
            .check(&spec(serde_json::json!({"image": "docker.io/evil:latest"})))
            .unwrap();
    }

    #[test]
    fn images_must_start_with_an_allowed_prefix() {
        let p = policy();
        let ok = spec(serde_json::json!({"resources": {"serviceAccountName": "trainer"}}));
        p.check(&ok).unwrap();
        let err = p
            .check(&spec(serde_json::json!({"image": "docker.io/evil:latest",
                "resources": {"serviceAccountName": "trainer"}})))
            .unwrap_err();
        assert_eq!(
            err,
            "spec.image \"docker.io/evil:latest\" is not allowed: images must start with \"us-docker.pkg.dev/acme/mtl/\""
        );
        // A prefix, not a substring: the registry host cannot be faked by a path.
        let err = p
            .check(&spec(
                serde_json::json!({"image": "evil.io/us-docker.pkg.dev/acme/mtl/x"}),
            ))
            .unwrap_err();
        assert!(err.starts_with("spec.image"), "{err}");
    }

    #[test]
    fn pods_run_only_as_allowed_service_accounts() {
        let err = policy().check(&spec(serde_json::json!({}))).unwrap_err();
        assert_eq!(
            err,
            "spec.resources.serviceAccountName \"default\" is not allowed: pods may run as \"trainer\""
        );
        let err = policy()
            .check(&spec(
                serde_json::json!({"resources": {"serviceAccountName": "admin"}}),
            ))
            .unwrap_err();
        assert!(err.contains("\"admin\" is not allowed"), "{err}");
    }

    #[test]
    fn vertex_jobs_run_only_in_allowed_projects_and_as_allowed_accounts() {
        let vertex = |project: &str, sa: Option<&str>| {
            spec(serde_json::json!({"backend": "vertexAI",
                "vertexAI": {"project": project, "region": "us-central1", "serviceAccount": sa}}))
        };
        let p = policy();
        p.check(&vertex("acme-ml", None)).unwrap();
        p.check(&vertex(
            "acme-ml",
            Some("trainer@acme-ml.iam.gserviceaccount.com"),
        ))
        .unwrap();
        let err = p.check(&vertex("someone-else", None)).unwrap_err();
        assert_eq!(
            err,
            "spec.vertexAI.project \"someone-else\" is not allowed: Vertex AI jobs may run in \"acme-ml\""
        );
        let err = p
            .check(&vertex(
                "acme-ml",
                Some("owner@acme-ml.iam.gserviceaccount.com"),
            ))
            .unwrap_err();
        assert!(
            err.starts_with("spec.vertexAI.serviceAccount \"owner@acme-ml.iam.gserviceaccount.com\" is not allowed"),
            "{err}"
        );
    }
}
