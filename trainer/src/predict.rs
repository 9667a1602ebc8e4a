//! Inference from a committed checkpoint ([`Loaded`]): `eval` (metrics on the validation
//! sets) and `predict` (JSONL in, one prediction per line out).

use std::collections::BTreeMap;
use std::path::Path;

use mtl_crds::{DataFormat, MultiTaskTrainingJobSpec, Precision, TaskSpec, TaskType};
use serde::Serialize;
use tch::Kind;

use crate::checkpoint::Loaded;
use crate::data;
use crate::eval::{self, EvalSet, infer};
use crate::io::Storage;
use crate::model::TOKENIZER_FILE;
use crate::precision::Amp;
use crate::{Error, Result};

/// `eval`: the validation sets of `spec`'s tasks, each scored by `loaded`'s head of the same
/// name (the job may list the tasks in another order, or only some of them).
pub fn evaluate(
    loaded: &Loaded,
    store: &Storage,
    spec: &MultiTaskTrainingJobSpec,
    cache: &Path,
    batch_size: usize,
) -> Result<BTreeMap<String, f64>> {
    let loader = data::Loader::new(
        store,
        cache,
        &loaded.encoder,
        &loaded.dir.join(TOKENIZER_FILE),
    )?;
    let tasks = loader.load(spec, false)?;
    let heads = tasks
        .iter()
        .map(|t| eval::head_for(&loaded.model, &loaded.tasks, &t.spec))
        .collect::<Result<Vec<_>>>()?;
    let sets: Vec<EvalSet<'_>> = tasks
        .iter()
        .zip(heads)
        .filter_map(|(t, head)| {
            t.validation.as_ref().map(|v| EvalSet {
                spec: &t.spec,
                head,
                examples: v,
            })
        })
        .collect();
    let amp = Amp::new(
        spec.training.precision,
        loaded.model.device(),
        spec.training.allow_tf32,
    )?;
    eval::evaluate(&loaded.model, &sets, batch_size, &amp)
}

/// One output line of `predict`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    /// Score (regression), class name or index (classification), choice label or index
    /// (multiple choice).
    pub prediction: serde_json::Value,
    /// Raw outputs: the score, class logits or per-choice scores.
    pub scores: Vec<f64>,
}

/// Predictions of `task` for every record of `input` (JSONL read through the task's field
/// mapping; CommonsenseQA JSONL for such tasks). Labels in the input are ignored.
pub fn predict(
    loaded: &Loaded,
    task: &str,
    input: &Path,
    batch_size: usize,
    cache: &Path,
) -> Result<Vec<Prediction>> {
    predict_as(
        loaded,
        task,
        input,
        Some(DataFormat::Jsonl),
        batch_size,
        cache,
    )
}

/// Predictions of `task` for every record of `input`, read in the task's own format, or as
/// `glue_as` when the task's is glueTsv. Labels in the input are ignored.
fn predict_as(
    loaded: &Loaded,
    task: &str,
    input: &Path,
    glue_as: Option<DataFormat>,
    batch_size: usize,
    cache: &Path,
) -> Result<Vec<Prediction>> {
    let (index, spec) = loaded.task(task)?;
    let mut reader = spec.clone();
    if let (DataFormat::GlueTsv, Some(format)) = (reader.format, glue_as) {
        reader.format = format;
    }
    reader.label_field = None;
    let shown = input.display().to_string();
    let examples = data::read_examples(&reader, input, &shown, false)?;
    // Truncated as training truncated this task (its own maxLength, else the model's).
    let encoder = loaded.encoder_for(spec)?;
    let tokenized = data::scratch_store(cache, &encoder, &examples, &shown)?;
    let amp = Amp::new(Precision::Fp32, loaded.model.device(), false)?;
    let logits = infer(
        &loaded.model.frozen()?,
        &loaded.model.batcher(index),
        index,
        &tokenized,
        batch_size,
        &amp,
    )?
    .f_to_kind(Kind::Double)?;
    let rows = (0..logits.size()[0])
        .map(|i| Vec::<f64>::try_from(logits.f_get(i)?))
        .collect::<std::result::Result<Vec<Vec<f64>>, tch::TchError>>()?;
    Ok(rows
        .into_iter()
        .map(|scores| {
            let prediction = match spec.task_type {
                TaskType::Regression => serde_json::json!(scores.first().copied().unwrap_or(0.0)),
                _ => {
                    let best = scores
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map_or(0, |(i, _)| i);
                    match spec.label_names.as_ref().and_then(|n| n.get(best)) {
                        Some(name) => serde_json::json!(name),
                        None => serde_json::json!(best),
                    }
                }
            };
            Prediction { prediction, scores }
        })
        .collect())
}

/// GLUE's file names for its tasks' test predictions, by task name (lower case).
const GLUE_FILES: [(&str, &str); 14] = [
    ("cola", "CoLA"),
    ("sst2", "SST-2"),
    ("sst-2", "SST-2"),
    ("mrpc", "MRPC"),
    ("stsb", "STS-B"),
    ("sts-b", "STS-B"),
    ("qqp", "QQP"),
    ("mnli", "MNLI-m"),
    ("mnli-m", "MNLI-m"),
    ("mnli-mm", "MNLI-mm"),
    ("qnli", "QNLI"),
    ("rte", "RTE"),
    ("wnli", "WNLI"),
    ("ax", "AX"),
];

/// The file a task's test predictions go to (see `TaskSpec::submission_file`).
pub fn submission_file(task: &TaskSpec, at: &str) -> Result<String> {
    let name = match &task.submission_file {
        Some(name) => name.clone(),
        None => {
            let lower = task.name.to_lowercase();
            match GLUE_FILES.iter().find(|(n, _)| *n == lower) {
                Some((_, glue)) => format!("{glue}.tsv"),
                None if task.format == DataFormat::CommonsenseQaJsonl => {
                    format!("{}.jsonl", task.name)
                }
                None => format!("{}.tsv", task.name),
            }
        }
    };
    let plain = !name.contains('/') && !name.contains('\\') && name != ".." && name != ".";
    if !plain || !(name.ends_with(".tsv") || name.ends_with(".jsonl")) {
        return Err(Error::Invalid(format!(
            "{at}.submissionFile: {name:?} must be a file name ending in .tsv or .jsonl"
        )));
    }
    Ok(name)
}

/// `predict --submission DIR`: for every task of `spec` with a `test` file, its predictions
/// in the form benchmark servers take, in `dir` (see [`submission_file`]). Returns the files
/// written, in task order.
pub fn submission(
    loaded: &Loaded,
    store: &Storage,
    spec: &MultiTaskTrainingJobSpec,
    dir: &Path,
    batch_size: usize,
    cache: &Path,
) -> Result<Vec<std::path::PathBuf>> {
    let with_test: Vec<(usize, &TaskSpec, &String)> = spec
        .tasks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.test.as_ref().map(|test| (i, t, test)))
        .collect();
    if with_test.is_empty() {
        return Err(Error::Invalid(
            "--submission: no task of the job has a test file (spec.tasks[].test)".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let mut written = Vec::new();
    for (i, task, test) in with_test {
        let at = format!("spec.tasks[{i}] ({})", task.name);
        let name = submission_file(task, &at)?;
        let input = store.fetch(test, cache)?;
        let preds = predict_as(loaded, &task.name, &input, None, batch_size, cache)?;
        let ids = record_ids(task, &input, test)?;
        if ids.len() != preds.len() {
            return Err(Error::file(
                test,
                format!("{} records, {} predictions", ids.len(), preds.len()),
            ));
        }
        let text = if name.ends_with(".jsonl") {
            submission_jsonl(task, &ids, &preds)
        } else {
            submission_tsv(&ids, &preds)
        };
        let path = dir.join(&name);
        std::fs::write(&path, text).map_err(Error::io(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// GLUE's form: a header, then `index\tprediction` per record (a label name, or the score).
fn submission_tsv(ids: &[String], preds: &[Prediction]) -> String {
    let mut out = String::from("index\tprediction\n");
    for (id, p) in ids.iter().zip(preds) {
        let value = match &p.prediction {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push_str(&format!("{id}\t{value}\n"));
    }
    out
}

/// One JSON object per record: CommonsenseQA's `{"id", "answerKey"}` for multiple choice (the
/// choice's label name, else its letter), `{"id", "prediction"}` otherwise.
fn submission_jsonl(task: &TaskSpec, ids: &[String], preds: &[Prediction]) -> String {
    let mut out = String::new();
    for (id, p) in ids.iter().zip(preds) {
        let line = if task.task_type == TaskType::MultipleChoice {
            let key = match &p.prediction {
                serde_json::Value::Number(n) => n
                    .as_u64()
                    .and_then(|i| char::from_u32('A' as u32 + i as u32))
                    .map(String::from)
                    .unwrap_or_default(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            serde_json::json!({"id": id, "answerKey": key})
        } else {
            serde_json::json!({"id": id, "prediction": p.prediction})
        };
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// The id of each record of a test file, in order: a TSV's `index` column (else the row's
/// number from 0), a JSONL record's `id` (else its number from 0). Blank rows and lines are
/// skipped, as the readers skip them.
fn record_ids(task: &TaskSpec, path: &Path, shown: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    if task.format == DataFormat::GlueTsv {
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
        let index = header.iter().position(|h| *h == "index");
        return Ok(lines
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(n, l)| match index {
                Some(i) => l.split('\t').nth(i).unwrap_or_default().to_string(),
                None => n.to_string(),
            })
            .collect());
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| {
            let v: serde_json::Value = serde_json::from_str(l)
                .map_err(|e| Error::file(shown, format!("record {}: {e}", n + 1)))?;
            Ok(match v.get("id") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(x)) => x.to_string(),
                _ => n.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, format: DataFormat, file: Option<&str>) -> TaskSpec {
        let mut t: TaskSpec = serde_json::from_value(serde_json::json!({
            "name": name, "type": "classification", "train": "t", "format": format,
            "textFields": ["a"], "labelField": "l"
        }))
        .unwrap();
        t.submission_file = file.map(String::from);
        t
    }

    #[test]
    fn submission_files_take_glue_names_unless_told() {
        let name = |n: &str, f: DataFormat, file: Option<&str>| {
            submission_file(&task(n, f, file), "spec.tasks[0]")
        };
        assert_eq!(
            name("SST2", DataFormat::GlueTsv, None).unwrap(),
            "SST-2.tsv"
        );
        assert_eq!(
            name("mnli-mm", DataFormat::GlueTsv, None).unwrap(),
            "MNLI-mm.tsv"
        );
        assert_eq!(name("cola", DataFormat::Jsonl, None).unwrap(), "CoLA.tsv");
        assert_eq!(name("mine", DataFormat::Jsonl, None).unwrap(), "mine.tsv");
        assert_eq!(
            name("csqa", DataFormat::CommonsenseQaJsonl, None).unwrap(),
            "csqa.jsonl"
        );
        assert_eq!(
            name("rte", DataFormat::GlueTsv, Some("rte-test.jsonl")).unwrap(),
            "rte-test.jsonl"
        );
        for bad in ["../RTE.tsv", "RTE.csv", "a/b.tsv"] {
            let err = name("rte", DataFormat::GlueTsv, Some(bad))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("spec.tasks[0].submissionFile") && err.contains(bad),
                "{err}"
            );
        }
    }
}
