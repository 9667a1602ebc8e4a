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

    /// `x`: the hidden states of the real tokens, one row each (see [`Packing`]).
    fn forward(&self, x: &Tensor, pack: &Packing, train: bool) -> Tensor {
        let h = x.size()[1];
        let (b, s, heads) = (pack.batch, pack.seq, self.heads);
        // One matmul for query, key and value; HF keeps three weights, so they are joined here.
        let w = Tensor::cat(&[&self.query.ws, &self.key.ws, &self.value.ws], 0);
        let bias = [&self.query.bs, &self.key.bs, &self.value.bs]
            .into_iter()
            .map(|b| b.as_ref().map(Tensor::shallow_clone))
            .collect::<Option<Vec<_>>>()
            .map(|bs| Tensor::cat(&bs, 0));
        let qkv = pack
            .pad(&x.linear(&w, bias.as_ref()))
            .view([b, s, 3, heads, h / heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let p = if train { self.attn_dropout } else { 0.0 };
        let ctx = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(&pack.attention),
            p,
            false,
            None,
            false,
        )
        .transpose(1, 2)
        .reshape([b * s, h]);
        let a = self.attn_norm.forward(
            &(self
                .attn_out
                .forward(&pack.pack(&ctx))
                .dropout(self.dropout, train)
                + x),
        );
        let i = self.act.apply(&self.intermediate.forward(&a));
        self.out_norm
            .forward(&(self.out.forward(&i).dropout(self.dropout, train) + a))
    }
}

/// Padding-free layers: every per-token operation (the linear layers, LayerNorm, dropout, the
/// FFN) runs on the real tokens only, one row each; only attention sees the padded
/// (batch, seq) layout. A batch whose sequences differ in length wastes no FLOPs on padding
/// outside attention, where HF's padded layout computes every position.
struct Packing {
    batch: i64,
    seq: i64,
    /// Flat (batch * seq) positions of the real tokens, when there is padding.
    index: Option<Tensor>,
    /// For each flat position, its row among the real tokens, or `real` (a zero row) for
    /// padding.
    inverse: Option<Tensor>,
    /// bool (batch, 1, 1, seq), true where a token may be attended to.
    attention: Tensor,
}

impl Packing {
    fn new(attention_mask: &Tensor) -> Self {
        let size = attention_mask.size();
        let (batch, seq) = (size[0], size[1]);
        let real = attention_mask.ne(0);
        let attention = real.unsqueeze(1).unsqueeze(1);
        let flat = real.reshape([-1]);
        let count = flat.sum(Kind::Int64).int64_value(&[]);
        let (index, inverse) = if count == batch * seq {
            (None, None)
        } else {
            let index = flat.nonzero().squeeze_dim(1);
            // Real tokens count 0.. in order; padding points one past the last real row.
            let order = flat.to_kind(Kind::Int64).cumsum(0, Kind::Int64) - 1;
            let inverse = order.where_self(&flat, &Tensor::from(count).to_device(flat.device()));
            (Some(index), Some(inverse))
        };
        Self {
            batch,
            seq,
            index,
            inverse,
            attention,
        }
    }

    /// (batch * seq, h) → (real, h).
    fn pack(&self, x: &Tensor) -> Tensor {
        match &self.index {
            Some(i) => x.index_select(0, i),
            None => x.shallow_clone(),
        }
    }

    /// (real, h) → (batch * seq, h), zeros at padding.
    fn pad(&self, x: &Tensor) -> Tensor {
        match &self.inverse {
            Some(inv) => {
                let zero = x.new_zeros([1, x.size()[1]], (x.kind(), x.device()));
                Tensor::cat(&[x, &zero], 0).index_select(0, inv)
            }
            None => x.shallow_clone(),
        }
    }

    /// The first token of every sequence, from (real, h): (batch, h).
    fn first(&self, x: &Tensor) -> Tensor {
        self.pad(x).view([self.batch, self.seq, -1]).select(1, 0)
    }
}

/// The shared encoder: embeddings, transformer layers and the pooler.
#[derive(Debug)]
pub struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: nn::Linear,
}

/// Encoder outputs: the first token's hidden state (what the heads read), and its pooled form.
pub struct EncoderOutput {
    /// (n, hidden).
    pub first: Tensor,
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
        let pack = Packing::new(attention_mask);
        let x = self.embeddings.forward(input_ids, token_type_ids, train);
        let h = x.size()[2];
        let mut x = pack.pack(&x.view([-1, h]));
        for layer in &self.layers {
            x = layer.forward(&x, &pack, train);
        }
        let first = pack.first(&x);
        let pooled = pool.then(|| self.pooler.forward(&first).tanh());
        EncoderOutput { first, pooled }
    }
}
