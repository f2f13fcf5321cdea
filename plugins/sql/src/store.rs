//! What the sink needs of a database, whichever it is: make sure a table
//! is there, insert rows idempotently, and count records into aggregate
//! rows exactly once. Each dialect implements
//! [`Store`]; the sink's batch logic (sharding, isolating bad rows) is
//! written once, against it.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use crate::layout::{Layout, Value};
use crate::outcome::Class;

/// One row to insert: the record's id and its values.
pub struct Row<'a> {
    pub id: u64,
    pub values: Vec<Value<'a>>,
}

/// A failed statement, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: Class,
    pub message: String,
}

impl Failure {
    pub fn new(class: Class, message: impl Into<String>) -> Self {
        Failure {
            class,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub trait Store {
    /// Creates `table` (and its indexes) if it is missing, adds columns of
    /// `layout` a table created earlier lacks, and adds the id column to
    /// a table tyk-pump created.
    fn ensure_table(&mut self, layout: Layout, table: &str) -> Result<(), Failure>;

    /// Inserts `rows` into `table`; rows whose id is there already are
    /// skipped, so after a failure the same rows can be sent again. A refused row fails the whole statement
    /// with [`Class::BadRow`] naming its 1-based position when the
    /// database says which.
    fn insert(&mut self, layout: Layout, table: &str, rows: &[&Row<'_>]) -> Result<(), Failure>;

    /// Creates the aggregate table `table` (with its index unless
    /// `index` is false) and the table of counted ids, when missing.
    fn ensure_aggregate_table(&mut self, table: &str, index: bool) -> Result<(), Failure>;

    /// Counts records into the aggregate table `table` exactly once, in
    /// one transaction: marks which of `ids` are new for `table` in the
    /// ids table, calls `rows` with the new ones, upserts the rows it
    /// returns ([`crate::aggregate::Aggregate::values`]), and commits.
    /// After a failure nothing of it is stored, so the same ids can be
    /// sent again. Returns how many ids were new.
    fn upsert_aggregates(
        &mut self,
        table: &str,
        ids: &[u64],
        rows: &mut dyn FnMut(&HashSet<u64>) -> Vec<Vec<Value<'static>>>,
    ) -> Result<usize, Failure>;

    /// Deletes up to `limit` counted ids older than `ttl`; returns how
    /// many it deleted.
    fn forget_counted(&mut self, ttl: Duration, limit: u64) -> Result<u64, Failure>;

    /// Forgets the connection after a failure, so the next call reconnects.
    fn reset(&mut self);
}
