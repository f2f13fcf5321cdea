//! What an InfluxDB 1.x `/write` answer means for the batch. Pure, so the
//! mapping is unit-tested natively.
//!
//! InfluxDB writes the points it can and answers 400 `partial write: ...`
//! for the rest: lines it could not parse are quoted (`unable to parse
//! '<line>': reason`), and a field type conflict names the field and the
//! type it refused.

use pumphouse_sdk::serde_json;

use crate::line::Point;

/// The verdict on one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every point was written.
    Written,
    /// The other points were written; these (indices into the points
    /// sent) were refused for their own data, with the reason.
    Dropped(Vec<(usize, String)>),
    /// Bad data somewhere, points unknown; the good ones may have been
    /// written, which re-writing repeats harmlessly (same series and time).
    Invalid(String),
    /// The body exceeded the server's `max-body-size`.
    TooLarge(String),
    /// Transient: write the same points again later.
    Retry(String),
    /// Configuration is wrong (database, retention policy, credentials).
    Fatal(String),
}

/// Classifies an answer to a write of `points`.
pub fn classify(status: u16, body: &str, points: &[Point]) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Written;
    }
    let error = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    let message = format!(
        "InfluxDB answered {status}: {}",
        error.chars().take(300).collect::<String>()
    );
    if status == 413 {
        return Outcome::TooLarge(message);
    }
    if error.contains("database not found") || error.contains("retention policy not found") {
        return Outcome::Fatal(message);
    }
    if status == 400 {
        if let Some(dropped) = dropped_points(&error, points).filter(|d| !d.is_empty()) {
            return Outcome::Dropped(dropped);
        }
        return Outcome::Invalid(message);
    }
    match status {
        408 | 429 | 500..=599 => Outcome::Retry(message),
        _ => Outcome::Fatal(message),
    }
}

/// The points a `partial write` answer refused, when it says which.
fn dropped_points(error: &str, points: &[Point]) -> Option<Vec<(usize, String)>> {
    let rest = error.strip_prefix("partial write: ")?;
    let mut dropped = Vec::new();
    // `unable to parse '<line>': <reason>` entries, one per line.
    for entry in rest.split("\nunable to parse '").enumerate().map(|(i, e)| {
        if i == 0 {
            e.strip_prefix("unable to parse '")
        } else {
            Some(e)
        }
    }) {
        let Some(entry) = entry else { continue };
        let Some(i) = points
            .iter()
            .position(|p| entry.starts_with(&p.line) && entry[p.line.len()..].starts_with("': "))
        else {
            continue;
        };
        let reason = entry[points[i].line.len() + 3..]
            .split(" dropped=")
            .next()
            .unwrap_or_default();
        dropped.push((i, format!("InfluxDB could not parse the point: {reason}")));
    }
    // `field type conflict: input field "F" on measurement "M" is type T,
    // already exists as type U dropped=N`.
    if let Some((field, kind)) = type_conflict(rest) {
        for (i, p) in points.iter().enumerate() {
            if p.fields.iter().any(|(k, t)| k == field && t.name() == kind) {
                dropped.push((
                    i,
                    format!(
                        "field type conflict: field {field:?} is {kind} here but not in InfluxDB"
                    ),
                ));
            }
        }
    }
    dropped.sort_by_key(|(i, _)| *i);
    dropped.dedup_by_key(|(i, _)| *i);
    Some(dropped)
}

fn type_conflict(text: &str) -> Option<(&str, &str)> {
    const PREFIX: &str = "field type conflict: input field \"";
    let rest = &text[text.find(PREFIX)? + PREFIX.len()..];
    let (field, rest) = rest.split_once('"')?;
    let rest = &rest[rest.find(" is type ")? + " is type ".len()..];
    let kind = rest.split([',', ' ']).next()?;
    Some((field, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::FieldType;

    fn points() -> Vec<Point> {
        vec![
            Point {
                line: "p,t=a v=1i 1000".into(),
                fields: vec![("v".into(), FieldType::Integer)],
            },
            Point {
                line: "p,t=c v=\"it's\" 2000".into(),
                fields: vec![("v".into(), FieldType::String)],
            },
            Point {
                line: "p,t=d v=2i 4000".into(),
                fields: vec![("v".into(), FieldType::Integer)],
            },
        ]
    }

    #[test]
    fn success() {
        assert_eq!(classify(204, "", &points()), Outcome::Written);
    }

    #[test]
    fn unparsable_lines_are_named() {
        // As influxd 1.6 words it (JSON-encoded in the body).
        let body = r#"{"error":"partial write: unable to parse 'p,t=c v=\"it's\" 2000': invalid field format\nunable to parse 'p,t=d v=2i 4000': bad timestamp dropped=0"}"#;
        assert_eq!(
            classify(400, body, &points()),
            Outcome::Dropped(vec![
                (
                    1,
                    "InfluxDB could not parse the point: invalid field format".into()
                ),
                (
                    2,
                    "InfluxDB could not parse the point: bad timestamp".into()
                ),
            ])
        );
    }

    #[test]
    fn type_conflicts_name_the_points_by_field_type() {
        let body = r#"{"error":"partial write: field type conflict: input field \"v\" on measurement \"p\" is type string, already exists as type integer dropped=1"}"#;
        match classify(400, body, &points()) {
            Outcome::Dropped(d) => {
                assert_eq!(d.len(), 1);
                assert_eq!(d[0].0, 1);
                assert!(d[0].1.contains("\"v\" is string"), "{}", d[0].1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unattributable_bad_data_is_invalid() {
        for body in [
            r#"{"error":"field type conflict"}"#,
            r#"{"error":"partial write: points beyond retention policy dropped=2"}"#,
            r#"{"error":"partial write: unable to parse 'other line': x dropped=0"}"#,
            "not json",
        ] {
            assert!(
                matches!(classify(400, body, &points()), Outcome::Invalid(_)),
                "{body}"
            );
        }
    }

    #[test]
    fn configuration_transient_and_size() {
        let fatal = [
            (404, r#"{"error":"database not found: \"nosuch\""}"#),
            (500, r#"{"error":"retention policy not found: nosuch"}"#),
            (401, r#"{"error":"authorization failed"}"#),
            (403, r#"{"error":"forbidden"}"#),
        ];
        for (status, body) in fatal {
            assert!(
                matches!(classify(status, body, &points()), Outcome::Fatal(_)),
                "{body}"
            );
        }
        match classify(404, fatal[0].1, &points()) {
            Outcome::Fatal(m) => {
                assert_eq!(m, "InfluxDB answered 404: database not found: \"nosuch\"")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(500, r#"{"error":"timeout"}"#, &points()),
            Outcome::Retry(_)
        ));
        assert!(matches!(classify(503, "", &points()), Outcome::Retry(_)));
        assert!(matches!(classify(429, "", &points()), Outcome::Retry(_)));
        assert!(matches!(classify(413, "", &points()), Outcome::TooLarge(_)));
    }
}
