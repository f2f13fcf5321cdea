//! What a database's refusal means for the batch, the same for every
//! dialect: each dialect's error type maps its codes onto [`Class`].

/// What the sink does about a failed statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Transient (connection lost, deadlock, server restarting): retry the
    /// batch later.
    Retry,
    /// Only the operator can fix it (password, grant, missing database).
    Fatal,
    /// A key that is there already: the batch was delivered before.
    Duplicate,
    /// One row the database refuses; `row` is its 1-based position in the
    /// statement when the database says which.
    BadRow { row: Option<u64> },
    /// The statement is too large for the server.
    TooLarge,
    /// Anything else about the batch: let the host bisect it.
    Invalid,
}
