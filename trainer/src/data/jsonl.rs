//! JSON lines: the official CommonsenseQA format and a generic format with a field mapping.

use std::io::BufRead;

use mtl_crds::{TaskSpec, TaskType};
use serde_json::Value;

use super::example::{Example, RawLabel, parse_label};
use crate::{Error, Result};

/// Non-empty lines of a JSONL input parsed as objects, with their 1-based line numbers, read
/// line by line.
fn objects<'a>(
    path: &'a str,
    input: impl BufRead + 'a,
) -> impl Iterator<Item = Result<(u64, Value)>> + 'a {
    input
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(move |(i, l)| {
            let line = i as u64 + 1;
            let at = |message: String| Error::Line {
                path: path.into(),
                line,
                message,
            };
            let l = l.map_err(|e| at(format!("cannot read: {e}")))?;
            match serde_json::from_str::<Value>(&l) {
                Ok(v @ Value::Object(_)) => Ok((line, v)),
                Ok(_) => Err(at("expected a JSON object".into())),
                Err(e) => Err(at(format!("malformed JSON: {e}"))),
            }
        })
}

/// Looks up a dotted field path (`question.stem`).
fn get<'v>(v: &'v Value, field: &str) -> Option<&'v Value> {
    field.split('.').try_fold(v, |v, k| v.get(k))
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(_) => v.get("text").and_then(Value::as_str).map(str::to_string),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn raw_label(v: &Value) -> Option<RawLabel<'_>> {
    match v {
        Value::String(s) => Some(RawLabel::Text(s)),
        Value::Number(n) => n.as_f64().map(RawLabel::Number),
        Value::Bool(b) => Some(RawLabel::Number(f64::from(u8::from(*b)))),
        _ => None,
    }
}

/// CommonsenseQA: `{"answerKey": "A", "question": {"stem": ..., "choices": [{"label", "text"}]}}`.
pub fn read_csqa(
    task: &TaskSpec,
    path: &str,
    input: impl BufRead,
    require_labels: bool,
    sink: &mut dyn FnMut(Example) -> Result<bool>,
) -> Result<()> {
    let want = task.num_choices.unwrap_or(5) as usize;
    for item in objects(path, input) {
        let (line, v) = item?;
        let err = |message: String| Error::Line {
            path: path.into(),
            line,
            message,
        };
        let stem = get(&v, "question.stem")
            .and_then(Value::as_str)
            .ok_or_else(|| err("missing field question.stem".into()))?;
        let choices = get(&v, "question.choices")
            .and_then(Value::as_array)
            .ok_or_else(|| err("missing field question.choices".into()))?;
        if choices.len() != want {
            return Err(err(format!(
                "{} choices, the task has numChoices {want}",
                choices.len()
            )));
        }
        let mut labels = Vec::with_capacity(want);
        let mut seqs = Vec::with_capacity(want);
        for (i, c) in choices.iter().enumerate() {
            let t = c
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| err(format!("question.choices[{i}].text is missing")))?;
            labels.push(c.get("label").and_then(Value::as_str).unwrap_or_default());
            seqs.push((stem.to_string(), Some(t.to_string())));
        }
        let label = match v.get("answerKey").and_then(Value::as_str) {
            Some(key) => Some(labels.iter().position(|l| *l == key).ok_or_else(|| {
                err(format!(
                    "answerKey {key:?} is not one of the choice labels {labels:?}"
                ))
            })? as f64),
            None if require_labels => return Err(err("missing field answerKey".into())),
            None => None,
        };
        if !sink(Example { seqs, label })? {
            break;
        }
    }
    Ok(())
}

/// Generic JSONL read through `textFields`, `labelField` and (multiple choice) `choicesField`.
pub fn read_generic(
    task: &TaskSpec,
    path: &str,
    input: impl BufRead,
    require_labels: bool,
    sink: &mut dyn FnMut(Example) -> Result<bool>,
) -> Result<()> {
    for item in objects(path, input) {
        let (line, v) = item?;
        let err = |message: String| Error::Line {
            path: path.into(),
            line,
            message,
        };
        let field_text = |f: &str| {
            get(&v, f)
                .and_then(text_of)
                .ok_or_else(|| err(format!("missing or non-text field {f:?}")))
        };
        let texts = task
            .text_fields
            .iter()
            .map(|f| field_text(f))
            .collect::<Result<Vec<_>>>()?;
        let seqs = if task.task_type == TaskType::MultipleChoice {
            let field = task.choices_field.as_deref().unwrap_or("choices");
            let choices = get(&v, field)
                .and_then(Value::as_array)
                .ok_or_else(|| err(format!("missing list field {field:?}")))?;
            let want = task.num_choices.unwrap_or(0) as usize;
            if choices.len() != want {
                return Err(err(format!(
                    "{} choices, the task has numChoices {want}",
                    choices.len()
                )));
            }
            // As transformers' run_swag lays out SWAG: the first text field (the context) is
            // segment A; the second, when there is one (the start of the ending), goes before
            // each choice in segment B.
            let mut texts = texts.into_iter();
            let context = texts.next().unwrap_or_default();
            let header = texts.next();
            choices
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let ending =
                        text_of(c).ok_or_else(|| err(format!("{field}[{i}] is not text")))?;
                    let b = match &header {
                        Some(h) => format!("{h} {ending}"),
                        None => ending,
                    };
                    Ok((context.clone(), Some(b)))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            let mut it = texts.into_iter();
            let a = it.next().unwrap_or_default();
            vec![(a, it.next())]
        };
        let label = match task.label_field.as_deref().and_then(|f| get(&v, f)) {
            Some(Value::Null) | None if require_labels => {
                return Err(err(format!(
                    "missing label field {:?}",
                    task.label_field
                        .as_deref()
                        .unwrap_or("<labelField not set>")
                )));
            }
            Some(Value::Null) | None => None,
            Some(raw) => {
                let raw = raw_label(raw)
                    .ok_or_else(|| err(format!("label {raw} is not a string or number")))?;
                Some(parse_label(task, raw).map_err(&err)?)
            }
        };
        if !sink(Example { seqs, label })? {
            break;
        }
    }
    Ok(())
}
