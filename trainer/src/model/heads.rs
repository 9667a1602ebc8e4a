//! Task heads with HuggingFace's structure and parameter names.
//!
//! | task type | BERT (`Bert*`)                         | RoBERTa (`Roberta*`)                                   |
//! |-----------|----------------------------------------|--------------------------------------------------------|
//! | regression / classification | pooled → dropout → `classifier` | first token → dropout → `classifier.dense` → tanh → dropout → `classifier.out_proj` |
//! | multiple choice | pooled → dropout → `classifier` (1 output) | pooled → dropout → `classifier` (1 output)         |
//!
//! Dropout before a head is `classifier_dropout` (else `hidden_dropout_prob`), except for
//! `RobertaForMultipleChoice`, which uses `hidden_dropout_prob`.

use tch::nn;
use tch::{Kind, Reduction, TchError, Tensor};

use super::encoder::{EncoderOutput, apply_linear, linear};
use crate::config::ModelConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// `RobertaClassificationHead`: dense + tanh + out_proj on the first token.
    RobertaSequence,
    /// One linear layer on the pooled output.
    Pooled,
}

#[derive(Debug)]
pub struct Head {
    kind: HeadKind,
    dense: Option<nn::Linear>,
    out: nn::Linear,
    dropout: f64,
}

impl Head {
    /// `p` is the head's root; its tensors are named `classifier.*` below it.
    pub fn new(p: nn::Path, c: &ModelConfig, outputs: i64, multiple_choice: bool) -> Self {
        let kind = if c.model_type.is_roberta() && !multiple_choice {
            HeadKind::RobertaSequence
        } else {
            HeadKind::Pooled
        };
        let cls = &p / "classifier";
        let std = c.initializer_range;
        let (dense, out) = match kind {
            HeadKind::RobertaSequence => (
                Some(linear(&cls / "dense", c.hidden_size, c.hidden_size, std)),
                linear(&cls / "out_proj", c.hidden_size, outputs, std),
            ),
            HeadKind::Pooled => (None, linear(cls, c.hidden_size, outputs, std)),
        };
        Self {
            kind,
            dense,
            out,
            dropout: c.head_dropout(multiple_choice),
        }
    }

    /// Whether this head reads the pooler's output.
    pub fn uses_pooler(&self) -> bool {
        self.kind == HeadKind::Pooled
    }

    pub fn forward(&self, enc: &EncoderOutput, train: bool) -> Result<Tensor, TchError> {
        match (&self.dense, &enc.pooled) {
            (Some(dense), _) => {
                let x = enc.first.f_dropout(self.dropout, train)?;
                let x = apply_linear(dense, &x)?
                    .f_tanh()?
                    .f_dropout(self.dropout, train)?;
                apply_linear(&self.out, &x)
            }
            (None, Some(pooled)) => {
                apply_linear(&self.out, &pooled.f_dropout(self.dropout, train)?)
            }
            (None, None) => Err(TchError::Torch(
                "a pooled head was given an unpooled encoder output".into(),
            )),
        }
    }
}

/// Loss of one batch (float32 whatever the logits' type): MSE for regression (one output),
/// cross-entropy otherwise.
pub fn loss(logits: &Tensor, labels: &Tensor, regression: bool) -> Result<Tensor, TchError> {
    let logits = logits.f_to_kind(Kind::Float)?;
    if regression {
        logits
            .f_squeeze_dim(-1)?
            .f_mse_loss(&labels.f_to_kind(Kind::Float)?, Reduction::Mean)
    } else {
        logits
            .f_log_softmax(-1, Kind::Float)?
            .f_nll_loss::<&Tensor>(labels, None, Reduction::Mean, -100)
    }
}
