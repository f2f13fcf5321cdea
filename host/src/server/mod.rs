//! The HTTP surface: the status page `/` and its data `/api/status`,
//! `/healthz` (the process is alive), `/readyz` (Redis reachable and every
//! pump delivering), `/metrics` (Prometheus), and the admin endpoints
//! `GET /admin/pumps` and `POST /admin/reload`, which answer loopback
//! clients only.

mod history;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::status::Status;
use history::History;

/// A reload asked for on `POST /admin/reload`, answered with what changed
/// or why nothing did. Whoever owns reloading (the daemon) receives these.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

#[derive(Clone)]
struct AppState {
    status: Arc<Status>,
    history: Arc<History>,
    metrics: Option<PrometheusHandle>,
    reload: Option<mpsc::Sender<ReloadRequest>>,
}

/// Binds `listen` and serves until `shutdown`. Returns the bound address
/// (useful with port 0) and the server task.
pub async fn serve(
    listen: &str,
    status: Arc<Status>,
    metrics: Option<PrometheusHandle>,
    reload: Option<mpsc::Sender<ReloadRequest>>,
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
    let history = Arc::new(History::new(history::SAMPLES));
    history::spawn(history.clone(), status.clone(), shutdown.clone());
    let app = Router::new()
        .route("/", get(page::index))
        .route("/api/status", get(api_status))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/admin/pumps", get(admin_pumps))
        .route("/admin/reload", post(admin_reload))
        .with_state(AppState {
            status,
            history,
            metrics,
            reload,
        });
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
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
        "starting": s.status.starting(),
        "redis": if s.status.redis_ok() { "ok" } else { "unreachable" },
        "redis_error": s.status.redis_error(),
        "pumps": pumps,
        "last_reload": s.status.last_reload(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// Everything the status page shows, with its rate history.
async fn api_status(State(s): State<AppState>) -> impl IntoResponse {
    (
        [("cache-control", "no-store")],
        Json(page::document(&s.status, &s.history)),
    )
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    match &s.metrics {
        Some(h) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            h.render() + &s.status.render_metrics(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/plain")],
            "metrics recorder not installed\n".to_string(),
        ),
    }
}

fn forbidden() -> (StatusCode, Json<serde_json::Value>) {
    (
        StatusCode::FORBIDDEN,
        Json(json!({"error": "admin endpoints answer loopback clients only"})),
    )
}

/// Pumps with plugin, version, file hash, load time, state and counters.
async fn admin_pumps(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(s): State<AppState>,
) -> (StatusCode, Json<serde_json::Value>) {
    if !peer.ip().is_loopback() {
        return forbidden();
    }
    let pumps: Vec<_> = s
        .status
        .pumps()
        .iter()
        .map(|p| {
            let mut v = json!(&**p);
            v["counters"] = json!(p.counters());
            v
        })
        .collect();
    (
        StatusCode::OK,
        Json(json!({"pumps": pumps, "last_reload": s.status.last_reload()})),
    )
}

/// Reloads the config now; answers with what changed or why nothing did.
async fn admin_reload(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(s): State<AppState>,
) -> (StatusCode, Json<serde_json::Value>) {
    if !peer.ip().is_loopback() {
        return forbidden();
    }
    let Some(tx) = s.reload else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "this daemon was started without a config file to reload"})),
        );
    };
    let (reply, answer) = oneshot::channel();
    if tx.send(reply).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "shutting down"})),
        );
    }
    match answer.await {
        Ok(Ok(summary)) => (
            StatusCode::OK,
            Json(json!({"result": "ok", "detail": summary})),
        ),
        Ok(Err(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"result": "error", "detail": e})),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "shutting down"})),
        ),
    }
}
