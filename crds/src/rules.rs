//! The rules a job spec obeys beyond its types and its schema's keywords, in one table.
//!
//! Each rule says how the API server enforces it when a job is created (the CEL rule of the
//! CRD, written here once and used by the type's `#[x_kube]` attributes), and how a spec that
//! never met an API server is held to it: [`MultiTaskTrainingJobSpec::validate`] (local runs,
//! and the operator before a job's first attempt), or the part of the operator that checks it
//! instead. A test fails when a CEL rule of the CRD is missing from the table, when a rule of
//! the table is missing from the CRD, or when a rule's example violation passes either side.

use crate::{
    Backend, DataFormat, MultiTaskTrainingJobSpec, SamplingStrategy, TaskMetric, TaskSpec, TaskType,
};

/// One field at fault, as Kubernetes' `field.Error`: the path and what is wrong there.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// `spec.tasks[1] (rte).labelNames`, `spec.workers`, ...
    pub field: String,
    pub detail: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

/// Every field at fault in a spec (Kubernetes' `field.ErrorList`), shown joined by `; `.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldErrors(pub Vec<FieldError>);

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

/// How the API server enforces a rule at admission.
#[derive(Debug, Clone, Copy)]
pub enum Admission {
    /// This CEL rule (`x-kubernetes-validations`) of the CRD.
    Cel(&'static str),
    /// CEL rules the CRD builds from a list (of fields, of volume types).
    CelBuilt(fn() -> Vec<String>),
    /// Not at admission, and why.
    Not(&'static str),
}

/// How a spec that did not pass through an API server is held to the rule.
#[derive(Debug, Clone, Copy)]
pub enum Twin {
    /// [`MultiTaskTrainingJobSpec::validate`] runs this check.
    Validate(fn(&MultiTaskTrainingJobSpec, &mut Vec<FieldError>)),
    /// [`MultiTaskTrainingJobSpec::validate`] runs this check on every task: the field (under
    /// `spec.tasks[i] (name).`) and what is wrong, when the task breaks the rule.
    ValidateTask(fn(&TaskSpec) -> Option<(&'static str, String)>),
    /// Checked elsewhere, or only at admission, and why.
    Elsewhere(&'static str),
}

/// One rule: a stable name, how admission enforces it, and its twin.
#[derive(Debug, Clone, Copy)]
pub struct SpecRule {
    pub name: &'static str,
    pub admission: Admission,
    pub twin: Twin,
}

// The CEL rules, used by the `#[x_kube]` attributes of the types in lib.rs.
pub(crate) const UNIQUE_TASK_NAMES: &str =
    "self.tasks.all(t, self.tasks.exists_one(u, u.name == t.name))";
pub(crate) const VERTEX_NEEDS_SETTINGS: &str = "self.backend != 'vertexAI' || has(self.vertexAI)";
pub(crate) const WORKERS_NEED_GCS: &str =
    "!has(self.workers) || self.workers <= 1 || self.checkpoints.uri.startsWith('gs://')";
pub(crate) const KUBERNETES_NEEDS_SHARED_CHECKPOINTS: &str = "self.backend != 'kubernetes' || !has(self.checkpoints) || self.checkpoints.uri.startsWith('gs://') || has(self.checkpoints.persistentVolumeClaim)";
pub(crate) const CLAIM_NEEDS_KUBERNETES: &str = "!has(self.checkpoints) || !has(self.checkpoints.persistentVolumeClaim) || self.backend == 'kubernetes'";
pub(crate) const EARLY_STOPPING_NEEDS_BEST: &str =
    "!has(self.training) || !has(self.training.earlyStopping) || has(self.checkpoints.best)";
pub(crate) const POD_TEMPLATE_NEEDS_KUBERNETES: &str =
    "!has(self.podTemplate) || self.backend == 'kubernetes'";
pub(crate) const CLASSIFICATION_CLASSES: &str = "self.type != 'classification' || (has(self.numLabels) && self.numLabels >= 2) || (has(self.labelNames) && size(self.labelNames) >= 2)";
pub(crate) const CHOICES_REQUIRED: &str = "self.type != 'multipleChoice' || has(self.numChoices)";
pub(crate) const LABEL_NAMES_PER_CLASS: &str = "!(self.type == 'classification' && has(self.numLabels) && has(self.labelNames)) || size(self.labelNames) == self.numLabels";
pub(crate) const LABEL_NAMES_PER_CHOICE: &str = "!(self.type == 'multipleChoice' && has(self.numChoices) && has(self.labelNames)) || size(self.labelNames) == self.numChoices";
pub(crate) const CSQA_IS_MULTIPLE_CHOICE: &str =
    "self.type == 'multipleChoice' || self.format != 'commonsenseQaJsonl'";
pub(crate) const MULTIPLE_CHOICE_NOT_GLUE_TSV: &str =
    "self.type != 'multipleChoice' || self.format != 'glueTsv'";
pub(crate) const REGRESSION_NO_LABEL_NAMES: &str =
    "self.type != 'regression' || !has(self.labelNames)";
pub(crate) const POSITIVE_LABEL: &str = "!has(self.positiveLabel) || (self.type == 'classification' && (has(self.labelNames) ? self.positiveLabel in self.labelNames : self.positiveLabel in ['0', '1']))";
pub(crate) const REGRESSION_METRIC: &str = "!has(self.metric) || (self.type == 'regression') == (self.metric in ['pearson', 'spearman', 'pearsonSpearman'])";
pub(crate) const MULTIPLE_CHOICE_METRIC: &str =
    "!has(self.metric) || self.type != 'multipleChoice' || self.metric == 'accuracy'";
pub(crate) const TEXT_FIELDS_NAMED: &str =
    "self.format == 'commonsenseQaJsonl' || (has(self.textFields) && size(self.textFields) > 0)";
pub(crate) const JSONL_CHOICES_FIELD: &str =
    "self.format != 'jsonl' || self.type != 'multipleChoice' || has(self.choicesField)";
pub(crate) const TEMPERATURE_SET: &str = "self.strategy != 'temperature' || has(self.temperature)";
pub(crate) const CLAIM_URI_ABSOLUTE: &str =
    "!has(self.persistentVolumeClaim) || self.uri.startsWith('/')";
pub(crate) const CLAIM_NAME: &str = "self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')";

/// Every rule. Order is the order `validate()` reports errors in.
pub const RULES: &[SpecRule] = &[
    SpecRule {
        name: "unique task names",
        admission: Admission::Cel(UNIQUE_TASK_NAMES),
        twin: Twin::Validate(unique_task_names),
    },
    SpecRule {
        name: "classification has two classes or more",
        admission: Admission::Cel(CLASSIFICATION_CLASSES),
        twin: Twin::ValidateTask(classification_classes),
    },
    SpecRule {
        name: "labelNames name every class",
        admission: Admission::Cel(LABEL_NAMES_PER_CLASS),
        twin: Twin::ValidateTask(label_names_per_class),
    },
    SpecRule {
        name: "multipleChoice sets numChoices",
        admission: Admission::Cel(CHOICES_REQUIRED),
        twin: Twin::ValidateTask(choices_required),
    },
    SpecRule {
        name: "labelNames name every choice",
        admission: Admission::Cel(LABEL_NAMES_PER_CHOICE),
        twin: Twin::ValidateTask(label_names_per_choice),
    },
    SpecRule {
        name: "regression has no labelNames",
        admission: Admission::Cel(REGRESSION_NO_LABEL_NAMES),
        twin: Twin::ValidateTask(regression_no_label_names),
    },
    SpecRule {
        name: "regression metrics score regression only",
        admission: Admission::Cel(REGRESSION_METRIC),
        twin: Twin::ValidateTask(regression_metric),
    },
    SpecRule {
        name: "multipleChoice is scored by accuracy",
        admission: Admission::Cel(MULTIPLE_CHOICE_METRIC),
        twin: Twin::ValidateTask(multiple_choice_metric),
    },
    SpecRule {
        name: "glueTsv has no choices",
        admission: Admission::Cel(MULTIPLE_CHOICE_NOT_GLUE_TSV),
        twin: Twin::ValidateTask(multiple_choice_not_glue_tsv),
    },
    SpecRule {
        name: "commonsenseQaJsonl is multipleChoice",
        admission: Admission::Cel(CSQA_IS_MULTIPLE_CHOICE),
        twin: Twin::ValidateTask(csqa_is_multiple_choice),
    },
    SpecRule {
        name: "positiveLabel is a label of a two-class task",
        admission: Admission::Cel(POSITIVE_LABEL),
        twin: Twin::ValidateTask(positive_label),
    },
    SpecRule {
        name: "textFields are named",
        admission: Admission::Cel(TEXT_FIELDS_NAMED),
        twin: Twin::ValidateTask(text_fields_named),
    },
    SpecRule {
        name: "jsonl multipleChoice names its choicesField",
        admission: Admission::Cel(JSONL_CHOICES_FIELD),
        twin: Twin::ValidateTask(jsonl_choices_field),
    },
    SpecRule {
        name: "temperature sampling sets temperature",
        admission: Admission::Cel(TEMPERATURE_SET),
        twin: Twin::Validate(temperature_set),
    },
    SpecRule {
        name: "vertexAI backend has vertexAI settings",
        admission: Admission::Cel(VERTEX_NEEDS_SETTINGS),
        twin: Twin::Validate(vertex_needs_settings),
    },
    SpecRule {
        name: "best checkpoint metric is reported",
        admission: Admission::Not(
            "which metrics a job reports follows from every task's type and validation data; a CEL \
             rule spelling that out would repeat the trainer's metric names",
        ),
        twin: Twin::Validate(best_metric_reported),
    },
    SpecRule {
        name: "early stopping watches the best checkpoint metric",
        admission: Admission::Cel(EARLY_STOPPING_NEEDS_BEST),
        twin: Twin::Validate(early_stopping_needs_best),
    },
    SpecRule {
        name: "several workers share gs:// checkpoints",
        admission: Admission::Cel(WORKERS_NEED_GCS),
        twin: Twin::Validate(workers_need_gcs),
    },
    SpecRule {
        name: "a persistentVolumeClaim needs backend kubernetes",
        admission: Admission::Cel(CLAIM_NEEDS_KUBERNETES),
        twin: Twin::Validate(claim_needs_kubernetes),
    },
    SpecRule {
        name: "a persistentVolumeClaim is mounted at an absolute uri",
        admission: Admission::Cel(CLAIM_URI_ABSOLUTE),
        twin: Twin::Validate(claim_uri_absolute),
    },
    SpecRule {
        name: "a persistentVolumeClaim name is a DNS subdomain",
        admission: Admission::Cel(CLAIM_NAME),
        twin: Twin::Validate(claim_name),
    },
    SpecRule {
        name: "podTemplate needs backend kubernetes",
        admission: Admission::Cel(POD_TEMPLATE_NEEDS_KUBERNETES),
        twin: Twin::Validate(pod_template_needs_kubernetes),
    },
    SpecRule {
        name: "backend kubernetes keeps checkpoints beyond a pod",
        admission: Admission::Cel(KUBERNETES_NEEDS_SHARED_CHECKPOINTS),
        twin: Twin::Elsewhere(
            "admission only: a local run (mtl-trainer --job) reads the same spec, backend \
             kubernetes by default, and keeps its checkpoints on this machine",
        ),
    },
    SpecRule {
        name: "volume types are allowed",
        admission: Admission::CelBuilt(volume_rules),
        twin: Twin::Elsewhere(
            "the operator checks each volume against its --allow-volume-types (PolicyViolation); \
             the allowed types are the cluster's choice, not the spec's",
        ),
    },
    SpecRule {
        name: "immutable fields",
        admission: Admission::CelBuilt(immutable_rules),
        twin: Twin::Elsewhere(
            "an update rule (oldSelf): the operator runs the accepted spec and names the fields \
             a later spec changed (MultiTaskTrainingJobSpec::against_accepted)",
        ),
    },
];

impl MultiTaskTrainingJobSpec {
    /// Every field at fault, as the API server would report them at admission: the schema's
    /// bounds first (when one fails, the rules are not run on a spec the schema refuses), then
    /// each rule of [`RULES`] with a [`Twin::Validate`] check.
    pub fn field_errors(&self) -> Vec<FieldError> {
        let schema = crate::schema_errors(&serde_json::to_value(self).unwrap_or_default());
        if !schema.is_empty() {
            return schema
                .into_iter()
                .map(|e| match e.split_once(": ") {
                    Some((field, detail)) => FieldError {
                        field: field.into(),
                        detail: detail.into(),
                    },
                    None => FieldError {
                        field: "spec".into(),
                        detail: e,
                    },
                })
                .collect();
        }
        let mut out = Vec::new();
        for rule in RULES {
            match rule.twin {
                Twin::Validate(check) => check(self, &mut out),
                Twin::ValidateTask(check) => {
                    for (i, t) in self.tasks.iter().enumerate() {
                        if let Some((field, detail)) = check(t) {
                            out.push(FieldError {
                                field: format!("spec.tasks[{i}] ({}).{field}", t.name),
                                detail,
                            });
                        }
                    }
                }
                Twin::Elsewhere(_) => {}
            }
        }
        out
    }

    /// Checks what serde and the schema's types cannot express (the API server runs the CEL
    /// rules; local runs have no API server, so the trainer calls this, and the operator before
    /// a job's first attempt). The error holds every field at fault ([`Self::field_errors`]);
    /// it reads as them joined by `; `.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let errors = self.field_errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FieldErrors(errors))
        }
    }
}

fn error(out: &mut Vec<FieldError>, field: String, detail: String) {
    out.push(FieldError { field, detail });
}

fn unique_task_names(spec: &MultiTaskTrainingJobSpec, out: &mut Vec<FieldError>) {
    for (i, t) in spec.tasks.iter().enumerate() {
        if spec.tasks[..i].iter().any(|u| u.name == t.name) {
            error(
                out,
                format!("spec.tasks[{i}].name"),
                format!("duplicate task name {:?}", t.name),
            );
        }
    }
}

/// One task's fault, if it breaks the rule: the field (under the task) and what is wrong.
type TaskFault = Option<(&'static str, String)>;

fn classification_classes(t: &TaskSpec) -> TaskFault {
    (t.task_type == TaskType::Classification && t.num_outputs() < 2)
        .then(|| ("numLabels", "needs at least 2 classes".into()))
}

fn label_names_per_class(t: &TaskSpec) -> TaskFault {
    let (Some(n), Some(names)) = (t.num_labels, &t.label_names) else {
        return None;
    };
    (t.task_type == TaskType::Classification && names.len() as u32 != n).then(|| {
        (
            "labelNames",
            format!("{} names for {n} labels", names.len()),
        )
    })
}

fn choices_required(t: &TaskSpec) -> TaskFault {
    (t.task_type == TaskType::MultipleChoice && t.num_choices.is_none())
        .then(|| ("numChoices", "required for multipleChoice".into()))
}

fn label_names_per_choice(t: &TaskSpec) -> TaskFault {
    let (Some(n), Some(names)) = (t.num_choices, &t.label_names) else {
        return None;
    };
    (t.task_type == TaskType::MultipleChoice && names.len() as u32 != n).then(|| {
        (
            "labelNames",
            format!("{} names for {n} choices", names.len()),
        )
    })
}

fn regression_no_label_names(t: &TaskSpec) -> TaskFault {
    (t.task_type == TaskType::Regression && t.label_names.is_some())
        .then(|| ("labelNames", "a regression task has none".into()))
}

const METRICS_BY_TYPE: &str = "regression: pearson, spearman, pearsonSpearman; classification: accuracy, f1, mcc, f1Accuracy; multipleChoice: accuracy";

fn metric_fault(t: &TaskSpec, metric: TaskMetric) -> (&'static str, String) {
    (
        "metric",
        format!(
            "{metric:?} does not score a {:?} task ({METRICS_BY_TYPE})",
            t.task_type
        ),
    )
}

fn is_regression_metric(metric: TaskMetric) -> bool {
    use TaskMetric::*;
    matches!(metric, Pearson | Spearman | PearsonSpearman)
}

fn regression_metric(t: &TaskSpec) -> TaskFault {
    let metric = t.metric?;
    ((t.task_type == TaskType::Regression) != is_regression_metric(metric))
        .then(|| metric_fault(t, metric))
}

fn multiple_choice_metric(t: &TaskSpec) -> TaskFault {
    let metric = t.metric?;
    // The regression metrics on a multipleChoice task are regression_metric's error.
    (t.task_type == TaskType::MultipleChoice
        && metric != TaskMetric::Accuracy
        && !is_regression_metric(metric))
    .then(|| metric_fault(t, metric))
}

fn multiple_choice_not_glue_tsv(t: &TaskSpec) -> TaskFault {
    (t.task_type == TaskType::MultipleChoice && t.format == DataFormat::GlueTsv).then(|| {
        (
            "format",
            "glueTsv has no choices; a multipleChoice task needs commonsenseQaJsonl, or jsonl with choicesField".into(),
        )
    })
}

fn csqa_is_multiple_choice(t: &TaskSpec) -> TaskFault {
    (t.task_type != TaskType::MultipleChoice && t.format == DataFormat::CommonsenseQaJsonl).then(
        || {
            (
                "format",
                "commonsenseQaJsonl holds multiple-choice questions; use type multipleChoice"
                    .into(),
            )
        },
    )
}

fn positive_label(t: &TaskSpec) -> TaskFault {
    let p = t.positive_label.as_ref()?;
    let ok = t.task_type == TaskType::Classification
        && t.num_outputs() == 2
        && match &t.label_names {
            Some(names) => names.contains(p),
            None => p == "0" || p == "1",
        };
    (!ok).then(|| {
        (
            "positiveLabel",
            format!("{p:?} is not one of the labels of a two-class classification task"),
        )
    })
}

fn text_fields_named(t: &TaskSpec) -> TaskFault {
    (t.format != DataFormat::CommonsenseQaJsonl && t.text_fields.is_empty())
        .then(|| ("textFields", "name one or two text fields".into()))
}

fn jsonl_choices_field(t: &TaskSpec) -> TaskFault {
    (t.format == DataFormat::Jsonl
        && t.task_type == TaskType::MultipleChoice
        && t.choices_field.is_none())
    .then(|| ("choicesField", "required for jsonl multipleChoice".into()))
}

fn temperature_set(spec: &MultiTaskTrainingJobSpec, out: &mut Vec<FieldError>) {
    if spec.sampling.strategy == SamplingStrategy::Temperature
        && spec.sampling.temperature.is_none_or(|t| t <= 0.0)
    {
        error(
            out,
            "spec.sampling.temperature".into(),
            "required and > 0 for strategy temperature".into(),
        );
    }
}

fn vertex_needs_settings(spec: &MultiTaskTrainingJobSpec, out: &mut Vec<FieldError>) {
    if spec.backend == Backend::VertexAi && spec.vertex_ai.is_none() {
        error(
            out,
            "spec.vertexAI".into(),
            "required for backend vertexAI".into(),
        );
    }
}

fn best_metric_reported(spec: &MultiTaskTrainingJobSpec, out: &mut Vec<FieldError>) {
    let Some(best) = &spec.checkpoints.best else {
        return;
    };
    let reported = spec.reported_metrics();
    if reported.is_empty() {
        error(
            out,
            "spec.checkpoints.best".into(),
            "no task has validation data, so there is no metric to rank checkpoints by".into(),
        );
    } else if !reported.contains(&best.metric) {
        error(
            out,
            "spec.checkpoints.best.metric".into(),
            format!(
                "{:?} is not a metric this job reports (it reports {})",
                best.metric,
                reported.join(", ")
            ),
        );
    }
}

fn early_stopping_needs_best(spec: &MultiTaskTrainingJobSpec, out: &mut Vec<FieldError>) {
    if spec.training.early_stopping.is_some() && spec.checkpoints.best.is_none() {
        error(
            out,
            "spec.training.earlyStopping".into(),
            "watches checkpoints.best.metric; set spec.checkpoints.best".into(),
        );
    }
}

fn workers_need_gcs(spec: &MultiTaskTrainingJobSpec, out: &mut Vec<FieldError>) {
    if spec.workers > 1 && !spec.checkpoints.uri.starts_with("gs://") {
        error(
            out,
            "spec.checkpoints.uri".into(),
            format!(
                "{:?} must be a gs:// URI when spec.workers is {} (every worker and every attempt must reach the same checkpoints)",
                spec.checkpoints.uri, spec.workers
            ),
        );
    }
}

fn claim_needs_kubernetes(spec: &MultiTaskTrainingJobSpec, out: &mut Vec<FieldError>) {
    if spec.checkpoints.persistent_volume_claim.is_some() && spec.backend != Backend::Kubernetes {
        error(
            out,
            "spec.checkpoints.persistentVolumeClaim".into(),
            "is mounted into pods: it needs backend kubernetes".into(),
        );
    }
}

fn claim_uri_absolute(spec: &MultiTaskTrainingJobSpec, out: &mut Vec<FieldError>) {
    if spec.checkpoints.persistent_volume_claim.is_some() && !spec.checkpoints.uri.starts_with('/')
    {
        error(
            out,
            "spec.checkpoints.uri".into(),
            format!(
                "{:?}: with persistentVolumeClaim, uri is the absolute path the claim is mounted at in the trainer's pod",
                spec.checkpoints.uri
            ),
        );
    }
}

/// `^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`, the CEL rule's pattern.
fn is_dns_subdomain(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let (Some(first), Some(last)) = (name.chars().next(), name.chars().last()) else {
        return false;
    };
    alnum(first) && alnum(last) && name.chars().all(|c| alnum(c) || c == '-' || c == '.')
}

fn claim_name(spec: &MultiTaskTrainingJobSpec, out: &mut Vec<FieldError>) {
    if let Some(claim) = &spec.checkpoints.persistent_volume_claim
        && !is_dns_subdomain(claim)
    {
        error(
            out,
            "spec.checkpoints.persistentVolumeClaim".into(),
            format!("{claim:?} must be a PersistentVolumeClaim name (a DNS subdomain)"),
        );
    }
}

fn pod_template_needs_kubernetes(spec: &MultiTaskTrainingJobSpec, out: &mut Vec<FieldError>) {
    if spec.pod_template.is_some() && spec.backend != Backend::Kubernetes {
        error(
            out,
            "spec.podTemplate".into(),
            "shapes the trainer's pods: it needs backend kubernetes".into(),
        );
    }
}

fn volume_rules() -> Vec<String> {
    vec![crate::volume_rule(&[]).0]
}

fn immutable_rules() -> Vec<String> {
    crate::IMMUTABLE_FIELDS
        .iter()
        .map(|f| crate::immutable(f).rule)
        .collect()
}
