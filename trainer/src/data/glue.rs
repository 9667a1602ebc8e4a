//! GLUE TSV: tab-separated, a header row, no quoting (GLUE's STS-B and RTE files contain
//! bare quote characters). Read record by record.

use std::io::Read;

use mtl_crds::TaskSpec;

use super::example::{Example, RawLabel, parse_label};
use crate::{Error, Result};

/// Calls `sink` with each example of the file, in order, until it returns `false`.
pub fn read(
    task: &TaskSpec,
    path: &str,
    input: impl Read,
    require_labels: bool,
    sink: &mut dyn FnMut(Example) -> Result<bool>,
) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .quoting(false)
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| Error::invalid_input(path, format!("cannot read the header row: {e}")))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| Error::Line {
                path: path.into(),
                line: 1,
                message: format!(
                    "missing column {name:?} (columns: {})",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ),
            })
    };
    let text_cols = task
        .text_fields
        .iter()
        .map(|f| column(f))
        .collect::<Result<Vec<_>>>()?;
    if text_cols.is_empty() || text_cols.len() > 2 {
        return Err(Error::invalid_input(
            path,
            "textFields must name one or two columns",
        ));
    }
    let label_col = match &task.label_field {
        Some(f) => Some(column(f)),
        None if require_labels => {
            return Err(Error::invalid_input(
                path,
                format!(
                    "task {}: labelField is required for training data",
                    task.name
                ),
            ));
        }
        None => None,
    }
    .transpose()?;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(Error::file(path, e.to_string())),
        }
        let record = &record;
        let line = record.position().map_or(0, |p| p.line());
        let err = |message: String| Error::Line {
            path: path.into(),
            line,
            message,
        };
        if record.len() == 1 && record.get(0).is_some_and(|s| s.trim().is_empty()) {
            continue;
        }
        let field = |i: usize| {
            record.get(i).ok_or_else(|| {
                err(format!(
                    "row has {} fields, expected column {:?}",
                    record.len(),
                    &headers[i]
                ))
            })
        };
        let a = field(text_cols[0])?.to_string();
        let b = text_cols
            .get(1)
            .map(|&i| field(i))
            .transpose()?
            .map(str::to_string);
        let label = match label_col {
            Some(i) => match record.get(i).map(str::trim) {
                Some(raw) if !raw.is_empty() => {
                    Some(parse_label(task, RawLabel::Text(raw)).map_err(&err)?)
                }
                _ if require_labels => return Err(err(format!("missing label {:?}", &headers[i]))),
                _ => None,
            },
            None => None,
        };
        if !sink(Example {
            seqs: vec![(a, b)],
            label,
        })? {
            break;
        }
    }
    Ok(())
}
