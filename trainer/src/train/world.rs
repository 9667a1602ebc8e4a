//! One rank's membership of a data-parallel world: its process group and the gradient sum
//! over the model's parameters.

use tch::Tensor;

use crate::Result;
use crate::distributed::{DEFAULT_BUCKET_CAP_BYTES, GradientSync, ProcessGroup, broadcast_tensors};
use crate::model::MultiTaskModel;
use crate::optim::AdamW;

pub(super) struct World {
    pub pg: ProcessGroup,
    pub sync: GradientSync,
}

impl World {
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
