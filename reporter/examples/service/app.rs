//! The example service: a hello-world axum app, with or without the
//! analytics layer. Shared with the tests and the benchmark, which build
//! the same router.

// Each user (example, tests, benchmark) uses part of this module.
#![allow(dead_code)]

use std::fmt::Write;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::{get, post};
use axum::Router;
use pumphouse_reporter::{AnalyticsLayer, HttpRecord, Reporter};

/// `APIID` of the service's records.
pub const API_ID: &str = "hello-api";
/// `APIName` of the service's records.
pub const API_NAME: &str = "hello";
/// `OrgID` of the service's records.
pub const ORG_ID: &str = "example-org";
/// What `GET /` answers.
pub const HELLO: &str = "Hello, World!";
/// Most rows `GET /page/{rows}` renders.
pub const MAX_PAGE_ROWS: u32 = 10_000;

/// `GET /` says hello, `GET /items/{n}` answers `item {n}`,
/// `GET /page/{rows}` renders an HTML table of that many rows (a request
/// with some work in it, for the benchmark), `GET /status/{code}` answers
/// with that status, `POST /echo` returns its body. With a reporter, every
/// request is recorded as a Tyk record.
pub fn app(reporter: Option<Reporter<HttpRecord>>) -> Router {
    let router = Router::new()
        .route("/", get(|| async { HELLO }))
        .route(
            "/items/{n}",
            get(|Path(n): Path<u64>| async move { format!("item {n}") }),
        )
        .route("/page/{rows}", get(page))
        .route("/status/{code}", get(status))
        .route("/echo", post(|body: Bytes| async move { body }));
    match reporter {
        Some(r) => router.layer(
            AnalyticsLayer::new(r)
                .api_id(API_ID)
                .api_name(API_NAME)
                .org_id(ORG_ID),
        ),
        None => router,
    }
}

async fn page(Path(rows): Path<u32>) -> Html<String> {
    let rows = rows.min(MAX_PAGE_ROWS);
    let mut html = String::with_capacity(80 * rows as usize + 128);
    html.push_str("<!doctype html><table><tr><th>item</th><th>price</th><th>stock</th></tr>");
    for i in 0..rows {
        let cents = u64::from(i) * 7919 % 100_000;
        // Writing to a String cannot fail.
        let _ = write!(
            html,
            "<tr><td>item {i}</td><td>{}.{:02}</td><td>{}</td></tr>",
            cents / 100,
            cents % 100,
            i % 13,
        );
    }
    html.push_str("</table>");
    Html(html)
}

async fn status(Path(code): Path<u16>) -> (StatusCode, &'static str) {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
        "status",
    )
}

/// Serves `app` on `listener` (with the client address available to the
/// layer) until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .await
}
