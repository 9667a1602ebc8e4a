//! Reading a task's file record by record, whatever its format (`glue.rs`, `jsonl.rs`).

use std::path::Path;

use mtl_crds::{DataFormat, TaskSpec};

use super::example::Example;
use super::{glue, jsonl};
use crate::{Error, Result};

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
