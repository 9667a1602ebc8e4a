//! One example before tokenization, and the label a file's raw value stands for.

use mtl_crds::{TaskSpec, TaskType};

/// One example before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// (text, optional pair text): one entry, or one per choice for multiple choice.
    pub seqs: Vec<(String, Option<String>)>,
    /// Regression score, class index or choice index.
    pub label: Option<f64>,
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
