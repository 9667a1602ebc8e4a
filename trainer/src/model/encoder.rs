//! BERT / RoBERTa encoder with HuggingFace parameter names
//! (`{bert,roberta}.embeddings.*`, `.encoder.layer.N.*`, `.pooler.dense.*`).
//!
//! Padding-free: every per-token operation (the embeddings, their LayerNorm and dropout, the
//! linear layers, LayerNorm, dropout and the FFN of every layer) runs on the real tokens
//! only, one row each; only attention sees the padded (batch, seq) layout. The last layer
//! goes further: past its keys and values it computes the first token of each sequence only,
//! the one the heads read. Every operation is a fallible tch call, so a libtorch error
//! (a CUDA out-of-memory included) comes back as an error instead of a panic.

use tch::nn;
use tch::{Kind, TchError, Tensor};

use crate::config::{Activation, ModelConfig};

type Result<T> = std::result::Result<T, TchError>;

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

/// `x @ w.T + b`, fallibly.
pub(crate) fn apply_linear(l: &nn::Linear, x: &Tensor) -> Result<Tensor> {
    x.f_linear(&l.ws, l.bs.as_ref())
}

/// LayerNorm over the last dimension, HF's `weight`/`bias` names.
#[derive(Debug)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
    dim: i64,
    eps: f64,
}

fn layer_norm(p: nn::Path, dim: i64, eps: f64) -> Norm {
    Norm {
        weight: p.var("weight", &[dim], nn::Init::Const(1.0)),
        bias: p.var("bias", &[dim], nn::Init::Const(0.0)),
        dim,
        eps,
    }
}

fn apply_norm(n: &Norm, x: &Tensor) -> Result<Tensor> {
    x.f_layer_norm([n.dim], Some(&n.weight), Some(&n.bias), n.eps, true)
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

fn lookup(e: &nn::Embedding, ids: &Tensor) -> Result<Tensor> {
    Tensor::f_embedding(&e.ws, ids, -1, false, false)
}

#[derive(Debug)]
struct Embeddings {
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    norm: Norm,
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

    /// Embeddings of the real tokens: (real, h).
    fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        pack: &Packing,
        train: bool,
    ) -> Result<Tensor> {
        let positions = if self.roberta {
            // RoBERTa numbers real tokens from pad+1 and gives padding the pad position.
            let mask = input_ids.f_ne(self.pad)?.f_to_kind(Kind::Int64)?;
            mask.f_cumsum(1, Kind::Int64)?
                .f_mul(&mask)?
                .f_add_scalar(self.pad)?
        } else {
            let seq = input_ids.size()[1];
            Tensor::f_arange(seq, (Kind::Int64, input_ids.device()))?
                .f_unsqueeze(0)?
                .f_expand_as(input_ids)?
        };
        let ids = pack.pack_ids(input_ids)?;
        let types = pack.pack_ids(token_type_ids)?;
        let positions = pack.pack_ids(&positions)?;
        let x = lookup(&self.word, &ids)?
            .f_add(&lookup(&self.token_type, &types)?)?
            .f_add(&lookup(&self.position, &positions)?)?;
        apply_norm(&self.norm, &x)?.f_dropout(self.dropout, train)
    }
}

#[derive(Debug)]
struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    attn_norm: Norm,
    intermediate: nn::Linear,
    out: nn::Linear,
    out_norm: Norm,
    heads: i64,
    act: Activation,
    attn_dropout: f64,
    dropout: f64,
}

/// Query, key and value weights of one layer concatenated for one matmul (HF keeps them as
/// separate parameters): (3h, h) and (3h,) for the layers that compute every token, (2h, h)
/// and (2h,) of key and value for the last.
pub struct Joined {
    weight: Tensor,
    bias: Tensor,
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

    /// The joined projection weights this layer uses: query, key and value, or key and
    /// value only for the last layer (`first_only`).
    fn joined(&self, first_only: bool) -> Result<Joined> {
        let parts: &[&nn::Linear] = if first_only {
            &[&self.key, &self.value]
        } else {
            &[&self.query, &self.key, &self.value]
        };
        let weights: Vec<&Tensor> = parts.iter().map(|l| &l.ws).collect();
        let biases = parts
            .iter()
            .map(|l| {
                l.bs.as_ref()
                    .ok_or_else(|| TchError::Torch("attention projection without bias".into()))
            })
            .collect::<Result<Vec<&Tensor>>>()?;
        Ok(Joined {
            weight: Tensor::f_cat(&weights, 0)?,
            bias: Tensor::f_cat(&biases, 0)?,
        })
    }

    /// `x`: the hidden states of the real tokens, one row each (see [`Packing`]). With
    /// `first_only` (the last layer) only the first token of each sequence, the one the heads
    /// read, is computed past the keys and values: (batch, h) instead of (real, h).
    fn forward(
        &self,
        x: &Tensor,
        joined: &Joined,
        pack: &Packing,
        train: bool,
        first_only: bool,
    ) -> Result<Tensor> {
        let h = x.size()[1];
        let (b, s, heads) = (pack.batch, pack.seq, self.heads);
        let d = h / heads;
        let p = if train { self.attn_dropout } else { 0.0 };
        let attend = |q: &Tensor, k: &Tensor, v: &Tensor, rows: i64| -> Result<Tensor> {
            Tensor::f_scaled_dot_product_attention(
                q,
                k,
                v,
                Some(&pack.attention),
                p,
                false,
                None,
                false,
            )?
            .f_transpose(1, 2)?
            .f_reshape([rows, h])
        };
        let projected = x.f_linear(&joined.weight, Some(&joined.bias))?;
        let (ctx, residual) = if first_only {
            // Key and value of every real token; the query of first tokens only.
            let kv = pack
                .pad(&projected)?
                .f_view([b, s, 2, heads, d])?
                .f_permute([2, 0, 3, 1, 4])?;
            let first = pack.first(x)?;
            let q = apply_linear(&self.query, &first)?
                .f_view([b, 1, heads, d])?
                .f_transpose(1, 2)?;
            (attend(&q, &kv.f_get(0)?, &kv.f_get(1)?, b)?, first)
        } else {
            let qkv = pack
                .pad(&projected)?
                .f_view([b, s, 3, heads, d])?
                .f_permute([2, 0, 3, 1, 4])?;
            let ctx = attend(&qkv.f_get(0)?, &qkv.f_get(1)?, &qkv.f_get(2)?, b * s)?;
            (pack.pack(&ctx)?, x.shallow_clone())
        };
        let attended = apply_linear(&self.attn_out, &ctx)?
            .f_dropout(self.dropout, train)?
            .f_add(&residual)?;
        let a = apply_norm(&self.attn_norm, &attended)?;
        let i = self.act.apply(&apply_linear(&self.intermediate, &a)?)?;
        let out = apply_linear(&self.out, &i)?
            .f_dropout(self.dropout, train)?
            .f_add(&a)?;
        apply_norm(&self.out_norm, &out)
    }
}

/// Where the real tokens of a padded (batch, seq) layout are, so that per-token work runs on
/// them only and attention gets them back in the padded layout.
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
    fn new(attention_mask: &Tensor) -> Result<Self> {
        let size = attention_mask.size();
        let (batch, seq) = (size[0], size[1]);
        let real = attention_mask.f_ne(0)?;
        let attention = real.f_unsqueeze(1)?.f_unsqueeze(1)?;
        let flat = real.f_reshape([-1])?;
        let count = flat.f_sum(Kind::Int64)?.f_int64_value(&[])?;
        let (index, inverse) = if count == batch * seq {
            (None, None)
        } else {
            let index = flat.f_nonzero()?.f_squeeze_dim(1)?;
            // Real tokens count 0.. in order; padding points one past the last real row.
            let order = flat
                .f_to_kind(Kind::Int64)?
                .f_cumsum(0, Kind::Int64)?
                .f_sub_scalar(1)?;
            let inverse =
                order.f_where_self(&flat, &Tensor::from(count).to_device(flat.device()))?;
            (Some(index), Some(inverse))
        };
        let first_rows = match &inverse {
            Some(inv) => inv.f_view([batch, seq])?.f_select(1, 0)?,
            None => Tensor::f_arange_start_step(0, batch * seq, seq, (Kind::Int64, flat.device()))?,
        };
        Ok(Self {
            batch,
            seq,
            index,
            inverse,
            attention,
            first_rows,
        })
    }

    /// (batch, seq) ids → (real,).
    fn pack_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let flat = ids.f_reshape([-1])?;
        match &self.index {
            Some(i) => flat.f_index_select(0, i),
            None => Ok(flat),
        }
    }

    /// (batch * seq, h) → (real, h).
    fn pack(&self, x: &Tensor) -> Result<Tensor> {
        match &self.index {
            Some(i) => x.f_index_select(0, i),
            None => Ok(x.shallow_clone()),
        }
    }

    /// (real, h) → (batch * seq, h), zeros at padding.
    fn pad(&self, x: &Tensor) -> Result<Tensor> {
        match &self.inverse {
            Some(inv) => {
                let zero = x.f_new_zeros([1, x.size()[1]], (x.kind(), x.device()))?;
                Tensor::f_cat(&[x, &zero], 0)?.f_index_select(0, inv)
            }
            None => Ok(x.shallow_clone()),
        }
    }

    /// The first token of every sequence, from (real, h): (batch, h).
    fn first(&self, x: &Tensor) -> Result<Tensor> {
        x.f_index_select(0, &self.first_rows)
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

/// Every layer's joined projection weights, built once for many forward passes that do not
/// train (evaluation, prediction): the weights do not change between them.
pub struct Frozen {
    joined: Vec<Joined>,
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

    fn last(&self) -> Option<usize> {
        self.layers.len().checked_sub(1)
    }

    /// The joined weights of every layer, without gradient tracking.
    pub fn frozen(&self) -> Result<Frozen> {
        let last = self.last();
        tch::no_grad(|| {
            Ok(Frozen {
                joined: self
                    .layers
                    .iter()
                    .enumerate()
                    .map(|(i, l)| l.joined(Some(i) == last))
                    .collect::<Result<_>>()?,
            })
        })
    }

    /// `input_ids`, `token_type_ids`: (n, seq) int64; `attention_mask`: (n, seq), 1 for real
    /// tokens. `frozen`: weights joined by [`Encoder::frozen`] (inference), or None to join
    /// them in this pass (training: gradients flow through the join).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        pool: bool,
        train: bool,
        frozen: Option<&Frozen>,
    ) -> Result<EncoderOutput> {
        let pack = Packing::new(attention_mask)?;
        let mut x = self
            .embeddings
            .forward(input_ids, token_type_ids, &pack, train)?;
        let last = self.last();
        for (i, layer) in self.layers.iter().enumerate() {
            let first_only = Some(i) == last;
            let x_next = match frozen {
                Some(f) => layer.forward(&x, &f.joined[i], &pack, train, first_only)?,
                None => {
                    let joined = layer.joined(first_only)?;
                    layer.forward(&x, &joined, &pack, train, first_only)?
                }
            };
            x = x_next;
        }
        // The last layer already returned first tokens only.
        let first = if last.is_some() { x } else { pack.first(&x)? };
        let pooled = if pool {
            Some(apply_linear(&self.pooler, &first)?.f_tanh()?)
        } else {
            None
        };
        Ok(EncoderOutput { first, pooled })
    }
}
