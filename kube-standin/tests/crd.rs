//! CustomResourceDefinitions and the admission of their objects through the kube-rs client:
//! deletion waits for the objects' finalizers, `/status` writes are validated against the
//! status schema, defaults and warnings come back as the API server sends them.

mod common;

use common::{NS, job, poll, start};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use mtl_crds::MultiTaskTrainingJob;
use serde_json::json;

const CRD_NAME: &str = "multitasktrainingjobs.multitask.dev";

fn status_of(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn deleting_a_crd_waits_for_the_finalizers_of_its_objects() {
    let (standin, client) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get(CRD_NAME).await.unwrap();
    assert_eq!(
        crd.metadata.finalizers.as_deref(),
        Some(&["customresourcecleanup.apiextensions.k8s.io".to_string()][..])
    );
    let jobs: Api<MultiTaskTrainingJob> = Api::namespaced(client.clone(), NS);
    let mut held = job("held");
    held.metadata.finalizers = Some(vec!["multitask.dev/cleanup".into()]);
    jobs.create(&PostParams::default(), &held).await.unwrap();
    jobs.create(&PostParams::default(), &job("free"))
        .await
        .unwrap();

    crds.delete(CRD_NAME, &DeleteParams::default())
        .await
        .unwrap();
    // The object without a finalizer is gone; the held one is being deleted, the CRD waits.
    assert!(jobs.get_opt("free").await.unwrap().is_none());
    let held = jobs.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let crd = crds.get(CRD_NAME).await.unwrap();
    let terminating = crd.status.unwrap().conditions.unwrap();
    assert!(
        terminating
            .iter()
            .any(|c| c.type_ == "Terminating" && c.status == "True")
    );
    let refused = status_of(
        jobs.create(&PostParams::default(), &job("late"))
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 405);

    // Releasing the last finalizer removes the object, then the CRD, then the resource.
    jobs.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    poll("the CRD to go", || async {
        crds.get_opt(CRD_NAME)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let gone = status_of(jobs.list(&Default::default()).await.unwrap_err());
    assert_eq!(gone.code, 404);
    assert!(
        standin
            .list("multitask.dev/v1alpha1", "multitasktrainingjobs", None)
            .is_err()
    );
}

#[tokio::test]
async fn status_writes_are_validated_and_objects_defaulted() {
    let (_standin, client) = start().await;
    let jobs: Api<MultiTaskTrainingJob> = Api::namespaced(client, NS);
    let raw = json!({
        "apiVersion": "multitask.dev/v1alpha1", "kind": "MultiTaskTrainingJob",
        "metadata": {"name": "a"},
        "spec": {
            "model": {"pretrained": "/m"},
            "tasks": [{"name": "t", "type": "regression", "format": "glueTsv", "train": "x", "textFields": ["s"]}],
            "checkpoints": {"uri": "gs://b/c"}
        }
    });
    let created = jobs
        .patch("a", &PatchParams::apply("test"), &Patch::Apply(&raw))
        .await
        .unwrap();
    assert_eq!(
        created.spec.training.batch_size, 8,
        "defaulted from the schema"
    );
    assert_eq!(created.spec.run_policy.backoff_limit, 3);
    assert_eq!(created.spec.model.max_length, 128);

    let bad = Patch::Merge(json!({"status": {"phase": "Bogus", "step": -1}}));
    let err = status_of(
        jobs.patch_status("a", &PatchParams::default(), &bad)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let details = err.details.unwrap();
    let fields: Vec<&str> = details.causes.iter().map(|c| c.field.as_str()).collect();
    assert!(fields.contains(&"status.phase"), "{fields:?}");
    assert!(fields.contains(&"status.step"), "{fields:?}");
    assert!(
        err.message
            .starts_with("MultiTaskTrainingJob.multitask.dev \"a\" is invalid: ["),
        "{}",
        err.message
    );

    // The model may not change once the job exists.
    let mut changed = raw.clone();
    changed["spec"]["model"]["pretrained"] = json!("/other");
    let err = status_of(
        jobs.patch("a", &PatchParams::apply("test"), &Patch::Apply(&changed))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains(
            "spec.model: Invalid value: \"object\": spec.model cannot change once the job exists"
        ),
        "{}",
        err.message
    );
}
