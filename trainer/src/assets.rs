//! A model directory made local: `config.json`, `model.safetensors`, `tokenizer.json` and the
//! tokenizer's side files, from a directory or a gs:// prefix.

use std::path::{Path, PathBuf};

use mtl_storage::join;

use crate::config::ModelConfig;
use crate::data::TextEncoder;
use crate::io::Storage;
use crate::model::{CONFIG_FILE, MODEL_FILE, TOKENIZER_EXTRAS, TOKENIZER_FILE};
use crate::{Error, Result};

/// A pretrained (or checkpointed) model directory made local.
pub struct ModelAssets {
    pub dir: PathBuf,
}

impl ModelAssets {
    /// Fetches config.json, model.safetensors, tokenizer.json (and tokenizer side files when
    /// present) from a directory or gs:// prefix.
    pub fn fetch(store: &Storage, uri: &str, cache: &Path) -> Result<Self> {
        let mut dir = None;
        for name in [CONFIG_FILE, TOKENIZER_FILE, MODEL_FILE] {
            let missing = || {
                Error::invalid_input(
                    join(uri, name),
                    "not found: spec.model.pretrained must hold config.json, model.safetensors and tokenizer.json",
                )
            };
            let path = store.fetch(&join(uri, name), cache).map_err(|e| match e {
                Error::Storage(s) if s.is_not_found() => missing(),
                e => e,
            })?;
            if !path.is_file() {
                return Err(missing());
            }
            dir = path.parent().map(Path::to_path_buf);
        }
        store.fetch_if_present(uri, &TOKENIZER_EXTRAS, cache)?;
        let dir = dir.ok_or_else(|| Error::file(uri, "empty model location"))?;
        Ok(Self { dir })
    }

    pub fn config(&self) -> Result<ModelConfig> {
        ModelConfig::load(&self.dir.join(CONFIG_FILE))
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_FILE)
    }

    /// The tokenizer, truncating to `max_length`; its vocabulary must fit the model's.
    pub fn encoder(&self, config: &ModelConfig, max_length: usize) -> Result<TextEncoder> {
        let path = self.dir.join(TOKENIZER_FILE);
        let encoder = TextEncoder::load(&path, max_length, config.type_vocab_size <= 1)?;
        let vocab = encoder.vocab_size();
        if vocab as i64 > config.vocab_size {
            return Err(Error::invalid_input(
                path.display(),
                format!(
                    "the tokenizer has {vocab} tokens but config.json's vocab_size is {}: ids past it have no embedding (a tokenizer from another model?)",
                    config.vocab_size
                ),
            ));
        }
        Ok(encoder)
    }

    /// Copies the config, tokenizer and tokenizer side files into `dir`.
    pub fn copy_to(&self, dir: &Path) -> Result<()> {
        self.copy_files(dir, &[CONFIG_FILE])?;
        self.copy_to_except_config(dir)
    }

    /// Copies the tokenizer and its side files into `dir`.
    pub fn copy_to_except_config(&self, dir: &Path) -> Result<()> {
        self.copy_files(dir, &[TOKENIZER_FILE])?;
        self.copy_files(dir, &TOKENIZER_EXTRAS)
    }

    fn copy_files(&self, dir: &Path, names: &[&str]) -> Result<()> {
        for name in names {
            let src = self.dir.join(name);
            let dst = dir.join(name);
            if src.exists() && src != dst {
                std::fs::copy(&src, &dst).map_err(Error::io(&dst))?;
            }
        }
        Ok(())
    }
}
