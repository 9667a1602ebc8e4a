//! What a user does with the real `kubectl` while the real `mtl-operator` runs against
//! kube-standin: install the CRD, apply `examples/job.yaml`, follow the job with `get` and
//! `describe`, read `explain`, have every invalid job refused at `apply` (no pod created),
//! and delete the job (the garbage collector deletes its pods).

mod common;

use common::{CRD_FILE, Env, NS, eventually, kubelet_ok};
use kube_standin::{Kubectl, KubectlOutput};
use mtl_test_support::kubectl::rows;

use mtl_crds::QUANTITY_PATTERN as QUANTITY;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/job.yaml");

async fn run(kubectl: &Kubectl, args: &[&str], stdin: Option<&str>) -> KubectlOutput {
    kubectl
        .run(args, stdin)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn ok(kubectl: &Kubectl, args: &[&str]) -> String {
    let out = run(kubectl, args, None).await;
    assert!(out.success(), "kubectl {args:?}: {out}");
    out.stdout
}

async fn apply(kubectl: &Kubectl, yaml: &str, extra: &[&str]) -> KubectlOutput {
    let mut args = vec!["apply", "-f", "-"];
    args.extend_from_slice(extra);
    run(kubectl, &args, Some(yaml)).await
}

/// Installs the CRD with `kubectl apply`, as a user does, and starts the operator.
async fn env_with_operator() -> (Env, Kubectl) {
    let mut env = Env::start_without_crd().await;
    let kubectl = env.kubectl();
    let out = ok(&kubectl, &["apply", "-f", CRD_FILE]).await;
    assert!(
        out.contains("multitasktrainingjobs.multitask.dev created"),
        "{out}"
    );
    ok(
        &kubectl,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=10s",
            "crd/multitasktrainingjobs.multitask.dev",
        ],
    )
    .await;
    env.operator("op-a");
    (env, kubectl)
}

/// `examples/job.yaml` with its checkpoints in `dir` instead of `gs://BUCKET`.
fn example_with_checkpoints(dir: &str) -> String {
    let text = std::fs::read_to_string(EXAMPLE).expect("examples/job.yaml");
    assert!(text.contains("uri: gs://BUCKET/runs/mtl-demo"));
    text.replace("uri: gs://BUCKET/runs/mtl-demo", &format!("uri: {dir}"))
}

#[tokio::test]
async fn a_user_runs_the_example_job_with_kubectl() {
    let (env, kubectl) = env_with_operator().await;

    // The example is accepted as shipped (admission runs on a server-side dry run) ...
    let dry = run(
        &kubectl,
        &["apply", "-f", EXAMPLE, "--dry-run=server"],
        None,
    )
    .await;
    assert_eq!(
        dry.stdout.trim(),
        "multitasktrainingjob.multitask.dev/mtl-demo created (server dry run)",
        "{dry}"
    );
    // ... and runs with its checkpoints in a local directory.
    let created = apply(&kubectl, &example_with_checkpoints(&env.checkpoints()), &[]).await;
    assert_eq!(
        created.stdout.trim(),
        "multitasktrainingjob.multitask.dev/mtl-demo created",
        "{created}"
    );
    env.pod("mtl-demo-1").await;
    let pending = eventually("kubectl get mttj: Pending", || async {
        let table = rows(&ok(&kubectl, &["get", "mttj"]).await);
        (table.get(1).and_then(|r| r.get(1)).map(String::as_str) == Some("Pending"))
            .then_some(table)
    })
    .await;
    assert_eq!(pending[0], mtl_crds::kubectl_headers(false));
    assert_eq!(&pending[1][..6], ["mtl-demo", "Pending", "", "", "", ""]);

    kubelet_ok(env.standin.kubelet().run(NS, "mtl-demo-1"));
    env.commit_checkpoint(3000).await;
    env.write_progress(3100, 10000, 750.0, 1).await;
    let latest = format!("{}/checkpoint-3000", env.checkpoints());
    for args in [
        &["get", "mttj"][..],
        &["get", "mttj", "-o", "wide"],
        &["get", "ml"],
    ] {
        let table = eventually("kubectl get: Running at step 3000", || async {
            let table = rows(&ok(&kubectl, args).await);
            (table.get(1).and_then(|r| r.get(2)).map(String::as_str) == Some("3000")
                && table.get(1).and_then(|r| r.get(3)).map(String::as_str) == Some("31%"))
            .then_some(table)
        })
        .await;
        let wide = args.contains(&"wide");
        let columns = mtl_crds::kubectl_headers(wide);
        assert_eq!(table[0], columns, "{args:?}");
        assert_eq!(
            &table[1][..6],
            ["mtl-demo", "Running", "3000", "31%", "12m", latest.as_str()],
            "{args:?}"
        );
        if wide {
            assert_eq!(&table[1][7..], ["0", "0"], "restarts, preemptions");
        }
    }

    let described = ok(&kubectl, &["describe", "mttj", "mtl-demo"]).await;
    for want in [
        "Name:         mtl-demo",
        "API Version:  multitask.dev/v1alpha1",
        "Kind:         MultiTaskTrainingJob",
        "Pretrained:  gs://BUCKET/models/roberta-base",
        "Phase:",
        "Events:",
        "Created",
        "CheckpointCommitted",
    ] {
        assert!(described.contains(want), "no {want:?} in\n{described}");
    }

    let explained = ok(&kubectl, &["explain", "mttj.spec.checkpoints"]).await;
    for want in [
        "Where checkpoints go and how many stay.",
        "gs://bucket/prefix; or, with `persistentVolumeClaim`, the absolute path",
        "Keep the newest N checkpoints (all when unset).",
    ] {
        assert!(explained.contains(want), "no {want:?} in\n{explained}");
    }

    // A pods job has no finalizer: the garbage collector deletes its pod once it is gone.
    let finalizers = ok(
        &kubectl,
        &[
            "get",
            "mttj",
            "mtl-demo",
            "-o",
            "jsonpath={.metadata.finalizers}",
        ],
    )
    .await;
    assert_eq!(finalizers, "");
    let deleted = ok(&kubectl, &["delete", "mttj", "mtl-demo", "--timeout=30s"]).await;
    assert_eq!(
        deleted.trim(),
        "multitasktrainingjob.multitask.dev \"mtl-demo\" deleted"
    );
    let gone = run(&kubectl, &["get", "mttj", "mtl-demo"], None).await;
    assert!(gone.stderr.contains("not found"), "{gone}");
    let pods = eventually("the pods to be gone", || async {
        let out = run(&kubectl, &["get", "pods"], None).await;
        out.stderr.contains("No resources found").then_some(out)
    })
    .await;
    assert!(pods.stdout.is_empty(), "{pods}");
}

/// A valid job whose fields the invalid cases change.
fn job(name: &str) -> String {
    format!(
        "apiVersion: multitask.dev/v1alpha1
kind: MultiTaskTrainingJob
metadata:
  name: {name}
spec:
  image: mtl-trainer:test
  model:
    pretrained: gs://models/minilm
  tasks:
  - name: stsb
    type: regression
    format: glueTsv
    train: gs://data/stsb/train.tsv
    textFields: [sentence1, sentence2]
    labelField: score
  - name: csqa
    type: multipleChoice
    numChoices: 5
    format: commonsenseQaJsonl
    train: gs://data/csqa/train.jsonl
  training:
    batchSize: 8
    learningRate: 1.0e-5
  checkpoints:
    uri: gs://mtl-test/runs/{name}
  resources:
    gpus: 1
    memory: 16Gi
"
    )
}

/// One invalid job: what is wrong, the (from, to) edits of the valid job that make it so,
/// and what kubectl prints for it.
struct Case(&'static str, Vec<(&'static str, String)>, Vec<String>);

#[tokio::test]
async fn kubectl_apply_refuses_invalid_jobs_with_the_rule_and_field() {
    let (env, kubectl) = env_with_operator().await;
    let long = "x".repeat(64);
    let cases: Vec<Case> = vec![
        Case(
            "a required field missing",
            vec![("  checkpoints:\n    uri: gs://mtl-test/runs/bad-1\n", String::new())],
            vec!["The MultiTaskTrainingJob \"bad-1\" is invalid: spec.checkpoints: Required value".into()],
        ),
        Case(
            "a required task field missing and an undeclared one in its place",
            vec![("    train: gs://data/stsb/train.tsv\n", "    trainFile: gs://data/stsb/train.tsv\n".into())],
            vec!["MultiTaskTrainingJob in version \"v1alpha1\" cannot be handled as a MultiTaskTrainingJob: strict decoding error: unknown field \"spec.tasks[0].trainFile\"".into()],
        ),
        Case(
            "duplicate task names",
            vec![("  - name: csqa\n", "  - name: stsb\n".into())],
            vec!["The MultiTaskTrainingJob \"bad-3\" is invalid: spec: Invalid value: \"object\": task names must be unique".into()],
        ),
        Case(
            "numChoices missing for multipleChoice",
            vec![("    numChoices: 5\n", String::new())],
            vec!["The MultiTaskTrainingJob \"bad-4\" is invalid: spec.tasks[1].numChoices: Required value: a multipleChoice task needs numChoices".into()],
        ),
        Case(
            "an enum typo",
            vec![("    type: regression\n", "    type: regresion\n".into())],
            vec![
                "spec.tasks[0].type: Unsupported value: \"regresion\": supported values: \"regression\", \"classification\", \"multipleChoice\"".into(),
                "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
            ],
        ),
        Case(
            "a negative batch size",
            vec![("    batchSize: 8\n", "    batchSize: -8\n".into())],
            vec!["spec.training.batchSize: Invalid value: -8: spec.training.batchSize in body should be greater than or equal to 1".into()],
        ),
        Case(
            "a negative learning rate",
            vec![("    learningRate: 1.0e-5\n", "    learningRate: -0.001\n".into())],
            vec!["spec.training.learningRate: Invalid value: -0.001: spec.training.learningRate in body should be greater than or equal to 0".into()],
        ),
        // Quantities are checked by the pattern Kubernetes' own CRDs use (no CEL: the API
        // server cannot bound the cost of `isQuantity(string(self))`).
        Case(
            "a bad quantity",
            vec![("    memory: 16Gi\n", "    memory: 16GB\n".into())],
            vec![format!("spec.resources.memory: Invalid value: \"16GB\": spec.resources.memory in body should match '{QUANTITY}'")],
        ),
        Case(
            "a string for an integer",
            vec![("    gpus: 1\n", "    gpus: two\n".into())],
            vec!["spec.resources.gpus: Invalid value: \"string\": spec.resources.gpus in body must be of type integer: \"string\"".into()],
        ),
        Case(
            "a task name too long",
            vec![("  - name: stsb\n", format!("  - name: {long}\n"))],
            vec!["spec.tasks[0].name: Too long: may not be more than 63 bytes".into()],
        ),
        Case(
            "a task name against its pattern",
            vec![("  - name: stsb\n", "  - name: STS-B\n".into())],
            vec!["spec.tasks[0].name: Invalid value: \"STS-B\": spec.tasks[0].name in body should match '^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$'".into()],
        ),
        Case(
            "three text fields",
            vec![("[sentence1, sentence2]", "[a, b, c]".into())],
            vec!["spec.tasks[0].textFields: Too many: 3: must have at most 2 items".into()],
        ),
        Case(
            "the vertexAI backend without its settings",
            vec![("  image: mtl-trainer:test\n", "  image: mtl-trainer:test\n  backend: vertexAI\n".into())],
            vec!["spec: Invalid value: \"object\": backend vertexAI needs spec.vertexAI (project, region)".into()],
        ),
        Case(
            "checkpoints on the pod's own disk",
            vec![("    uri: gs://mtl-test/runs/bad-1\n", "    uri: /tmp/ckpt\n".into())],
            vec!["spec.checkpoints.uri: Invalid value: \"object\": backend kubernetes needs a gs:// checkpoints.uri, or checkpoints.persistentVolumeClaim".into()],
        ),
        Case(
            "a classification task without labels",
            vec![("    type: regression\n", "    type: classification\n".into())],
            vec!["spec.tasks[0]: Invalid value: \"object\": a classification task needs numLabels >= 2 or at least two labelNames".into()],
        ),
    ];
    for (i, Case(what, edits, wants)) in cases.iter().enumerate() {
        let name = format!("bad-{}", i + 1);
        let mut yaml = job(&name);
        for (from, to) in edits {
            let from = from.replace("bad-1", &name);
            assert!(yaml.contains(&from), "{what}: {from:?} not in the job");
            yaml = yaml.replacen(&from, to, 1);
        }
        let out = apply(&kubectl, &yaml, &[]).await;
        assert!(!out.success(), "{what}: accepted\n{out}");
        for want in wants {
            let want = want.replace("bad-1", &name);
            assert!(out.stderr.contains(&want), "{what}: no {want:?} in\n{out}");
        }
    }

    // A valid job after them: once its pod exists the operator has seen everything before.
    let out = apply(&kubectl, &job("good"), &[]).await;
    assert!(out.success(), "{out}");
    env.pod("good-1").await;
    assert_eq!(
        env.pod_names().await,
        ["good-1"],
        "no pod for a refused job"
    );
    let stored = env
        .standin
        .list("multitask.dev/v1alpha1", "multitasktrainingjobs", Some(NS))
        .unwrap();
    assert_eq!(stored.len(), 1);
    let creates: Vec<u16> = env
        .standin
        .stats()
        .requests
        .iter()
        .filter(|r| r.verb == "create" && r.resource == "multitasktrainingjobs.multitask.dev")
        .map(|r| r.code)
        .collect();
    assert_eq!(creates.len(), cases.len() + 1, "{creates:?}");
    assert_eq!(
        &creates[cases.len()..],
        [201],
        "only the valid job was created: {creates:?}"
    );
    assert!(
        creates[..cases.len()]
            .iter()
            .all(|c| [400, 422].contains(c)),
        "{creates:?}"
    );
}

#[tokio::test]
async fn immutable_spec_and_unknown_fields_on_update() {
    let (env, kubectl) = env_with_operator().await;
    let out = apply(&kubectl, &job("train"), &[]).await;
    assert!(out.success(), "{out}");
    env.pod("train-1").await;

    // Transitions the CRD's rules forbid: any field but runPolicy of an existing job.
    let changed = job("train").replace("gs://models/minilm", "gs://models/roberta-base");
    let refused = apply(&kubectl, &changed, &[]).await;
    assert!(!refused.success(), "{refused}");
    assert!(
        refused.stderr.contains(
            "The MultiTaskTrainingJob \"train\" is invalid: spec.model: Invalid value: \"object\": spec.model cannot change once the job exists (only spec.runPolicy can): delete and re-create the job to change it"
        ),
        "{refused}"
    );
    let switched = job("train").replace(
        "  training:\n",
        "  backend: vertexAI\n  vertexAI: {project: p, region: us-central1}\n  training:\n",
    );
    let refused = apply(&kubectl, &switched, &[]).await;
    assert!(!refused.success(), "{refused}");
    for field in ["backend", "vertexAI"] {
        assert!(
            refused.stderr.contains(&format!(
                "spec.{field}: Invalid value: \"object\": spec.{field} cannot change once the job exists"
            )),
            "{refused}"
        );
    }
    let steered = job("train").replace(
        "  training:\n",
        "  runPolicy: {backoffLimit: 5, activeDeadlineSeconds: 3600}\n  training:\n",
    );
    let out = apply(&kubectl, &steered, &[]).await;
    assert!(out.success(), "runPolicy changes: {out}");
    let model = ok(
        &kubectl,
        &[
            "get",
            "mttj",
            "train",
            "-o",
            "jsonpath={.spec.model.pretrained}",
        ],
    )
    .await;
    assert_eq!(model, "gs://models/minilm");

    // Undeclared fields: refused by default, pruned with the server's warning on request.
    let extra = job("train").replace("  training:\n", "  colour: blue\n  training:\n");
    let strict = apply(&kubectl, &extra, &[]).await;
    assert!(!strict.success(), "{strict}");
    assert!(
        strict
            .stderr
            .contains("strict decoding error: unknown field \"spec.colour\""),
        "{strict}"
    );
    let warned = apply(&kubectl, &extra, &["--validate=warn"]).await;
    assert!(warned.success(), "{warned}");
    assert!(
        warned
            .stderr
            .contains("Warning: unknown field \"spec.colour\""),
        "{warned}"
    );
    let spec = ok(
        &kubectl,
        &["get", "mttj", "train", "-o", "jsonpath={.spec}"],
    )
    .await;
    assert!(!spec.contains("colour"), "pruned: {spec}");
    assert_eq!(
        env.pod_names().await,
        ["train-1"],
        "the job kept its one attempt"
    );
}
