//! The tables: their columns and types per dialect, their indexes, and
//! the values of one record's row. Pure.
//!
//! `tyk_analytics` is the table tyk-pump's `sql` pump creates through its
//! gorm fork (`AutoEmbedd` and JSON-tag names): 52 columns in this order,
//! nested structs flattened with their parent's prefix, slices and maps as
//! JSON text. pumphouse adds one column, `pumphouse_id` (the record id,
//! unique), which makes a redelivered batch insert nothing twice and which
//! Tyk Dashboard does not read.

use std::borrow::Cow;

use pumphouse_sdk::{rmpv, IamRecord, Timestamp, TykRecord};

use pumphouse_wire::sql_url::Dialect;

/// A column's SQL type, spelled per dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    /// `text` / `longtext`.
    Text,
    /// `bigint`.
    BigInt,
    /// `bigint` / `bigint unsigned`.
    UBigInt,
    /// `decimal` / `double`, as gorm maps a Go float64.
    Float,
    /// `boolean`.
    Bool,
    /// `timestamptz` / `datetime(3) NULL`.
    Time,
    /// `jsonb` / `JSON`: validated by the database.
    Json,
    /// A text primary key: `text` / `varchar(3072)` of ASCII, as long as
    /// an InnoDB key may be (tyk-pump's `varchar(191)` is too short for
    /// its own `keyendpoints` ids).
    Key,
}

impl SqlType {
    pub fn spell(self, dialect: Dialect) -> &'static str {
        match (self, dialect) {
            (SqlType::Text, Dialect::Postgres) => "text",
            (SqlType::Text, Dialect::Mysql) => "longtext",
            (SqlType::BigInt, _) => "bigint",
            (SqlType::UBigInt, Dialect::Postgres) => "bigint",
            (SqlType::UBigInt, Dialect::Mysql) => "bigint unsigned",
            (SqlType::Float, Dialect::Postgres) => "decimal",
            (SqlType::Float, Dialect::Mysql) => "double",
            (SqlType::Bool, _) => "boolean",
            (SqlType::Time, Dialect::Postgres) => "timestamptz",
            (SqlType::Time, Dialect::Mysql) => "datetime(3) NULL",
            (SqlType::Json, Dialect::Postgres) => "jsonb",
            (SqlType::Json, Dialect::Mysql) => "JSON",
            (SqlType::Key, Dialect::Postgres) => "text",
            (SqlType::Key, Dialect::Mysql) => "varchar(3072) CHARACTER SET ascii",
        }
    }
}

/// The column that makes writes idempotent.
pub const ID_COLUMN: &str = "pumphouse_id";

/// Which table layout a batch is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// tyk-pump's `tyk_analytics`.
    Tyk,
    /// pumphouse's iam authorization log.
    Iam,
}

use SqlType::*;

/// tyk-pump's `tyk_analytics`, in its order.
const TYK_COLUMNS: &[(&str, SqlType)] = &[
    ("method", Text),
    ("host", Text),
    ("path", Text),
    ("rawpath", Text),
    ("contentlength", BigInt),
    ("useragent", Text),
    ("day", BigInt),
    ("month", BigInt),
    ("year", BigInt),
    ("hour", BigInt),
    ("responsecode", BigInt),
    ("apikey", Text),
    ("timestamp", Time),
    ("apiversion", Text),
    ("api_name", Text),
    ("apiid", Text),
    ("orgid", Text),
    ("oauthid", Text),
    ("requesttime", BigInt),
    ("rawrequest", Text),
    ("rawresponse", Text),
    ("ipaddress", Text),
    ("geo_country_iso_code", Text),
    ("geo_city_geoname_id", UBigInt),
    ("geo_city_names", Text),
    ("geo_location_latitude", Float),
    ("geo_location_longitude", Float),
    ("geo_location_time_zone", Text),
    ("network_open_connections", BigInt),
    ("network_closed_connections", BigInt),
    ("network_bytes_in", BigInt),
    ("network_bytes_out", BigInt),
    ("latency_total", BigInt),
    ("latency_upstream", BigInt),
    ("latency_gateway", BigInt),
    ("tags", Text),
    ("alias", Text),
    ("trackpath", Bool),
    ("expireAt", Time),
    ("originalpath", Text),
    ("listenpath", Text),
    ("graphql_stats_variables", Text),
    ("graphql_stats_root_fields", Text),
    ("graphql_stats_types", Text),
    ("graphql_stats_errors", Text),
    ("graphql_stats_operation_type", BigInt),
    ("graphql_stats_has_errors", Bool),
    ("graphql_stats_is_graph_ql", Bool),
    ("mcp_stats_is_mcp", Bool),
    ("mcp_stats_jsonrpc_method", Text),
    ("mcp_stats_primitive_type", Text),
    ("mcp_stats_primitive_name", Text),
];

/// The columns tyk-pump indexes, each as `<table>_idx_<column>`.
const TYK_INDEXED: &[&str] = &[
    "responsecode",
    "apikey",
    "timestamp",
    "apiid",
    "orgid",
    "oauthid",
];

/// The iam authorization log: one column per field.
const IAM_COLUMNS: &[(&str, SqlType)] = &[
    ("timestamp", Time),
    ("username", Text),
    ("effect", Text),
    ("conclusion", Text),
    ("request", Json),
    ("policies", Json),
    ("deciders", Json),
    ("expire_at", Time),
];

const IAM_INDEXED: &[&str] = &["timestamp", "username"];

impl Layout {
    /// The table's name when `table` is not configured.
    pub fn default_table(self) -> &'static str {
        match self {
            Layout::Tyk => "tyk_analytics",
            Layout::Iam => "iam_analytics",
        }
    }

    /// The record columns, in order; [`ID_COLUMN`] comes first in every
    /// statement and is not listed here.
    pub fn columns(self) -> &'static [(&'static str, SqlType)] {
        match self {
            Layout::Tyk => TYK_COLUMNS,
            Layout::Iam => IAM_COLUMNS,
        }
    }

    pub fn indexed(self) -> &'static [&'static str] {
        match self {
            Layout::Tyk => TYK_INDEXED,
            Layout::Iam => IAM_INDEXED,
        }
    }
}

/// Quotes an identifier for `dialect`.
pub fn quote(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
        Dialect::Mysql => format!("`{}`", name.replace('`', "``")),
    }
}

/// The statements that create `table` and its indexes when missing, and
/// add [`ID_COLUMN`] to a table tyk-pump created. Each is idempotent.
pub fn create_statements(layout: Layout, dialect: Dialect, table: &str) -> Vec<String> {
    let q = |name: &str| quote(dialect, name);
    let columns: Vec<String> = layout
        .columns()
        .iter()
        .map(|(name, ty)| format!("{} {}", q(name), ty.spell(dialect)))
        .collect();
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {} ({} bigint, {})",
        q(table),
        q(ID_COLUMN),
        columns.join(", ")
    )];
    if dialect == Dialect::Postgres {
        // A table tyk-pump made has no id column yet; its old rows keep
        // NULL, which the unique index allows any number of times.
        out.push(format!(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} bigint",
            q(table),
            q(ID_COLUMN)
        ));
    }
    out.push(format!(
        "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
        q(&format!("{table}_{ID_COLUMN}")),
        q(table),
        q(ID_COLUMN)
    ));
    for column in layout.indexed() {
        // MySQL can index a prefix of a text column only.
        let key = match (dialect, layout.columns().iter().find(|(n, _)| n == column)) {
            (Dialect::Mysql, Some((_, Text))) => format!("{}(191)", q(column)),
            _ => q(column),
        };
        out.push(format!(
            "CREATE INDEX IF NOT EXISTS {} ON {} ({key})",
            q(&format!("{table}_idx_{column}")),
            q(table),
        ));
    }
    out
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Text(Cow<'a, str>),
    Time(Timestamp),
}

fn text(s: &str) -> Value<'_> {
    Value::Text(Cow::Borrowed(s))
}

/// JSON text of a field, or NULL when the producer left it empty.
fn json_text(s: &str) -> Value<'_> {
    if s.trim().is_empty() {
        Value::Null
    } else {
        text(s)
    }
}

/// The row of a Tyk record, in [`TYK_COLUMNS`] order.
pub fn tyk_row(r: &TykRecord) -> Vec<Value<'_>> {
    let names = serde_json::to_string(&r.geo.city.names).unwrap_or_else(|_| "{}".into());
    let tags = serde_json::to_string(&r.tags).unwrap_or_else(|_| "[]".into());
    let gql = Stats::new(r.graphql_stats.as_ref());
    let mcp = Stats::new(r.mcp_stats.as_ref());
    vec![
        text(&r.method),
        text(&r.host),
        text(&r.path),
        text(&r.raw_path),
        Value::Int(r.content_length),
        text(&r.user_agent),
        Value::Int(r.day),
        Value::Int(r.month),
        Value::Int(r.year),
        Value::Int(r.hour),
        Value::Int(r.response_code),
        text(&r.api_key),
        Value::Time(r.timestamp),
        text(&r.api_version),
        text(&r.api_name),
        text(&r.api_id),
        text(&r.org_id),
        text(&r.oauth_id),
        Value::Int(r.request_time),
        text(&r.raw_request),
        text(&r.raw_response),
        text(&r.ip_address),
        text(&r.geo.country.iso_code),
        Value::UInt(r.geo.city.geo_name_id),
        Value::Text(Cow::Owned(names)),
        Value::Float(r.geo.location.latitude),
        Value::Float(r.geo.location.longitude),
        text(&r.geo.location.time_zone),
        Value::Int(r.network.open_connections),
        Value::Int(r.network.closed_connection),
        Value::Int(r.network.bytes_in),
        Value::Int(r.network.bytes_out),
        Value::Int(r.latency.total),
        Value::Int(r.latency.upstream),
        Value::Int(r.latency.gateway),
        Value::Text(Cow::Owned(tags)),
        text(&r.alias),
        Value::Bool(r.track_path),
        Value::Time(r.expire_at),
        text(&r.original_path),
        text(&r.listen_path),
        gql.text(&["Variables", "variables"]),
        gql.json(&["RootFields", "root_fields"], "[]"),
        gql.json(&["Types", "types"], "{}"),
        gql.json(&["Errors", "errors"], "[]"),
        gql.int(&["OperationType", "operation_type"]),
        gql.bool(&["HasErrors", "has_errors"]),
        gql.bool(&["IsGraphQL", "is_graphql"]),
        mcp.bool(&["IsMCP", "is_mcp"]),
        mcp.text(&["JSONRPCMethod", "jsonrpc_method"]),
        mcp.text(&["PrimitiveType", "primitive_type"]),
        mcp.text(&["PrimitiveName", "primitive_name"]),
    ]
}

/// The row of an iam record, in [`IAM_COLUMNS`] order.
pub fn iam_row(r: &IamRecord) -> Vec<Value<'_>> {
    vec![
        Value::Time(r.timestamp),
        text(&r.username),
        text(&r.effect),
        text(&r.conclusion),
        json_text(&r.request),
        json_text(&r.policies),
        json_text(&r.deciders),
        Value::Time(r.expire_at),
    ]
}

/// The fields of Tyk's `GraphQLStats` or `MCPStats`, which the gateway
/// writes with Go field names (older gateways with JSON tag names).
struct Stats<'a>(Option<&'a [(rmpv::Value, rmpv::Value)]>);

impl<'a> Stats<'a> {
    fn new(v: Option<&'a rmpv::Value>) -> Self {
        Stats(v.and_then(|v| v.as_map().map(|m| m.as_slice())))
    }

    fn get(&self, names: &[&str]) -> Option<&'a rmpv::Value> {
        self.0?
            .iter()
            .find(|(k, _)| k.as_str().is_some_and(|k| names.contains(&k)))
            .map(|(_, v)| v)
    }

    fn text(&self, names: &[&str]) -> Value<'a> {
        match self.get(names).and_then(|v| v.as_str()) {
            Some(s) => Value::Text(Cow::Borrowed(s)),
            None => Value::Text(Cow::Borrowed("")),
        }
    }

    fn json(&self, names: &[&str], empty: &'static str) -> Value<'a> {
        let text = match self.get(names) {
            Some(v) if !v.is_nil() => {
                let json = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
                serde_json::to_string(&json).unwrap_or_else(|_| empty.into())
            }
            _ => empty.into(),
        };
        Value::Text(Cow::Owned(text))
    }

    fn int(&self, names: &[&str]) -> Value<'a> {
        Value::Int(self.get(names).and_then(|v| v.as_i64()).unwrap_or(0))
    }

    fn bool(&self, names: &[&str]) -> Value<'a> {
        Value::Bool(self.get(names).and_then(|v| v.as_bool()).unwrap_or(false))
    }
}

/// Appends `value` as an SQL literal. NULL, numbers and booleans are
/// spelled alike in both dialects; `text` writes a string and `time` a
/// timestamp as the dialect reads them. NaN and infinities go as quoted
/// words, which a numeric column refuses for that row alone.
pub fn write_literal(
    out: &mut String,
    value: &Value<'_>,
    text: fn(&mut String, &str),
    time: fn(&mut String, Timestamp),
) {
    use std::fmt::Write as _;
    match value {
        Value::Null => out.push_str("NULL"),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::UInt(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Float(f) if f.is_finite() => {
            let _ = write!(out, "{f:?}");
        }
        Value::Float(f) => {
            let _ = write!(out, "'{f}'");
        }
        Value::Bool(b) => out.push_str(if *b { "TRUE" } else { "FALSE" }),
        Value::Text(s) => text(out, s),
        Value::Time(t) => time(out, *t),
    }
}

/// `t` as MySQL's `DATETIME(3)` reads it: `YYYY-MM-DD hh:mm:ss.fff`, UTC
/// and without a zone suffix, rounded to the column's milliseconds here
/// since MariaDB would truncate and MySQL round.
pub fn mysql_datetime(t: Timestamp) -> String {
    let text = round_time(t, 1_000_000).to_rfc3339();
    text.trim_end_matches('Z').replacen('T', " ", 1)
}

/// `t` rounded to a multiple of `unit_nanos`: the column's precision,
/// so the stored value does not depend on how the server rounds.
pub fn round_time(t: Timestamp, unit_nanos: i128) -> Timestamp {
    let units = (t.unix_nanos() + unit_nanos / 2).div_euclid(unit_nanos);
    Timestamp::from_unix_nanos(units * unit_nanos)
}

/// The day table of a record's time, `<table>_YYYYMMDD` (UTC).
pub fn shard_table(table: &str, time: Timestamp) -> String {
    let date = time.to_rfc3339();
    let day: String = date.chars().take(10).filter(|c| *c != '-').collect();
    format!("{table}_{day}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tyk_table_is_tyk_pumps() {
        let sql = create_statements(Layout::Tyk, Dialect::Postgres, "tyk_analytics");
        assert!(sql[0].starts_with(
            "CREATE TABLE IF NOT EXISTS \"tyk_analytics\" (\"pumphouse_id\" bigint, \"method\" text, \"host\" text, \"path\" text, \"rawpath\" text, \"contentlength\" bigint,"
        ), "{}", sql[0]);
        assert!(sql[0].contains("\"expireAt\" timestamptz"));
        assert_eq!(TYK_COLUMNS.len(), 52);
        assert!(sql.iter().any(|s| s
            == "CREATE INDEX IF NOT EXISTS \"tyk_analytics_idx_apiid\" ON \"tyk_analytics\" (\"apiid\")"));
        let my = create_statements(Layout::Tyk, Dialect::Mysql, "tyk_analytics_20240510");
        assert!(my[0].contains("`geo_city_geoname_id` bigint unsigned"));
        assert!(my.iter().any(|s| s.ends_with("(`apikey`(191))")));
        assert!(!my.iter().any(|s| s.starts_with("ALTER")));
    }

    #[test]
    fn rows_follow_the_columns() {
        let r = TykRecord {
            tags: vec!["t1".into()],
            month: 5,
            ..Default::default()
        };
        let row = tyk_row(&r);
        assert_eq!(row.len(), TYK_COLUMNS.len());
        assert_eq!(row[7], Value::Int(5));
        assert_eq!(row[35], Value::Text(Cow::Borrowed("[\"t1\"]")));
        assert_eq!(row[24], Value::Text(Cow::Borrowed("{}")));
        assert_eq!(row[42], Value::Text(Cow::Borrowed("[]")));
        let iam = IamRecord::default();
        let row = iam_row(&iam);
        assert_eq!(row.len(), IAM_COLUMNS.len());
        assert_eq!(
            row[4],
            Value::Null,
            "empty JSON text is NULL, not invalid JSON"
        );
    }

    #[test]
    fn graphql_stats_by_either_name() {
        let stats = rmpv::Value::Map(vec![
            ("IsGraphQL".into(), true.into()),
            ("OperationType".into(), 2.into()),
            (
                "RootFields".into(),
                rmpv::Value::Array(vec!["users".into()]),
            ),
        ]);
        let r = TykRecord {
            graphql_stats: Some(stats),
            mcp_stats: Some(rmpv::Value::Map(vec![("is_mcp".into(), true.into())])),
            ..Default::default()
        };
        let row = tyk_row(&r);
        assert_eq!(row[47], Value::Bool(true));
        assert_eq!(row[45], Value::Int(2));
        assert_eq!(row[42], Value::Text(Cow::Borrowed("[\"users\"]")));
        assert_eq!(row[48], Value::Bool(true));
    }

    #[test]
    fn shards_are_utc_days() {
        let t = Timestamp::new(1_715_342_400, 0); // 2024-05-10T12:00:00Z
        assert_eq!(shard_table("tyk_analytics", t), "tyk_analytics_20240510");
    }
}
