//! Batches padded to the longest sequence in the batch (not to maxLength), and the training
//! batch each rank of a data-parallel world trains on.

use mtl_crds::TaskType;
use tch::{Device, Kind, TchError, Tensor};

use super::token_store::TokenStore;
use crate::distributed::shard::shard;

/// Model inputs for `examples` examples of `choices` sequences each, flattened to
/// (examples * choices, seq).
#[derive(Debug)]
pub struct Batch {
    pub input_ids: Tensor,
    pub token_type_ids: Tensor,
    pub attention_mask: Tensor,
    pub labels: Option<Tensor>,
    pub examples: usize,
    pub choices: usize,
    /// Non-padding tokens in the batch.
    pub real_tokens: usize,
    /// Tokens including padding.
    pub padded_tokens: usize,
}

/// Builds batches with the model's padding id.
#[derive(Debug, Clone, Copy)]
pub struct Batcher {
    pub pad_id: i64,
    pub regression: bool,
    pub device: Device,
    /// Pad every batch to this length instead of its longest sequence (benchmarks of the
    /// original's fixed padding).
    pub pad_to: Option<usize>,
}

impl Batcher {
    /// Batches for a head of `task_type` (regression labels are floats, others class
    /// indices), padded with `pad_id`, on `device`.
    pub fn for_head(pad_id: i64, task_type: Option<TaskType>, device: Device) -> Self {
        Self {
            pad_id,
            regression: task_type == Some(TaskType::Regression),
            device,
            pad_to: None,
        }
    }

    /// This rank's part of a training micro-batch of `examples` of `store`: all of them on
    /// one process; on several ranks the shard `distributed::shard` deals `rank` of `ranks`
    /// (balanced by length). None when the shard is empty (a short last batch).
    pub fn training_batch(
        &self,
        store: &TokenStore,
        examples: &[usize],
        rank: usize,
        ranks: usize,
    ) -> Result<Option<Batch>, TchError> {
        let mine: Vec<usize> = if ranks > 1 {
            let lengths: Vec<usize> = examples
                .iter()
                .map(|&i| {
                    (0..store.choices())
                        .map(|j| store.sequence(i, j).len())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            shard(&lengths, rank, ranks)
                .into_iter()
                .map(|k| examples[k])
                .collect()
        } else {
            examples.to_vec()
        };
        if mine.is_empty() {
            return Ok(None);
        }
        self.collate(store, &mine).map(Some)
    }

    /// The batch of examples `indices` of `store`.
    pub fn collate(&self, store: &TokenStore, indices: &[usize]) -> Result<Batch, TchError> {
        let choices = store.choices();
        let seqs = || {
            indices
                .iter()
                .flat_map(move |&i| (0..choices).map(move |j| store.sequence(i, j)))
        };
        let longest = seqs().map(|s| s.len()).max().unwrap_or(1).max(1);
        let len = self.pad_to.map_or(longest, |p| p.max(longest));
        let rows = indices.len() * choices;
        let mut ids = vec![self.pad_id; rows * len];
        let mut types = vec![0i64; rows * len];
        let mut mask = vec![0i64; rows * len];
        let mut real = 0;
        for (r, seq) in seqs().enumerate() {
            let row = r * len;
            for (j, id) in seq.ids().enumerate() {
                ids[row + j] = i64::from(id);
                mask[row + j] = 1;
            }
            if let Some(t) = seq.types {
                for (j, &ty) in t.iter().enumerate() {
                    types[row + j] = i64::from(ty);
                }
            }
            real += seq.len();
        }
        let shape = [rows as i64, len as i64];
        let to = |v: &[i64]| {
            Tensor::f_from_slice(v)?
                .f_view(shape)?
                .f_to_device(self.device)
        };
        let labels = indices
            .iter()
            .map(|&i| store.label(i))
            .collect::<Option<Vec<f64>>>()
            .map(|l| {
                let kind = if self.regression {
                    Kind::Float
                } else {
                    Kind::Int64
                };
                Tensor::f_from_slice(&l)?
                    .f_to_kind(kind)?
                    .f_to_device(self.device)
            })
            .transpose()?;
        Ok(Batch {
            input_ids: to(&ids)?,
            token_type_ids: to(&types)?,
            attention_mask: to(&mask)?,
            labels,
            examples: indices.len(),
            choices,
            real_tokens: real,
            padded_tokens: rows * len,
        })
    }
}
