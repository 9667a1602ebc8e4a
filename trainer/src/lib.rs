//! `mtl-trainer`: one shared HuggingFace encoder (BERT or RoBERTa) fine-tuned jointly on
//! several tasks, each with its own head, on libtorch through tch.
//!
//! Where things live: `model/` (encoder, heads, the multi-task model and HF weight names),
//! `data/` (file readers, tokenization, batching), `sampling` (which task each step trains),
//! `optim` (AdamW and the LR schedule), `precision` (devices, autocast, loss scaling),
//! `metrics` and `eval`, `checkpoint` (layout, manifest, resume fingerprint), `train/` (the
//! `Trainer` and its loop), `predict` and `export` (a standalone HF model per task), `aten`
//! (the ATen entry points tch does not expose), `dist` (data parallel on torch.distributed's
//! c10d), `vertex` (what Vertex AI's environment asks for: the model directory, a tuning
//! trial's checkpoints and its hypertune reports).

pub mod assets;
mod aten;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dist;
pub mod error;
pub mod eval;
pub mod export;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod precision;
pub mod predict;
pub mod progress;
pub mod sampling;
pub mod train;
pub mod vertex;

pub use error::{Error, Result};
