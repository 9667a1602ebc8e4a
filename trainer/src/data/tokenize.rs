//! Tokenization with the model's own `tokenizer.json` (HuggingFace `tokenizers`).

use std::path::Path;

use tokenizers::{
    EncodeInput, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use super::example::Example;
use super::token_store::TokenStoreWriter;
use crate::{Error, Result};

/// Encodes sentence pairs truncated longest-first to `max_length`, unpadded (batches pad).
#[derive(Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    path: String,
    zero_type_ids: bool,
    max_length: usize,
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
            max_length,
        })
    }

    /// The same tokenizer truncating to `max_length` instead.
    pub fn with_max_length(&self, max_length: usize) -> Result<Self> {
        let mut e = self.clone();
        e.tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|err| Error::Tokenizer {
                path: self.path.clone(),
                message: err.to_string(),
            })?;
        e.max_length = max_length;
        Ok(e)
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Whether batches carry segment ids (models with several token types).
    pub fn keeps_types(&self) -> bool {
        !self.zero_type_ids
    }

    /// Bytes a token id takes in a store: 2 when the vocabulary fits 16 bits, else 4.
    pub fn id_bytes(&self) -> u32 {
        if self.vocab_size() <= 1 << 16 { 2 } else { 4 }
    }

    /// Tokens the tokenizer can produce, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Tokenizes `examples` (both cores: the tokenizers crate encodes a batch in parallel)
    /// and appends them to `out`.
    pub fn encode_into(&self, examples: &[Example], out: &mut TokenStoreWriter) -> Result<()> {
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
        let mut it = encodings.iter();
        for e in examples {
            let seqs: Vec<_> = it.by_ref().take(e.seqs.len()).collect();
            out.push(
                seqs.iter().map(|enc| (enc.get_ids(), enc.get_type_ids())),
                e.label,
            )?;
        }
        Ok(())
    }
}
