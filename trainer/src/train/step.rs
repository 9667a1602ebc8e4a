//! One optimizer step over the micro-batches of a gradient-accumulation group, on one process
//! or as one rank of a data-parallel world.
//!
//! On N ranks each micro-batch is split into N shards balanced by length (`distributed::shard`), one per rank. Every rank
//! scales its shard's mean loss by its share of the micro-batch's examples (`n_r / N`), so the
//! sum of the ranks' gradients — one bucketed allreduce after the group's backward passes — is
//! the gradient one process computes on the whole micro-batch: N ranks with `batchSize` B
//! train as one process with batch N×B, uneven last batches and empty shards included.

use tch::Tensor;

use crate::Result;
use crate::data::Batch;
use crate::distributed::{GradientSync, ProcessGroup, ReduceOp};
use crate::model::MultiTaskModel;
use crate::optim::AdamW;
use crate::precision::Amp;

/// One micro-batch of a step, as this rank sees it.
#[derive(Debug)]
pub struct Micro {
    pub task: usize,
    /// This rank's shard, or None when it has no example of this micro-batch.
    pub batch: Option<Batch>,
    /// Examples of the whole micro-batch, over every rank.
    pub global_examples: usize,
    /// The task's `lossWeight`: the loss is multiplied by it before the backward pass.
    pub loss_weight: f64,
}

impl Micro {
    /// The whole micro-batch on one process.
    pub fn whole(task: usize, batch: Batch) -> Self {
        Self {
            task,
            global_examples: batch.examples,
            batch: Some(batch),
            loss_weight: 1.0,
        }
    }

    fn local_examples(&self) -> usize {
        self.batch.as_ref().map_or(0, |b| b.examples)
    }
}

/// What one micro-batch of a step did (over every rank).
#[derive(Debug, Clone)]
pub struct MicroResult {
    pub task: usize,
    /// Mean loss over the micro-batch's examples.
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
    /// Bytes of gradients allreduced (0 on one process).
    pub reduced_bytes: usize,
    /// Seconds spent in this step's allreduces (gradients, then losses and token counts),
    /// waiting for the slowest rank included; 0 on one process.
    pub allreduce_s: f64,
}

/// The settings of one step.
#[derive(Debug, Clone, Copy)]
pub struct StepSettings {
    pub lr: f64,
    pub max_grad_norm: f64,
    /// Dropout on (training); off makes runs comparable with another implementation.
    pub dropout: bool,
}

/// The data-parallel side of a step: the world and the gradients it sums.
pub struct Parallel<'a> {
    pub pg: &'a ProcessGroup,
    pub sync: &'a GradientSync,
}

/// Forward and backward of each micro-batch (dropout when `dropout`; each loss weighted by its
/// task's `lossWeight` and its share of the micro-batch, divided by the number of
/// micro-batches, and scaled when fp16 asks for it; the losses reported are unweighted), gradients summed across ranks, unscaled and clipped, one AdamW update of
/// every parameter that got a gradient on some rank, gradients reset to undefined.
pub fn train_step(
    model: &MultiTaskModel,
    optim: &mut AdamW,
    amp: &mut Amp,
    micro: &[Micro],
    settings: &StepSettings,
    parallel: Option<&Parallel<'_>>,
) -> Result<StepOutput> {
    let StepSettings {
        lr,
        max_grad_norm,
        dropout,
    } = *settings;
    let parts = micro.len().max(1) as f64;
    // Per micro-batch: this rank's share of the mean loss, and its real tokens.
    let mut shares = vec![0.0; micro.len() * 2];
    for (m, mb) in micro.iter().enumerate() {
        let Some(batch) = &mb.batch else { continue };
        let share = mb.local_examples() as f64 / mb.global_examples.max(1) as f64;
        let (loss, _) = amp.run(|| model.loss(mb.task, batch, dropout))?;
        let mut scaled = loss.f_mul_scalar(mb.loss_weight * share / parts)?;
        if let Some(scaler) = &amp.scaler {
            scaled = scaler.scale_loss(&scaled)?;
        }
        scaled.f_backward()?;
        shares[m] = loss.f_double_value(&[])? * share;
        shares[micro.len() + m] = batch.real_tokens as f64;
    }
    let mut reduced_bytes = 0;
    let mut allreduce_s = 0.0;
    if let Some(p) = parallel {
        let started = std::time::Instant::now();
        reduced_bytes = p.sync.sum(p.pg)?.bytes;
        p.pg.allreduce_f64(&mut shares, ReduceOp::Sum)?;
        allreduce_s = started.elapsed().as_secs_f64();
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
        micro: micro
            .iter()
            .enumerate()
            .map(|(m, mb)| MicroResult {
                task: mb.task,
                loss: shares[m],
                examples: mb.global_examples,
                real_tokens: shares[micro.len() + m] as usize,
            })
            .collect(),
        grad_norm,
        skipped,
        lr,
        reduced_bytes,
        allreduce_s,
    })
}
