//! tyk-pump's `tyk_aggregated` (its `sql_aggregate` pump): the columns,
//! the dimensions and counters of a set of Tyk records, and the upsert
//! that adds a row's counters to the row already stored. Pure.
//!
//! One row per (time bucket, org, dimension, value), keyed by tyk-pump's
//! `id`: the hex of `<unix seconds><org><dimension><value>`. Where
//! tyk-pump's result depends on how records were split into batches
//! (bucket of the batch's first record, first-record latency minimum,
//! first-record `last_time`), pumphouse takes the rule that does not, so
//! a batch that is split or redelivered differently counts the same
//! (README, "Aggregates").

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use pumphouse_sdk::{Timestamp, TykRecord};

use crate::layout::{quote, SqlType, Value};
use pumphouse_wire::sql_url::Dialect;

/// The default table.
pub const DEFAULT_TABLE: &str = "tyk_aggregated";

/// Which record ids each aggregate table has counted, so a redelivered
/// record is not counted twice.
pub const IDS_TABLE: &str = "pumphouse_aggregated_ids";

use SqlType::*;

/// tyk-pump's columns, in its order.
pub const COLUMNS: &[(&str, SqlType)] = &[
    ("id", Key),
    ("counter_hits", BigInt),
    ("counter_success", BigInt),
    ("counter_error", BigInt),
    ("counter_request_time", Float),
    ("counter_total_request_time", Float),
    ("counter_identifier", Text),
    ("counter_human_identifier", Text),
    ("counter_last_time", Time),
    ("counter_open_connections", BigInt),
    ("counter_closed_connections", BigInt),
    ("counter_bytes_in", BigInt),
    ("counter_bytes_out", BigInt),
    ("counter_max_upstream_latency", BigInt),
    ("counter_min_upstream_latency", BigInt),
    ("counter_total_upstream_latency", BigInt),
    ("counter_upstream_latency", Float),
    ("counter_max_latency", BigInt),
    ("counter_min_latency", BigInt),
    ("counter_total_latency", BigInt),
    ("counter_latency", Float),
    ("counter_error_map", Text),
    ("counter_error_list", Text),
    ("timestamp", BigInt),
    ("org_id", Text),
    ("dimension", Text),
    ("dimension_value", Text),
    ("code_1x", BigInt),
    ("code_200", BigInt),
    ("code_201", BigInt),
    ("code_2x", BigInt),
    ("code_301", BigInt),
    ("code_302", BigInt),
    ("code_303", BigInt),
    ("code_304", BigInt),
    ("code_3x", BigInt),
    ("code_400", BigInt),
    ("code_401", BigInt),
    ("code_403", BigInt),
    ("code_404", BigInt),
    ("code_429", BigInt),
    ("code_4x", BigInt),
    ("code_500", BigInt),
    ("code_501", BigInt),
    ("code_502", BigInt),
    ("code_503", BigInt),
    ("code_504", BigInt),
    ("code_5x", BigInt),
];

/// The status codes with a column of their own; others go to
/// `code_<first digit>x`.
const OWN_CODES: &[i64] = &[400, 401, 403, 404, 429, 500, 501, 502, 503, 504];

/// The index tyk-pump creates, `<table>_idx_dimension`, in its order.
const INDEXED: &[&str] = &["dimension", "timestamp", "org_id", "dimension_value"];

/// Go's zero `time.Time`, which tyk-pump writes for a row no request hit.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// How records are bucketed and which dimensions they feed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Minute buckets instead of hours (`store_analytics_per_minute`).
    pub per_minute: bool,
    /// Every record counts as `TrackPath` (`track_all_paths`).
    pub track_all_paths: bool,
    /// Tags starting with one of these are not a dimension
    /// (`ignore_tag_prefix_list`); `key-` never is.
    pub ignore_tag_prefixes: Vec<String>,
}

/// tyk-pump's `Counter`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counter {
    pub hits: i64,
    pub success: i64,
    pub error: i64,
    pub total_request_time: f64,
    pub identifier: String,
    pub human_identifier: String,
    /// The latest time of a record that hit the row; `None` when only
    /// connection records (code -1) touched it.
    pub last_time: Option<Timestamp>,
    pub open_connections: i64,
    pub closed_connections: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub max_upstream_latency: i64,
    pub min_upstream_latency: i64,
    pub total_upstream_latency: i64,
    pub max_latency: i64,
    pub min_latency: i64,
    pub total_latency: i64,
    /// Hits per status code, codes of 400 and above only (as tyk-pump).
    pub errors: BTreeMap<i64, i64>,
}

impl Counter {
    /// Adds one request (any code but -1).
    fn hit(&mut self, r: &TykRecord) {
        let (total, upstream) = (r.latency.total, r.latency.upstream);
        if self.hits == 0 {
            self.min_latency = total;
            self.min_upstream_latency = upstream;
        } else {
            self.min_latency = self.min_latency.min(total);
            self.min_upstream_latency = self.min_upstream_latency.min(upstream);
        }
        self.max_latency = self.max_latency.max(total);
        self.max_upstream_latency = self.max_upstream_latency.max(upstream);
        self.total_latency += total;
        self.total_upstream_latency += upstream;
        self.hits += 1;
        self.total_request_time += r.request_time as f64;
        let code = r.response_code;
        if (200..300).contains(&code) {
            self.success += 1;
        }
        if code >= 400 {
            self.error += 1;
            *self.errors.entry(code).or_default() += 1;
        }
        self.seen(r.timestamp);
    }

    fn seen(&mut self, t: Timestamp) {
        if self.last_time.is_none_or(|last| last < t) {
            self.last_time = Some(t);
        }
    }

    fn average(&self, total: f64) -> f64 {
        if self.hits > 0 {
            total / self.hits as f64
        } else {
            0.0
        }
    }

    pub fn request_time(&self) -> f64 {
        self.average(self.total_request_time)
    }

    pub fn latency(&self) -> f64 {
        self.average(self.total_latency as f64)
    }

    pub fn upstream_latency(&self) -> f64 {
        self.average(self.total_upstream_latency as f64)
    }

    /// The `code_*` columns, in [`COLUMNS`] order: the error codes with a
    /// column of their own, the rest added to `code_4x`/`code_5x` (and,
    /// as tyk-pump does, a code of 1000 or more to the column of its
    /// first digit; 600 to 999 to none). 1xx to 3xx are never counted.
    pub fn codes(&self) -> [i64; 21] {
        let names: Vec<&str> = COLUMNS[27..].iter().map(|(n, _)| *n).collect();
        let mut out = [0i64; 21];
        for (code, n) in &self.errors {
            let own = format!("code_{code}");
            let name = if OWN_CODES.contains(code) {
                own
            } else {
                format!("code_{}x", &code.to_string()[..1])
            };
            if let Some(i) = names.iter().position(|c| *c == name) {
                out[i] += n;
            }
        }
        out
    }
}

/// One row of `tyk_aggregated`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The bucket's start, unix seconds.
    pub timestamp: i64,
    pub org_id: String,
    /// `""` for the org's total.
    pub dimension: &'static str,
    pub value: String,
    pub counter: Counter,
}

impl Aggregate {
    /// tyk-pump's row id.
    pub fn id(&self) -> String {
        hex(&format!(
            "{}{}{}{}",
            self.timestamp, self.org_id, self.dimension, self.value
        ))
    }

    /// The row, in [`COLUMNS`] order.
    pub fn values(&self) -> Vec<Value<'static>> {
        let c = &self.counter;
        let owned = |s: &str| Value::Text(Cow::Owned(s.to_string()));
        let mut v = vec![
            Value::Text(Cow::Owned(self.id())),
            Value::Int(c.hits),
            Value::Int(c.success),
            Value::Int(c.error),
            Value::Float(c.request_time()),
            Value::Float(c.total_request_time),
            owned(&c.identifier),
            owned(&c.human_identifier),
            Value::Time(
                c.last_time
                    .unwrap_or(Timestamp::from_unix_seconds(GO_ZERO_TIME)),
            ),
            Value::Int(c.open_connections),
            Value::Int(c.closed_connections),
            Value::Int(c.bytes_in),
            Value::Int(c.bytes_out),
            Value::Int(c.max_upstream_latency),
            Value::Int(c.min_upstream_latency),
            Value::Int(c.total_upstream_latency),
            Value::Float(c.upstream_latency()),
            Value::Int(c.max_latency),
            Value::Int(c.min_latency),
            Value::Int(c.total_latency),
            Value::Float(c.latency()),
            // tyk-pump empties both before writing.
            Value::Text(Cow::Borrowed("{}")),
            Value::Text(Cow::Borrowed("[]")),
            Value::Int(self.timestamp),
            owned(&self.org_id),
            Value::Text(Cow::Borrowed(self.dimension)),
            owned(&self.value),
        ];
        v.extend(c.codes().into_iter().map(Value::Int));
        v
    }
}

fn hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// tyk-pump's `doHash`: base64 without the padding.
fn do_hash(s: &str) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(s)
}

/// Whether a record feeds the aggregates at all: tyk-pump skips records
/// without an org, and GraphQL and MCP records.
fn counted(r: &TykRecord) -> bool {
    let flag = |stats: Option<&pumphouse_sdk::rmpv::Value>, names: &[&str]| {
        stats.and_then(|v| v.as_map()).is_some_and(|m| {
            m.iter().any(|(k, v)| {
                k.as_str().is_some_and(|k| names.contains(&k)) && v.as_bool() == Some(true)
            })
        })
    };
    !r.org_id.is_empty()
        && !flag(r.graphql_stats.as_ref(), &["IsGraphQL", "is_graphql"])
        && !flag(r.mcp_stats.as_ref(), &["IsMCP", "is_mcp"])
}

/// The counter of one row, new when missing.
fn entry<'m>(
    rows: &'m mut BTreeMap<String, Aggregate>,
    timestamp: i64,
    org: &str,
    dimension: &'static str,
    value: String,
) -> &'m mut Counter {
    let a = Aggregate {
        timestamp,
        org_id: org.to_string(),
        dimension,
        value,
        counter: Counter::default(),
    };
    &mut rows.entry(a.id()).or_insert(a).counter
}

/// The rows of `records`, sorted by id (so concurrent writers lock rows
/// in one order).
pub fn aggregate<'r>(
    records: impl IntoIterator<Item = &'r TykRecord>,
    o: &Options,
) -> Vec<Aggregate> {
    let mut rows: BTreeMap<String, Aggregate> = BTreeMap::new();
    let bucket = if o.per_minute { 60 } else { 3600 };
    for r in records {
        if !counted(r) {
            continue;
        }
        let secs = r.timestamp.unix_seconds();
        let ts = secs - secs.rem_euclid(bucket);
        let org = r.org_id.as_str();
        if r.response_code == -1 {
            // A connection record: only the total and the API's bytes.
            let total = entry(&mut rows, ts, org, "", "total".into());
            total.open_connections += r.network.open_connections;
            total.closed_connections += r.network.closed_connection;
            total.bytes_in += r.network.bytes_in;
            total.bytes_out += r.network.bytes_out;
            total.seen(r.timestamp);
            if !r.api_id.is_empty() {
                let api = entry(&mut rows, ts, org, "apiid", r.api_id.clone());
                if api.identifier.is_empty() {
                    api.identifier = r.api_id.clone();
                    api.human_identifier = r.api_name.clone();
                }
                api.bytes_in += r.network.bytes_in;
                api.bytes_out += r.network.bytes_out;
            }
            continue;
        }
        let mut hit = |dimension: &'static str, value: String, id: &str, human: &str| {
            let c = entry(&mut rows, ts, org, dimension, value);
            c.hit(r);
            // The last record's names win, as in tyk-pump.
            c.identifier = id.to_string();
            c.human_identifier = human.to_string();
        };
        hit("", "total".into(), "", "");
        if !r.api_id.is_empty() {
            hit("apiid", r.api_id.clone(), &r.api_id, &r.api_name);
        }
        if r.response_code >= 400 {
            let code = r.response_code.to_string();
            hit("errors", code.clone(), &code, "");
        }
        if !r.api_version.is_empty() {
            let v = &r.api_version;
            hit("versions", do_hash(&format!("{}:{v}", r.api_id)), v, v);
        }
        let track = r.track_path || o.track_all_paths;
        let path_hash = do_hash(&format!("{}:{}", r.api_id, r.path));
        if !r.api_key.is_empty() {
            hit("apikeys", r.api_key.clone(), &r.api_key, &r.alias);
            if track {
                let value = format!("{}.{path_hash}", r.api_key);
                hit("keyendpoints", value, &path_hash, &path_hash);
            }
        }
        if !r.oauth_id.is_empty() {
            hit("oauthids", r.oauth_id.clone(), &r.oauth_id, "");
            if track {
                let value = format!("{}.{path_hash}", r.oauth_id);
                hit("oauthendpoints", value, &path_hash, &path_hash);
            }
        }
        let iso = &r.geo.country.iso_code;
        if !iso.is_empty() {
            hit("geo", iso.clone(), iso, iso);
        }
        for tag in &r.tags {
            let trimmed = tag.trim().replace('.', "");
            let ignored = tag.starts_with("key-")
                || o.ignore_tag_prefixes
                    .iter()
                    .any(|p| tag.starts_with(p.as_str()));
            if !trimmed.is_empty() && !ignored {
                hit("tags", trimmed.clone(), &trimmed, &trimmed);
            }
        }
        if track {
            let path = &r.path;
            hit("endpoints", path.replace('.', "\\u2e"), path, path);
            let key = hex(&format!("{}:{}:{path}", r.api_id, r.api_version));
            hit("apiendpoints", key.clone(), &key, path);
        }
    }
    rows.into_values().collect()
}

/// The statements that create `table` and its index when missing.
/// MySQL gets its keys inline (it has no `CREATE INDEX IF NOT EXISTS`),
/// on 191-character prefixes of the text columns: tyk-pump's own index
/// on whole `longtext` columns fails there.
pub fn create_statements(dialect: Dialect, table: &str, index: bool) -> Vec<String> {
    let q = |n: &str| quote(dialect, n);
    let mut parts: Vec<String> = COLUMNS
        .iter()
        .map(|(n, t)| format!("{} {}", q(n), t.spell(dialect)))
        .collect();
    parts.push(format!("PRIMARY KEY ({})", q("id")));
    let index_name = q(&format!("{table}_idx_dimension"));
    match dialect {
        Dialect::Postgres => {
            let mut out = vec![format!(
                "CREATE TABLE IF NOT EXISTS {} ({})",
                q(table),
                parts.join(",")
            )];
            if index {
                let keys: Vec<String> = INDEXED.iter().map(|c| q(c)).collect();
                out.push(format!(
                    "CREATE INDEX IF NOT EXISTS {index_name} ON {} ({})",
                    q(table),
                    keys.join(", ")
                ));
            }
            out
        }
        Dialect::Mysql => {
            if index {
                let keys: Vec<String> = INDEXED
                    .iter()
                    .map(|c| match COLUMNS.iter().find(|(n, _)| n == c) {
                        Some((_, Text)) => format!("{}(191)", q(c)),
                        _ => q(c),
                    })
                    .collect();
                parts.push(format!("KEY {index_name} ({})", keys.join(", ")));
            }
            vec![format!(
                "CREATE TABLE IF NOT EXISTS {} ({}) DEFAULT CHARSET = utf8mb4",
                q(table),
                parts.join(",")
            )]
        }
    }
}

/// The statements that create [`IDS_TABLE`]: which record ids have been
/// counted into which aggregate table, and when (for the cleanup).
pub fn ids_statements(dialect: Dialect) -> Vec<String> {
    let q = |n: &str| quote(dialect, n);
    let (target, time) = match dialect {
        Dialect::Postgres => ("text", "timestamptz"),
        Dialect::Mysql => ("varchar(64) CHARACTER SET ascii", "datetime"),
    };
    let table = q(IDS_TABLE);
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {table} ({} {target} NOT NULL, {} bigint NOT NULL, {} {time} NOT NULL, PRIMARY KEY ({0}, {1})",
        q("target"),
        q("id"),
        q("counted_at"),
    );
    let index = q(&format!("{IDS_TABLE}_counted_at"));
    match dialect {
        Dialect::Postgres => vec![
            format!("{create})"),
            format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {table} ({})",
                q("counted_at")
            ),
        ],
        Dialect::Mysql => vec![format!("{create}, KEY {index} ({}))", q("counted_at"))],
    }
}

/// `INSERT INTO table (columns) VALUES `, for rows of [`Aggregate::values`].
pub fn insert_head(dialect: Dialect, table: &str) -> String {
    let columns: Vec<String> = COLUMNS.iter().map(|(n, _)| quote(dialect, n)).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ",
        quote(dialect, table),
        columns.join(",")
    )
}

/// The conflict clause after the VALUES: the stored row plus the new
/// one, as tyk-pump's upsert does: sums, averages over the summed hits
/// (0 rather than a division by zero when neither has hits), max, min of
/// the sides with hits, the later `last_time`; ids, names and dimension
/// are kept.
///
/// MySQL evaluates its assignments left to right, each seeing the ones
/// before, so everything derived from a sum comes before the sums.
pub fn conflict_clause(dialect: Dialect, table: &str) -> String {
    let q = |n: &str| quote(dialect, n);
    let old = |c: &str| match dialect {
        Dialect::Postgres => format!("{}.{}", q(table), q(c)),
        Dialect::Mysql => q(c),
    };
    let new = |c: &str| match dialect {
        Dialect::Postgres => format!("EXCLUDED.{}", q(c)),
        Dialect::Mysql => format!("VALUES({})", q(c)),
    };
    let float = match dialect {
        Dialect::Postgres => "double precision",
        Dialect::Mysql => "DOUBLE",
    };
    let hits = format!("({} + {})", old("counter_hits"), new("counter_hits"));
    let mut set: Vec<(String, String)> = Vec::new();
    for (avg, total) in [
        ("counter_request_time", "counter_total_request_time"),
        ("counter_latency", "counter_total_latency"),
        ("counter_upstream_latency", "counter_total_upstream_latency"),
    ] {
        set.push((
            avg.into(),
            format!(
                "CASE WHEN {hits} = 0 THEN 0 ELSE CAST({} + {} AS {float}) / {hits} END",
                old(total),
                new(total)
            ),
        ));
    }
    for c in ["counter_min_latency", "counter_min_upstream_latency"] {
        set.push((
            c.into(),
            format!(
                "CASE WHEN {} = 0 THEN {} WHEN {} = 0 THEN {} ELSE LEAST({1}, {3}) END",
                new("counter_hits"),
                old(c),
                old("counter_hits"),
                new(c)
            ),
        ));
    }
    for c in [
        "counter_max_latency",
        "counter_max_upstream_latency",
        "counter_last_time",
    ] {
        set.push((c.into(), format!("GREATEST({}, {})", old(c), new(c))));
    }
    let summed = COLUMNS.iter().map(|(n, _)| *n).filter(|n| {
        n.starts_with("code_")
            || matches!(
                *n,
                "counter_total_request_time"
                    | "counter_total_latency"
                    | "counter_total_upstream_latency"
                    | "counter_success"
                    | "counter_error"
                    | "counter_open_connections"
                    | "counter_closed_connections"
                    | "counter_bytes_in"
                    | "counter_bytes_out"
            )
    });
    for c in summed {
        set.push((c.into(), format!("{} + {}", old(c), new(c))));
    }
    // Last: every average and minimum above reads the stored hits.
    set.push((
        "counter_hits".into(),
        format!("{} + {}", old("counter_hits"), new("counter_hits")),
    ));
    let list: Vec<String> = set
        .into_iter()
        .map(|(c, e)| format!("{} = {e}", q(&c)))
        .collect();
    match dialect {
        Dialect::Postgres => format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            q("id"),
            list.join(", ")
        ),
        Dialect::Mysql => format!(" ON DUPLICATE KEY UPDATE {}", list.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::{Geo, Latency, Network};

    const T: i64 = 1_715_342_400; // 2024-05-10T12:00:00Z

    fn record(code: i64, secs: i64, total: i64, upstream: i64, rt: i64) -> TykRecord {
        TykRecord {
            org_id: "org".into(),
            api_id: "api".into(),
            api_name: "Api".into(),
            api_version: "v1".into(),
            api_key: "k1".into(),
            path: "/a.b".into(),
            response_code: code,
            request_time: rt,
            timestamp: Timestamp::new(secs, 0),
            latency: Latency {
                total,
                upstream,
                gateway: 0,
            },
            track_path: true,
            ..Default::default()
        }
    }

    fn find<'a>(rows: &'a [Aggregate], dimension: &str, value: &str) -> &'a Counter {
        &rows
            .iter()
            .find(|a| a.dimension == dimension && a.value == value)
            .unwrap_or_else(|| panic!("no {dimension}/{value} in {rows:#?}"))
            .counter
    }

    #[test]
    fn counters_by_hand() {
        let records = vec![
            record(200, T + 10, 30, 20, 40),
            record(404, T + 20, 10, 5, 20),
            record(503, T + 30, 50, 45, 60),
            record(302, T + 40, 40, 30, 80),
        ];
        let rows = aggregate(&records, &Options::default());
        let total = find(&rows, "", "total");
        assert_eq!(
            (total.hits, total.success, total.error),
            (4, 1, 2),
            "a 302 is neither a success nor an error"
        );
        assert_eq!(total.total_request_time, 200.0);
        assert_eq!(total.request_time(), 50.0);
        assert_eq!((total.max_latency, total.min_latency), (50, 10));
        assert_eq!(
            (total.max_upstream_latency, total.min_upstream_latency),
            (45, 5)
        );
        assert_eq!(total.total_latency, 130);
        assert_eq!(total.latency(), 32.5);
        assert_eq!(total.upstream_latency(), 25.0);
        assert_eq!(total.last_time, Some(Timestamp::new(T + 40, 0)));
        assert_eq!(
            total.codes(),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0],
            "only 404 and 503 have columns; 200 and 302 are never counted"
        );
        let e404 = find(&rows, "errors", "404");
        assert_eq!(
            (e404.hits, e404.error, e404.identifier.as_str()),
            (1, 1, "404")
        );
        assert!(!rows
            .iter()
            .any(|a| a.dimension == "errors" && a.value == "200"));
        let api = find(&rows, "apiid", "api");
        assert_eq!((api.hits, api.human_identifier.as_str()), (4, "Api"));
        // The dimension values and ids tyk-pump computes.
        let v = do_hash("api:v1");
        assert_eq!(v, "YXBpOnYx");
        assert_eq!(find(&rows, "versions", &v).identifier, "v1");
        assert_eq!(find(&rows, "endpoints", "/a\\u2eb").identifier, "/a.b");
        let ae = hex("api:v1:/a.b");
        assert_eq!(find(&rows, "apiendpoints", &ae).human_identifier, "/a.b");
        let ke = format!("k1.{}", do_hash("api:/a.b"));
        assert_eq!(find(&rows, "keyendpoints", &ke).hits, 4);
        let total_row = rows.iter().find(|a| a.dimension.is_empty()).unwrap();
        assert_eq!(total_row.timestamp, T);
        assert_eq!(total_row.id(), hex(&format!("{T}orgtotal")));
        assert_eq!(rows.len(), 9, "{rows:#?}");
    }

    #[test]
    fn buckets_are_each_records_own() {
        let records = vec![
            record(200, T + 59, 1, 1, 1),
            record(200, T + 61, 1, 1, 1),
            record(200, T + 3600, 1, 1, 1),
        ];
        let hours = aggregate(&records, &Options::default());
        let totals: Vec<(i64, i64)> = hours
            .iter()
            .filter(|a| a.dimension.is_empty())
            .map(|a| (a.timestamp, a.counter.hits))
            .collect();
        assert_eq!(totals.len(), 2);
        assert!(totals.contains(&(T, 2)) && totals.contains(&(T + 3600, 1)));
        let minutes = aggregate(
            &records,
            &Options {
                per_minute: true,
                ..Options::default()
            },
        );
        assert_eq!(minutes.iter().filter(|a| a.dimension.is_empty()).count(), 3);
        assert!(minutes.iter().any(|a| a.timestamp == T + 60));
    }

    #[test]
    fn connection_records_feed_only_the_total_and_the_apis_bytes() {
        let mut r = record(-1, T, 0, 0, 0);
        r.network = Network {
            open_connections: 2,
            closed_connection: 1,
            bytes_in: 100,
            bytes_out: 200,
        };
        let rows = aggregate(&[r], &Options::default());
        assert_eq!(rows.len(), 2, "{rows:#?}");
        let total = find(&rows, "", "total");
        assert_eq!(total.hits, 0);
        assert_eq!(
            (
                total.open_connections,
                total.closed_connections,
                total.bytes_in,
                total.bytes_out
            ),
            (2, 1, 100, 200)
        );
        let api = find(&rows, "apiid", "api");
        assert_eq!(
            (api.open_connections, api.bytes_in, api.bytes_out),
            (0, 100, 200)
        );
        assert_eq!(api.last_time, None);
        let values = rows[0].values();
        assert_eq!(values[4], Value::Float(0.0), "no division by zero");
        assert_eq!(
            values[8],
            Value::Time(Timestamp::from_unix_seconds(GO_ZERO_TIME))
        );
        assert_eq!(values.len(), COLUMNS.len());
    }

    #[test]
    fn skipped_records_and_tags() {
        let mut no_org = record(200, T, 1, 1, 1);
        no_org.org_id.clear();
        let mut gql = record(200, T, 1, 1, 1);
        gql.graphql_stats = Some(pumphouse_sdk::rmpv::Value::Map(vec![(
            "IsGraphQL".into(),
            true.into(),
        )]));
        let mut tagged = record(200, T, 1, 1, 1);
        tagged.tags = vec![
            "key-abc".into(),
            " a.b ".into(),
            "skip-me".into(),
            "...".into(),
            "x".into(),
            "x".into(),
        ];
        tagged.track_path = false;
        tagged.geo = Geo::default();
        tagged.geo.country.iso_code = "GB".into();
        let o = Options {
            ignore_tag_prefixes: vec!["skip".into()],
            ..Options::default()
        };
        let rows = aggregate(&[no_org, gql, tagged], &o);
        assert_eq!(find(&rows, "", "total").hits, 1);
        let tags: Vec<(&str, i64)> = rows
            .iter()
            .filter(|a| a.dimension == "tags")
            .map(|a| (a.value.as_str(), a.counter.hits))
            .collect();
        assert_eq!(tags, vec![("ab", 1), ("x", 2)], "a tag twice counts twice");
        assert_eq!(find(&rows, "geo", "GB").human_identifier, "GB");
        assert!(!rows.iter().any(|a| a.dimension.ends_with("endpoints")));
        let all = aggregate(
            &[record(200, T, 1, 1, 1)].map(|mut r| {
                r.track_path = false;
                r
            }),
            &Options {
                track_all_paths: true,
                ..Options::default()
            },
        );
        assert!(all.iter().any(|a| a.dimension == "endpoints"));
    }

    #[test]
    fn minimum_is_over_every_request_and_odd_codes() {
        // tyk-pump lowers a minimum only by a successful record; across
        // writes its upsert takes the plain minimum, which pumphouse uses
        // everywhere.
        let records = vec![
            record(200, T, 30, 30, 1),
            record(500, T, 5, 4, 1),
            record(418, T, 50, 50, 1),
            record(700, T, 50, 50, 1),
            record(1404, T, 50, 50, 1),
        ];
        let rows = aggregate(&records, &Options::default());
        let total = find(&rows, "", "total");
        assert_eq!((total.min_latency, total.min_upstream_latency), (5, 4));
        let codes = total.codes();
        let at = |name: &str| codes[COLUMNS[27..].iter().position(|(n, _)| *n == name).unwrap()];
        assert_eq!(at("code_500"), 1);
        assert_eq!(at("code_4x"), 1, "418");
        assert_eq!(at("code_1x"), 1, "1404, by its first digit");
        assert_eq!(codes.iter().sum::<i64>(), 3, "700 has no column");
        assert_eq!(total.error, 4);
    }

    #[test]
    fn ddl_and_upsert() {
        let pg = create_statements(Dialect::Postgres, "tyk_aggregated", true);
        assert!(pg[0].starts_with(
            "CREATE TABLE IF NOT EXISTS \"tyk_aggregated\" (\"id\" text,\"counter_hits\" bigint,\"counter_success\" bigint,\"counter_error\" bigint,\"counter_request_time\" decimal,"
        ), "{}", pg[0]);
        assert!(pg[0].ends_with("\"code_5x\" bigint,PRIMARY KEY (\"id\"))"));
        assert_eq!(
            pg[1],
            "CREATE INDEX IF NOT EXISTS \"tyk_aggregated_idx_dimension\" ON \"tyk_aggregated\" (\"dimension\", \"timestamp\", \"org_id\", \"dimension_value\")"
        );
        let my = create_statements(Dialect::Mysql, "t", true);
        assert_eq!(my.len(), 1);
        assert!(my[0].contains("KEY `t_idx_dimension` (`dimension`(191), `timestamp`, `org_id`(191), `dimension_value`(191))"), "{}", my[0]);
        assert_eq!(create_statements(Dialect::Postgres, "t", false).len(), 1);

        let pg = conflict_clause(Dialect::Postgres, "t");
        assert!(
            pg.contains("\"counter_hits\" = \"t\".\"counter_hits\" + EXCLUDED.\"counter_hits\"")
        );
        assert!(pg.contains("\"counter_latency\" = CASE WHEN (\"t\".\"counter_hits\" + EXCLUDED.\"counter_hits\") = 0 THEN 0 ELSE CAST(\"t\".\"counter_total_latency\" + EXCLUDED.\"counter_total_latency\" AS double precision) / (\"t\".\"counter_hits\" + EXCLUDED.\"counter_hits\") END"), "{pg}");
        assert!(!pg.contains("\"counter_identifier\" ="));
        let my = conflict_clause(Dialect::Mysql, "t");
        let pos = |s: &str| my.find(s).unwrap_or_else(|| panic!("{s} in {my}"));
        assert!(pos("`counter_request_time` =") < pos("`counter_total_request_time` = `counter_total_request_time` + VALUES(`counter_total_request_time`)"));
        assert!(
            pos("`counter_min_latency` =")
                < pos("`counter_hits` = `counter_hits` + VALUES(`counter_hits`)")
        );
        let kept = [
            "id",
            "timestamp",
            "org_id",
            "dimension",
            "dimension_value",
            "counter_identifier",
            "counter_human_identifier",
            "counter_error_map",
            "counter_error_list",
        ];
        for (c, _) in COLUMNS {
            let assigned = my.contains(&format!("`{c}` = ")) && pg.contains(&format!("\"{c}\" = "));
            assert_eq!(assigned, !kept.contains(c), "{c}");
        }
    }
}
