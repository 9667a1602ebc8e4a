//! `mtl-trainer`: one shared HuggingFace encoder (BERT or RoBERTa) fine-tuned jointly on
//! several tasks, each with its own head, on libtorch through tch.
//!
//! Where things live: `model/` (encoder, heads, the multi-task model, HF weight and file
//! names), `assets` (a model directory made local), `data/` (file readers, tokenization,
//! batching), `sampling` (which task each step trains), `optim` (AdamW and the LR schedule),
//! `precision` (devices, autocast, loss scaling), `metrics` and `eval`, `io` (synchronous
//! storage and JSON files), `state` (`trainer_state.json`: where a run stands, its resume
//! fingerprint, early stopping's count), `checkpoint` (layout, save and commit, resume,
//! loading one for inference), `train/` (the `Trainer` and its loop), `predict` and `export`
//! (a standalone HF model per task), `aten` (the ATen entry points tch does not expose),
//! `distributed` (data parallel on torch.distributed's c10d), `vertex` (what Vertex AI's
//! environment asks for: the model directory, a tuning trial's checkpoints and its hypertune
//! reports).
//!
//! Files import downwards only, with no circle: `error`, `config`, `io`, `aten`,
//! `precision`, `optim`, `state`, `distributed`, `data` and `model` at the bottom; `assets`,
//! `eval` and `checkpoint` on them; `predict` and `export` on `checkpoint`; `train/` on all
//! of them. Inside a folder, a file imports its siblings, never its `mod.rs`.

pub mod assets;
mod aten;
pub mod checkpoint;
pub mod config;
pub mod console;
pub mod data;
pub mod distributed;
pub mod error;
pub mod eval;
pub mod export;
pub mod io;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod precision;
pub mod predict;
pub mod sampling;
pub mod state;
pub mod train;
pub mod vertex;

pub use error::{Error, Result};
