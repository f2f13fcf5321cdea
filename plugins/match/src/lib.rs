//! `match`: a pumphouse filter that keeps the records whose field matches a
//! regular expression. See README.md.

use pumphouse_sdk::{Batch, Config, Encoding, Error, Filter, PluginInfo, Verdict};
use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct MatchConfig {
    /// Top-level key of the record, e.g. `Path` or `Username`.
    field: String,
    /// Regular expression (`regex` crate syntax), unanchored.
    pattern: String,
    /// Keep the records that do NOT match instead.
    #[serde(default)]
    invert: bool,
}

/// Keeps records whose `field` text matches `pattern` (or, with `invert`,
/// those that don't). A missing, null or non-scalar field never matches.
pub struct Match {
    field: String,
    regex: Regex,
    invert: bool,
}

impl Match {
    fn keeps(&self, text: Option<&str>) -> bool {
        let matched = text.is_some_and(|t| self.regex.is_match(t));
        matched != self.invert
    }
}

impl Filter for Match {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "match".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Msgpack,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let MatchConfig {
            field,
            pattern,
            invert,
        } = config.parse()?;
        let regex = Regex::new(&pattern)
            .map_err(|e| Error::fatal(format!("invalid pattern {pattern:?}: {e}")))?;
        Ok(Match {
            field,
            regex,
            invert,
        })
    }

    fn process(&mut self, batch: &Batch) -> Result<Verdict, Error> {
        let kept: Vec<u32> = batch
            .records()
            .filter(|record| self.keeps(record.field(&self.field).as_deref()))
            .map(|record| record.index())
            .collect();
        Ok(Verdict::from_indices(kept, batch.len()))
    }
}

pumphouse_sdk::export_filter!(Match);

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::{json, Value};
    use pumphouse_sdk::{testing, IamRecord, Schema, TykRecord};

    fn filter(config: Value) -> Match {
        Match::init(Config::from(config)).unwrap()
    }

    fn tyk(path: &str, code: i64) -> TykRecord {
        TykRecord {
            path: path.into(),
            response_code: code,
            ..Default::default()
        }
    }

    #[test]
    fn keeps_matching_records() {
        let batch = testing::tyk_batch(&[
            tyk("/v1/users", 200),
            tyk("/health", 200),
            tyk("/v1/orders", 500),
        ]);
        let mut f = filter(json!({"field": "Path", "pattern": "^/v1/"}));
        assert_eq!(f.process(&batch).unwrap(), Verdict::Keep(vec![0, 2]));
        let mut f = filter(json!({"field": "Path", "pattern": "^/v1/", "invert": true}));
        assert_eq!(f.process(&batch).unwrap(), Verdict::Keep(vec![1]));
        let mut f = filter(json!({"field": "Path", "pattern": ""}));
        assert_eq!(f.process(&batch).unwrap(), Verdict::KeepAll);
        let mut f = filter(json!({"field": "Path", "pattern": "nothing"}));
        assert_eq!(f.process(&batch).unwrap(), Verdict::Keep(vec![]));
    }

    #[test]
    fn numbers_match_as_decimal_text() {
        let batch = testing::tyk_batch(&[tyk("/a", 200), tyk("/b", 503), tyk("/c", 404)]);
        let mut f = filter(json!({"field": "ResponseCode", "pattern": "^5\\d\\d$"}));
        assert_eq!(f.process(&batch).unwrap(), Verdict::Keep(vec![1]));
    }

    #[test]
    fn missing_fields_never_match() {
        let batch = testing::msgpack_batch(
            Schema::Generic,
            &[
                json!({"Username": "alice"}),
                json!({"Other": "alice"}),
                json!({"Username": null}),
                json!({"Username": ["alice"]}),
                json!("not a map"),
            ],
        );
        let mut f = filter(json!({"field": "Username", "pattern": "alice"}));
        assert_eq!(f.process(&batch).unwrap(), Verdict::Keep(vec![0]));
        let mut f = filter(json!({"field": "Username", "pattern": "alice", "invert": true}));
        assert_eq!(f.process(&batch).unwrap(), Verdict::Keep(vec![1, 2, 3, 4]));
    }

    #[test]
    fn works_on_iam_and_json_batches() {
        let users = ["alice", "bob", "alina"].map(|u| IamRecord {
            username: u.into(),
            ..Default::default()
        });
        let mut f = filter(json!({"field": "Username", "pattern": "^al"}));
        for batch in [
            testing::iam_batch(&users),
            testing::json_batch_of(Schema::Iam, &users),
        ] {
            assert_eq!(f.process(&batch).unwrap(), Verdict::Keep(vec![0, 2]));
        }
        let empty = testing::iam_batch(&[]);
        assert_eq!(f.process(&empty).unwrap(), Verdict::KeepAll);
    }

    #[test]
    fn config_errors() {
        let err = Match::init(Config::from(
            json!({"field": "Path", "pattern": "(unclosed"}),
        ))
        .err()
        .unwrap();
        assert!(err.to_string().contains("\"(unclosed\""), "{err}");
        let err = Match::init(Config::from(json!({"pattern": "x"})))
            .err()
            .unwrap();
        assert!(err.to_string().contains("missing field `field`"), "{err}");
    }
}
