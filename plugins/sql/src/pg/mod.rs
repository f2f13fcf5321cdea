//! PostgreSQL: the connection (`conn`), its errors (`error`), the COPY
//! text format (`copy`), and the [`Store`] over them.
//!
//! A batch goes in with one `COPY ... FROM STDIN`, PostgreSQL's bulk path.
//! COPY cannot skip rows that are there already, so when a redelivered
//! batch hits the unique id, the batch is copied into a temporary table and
//! moved with `INSERT ... ON CONFLICT DO NOTHING`: the common case costs
//! what `psql \copy` costs, and a redelivery costs one more statement.

pub mod conn;
pub mod copy;
pub mod error;

use std::collections::BTreeSet;
use std::time::Duration;

use conn::{Connection, PgError};

use crate::layout::{create_statements, quote, Layout, ID_COLUMN};
use crate::outcome::Class;
use crate::store::{Failure, Row, Store};
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
                copy::encode_row(out, rows[next].id, &rows[next].values);
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

    fn reset(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.close();
        }
    }
}
