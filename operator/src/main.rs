//! `mtl-operator`: thin CLI over the library.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use mtl_operator::controller::Config;
use mtl_operator::leader::LeaseConfig;
use mtl_operator::manager::{self, RunOptions};

#[derive(Parser)]
#[command(
    name = "mtl-operator",
    version,
    about = "Runs MultiTaskTrainingJobs on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (with leader election).
    Run(Box<RunArgs>),
    /// Print the MultiTaskTrainingJob CRD as YAML.
    Crd,
    /// Run a job on Vertex AI without a cluster (Application Default Credentials).
    #[command(subcommand)]
    Vertex(VertexCommand),
}

#[derive(Subcommand)]
enum VertexCommand {
    /// Submit job.yaml as a Vertex AI CustomJob (one per attempt; a repeat reports the live one).
    Submit { job: std::path::PathBuf },
    /// Show the CustomJob(s) of job.yaml, or of projects/…/customJobs/ID.
    Status { target: String },
    /// Cancel the CustomJob(s) of job.yaml, or projects/…/customJobs/ID.
    Cancel { target: String },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch this namespace only (default: all namespaces).
    #[arg(long, env = "MTL_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "MTL_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, env = "MTL_LEASE_NAME", default_value = "mtl-operator")]
    lease_name: String,
    /// Namespace of the Lease (in a pod: its own namespace via the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease (in a pod: its name via the downward API).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// terminationGracePeriodSeconds of trainer pods: time to write a checkpoint on SIGTERM.
    #[arg(long, default_value_t = 300)]
    pod_grace_seconds: i64,
    /// Seconds between looks at a live job (a Vertex AI job's state, the manifest's reads).
    #[arg(long, default_value_t = 30)]
    poll_seconds: u64,
    /// Seconds between reads of a live job's checkpoint manifest (at most, per job; on the
    /// looks of --poll-seconds, and once when an attempt ends).
    #[arg(long, env = "MTL_MANIFEST_POLL_SECONDS", default_value_t = 30)]
    manifest_poll_seconds: u64,
    /// Seconds between reads of a running job's progress.json (at most, per job).
    #[arg(long, default_value_t = 30)]
    progress_poll_seconds: u64,
    /// A reconcile that takes longer than this many seconds is abandoned and retried (a
    /// stuck call must not hold a job, or a --concurrency slot, forever).
    #[arg(long, default_value_t = 300)]
    reconcile_timeout_seconds: u64,
    /// /healthz fails when, while leading with live jobs, no reconcile completed for this
    /// many seconds: the kubelet restarts a wedged operator and a standby takes over.
    #[arg(long, default_value_t = 600)]
    healthz_stall_seconds: u64,
    /// `.status.progress` is rewritten when the whole percent moves, or after this many
    /// seconds: not on every read (a status write per running job per read would spend the
    /// API budget at scale).
    #[arg(long, default_value_t = 120)]
    progress_write_seconds: u64,
    /// Seconds between a failed attempt and the next, doubling with every failure (0: none).
    #[arg(long, default_value_t = 10)]
    backoff_base_seconds: u64,
    /// The most the wait between attempts grows to.
    #[arg(long, default_value_t = 360)]
    backoff_max_seconds: u64,
    /// Kubernetes API requests per second, at most (0: no limit): a burst of new jobs queues
    /// in the operator instead of flooding the API server. Leader election is not limited.
    #[arg(long, env = "MTL_KUBE_API_QPS", default_value_t = 50)]
    kube_api_qps: u32,
    /// Reconciles in flight at once (0: unbounded).
    #[arg(long, env = "MTL_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Trainer image of jobs whose spec names none (recorded in the job's accepted spec, so
    /// a later change of this flag does not change a running job's image).
    #[arg(long, env = "MTL_DEFAULT_IMAGE")]
    default_image: Option<String>,
    /// The default policy: a YAML file holding a MultiTaskTrainingPolicy's spec (image
    /// prefixes, service accounts, PriorityClasses, buckets, GPU caps, Vertex AI bounds, ...),
    /// for namespaces without their own `MultiTaskTrainingPolicy` named `default`, which
    /// overrides it field by field. Unset: anything goes where no namespace policy says
    /// otherwise.
    #[arg(long, env = "MTL_POLICY_FILE")]
    policy_file: Option<std::path::PathBuf>,
    /// Volume types jobs may mount beyond the restricted Pod Security Standard's (configMap,
    /// csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret), e.g.
    /// `nfs`. This widens what job authors can do; the CRD's rule must be widened to match
    /// (`crdgen job --allow-volume-types`).
    #[arg(long, env = "MTL_ALLOW_VOLUME_TYPES", value_delimiter = ',')]
    allow_volume_types: Vec<String>,
    /// A file with the secret key (16 bytes or more) `status.acceptedSpec` is signed with, so
    /// that nobody who may write a job's `/status` can change what it runs. Unset: accepted
    /// specs are neither signed nor verified (a warning says so).
    #[arg(long, env = "MTL_ACCEPTED_SPEC_KEY_FILE")]
    accepted_spec_key_file: Option<std::path::PathBuf>,
    /// Gang-schedule attempts of several workers with scheduler-plugins' coscheduling plugin,
    /// run by the scheduler of this name: each such attempt gets a PodGroup
    /// (`scheduling.x-k8s.io/v1alpha1`, `minMember` = workers) and its pods go to that
    /// scheduler, which places all of them or none. Unset: the pods go to the default
    /// scheduler one by one (use Kueue, or this, for gangs).
    #[arg(long, env = "MTL_COSCHEDULING_SCHEDULER_NAME")]
    coscheduling_scheduler_name: Option<String>,
    /// Log as text instead of JSON.
    #[arg(long)]
    text_logs: bool,
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "mtl-operator".into());
    format!("{host}-{}", std::process::id())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            let yaml = serde_yaml::to_string(&mtl_crds::MultiTaskTrainingJob::crd())
                .context("serialising the CRD")?;
            print!("{yaml}");
            Ok(())
        }
        Command::Vertex(cmd) => {
            let out = match cmd {
                VertexCommand::Submit { job } => {
                    mtl_operator::cli::vertex::cli_submit(&job).await?
                }
                VertexCommand::Status { target } => {
                    mtl_operator::cli::vertex::cli_status(&target).await?
                }
                VertexCommand::Cancel { target } => {
                    mtl_operator::cli::vertex::cli_cancel(&target).await?
                }
            };
            for s in out {
                print!("{s}");
            }
            Ok(())
        }
        Command::Run(args) => {
            let args = *args;
            manager::init_tracing(!args.text_logs);
            let kube_config = kube::Config::infer()
                .await
                .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
            let clients = mtl_operator::client::connect(kube_config, args.kube_api_qps)
                .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
            let lease = LeaseConfig::with_duration(
                args.lease_name,
                args.identity.unwrap_or_else(default_identity),
                Duration::from_secs(args.lease_duration_seconds.max(2)),
            );
            let mut config = Config::default();
            config.pod.grace_period_seconds = args.pod_grace_seconds;
            config.pod.coscheduling_scheduler = args
                .coscheduling_scheduler_name
                .filter(|n| !n.trim().is_empty());
            config.poll_interval = Duration::from_secs(args.poll_seconds.max(1));
            config.progress_poll = Duration::from_secs(args.progress_poll_seconds.max(1));
            config.progress_write = Duration::from_secs(args.progress_write_seconds);
            config.reconcile_timeout = Duration::from_secs(args.reconcile_timeout_seconds.max(1));
            config.healthz_stall = Duration::from_secs(args.healthz_stall_seconds.max(1));
            config.manifest_poll = Duration::from_secs(args.manifest_poll_seconds.max(1));
            config.concurrency = args.concurrency;
            config.default_image = args.default_image.filter(|i| !i.trim().is_empty());
            let defaults = match &args.policy_file {
                Some(path) => {
                    mtl_operator::policy::Policy::load_defaults(path).map_err(anyhow::Error::msg)?
                }
                None => Default::default(),
            };
            config.policy = mtl_operator::policy::Policy {
                defaults,
                extra_volume_types: args
                    .allow_volume_types
                    .into_iter()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            };
            config.accepted_spec_key = match &args.accepted_spec_key_file {
                Some(path) => Some(
                    mtl_operator::accepted::AcceptedSpecKey::from_file(path)
                        .map_err(anyhow::Error::msg)?,
                ),
                None => {
                    tracing::warn!(
                        "no --accepted-spec-key-file: status.acceptedSpec is not signed, and anyone who may write a job's /status decides what it runs"
                    );
                    None
                }
            };
            config.backoff = mtl_operator::decide::Backoff {
                base: Duration::from_secs(args.backoff_base_seconds),
                max: Duration::from_secs(args.backoff_max_seconds.max(args.backoff_base_seconds)),
            };
            let opts = RunOptions {
                namespace: args.namespace,
                metrics_addr: args.metrics_addr,
                lease,
                lease_namespace: args.lease_namespace,
                config,
            };
            manager::run(clients, opts, manager::shutdown_signal()).await?;
            Ok(())
        }
    }
}
