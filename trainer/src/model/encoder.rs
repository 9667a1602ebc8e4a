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

    /// `x`: the hidden states of the real tokens, one row each (see [`Packing`]). With
    /// `first_only` (the last layer) only the first token of each sequence, the one the heads
    /// read, is computed past the keys and values: (batch, h) instead of (real, h).
    fn forward(&self, x: &Tensor, pack: &Packing, train: bool, first_only: bool) -> Tensor {
        let h = x.size()[1];
        let (b, s, heads) = (pack.batch, pack.seq, self.heads);
        let d = h / heads;
        let p = if train { self.attn_dropout } else { 0.0 };
        let attend = |q: &Tensor, k: &Tensor, v: &Tensor, rows: i64| {
            Tensor::scaled_dot_product_attention(
                q,
                k,
                v,
                Some(&pack.attention),
                p,
                false,
                None,
                false,
            )
            .transpose(1, 2)
            .reshape([rows, h])
        };
        let (ctx, residual) = if first_only {
            // One matmul for key and value of every real token; the query of first tokens only.
            let kv = pack
                .pad(&joined(x, &[&self.key, &self.value]))
                .view([b, s, 2, heads, d])
                .permute([2, 0, 3, 1, 4]);
            let first = pack.first(x);
            let q = self
                .query
                .forward(&first)
                .view([b, 1, heads, d])
                .transpose(1, 2);
            (attend(&q, &kv.get(0), &kv.get(1), b), first)
        } else {
            // One matmul for query, key and value.
            let qkv = pack
                .pad(&joined(x, &[&self.query, &self.key, &self.value]))
                .view([b, s, 3, heads, d])
                .permute([2, 0, 3, 1, 4]);
            let ctx = attend(&qkv.get(0), &qkv.get(1), &qkv.get(2), b * s);
            (pack.pack(&ctx), x.shallow_clone())
        };
        let a = self
            .attn_norm
            .forward(&(self.attn_out.forward(&ctx).dropout(self.dropout, train) + residual));
        let i = self.act.apply(&self.intermediate.forward(&a));
        self.out_norm
            .forward(&(self.out.forward(&i).dropout(self.dropout, train) + a))
    }
}

/// `x` through several linear layers of the same input size at once (HF keeps query, key and
/// value as separate weights; one matmul over their concatenation is faster).
fn joined(x: &Tensor, layers: &[&nn::Linear]) -> Tensor {
    let w = Tensor::cat(&layers.iter().map(|l| &l.ws).collect::<Vec<_>>(), 0);
    let bias = layers
        .iter()
        .map(|l| l.bs.as_ref().map(Tensor::shallow_clone))
        .collect::<Option<Vec<_>>>()
        .map(|bs| Tensor::cat(&bs, 0));
    x.linear(&w, bias.as_ref())
}

/// Padding-free layers: every per-token operation (the linear layers, LayerNorm, dropout, the
/// FFN) runs on the real tokens only, one row each; only attention sees the padded
/// (batch, seq) layout. A batch whose sequences differ in length wastes no FLOPs on padding
/// outside attention, where HF's padded layout computes every position. The last layer goes
/// further: past its keys and values it computes the first token of each sequence only.
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
    /// Row of each sequence's first token among the real tokens: (batch,).
    first_rows: Tensor,
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
        let first_rows = match &inverse {
            Some(inv) => inv.view([batch, seq]).select(1, 0),
            None => Tensor::arange_start_step(0, batch * seq, seq, (Kind::Int64, flat.device())),
        };
        Self {
            batch,
            seq,
            index,
            inverse,
            attention,
            first_rows,
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
        x.index_select(0, &self.first_rows)
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
        let last = self.layers.len().checked_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &pack, train, Some(i) == last);
        }
        // The last layer already returned first tokens only.
        let first = if last.is_some() { x } else { pack.first(&x) };
        let pooled = pool.then(|| self.pooler.forward(&first).tanh());
        EncoderOutput { first, pooled }
    }
}
