//! What each column of the table can hold, read from its ClickHouse type,
//! and the check that a row's value fits. Pure: the types come from
//! `DESCRIBE TABLE`, asked once by the sink.
//!
//! ClickHouse 18.16 does not refuse a value its column cannot hold: a
//! `DateTime` given 4855673600 (2123) stores it modulo 2³² (1987), an
//! `Int32` given 2⁴⁰ keeps its low bits, a `UInt64` given -1 stores
//! 18446744073709551615. So the plugin checks every value against its
//! column's range and refuses the record, naming the column, the value
//! and the range, rather than let it be stored wrong.

use std::collections::HashMap;

use pumphouse_sdk::serde_json::Value;
use pumphouse_sdk::Timestamp;

/// The range of values a column type holds, as far as the plugin checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// Integers from `min` to `max` (`Int*`, `UInt*`, `Enum` aside).
    Int { min: i128, max: i128 },
    /// Seconds since the epoch, from `min` to `max` (`DateTime`,
    /// `DateTime64`), whether written as a number or as text.
    Seconds { min: i64, max: i64 },
    /// Days since the epoch, up to `max` (`Date`).
    Days { max: i64 },
    /// Not checked: strings, floats, arrays, anything else.
    Any,
}

/// `DateTime`: unsigned 32-bit seconds, 1970-01-01 to 2106-02-07T06:28:15Z.
const DATETIME_MAX: i64 = u32::MAX as i64;
/// `DateTime64` (ClickHouse 22.8 and later): 1900-01-01 to 2299-12-31.
const DATETIME64_MIN: i64 = -2_208_988_800;
const DATETIME64_MAX: i64 = 10_413_791_999;

/// A column's type as `DESCRIBE TABLE` names it, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    pub name: String,
    pub range: Range,
}

impl ColumnType {
    pub fn parse(name: &str) -> ColumnType {
        ColumnType {
            name: name.to_owned(),
            range: range_of(name),
        }
    }
}

/// The types of a table's columns, by column name.
pub type Types = HashMap<String, ColumnType>;

/// Reads `DESCRIBE TABLE ... FORMAT JSONEachRow`: one object per column
/// with its `name` and `type`.
pub fn parse_describe(body: &str) -> Result<Types, String> {
    let mut types = Types::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = pumphouse_sdk::serde_json::from_str(line)
            .map_err(|e| format!("DESCRIBE TABLE answered {line:?}: {e}"))?;
        let (Some(name), Some(ty)) = (v["name"].as_str(), v["type"].as_str()) else {
            return Err(format!(
                "DESCRIBE TABLE answered {line:?} without name and type"
            ));
        };
        types.insert(name.to_owned(), ColumnType::parse(ty));
    }
    Ok(types)
}

fn range_of(ty: &str) -> Range {
    let ty = ty.trim();
    for wrapper in ["Nullable(", "LowCardinality("] {
        if let Some(inner) = ty.strip_prefix(wrapper).and_then(|t| t.strip_suffix(')')) {
            return range_of(inner);
        }
    }
    let int = |min: i128, max: i128| Range::Int { min, max };
    match ty {
        "UInt8" | "Bool" => int(0, u8::MAX.into()),
        "UInt16" => int(0, u16::MAX.into()),
        "UInt32" => int(0, u32::MAX.into()),
        "UInt64" => int(0, u64::MAX.into()),
        "Int8" => int(i8::MIN.into(), i8::MAX.into()),
        "Int16" => int(i16::MIN.into(), i16::MAX.into()),
        "Int32" => int(i32::MIN.into(), i32::MAX.into()),
        "Int64" => int(i64::MIN.into(), i64::MAX.into()),
        "Date" => Range::Days {
            max: u16::MAX.into(),
        },
        _ if ty == "DateTime" || ty.starts_with("DateTime(") => Range::Seconds {
            min: 0,
            max: DATETIME_MAX,
        },
        _ if ty.starts_with("DateTime64(") => Range::Seconds {
            min: DATETIME64_MIN,
            max: DATETIME64_MAX,
        },
        _ => Range::Any,
    }
}

/// Checks the value `written` for `column` (and, for a time source, the
/// instant `time` it stands for) against the column's type. The error
/// names the column, its type and the value.
pub fn check(
    column: &str,
    ty: &ColumnType,
    written: &Value,
    time: Option<Timestamp>,
) -> Result<(), String> {
    let refuse = |what: String, limit: String| {
        Err(format!(
            "column {column} ({}) cannot hold {what}: {limit}; refused rather than stored wrong",
            ty.name
        ))
    };
    match ty.range {
        Range::Any => Ok(()),
        Range::Int { min, max } => {
            let Some(n) = integer(written) else {
                return Ok(());
            };
            if !(min..=max).contains(&n) {
                return refuse(n.to_string(), format!("its range is {min} to {max}"));
            }
            Ok(())
        }
        Range::Seconds { min, max } => {
            let secs = match time {
                Some(t) => t.unix_seconds() as i128,
                None => match integer(written) {
                    Some(n) => n,
                    None => return Ok(()),
                },
            };
            if !(i128::from(min)..=i128::from(max)).contains(&secs) {
                return refuse(
                    instant(secs),
                    format!(
                        "its range is {} to {}",
                        instant(min.into()),
                        instant(max.into())
                    ),
                );
            }
            Ok(())
        }
        Range::Days { max } => {
            let days = match time {
                Some(t) => t.unix_seconds().div_euclid(86_400) as i128,
                None => match integer(written) {
                    Some(n) => n,
                    None => return Ok(()),
                },
            };
            if !(0..=i128::from(max)).contains(&days) {
                return refuse(
                    format!("day {days}"),
                    format!(
                        "its range is 1970-01-01 to {}",
                        instant(max as i128 * 86_400)
                    ),
                );
            }
            Ok(())
        }
    }
}

/// A JSON integer (ClickHouse reads `true`/`false` as 1/0).
fn integer(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        Value::Bool(b) => Some(i128::from(*b)),
        _ => None,
    }
}

/// Seconds as RFC 3339 text, with the number when it is past any calendar.
fn instant(secs: i128) -> String {
    match i64::try_from(secs) {
        Ok(s) if (-62_135_596_800..=253_402_300_799).contains(&s) => {
            format!("{} ({s})", Timestamp::from_unix_seconds(s).to_rfc3339())
        }
        _ => format!("{secs} seconds since 1970"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::json;

    fn ty(name: &str) -> ColumnType {
        ColumnType::parse(name)
    }

    #[test]
    fn types_map_onto_their_ranges() {
        assert_eq!(ty("Nullable(UInt8)").range, Range::Int { min: 0, max: 255 });
        assert_eq!(
            ty("LowCardinality(Int16)").range,
            Range::Int {
                min: -32768,
                max: 32767
            }
        );
        assert_eq!(
            ty("DateTime('UTC')").range,
            Range::Seconds {
                min: 0,
                max: 4_294_967_295
            }
        );
        assert_eq!(ty("DateTime").range, ty("DateTime('UTC')").range);
        assert!(matches!(ty("DateTime64(3, 'UTC')").range, Range::Seconds { min, .. } if min < 0));
        assert_eq!(ty("Date").range, Range::Days { max: 65535 });
        for any in ["String", "Float64", "Array(String)", "Enum8('a' = 1)"] {
            assert_eq!(ty(any).range, Range::Any, "{any}");
        }
    }

    #[test]
    fn a_value_the_column_cannot_hold_is_refused_naming_it() {
        // iam-authz-server's default ExpireAt, 100 years ahead.
        let in_2123 = Timestamp::from_unix_seconds(4_855_673_600);
        let dt = ty("DateTime('UTC')");
        let err = check("expire_at", &dt, &json!(4_855_673_600i64), Some(in_2123)).unwrap_err();
        assert!(
            err.contains("column expire_at (DateTime('UTC'))")
                && err.contains("2123-")
                && err.contains("2106-02-07T06:28:15Z"),
            "{err}"
        );
        // The same instant as text is the same instant.
        assert!(check("e", &dt, &json!("2123-11-14 00:00:00"), Some(in_2123)).is_err());
        assert!(check("e", &dt, &json!(-1), None).is_err());
        check("e", &dt, &json!(4_294_967_295u32), None).unwrap();
        check("e", &ty("Int64"), &json!(4_855_673_600i64), Some(in_2123)).unwrap();
        check("e", &ty("DateTime64(0)"), &json!(0), Some(in_2123)).unwrap();

        let err = check("n", &ty("Int64"), &json!(u64::MAX), None).unwrap_err();
        assert!(err.contains("18446744073709551615"), "{err}");
        assert!(check("n", &ty("UInt64"), &json!(-1), None).is_err());
        assert!(check("n", &ty("UInt8"), &json!(256), None).is_err());
        check("n", &ty("UInt8"), &json!(true), None).unwrap();
        check("n", &ty("Int32"), &json!(-2_147_483_648i64), None).unwrap();
        assert!(check("n", &ty("Int32"), &json!(1i64 << 40), None).is_err());
        // What the type does not bound, or what is not a number, passes:
        // ClickHouse refuses text that does not parse on its own.
        check("s", &ty("String"), &json!(u64::MAX), None).unwrap();
        check("n", &ty("Int8"), &json!("x"), None).unwrap();

        let date = ty("Date");
        assert!(check("d", &date, &json!(0), Some(in_2123)).is_ok());
        let far = Timestamp::from_unix_seconds(65_536 * 86_400);
        assert!(check("d", &date, &json!(0), Some(far)).is_err());
    }

    #[test]
    fn describe_answers_are_read() {
        let body = "{\"name\":\"_id\",\"type\":\"UInt64\",\"default_type\":\"\",\"default_expression\":\"\"}\n\
                    {\"name\":\"expire_at\",\"type\":\"Int64\",\"default_type\":\"\",\"default_expression\":\"\"}\n";
        let types = parse_describe(body).unwrap();
        assert_eq!(
            types["_id"].range,
            Range::Int {
                min: 0,
                max: u64::MAX.into()
            }
        );
        assert_eq!(types["expire_at"].name, "Int64");
        assert!(parse_describe("nope").is_err());
        assert!(parse_describe("{\"name\":\"x\"}").is_err());
    }
}
