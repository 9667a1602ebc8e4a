//! The real `kubectl` against the stand-in: installing the CRD as a user does, discovery,
//! `explain` from the OpenAPI documents, printer columns, and admission errors and warnings
//! worded as the API server words them.

mod common;

use common::{NS, start_without_crd};
use kube_standin::{Kubectl, KubectlOutput, StandIn};
use mtl_test_support::kubectl::rows;
use serde_json::json;

const CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crds/multitasktrainingjobs.yaml"
);

struct Cli {
    kubectl: Kubectl,
    _dir: tempfile::TempDir,
}

impl Cli {
    fn new(standin: &StandIn) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubectl =
            Kubectl::new(&standin.url(), dir.path(), NS).unwrap_or_else(|e| panic!("{e}"));
        Self { kubectl, _dir: dir }
    }

    async fn run(&self, args: &[&str]) -> KubectlOutput {
        self.kubectl.run(args, None).await.expect("kubectl runs")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(out.success(), "kubectl {args:?} failed: {out}");
        out.stdout
    }

    async fn apply(&self, yaml: &str, extra: &[&str]) -> KubectlOutput {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(extra);
        self.kubectl
            .run(&args, Some(yaml))
            .await
            .expect("kubectl runs")
    }

    async fn install_crd(&self) {
        let out = self.ok(&["apply", "-f", CRD_FILE]).await;
        assert_eq!(
            out.trim(),
            "customresourcedefinition.apiextensions.k8s.io/multitasktrainingjobs.multitask.dev created"
        );
        self.ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=10s",
            "crd/multitasktrainingjobs.multitask.dev",
        ])
        .await;
        // kubectl resolves short names (`mttj`) from its discovery cache; api-resources
        // refreshes it, as on a real cluster.
        self.ok(&["api-resources", "--api-group=multitask.dev"])
            .await;
    }
}

fn job(name: &str) -> String {
    format!(
        "apiVersion: multitask.dev/v1alpha1
kind: MultiTaskTrainingJob
metadata:
  name: {name}
spec:
  model:
    pretrained: gs://models/minilm
  tasks:
  - name: stsb
    type: regression
    format: glueTsv
    train: gs://data/stsb/train.tsv
    textFields: [sentence1, sentence2]
    labelField: score
  checkpoints:
    uri: gs://bucket/{name}
"
    )
}

#[tokio::test]
async fn applying_the_crd_serves_the_resource_and_deleting_it_stops() {
    let (standin, _) = start_without_crd().await;
    let cli = Cli::new(&standin);
    let before = cli.run(&["get", "mttj"]).await;
    assert!(!before.success());
    assert!(
        before
            .stderr
            .contains("the server doesn't have a resource type \"mttj\""),
        "{before}"
    );

    cli.install_crd().await;
    let resources = cli
        .ok(&["api-resources", "--api-group=multitask.dev"])
        .await;
    let table = rows(&resources);
    assert_eq!(
        table[0],
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    assert_eq!(
        table[1],
        [
            "multitasktrainingjobs",
            "mttj",
            "multitask.dev/v1alpha1",
            "true",
            "MultiTaskTrainingJob"
        ]
    );
    let crds = cli.ok(&["get", "crd"]).await;
    assert_eq!(rows(&crds)[0], ["NAME", "CREATED AT"]);
    assert_eq!(rows(&crds)[1][0], "multitasktrainingjobs.multitask.dev");
    let none = cli.run(&["get", "mttj"]).await;
    assert!(none.success(), "{none}");
    assert_eq!(
        none.stderr.trim(),
        "No resources found in default namespace."
    );

    // Re-applying an unchanged CRD changes nothing.
    let again = cli.ok(&["apply", "-f", CRD_FILE]).await;
    assert!(again.trim().ends_with("unchanged"), "{again}");

    let created = cli.apply(&job("a"), &[]).await;
    assert_eq!(
        created.stdout.trim(),
        "multitasktrainingjob.multitask.dev/a created",
        "{created}"
    );
    // Deleting the CRD deletes its objects first, then stops serving the resource.
    cli.ok(&[
        "delete",
        "crd",
        "multitasktrainingjobs.multitask.dev",
        "--timeout=10s",
    ])
    .await;
    assert!(
        standin
            .list("multitask.dev/v1alpha1", "multitasktrainingjobs", None)
            .is_err(),
        "no longer served"
    );
    let listed = cli
        .ok(&["api-resources", "--api-group=multitask.dev"])
        .await;
    assert_eq!(rows(&listed).len(), 1, "only the header: {listed}");
    let gone = cli.run(&["get", "mttj"]).await;
    assert!(
        gone.stderr
            .contains("the server doesn't have a resource type \"mttj\""),
        "{gone}"
    );
}

/// The API server estimates the cost of every CEL rule when a CRD is written and refuses
/// one over budget: the job CRD as it was before its lists and strings were bounded
/// (`labelNames` unbounded under 32 tasks, `isQuantity(string(self))` on int-or-strings).
#[tokio::test]
async fn a_crd_whose_rules_are_over_the_cost_budget_is_refused() {
    let (standin, _) = start_without_crd().await;
    let cli = Cli::new(&standin);
    let mut crd: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(CRD_FILE).unwrap()).unwrap();
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let labels = &mut spec["properties"]["tasks"]["items"]["properties"]["labelNames"];
    labels.as_object_mut().unwrap().remove("maxItems");
    labels["items"].as_object_mut().unwrap().remove("maxLength");
    spec["properties"]["resources"]["properties"]["cpu"]["x-kubernetes-validations"] =
        json!([{"rule": "isQuantity(string(self))"}]);
    let out = cli.apply(&serde_yaml::to_string(&crd).unwrap(), &[]).await;
    assert!(!out.success(), "{out}");
    let at = "spec.validation.openAPIV3Schema.properties[spec]";
    let advice = "(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)";
    for expected in [
        "The CustomResourceDefinition \"multitasktrainingjobs.multitask.dev\" is invalid"
            .to_string(),
        format!(
            "{at}.properties[tasks].items.x-kubernetes-validations[7].rule: Forbidden: estimated rule cost exceeds budget by factor of 3.4x {advice}"
        ),
        format!(
            "{at}.properties[resources].properties[cpu].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x {advice}"
        ),
        format!(
            "spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of more than 100x {advice}"
        ),
    ] {
        assert!(
            out.stderr.contains(&expected),
            "missing {expected:?} in {out}"
        );
    }
    cli.install_crd().await;
}

#[tokio::test]
async fn explain_reads_the_crd_schema_from_openapi_v3_and_v2() {
    let (standin, _) = start_without_crd().await;
    let cli = Cli::new(&standin);
    cli.install_crd().await;
    for output in ["plaintext", "plaintext-openapiv2"] {
        let text = cli
            .ok(&[
                "explain",
                "mttj.spec.checkpoints",
                &format!("--output={output}"),
            ])
            .await;
        for want in [
            "KIND:",
            "MultiTaskTrainingJob",
            "Where checkpoints go and how many stay.",
            "gs://bucket/prefix; or, with `persistentVolumeClaim`, the absolute path",
            "Keep the newest N checkpoints (all when unset).",
            "everySteps",
        ] {
            assert!(text.contains(want), "{output}: no {want:?} in\n{text}");
        }
        assert!(
            text.contains("uri") && text.contains("-required-"),
            "{output}:\n{text}"
        );
    }
    let training = cli
        .ok(&["explain", "mttj.spec.training.learningRate"])
        .await;
    assert!(training.contains("<number>"), "{training}");
}

#[tokio::test]
async fn get_prints_the_printer_columns_and_categories() {
    let (standin, _) = start_without_crd().await;
    let cli = Cli::new(&standin);
    cli.install_crd().await;
    let out = cli.apply(&job("train"), &[]).await;
    assert!(out.success(), "{out}");
    let patched = cli
        .ok(&[
            "patch", "mttj", "train", "--subresource=status", "--type=merge", "-p",
            &json!({"status": {"phase": "Running", "step": 200, "latestCheckpoint": "gs://bucket/train/checkpoint-200",
                               "progress": {"step": 210, "totalSteps": 1000, "percent": "21%", "eta": "3h20m",
                                            "updatedAt": "2026-01-01T00:00:00Z"}}}).to_string(),
        ])
        .await;
    assert!(patched.contains("patched"), "{patched}");
    for args in [
        &["get", "mttj"][..],
        &["get", "ml"],
        &["get", "multitasktrainingjobs.multitask.dev", "train"],
    ] {
        let table = rows(&cli.ok(args).await);
        assert_eq!(table[0], mtl_crds::kubectl_headers(false), "{args:?}");
        assert_eq!(
            &table[1][..6],
            [
                "train",
                "Running",
                "200",
                "21%",
                "3h20m",
                "gs://bucket/train/checkpoint-200"
            ]
        );
        let age = &table[1][6];
        assert!(
            age.ends_with('s') && age[..age.len() - 1].parse::<u32>().is_ok(),
            "age {age}"
        );
    }
    // -o wide adds the priority-1 columns.
    let wide = rows(&cli.ok(&["get", "mttj", "-o", "wide"]).await);
    assert_eq!(wide[0], mtl_crds::kubectl_headers(true));
    let yaml = cli
        .ok(&[
            "get",
            "mttj",
            "train",
            "-o",
            "jsonpath={.spec.training.batchSize}",
        ])
        .await;
    assert_eq!(yaml, "8", "defaults applied");
}

#[tokio::test]
async fn unknown_fields_are_refused_by_default_and_pruned_with_a_warning_on_request() {
    let (standin, _) = start_without_crd().await;
    let cli = Cli::new(&standin);
    cli.install_crd().await;
    let with_unknown = job("a").replace("  checkpoints:\n", "  colour: blue\n  checkpoints:\n");
    let strict = cli.apply(&with_unknown, &[]).await;
    assert!(!strict.success());
    assert!(
        strict.stderr.contains(
            "MultiTaskTrainingJob in version \"v1alpha1\" cannot be handled as a MultiTaskTrainingJob: strict decoding error: unknown field \"spec.colour\""
        ),
        "{strict}"
    );
    let warned = cli.apply(&with_unknown, &["--validate=warn"]).await;
    assert!(warned.success(), "{warned}");
    assert!(
        warned
            .stderr
            .contains("Warning: unknown field \"spec.colour\""),
        "{warned}"
    );
    let stored = standin
        .get("multitask.dev/v1alpha1", "multitasktrainingjobs", NS, "a")
        .unwrap();
    assert!(stored["spec"].get("colour").is_none(), "pruned: {stored}");

    let quiet = cli
        .apply(
            &with_unknown.replace("name: a", "name: b"),
            &["--validate=false"],
        )
        .await;
    assert!(quiet.success(), "{quiet}");
    assert!(!quiet.stderr.contains("Warning"), "{quiet}");
}

#[tokio::test]
async fn pods_print_their_status_columns() {
    let (standin, _) = start_without_crd().await;
    let cli = Cli::new(&standin);
    let pod = "apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
  - name: c
    image: busybox:1
";
    let out = cli.apply(pod, &[]).await;
    assert!(out.success(), "{out}");
    let table = rows(&cli.ok(&["get", "pods"]).await);
    assert_eq!(table[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(&table[1][..4], ["p", "0/1", "Pending", "0"]);
    standin.kubelet().run(NS, "p").unwrap();
    let table = rows(&cli.ok(&["get", "pods", "-o", "wide"]).await);
    assert_eq!(
        &table[0][..7],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    );
    assert_eq!(&table[1][..3], ["p", "1/1", "Running"]);
}
