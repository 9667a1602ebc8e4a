//! `/metrics`, `/healthz` and `/readyz`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::telemetry::Metrics;
use crate::{Error, Result};

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once the operator has connected to the API server and is leading or standing by.
    pub ready: Arc<AtomicBool>,
    /// `/healthz` fails when, while leading with live jobs, no reconcile completed for this
    /// long (`--healthz-stall-seconds`): a wedged controller that still renews its lease is
    /// restarted by the kubelet, and a standby takes over.
    pub stall_after: std::time::Duration,
}

async fn healthz(State(h): State<Health>) -> impl IntoResponse {
    match h
        .metrics
        .wedged(k8s_openapi::jiff::Timestamp::now(), h.stall_after)
    {
        None => (StatusCode::OK, "ok".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// Binds `addr` (returns the bound address, useful with port 0) and serves until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Io {
            what: format!("binding the metrics address {addr}"),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| Error::Io {
        what: "reading the metrics address".into(),
        source,
    })?;
    let app = router(health);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok((bound, handle))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let health = Health {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
            stall_after: std::time::Duration::from_secs(600),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, handle) = serve("127.0.0.1:0".parse().unwrap(), health.clone(), async {
            let _ = rx.await;
        })
        .await
        .unwrap();
        assert!(get(addr, "/healthz").await.contains(" 200 "));
        assert!(get(addr, "/readyz").await.contains(" 503 "));
        health.ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.contains(" 200 "));
        // Leading with a live job and no reconcile for longer than stall_after: unhealthy.
        health.metrics.leader.set(1);
        health
            .metrics
            .set_job_phase("ns/a", mtl_crds::JobPhase::Running);
        health.metrics.reconciled(
            k8s_openapi::jiff::Timestamp::now()
                .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(700))
                .unwrap(),
        );
        let wedged = get(addr, "/healthz").await;
        assert!(
            wedged.contains(" 503 ") && wedged.contains("no reconcile completed"),
            "{wedged}"
        );
        health
            .metrics
            .reconciled(k8s_openapi::jiff::Timestamp::now());
        assert!(get(addr, "/healthz").await.contains(" 200 "));
        let metrics = get(addr, "/metrics").await;
        assert!(
            metrics.contains("application/openmetrics-text"),
            "{metrics}"
        );
        assert!(
            metrics.contains("mtl_operator_reconciles_total 0"),
            "{metrics}"
        );
        tx.send(()).unwrap();
        handle.await.unwrap();
    }
}
