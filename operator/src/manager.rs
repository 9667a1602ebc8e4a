//! The whole operator process: metrics server, leader election, and the controller while
//! leading.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kube::api::{Api, ListParams};
use kube::runtime::events::Reporter;
use mtl_crds::MultiTaskTrainingJob;
use mtl_storage::Storage;
use tracing::{error, info};

use crate::Result;
use crate::client::Clients;
use crate::controller::{self, Config, Context};
use crate::leader::{LeaderElector, LeaseConfig};
use crate::server::{self, Health};
use crate::telemetry::Metrics;

/// Settings of `mtl-operator run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Watch jobs in this namespace only; all namespaces when `None`.
    pub namespace: Option<String>,
    pub metrics_addr: SocketAddr,
    pub lease: LeaseConfig,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
    pub config: Config,
}

type Shutdown = Shared<BoxFuture<'static, ()>>;

/// Runs until `shutdown` resolves (clean exit, lease released) or leadership is lost (error:
/// the process should exit so that it rejoins as a candidate).
pub async fn run(
    clients: Clients,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let Clients {
        api: client,
        lease: lease_client,
    } = clients;
    let shutdown: Shutdown = shutdown.boxed().shared();
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
        stall_after: opts.config.healthz_stall,
    };
    let (addr, server) = server::serve(opts.metrics_addr, health, shutdown.clone()).await?;
    info!(%addr, "serving /metrics, /healthz and /readyz");

    let jobs: Api<MultiTaskTrainingJob> = match &opts.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    if let Err(e) = jobs.list(&ListParams::default().limit(1)).await {
        error!(error = %e, "cannot list MultiTaskTrainingJobs; is the CRD installed? (mtl-operator crd | kubectl apply -f -)");
        return Err(e.into());
    }
    ready.store(true, Ordering::Relaxed);

    let elector = LeaderElector::new(
        Api::namespaced(lease_client, &opts.lease_namespace),
        opts.lease.clone(),
    );
    tokio::select! {
        _ = elector.acquire() => {}
        _ = shutdown.clone() => {
            info!("shutting down before becoming leader");
            let _ = server.await;
            return Ok(());
        }
    }
    metrics.leader.set(1);

    let reporter = Reporter {
        controller: "mtl-operator".into(),
        instance: Some(opts.lease.identity.clone()),
    };
    let ctx = Arc::new(Context::new(
        client,
        reporter,
        Storage::new(),
        metrics.clone(),
        opts.config.clone(),
    ));
    let namespace = opts.namespace.clone();
    let running = controller::run(ctx, namespace.as_deref(), shutdown.clone());
    tokio::pin!(running);
    let outcome = tokio::select! {
        _ = &mut running => Ok(()),
        lost = elector.hold() => Err(lost),
    };
    metrics.leader.set(0);
    match outcome {
        Ok(()) => {
            info!("controller stopped; releasing the lease");
            if let Err(e) = elector.release().await {
                error!(error = %e, "could not release the lease; a standby takes over when it expires");
            }
            let _ = server.await;
            Ok(())
        }
        Err(e) => {
            error!(error = %e, "lost leadership; exiting");
            Err(e)
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => info!("interrupt: shutting down"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// JSON logs (one object per line) filtered by `RUST_LOG` (default `info`).
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.init();
    }
}
