//! One rank's membership of a data-parallel world: its process group and the gradient sum
//! over the model's parameters.

use tch::Tensor;

use crate::distributed::{
    DEFAULT_BUCKET_CAP_BYTES, GradientSync, ProcessGroup, ReduceOp, broadcast_tensors,
};
use crate::model::MultiTaskModel;
use crate::optim::AdamW;
use crate::{Error, Result};

pub(super) struct World {
    pub pg: ProcessGroup,
    pub sync: GradientSync,
}

impl World {
    /// Every rank must go on from the same place: a rank that resumed from another checkpoint,
    /// or from none (an output directory that one node cannot see), would train other batches
    /// under another learning rate while rank 0's weights are broadcast over its own, and the
    /// world would drift apart silently until a collective timed out. Compared before
    /// anything is broadcast; every rank stops with the same error naming both positions.
    pub fn agree_on_resume(pg: &ProcessGroup, step: u64, micro: u64, uri: &str) -> Result<()> {
        let (s, m) = (step as f64, micro as f64);
        let mut v = [s, -s, m, -m];
        pg.allreduce_f64(&mut v, ReduceOp::Max)?;
        let (latest, earliest) = (v[0] as u64, (-v[1]) as u64);
        if latest != earliest || v[2] != -v[3] {
            return Err(Error::invalid_input(
                uri,
                format!(
                    "the data-parallel ranks did not resume from the same place: some at step \
                     {earliest}, some at step {latest} (rank {} at step {step}, micro-batch \
                     {micro}); every rank must read the same checkpoints: a gs:// \
                     checkpoints.uri, or one volume every node mounts at that path",
                    pg.rank()
                ),
            ));
        }
        Ok(())
    }

    /// Makes every rank start from rank 0's weights and optimizer state, and sets up the
    /// gradient sum over the parameters in one order on every rank.
    pub fn join(pg: ProcessGroup, model: &MultiTaskModel, optim: &AdamW) -> Result<Self> {
        let named = model.named_tensors();
        let state = optim.state_tensors();
        let all: Vec<&Tensor> = named.values().chain(state.iter().map(|(_, t)| t)).collect();
        tch::no_grad(|| broadcast_tensors(&pg, &all, DEFAULT_BUCKET_CAP_BYTES))?;
        let params: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let sync = GradientSync::new(&pg, &params, DEFAULT_BUCKET_CAP_BYTES)?;
        Ok(Self { pg, sync })
    }
}
