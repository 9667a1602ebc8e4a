//! `mtl-trainer`: train, evaluate, predict with and export multi-task models.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mtl_crds::MultiTaskTrainingJobSpec;
use mtl_crds::contract::EXIT_STOPPED;
use mtl_crds::contract::torchrun::RANK;
use mtl_trainer::checkpoint::{self, Loaded};
use mtl_trainer::io::Storage;
use mtl_trainer::job::{self, Overrides};
use mtl_trainer::predict;
use mtl_trainer::train::{self, Outcome, RunOptions};
use mtl_trainer::{distributed, precision};

#[derive(Parser)]
#[command(
    name = "mtl-trainer",
    version,
    about = "Multi-task fine-tuning of a shared encoder"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// cpu, cuda, cuda:N, or auto (CUDA when available).
    #[arg(long, global = true, default_value = "auto")]
    device: String,
    /// Intra-op CPU threads (libtorch's default when unset).
    #[arg(long, global = true)]
    threads: Option<i32>,
    /// Cache for gs:// models, data and checkpoint staging.
    #[arg(long, global = true, env = mtl_crds::contract::ENV_CACHE_DIR)]
    cache_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct JobArgs {
    /// A MultiTaskTrainingJob manifest or bare spec (YAML or JSON).
    #[arg(long, conflicts_with = "job_json")]
    job: Option<PathBuf>,
    /// The spec as JSON (how the operator starts the trainer).
    #[arg(long)]
    job_json: Option<String>,
    #[command(flatten)]
    overrides: Overrides,
}

impl JobArgs {
    fn spec(&self) -> Result<MultiTaskTrainingJobSpec> {
        let mut spec = match (&self.job, &self.job_json) {
            (Some(path), _) => job::load_file(path)?,
            (None, Some(json)) => job::from_json(json)?,
            (None, None) => bail!("give --job FILE or --job-json JSON"),
        };
        self.overrides.apply(&mut spec);
        Ok(spec)
    }
}

/// Data parallel, when no launcher (torchrun, Kubeflow, Vertex AI) describes the world.
#[derive(clap::Args)]
struct DistArgs {
    /// Worker processes on this node (default: the visible GPUs; 1 on CPU).
    #[arg(long)]
    nproc_per_node: Option<usize>,
    /// Nodes in the world.
    #[arg(long)]
    nnodes: Option<usize>,
    /// This node's index (0 hosts the rendezvous).
    #[arg(long)]
    node_rank: Option<usize>,
    /// Address of node 0.
    #[arg(long)]
    master_addr: Option<String>,
    /// Rendezvous port on node 0.
    #[arg(long)]
    master_port: Option<u16>,
    /// Seconds a collective may wait for the other ranks before failing.
    #[arg(long, default_value_t = 1800)]
    dist_timeout: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Train (resuming from the newest checkpoint under spec.checkpoints.uri).
    Train {
        #[command(flatten)]
        job: JobArgs,
        /// Checkpoint and stop after this many steps, as on SIGTERM.
        #[arg(long)]
        stop_after: Option<u64>,
        /// Resume even though the batch size, gradient accumulation, sampling, seed, tasks
        /// or training data changed since the checkpoint.
        #[arg(long)]
        force_resume: bool,
        #[command(flatten)]
        dist: DistArgs,
    },
    /// Evaluate a checkpoint (default: the newest) on the job's validation sets.
    Eval {
        #[command(flatten)]
        job: JobArgs,
        /// latest (default), best, a step, or a checkpoint directory (local or gs://).
        #[arg(long)]
        checkpoint: Option<String>,
    },
    /// Predict one task for a JSONL file (writes JSONL), or, with --submission DIR, every
    /// task's test file in the form benchmark servers take (GLUE's `<Task>.tsv`, ...).
    Predict {
        #[command(flatten)]
        job: JobArgs,
        /// latest (default), best, a step, or a checkpoint directory (local or gs://).
        #[arg(long)]
        checkpoint: Option<String>,
        #[arg(long, required_unless_present = "submission")]
        task: Option<String>,
        #[arg(long, required_unless_present = "submission")]
        input: Option<PathBuf>,
        /// Write every task's test predictions (spec.tasks[].test) into this directory.
        #[arg(long, conflicts_with_all = ["task", "input", "out"])]
        submission: Option<PathBuf>,
        /// Output file (stdout when unset).
        #[arg(long = "out")]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 32)]
        predict_batch_size: usize,
    },
    /// Write one task as a standalone HuggingFace model directory.
    Export {
        #[command(flatten)]
        job: JobArgs,
        /// latest (default), best, a step, or a checkpoint directory (local or gs://).
        #[arg(long)]
        checkpoint: Option<String>,
        #[arg(long)]
        task: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// List the committed checkpoints under a location, newest last.
    Checkpoints {
        /// Checkpoint location (gs://bucket/prefix or a directory).
        uri: String,
    },
}

fn init_logging() {
    use std::io::IsTerminal;
    // Data-parallel ranks other than 0 report warnings and errors only (rank 0 logs progress).
    let other_rank = std::env::var(RANK).is_ok_and(|r| r != "0");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if other_rank { "warn" } else { "info" })
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.compact().init();
    } else {
        builder.event_format(mtl_trainer::logging::JsonLines).init();
    }
}

/// SIGTERM or a first SIGINT sets the returned flag: training stops at the next step
/// boundary with a checkpoint. A second SIGINT exits at once with 130 (what is not yet
/// committed is lost; committed checkpoints are not touched).
fn watch_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("installing signal handlers")?;
    let flag = stop.clone();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            if flag.swap(true, std::sync::atomic::Ordering::SeqCst) && sig == SIGINT {
                tracing::warn!(signal = name, "stop requested again: exiting now");
                std::process::exit(130);
            }
            tracing::warn!(
                signal = name,
                "stop requested: finishing the current step, then checkpointing (Ctrl-C again exits at once)"
            );
        }
    });
    Ok(stop)
}

fn main() -> ExitCode {
    init_logging();
    match run() {
        Ok(code) => code,
        Err(e) => {
            let message = format!("{e:#}");
            tracing::error!(error = %message, "mtl-trainer failed");
            eprintln!("error: {message}");
            // Kubernetes shows this file as the container's termination message.
            let log = std::env::var(mtl_crds::contract::ENV_TERMINATION_LOG)
                .unwrap_or_else(|_| "/dev/termination-log".into());
            if std::path::Path::new(&log).exists() {
                let _ = std::fs::write(&log, &message);
            }
            // Input no retry can fix gets its own code, which the operator does not retry.
            let invalid = e.chain().any(|c| {
                c.downcast_ref::<mtl_crds::Error>().is_some()
                    || c.downcast_ref::<mtl_trainer::Error>()
                        .is_some_and(mtl_trainer::Error::is_invalid_input)
            });
            if invalid {
                ExitCode::from(mtl_crds::EXIT_INVALID_INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        tch::set_num_threads(n);
    }
    let device = precision::parse_device(&cli.device)?;
    let cache = cli
        .cache_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("mtl-cache"));
    match cli.command {
        Command::Train {
            job,
            stop_after,
            force_resume,
            dist,
        } => {
            let spec = job.spec()?;
            let pg = match join_world(&dist, device)? {
                Place::Alone => None,
                Place::Worker(pg) => Some(pg),
                Place::Agent(code) => return Ok(code),
            };
            let main_rank = pg.as_ref().is_none_or(distributed::ProcessGroup::is_main);
            let device = pg
                .as_ref()
                .map_or(device, distributed::ProcessGroup::device);
            let opts = RunOptions {
                device,
                cache_dir: cache,
                progress: true,
                stop: watch_signals()?,
                stop_after,
                force_resume,
                vertex: mtl_trainer::vertex::VertexEnv::from_process_env(),
            };
            let outcome = train::train_in(&spec, &opts, pg)?;
            if main_rank {
                print_outcome(&outcome)?;
            }
            Ok(if outcome.interrupted {
                ExitCode::from(EXIT_STOPPED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Eval { job, checkpoint } => eval(&job, checkpoint.as_deref(), &cache, device),
        Command::Predict {
            job,
            checkpoint,
            task,
            input,
            submission,
            out,
            predict_batch_size,
        } => {
            let store = Storage::new()?;
            let entry = checkpoint_for(&store, &job, checkpoint.as_deref())?;
            let loaded = Loaded::load(&store, entry, &cache, device)?;
            if let Some(dir) = submission {
                let spec = job
                    .spec()
                    .context("--submission needs the job (--job) for its tasks' test files")?;
                let files =
                    predict::submission(&loaded, &store, &spec, &dir, predict_batch_size, &cache)?;
                for f in files {
                    eprintln!("wrote {}", f.display());
                }
                return Ok(ExitCode::SUCCESS);
            }
            let (Some(task), Some(input)) = (task, input) else {
                anyhow::bail!("predict needs --task and --input, or --submission DIR");
            };
            let preds = predict::predict(&loaded, &task, &input, predict_batch_size, &cache)?;
            let mut text = String::new();
            for p in preds {
                text.push_str(&serde_json::to_string(&p)?);
                text.push('\n');
            }
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            job,
            checkpoint,
            task,
            out,
        } => {
            let store = Storage::new()?;
            let entry = checkpoint_for(&store, &job, checkpoint.as_deref())?;
            let loaded = Loaded::load(&store, entry, &cache, device)?;
            mtl_trainer::export::export(&loaded, &task, &out)?;
            eprintln!(
                "exported task {task} from {} to {}",
                loaded.entry.uri,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Checkpoints { uri } => {
            let store = Storage::new()?;
            let manifest = store.manifest(&uri)?.unwrap_or_default();
            if manifest.checkpoints.is_empty() {
                eprintln!("no committed checkpoints under {uri}");
            }
            for c in &manifest.checkpoints {
                println!("{}", serde_json::to_string(c)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// This process's place in a data-parallel world.
enum Place {
    /// The only process.
    Alone,
    /// One worker of a world.
    Worker(distributed::ProcessGroup),
    /// The local agent, which started this node's workers and waited for them: its exit code.
    Agent(ExitCode),
}

/// Where this process stands, from the launcher's variables or the flags. When several
/// processes are to run on this node, starts them as torchrun does and waits.
fn join_world(d: &DistArgs, device: tch::Device) -> Result<Place> {
    let flags = distributed::LaunchFlags {
        nnodes: d.nnodes,
        node_rank: d.node_rank,
        nproc_per_node: d.nproc_per_node,
        master_addr: d.master_addr.clone(),
        master_port: d.master_port,
    };
    let gpus = if device.is_cuda() {
        tch::Cuda::device_count().max(0) as usize
    } else {
        0
    };
    Ok(match distributed::env::from_process_env(&flags, gpus)? {
        distributed::Launch::Single => Place::Alone,
        // Several processes here: start them, as torchrun does, and wait.
        distributed::Launch::Node(node) => Place::Agent(
            match distributed::LocalWorkers::current_process(node)?.run()? {
                distributed::AgentOutcome::Completed => ExitCode::SUCCESS,
                distributed::AgentOutcome::Stopped => ExitCode::from(EXIT_STOPPED),
            },
        ),
        distributed::Launch::Worker(w) => {
            let options = distributed::GroupOptions {
                backend: distributed::Backend::for_device(device),
                timeout: std::time::Duration::from_secs(d.dist_timeout),
            };
            Place::Worker(distributed::ProcessGroup::init(&w, &options)?)
        }
    })
}

/// `train`'s summary on stdout (rank 0).
fn print_outcome(outcome: &Outcome) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "step": outcome.step,
            "total_steps": outcome.total_steps,
            "interrupted": outcome.interrupted,
            "resumed_from": outcome.resumed_from,
            "checkpoint": outcome.checkpoint.as_ref().map(|c| &c.uri),
            "end": outcome.end,
            "best_checkpoint": outcome.best,
            "model": outcome.model,
            "tensorboard": outcome.tensorboard.as_ref().map(|d| format!("tensorboard --logdir {d}")),
            "metrics": outcome.metrics,
        }))?
    );
    Ok(())
}

/// `eval`: the checkpoint's metrics on the job's validation sets, on stdout.
fn eval(
    job: &JobArgs,
    checkpoint: Option<&str>,
    cache: &std::path::Path,
    device: tch::Device,
) -> Result<ExitCode> {
    let spec = job.spec()?;
    let store = Storage::new()?;
    let entry = checkpoint::resolve(&store, &spec.checkpoints.uri, checkpoint)?;
    let loaded = Loaded::load(&store, entry, cache, device)?;
    let bs = spec.training.eval_batch_size.unwrap_or(32) as usize;
    let metrics = predict::evaluate(&loaded, &store, &spec, cache, bs)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "checkpoint": loaded.entry.uri,
            "metrics": metrics,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}

/// `--checkpoint` as a directory, or the checkpoint it selects (latest when not given) among
/// those of the job's checkpoint location.
fn checkpoint_for(
    store: &Storage,
    job: &JobArgs,
    selector: Option<&str>,
) -> Result<mtl_crds::CheckpointRef> {
    if let Some(uri) = selector.filter(|s| !checkpoint::is_selector(s)) {
        return Ok(checkpoint::resolve(store, "", Some(uri))?);
    }
    let spec = job.spec().context(
        "--checkpoint is not a directory, so the job's checkpoint location is needed (--job)",
    )?;
    Ok(checkpoint::resolve(store, &spec.checkpoints.uri, selector)?)
}
