//! `sql`: a pumphouse sink that writes Tyk and iam records to PostgreSQL
//! or MySQL/MariaDB, in the tables tyk-pump's `sql` pump creates, so Tyk
//! Dashboard reads them as it reads tyk-pump's. See README.md.
//!
//! The plugin speaks each database's own protocol over `wasi:sockets`
//! (through the SDK's `net::Stream`, which also does TLS through the
//! host's `wasi:tls`):
//! - `url` parses the `connection` URL; `layout` holds the tables'
//!   columns and turns records into rows; `outcome` is what a database
//!   error means for the batch. All pure.
//! - `store` is what the batch logic below needs of a database; `pg`
//!   implements it for PostgreSQL (COPY), `my` for MySQL and MariaDB
//!   (multi-row INSERT) over the `mysql` protocol client.

mod layout;
mod my;
pub mod mysql;
mod outcome;
mod pg;
mod store;

use std::collections::HashSet;
use std::time::Duration;

use pumphouse_sdk::config::{expand_env, parse_duration};
use pumphouse_sdk::{
    Batch, Config, Encoding, Error, FailedEvent, IamRecord, PluginInfo, Schema, Sink, TykRecord,
    WriteError,
};
use serde::Deserialize;

use layout::{iam_row, shard_table, tyk_row, Layout};
use outcome::Class;
use pumphouse_wire::sql_url::{ConnUrl, Dialect};
use store::{Failure, Row, Store};

/// How many refused rows one batch may shed one by one (the database
/// names each) before the plugin lets the host bisect instead.
const MAX_DROPPED_ROWS: usize = 64;

/// The pump's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlConfig {
    /// `postgres://user:pass@host:port/db?sslmode=...` or `mysql://...`,
    /// or tyk-pump's DSNs (`host=... dbname=...`, `user:pass@tcp(h:p)/db`);
    /// `${NAME}` is replaced by the environment variable `NAME`.
    #[serde(alias = "connection_string")]
    connection: String,
    /// tyk-pump's `type`, `postgres` or `mysql`: says which a DSN is, and
    /// must agree with a URL.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// The table; by default `tyk_analytics` or `iam_analytics`.
    #[serde(default)]
    table: Option<String>,
    /// One table per UTC day, `<table>_YYYYMMDD`.
    #[serde(default)]
    table_sharding: bool,
    /// Connect, read and write timeout.
    #[serde(default = "default_timeout")]
    timeout: String,
}

fn default_timeout() -> String {
    "10s".into()
}

pub struct SqlSink {
    store: Box<dyn Store>,
    table: Option<String>,
    sharding: bool,
    /// Tables known to exist with every column, so each is checked once.
    ready: HashSet<String>,
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::fatal(format!("invalid config: {e}"))
}

/// Table names are quoted in SQL, but a name that needs quoting is a
/// mistake more often than not.
fn check_table(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 54
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "table: {name:?} must be 1 to 54 letters, digits or _, not starting with a digit"
        ))
    }
}

impl Sink for SqlSink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "sql".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Msgpack,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let c: SqlConfig = config.parse()?;
        let connection =
            expand_env("connection", &c.connection).map_err(|e| e.context("invalid config"))?;
        let kind = match c.kind.as_deref() {
            None => None,
            Some("postgres") => Some(Dialect::Postgres),
            Some("mysql") => Some(Dialect::Mysql),
            Some(other) => {
                return Err(invalid(format!(
                    "type: {other:?} is not \"postgres\" or \"mysql\""
                )))
            }
        };
        let url = ConnUrl::parse_any(&connection, kind)
            .map_err(|e| invalid(format!("connection: {e}")))?;
        if let Some(table) = &c.table {
            check_table(table).map_err(invalid)?;
        }
        let timeout = parse_duration(&c.timeout).map_err(|e| invalid(format!("timeout: {e}")))?;
        if timeout < Duration::from_millis(100) {
            return Err(invalid("timeout: must be at least 100ms"));
        }
        let store: Box<dyn Store> = match url.dialect {
            Dialect::Postgres => {
                let mut pg = pg::Postgres::new(url.clone(), timeout);
                pg.connect().map_err(to_error)?;
                Box::new(pg)
            }
            Dialect::Mysql => {
                let mut my = my::Mysql::new(url.clone(), timeout);
                my.connect().map_err(to_error)?;
                Box::new(my)
            }
        };
        pumphouse_sdk::info!("writing to {url}");
        Ok(SqlSink {
            store,
            table: c.table,
            sharding: c.table_sharding,
            ready: HashSet::new(),
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        let layout = match batch.schema {
            Schema::Tyk => Layout::Tyk,
            Schema::Iam => Layout::Iam,
            other => {
                return Err(WriteError::Fatal(format!(
                    "the sql sink writes Tyk or iam records; this source's records are {other:?}"
                )))
            }
        };
        let base = self
            .table
            .clone()
            .unwrap_or_else(|| layout.default_table().to_string());

        let mut failed: Vec<FailedEvent> = Vec::new();
        let tyk: Vec<(u32, u64, TykRecord)>;
        let iam: Vec<(u32, u64, IamRecord)>;
        // Decode everything first: a record that does not decode is bad
        // data, dead-lettered alone.
        let mut rows: Vec<(u32, String, Row<'_>)> = Vec::with_capacity(batch.len());
        match layout {
            Layout::Tyk => {
                tyk = decode_all(batch, &mut failed);
                for (index, id, r) in &tyk {
                    let table = self.table_for(&base, r.timestamp);
                    rows.push((
                        *index,
                        table,
                        Row {
                            id: *id,
                            values: tyk_row(r),
                        },
                    ));
                }
            }
            Layout::Iam => {
                iam = decode_all(batch, &mut failed);
                for (index, id, r) in &iam {
                    let table = self.table_for(&base, r.timestamp);
                    rows.push((
                        *index,
                        table,
                        Row {
                            id: *id,
                            values: iam_row(r),
                        },
                    ));
                }
            }
        }

        // One statement per table, in first-seen order.
        let mut tables: Vec<&str> = Vec::new();
        for (_, table, _) in &rows {
            if !tables.contains(&table.as_str()) {
                tables.push(table);
            }
        }
        let mut dropped = 0usize;
        for table in tables {
            if !self.ready.contains(table) {
                self.store
                    .ensure_table(layout, table)
                    .map_err(|f| self.write_error(f))?;
                self.ready.insert(table.to_string());
            }
            let mut pending: Vec<&(u32, String, Row<'_>)> =
                rows.iter().filter(|(_, t, _)| t == table).collect();
            loop {
                if pending.is_empty() {
                    break;
                }
                let batch_rows: Vec<&Row<'_>> = pending.iter().map(|(_, _, r)| r).collect();
                match self.store.insert(layout, table, &batch_rows) {
                    Ok(()) => break,
                    Err(Failure {
                        class: Class::BadRow { row: Some(n) },
                        message,
                    }) if n >= 1 && (n as usize) <= pending.len() && dropped < MAX_DROPPED_ROWS => {
                        let (index, _, _) = pending.remove(n as usize - 1);
                        failed.push(FailedEvent {
                            index: *index,
                            reason: message,
                            retryable: false,
                        });
                        dropped += 1;
                    }
                    Err(f) => return Err(self.write_error(f)),
                }
            }
        }
        let written = rows.len() - dropped;
        pumphouse_sdk::metrics::counter_add("rows_written", written as u64, &[]);
        if failed.is_empty() {
            return Ok(());
        }
        pumphouse_sdk::warn!(
            "{} of {} records refused, first: {}",
            failed.len(),
            batch.len(),
            failed[0].reason
        );
        failed.sort_by_key(|f| f.index);
        Err(WriteError::Partial(failed))
    }
}

impl SqlSink {
    fn table_for(&self, base: &str, time: pumphouse_sdk::Timestamp) -> String {
        if self.sharding {
            shard_table(base, time)
        } else {
            base.to_string()
        }
    }

    fn write_error(&mut self, f: Failure) -> WriteError {
        match f.class {
            Class::Retry => {
                self.store.reset();
                WriteError::Retry(f.message)
            }
            Class::Fatal => WriteError::Fatal(f.message),
            Class::TooLarge => WriteError::TooLarge,
            // A duplicate the idempotent path did not absorb, a row the
            // database refused without saying which, or anything else:
            // the host bisects down to the record.
            Class::Duplicate | Class::BadRow { .. } | Class::Invalid => {
                WriteError::InvalidBatch(f.message)
            }
        }
    }
}

fn to_error(f: Failure) -> Error {
    match f.class {
        Class::Fatal => Error::fatal(f.message),
        _ => Error::retry(f.message),
    }
}

/// Decodes every record as `T`; the ones that do not decode are failed.
fn decode_all<T: serde::de::DeserializeOwned>(
    batch: &Batch,
    failed: &mut Vec<FailedEvent>,
) -> Vec<(u32, u64, T)> {
    let mut out = Vec::with_capacity(batch.len());
    for record in batch.records() {
        match record.decode::<T>() {
            Ok(r) => out.push((record.index(), record.id(), r)),
            Err(e) => failed.push(FailedEvent {
                index: record.index(),
                reason: format!("cannot decode the record: {}", e.message()),
                retryable: false,
            }),
        }
    }
    out
}

pumphouse_sdk::export_sink!(SqlSink);
