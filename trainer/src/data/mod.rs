//! Task data: readers for the supported file formats, tokenization, the token store and its
//! cache, and batching.
//!
//! A file is read record by record into [`Example`]s (one or more sequences — a sentence or a
//! sentence pair, one per choice for multiple choice — and an optional label: a score, a
//! class index or a choice index); readers report the file and line of anything they cannot
//! use. Examples are tokenized a chunk at a time into a [`TokenStore`] (`store.rs`), cached
//! under a key of everything that decides its content (`cache.rs`); `tasks.rs` does this for
//! every file of a job; `batch.rs` pads a store's examples into model inputs.

mod batch;
pub mod cache;
mod glue;
mod jsonl;
pub mod store;
mod tasks;
mod tokenize;

use std::path::Path;

use mtl_crds::{DataFormat, TaskSpec, TaskType};

pub use batch::{Batch, Batcher};
pub use store::TokenStore;
pub use tasks::{Loader, TaskData, scratch_store, sha256_file};
pub use tokenize::TextEncoder;

use crate::{Error, Result};

/// One example before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// (text, optional pair text): one entry, or one per choice for multiple choice.
    pub seqs: Vec<(String, Option<String>)>,
    /// Regression score, class index or choice index.
    pub label: Option<f64>,
}

/// Streams the examples of a task's file (`shown` names it in errors) to `sink`, in order,
/// until the file ends or `sink` returns `false`. `require_labels`: every record must have a
/// valid label. Nothing but the record at hand is held.
pub fn for_each_example(
    task: &TaskSpec,
    path: &Path,
    shown: &str,
    require_labels: bool,
    sink: &mut dyn FnMut(Example) -> Result<bool>,
) -> Result<()> {
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let input = std::io::BufReader::with_capacity(1 << 20, file);
    match task.format {
        DataFormat::GlueTsv => glue::read(task, shown, input, require_labels, sink),
        DataFormat::CommonsenseQaJsonl => {
            jsonl::read_csqa(task, shown, input, require_labels, sink)
        }
        DataFormat::Jsonl => jsonl::read_generic(task, shown, input, require_labels, sink),
    }
}

/// Reads a whole task file (small inputs: `predict`, tests). Empty files are an error.
pub fn read_examples(
    task: &TaskSpec,
    path: &Path,
    shown: &str,
    require_labels: bool,
) -> Result<Vec<Example>> {
    let mut examples = Vec::new();
    for_each_example(task, path, shown, require_labels, &mut |e| {
        examples.push(e);
        Ok(true)
    })?;
    if examples.is_empty() {
        return Err(Error::invalid_input(shown, "no examples in file"));
    }
    Ok(examples)
}

/// A raw label value as it appears in a file.
pub(crate) enum RawLabel<'a> {
    Text(&'a str),
    Number(f64),
}

/// Turns a raw label into the number the loss needs, or says what is wrong with it.
pub(crate) fn parse_label(task: &TaskSpec, raw: RawLabel<'_>) -> std::result::Result<f64, String> {
    match (task.task_type, raw) {
        (TaskType::Regression, RawLabel::Number(x)) => Ok(x),
        (TaskType::Regression, RawLabel::Text(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("label {s:?} is not a number")),
        (_, raw) => {
            let limit = match task.task_type {
                TaskType::MultipleChoice => task.num_choices.unwrap_or(0) as usize,
                _ => task.num_outputs() as usize,
            };
            let index = match raw {
                RawLabel::Text(s) => {
                    let s = s.trim();
                    match &task.label_names {
                        Some(names) => names.iter().position(|n| n == s).or_else(|| {
                            s.parse::<usize>()
                                .ok()
                                .filter(|_| names.iter().all(|n| n.parse::<usize>().is_err()))
                        }),
                        None => s.parse::<usize>().ok(),
                    }
                    .ok_or_else(|| match &task.label_names {
                        Some(names) => format!("label {s:?} is not one of {names:?}"),
                        None => format!("label {s:?} is not a class index"),
                    })?
                }
                RawLabel::Number(x) if x >= 0.0 && x.fract() == 0.0 => x as usize,
                RawLabel::Number(x) => return Err(format!("label {x} is not a class index")),
            };
            if index >= limit {
                return Err(format!("label index {index} is out of range (0..{limit})"));
            }
            Ok(index as f64)
        }
    }
}

#[cfg(test)]
mod tests;
