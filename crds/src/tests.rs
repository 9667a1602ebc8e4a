use kube::CustomResourceExt;

use super::*;

const MINIMAL: &str = r#"
apiVersion: multitask.dev/v1alpha1
kind: MultiTaskTrainingJob
metadata:
  name: demo
spec:
  model:
    pretrained: /models/minilm
  tasks:
    - name: stsb
      type: regression
      train: data/stsb/train.tsv
      format: glueTsv
      textFields: [sentence1, sentence2]
      labelField: score
    - name: rte
      type: classification
      train: data/rte/train.tsv
      format: glueTsv
      textFields: [sentence1, sentence2]
      labelField: label
      labelNames: [entailment, not_entailment]
  checkpoints:
    uri: gs://bucket/run1
"#;

#[test]
fn generated_crd_yaml_is_current() {
    for (file, crd) in [
        ("multitasktrainingjobs.yaml", MultiTaskTrainingJob::crd()),
        (
            "multitasktrainingpolicies.yaml",
            MultiTaskTrainingPolicy::crd(),
        ),
    ] {
        let generated = serde_yaml::to_string(&crd).unwrap();
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            generated == checked_in,
            "crds/{file} is stale: run `make crds`"
        );
    }
}

/// The volume rule refuses every known type outside the restricted profile, and a CRD
/// generated with more types allowed refuses them no more.
#[test]
fn the_volume_rule_follows_the_allowed_types() {
    let (rule, message) = volume_rule(&[]);
    for t in OTHER_VOLUME_TYPES {
        assert!(rule.contains(&format!("!has(self.{t})")), "{t}");
    }
    for t in RESTRICTED_VOLUME_TYPES {
        assert!(!rule.contains(&format!("self.{t})")), "{t}");
        assert!(message.contains(t), "{t}");
    }
    let widened = serde_json::to_value(job_crd(&["hostPath".into(), "nfs".into()])).unwrap();
    let rules = widened
        .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/podTemplate/properties/volumes/items/x-kubernetes-validations")
        .unwrap();
    let rule = rules[0]["rule"].as_str().unwrap();
    assert!(
        !rule.contains("hostPath") && !rule.contains("nfs"),
        "{rule}"
    );
    assert!(rule.contains("!has(self.iscsi)"), "{rule}");
    assert!(
        rules[0]["message"]
            .as_str()
            .unwrap()
            .contains("secret, hostPath, nfs volumes")
    );
    // Nothing else of the CRD changes.
    let mut restricted = serde_json::to_value(MultiTaskTrainingJob::crd()).unwrap();
    let mut widened = widened;
    for crd in [&mut restricted, &mut widened] {
        crd.pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/podTemplate/properties/volumes/items/x-kubernetes-validations")
            .unwrap()
            .take();
    }
    assert_eq!(restricted, widened);
}

#[test]
fn crd_has_short_name_status_and_columns() {
    let crd = MultiTaskTrainingJob::crd();
    assert_eq!(crd.spec.names.short_names, Some(vec!["mttj".to_string()]));
    let v = &crd.spec.versions[0];
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let cols: Vec<_> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        cols,
        [
            "Phase",
            "Step",
            "Progress",
            "ETA",
            "Latest checkpoint",
            "Age",
            "Restarts",
            "Preemptions"
        ]
    );
    let wide: Vec<_> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .filter(|c| c.priority == Some(1))
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(wide, ["Restarts", "Preemptions"], "only with -o wide");
}

#[test]
fn manifest_and_bare_spec_parse_with_defaults() {
    let spec = parse_job("job.yaml", MINIMAL).unwrap();
    assert_eq!(spec.backend, Backend::Kubernetes);
    assert_eq!(spec.model.max_length, 128);
    assert_eq!(spec.training.batch_size, 8);
    assert_eq!(spec.training.learning_rate, 1e-5);
    assert_eq!(spec.training.epochs, 3.0);
    assert_eq!(spec.checkpoints.every_steps, 3000);
    assert_eq!(spec.tasks[1].num_outputs(), 2);
    let bare = serde_yaml::to_string(&spec).unwrap();
    assert_eq!(parse_job("spec.yaml", &bare).unwrap(), spec);
}

#[test]
fn bad_field_error_names_file_line_and_field() {
    let bad = MINIMAL.replace("type: regression", "type: regresion");
    let err = parse_job("job.yaml", &bad).unwrap_err().to_string();
    assert!(err.contains("job.yaml:11"), "{err}");
    assert!(err.contains("spec.tasks[0].type"), "{err}");
    assert!(err.contains("regresion"), "{err}");
}

#[test]
fn wrong_kind_and_duplicate_names_are_rejected() {
    let err = parse_job(
        "j.yaml",
        &MINIMAL.replace("kind: MultiTaskTrainingJob", "kind: Pod"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("Pod"), "{err}");
    let dup = MINIMAL.replace("name: rte", "name: stsb");
    let err = parse_job("j.yaml", &dup).unwrap_err().to_string();
    assert!(err.contains("duplicate task name \"stsb\""), "{err}");
}

#[test]
fn multiple_choice_needs_num_choices() {
    let mc = MINIMAL.replace("type: classification", "type: multipleChoice");
    let err = parse_job("j.yaml", &mc).unwrap_err().to_string();
    assert!(err.contains("numChoices"), "{err}");
}

fn spec_json() -> serde_json::Value {
    let spec = parse_job("job.yaml", MINIMAL).unwrap();
    serde_json::to_value(spec).unwrap()
}

#[test]
fn cel_rules_accept_a_valid_spec() {
    MultiTaskTrainingJobSpec::validate_cel(&spec_json(), None).unwrap();
}

#[test]
fn cel_rules_reject_duplicate_task_names() {
    let mut v = spec_json();
    v["tasks"][1]["name"] = "stsb".into();
    let err = format!(
        "{:?}",
        MultiTaskTrainingJobSpec::validate_cel(&v, None).unwrap_err()
    );
    assert!(err.contains("task names must be unique"), "{err}");
}

#[test]
fn cel_rules_reject_vertex_backend_without_settings() {
    let mut v = spec_json();
    v["backend"] = "vertexAI".into();
    let err = format!(
        "{:?}",
        MultiTaskTrainingJobSpec::validate_cel(&v, None).unwrap_err()
    );
    assert!(err.contains("vertexAI"), "{err}");
}

#[test]
fn cel_rules_reject_classification_without_labels() {
    let mut v = spec_json();
    v["tasks"][1].as_object_mut().unwrap().remove("labelNames");
    let err = format!(
        "{:?}",
        TaskSpec::validate_cel(&v["tasks"][1], None).unwrap_err()
    );
    assert!(err.contains("numLabels"), "{err}");
}

/// Each rule `validate` enforces on a task, with the CEL rule that mirrors it at admission:
/// both reject the same change, naming the same thing.
#[test]
fn task_rules_are_enforced_by_validate_and_by_cel_alike() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str, &str); 6] = [
        (
            "multipleChoice from GLUE TSV",
            |t| {
                t["type"] = "multipleChoice".into();
                t["numChoices"] = 2.into();
                t.as_object_mut().unwrap().remove("labelNames");
            },
            "glueTsv has no choices",
            "format glueTsv has no choices",
        ),
        (
            "classification from CommonsenseQA",
            |t| t["format"] = "commonsenseQaJsonl".into(),
            "commonsenseQaJsonl holds multiple-choice questions",
            "format commonsenseQaJsonl holds multiple-choice questions",
        ),
        (
            "labelNames for fewer classes than numLabels",
            |t| t["numLabels"] = 3.into(),
            "2 names for 3 labels",
            "labelNames must name every one of numLabels classes",
        ),
        (
            "positiveLabel not a label",
            |t| t["positiveLabel"] = "neutral".into(),
            "positiveLabel: \"neutral\" is not one of the labels",
            "positiveLabel must be one of the labelNames",
        ),
        (
            "regression with labelNames",
            |t| {
                t["type"] = "regression".into();
            },
            "labelNames: a regression task has none",
            "a regression task has no labelNames",
        ),
        (
            "multipleChoice labels for another number of choices",
            |t| {
                t["type"] = "multipleChoice".into();
                t["format"] = "jsonl".into();
                t["choicesField"] = "choices".into();
                t["numChoices"] = 3.into();
            },
            "2 names for 3 choices",
            "labelNames of a multipleChoice task must name every one of numChoices choices",
        ),
    ];
    for (what, edit, validate_says, cel_says) in cases {
        let mut v = spec_json();
        edit(&mut v["tasks"][1]);
        let spec: MultiTaskTrainingJobSpec = serde_json::from_value(v.clone()).unwrap();
        let err = spec.validate().unwrap_err().to_string();
        assert!(
            err.contains(validate_says) && err.contains("spec.tasks[1]"),
            "{what}: validate said {err}"
        );
        let cel = format!(
            "{:?}",
            TaskSpec::validate_cel(&v["tasks"][1], None).unwrap_err()
        );
        assert!(cel.contains(cel_says), "{what}: CEL said {cel}");
        // The unedited task passes both.
        TaskSpec::validate_cel(&spec_json()["tasks"][1], None).unwrap();
    }
    let mut v = spec_json();
    v["tasks"][1]["positiveLabel"] = "entailment".into();
    let spec: MultiTaskTrainingJobSpec = serde_json::from_value(v.clone()).unwrap();
    spec.validate().unwrap();
    TaskSpec::validate_cel(&v["tasks"][1], None).unwrap();
}

/// MINIMAL with validation data for both tasks.
fn with_validation() -> String {
    MINIMAL
        .replace(
            "train: data/stsb/train.tsv",
            "train: data/stsb/train.tsv\n      validation: data/stsb/dev.tsv",
        )
        .replace(
            "train: data/rte/train.tsv",
            "train: data/rte/train.tsv\n      validation: data/rte/dev.tsv",
        )
}

#[test]
fn best_metric_must_be_one_the_job_reports() {
    let job = |best: &str| format!("{}    best:\n      metric: {best}\n", with_validation());
    for ok in ["mean", "stsb/spearman", "rte/f1", "rte/loss"] {
        let spec = parse_job("j.yaml", &job(ok)).unwrap();
        let best = spec.checkpoints.best.unwrap();
        let want = if ok.ends_with("loss") {
            MetricMode::Min
        } else {
            MetricMode::Max
        };
        assert_eq!(best.mode(), want, "{ok}");
    }
    let err = parse_job("j.yaml", &job("rte/pearson"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("best.metric: \"rte/pearson\" is not a metric")
            && err.contains("rte/accuracy"),
        "{err}"
    );
    // No validation data: nothing to rank by.
    let err = parse_job("j.yaml", &format!("{MINIMAL}    best: {{metric: mean}}\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no task has validation data"), "{err}");
}

#[test]
fn early_stopping_needs_a_best_metric_in_validate_and_in_cel() {
    let text = with_validation().replace(
        "  checkpoints:",
        "  training:\n    earlyStopping: {patience: 3}\n  checkpoints:",
    );
    let err = parse_job("j.yaml", &text).unwrap_err().to_string();
    assert!(
        err.contains("earlyStopping") && err.contains("checkpoints.best"),
        "{err}"
    );
    let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let v = serde_json::to_value(&value["spec"]).unwrap();
    let cel = format!(
        "{:?}",
        MultiTaskTrainingJobSpec::validate_cel(&v, None).unwrap_err()
    );
    assert!(cel.contains("set checkpoints.best"), "{cel}");
    let ok = format!("{text}    best: {{metric: mean}}\n");
    let spec = parse_job("j.yaml", &ok).unwrap();
    assert_eq!(spec.training.early_stopping.unwrap().patience, 3);
    let v = serde_json::to_value(parse_job("j.yaml", &ok).unwrap()).unwrap();
    MultiTaskTrainingJobSpec::validate_cel(&v, None).unwrap();
}

#[test]
fn metric_mode_compares_with_a_margin() {
    assert!(MetricMode::Max.better(0.8, 0.7, 0.05));
    assert!(!MetricMode::Max.better(0.74, 0.7, 0.05));
    assert!(MetricMode::Min.better(0.5, 0.7, 0.0));
    assert!(!MetricMode::Min.better(0.7, 0.7, 0.0));
}

#[test]
fn conditions_are_a_list_map_and_times_are_date_times() {
    let crd = serde_json::to_value(MultiTaskTrainingJob::crd()).unwrap();
    let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    let conditions = &status["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    let condition = &conditions["items"]["properties"];
    assert_eq!(condition["lastTransitionTime"]["format"], "date-time");
    for field in ["startTime", "completionTime", "nextAttemptTime"] {
        assert_eq!(status[field]["format"], "date-time", "{field}");
    }
    assert_eq!(
        status["progress"]["properties"]["updatedAt"]["format"],
        "date-time"
    );
    assert_eq!(
        status["checkpoints"]["items"]["properties"]["time"]["format"],
        "date-time"
    );
}

#[test]
fn every_spec_field_but_run_policy_is_immutable() {
    // A field added to the spec is immutable unless it is added to runPolicy.
    let crd = serde_json::to_value(MultiTaskTrainingJob::crd()).unwrap();
    let props =
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            .as_object()
            .unwrap();
    let mut fields: Vec<&str> = props
        .keys()
        .map(String::as_str)
        .filter(|f| *f != "runPolicy")
        .collect();
    fields.sort_unstable();
    let mut immutable = IMMUTABLE_FIELDS.to_vec();
    immutable.sort_unstable();
    assert_eq!(fields, immutable);
}

#[test]
fn transition_rules_refuse_changes_to_immutable_fields() {
    let old = spec_json();
    let changes: [(&str, serde_json::Value); 6] = [
        ("backend", "vertexAI".into()),
        ("image", "other:1".into()),
        ("tasks", serde_json::json!([old["tasks"][0]])),
        ("training", serde_json::json!({"learningRate": 1e-3})),
        (
            "checkpoints",
            serde_json::json!({"uri": "gs://bucket/run2"}),
        ),
        ("workers", 2.into()),
    ];
    for (field, value) in changes {
        let mut new = old.clone();
        new[field] = value;
        if field == "backend" {
            new["vertexAI"] = serde_json::json!({"project": "p", "region": "us-central1"});
        }
        let err = format!(
            "{:?}",
            MultiTaskTrainingJobSpec::validate_cel(&new, Some(&old)).unwrap_err()
        );
        assert!(
            err.contains(&format!("spec.{field} cannot change once the job exists")),
            "{field}: {err}"
        );
        // A create (no old object) is not a transition: the rules do not apply.
        MultiTaskTrainingJobSpec::validate_cel(&new, None).unwrap();
    }
    // Removing a field that was set is a change too.
    let mut with_image = old.clone();
    with_image["image"] = "mtl-trainer:1".into();
    let err = format!(
        "{:?}",
        MultiTaskTrainingJobSpec::validate_cel(&old, Some(&with_image)).unwrap_err()
    );
    assert!(err.contains("spec.image cannot change"), "{err}");
    // runPolicy steers a running job.
    let mut steered = old.clone();
    steered["runPolicy"] = serde_json::json!({"suspend": true, "backoffLimit": 5,
        "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 60, "maxPreemptions": 3});
    MultiTaskTrainingJobSpec::validate_cel(&steered, Some(&old)).unwrap();
}

#[test]
fn a_spec_is_run_as_accepted_with_its_own_run_policy() {
    let accepted = parse_job("job.yaml", MINIMAL).unwrap();
    let mut now = accepted.clone();
    now.training.learning_rate = 1.0;
    now.backend = Backend::VertexAi;
    now.run_policy.suspend = true;
    let (effective, changed) = now.against_accepted(&accepted);
    assert_eq!(changed, ["spec.backend", "spec.training"]);
    assert_eq!(effective.backend, Backend::Kubernetes);
    assert_eq!(effective.training, accepted.training);
    assert!(effective.run_policy.suspend);
    let (same, none) = accepted.against_accepted(&accepted);
    assert!(none.is_empty());
    assert_eq!(same, accepted);
}

/// `kubectl explain` reads the schema's descriptions: every field of spec and status has one.
#[test]
fn every_field_is_described() {
    fn walk(node: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = node["properties"].as_object() {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                if prop["description"]
                    .as_str()
                    .is_none_or(|d| d.trim().is_empty())
                {
                    missing.push(here.clone());
                }
                walk(prop, &here, missing);
                walk(&prop["items"], &format!("{here}[]"), missing);
            }
        }
    }
    let mut missing = Vec::new();
    for crd in [MultiTaskTrainingJob::crd(), MultiTaskTrainingPolicy::crd()] {
        let crd = serde_json::to_value(crd).unwrap();
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        for part in ["spec", "status"] {
            walk(&root[part], part, &mut missing);
        }
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

#[test]
fn resource_quantities_are_int_or_string() {
    let text = format!(
        "{MINIMAL}  resources:\n    cpu: 4\n    memory: 16Gi\n    shmSize: \"1073741824\"\n"
    );
    let spec = parse_job("job.yaml", &text).unwrap();
    let res = spec.resources.clone().unwrap();
    assert_eq!(res.cpu.as_deref(), Some("4"));
    assert_eq!(res.memory.as_deref(), Some("16Gi"));
    assert_eq!(res.shm_size.as_deref(), Some("1073741824"));
    // The schema's pattern checks a string's syntax (ints pass it), as Kubernetes' own CRDs do.
    let pattern = regex::Regex::new(quantity::PATTERN).unwrap();
    for good in ["4", "500m", "16Gi", "1073741824", "1.5", "2e3", "+1Ki"] {
        assert!(pattern.is_match(good), "{good}");
    }
    for bad in ["four", "16 Gi", "1GiB", "", "-"] {
        assert!(!pattern.is_match(bad), "{bad}");
    }
    // A fraction is not an int-or-string; the error names the field.
    let bad = text.replace("cpu: 4", "cpu: 0.5");
    let err = parse_job("job.yaml", &bad).unwrap_err().to_string();
    assert!(
        err.contains("spec.resources.cpu") && err.contains("a quantity"),
        "{err}"
    );
    let crd = serde_json::to_value(MultiTaskTrainingJob::crd()).unwrap();
    let cpu = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["resources"]["properties"]["cpu"];
    assert_eq!(cpu["x-kubernetes-int-or-string"], true, "{cpu}");
    assert_eq!(cpu["pattern"], quantity::PATTERN, "{cpu}");
}

/// The API server estimates the cost of the CEL rules from the schema's bounds, and refuses
/// the CRD when a rule could cost too much: every string, list and map of the spec has one
/// (kube-standin's `cel::budget` tests hold the rules to the budget).
#[test]
fn every_string_list_and_map_of_the_spec_is_bounded() {
    fn walk(node: &serde_json::Value, path: &str, open: &mut Vec<String>) {
        let has = |key: &str| node.get(key).is_some();
        let is = |t: &str| node["type"] == t;
        let fixed_format = matches!(
            node["format"].as_str(),
            Some("date-time" | "date" | "duration")
        );
        if (is("string") && !has("enum") && !fixed_format
            || node["x-kubernetes-int-or-string"] == true)
            && !has("maxLength")
        {
            open.push(format!("{path} (maxLength)"));
        }
        if is("array") && !has("maxItems") {
            open.push(format!("{path} (maxItems)"));
        }
        if node["additionalProperties"].is_object() && !has("maxProperties") {
            open.push(format!("{path} (maxProperties)"));
        }
        for (name, prop) in node["properties"].as_object().into_iter().flatten() {
            walk(prop, &format!("{path}.{name}"), open);
        }
        walk_child(node, "items", &format!("{path}[]"), open);
        walk_child(node, "additionalProperties", &format!("{path}{{}}"), open);
    }
    fn walk_child(node: &serde_json::Value, key: &str, path: &str, open: &mut Vec<String>) {
        if node[key].is_object() {
            walk(&node[key], path, open);
        }
    }
    let crd = serde_json::to_value(MultiTaskTrainingJob::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut open = Vec::new();
    walk(spec, "spec", &mut open);
    assert!(open.is_empty(), "unbounded fields: {open:?}");
}

#[test]
fn kubectl_headers_follow_the_printer_columns() {
    let plain = [
        "NAME",
        "PHASE",
        "STEP",
        "PROGRESS",
        "ETA",
        "LATEST CHECKPOINT",
        "AGE",
    ];
    assert_eq!(kubectl_headers(false), plain);
    assert_eq!(
        kubectl_headers(true),
        [&plain[..], &["RESTARTS", "PREEMPTIONS"]].concat()
    );
}

/// Local runs have no API server: `validate()` enforces the CRD schema's bounds itself, from
/// the same generated schema, naming each field.
#[test]
fn validate_enforces_the_schemas_bounds() {
    let mut spec = parse_job("job.yaml", MINIMAL).unwrap();
    spec.validate().unwrap();
    spec.training.learning_rate = -1.0;
    spec.training.warmup_ratio = 2.0;
    spec.training.batch_size = 0;
    spec.tasks[0].name = "x".repeat(70);
    let err = spec.validate().unwrap_err().to_string();
    for want in [
        "spec.training.learningRate: -1.0 is less than the minimum 0",
        "spec.training.warmupRatio: 2.0 is more than the maximum 1",
        "spec.training.batchSize: 0 is less than the minimum 1",
        "spec.tasks[0].name: 70 characters, more than the",
    ] {
        assert!(err.contains(want), "no {want:?} in {err}");
    }
}

#[test]
fn a_task_metric_must_score_its_task_type() {
    let mut spec = parse_job("job.yaml", MINIMAL).unwrap();
    let regression = spec
        .tasks
        .iter()
        .position(|t| t.task_type == TaskType::Regression)
        .expect("a regression task in MINIMAL");
    spec.tasks[regression].metric = Some(TaskMetric::PearsonSpearman);
    spec.validate().unwrap();
    spec.tasks[regression].metric = Some(TaskMetric::Mcc);
    let err = spec.validate().unwrap_err().to_string();
    assert!(
        err.contains(".metric: Mcc does not score a Regression task"),
        "{err}"
    );
}

/// Every `x-kubernetes-validations` rule of the job CRD.
fn crd_rules() -> std::collections::BTreeSet<String> {
    fn walk(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(rules) = m.get("x-kubernetes-validations").and_then(|r| r.as_array()) {
                    out.extend(
                        rules
                            .iter()
                            .filter_map(|r| r["rule"].as_str().map(String::from)),
                    );
                }
                m.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(
        &serde_json::to_value(MultiTaskTrainingJob::crd()).unwrap(),
        &mut out,
    );
    out
}

/// The table of rules and the CRD hold the same CEL rules: a CEL rule added to a type without
/// a row (and so without a `validate()` twin or a reason for none) fails here, and so does a
/// row whose rule the CRD lost.
#[test]
fn every_cel_rule_of_the_crd_is_a_row_of_the_rules_table_and_back() {
    let table: std::collections::BTreeSet<String> = RULES
        .iter()
        .flat_map(|r| match r.admission {
            Admission::Cel(rule) => vec![rule.to_string()],
            Admission::CelBuilt(rules) => rules(),
            Admission::Not(_) => Vec::new(),
        })
        .collect();
    let crd = crd_rules();
    let not_in_table: Vec<_> = crd.difference(&table).collect();
    let not_in_crd: Vec<_> = table.difference(&crd).collect();
    assert!(
        not_in_table.is_empty() && not_in_crd.is_empty(),
        "CEL rules of the CRD without a row in crds/src/rules.rs: {not_in_table:#?}\n\
         rows whose CEL rule the CRD lacks: {not_in_crd:#?}"
    );
    let mut names: Vec<_> = RULES.iter().map(|r| r.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), RULES.len(), "rule names are unique");
}

/// For one rule of the table: the field its error names, how to break it on the MINIMAL spec
/// (JSON), and the spec it is an update of (transition rules).
type Example = (&'static str, fn(&mut serde_json::Value));

fn example(rule: &str) -> Option<Example> {
    use serde_json::json;
    let ex: Example = match rule {
        "unique task names" => ("spec.tasks[1].name", |v| {
            v["tasks"][1]["name"] = "stsb".into()
        }),
        "classification has two classes or more" => ("spec.tasks[1] (rte).numLabels", |v| {
            v["tasks"][1]["labelNames"] = json!(["only"]);
        }),
        "labelNames name every class" => ("spec.tasks[1] (rte).labelNames", |v| {
            v["tasks"][1]["numLabels"] = json!(3);
        }),
        "multipleChoice sets numChoices" => ("spec.tasks[1] (rte).numChoices", |v| {
            v["tasks"][1] = json!({"name": "rte", "type": "multipleChoice", "train": "q.jsonl",
                                   "format": "commonsenseQaJsonl"});
        }),
        "labelNames name every choice" => ("spec.tasks[1] (csqa).labelNames", |v| {
            v["tasks"][1] = json!({"name": "csqa", "type": "multipleChoice", "train": "q.jsonl",
                                   "format": "commonsenseQaJsonl", "numChoices": 5,
                                   "labelNames": ["A", "B"]});
        }),
        "regression has no labelNames" => ("spec.tasks[0] (stsb).labelNames", |v| {
            v["tasks"][0]["labelNames"] = json!(["low", "high"]);
        }),
        "regression metrics score regression only" => ("spec.tasks[0] (stsb).metric", |v| {
            v["tasks"][0]["metric"] = json!("mcc");
        }),
        "multipleChoice is scored by accuracy" => ("spec.tasks[1] (csqa).metric", |v| {
            v["tasks"][1] = json!({"name": "csqa", "type": "multipleChoice", "train": "q.jsonl",
                                   "format": "commonsenseQaJsonl", "numChoices": 5,
                                   "metric": "f1"});
        }),
        "glueTsv has no choices" => ("spec.tasks[1] (rte).format", |v| {
            v["tasks"][1]["type"] = json!("multipleChoice");
            v["tasks"][1]["numChoices"] = json!(2);
        }),
        "commonsenseQaJsonl is multipleChoice" => ("spec.tasks[1] (rte).format", |v| {
            v["tasks"][1]["format"] = json!("commonsenseQaJsonl");
        }),
        "positiveLabel is a label of a two-class task" => {
            ("spec.tasks[1] (rte).positiveLabel", |v| {
                v["tasks"][1]["positiveLabel"] = json!("maybe");
            })
        }
        "textFields are named" => ("spec.tasks[0] (stsb).textFields", |v| {
            v["tasks"][0]["textFields"] = json!([]);
        }),
        "jsonl multipleChoice names its choicesField" => ("spec.tasks[1] (mc).choicesField", |v| {
            v["tasks"][1] = json!({"name": "mc", "type": "multipleChoice", "train": "q.jsonl",
                                       "format": "jsonl", "numChoices": 2,
                                       "textFields": ["question"], "labelField": "answer"});
        }),
        "temperature sampling sets temperature" => ("spec.sampling.temperature", |v| {
            v["sampling"] = json!({"strategy": "temperature"});
        }),
        "vertexAI backend has vertexAI settings" => ("spec.vertexAI", |v| {
            v["backend"] = json!("vertexAI");
        }),
        "best checkpoint metric is reported" => ("spec.checkpoints.best", |v| {
            v["checkpoints"]["best"] = json!({"metric": "mean"});
        }),
        "early stopping watches the best checkpoint metric" => {
            ("spec.training.earlyStopping", |v| {
                v["training"]["earlyStopping"] = json!({"patience": 3});
            })
        }
        "several workers share gs:// checkpoints" => ("spec.checkpoints.uri", |v| {
            v["workers"] = json!(2);
            v["checkpoints"]["uri"] = json!("/mnt/ckpt");
            v["checkpoints"]["persistentVolumeClaim"] = json!("ckpt");
        }),
        "a persistentVolumeClaim needs backend kubernetes" => {
            ("spec.checkpoints.persistentVolumeClaim", |v| {
                v["backend"] = json!("vertexAI");
                v["vertexAI"] = json!({"project": "p", "region": "us-central1"});
                v["checkpoints"]["uri"] = json!("/mnt/ckpt");
                v["checkpoints"]["persistentVolumeClaim"] = json!("ckpt");
            })
        }
        "a persistentVolumeClaim is mounted at an absolute uri" => ("spec.checkpoints.uri", |v| {
            v["checkpoints"]["persistentVolumeClaim"] = json!("ckpt");
        }),
        "a persistentVolumeClaim name is a DNS subdomain" => {
            ("spec.checkpoints.persistentVolumeClaim", |v| {
                v["checkpoints"]["uri"] = json!("/mnt/ckpt");
                v["checkpoints"]["persistentVolumeClaim"] = json!("Not_A_Name");
            })
        }
        "podTemplate needs backend kubernetes" => ("spec.podTemplate", |v| {
            v["backend"] = json!("vertexAI");
            v["vertexAI"] = json!({"project": "p", "region": "us-central1"});
            v["podTemplate"] = json!({"labels": {"team": "nlp"}});
        }),
        "backend kubernetes keeps checkpoints beyond a pod" => ("", |v| {
            v["checkpoints"]["uri"] = json!("out/local");
        }),
        "volume types are allowed" => ("", |v| {
            v["podTemplate"] = json!({"volumes": [{"name": "node", "hostPath": {"path": "/"}}]});
        }),
        "immutable fields" => ("", |v| v["image"] = json!("trainer:v2")),
        _ => return None,
    };
    Some(ex)
}

/// Each row of the table, broken on purpose, is refused on both sides: by its CEL rule (an
/// update, from MINIMAL, for the transition rules) and by `validate()` naming its field, or, for
/// a row whose twin is elsewhere, passes `validate()` as its reason says.
#[test]
fn each_rule_refuses_its_example_at_admission_and_in_validate() {
    let valid = spec_json();
    MultiTaskTrainingJobSpec::validate_cel(&valid, None).unwrap();
    for rule in RULES {
        let (field, break_it) =
            example(rule.name).unwrap_or_else(|| panic!("rule {:?} has no example", rule.name));
        let mut broken = valid.clone();
        break_it(&mut broken);
        let old = (rule.name == "immutable fields").then_some(&valid);
        if !matches!(rule.admission, Admission::Not(_)) {
            assert!(
                MultiTaskTrainingJobSpec::validate_cel(&broken, old).is_err(),
                "{:?}: CEL accepts {broken:#}",
                rule.name
            );
        }
        let spec: MultiTaskTrainingJobSpec = serde_json::from_value(broken.clone()).unwrap();
        let errors = spec.field_errors();
        match rule.twin {
            Twin::Validate(_) | Twin::ValidateTask(_) => assert!(
                errors.iter().any(|e| e.field == field),
                "{:?}: validate() does not name {field} for {broken:#}: {errors:?}",
                rule.name
            ),
            Twin::Elsewhere(_) => assert!(errors.is_empty(), "{:?}: {errors:?}", rule.name),
        }
    }
}

/// `validate()` reports every field at fault, not the first.
#[test]
fn validate_names_every_field_at_fault() {
    let mut spec = parse_job("job.yaml", MINIMAL).unwrap();
    spec.tasks[0].label_names = Some(vec!["a".into(), "b".into()]);
    spec.tasks[1].positive_label = Some("maybe".into());
    spec.workers = 2;
    spec.checkpoints.uri = "out/run".into();
    let fields: Vec<String> = spec.field_errors().into_iter().map(|e| e.field).collect();
    assert_eq!(
        fields,
        [
            "spec.tasks[0] (stsb).labelNames",
            "spec.tasks[1] (rte).positiveLabel",
            "spec.checkpoints.uri"
        ]
    );
    let err = spec.validate().unwrap_err();
    assert_eq!(err.0.len(), 3);
    assert_eq!(err.to_string().matches("; ").count(), 2, "{err}");
}
