//! BERT / RoBERTa encoder with HuggingFace parameter names
//! (`{bert,roberta}.embeddings.*`, `.encoder.layer.N.*`, `.pooler.dense.*`).

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::config::{Activation, ModelConfig};

pub(crate) fn linear(p: nn::Path, inp: i64, out: i64, std: f64) -> nn::Linear {
    nn::linear(
        p,
        inp,
        out,
        nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        },
    )
}

fn layer_norm(p: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![dim],
        nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
    )
}

fn embedding(p: nn::Path, n: i64, dim: i64, std: f64) -> nn::Embedding {
    nn::embedding(
        p,
        n,
        dim,
        nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            ..Default::default()
        },
    )
}

#[derive(Debug)]
struct Embeddings {
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    norm: nn::LayerNorm,
    dropout: f64,
    roberta: bool,
    pad: i64,
}

impl Embeddings {
    fn new(p: nn::Path, c: &ModelConfig) -> Self {
        let std = c.initializer_range;
        Self {
            word: embedding(&p / "word_embeddings", c.vocab_size, c.hidden_size, std),
            position: embedding(
                &p / "position_embeddings",
                c.max_position_embeddings,
                c.hidden_size,
                std,
            ),
            token_type: embedding(
                &p / "token_type_embeddings",
                c.type_vocab_size,
                c.hidden_size,
                std,
            ),
            norm: layer_norm(&p / "LayerNorm", c.hidden_size, c.layer_norm_eps),
            dropout: c.hidden_dropout_prob,
            roberta: c.model_type.is_roberta(),
            pad: c.pad_token_id(),
        }
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, train: bool) -> Tensor {
        let positions = if self.roberta {
            // RoBERTa numbers real tokens from pad+1 and gives padding the pad position.
            let mask = input_ids.ne(self.pad).to_kind(Kind::Int64);
            mask.cumsum(1, Kind::Int64) * &mask + self.pad
        } else {
            let seq = input_ids.size()[1];
            Tensor::arange(seq, (Kind::Int64, input_ids.device())).unsqueeze(0)
        };
        let x = self.word.forward(input_ids)
            + self.token_type.forward(token_type_ids)
            + self.position.forward(&positions);
        self.norm.forward(&x).dropout(self.dropout, train)
    }
}

#[derive(Debug)]
struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    attn_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    out: nn::Linear,
    out_norm: nn::LayerNorm,
    heads: i64,
    act: Activation,
    attn_dropout: f64,
    dropout: f64,
}

impl Layer {
    fn new(p: nn::Path, c: &ModelConfig) -> Self {
        let (h, i, std) = (c.hidden_size, c.intermediate_size, c.initializer_range);
        let attn = &p / "attention";
        let slf = &attn / "self";
        let ao = &attn / "output";
        Self {
            query: linear(&slf / "query", h, h, std),
            key: linear(&slf / "key", h, h, std),
            value: linear(&slf / "value", h, h, std),
            attn_out: linear(&ao / "dense", h, h, std),
            attn_norm: layer_norm(&ao / "LayerNorm", h, c.layer_norm_eps),
            intermediate: linear(&p / "intermediate" / "dense", h, i, std),
            out: linear(&p / "output" / "dense", i, h, std),
            out_norm: layer_norm(&p / "output" / "LayerNorm", h, c.layer_norm_eps),
            heads: c.num_attention_heads,
            act: c.hidden_act,
            attn_dropout: c.attention_probs_dropout_prob,
            dropout: c.hidden_dropout_prob,
        }
    }

    /// `mask`: bool (batch, 1, 1, seq), true where a token may be attended to.
    fn forward(&self, x: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let size = x.size();
        let (b, s, h) = (size[0], size[1], size[2]);
        let d = h / self.heads;
        let split = |t: Tensor| t.view([b, s, self.heads, d]).transpose(1, 2);
        let q = split(self.query.forward(x));
        let k = split(self.key.forward(x));
        let v = split(self.value.forward(x));
        let p = if train { self.attn_dropout } else { 0.0 };
        let ctx =
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), p, false, None, false)
                .transpose(1, 2)
                .contiguous()
                .view([b, s, h]);
        let a = self
            .attn_norm
            .forward(&(self.attn_out.forward(&ctx).dropout(self.dropout, train) + x));
        let i = self.act.apply(&self.intermediate.forward(&a));
        self.out_norm
            .forward(&(self.out.forward(&i).dropout(self.dropout, train) + a))
    }
}

/// The shared encoder: embeddings, transformer layers and the pooler.
#[derive(Debug)]
pub struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: nn::Linear,
}

/// Encoder outputs: every token's hidden state, and the pooled first token.
pub struct EncoderOutput {
    pub hidden: Tensor,
    pub pooled: Option<Tensor>,
}

impl Encoder {
    /// `p` is the encoder's root (`bert` or `roberta`).
    pub fn new(p: nn::Path, c: &ModelConfig) -> Self {
        let layer_root = &p / "encoder" / "layer";
        Self {
            embeddings: Embeddings::new(&p / "embeddings", c),
            layers: (0..c.num_hidden_layers)
                .map(|i| Layer::new(&layer_root / i, c))
                .collect(),
            pooler: linear(
                &p / "pooler" / "dense",
                c.hidden_size,
                c.hidden_size,
                c.initializer_range,
            ),
        }
    }

    /// `input_ids`, `token_type_ids`: (n, seq) int64; `attention_mask`: (n, seq), 1 for real tokens.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        pool: bool,
        train: bool,
    ) -> EncoderOutput {
        let mask = attention_mask.to_kind(Kind::Bool).unsqueeze(1).unsqueeze(1);
        let mut x = self.embeddings.forward(input_ids, token_type_ids, train);
        for layer in &self.layers {
            x = layer.forward(&x, &mask, train);
        }
        let pooled = pool.then(|| self.pooler.forward(&x.select(1, 0)).tanh());
        EncoderOutput { hidden: x, pooled }
    }
}
