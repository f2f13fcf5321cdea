//! What the sink needs of a database, whichever it is: make sure a table
//! is there, and insert rows idempotently. Each dialect implements
//! [`Store`]; the sink's batch logic (sharding, isolating bad rows) is
//! written once, against it.

use std::fmt;

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

    /// Forgets the connection after a failure, so the next call reconnects.
    fn reset(&mut self);
}
