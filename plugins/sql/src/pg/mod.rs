//! PostgreSQL: the connection (`conn`), its errors (`error`), and the
//! [`Store`] over them; COPY's rows come from [`crate::tsv`].
//!
//! A batch goes in with one `COPY ... FROM STDIN`, PostgreSQL's bulk path.
//! COPY cannot skip rows that are there already, so when a redelivered
//! batch hits the unique id, the batch is copied into a temporary table and
//! moved with `INSERT ... ON CONFLICT DO NOTHING`: the common case costs
//! what `psql \copy` costs, and a redelivery costs one more statement.

pub mod conn;
pub mod error;

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use conn::{Connection, PgError};

use crate::aggregate::{self, IDS_TABLE};
use crate::layout::{
    create_statements, quote, round_time, write_literal, Layout, Value, ID_COLUMN,
};
use crate::outcome::Class;
use crate::store::{Failure, Row, Store};
use crate::tsv;
use pumphouse_wire::sql_url::{ConnUrl, Dialect};

pub struct Postgres {
    url: ConnUrl,
    timeout: Duration,
    conn: Option<Connection>,
}

impl Postgres {
    pub fn new(url: ConnUrl, timeout: Duration) -> Self {
        Postgres {
            url,
            timeout,
            conn: None,
        }
    }

    /// Connects now, so a wrong password or an unreachable server is
    /// reported when the pump starts.
    pub fn connect(&mut self) -> Result<(), Failure> {
        self.conn().map(|_| ())
    }

    fn conn(&mut self) -> Result<&mut Connection, Failure> {
        if self.conn.is_none() {
            let conn = Connection::open(&self.url, self.timeout).map_err(|e| self.fail(e))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Classifies `e`, dropping the connection unless the server refused a
    /// statement on an otherwise healthy one.
    fn fail(&mut self, e: PgError) -> Failure {
        let class = match &e {
            PgError::Db(db) => db.class(),
            PgError::Net(net) => match net.kind() {
                pumphouse_sdk::net::NetErrorKind::Denied
                | pumphouse_sdk::net::NetErrorKind::Tls => Class::Fatal,
                _ => Class::Retry,
            },
            PgError::Auth(_) => Class::Fatal,
            PgError::Io(_) | PgError::Protocol(_) => Class::Retry,
        };
        if !matches!(e, PgError::Db(_)) {
            self.conn = None;
        }
        Failure::new(class, format!("{}: {e}", self.url))
    }

    fn query(&mut self, sql: &str) -> Result<conn::QueryResult, Failure> {
        let result = self.conn()?.query(sql);
        result.map_err(|e| self.fail(e))
    }

    /// COPYs `rows`, encoding them chunk by chunk as they are sent.
    fn copy(&mut self, statement: &str, rows: &[&Row<'_>]) -> Result<u64, Failure> {
        let mut next = 0;
        let fill = |out: &mut Vec<u8>| {
            while next < rows.len() && out.len() < conn::COPY_CHUNK {
                tsv::encode_row(out, Dialect::Postgres, rows[next].id, &rows[next].values);
                next += 1;
            }
            next < rows.len()
        };
        let result = self.conn()?.copy_in(statement, fill);
        result.map_err(|e| self.fail(e))
    }

    /// Leaves a failed transaction so the connection is usable again.
    fn rollback(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            if conn.query("ROLLBACK").is_err() {
                self.conn = None;
            }
        }
    }
}

/// `"id", "col", ...` of `layout`, for COPY.
fn column_list(layout: Layout) -> String {
    std::iter::once(ID_COLUMN)
        .chain(layout.columns().iter().map(|(n, _)| *n))
        .map(|n| quote(Dialect::Postgres, n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Appends `value` as a literal (`standard_conforming_strings`, which
/// every session sets on, so only quotes are doubled).
fn value_literal(out: &mut String, value: &Value<'_>) {
    write_literal(out, value, text_literal, |out, t| {
        // Rounded to the column's microseconds here: the server reads
        // the fraction as a double, and a half microsecond rounds either way.
        let _ = write!(out, "'{}'", round_time(t, 1_000).to_rfc3339());
    });
}

/// A NUL would end the query message early; as an escape the server
/// refuses it (22021) like any value text cannot hold.
fn text_literal(out: &mut String, s: &str) {
    if !s.contains('\0') {
        out.push_str(&literal(s));
        return;
    }
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\0' => out.push_str("\\x00"),
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

impl Postgres {
    /// The body of [`Store::upsert_aggregates`], inside its transaction.
    fn count_once(
        &mut self,
        table: &str,
        ids: &[u64],
        rows: &mut dyn FnMut(&HashSet<u64>) -> Vec<Vec<Value<'static>>>,
    ) -> Result<usize, Failure> {
        let q = |n: &str| quote(Dialect::Postgres, n);
        let target = literal(table);
        let mut sql = format!(
            "BEGIN; INSERT INTO {} ({}, {}, {}) VALUES ",
            q(IDS_TABLE),
            q("target"),
            q("id"),
            q("counted_at")
        );
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let _ = write!(sql, "({target},{},now())", *id as i64);
        }
        sql.push_str(" ON CONFLICT DO NOTHING RETURNING ");
        sql.push_str(&q("id"));
        // Rows another transaction is inserting wait for it to end, so
        // two writers of one batch cannot both count it.
        let new: HashSet<u64> = self
            .query(&sql)?
            .rows
            .iter()
            .filter_map(|r| r.first()?.as_deref()?.parse::<i64>().ok())
            .map(|id| id as u64)
            .collect();
        let aggregates = rows(&new);
        let mut sql = String::new();
        if !aggregates.is_empty() {
            sql.push_str(&aggregate::insert_head(Dialect::Postgres, table));
            for (i, row) in aggregates.iter().enumerate() {
                sql.push_str(if i > 0 { ",(" } else { "(" });
                for (j, value) in row.iter().enumerate() {
                    if j > 0 {
                        sql.push(',');
                    }
                    value_literal(&mut sql, value);
                }
                sql.push(')');
            }
            sql.push_str(&aggregate::conflict_clause(Dialect::Postgres, table));
            sql.push_str("; ");
        }
        sql.push_str("COMMIT");
        self.query(&sql)?;
        Ok(new.len())
    }
}

impl Store for Postgres {
    fn ensure_table(&mut self, layout: Layout, table: &str) -> Result<(), Failure> {
        // Ask first: CREATE ... IF NOT EXISTS needs privileges on the
        // schema even when the table exists, which a least-privilege user
        // of a table made by the operator does not have.
        let existing: BTreeSet<String> = self
            .query(&format!(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = {}",
                literal(table)
            ))?
            .rows
            .into_iter()
            .filter_map(|mut r| r.pop().flatten())
            .collect();
        let statements = if existing.is_empty() {
            create_statements(layout, Dialect::Postgres, table)
        } else {
            let q = |n: &str| quote(Dialect::Postgres, n);
            let mut missing: Vec<String> = layout
                .columns()
                .iter()
                .filter(|(name, _)| !existing.contains(*name))
                .map(|(name, ty)| {
                    format!(
                        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                        q(table),
                        q(name),
                        ty.spell(Dialect::Postgres)
                    )
                })
                .collect();
            if !existing.contains(ID_COLUMN) {
                missing.extend(
                    create_statements(layout, Dialect::Postgres, table)
                        .into_iter()
                        .skip(1),
                );
            }
            missing
        };
        if statements.is_empty() {
            return Ok(());
        }
        pumphouse_sdk::info!(
            "{}: preparing table {table} ({} statements)",
            self.url.address(),
            statements.len()
        );
        self.query(&statements.join(";\n")).map(|_| ())
    }

    fn insert(&mut self, layout: Layout, table: &str, rows: &[&Row<'_>]) -> Result<(), Failure> {
        let q_table = quote(Dialect::Postgres, table);
        let columns = column_list(layout);
        let fast = format!("COPY {q_table} ({columns}) FROM STDIN");
        match self.copy(&fast, rows) {
            Ok(_) => return Ok(()),
            Err(f) if f.class == Class::Duplicate => {}
            Err(f) => return Err(f),
        }
        // Some rows are there already: stage, then move what is new.
        let stage = quote(Dialect::Postgres, "pumphouse_stage");
        let begin = format!(
            "BEGIN; CREATE TEMP TABLE {stage} (LIKE {q_table} INCLUDING DEFAULTS) ON COMMIT DROP"
        );
        let result = self
            .query(&begin)
            .and_then(|_| self.copy(&format!("COPY {stage} ({columns}) FROM STDIN"), rows))
            .and_then(|_| {
                self.query(&format!(
                    "INSERT INTO {q_table} ({columns}) SELECT {columns} FROM {stage} ON CONFLICT ({}) DO NOTHING; COMMIT",
                    quote(Dialect::Postgres, ID_COLUMN)
                ))
            });
        match result {
            Ok(_) => Ok(()),
            Err(f) => {
                self.rollback();
                Err(f)
            }
        }
    }

    fn ensure_aggregate_table(&mut self, table: &str, index: bool) -> Result<(), Failure> {
        let existing: BTreeSet<String> = self
            .query(&format!(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name IN ({}, {})",
                literal(table),
                literal(IDS_TABLE)
            ))?
            .rows
            .into_iter()
            .filter_map(|mut r| r.pop().flatten())
            .collect();
        let mut statements = Vec::new();
        if !existing.contains(table) {
            statements.extend(aggregate::create_statements(
                Dialect::Postgres,
                table,
                index,
            ));
        }
        if !existing.contains(IDS_TABLE) {
            statements.extend(aggregate::ids_statements(Dialect::Postgres));
        }
        if statements.is_empty() {
            return Ok(());
        }
        pumphouse_sdk::info!("{}: preparing table {table}", self.url.address());
        self.query(&statements.join(";\n")).map(|_| ())
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
        self.count_once(table, ids, rows)
            .inspect_err(|_| self.rollback())
    }

    fn forget_counted(&mut self, ttl: Duration, limit: u64) -> Result<u64, Failure> {
        let q = |n: &str| quote(Dialect::Postgres, n);
        let result = self.query(&format!(
            "DELETE FROM {0} WHERE ({1}, {2}) IN (SELECT {1}, {2} FROM {0} WHERE {3} < now() - interval '{4} seconds' LIMIT {limit})",
            q(IDS_TABLE),
            q("target"),
            q("id"),
            q("counted_at"),
            ttl.as_secs()
        ))?;
        Ok(result
            .tag
            .strip_prefix("DELETE ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    fn reset(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.close();
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
            Value::Float(0.5),
            Value::Text(Cow::Borrowed("it's \\ here")),
            Value::Text(Cow::Borrowed("a\0'b\\")),
            Value::Time(Timestamp::new(1_715_342_400, 963_026_500)),
        ] {
            value_literal(&mut out, &v);
            out.push('|');
        }
        assert_eq!(
            out,
            "NULL|-1|0.5|'it''s \\ here'|E'a\\x00\\'b\\\\'|'2024-05-10T12:00:00.963027Z'|"
        );
    }
}
