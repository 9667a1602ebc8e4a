//! CRUD, patches, status subresource, errors, finalizers, owner GC and discovery through
//! the real kube-rs client.

mod common;

use common::{NS, job, pod, start};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Discovery, Scope};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Config, Resource, ResourceExt};
use mtl_crds::MultiTaskTrainingJob;
use serde_json::json;

fn api_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn kubeconfig_without_auth_and_discovery_work() {
    let (standin, _) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, standin.kubeconfig("ml")).unwrap();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "ml");
    let client = Client::try_from(config).unwrap();

    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");

    for discovery in [
        Discovery::new(client.clone()).run().await.unwrap(),
        Discovery::new(client.clone())
            .run_aggregated()
            .await
            .unwrap(),
    ] {
        let (ar, caps) = discovery
            .resolve_gvk(&kube::api::GroupVersionKind::gvk(
                "multitask.dev",
                "v1alpha1",
                "MultiTaskTrainingJob",
            ))
            .expect("the CRD is discovered");
        assert_eq!(ar.plural, "multitasktrainingjobs");
        assert_eq!(caps.scope, Scope::Namespaced);
        assert!(discovery.has_group("coordination.k8s.io"));
        assert!(discovery.has_group("events.k8s.io"));
    }

    // The client's namespace comes from the kubeconfig.
    let jobs: Api<MultiTaskTrainingJob> = Api::default_namespaced(client);
    let created = jobs
        .create(&PostParams::default(), &job("a"))
        .await
        .unwrap();
    assert_eq!(created.namespace().as_deref(), Some("ml"));
}

#[tokio::test]
async fn create_get_list_and_server_set_metadata() {
    let (standin, client) = start().await;
    let jobs: Api<MultiTaskTrainingJob> = Api::namespaced(client.clone(), NS);

    let mut with_status = job("a");
    with_status.status = Some(Default::default());
    let a = jobs
        .create(&PostParams::default(), &with_status)
        .await
        .unwrap();
    let meta = &a.metadata;
    assert!(meta.uid.is_some());
    assert!(meta.creation_timestamp.is_some());
    assert!(meta.resource_version.is_some());
    assert_eq!(meta.generation, Some(1));
    assert!(a.status.is_none(), "status is dropped on create");

    let mut generated = job("");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("run-".into());
    let g = jobs
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(g.name_any().starts_with("run-") && g.name_any().len() == 9);

    let got = jobs.get("a").await.unwrap();
    assert_eq!(got.uid(), a.uid());

    let list = jobs.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);
    let rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert_eq!(rv, standin.resource_version());

    let by_name = jobs
        .list(&ListParams::default().fields("metadata.name=a"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let by_label = jobs
        .list(&ListParams::default().labels("app=other"))
        .await
        .unwrap();
    assert!(by_label.items.is_empty());

    // Paginated list, as the watcher's initial list does.
    for i in 0..3 {
        jobs.create(&PostParams::default(), &job(&format!("p{i}")))
            .await
            .unwrap();
    }
    let page = jobs.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("a continue token");
    let rest = jobs
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 3);
    assert!(rest.metadata.continue_.is_none());

    // All namespaces.
    let all: Api<MultiTaskTrainingJob> = Api::all(client);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        5
    );

    // Stats count per verb and resource.
    let stats = standin.stats();
    assert_eq!(stats.count("create", "multitasktrainingjobs"), 5);
    assert_eq!(
        stats.count("list", "multitasktrainingjobs.multitask.dev"),
        6
    );
    assert_eq!(stats.count("get", "multitasktrainingjobs"), 1);
}

#[tokio::test]
async fn errors_are_status_objects() {
    let (_standin, client) = start().await;
    let jobs: Api<MultiTaskTrainingJob> = Api::namespaced(client.clone(), NS);

    let missing = api_status(jobs.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        missing.message,
        "multitasktrainingjobs.multitask.dev \"nope\" not found"
    );

    let a = jobs
        .create(&PostParams::default(), &job("a"))
        .await
        .unwrap();
    let dup = api_status(
        jobs.create(&PostParams::default(), &job("a"))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));

    // Replace with a stale resourceVersion conflicts.
    jobs.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    let stale = api_status(
        jobs.replace("a", &PostParams::default(), &a)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));

    // A failed JSON patch test is 422; a bad name is 422; a bad selector is 400.
    let test = Patch::Json::<()>(
        serde_json::from_value(json!([{"op": "test", "path": "/metadata/name", "value": "b"}]))
            .unwrap(),
    );
    let failed = api_status(
        jobs.patch("a", &PatchParams::default(), &test)
            .await
            .unwrap_err(),
    );
    assert_eq!(failed.code, 422);
    let bad = api_status(
        jobs.create(&PostParams::default(), &job("Bad_Name"))
            .await
            .unwrap_err(),
    );
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    let selector = api_status(
        jobs.list(&ListParams::default().fields("spec.image=x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(selector.code, 400);

    // Immutable pod spec fields.
    let pods: Api<Pod> = Api::namespaced(client, NS);
    pods.create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
    let change_args = Patch::Merge(
        json!({"spec": {"containers": [{"name": "trainer", "image": "mtl-trainer:0.1", "args": ["other"]}]}}),
    );
    let forbidden = api_status(
        pods.patch("p", &PatchParams::default(), &change_args)
            .await
            .unwrap_err(),
    );
    assert_eq!(forbidden.code, 422);
    let change_image = Patch::Strategic(
        json!({"spec": {"containers": [{"name": "trainer", "image": "mtl-trainer:0.2", "args": ["--job", "/job.json"]}]}}),
    );
    pods.patch("p", &PatchParams::default(), &change_image)
        .await
        .unwrap();
}

#[tokio::test]
async fn generation_status_subresource_and_patches() {
    let (_standin, client) = start().await;
    let jobs: Api<MultiTaskTrainingJob> = Api::namespaced(client, NS);
    jobs.create(&PostParams::default(), &job("a"))
        .await
        .unwrap();

    // Status patch: only .status changes, generation stays.
    let status = Patch::Merge(
        json!({"status": {"phase": "Running", "podName": "a-0"}, "spec": {"image": "ignored"}}),
    );
    let after = jobs
        .patch_status("a", &PatchParams::default(), &status)
        .await
        .unwrap();
    assert_eq!(
        after.status.as_ref().unwrap().pod_name.as_deref(),
        Some("a-0")
    );
    assert_eq!(after.spec.image, None);
    assert_eq!(after.metadata.generation, Some(1));

    // Main-resource writes ignore .status; spec changes bump generation, labels do not.
    let labels =
        Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}, "status": {"phase": "Failed"}}));
    let after = jobs
        .patch("a", &PatchParams::default(), &labels)
        .await
        .unwrap();
    assert_eq!(after.metadata.generation, Some(1));
    assert_eq!(
        after.status.as_ref().unwrap().phase,
        mtl_crds::JobPhase::Running
    );
    // (runPolicy: the spec's one mutable part; the CRD's transition rules refuse the rest.)
    let spec = Patch::Merge(json!({"spec": {"runPolicy": {"backoffLimit": 5}}}));
    let after = jobs
        .patch("a", &PatchParams::default(), &spec)
        .await
        .unwrap();
    assert_eq!(after.metadata.generation, Some(2));

    // A no-op write keeps the resourceVersion.
    let again = jobs
        .patch("a", &PatchParams::default(), &spec)
        .await
        .unwrap();
    assert_eq!(again.resource_version(), after.resource_version());

    // Server-side apply: creates, then merges; fields the manager stops applying go away.
    let pp = PatchParams::apply("mtl-operator").force();
    let applied = json!({
        "apiVersion": "multitask.dev/v1alpha1",
        "kind": "MultiTaskTrainingJob",
        "metadata": {"name": "b", "labels": {"owner": "op", "extra": "1"}},
        "spec": serde_json::to_value(&job("b").spec).unwrap(),
    });
    let b = jobs.patch("b", &pp, &Patch::Apply(&applied)).await.unwrap();
    assert_eq!(b.labels().get("extra").map(String::as_str), Some("1"));
    let mut reapplied = applied.clone();
    reapplied["metadata"]["labels"] = json!({"owner": "op"});
    let b = jobs
        .patch("b", &pp, &Patch::Apply(&reapplied))
        .await
        .unwrap();
    assert!(!b.labels().contains_key("extra"));
    assert_eq!(b.metadata.generation, Some(1));

    // Status apply.
    let status_apply = json!({
        "apiVersion": "multitask.dev/v1alpha1",
        "kind": "MultiTaskTrainingJob",
        "status": {"phase": "Succeeded", "step": 100, "latestCheckpoint": "gs://bucket/run1/checkpoint-100"},
    });
    let b = jobs
        .patch_status("b", &pp, &Patch::Apply(&status_apply))
        .await
        .unwrap();
    let st = b.status.unwrap();
    assert_eq!(st.step, Some(100));
    assert_eq!(st.phase, mtl_crds::JobPhase::Succeeded);

    // Apply without fieldManager is a 400.
    let err = jobs
        .patch("b", &PatchParams::default(), &Patch::Apply(&applied))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 400));
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_standin, client) = start().await;
    let jobs: Api<MultiTaskTrainingJob> = Api::namespaced(client, NS);
    let mut j = job("a");
    j.metadata.finalizers = Some(vec!["multitask.dev/cleanup".into()]);
    jobs.create(&PostParams::default(), &j).await.unwrap();

    let deleted = jobs.delete("a", &DeleteParams::default()).await.unwrap();
    let held = deleted
        .left()
        .expect("the object is returned while finalizers hold it");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.metadata.generation, Some(2));
    let still = jobs.get("a").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());

    // No new finalizers on an object being deleted.
    let add = Patch::Merge(json!({"metadata": {"finalizers": ["multitask.dev/cleanup", "other"]}}));
    let err = jobs
        .patch("a", &PatchParams::default(), &add)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 422));

    // Removing the last finalizer (the way kube-runtime's finalizer() does it) deletes it.
    let remove = Patch::Json::<()>(
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": ["multitask.dev/cleanup"]},
            {"op": "replace", "path": "/metadata/finalizers", "value": []}
        ]))
        .unwrap(),
    );
    jobs.patch("a", &PatchParams::default(), &remove)
        .await
        .unwrap();
    assert!(jobs.get_opt("a").await.unwrap().is_none());
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    let (standin, client) = start().await;
    let jobs: Api<MultiTaskTrainingJob> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let owner = jobs
        .create(&PostParams::default(), &job("a"))
        .await
        .unwrap();
    let other = jobs
        .create(&PostParams::default(), &job("b"))
        .await
        .unwrap();

    let mut child = pod("a-0");
    child.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    pods.create(&PostParams::default(), &child).await.unwrap();
    // Two owners: survives the first owner's deletion, losing that reference.
    let mut shared = pod("shared");
    shared.metadata.owner_references = Some(vec![
        owner.controller_owner_ref(&()).unwrap(),
        other.owner_ref(&()).unwrap(),
    ]);
    pods.create(&PostParams::default(), &shared).await.unwrap();
    // Scheduled and running: deleted gracefully, finished by the kubelet stand-in.
    standin.kubelet().run(NS, "a-0").unwrap();

    jobs.delete("a", &DeleteParams::default()).await.unwrap();
    common::poll("the owned pod to be collected", || async {
        pods.get_opt("a-0").await.unwrap().is_none().then_some(())
    })
    .await;
    let shared = pods.get("shared").await.unwrap();
    assert_eq!(shared.owner_references().len(), 1);
    assert_eq!(shared.owner_references()[0].uid, other.uid().unwrap());

    // Orphan propagation keeps dependents and strips the reference.
    jobs.delete("b", &DeleteParams::orphan()).await.unwrap();
    let shared = pods.get("shared").await.unwrap();
    assert!(shared.owner_references().is_empty());
}

/// The garbage collector also acts on an object created after its owner went (a controller
/// acting on a stale cache): with no owner left it is deleted, otherwise its dangling
/// references are removed, as kube-controller-manager's `attemptToDeleteItem` does.
#[tokio::test]
async fn dependents_created_after_their_owner_are_collected() {
    let (standin, client) = start().await;
    let jobs: Api<MultiTaskTrainingJob> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let gone = jobs
        .create(&PostParams::default(), &job("gone"))
        .await
        .unwrap();
    let alive = jobs
        .create(&PostParams::default(), &job("alive"))
        .await
        .unwrap();
    jobs.delete("gone", &DeleteParams::default()).await.unwrap();

    let mut orphan = pod("gone-2");
    orphan.metadata.owner_references = Some(vec![gone.controller_owner_ref(&()).unwrap()]);
    pods.create(&PostParams::default(), &orphan).await.unwrap();
    standin.kubelet().run(NS, "gone-2").ok();
    common::poll("the orphan to be collected", || async {
        pods.get_opt("gone-2")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    let mut half = pod("half");
    half.metadata.owner_references = Some(vec![
        gone.controller_owner_ref(&()).unwrap(),
        alive.owner_ref(&()).unwrap(),
    ]);
    pods.create(&PostParams::default(), &half).await.unwrap();
    let half = common::poll("the dangling reference to go", || async {
        let p = pods.get("half").await.unwrap();
        (p.owner_references().len() == 1).then_some(p)
    })
    .await;
    assert_eq!(half.owner_references()[0].uid, alive.uid().unwrap());
}

#[tokio::test]
async fn leases_and_events_of_both_groups() {
    let (standin, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "mtl-operator"},
        "spec": {"holderIdentity": "pod-1", "leaseDurationSeconds": 15, "renewTime": "2025-01-01T00:00:00.000000Z"}
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let renewed = leases
        .patch(
            "mtl-operator",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "pod-2"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        renewed.spec.unwrap().holder_identity.as_deref(),
        Some("pod-2")
    );

    // kube-runtime's Recorder writes events.k8s.io/v1; core/v1 readers see the same events.
    let jobs: Api<MultiTaskTrainingJob> = Api::namespaced(client.clone(), NS);
    let j = jobs
        .create(&PostParams::default(), &job("a"))
        .await
        .unwrap();
    let recorder = Recorder::new(client.clone(), Reporter::from("mtl-operator"));
    recorder
        .publish(
            &Event {
                type_: EventType::Normal,
                reason: "PodCreated".into(),
                note: Some("created pod a-0".into()),
                action: "Reconcile".into(),
                secondary: None,
            },
            &j.object_ref(&()),
        )
        .await
        .unwrap();
    let core: Api<CoreEvent> = Api::namespaced(client, NS);
    let events = core.list(&ListParams::default()).await.unwrap();
    assert_eq!(events.items.len(), 1);
    let ev = &events.items[0];
    assert_eq!(ev.message.as_deref(), Some("created pod a-0"));
    assert_eq!(ev.involved_object.name.as_deref(), Some("a"));
    assert_eq!(ev.reporting_component.as_deref(), Some("mtl-operator"));
    assert!(standin.stats().count("create", "events.events.k8s.io") >= 1);
}

/// A test can make the server refuse writes to a resource, as a ResourceQuota (403) or an
/// admission webhook (422) does, with the words it chose; reads still work, and clearing the
/// fault lets the write through.
#[tokio::test]
async fn injected_faults_refuse_writes_as_the_api_server_does() {
    let (standin, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let quota = "pods \"p\" is forbidden: exceeded quota: gpu-quota";
    standin.inject_fault(kube_standin::Fault::forbidden("pods", NS, quota));
    let err = api_status(
        pods.create(&PostParams::default(), &pod("p"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (403, "Forbidden", quota)
    );
    let err = api_status(
        pods.patch(
            "p",
            &PatchParams::apply("t").force(),
            &Patch::Apply(&pod("p")),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 403, "server-side apply is a write too");
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    standin.clear_faults();
    standin.inject_fault(kube_standin::Fault::invalid("pods", "elsewhere", "no"));
    pods.create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
}
