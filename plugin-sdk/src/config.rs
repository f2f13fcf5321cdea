//! The configuration a pump passes to its plugin's `init`.

use serde::de::DeserializeOwned;

use crate::Error;

/// The pump's `config` table, as the JSON text the host passes to `init`.
///
/// ```
/// # use pumphouse_sdk::Config;
/// #[derive(serde::Deserialize)]
/// struct FileConfig {
///     path: String,
///     #[serde(default)]
///     fsync: bool,
/// }
///
/// let config = Config::new(r#"{"path": "/out/iam.jsonl"}"#);
/// let parsed: FileConfig = config.parse().unwrap();
/// assert_eq!(parsed.path, "/out/iam.jsonl");
/// assert!(!parsed.fsync);
///
/// // No config at all reads as `{}`.
/// assert!(Config::new("").parse::<FileConfig>().is_err()); // `path` is missing
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    raw: String,
}

impl Config {
    /// Wraps JSON text; an empty (or all-blank) text stands for `{}`.
    pub fn new(raw: impl Into<String>) -> Self {
        Config { raw: raw.into() }
    }

    /// The JSON text exactly as the host passed it.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Deserializes the configuration. Errors are [`ErrorKind::Fatal`] and
    /// say what is wrong, e.g. ``invalid config: missing field `path` ``.
    ///
    /// [`ErrorKind::Fatal`]: crate::ErrorKind::Fatal
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let text = if self.raw.trim().is_empty() {
            "{}"
        } else {
            &self.raw
        };
        serde_json::from_str(text).map_err(|e| Error::fatal(format!("invalid config: {e}")))
    }

    /// The configuration as a generic JSON value.
    pub fn value(&self) -> Result<serde_json::Value, Error> {
        self.parse()
    }
}

impl From<&str> for Config {
    fn from(raw: &str) -> Self {
        Config::new(raw)
    }
}

impl From<String> for Config {
    fn from(raw: String) -> Self {
        Config::new(raw)
    }
}

impl From<serde_json::Value> for Config {
    fn from(value: serde_json::Value) -> Self {
        Config::new(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Conf {
        #[serde(default)]
        n: u32,
    }

    #[test]
    fn empty_means_empty_object() {
        assert_eq!(Config::new("").parse::<Conf>().unwrap(), Conf { n: 0 });
        assert_eq!(Config::new("  \n").parse::<Conf>().unwrap(), Conf { n: 0 });
        assert_eq!(Config::default().value().unwrap(), serde_json::json!({}));
    }

    #[test]
    fn parses_and_keeps_raw_text() {
        let c = Config::from(serde_json::json!({"n": 3}));
        assert_eq!(c.parse::<Conf>().unwrap(), Conf { n: 3 });
        assert_eq!(c.raw(), r#"{"n":3}"#);
    }

    #[test]
    fn errors_are_fatal_and_descriptive() {
        let err = Config::new(r#"{"n": "x"}"#).parse::<Conf>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fatal);
        assert!(err.to_string().starts_with("invalid config: "), "{err}");
    }
}
