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

/// `hidden_act` of config.json: every parameter-free activation of transformers' `ACT2FN`
/// (`prelu` and `xielu` carry weights of their own and are rejected when the config is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU (erf).
    Gelu,
    /// `gelu_python`: the same function written with erf.
    GeluPython,
    /// `gelu_10`: exact GELU clipped to [-10, 10].
    #[serde(rename = "gelu_10")]
    Gelu10,
    /// Tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_python_tanh`,
    /// `gelu_accurate`: one formula, four spellings).
    #[serde(
        alias = "gelu_pytorch_tanh",
        alias = "gelu_python_tanh",
        alias = "gelu_accurate"
    )]
    GeluNew,
    /// `gelu_fast`: 0.5x(1 + tanh(0.7978845608 x (1 + 0.044715 x²))).
    GeluFast,
    /// `quick_gelu`: x·sigmoid(1.702x).
    QuickGelu,
    Hardswish,
    /// MEGA's Laplace function: 0.5(1 + erf((x − 0.707107) / (0.282095·√2))).
    Laplace,
    /// Negative slope 0.01 (torch's default).
    LeakyRelu,
    /// The identity.
    Linear,
    Mish,
    Relu,
    /// relu(x)².
    Relu2,
    Relu6,
    Sigmoid,
    #[serde(alias = "swish")]
    Silu,
    /// sqrt(softplus(x)).
    Sqrtsoftplus,
    Tanh,
}

impl Activation {
    pub fn apply(self, x: &tch::Tensor) -> Result<tch::Tensor, tch::TchError> {
        use std::f64::consts::SQRT_2;
        Ok(match self {
            Activation::Gelu | Activation::GeluPython => x.f_gelu("none")?,
            Activation::Gelu10 => x.f_gelu("none")?.f_clamp(-10.0, 10.0)?,
            Activation::GeluNew => x.f_gelu("tanh")?,
            Activation::GeluFast => {
                let inner = x
                    .f_mul_scalar(0.797_884_560_8)?
                    .f_mul(&x.f_mul(x)?.f_mul_scalar(0.044_715)?.f_add_scalar(1.0)?)?;
                x.f_mul_scalar(0.5)?
                    .f_mul(&inner.f_tanh()?.f_add_scalar(1.0)?)?
            }
            Activation::QuickGelu => x.f_mul(&x.f_mul_scalar(1.702)?.f_sigmoid()?)?,
            Activation::Hardswish => x.f_hardswish()?,
            // MEGA's constants (HF's LaplaceActivation), not 1/√2.
            #[allow(clippy::approx_constant)]
            Activation::Laplace => x
                .f_sub_scalar(0.707_107)?
                .f_div_scalar(0.282_095 * SQRT_2)?
                .f_erf()?
                .f_add_scalar(1.0)?
                .f_mul_scalar(0.5)?,
            Activation::LeakyRelu => x.f_leaky_relu()?,
            Activation::Linear => x.shallow_clone(),
            Activation::Mish => x.f_mish()?,
            Activation::Relu => x.f_relu()?,
            Activation::Relu2 => x.f_relu()?.f_square()?,
            Activation::Relu6 => x.f_relu6()?,
            Activation::Sigmoid => x.f_sigmoid()?,
            Activation::Silu => x.f_silu()?,
            Activation::Sqrtsoftplus => x.f_softplus()?.f_sqrt()?,
            Activation::Tanh => x.f_tanh()?,
        })
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
        let mut de = serde_json::Deserializer::from_str(text);
        let config: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let message = if field == "." || field.is_empty() {
                format!("invalid config.json: {}", e.inner())
            } else {
                format!("invalid config.json: {field}: {}", e.inner())
            };
            Error::invalid_input(path, message)
        })?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        Self::from_json(&path.display().to_string(), &text)
    }

    fn validate(&self, path: &str) -> Result<()> {
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::invalid_input(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value < 1 {
                return Err(Error::invalid_input(
                    path,
                    format!("{field} {value} must be at least 1"),
                ));
            }
        }
        if let Some(p) = &self.position_embedding_type
            && p != "absolute"
        {
            return Err(Error::invalid_input(
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

    /// Dropout before a head (HF: `classifier_dropout`, else `hidden_dropout_prob`), except
    /// RoBERTa's multiple-choice head, which HF gives `hidden_dropout_prob` always.
    pub fn head_dropout(&self, multiple_choice: bool) -> f64 {
        if multiple_choice && self.model_type.is_roberta() {
            self.hidden_dropout_prob
        } else {
            self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
        }
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
        let err = ModelConfig::from_json(
            "c.json",
            r#"{"model_type":"bert","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
                "num_attention_heads":2,"intermediate_size":8,"max_position_embeddings":8,
                "hidden_act":"prelu"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("hidden_act") && err.contains("prelu"), "{err}");
    }

    #[test]
    fn every_parameter_free_hf_activation_is_read() {
        for name in [
            "gelu",
            "gelu_10",
            "gelu_fast",
            "gelu_new",
            "gelu_python",
            "gelu_pytorch_tanh",
            "gelu_python_tanh",
            "gelu_accurate",
            "hardswish",
            "laplace",
            "leaky_relu",
            "linear",
            "mish",
            "quick_gelu",
            "relu",
            "relu2",
            "relu6",
            "sigmoid",
            "silu",
            "sqrtsoftplus",
            "swish",
            "tanh",
        ] {
            let a: Activation = serde_json::from_str(&format!("{name:?}")).unwrap();
            let x = tch::Tensor::from_slice(&[-2.0f32, 0.5, 3.0]);
            assert_eq!(a.apply(&x).unwrap().size(), [3], "{name}");
        }
    }
}
