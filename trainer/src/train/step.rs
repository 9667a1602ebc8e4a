//! One optimizer step over the micro-batches of a gradient-accumulation group.

use tch::Tensor;

use crate::Result;
use crate::data::Batch;
use crate::model::MultiTaskModel;
use crate::optim::AdamW;
use crate::precision::Amp;

/// What one micro-batch of a step did.
#[derive(Debug, Clone)]
pub struct MicroResult {
    pub task: usize,
    pub loss: f64,
    pub examples: usize,
    pub real_tokens: usize,
}

/// What one optimizer step did.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub micro: Vec<MicroResult>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The fp16 loss scaler found an inf or NaN: no parameter was updated.
    pub skipped: bool,
    pub lr: f64,
}

/// Forward and backward of each micro-batch `(task, batch)` (dropout when `dropout`; losses
/// divided by the number of micro-batches, and scaled when fp16 asks for it), gradients
/// unscaled and clipped, one AdamW update of every parameter that got a gradient, gradients
/// reset to undefined.
pub fn train_step(
    model: &MultiTaskModel,
    optim: &mut AdamW,
    amp: &mut Amp,
    micro: &[(usize, Batch)],
    lr: f64,
    max_grad_norm: f64,
    dropout: bool,
) -> Result<StepOutput> {
    let parts = micro.len().max(1) as f64;
    let mut results = Vec::with_capacity(micro.len());
    for (task, batch) in micro {
        let (loss, _) = amp.run(|| model.loss(*task, batch, dropout))?;
        let mut scaled = loss.f_div_scalar(parts)?;
        if let Some(scaler) = &amp.scaler {
            scaled = scaler.scale_loss(&scaled)?;
        }
        scaled.f_backward()?;
        results.push(MicroResult {
            task: *task,
            loss: loss.f_double_value(&[])?,
            examples: batch.examples,
            real_tokens: batch.real_tokens,
        });
    }
    let mut skipped = false;
    if let Some(scaler) = &mut amp.scaler {
        let grads: Vec<Tensor> = optim.with_grads().map(|(_, g)| g).collect();
        scaler.unscale(&grads)?;
        skipped = scaler.found_inf()?;
    }
    let grad_norm = optim.clip_grad_norm(max_grad_norm)?;
    if !skipped {
        optim.step(lr)?;
    }
    if let Some(scaler) = &mut amp.scaler {
        scaler.update()?;
    }
    optim.zero_grad()?;
    Ok(StepOutput {
        micro: results,
        grad_norm,
        skipped,
        lr,
    })
}
