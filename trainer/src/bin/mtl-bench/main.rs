//! `mtl-bench`: the Rust side of `make bench` (bench/run.py drives it and the Python reference).
//!
//!   mtl-bench train --job bench.yaml --warmup 2 --steps 10 --out rust.json
//!   mtl-bench load --job bench.yaml --cache-dir cache --out load.json
//!   mtl-bench matmul --m 1024 --k 768 --n 3072 --out matmul.json
//!
//! The measurements themselves are in `bench.rs`.

mod bench;

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use mtl_trainer::io::write_json;
use mtl_trainer::job;
use tch::Kind;

use bench::TrainBench;

#[derive(Parser)]
#[command(
    name = "mtl-bench",
    version,
    about = "Training-step and matmul measurements"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// cpu, cuda, cuda:N, or auto (CUDA when available).
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    /// Intra-op CPU threads (libtorch's default when unset).
    #[arg(long, global = true)]
    threads: Option<i32>,
}

#[derive(Subcommand)]
enum Command {
    /// Time training steps of a job (its model, tasks, batch size, sampling and seed).
    Train {
        #[arg(long)]
        job: PathBuf,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Pad every batch to this length instead of the batch's longest sequence.
        #[arg(long)]
        pad_to: Option<usize>,
        /// Train without dropout (for comparing losses with another implementation).
        #[arg(long)]
        no_dropout: bool,
        /// Write the initial model (encoder and heads) as safetensors here.
        #[arg(long)]
        save_init: Option<PathBuf>,
        /// Token-store cache (a fresh directory measures tokenization).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Time reading and tokenizing a job's data into the token-store cache (or mapping it
    /// from there when the cache already holds it).
    Load {
        #[arg(long)]
        job: PathBuf,
        #[arg(long)]
        cache_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// FLOP/s of a plain matmul.
    Matmul {
        #[arg(long, default_value_t = 1024)]
        m: i64,
        #[arg(long, default_value_t = 768)]
        k: i64,
        #[arg(long, default_value_t = 3072)]
        n: i64,
        /// float or bfloat16.
        #[arg(long, default_value = "float")]
        kind: String,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        tch::set_num_threads(n);
    }
    let device = mtl_trainer::precision::parse_device(&cli.device)?;
    match cli.command {
        Command::Train {
            job,
            warmup,
            steps,
            pad_to,
            no_dropout,
            save_init,
            cache_dir,
            out,
        } => {
            let report = bench::train(&TrainBench {
                spec: job::load_file(&job)?,
                warmup,
                steps,
                pad_to,
                dropout: !no_dropout,
                device,
                cache_dir: cache_dir
                    .unwrap_or_else(|| std::env::temp_dir().join("mtl-bench-cache")),
                save_init,
            })?;
            write_json(&out, &report)?;
        }
        Command::Load {
            job,
            cache_dir,
            out,
        } => {
            write_json(&out, &bench::load(&job::load_file(&job)?, &cache_dir)?)?;
        }
        Command::Matmul {
            m,
            k,
            n,
            kind,
            seconds,
            out,
        } => {
            let kind = match kind.as_str() {
                "float" => Kind::Float,
                "bfloat16" => Kind::BFloat16,
                other => bail!("--kind {other:?}: expected float or bfloat16"),
            };
            write_json(&out, &bench::matmul_rate(m, k, n, kind, device, seconds))?;
        }
    }
    Ok(())
}
