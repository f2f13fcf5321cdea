//! The status page: `GET /` serves one self-contained HTML document (its
//! CSS and script inline, nothing fetched from elsewhere) that polls
//! `GET /api/status`. Both are read-only.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::history::{History, EVERY};
use crate::status::{rfc3339, Status};
use crate::telemetry::{self, tap};

const TEMPLATE: &str = include_str!("page/status.html");
const STYLE: &str = include_str!("page/status.css");
const SCRIPT: &str = include_str!("page/status.js");

/// The assembled page and a Content-Security-Policy that allows exactly
/// its own inline style and script (by hash) and requests to this host.
struct Page {
    html: String,
    csp: String,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let hash = |text: &str| {
        let digest = Sha256::digest(text.as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    Page {
        html: TEMPLATE
            .replace("/*STYLE*/", STYLE)
            .replace("/*SCRIPT*/", SCRIPT),
        csp: format!(
            "default-src 'none'; style-src {}; script-src {}; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash(STYLE),
            hash(SCRIPT)
        ),
    }
});

pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE.csp.as_str()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE.html.as_str(),
    )
}

/// The document `/api/status` answers with. Counters of a pump
/// (`written`, `errors`, `dead_lettered`) are since its current version
/// started; `errors_by_kind` and the rates are since the process started.
pub fn document(status: &Status, history: &History) -> Value {
    let latest = history.latest();
    let source = status.source();
    let backlog = tap::series(telemetry::SOURCE_BACKLOG);
    let keys: Vec<Value> = source
        .as_ref()
        .map(|s| s.keys.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|key| {
            // `null` until the first health probe measured it.
            let len = backlog
                .iter()
                .find(|s| s.label("key") == Some(key.as_str()))
                .map(|s| s.value as u64);
            json!({"key": key, "backlog": len})
        })
        .collect();
    let total_backlog: Option<u64> = keys.iter().map(|k| k["backlog"].as_u64()).sum();
    let pumps: Vec<Value> = status
        .pumps()
        .iter()
        .map(|p| {
            let mut v = json!(&**p);
            v["since"] = json!(p.since());
            let c = p.counters();
            v["written"] = json!(c.written);
            v["errors"] = json!(c.errors);
            v["dead_lettered"] = json!(c.dead_lettered);
            let mut by_kind = Map::new();
            for s in tap::series(telemetry::PUMP_ERRORS) {
                if s.label("pump") == Some(p.name.as_str()) {
                    let kind = s.label("kind").unwrap_or("unknown").to_string();
                    by_kind.insert(kind, json!(s.value as u64));
                }
            }
            v["errors_by_kind"] = Value::Object(by_kind);
            let gauge = |metric| {
                tap::series(metric)
                    .into_iter()
                    .find(|s| s.label("pump") == Some(p.name.as_str()))
                    .map(|s| s.value as u64)
            };
            v["lane_depth"] = json!(gauge(telemetry::PUMP_LANE_DEPTH).unwrap_or(0));
            // Only disk pumps export spool gauges.
            v["spool"] = match (
                gauge(telemetry::SPOOL_RECORDS),
                gauge(telemetry::SPOOL_BYTES),
            ) {
                (Some(records), Some(bytes)) => json!({"records": records, "bytes": bytes}),
                _ => Value::Null,
            };
            v["rate"] = json!(latest
                .as_ref()
                .and_then(|s| s.pumps.get(&p.name))
                .map(|r| r.written)
                .unwrap_or(0.0));
            v
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now": rfc3339(std::time::SystemTime::now()),
        "ready": status.ready(),
        "started": status.started(),
        "source": {
            "redis": source.as_ref().map(|s| s.redis.clone()),
            "topology": source.as_ref().map(|s| s.topology),
            "tls": source.as_ref().map(|s| s.tls),
            "kind": source.as_ref().map(|s| s.kind),
            "reachable": status.redis_ok(),
            "error": status.redis_error(),
            "keys": keys,
            "backlog": total_backlog,
            "claimed": tap::total(telemetry::RECORDS_CLAIMED) as u64,
            "claim_rate": latest.as_ref().map(|s| s.claimed).unwrap_or(0.0),
            "lease_takeovers": tap::total(telemetry::BATCHES_RECLAIMED) as u64,
        },
        "pumps": pumps,
        "last_reload": status.last_reload(),
        "history": {
            "every_seconds": EVERY.as_secs(),
            "samples": history.samples(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_assembled_and_its_policy_allows_only_its_own_code() {
        let page = &*PAGE;
        assert!(!page.html.contains("/*SCRIPT*/") && !page.html.contains("/*STYLE*/"));
        assert!(page.html.contains(SCRIPT) && page.html.contains(STYLE));
        // No external asset: nothing is loaded from another origin.
        for needle in ["https://", "src=", "href=", "url(", "@import"] {
            assert!(!page.html.contains(needle), "page contains {needle}");
        }
        assert!(page.csp.starts_with("default-src 'none'"));
        assert_eq!(page.csp.matches("'sha256-").count(), 2, "{}", page.csp);
    }

    #[test]
    fn a_daemon_before_start_has_an_empty_document() {
        let doc = document(&Status::default(), &History::new(1));
        assert_eq!(doc["pumps"], json!([]));
        assert_eq!(doc["source"]["reachable"], json!(false));
        assert_eq!(doc["source"]["backlog"], json!(0));
        assert_eq!(doc["history"]["samples"], json!([]));
    }
}
