//! The configuration a pump passes to its plugin's `init`, and the helpers
//! plugins share for reading it: `${NAME}` secrets and durations.

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

/// Replaces every `${NAME}` in `text` with the environment variable `NAME`,
/// so secrets stay in the environment rather than in the config. The pump
/// must list the variable in `sandbox.env`; a missing one is a `fatal`
/// error naming `key` and the variable. `$${` stands for a literal `${`.
///
/// The host expands `${NAME}` in its config file before plugins see it, so
/// a config that wants the plugin to read the variable writes `$${NAME}`.
///
/// ```
/// # use pumphouse_sdk::config::expand_env;
/// std::env::set_var("SDK_DOC_TOKEN", "s3cret");
/// assert_eq!(expand_env("headers.authorization", "Bearer ${SDK_DOC_TOKEN}").unwrap(), "Bearer s3cret");
/// let e = expand_env("password", "${SDK_DOC_UNSET}").unwrap_err();
/// assert!(e.message().starts_with("password: environment variable SDK_DOC_UNSET is not set"));
/// ```
pub fn expand_env(key: &str, text: &str) -> Result<String, Error> {
    expand_env_with(text, |name| std::env::var(name).ok())
        .map_err(|e| Error::fatal(format!("{key}: {e}")))
}

/// [`expand_env`] with the variables looked up by `env` (for tests).
pub fn expand_env_with(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {text:?}"))?;
            let name = &after[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
                && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
            if !valid {
                return Err(format!("${{{name}}} is not a variable name"));
            }
            let value = env(name).ok_or_else(|| {
                format!(
                    "environment variable {name} is not set (list it in the pump's sandbox.env)"
                )
            })?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads a whole number and a unit: `"250ms"`, `"5s"`, `"2m"`, `"1h"`,
/// `"1d"`. The unit is required, so `"10"` is not silently ten seconds.
///
/// ```
/// # use pumphouse_sdk::config::parse_duration;
/// # use std::time::Duration;
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
/// assert!(parse_duration("1.5s").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like \"500ms\", \"5s\" or \"1m\""))?;
    let secs = |per: u64| Duration::from_secs(n.saturating_mul(per));
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(secs(1)),
        "m" => Ok(secs(60)),
        "h" => Ok(secs(3600)),
        "d" => Ok(secs(86_400)),
        "" => Err(format!("{text:?} has no unit; use ms, s, m, h or d")),
        _ => Err(format!(
            "{text:?} has an unknown unit; use ms, s, m, h or d"
        )),
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    #[test]
    fn placeholders_resolve_and_escape() {
        let env = |n: &str| (n == "T").then(|| "v".to_string());
        assert_eq!(expand_env_with("a${T}b$${T}$", env).unwrap(), "avb${T}$");
        assert!(expand_env_with("${T", env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(expand_env_with("${1x}", env)
            .unwrap_err()
            .contains("not a variable name"));
        assert!(expand_env_with("${NOPE}", env)
            .unwrap_err()
            .contains("NOPE is not set"));
    }

    #[test]
    fn durations_need_a_known_unit() {
        assert_eq!(
            parse_duration(" 5s "),
            Ok(std::time::Duration::from_secs(5))
        );
        assert_eq!(
            parse_duration("2d"),
            Ok(std::time::Duration::from_secs(172_800))
        );
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("1y").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("m").unwrap_err().contains("not a duration"));
    }
}
