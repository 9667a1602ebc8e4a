//! `kube-standin`: serve the API server + kubelet stand-in on 127.0.0.1 and print its URL.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kube_standin::{KubeletConfig, PodmanConfig, StandIn};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0, env = "KUBE_STANDIN_PORT")]
    port: u16,
    /// Run every new pod to Running.
    #[arg(long)]
    auto_run: bool,
    /// Leave gracefully deleted running pods until /standin/kubelet/.../finish-deletion.
    #[arg(long)]
    manual_deletion: bool,
    /// Watch events kept for resuming watches.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Seconds between BOOKMARK events.
    #[arg(long, default_value_t = 1.0)]
    bookmark_interval: f64,
    /// Also write a kubeconfig pointing at the stand-in here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the kubeconfig's context.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Run pods' containers with podman (images from podman's local storage, host network).
    #[arg(long)]
    podman: bool,
    /// With --podman: where emptyDir volumes and container logs live (default: a new temp dir).
    #[arg(long, requires = "podman")]
    podman_root: Option<PathBuf>,
    /// With --podman: NAME=VALUE added to every container's environment (repeatable).
    #[arg(long = "container-env", value_name = "NAME=VALUE", requires = "podman", value_parser = parse_env)]
    container_env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let standin = StandIn::builder()
        .port(args.port)
        .history_capacity(args.history)
        .bookmark_interval(Duration::from_secs_f64(args.bookmark_interval.max(0.01)))
        .kubelet(KubeletConfig {
            auto_run: args.auto_run,
            auto_finish_deletion: !args.manual_deletion,
            podman: args.podman.then(|| PodmanConfig {
                root: args.podman_root.clone().unwrap_or_default(),
                extra_env: args.container_env.iter().cloned().collect(),
                ..PodmanConfig::default()
            }),
            ..KubeletConfig::default()
        })
        .start()
        .await?;
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, standin.kubeconfig(&args.namespace))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    // The URL is the first line on stdout, for scripts and tests that start the binary.
    println!("{}", standin.url());
    tokio::signal::ctrl_c().await?;
    standin.shutdown().await;
    Ok(())
}
