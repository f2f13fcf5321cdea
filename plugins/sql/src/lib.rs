//! `sql`: a pumphouse sink that writes Tyk and iam records to PostgreSQL
//! or MySQL/MariaDB, in the tables tyk-pump's `sql` pump creates, so Tyk
//! Dashboard reads them as it reads tyk-pump's. See README.md.
//!
//! The plugin speaks each database's own protocol over `wasi:sockets`
//! (through the SDK's `net::Stream`, which also does TLS through the
//! host's `wasi:tls`):
//! - `url` parses the `connection` URL; `layout` holds the tables'
//!   columns and turns records into rows; `aggregate` counts Tyk records
//!   into tyk-pump's `tyk_aggregated` rows and spells its upsert;
//!   `outcome` is what a database error means for the batch. All pure.
//! - `tsv` spells rows for both bulk paths (COPY text, LOAD DATA). Pure.
//! - `store` is what the batch logic below needs of a database; `pg`
//!   implements it for PostgreSQL (COPY), `my` for MySQL and MariaDB
//!   (LOAD DATA LOCAL INFILE, multi-row INSERT where a batch needs
//!   isolating) over the `mysql` protocol client.

mod aggregate;
mod layout;
mod my;
pub mod mysql;
mod outcome;
mod pg;
mod store;
mod tsv;

use std::collections::HashSet;
use std::time::{Duration, Instant};

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

/// How often old counted ids are deleted, and how many at most at once,
/// so the cleanup never holds up a batch for long.
const CLEANUP_EVERY: Duration = Duration::from_secs(3600);
const CLEANUP_LIMIT: u64 = 100_000;

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
    /// Write tyk-pump's `tyk_aggregated` (its `sql_aggregate` pump)
    /// instead of raw records; Tyk records only. `table` then names the
    /// aggregate table (default `tyk_aggregated`).
    #[serde(default)]
    aggregate: bool,
    /// Aggregates: minute buckets instead of hours.
    #[serde(default)]
    store_analytics_per_minute: bool,
    /// Aggregates: count every record's path (`endpoints` and the other
    /// path dimensions), not only those the gateway marks `TrackPath`.
    #[serde(default)]
    track_all_paths: bool,
    /// Aggregates: tags starting with one of these are not counted.
    #[serde(default)]
    ignore_tag_prefix_list: Vec<String>,
    /// Aggregates: do not create the `<table>_idx_dimension` index.
    #[serde(default)]
    omit_index_creation: bool,
    /// Aggregates: how long a counted record id is remembered (default
    /// 7d). A record redelivered later than this is counted again.
    #[serde(default)]
    dedup_ttl: Option<String>,
}

fn default_timeout() -> String {
    "10s".into()
}

const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(7 * 86_400);

/// What `aggregate = true` needs.
struct AggregateMode {
    options: aggregate::Options,
    index: bool,
    dedup_ttl: Duration,
    last_cleanup: Option<Instant>,
}

impl SqlConfig {
    /// The aggregate settings, or `None` for raw records; aggregate
    /// options without `aggregate = true` are a mistake.
    fn aggregate_mode(&self) -> Result<Option<AggregateMode>, String> {
        if !self.aggregate {
            let stray = [
                (
                    "store_analytics_per_minute",
                    self.store_analytics_per_minute,
                ),
                ("track_all_paths", self.track_all_paths),
                (
                    "ignore_tag_prefix_list",
                    !self.ignore_tag_prefix_list.is_empty(),
                ),
                ("omit_index_creation", self.omit_index_creation),
                ("dedup_ttl", self.dedup_ttl.is_some()),
            ];
            if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{name}: applies to aggregates only; set aggregate = true"
                ));
            }
            return Ok(None);
        }
        let dedup_ttl = match &self.dedup_ttl {
            Some(t) => parse_duration(t).map_err(|e| format!("dedup_ttl: {e}"))?,
            None => DEFAULT_DEDUP_TTL,
        };
        if dedup_ttl < Duration::from_secs(60) {
            return Err("dedup_ttl: must be at least 1m".into());
        }
        Ok(Some(AggregateMode {
            options: aggregate::Options {
                per_minute: self.store_analytics_per_minute,
                track_all_paths: self.track_all_paths,
                ignore_tag_prefixes: self.ignore_tag_prefix_list.clone(),
            },
            index: !self.omit_index_creation,
            dedup_ttl,
            last_cleanup: None,
        }))
    }
}

pub struct SqlSink {
    store: Box<dyn Store>,
    table: Option<String>,
    sharding: bool,
    /// Tables known to exist with every column, so each is checked once.
    ready: HashSet<String>,
    /// `Some` when writing aggregates.
    aggregate: Option<AggregateMode>,
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::fatal(format!("invalid config: {e}"))
}

/// The longest `table`: with a day suffix (`_YYYYMMDD`) and the longest
/// index suffix (`_idx_responsecode`) a name stays within PostgreSQL's 63
/// bytes, past which it would cut names and two indexes could collide.
const MAX_TABLE_NAME: usize = 63 - 9 - 17;

/// Table names are quoted in SQL, but a name that needs quoting is a
/// mistake more often than not.
fn check_table(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TABLE_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "table: {name:?} must be 1 to {MAX_TABLE_NAME} letters, digits or _, not starting with a digit"
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
        let aggregate = c.aggregate_mode().map_err(invalid)?;
        let timeout = parse_duration(&c.timeout).map_err(|e| invalid(format!("timeout: {e}")))?;
        if timeout < Duration::from_millis(100) {
            return Err(invalid("timeout: must be at least 100ms"));
        }
        let store: Box<dyn Store> = match url.dialect {
            Dialect::Postgres => {
                let mut pg = pg::Postgres::new(url.clone(), timeout);
                connect_now(pg.connect(), &url)?;
                Box::new(pg)
            }
            Dialect::Mysql => {
                let mut my = my::Mysql::new(url.clone(), timeout);
                connect_now(my.connect(), &url)?;
                Box::new(my)
            }
        };
        pumphouse_sdk::info!("writing to {url}");
        Ok(SqlSink {
            store,
            table: c.table,
            sharding: c.table_sharding,
            ready: HashSet::new(),
            aggregate,
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        if self.aggregate.is_some() {
            if batch.schema != Schema::Tyk {
                return Err(WriteError::Fatal(format!(
                    "invalid config: aggregate = true counts Tyk records; this source's records are {:?}",
                    batch.schema
                )));
            }
            return self.write_aggregates(batch);
        }
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
    /// Counts the batch into the aggregate tables: per table, one
    /// transaction that skips the records counted before.
    fn write_aggregates(&mut self, batch: &Batch) -> Result<(), WriteError> {
        let mut failed: Vec<FailedEvent> = Vec::new();
        let records: Vec<(u32, u64, TykRecord)> = decode_all(batch, &mut failed);
        let base = self
            .table
            .clone()
            .unwrap_or_else(|| aggregate::DEFAULT_TABLE.to_string());
        let mut tables: Vec<(String, Vec<&Decoded<TykRecord>>)> = Vec::new();
        for record in &records {
            let table = self.table_for(&base, record.2.timestamp);
            match tables.iter_mut().find(|(t, _)| *t == table) {
                Some((_, group)) => group.push(record),
                None => tables.push((table, vec![record])),
            }
        }
        let (options, index) = match &self.aggregate {
            Some(mode) => (mode.options.clone(), mode.index),
            None => unreachable!("called in aggregate mode only"),
        };
        let mut counted = 0usize;
        for (table, group) in &tables {
            if !self.ready.contains(table) {
                self.store
                    .ensure_aggregate_table(table, index)
                    .map_err(|f| self.write_error(f))?;
                self.ready.insert(table.clone());
            }
            let mut ids: Vec<u64> = group.iter().map(|(_, id, _)| *id).collect();
            ids.sort_unstable();
            ids.dedup();
            let mut rows = |new: &HashSet<u64>| {
                // A record twice in one batch counts once, like one
                // delivered twice.
                let mut taken = HashSet::new();
                let fresh = group
                    .iter()
                    .filter(|(_, id, _)| new.contains(id) && taken.insert(*id))
                    .map(|(_, _, r)| r);
                aggregate::aggregate(fresh, &options)
                    .iter()
                    .map(aggregate::Aggregate::values)
                    .collect()
            };
            let result = self.store.upsert_aggregates(table, &ids, &mut rows);
            counted += result.map_err(|f| self.write_error(f))?;
        }
        pumphouse_sdk::metrics::counter_add("records_aggregated", counted as u64, &[]);
        self.cleanup();
        if failed.is_empty() {
            return Ok(());
        }
        failed.sort_by_key(|f| f.index);
        Err(WriteError::Partial(failed))
    }

    /// Deletes counted ids older than `dedup_ttl`, at most once per
    /// [`CLEANUP_EVERY`]; a failure only waits for the next time.
    fn cleanup(&mut self) {
        let Some(mode) = self.aggregate.as_mut() else {
            return;
        };
        if mode
            .last_cleanup
            .is_some_and(|at| at.elapsed() < CLEANUP_EVERY)
        {
            return;
        }
        mode.last_cleanup = Some(Instant::now());
        let ttl = mode.dedup_ttl;
        match self.store.forget_counted(ttl, CLEANUP_LIMIT) {
            Ok(0) => {}
            Ok(n) => pumphouse_sdk::info!("forgot {n} counted record ids older than {ttl:?}"),
            Err(f) => pumphouse_sdk::warn!("cannot forget old counted record ids: {f}"),
        }
    }

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

/// The first connection, at `init`: what only the operator can fix (a
/// password, a grant, a certificate, the sandbox) fails the pump's start
/// with the database's message; a database that is down or unreachable
/// does not, as the source's Redis does not: the first batch connects,
/// retrying until it is back.
fn connect_now(result: Result<(), Failure>, url: &ConnUrl) -> Result<(), Error> {
    match result {
        Ok(()) => Ok(()),
        Err(f) if f.class == Class::Fatal => Err(Error::fatal(f.message)),
        Err(f) => {
            pumphouse_sdk::warn!("{url} is not reachable now ({f}); batches retry until it is");
            Ok(())
        }
    }
}

/// A decoded record: its index in the batch, its id, and itself.
type Decoded<T> = (u32, u64, T);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_fit_with_their_day_and_index_suffixes() {
        assert!(check_table("tyk_analytics").is_ok());
        assert!(check_table(&"t".repeat(MAX_TABLE_NAME)).is_ok());
        let longest = format!("{}_20240510_idx_responsecode", "t".repeat(MAX_TABLE_NAME));
        assert_eq!(longest.len(), 63);
        for bad in ["", "1tyk", "tyk-analytics", "tyk analytics", "t\"x"] {
            assert!(check_table(bad).is_err(), "{bad:?}");
        }
        let e = check_table(&"t".repeat(MAX_TABLE_NAME + 1)).unwrap_err();
        assert!(e.contains("1 to 37"), "{e}");
    }
}
