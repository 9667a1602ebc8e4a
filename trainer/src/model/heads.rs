//! Task heads with HuggingFace's structure and parameter names.
//!
//! | task type | BERT (`Bert*`)                         | RoBERTa (`Roberta*`)                                   |
//! |-----------|----------------------------------------|--------------------------------------------------------|
//! | regression / classification | pooled → dropout → `classifier` | first token → dropout → `classifier.dense` → tanh → dropout → `classifier.out_proj` |
//! | multiple choice | pooled → dropout → `classifier` (1 output) | pooled → dropout → `classifier` (1 output)         |

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::encoder::{EncoderOutput, linear};
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
            dropout: c.head_dropout(),
        }
    }

    /// Whether this head reads the pooler's output.
    pub fn uses_pooler(&self) -> bool {
        self.kind == HeadKind::Pooled
    }

    pub fn forward(&self, enc: &EncoderOutput, train: bool) -> Tensor {
        match (&self.dense, &enc.pooled) {
            (Some(dense), _) => {
                let x = enc.first.dropout(self.dropout, train);
                let x = dense.forward(&x).tanh().dropout(self.dropout, train);
                self.out.forward(&x)
            }
            (None, Some(pooled)) => self.out.forward(&pooled.dropout(self.dropout, train)),
            // The model always pools for pooled heads; an unpooled call is a programming
            // error, answered with the first token rather than a panic.
            (None, None) => self.out.forward(&enc.first.dropout(self.dropout, train)),
        }
    }
}

/// Loss of one batch: MSE for regression (one output), cross-entropy otherwise.
pub fn loss(logits: &Tensor, labels: &Tensor, regression: bool) -> Tensor {
    if regression {
        logits
            .squeeze_dim(-1)
            .to_kind(Kind::Float)
            .mse_loss(&labels.to_kind(Kind::Float), tch::Reduction::Mean)
    } else {
        logits.to_kind(Kind::Float).cross_entropy_for_logits(labels)
    }
}
