//! PostgreSQL's errors, read from an `ErrorResponse`, and what each means
//! for the batch. Pure.

use std::fmt;

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorResponseBody;

use crate::outcome::Class;

/// The fields of an `ErrorResponse` the sink uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbError {
    /// SQLSTATE, e.g. `23505`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    /// Where: for COPY, `COPY table, line N, column c: "..."`.
    pub context: Option<String>,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl DbError {
    /// Reads an `ErrorResponse`; a malformed one keeps what it could read.
    pub fn from_body(body: &ErrorResponseBody) -> DbError {
        let mut e = DbError::default();
        let mut fields = body.fields();
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'W' => e.context = Some(value),
                _ => {}
            }
        }
        e
    }

    /// What the sink does about it.
    pub fn class(&self) -> Class {
        let code = self.code.as_str();
        match code {
            // A redelivered batch: its rows are there already.
            "23505" => Class::Duplicate,
            // Deadlock, serialization failure, lock timeouts, a server
            // going down or not up yet, too many connections, out of
            // resources: all pass.
            "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03" | "53300" => {
                Class::Retry
            }
            _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("58") => {
                Class::Retry
            }
            // Wrong password or user, no such database, no privilege, a
            // read-only server: only the operator can fix these.
            "28000" | "28P01" | "3D000" | "42501" | "25006" => Class::Fatal,
            // Bad data: a value the column cannot hold, a NUL byte in
            // text, a violated NOT NULL or CHECK, invalid JSON.
            _ if code.starts_with("22") || code.starts_with("23") => Class::BadRow {
                row: self.copy_line(),
            },
            // A row larger than a page can hold, or a statement too big.
            "54000" | "54001" => Class::BadRow {
                row: self.copy_line(),
            },
            _ => Class::Invalid,
        }
    }

    /// The 1-based line of the COPY data that failed, from the context
    /// (`COPY t, line 17, column c: ...`).
    pub fn copy_line(&self) -> Option<u64> {
        let context = self.context.as_deref()?;
        let rest = &context[context.find("line ")? + 5..];
        let digits: &str = &rest[..rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len())];
        digits.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str, context: Option<&str>) -> DbError {
        DbError {
            code: code.into(),
            message: "m".into(),
            detail: None,
            context: context.map(String::from),
        }
    }

    #[test]
    fn classes() {
        assert_eq!(err("23505", None).class(), Class::Duplicate);
        assert_eq!(err("40P01", None).class(), Class::Retry);
        assert_eq!(err("08006", None).class(), Class::Retry);
        assert_eq!(err("57P01", None).class(), Class::Retry);
        assert_eq!(err("28P01", None).class(), Class::Fatal);
        assert_eq!(err("42501", None).class(), Class::Fatal);
        assert_eq!(err("3D000", None).class(), Class::Fatal);
        assert_eq!(
            err(
                "22P02",
                Some("COPY iam_analytics, line 17, column request: \"{\"")
            )
            .class(),
            Class::BadRow { row: Some(17) }
        );
        assert_eq!(
            err("23502", Some("COPY t, line 3: \"...\"")).class(),
            Class::BadRow { row: Some(3) }
        );
        assert_eq!(err("22021", None).class(), Class::BadRow { row: None });
        assert_eq!(err("42P01", None).class(), Class::Invalid);
    }

    #[test]
    fn odd_contexts_give_no_line() {
        for c in ["", "line ", "COPY t, line x", "online"] {
            assert_eq!(err("22P02", Some(c)).copy_line(), None, "{c}");
        }
    }
}
