//! MySQL and MariaDB: the [`Store`] over the `mysql` protocol client.
//!
//! A batch goes in with one `LOAD DATA LOCAL INFILE`, the server's bulk
//! path, its rows sent from memory. With LOCAL the server cannot stop the
//! transfer, so a duplicate id or a value it cannot hold becomes a warning
//! instead of an error (as with IGNORE). The load therefore commits only
//! when it raised no warning; otherwise it is rolled back and the batch
//! goes again as multi-row INSERTs of up to [`MAX_STATEMENT`] bytes, which
//! strict mode makes refuse a bad value by its row (dead-lettered alone,
//! never stored truncated), with `ON DUPLICATE KEY UPDATE` after a
//! redelivery hit the unique id. A server that refuses LOCAL
//! (`local_infile = OFF`, MySQL 8's default) gets the INSERTs only.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use pumphouse_sdk::net::{NetError, NetErrorKind, Stream};

use crate::aggregate::{self, IDS_TABLE};
use crate::layout::{mysql_datetime, quote, write_literal, Layout, SqlType, Value, ID_COLUMN};
use crate::mysql::{Client, MysqlError, Options, QueryResult, Transport};
use crate::outcome::Class;
use crate::store::{Failure, Row, Store};
use crate::tsv;
use pumphouse_wire::sql_url::{ConnUrl, Dialect, TlsMode};

/// The largest INSERT sent, well under MariaDB's and MySQL's default
/// `max_allowed_packet` (16 MiB and 64 MiB).
const MAX_STATEMENT: usize = 4 * 1024 * 1024;

/// Strict: a value a column cannot hold is an error, not a warning and a
/// silently changed value. Times are written and read as UTC.
const SESSION: &str =
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'";

impl Transport for Stream {
    fn upgrade_tls(&mut self, server_name: &str) -> io::Result<()> {
        self.start_tls(server_name).map_err(io::Error::from)
    }
}

pub struct Mysql {
    url: ConnUrl,
    timeout: Duration,
    client: Option<Client<Stream>>,
    sql: String,
    /// The rows of a LOAD DATA, kept to reuse its allocation.
    file: Vec<u8>,
    /// False once the server refused `LOAD DATA LOCAL`: INSERTs only.
    load_data: bool,
}

/// Server errors that mean LOCAL is off: the command not allowed (1148),
/// MySQL 8's local_infile off on either side (3948, 2068), MariaDB's
/// capability off (4166).
const LOCAL_REFUSED: [u16; 4] = [1148, 3948, 2068, 4166];

/// A TLS failure inside an I/O error from the SDK's stream.
fn tls_failure(e: &MysqlError) -> bool {
    match e {
        MysqlError::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<NetError>())
            .is_some_and(|n| matches!(n.kind(), NetErrorKind::Tls | NetErrorKind::Denied)),
        _ => false,
    }
}

impl Mysql {
    pub fn new(url: ConnUrl, timeout: Duration) -> Self {
        Mysql {
            url,
            timeout,
            client: None,
            sql: String::new(),
            file: Vec::new(),
            load_data: true,
        }
    }

    /// The rows in one `LOAD DATA LOCAL INFILE`, in a transaction kept
    /// only when the server raised no warning. `Ok(false)`: nothing was
    /// kept (a warning, or LOCAL refused) and the INSERTs must run.
    fn load_rows(
        &mut self,
        layout: Layout,
        table: &str,
        rows: &[&Row<'_>],
    ) -> Result<bool, Failure> {
        if !self.load_data {
            return Ok(false);
        }
        if !self.client()?.local_infile() {
            self.local_refused("the server does not offer it");
            return Ok(false);
        }
        let q = |n: &str| quote(Dialect::Mysql, n);
        let columns: Vec<String> = std::iter::once(ID_COLUMN)
            .chain(layout.columns().iter().map(|(n, _)| *n))
            .map(q)
            .collect();
        // The terminators and escape tsv writes, spelled out rather than
        // left to the server's defaults.
        let sql = format!(
            "LOAD DATA LOCAL INFILE 'batch.tsv' INTO TABLE {} CHARACTER SET utf8mb4 \
             FIELDS TERMINATED BY '\\t' ENCLOSED BY '' ESCAPED BY '\\\\' \
             LINES TERMINATED BY '\\n' STARTING BY '' ({})",
            q(table),
            columns.join(", ")
        );
        let mut file = std::mem::take(&mut self.file);
        file.clear();
        for row in rows {
            tsv::encode_row(&mut file, Dialect::Mysql, row.id, &row.values);
        }
        self.query("START TRANSACTION")?;
        let loaded = self.client()?.load_local(&sql, &file);
        self.file = file;
        match loaded {
            Ok(QueryResult::Ok {
                warnings: 0,
                affected_rows,
                ..
            }) if affected_rows == rows.len() as u64 => self.query("COMMIT").map(|_| true),
            Ok(_) => {
                self.rollback();
                Ok(false)
            }
            Err(MysqlError::Server { code, message, .. }) if LOCAL_REFUSED.contains(&code) => {
                self.rollback();
                self.local_refused(&message);
                Ok(false)
            }
            Err(e) => {
                let failure = self.fail(e);
                self.rollback();
                Err(failure)
            }
        }
    }

    /// Turns the LOAD DATA path off for this instance, saying why once.
    fn local_refused(&mut self, why: &str) {
        self.load_data = false;
        pumphouse_sdk::info!(
            "{}: LOAD DATA LOCAL is off ({why}); batches go in as multi-row INSERTs. Set local_infile = ON on the server for its bulk path",
            self.url.address()
        );
    }

    /// Connects now, so a wrong password is reported when the pump starts.
    pub fn connect(&mut self) -> Result<(), Failure> {
        self.client().map(|_| ())
    }

    fn open(&self, tls: bool) -> Result<Client<Stream>, MysqlError> {
        let stream = Stream::connect(&self.url.address(), self.timeout)
            .map_err(|e| MysqlError::Io(e.into()))?;
        let options = Options {
            user: self.url.user.clone(),
            password: self.url.password.clone().unwrap_or_default(),
            database: Some(self.url.database.clone()),
            tls,
            server_name: self.url.host.clone(),
            ..Options::default()
        };
        let mut client = Client::connect(stream, &options)?;
        client.query(SESSION)?;
        Ok(client)
    }

    fn client(&mut self) -> Result<&mut Client<Stream>, Failure> {
        if self.client.is_none() {
            let opened = match self.url.tls {
                TlsMode::Disable => self.open(false),
                TlsMode::Require => self.open(true),
                // As the mysql client's PREFERRED: TLS when the server
                // offers it and the host can verify it, else in the clear.
                TlsMode::Prefer => match self.open(true) {
                    // The server offers no TLS: the clear, as asked.
                    Err(MysqlError::Unsupported(_)) => self.open(false),
                    Err(e) if tls_failure(&e) => {
                        pumphouse_sdk::warn!(
                            "{}: no TLS ({e}); ssl-mode=PREFERRED connects without it. Set ssl-mode=REQUIRED (and sandbox.tls_ca_files) to insist on TLS, or DISABLED to skip it",
                            self.url.address()
                        );
                        self.open(false)
                    }
                    other => other,
                },
            };
            let client = opened.map_err(|e| self.fail(e))?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    fn fail(&mut self, e: MysqlError) -> Failure {
        let class = if tls_failure(&e) {
            Class::Fatal
        } else {
            e.class()
        };
        if !matches!(e, MysqlError::Server { .. }) {
            self.client = None;
        }
        Failure::new(class, format!("{}: {e}", self.url))
    }

    fn query(&mut self, sql: &str) -> Result<QueryResult, Failure> {
        let result = self.client()?.query(sql);
        result.map_err(|e| self.fail(e))
    }

    /// The rows in statements of up to [`MAX_STATEMENT`] bytes inside one
    /// transaction; `upsert` adds the clause that skips ids there already.
    fn insert_rows(
        &mut self,
        layout: Layout,
        table: &str,
        rows: &[&Row<'_>],
        upsert: bool,
    ) -> Result<(), Failure> {
        let q = |n: &str| quote(Dialect::Mysql, n);
        let columns: Vec<String> = std::iter::once(ID_COLUMN)
            .chain(layout.columns().iter().map(|(n, _)| *n))
            .map(q)
            .collect();
        let head = format!("INSERT INTO {} ({}) VALUES ", q(table), columns.join(", "));
        let tail = if upsert {
            format!(" ON DUPLICATE KEY UPDATE {0} = {0}", q(ID_COLUMN))
        } else {
            String::new()
        };
        self.query("START TRANSACTION")?;
        let mut first = 0usize;
        let result = self.run_chunked(
            &head,
            &tail,
            rows,
            |sql, row| {
                sql.push('(');
                let _ = write!(sql, "{}", row.id as i64);
                for value in &row.values {
                    sql.push(',');
                    literal(sql, value);
                }
                sql.push(')');
            },
            &mut first,
        );
        if let Err(f) = result {
            self.rollback();
            return Err(match f.class {
                // "at row N" counts within the failed statement, which
                // began at row `first` of the batch.
                Class::BadRow { row: Some(n) } => Failure::new(
                    Class::BadRow {
                        row: Some(n + first as u64),
                    },
                    f.message,
                ),
                // A duplicate of the id: the batch was here before.
                Class::BadRow { row: None } | Class::Invalid
                    if f.message.contains(&format!("{table}_{ID_COLUMN}")) =>
                {
                    Failure::new(Class::Duplicate, f.message)
                }
                _ => f,
            });
        }
        self.query("COMMIT").map(|_| ())
    }

    /// Ends a failed transaction; a connection that cannot is dropped.
    fn rollback(&mut self) {
        if let Some(client) = self.client.as_mut() {
            if client.query("ROLLBACK").is_err() {
                self.client = None;
            }
        }
    }

    /// Runs `head` + rows + `tail` in statements of up to
    /// [`MAX_STATEMENT`] bytes; `row` appends one row's `(...)`. On a
    /// failure `failed_at` is the index of the failed statement's first
    /// item.
    fn run_chunked<T>(
        &mut self,
        head: &str,
        tail: &str,
        items: &[T],
        mut row: impl FnMut(&mut String, &T),
        failed_at: &mut usize,
    ) -> Result<(), Failure> {
        let mut start = 0;
        while start < items.len() {
            *failed_at = start;
            let mut sql = std::mem::take(&mut self.sql);
            sql.clear();
            sql.push_str(head);
            let mut end = start;
            while end < items.len() && (end == start || sql.len() < MAX_STATEMENT) {
                if end > start {
                    sql.push(',');
                }
                row(&mut sql, &items[end]);
                end += 1;
            }
            sql.push_str(tail);
            let result = self.query(&sql);
            self.sql = sql;
            result?;
            start = end;
        }
        Ok(())
    }

    /// The body of [`Store::upsert_aggregates`], inside its transaction.
    fn count_once(
        &mut self,
        table: &str,
        ids: &[u64],
        rows: &mut dyn FnMut(&HashSet<u64>) -> Vec<Vec<Value<'static>>>,
    ) -> Result<usize, Failure> {
        let q = |n: &str| quote(Dialect::Mysql, n);
        let mut target = String::new();
        quoted(&mut target, table);
        // FOR UPDATE locks the ids found and the gaps of those missing:
        // a second writer of the same batch waits for this one, then
        // finds them.
        let mut counted: HashSet<u64> = HashSet::new();
        for chunk in ids.chunks(10_000) {
            let list: Vec<String> = chunk.iter().map(|id| (*id as i64).to_string()).collect();
            let select = format!(
                "SELECT {} FROM {} WHERE {} = {target} AND {0} IN ({}) FOR UPDATE",
                q("id"),
                q(IDS_TABLE),
                q("target"),
                list.join(",")
            );
            if let QueryResult::Rows { rows, .. } = self.query(&select)? {
                counted.extend(
                    rows.iter()
                        .filter_map(|r| r.first()?.as_deref())
                        .filter_map(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                        .map(|id| id as u64),
                );
            }
        }
        let new: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !counted.contains(id))
            .collect();
        let head = format!(
            "INSERT INTO {} ({}, {}, {}) VALUES ",
            q(IDS_TABLE),
            q("target"),
            q("id"),
            q("counted_at")
        );
        self.run_chunked(
            &head,
            "",
            &new,
            |sql, id| {
                let _ = write!(sql, "({target},{},NOW())", *id as i64);
            },
            &mut 0,
        )?;
        let new: HashSet<u64> = new.into_iter().collect();
        let aggregates = rows(&new);
        let head = aggregate::insert_head(Dialect::Mysql, table);
        let tail = aggregate::conflict_clause(Dialect::Mysql, table);
        self.run_chunked(
            &head,
            &tail,
            &aggregates,
            |sql, row| {
                sql.push('(');
                for (j, value) in row.iter().enumerate() {
                    if j > 0 {
                        sql.push(',');
                    }
                    literal(sql, value);
                }
                sql.push(')');
            },
            &mut 0,
        )?;
        self.query("COMMIT")?;
        Ok(new.len())
    }
}

/// Appends `value` as a MySQL literal.
fn literal(out: &mut String, value: &Value<'_>) {
    write_literal(out, value, quoted, |out, t| quoted(out, &mysql_datetime(t)));
}

/// A string literal, escaped as the server reads it without
/// `NO_BACKSLASH_ESCAPES` (which the session's sql_mode leaves out).
fn quoted(out: &mut String, s: &str) {
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1a}' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// `CREATE TABLE` with its keys inline: MySQL has no `CREATE INDEX IF
/// NOT EXISTS`, and one statement creates the table and its indexes at
/// once.
fn create_table(layout: Layout, table: &str) -> String {
    let q = |n: &str| quote(Dialect::Mysql, n);
    let mut parts = vec![format!("{} bigint", q(ID_COLUMN))];
    parts.extend(
        layout
            .columns()
            .iter()
            .map(|(n, t)| format!("{} {}", q(n), t.spell(Dialect::Mysql))),
    );
    parts.push(format!(
        "UNIQUE KEY {} ({})",
        q(&format!("{table}_{ID_COLUMN}")),
        q(ID_COLUMN)
    ));
    for column in layout.indexed() {
        let prefix = match layout.columns().iter().find(|(n, _)| n == column) {
            Some((_, SqlType::Text)) => "(191)",
            _ => "",
        };
        parts.push(format!(
            "KEY {} ({}{prefix})",
            q(&format!("{table}_idx_{column}")),
            q(column)
        ));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}) DEFAULT CHARSET = utf8mb4",
        q(table),
        parts.join(", ")
    )
}

impl Store for Mysql {
    fn ensure_table(&mut self, layout: Layout, table: &str) -> Result<(), Failure> {
        let mut select = String::from(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ",
        );
        quoted(&mut select, table);
        let existing: BTreeSet<String> = match self.query(&select)? {
            QueryResult::Rows { rows, .. } => rows
                .into_iter()
                .filter_map(|mut r| r.pop().flatten())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .collect(),
            QueryResult::Ok { .. } => BTreeSet::new(),
        };
        let q = |n: &str| quote(Dialect::Mysql, n);
        let statements: Vec<String> = if existing.is_empty() {
            vec![create_table(layout, table)]
        } else {
            let mut alter: Vec<String> = layout
                .columns()
                .iter()
                .filter(|(name, _)| !existing.contains(*name))
                .map(|(name, ty)| format!("ADD COLUMN {} {}", q(name), ty.spell(Dialect::Mysql)))
                .collect();
            if !existing.contains(ID_COLUMN) {
                // A table tyk-pump created: old rows keep NULL ids.
                alter.push(format!("ADD COLUMN {} bigint", q(ID_COLUMN)));
                alter.push(format!(
                    "ADD UNIQUE KEY {} ({})",
                    q(&format!("{table}_{ID_COLUMN}")),
                    q(ID_COLUMN)
                ));
            }
            if alter.is_empty() {
                Vec::new()
            } else {
                vec![format!("ALTER TABLE {} {}", q(table), alter.join(", "))]
            }
        };
        for statement in statements {
            pumphouse_sdk::info!("{}: preparing table {table}", self.url.address());
            self.query(&statement)?;
        }
        Ok(())
    }

    fn insert(&mut self, layout: Layout, table: &str, rows: &[&Row<'_>]) -> Result<(), Failure> {
        if self.load_rows(layout, table, rows)? {
            return Ok(());
        }
        // Plain INSERTs, all in one transaction (one commit per batch): a
        // bad value fails by its row. A redelivered row fails them on the
        // unique id; then the batch goes again with the duplicate clause.
        match self.insert_rows(layout, table, rows, false) {
            Err(f) if f.class == Class::Duplicate => self.insert_rows(layout, table, rows, true),
            other => other,
        }
    }

    fn ensure_aggregate_table(&mut self, table: &str, index: bool) -> Result<(), Failure> {
        let mut select = String::from(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name IN (",
        );
        quoted(&mut select, table);
        select.push(',');
        quoted(&mut select, IDS_TABLE);
        select.push(')');
        let existing: BTreeSet<String> = match self.query(&select)? {
            QueryResult::Rows { rows, .. } => rows
                .into_iter()
                .filter_map(|mut r| r.pop().flatten())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .collect(),
            QueryResult::Ok { .. } => BTreeSet::new(),
        };
        let mut statements = Vec::new();
        if !existing.contains(table) {
            statements.extend(aggregate::create_statements(Dialect::Mysql, table, index));
        }
        if !existing.contains(IDS_TABLE) {
            statements.extend(aggregate::ids_statements(Dialect::Mysql));
        }
        for statement in statements {
            pumphouse_sdk::info!("{}: preparing table {table}", self.url.address());
            self.query(&statement)?;
        }
        Ok(())
    }

    fn upsert_aggregates(
        &mut self,
        table: &str,
        ids: &[u64],
        rows: &mut dyn FnMut(&HashSet<u64>) -> Vec<Vec<Value<'static>>>,
    ) -> Result<usize, Failure> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.query("START TRANSACTION")?;
        self.count_once(table, ids, rows).map_err(|f| {
            self.rollback();
            match f.class {
                // Another writer counted an id between our SELECT and
                // INSERT: next time this one finds it.
                Class::Duplicate => Failure::new(Class::Retry, f.message),
                Class::BadRow { row: None } if f.message.contains("Duplicate entry") => {
                    Failure::new(Class::Retry, f.message)
                }
                _ => f,
            }
        })
    }

    fn forget_counted(&mut self, ttl: Duration, limit: u64) -> Result<u64, Failure> {
        let q = |n: &str| quote(Dialect::Mysql, n);
        match self.query(&format!(
            "DELETE FROM {} WHERE {} < NOW() - INTERVAL {} SECOND LIMIT {limit}",
            q(IDS_TABLE),
            q("counted_at"),
            ttl.as_secs()
        ))? {
            QueryResult::Ok { affected_rows, .. } => Ok(affected_rows),
            QueryResult::Rows { .. } => Ok(0),
        }
    }

    fn reset(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::Timestamp;
    use std::borrow::Cow;

    #[test]
    fn literals() {
        let mut out = String::new();
        for v in [
            Value::Null,
            Value::Int(-1),
            Value::Bool(false),
            Value::Float(0.5),
            Value::Text(Cow::Borrowed("it's a \\ \0 \n")),
            Value::Time(Timestamp::new(1_715_342_400, 5_600_000)),
        ] {
            literal(&mut out, &v);
            out.push('|');
        }
        assert_eq!(
            out,
            "NULL|-1|FALSE|0.5|'it\\'s a \\\\ \\0 \\n'|'2024-05-10 12:00:00.006'|"
        );
    }

    #[test]
    fn the_table_has_its_keys_inline() {
        let sql = create_table(Layout::Tyk, "tyk_analytics");
        assert!(sql.contains("`geo_city_geoname_id` bigint unsigned"));
        assert!(sql.contains("UNIQUE KEY `tyk_analytics_pumphouse_id` (`pumphouse_id`)"));
        assert!(sql.contains("KEY `tyk_analytics_idx_apikey` (`apikey`(191))"));
        assert!(sql.contains("KEY `tyk_analytics_idx_responsecode` (`responsecode`)"));
    }
}
