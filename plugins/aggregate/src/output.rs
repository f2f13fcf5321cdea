//! Writing finished windows: the request for each output kind (pure), and
//! sending it.

use std::time::Duration;

use pumphouse_sdk::http::{percent_encode, Request};
use pumphouse_sdk::Error;

use crate::config::Output;
use crate::state::Row;

/// How long one flush request may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The request that writes `rows` to `output`.
pub fn request(output: &Output, rows: &[Row]) -> Result<Request, Error> {
    match output {
        Output::ClickHouse {
            url,
            database,
            table,
            user,
            password,
        } => {
            let query = format!("INSERT INTO {database}.{table} FORMAT JSONEachRow");
            let mut body = Vec::new();
            for row in rows {
                serde_json::to_writer(&mut body, row).map_err(|e| Error::fatal(e.to_string()))?;
                body.push(b'\n');
            }
            let mut req = Request::post(format!("{url}/?query={}", percent_encode(&query)))
                .header("content-type", "application/x-ndjson")
                .body(body);
            if let Some(u) = user {
                req = req.header("x-clickhouse-user", u);
            }
            if let Some(p) = password {
                req = req.header("x-clickhouse-key", p);
            }
            Ok(req)
        }
        Output::Http { url, headers } => {
            let body = serde_json::to_vec(rows).map_err(|e| Error::fatal(e.to_string()))?;
            let mut req = Request::post(url.clone())
                .header("content-type", "application/json")
                .body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            Ok(req)
        }
    }
}

/// Sends `rows`; statuses map as in the SDK (`error_for_status`).
pub fn send(output: &Output, rows: &[Row]) -> Result<(), Error> {
    request(output, rows)?
        .timeout(FLUSH_TIMEOUT)
        .send()?
        .error_for_status()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            window_start: "2026-11-22 10:00:00".into(),
            window_seconds: 60,
            dimension: "OrgID,APIID".into(),
            key: r#"["o","a"]"#.into(),
            hits: 3,
            success: 2,
            errors: 1,
            latency_total_ms: 12.0,
            latency_max_ms: 7.0,
            flush_id: "00ff".into(),
        }
    }

    #[test]
    fn clickhouse_inserts_json_each_row() {
        let out = Output::ClickHouse {
            url: "http://ch.test:8123".into(),
            database: "db".into(),
            table: "agg".into(),
            user: Some("u".into()),
            password: Some("p w".into()),
        };
        let req = request(&out, &[row(), row()]).unwrap();
        assert_eq!(
            req.url(),
            "http://ch.test:8123/?query=INSERT%20INTO%20db.agg%20FORMAT%20JSONEachRow"
        );
        let body = String::from_utf8(req.body_bytes().to_vec()).unwrap();
        assert_eq!(body.lines().count(), 2);
        let first: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
        assert_eq!(first["hits"], 3);
        assert_eq!(first["window_start"], "2026-11-22 10:00:00");
    }

    #[test]
    fn http_posts_a_json_array_with_headers() {
        let out = Output::Http {
            url: "http://sink.test/agg".into(),
            headers: vec![("authorization".into(), "Bearer t".into())],
        };
        let req = request(&out, &[row()]).unwrap();
        let body: serde_json::Value = serde_json::from_slice(req.body_bytes()).unwrap();
        assert_eq!(body[0]["dimension"], "OrgID,APIID");
        assert_eq!(req.header_value("authorization"), Some("Bearer t"));
    }
}
