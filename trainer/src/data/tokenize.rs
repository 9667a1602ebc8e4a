//! Tokenization with the model's own `tokenizer.json` (HuggingFace `tokenizers`).

use std::path::Path;

use tokenizers::{
    EncodeInput, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use super::Example;
use crate::{Error, Result};

/// One tokenized sequence (or sentence pair).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedExample {
    pub seqs: Vec<Encoded>,
    pub label: Option<f64>,
}

/// Encodes sentence pairs truncated longest-first to `max_length`, unpadded (batches pad).
pub struct TextEncoder {
    tokenizer: Tokenizer,
    path: String,
    zero_type_ids: bool,
}

impl TextEncoder {
    /// `zero_type_ids`: models with one token type (RoBERTa) get all-zero segment ids.
    pub fn load(path: &Path, max_length: usize, zero_type_ids: bool) -> Result<Self> {
        let shown = path.display().to_string();
        let terr = |e: tokenizers::Error| Error::Tokenizer {
            path: shown.clone(),
            message: e.to_string(),
        };
        let mut tokenizer = Tokenizer::from_file(path).map_err(terr)?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(terr)?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            path: shown,
            zero_type_ids,
        })
    }

    /// Tokens the tokenizer can produce, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn encode(&self, examples: &[Example]) -> Result<Vec<TokenizedExample>> {
        let inputs: Vec<EncodeInput> = examples
            .iter()
            .flat_map(|e| e.seqs.iter())
            .map(|(a, b)| match b {
                Some(b) => EncodeInput::Dual(a.as_str().into(), b.as_str().into()),
                None => EncodeInput::Single(a.as_str().into()),
            })
            .collect();
        let encodings =
            self.tokenizer
                .encode_batch(inputs, true)
                .map_err(|e| Error::Tokenizer {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?;
        let mut it = encodings.into_iter();
        Ok(examples
            .iter()
            .map(|e| TokenizedExample {
                seqs: it
                    .by_ref()
                    .take(e.seqs.len())
                    .map(|enc| Encoded {
                        ids: enc.get_ids().to_vec(),
                        type_ids: if self.zero_type_ids {
                            vec![0; enc.get_ids().len()]
                        } else {
                            enc.get_type_ids().iter().map(|&t| t as u8).collect()
                        },
                    })
                    .collect(),
                label: e.label,
            })
            .collect())
    }
}
