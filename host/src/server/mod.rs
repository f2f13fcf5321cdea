//! The HTTP surface: `/healthz` (the process is alive), `/readyz` (Redis
//! reachable and every pump delivering), `/metrics` (Prometheus).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::pipeline::status::Status;

#[derive(Clone)]
struct AppState {
    status: Arc<Status>,
    metrics: Option<PrometheusHandle>,
}

/// Binds `listen` and serves until `shutdown`. Returns the bound address
/// (useful with port 0) and the server task.
pub async fn serve(
    listen: &str,
    status: Arc<Status>,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    if let Some(h) = metrics.clone() {
        // Histograms and counters need periodic upkeep in the exporter.
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => h.run_upkeep(),
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { status, metrics });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok((addr, task))
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let ready = s.status.ready();
    let pumps: Vec<_> = s.status.pumps().iter().map(|p| json!(&**p)).collect();
    let body = json!({
        "ready": ready,
        "started": s.status.started(),
        "redis": if s.status.redis_ok() { "ok" } else { "unreachable" },
        "pumps": pumps,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    match &s.metrics {
        Some(h) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            h.render(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/plain")],
            "metrics recorder not installed\n".to_string(),
        ),
    }
}
