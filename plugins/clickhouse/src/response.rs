//! What a ClickHouse HTTP answer means for the batch. Pure, so the
//! mapping is unit-tested natively.
//!
//! ClickHouse answers errors with `Code: NN, e.displayText() = ...` and a
//! status that is not always telling (500 for most errors, 404 for an
//! unknown table, 401 for a wrong password); the code decides.

/// The verdict on one `INSERT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every row went in.
    Inserted,
    /// Row `row` (1-based, in the body sent) holds bad data; ClickHouse
    /// inserted nothing.
    BadRow { row: usize, message: String },
    /// Bad data somewhere, row unknown; nothing was inserted.
    Invalid(String),
    /// The body was too large for the server.
    TooLarge(String),
    /// Transient: try the same rows again later.
    Retry(String),
    /// Configuration is wrong (table, database, user, columns).
    Fatal(String),
}

/// Codes of data that does not parse or fit the column: another try with
/// the same row fails the same way.
const BAD_DATA: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    130, // CANNOT_READ_ARRAY_FROM_TEXT
    131, // TOO_LARGE_STRING_SIZE
];

/// Codes that only a change of configuration (or of the server) can fix.
const FATAL: &[u32] = &[
    16,  // NO_SUCH_COLUMN_IN_TABLE
    46,  // UNKNOWN_FUNCTION
    47,  // UNKNOWN_IDENTIFIER
    60,  // UNKNOWN_TABLE
    62,  // SYNTAX_ERROR (a table name that needs quoting)
    81,  // UNKNOWN_DATABASE
    115, // UNKNOWN_SETTING
    164, // READONLY
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    194, // REQUIRED_PASSWORD
    195, // IP_ADDRESS_NOT_ALLOWED
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

/// Classifies an answer to `INSERT ... FORMAT JSONEachRow`.
pub fn classify(status: u16, body: &str) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Inserted;
    }
    let message = summary(status, body);
    if status == 413 {
        return Outcome::TooLarge(message);
    }
    match error_code(body) {
        // Every row carrying a column the table lacks fails alike:
        // bisecting would dead-letter them all.
        Some(117) if body.contains("Unknown field found") => Outcome::Fatal(format!(
            "{message} (a `columns` entry names a column the table lacks; fix it or set skip_unknown_fields = true)"
        )),
        Some(code) if BAD_DATA.contains(&code) => match error_row(body) {
            Some(row) => Outcome::BadRow { row, message },
            None => Outcome::Invalid(message),
        },
        Some(code) if FATAL.contains(&code) => Outcome::Fatal(message),
        _ => match status {
            408 | 425 | 429 | 500..=599 => Outcome::Retry(message),
            400 | 422 => Outcome::Invalid(message),
            _ => Outcome::Fatal(message),
        },
    }
}

/// `NN` of `Code: NN,` at the start of an error answer.
fn error_code(body: &str) -> Option<u32> {
    let rest = &body[body.find("Code: ")? + 6..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// `N` of `(at row N)`, the 1-based row the parser stopped at.
fn error_row(body: &str) -> Option<usize> {
    let rest = &body[body.find("(at row ")? + 8..];
    let end = rest.find(')')?;
    rest[..end].parse().ok().filter(|&n| n > 0)
}

/// The status and the error's first line, short enough for a log line.
fn summary(status: u16, body: &str) -> String {
    let text: String = body.trim().chars().take(300).collect();
    let first = text.lines().next().unwrap_or_default();
    format!("ClickHouse answered {status}: {first}")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Answers of clickhouse-server 18.16.
    const PARSE: &str = "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \" before: x\"}\\n: (while read the value of key n): (at row 3)\n, e.what() = DB::Exception\n";
    const DATETIME: &str = "Code: 41, e.displayText() = DB::Exception: Cannot parse datetime: (while read the value of key ts): (at row 4)\n, e.what() = DB::Exception\n";
    const UNKNOWN_FIELD: &str = "Code: 117, e.displayText() = DB::Exception: Unknown field found while parsing JSONEachRow format: zz: (at row 1)\n, e.what() = DB::Exception\n";
    const NO_TABLE: &str =
        "Code: 60, e.displayText() = DB::Exception: Table default.nosuch doesn't exist., e.what() = DB::Exception\n";
    const NO_DB: &str =
        "Code: 81, e.displayText() = DB::Exception: Database nodb doesn't exist, e.what() = DB::Exception\n";
    const PASSWORD: &str =
        "Code: 193, e.displayText() = DB::Exception: Wrong password for user pump, e.what() = DB::Exception\n";
    const MEMORY: &str =
        "Code: 241, e.displayText() = DB::Exception: Memory limit (for query) exceeded, e.what() = DB::Exception\n";

    #[test]
    fn success() {
        assert_eq!(classify(200, ""), Outcome::Inserted);
    }

    #[test]
    fn bad_data_names_the_row_when_clickhouse_does() {
        match classify(500, PARSE) {
            Outcome::BadRow { row: 3, message } => {
                assert!(
                    message.starts_with("ClickHouse answered 500: Code: 27"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(400, DATETIME),
            Outcome::BadRow { row: 4, .. }
        ));
        let no_row = "Code: 53, e.displayText() = DB::Exception: Type mismatch";
        assert!(matches!(classify(500, no_row), Outcome::Invalid(_)));
        let row_zero = "Code: 26, e.displayText() = x (at row 0)";
        assert!(matches!(classify(500, row_zero), Outcome::Invalid(_)));
    }

    #[test]
    fn configuration_errors_are_fatal() {
        for (status, body) in [
            (404, NO_TABLE),
            (404, NO_DB),
            (401, PASSWORD),
            (500, UNKNOWN_FIELD),
        ] {
            assert!(
                matches!(classify(status, body), Outcome::Fatal(_)),
                "{body}"
            );
        }
        match classify(500, UNKNOWN_FIELD) {
            Outcome::Fatal(m) => assert!(m.contains("skip_unknown_fields"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify(403, "forbidden"), Outcome::Fatal(_)));
    }

    #[test]
    fn transient_and_size_errors() {
        assert!(matches!(classify(500, MEMORY), Outcome::Retry(_)));
        assert!(matches!(classify(503, "overloaded"), Outcome::Retry(_)));
        assert!(matches!(classify(429, ""), Outcome::Retry(_)));
        assert!(matches!(classify(413, "too big"), Outcome::TooLarge(_)));
        assert!(matches!(classify(400, "bad request"), Outcome::Invalid(_)));
    }
}
