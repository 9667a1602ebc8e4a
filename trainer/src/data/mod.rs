//! Task data: readers for the supported file formats, tokenization, the token store and its
//! cache, and batching.
//!
//! A file is read record by record (`read.rs`, with a reader per format: `glue.rs`,
//! `jsonl.rs`) into [`Example`]s (`example.rs`: one or more sequences — a sentence or a
//! sentence pair, one per choice for multiple choice — and an optional label: a score, a
//! class index or a choice index); readers report the file and line of anything they cannot
//! use. Examples are tokenized a chunk at a time into a [`TokenStore`] (`store.rs`), cached
//! under a key of everything that decides its content (`cache.rs`); `tasks.rs` does this for
//! every file of a job; `batch.rs` pads a store's examples into model inputs, and builds
//! each rank's training batch.

mod batch;
pub mod cache;
mod example;
mod glue;
mod jsonl;
mod read;
mod tasks;
pub mod token_store;
mod tokenize;

pub use batch::{Batch, Batcher};
pub use example::Example;
pub use read::{for_each_example, read_examples};
pub use tasks::{Loader, TaskData, scratch_store, sha256_file};
pub use token_store::TokenStore;
pub use tokenize::TextEncoder;

#[cfg(test)]
mod tests;
