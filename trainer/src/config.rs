//! HuggingFace `config.json` for BERT- and RoBERTa-family encoders.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelType {
    Bert,
    Roberta,
    XlmRoberta,
    Camembert,
}

impl ModelType {
    /// RoBERTa-style embeddings (positions offset by the padding index, no pooler in the
    /// sequence-classification head).
    pub fn is_roberta(self) -> bool {
        !matches!(self, ModelType::Bert)
    }

    /// Prefix of the encoder's tensor names in HF checkpoints (`bert.`, `roberta.`).
    pub fn prefix(self) -> &'static str {
        match self {
            ModelType::Bert => "bert",
            ModelType::Roberta | ModelType::Camembert => "roberta",
            ModelType::XlmRoberta => "roberta",
        }
    }

    /// HF class name stem: `Bert`, `Roberta`, `XLMRoberta`, `Camembert`.
    pub fn class_stem(self) -> &'static str {
        match self {
            ModelType::Bert => "Bert",
            ModelType::Roberta => "Roberta",
            ModelType::XlmRoberta => "XLMRoberta",
            ModelType::Camembert => "Camembert",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Gelu,
    GeluNew,
    #[serde(alias = "gelu_pytorch_tanh")]
    GeluFast,
    Relu,
    Silu,
    Tanh,
}

impl Activation {
    pub fn apply(self, x: &tch::Tensor) -> tch::Tensor {
        match self {
            Activation::Gelu => x.gelu("none"),
            Activation::GeluNew | Activation::GeluFast => x.gelu("tanh"),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
        }
    }
}

fn default_act() -> Activation {
    Activation::Gelu
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> i64 {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_init_range() -> f64 {
    0.02
}

/// The fields of `config.json` the encoder needs; read from the file, never hard-coded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelConfig {
    pub model_type: ModelType,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

impl ModelConfig {
    pub fn from_json(path: &str, text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text)
            .map_err(|e| Error::file(path, format!("invalid config.json: {e}")))?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        Self::from_json(&path.display().to_string(), &text)
    }

    fn validate(&self, path: &str) -> Result<()> {
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::file(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if let Some(p) = &self.position_embedding_type
            && p != "absolute"
        {
            return Err(Error::file(
                path,
                format!("position_embedding_type {p:?} is not supported (only \"absolute\")"),
            ));
        }
        Ok(())
    }

    pub fn pad_token_id(&self) -> i64 {
        self.pad_token_id
            .unwrap_or(if self.model_type.is_roberta() { 1 } else { 0 })
    }

    /// Dropout before each head (HF: classifier_dropout, else hidden_dropout_prob).
    pub fn head_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// Longest input the position embeddings allow.
    pub fn max_input_length(&self) -> i64 {
        if self.model_type.is_roberta() {
            self.max_position_embeddings - self.pad_token_id() - 1
        } else {
            self.max_position_embeddings
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_roberta_config_with_its_eps_and_padding() {
        let c = ModelConfig::from_json(
            "config.json",
            r#"{"model_type":"roberta","vocab_size":50265,"hidden_size":768,
                "num_hidden_layers":12,"num_attention_heads":12,"intermediate_size":3072,
                "hidden_act":"gelu","max_position_embeddings":514,"type_vocab_size":1,
                "layer_norm_eps":1e-05,"pad_token_id":1,"architectures":["RobertaForMaskedLM"]}"#,
        )
        .unwrap();
        assert_eq!(c.model_type, ModelType::Roberta);
        assert_eq!(c.layer_norm_eps, 1e-5);
        assert_eq!(c.pad_token_id(), 1);
        assert_eq!(c.max_input_length(), 512);
    }

    #[test]
    fn bad_config_names_the_file_and_field() {
        let err = ModelConfig::from_json("m/config.json", r#"{"model_type":"gpt2"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m/config.json") && err.contains("gpt2"),
            "{err}"
        );
        let err = ModelConfig::from_json(
            "c.json",
            r#"{"model_type":"bert","vocab_size":10,"hidden_size":10,"num_hidden_layers":1,
                "num_attention_heads":3,"intermediate_size":8,"max_position_embeddings":8}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a multiple"), "{err}");
    }
}
