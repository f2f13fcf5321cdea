//! The plugin's configuration, parsed and checked once in `init`.
//!
//! Parsed by hand from the JSON value rather than with derived serde, so
//! that every error names the key it is about (`metrics[1].labels[0]`),
//! which serde's messages do not.

use pumphouse_sdk::serde_json::{Map, Value};
use pumphouse_sdk::{Config, Error, Schema};

/// Label sets one metric may create unless `max_series` says otherwise.
pub const DEFAULT_MAX_SERIES: usize = 1000;
/// The host drops a pump's metric series past this many (see the SDK's
/// `metrics` module); the configured caps must fit under it, or records
/// would silently go uncounted.
pub const HOST_SERIES_BUDGET: usize = 10_000;
/// The host ignores metrics with more labels than this.
const HOST_MAX_LABELS: usize = 8;
/// Counts records folded into `__other__`, labelled by metric.
pub const SERIES_CAPPED: &str = "prometheus_series_capped";
/// Counts histogram records without a numeric value, labelled by metric.
pub const VALUES_MISSING: &str = "prometheus_values_missing";

/// What a metric exports.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// One count per record: `pumphouse_plugin_<name>_total`.
    Counter,
    /// One observation of `value_field` per record: `pumphouse_plugin_<name>`.
    Histogram { value_field: String },
}

/// One label: the record field it reads and the name it is exported as.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub field: String,
    pub name: String,
}

/// One configured (or default) metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub kind: Kind,
    pub labels: Vec<Label>,
    pub max_series: usize,
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `None`: the defaults of each batch's schema ([`defaults`]).
    pub metrics: Option<Vec<Spec>>,
    /// The top-level `max_series`, which the defaults use.
    pub max_series: usize,
}

impl Settings {
    /// Parses and checks the pump's config; errors name the key.
    pub fn parse(config: &Config) -> Result<Settings, Error> {
        let root = match config.value()? {
            Value::Object(map) => map,
            other => return Err(fatal("config", format!("expected a table, got {other}"))),
        };
        reject_unknown("config", &root, &["metrics", "max_series"])?;
        let max_series = match root.get("max_series") {
            None => DEFAULT_MAX_SERIES,
            Some(v) => positive("max_series", v)?,
        };
        let metrics = match root.get("metrics") {
            None => None,
            Some(Value::Array(items)) if !items.is_empty() => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| metric(&format!("metrics[{i}]"), item, max_series))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => {
                return Err(fatal(
                    "metrics",
                    "expected a non-empty list of { name, type, labels, ... } tables (leave it out for the defaults)",
                ))
            }
        };
        match &metrics {
            Some(specs) => check_together("metrics", specs)?,
            None => {
                for schema in [Schema::Tyk, Schema::Iam] {
                    check_together("max_series", &defaults(schema, max_series))?;
                }
            }
        }
        Ok(Settings {
            metrics,
            max_series,
        })
    }

    /// The metrics that records of `schema` feed.
    pub fn specs(&self, schema: Schema) -> Vec<Spec> {
        match &self.metrics {
            Some(specs) => specs.clone(),
            None => defaults(schema, self.max_series),
        }
    }
}

/// The metrics used when `metrics` is absent, like the Prometheus pumps of
/// Tyk and iam: request counts by code, API and method plus latency by API
/// for Tyk; decisions by user and effect for iam. The path is left out on
/// purpose: it is unbounded. Generic records have no defaults.
pub fn defaults(schema: Schema, max_series: usize) -> Vec<Spec> {
    let label = |field: &str, name: &str| Label {
        field: field.into(),
        name: name.into(),
    };
    match schema {
        Schema::Tyk => vec![
            Spec {
                name: "tyk_http_requests".into(),
                kind: Kind::Counter,
                labels: vec![
                    label("ResponseCode", "code"),
                    label("APIID", "api"),
                    label("Method", "method"),
                ],
                max_series,
            },
            Spec {
                name: "tyk_latency_ms".into(),
                kind: Kind::Histogram {
                    value_field: "RequestTime".into(),
                },
                labels: vec![label("APIID", "api")],
                max_series,
            },
        ],
        Schema::Iam => vec![Spec {
            name: "iam_authz_decisions".into(),
            kind: Kind::Counter,
            labels: vec![label("Username", "user"), label("Effect", "effect")],
            max_series,
        }],
        Schema::Generic => Vec::new(),
    }
}

fn metric(key: &str, item: &Value, default_max: usize) -> Result<Spec, Error> {
    let Value::Object(map) = item else {
        return Err(fatal(key, "expected a { name, type, labels, ... } table"));
    };
    reject_unknown(
        key,
        map,
        &["name", "type", "labels", "value_field", "max_series"],
    )?;
    let name = string(&format!("{key}.name"), map.get("name"))?;
    if !valid_metric_name(&name) {
        return Err(fatal(
            &format!("{key}.name"),
            format!("{name:?} must match [a-z0-9_]{{1,64}}"),
        ));
    }
    let kind = match string(&format!("{key}.type"), map.get("type"))?.as_str() {
        "counter" => {
            if map.contains_key("value_field") {
                return Err(fatal(
                    &format!("{key}.value_field"),
                    "only histograms observe a value; a counter counts records",
                ));
            }
            Kind::Counter
        }
        "histogram" => match map.get("value_field") {
            None => {
                return Err(fatal(
                    &format!("{key}.value_field"),
                    "required for a histogram: the numeric field it observes",
                ))
            }
            v => Kind::Histogram {
                value_field: string(&format!("{key}.value_field"), v)?,
            },
        },
        other => {
            return Err(fatal(
                &format!("{key}.type"),
                format!("{other:?} is not \"counter\" or \"histogram\""),
            ))
        }
    };
    let labels = match map.get("labels") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| label(&format!("{key}.labels[{i}]"), v))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(fatal(
                &format!("{key}.labels"),
                "expected a list of field names or { field, label } tables",
            ))
        }
    };
    if labels.len() > HOST_MAX_LABELS {
        return Err(fatal(
            &format!("{key}.labels"),
            format!("at most {HOST_MAX_LABELS} labels (the host ignores metrics with more)"),
        ));
    }
    for (i, l) in labels.iter().enumerate() {
        let at = format!("{key}.labels[{i}]");
        if labels[..i].iter().any(|o| o.name == l.name) {
            return Err(fatal(&at, format!("label {:?} appears twice", l.name)));
        }
        if matches!(kind, Kind::Histogram { .. }) && l.name == "le" {
            return Err(fatal(
                &at,
                "\"le\" is the bucket label of a histogram; name it otherwise",
            ));
        }
    }
    let max_series = match map.get("max_series") {
        None => default_max,
        Some(v) => positive(&format!("{key}.max_series"), v)?,
    };
    Ok(Spec {
        name,
        kind,
        labels,
        max_series,
    })
}

/// `"ResponseCode"` (exported as `response_code`) or
/// `{ field = "ResponseCode", label = "code" }`.
fn label(key: &str, item: &Value) -> Result<Label, Error> {
    let (field, name, explicit) = match item {
        Value::String(field) => (field.clone(), snake_case(field), false),
        Value::Object(map) => {
            reject_unknown(key, map, &["field", "label"])?;
            let field = string(&format!("{key}.field"), map.get("field"))?;
            match map.get("label") {
                None => {
                    let name = snake_case(&field);
                    (field, name, false)
                }
                Some(v) => (field, string(&format!("{key}.label"), Some(v))?, true),
            }
        }
        _ => {
            return Err(fatal(
                key,
                "expected a field name or a { field, label } table",
            ))
        }
    };
    if field.is_empty() {
        return Err(fatal(key, "the field name is empty"));
    }
    if let Err(why) = check_label_name(&name) {
        let hint = if explicit {
            String::new()
        } else {
            format!(
                " (from field {field:?}; name it with {{ field = {field:?}, label = \"...\" }})"
            )
        };
        return Err(fatal(key, format!("label {name:?} {why}{hint}")));
    }
    Ok(Label { field, name })
}

/// Prometheus's label rule narrowed to the host's lower case, minus the
/// names that would be lost: `__*` is reserved by Prometheus and the host
/// sets `pump` itself.
fn check_label_name(name: &str) -> Result<(), &'static str> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 64
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if !ok {
        Err("must match [a-z_][a-z0-9_]{0,63}")
    } else if name.starts_with("__") {
        Err("is reserved: names starting with __ are Prometheus's own")
    } else if name == "pump" {
        Err("is reserved: the host sets `pump` to the pump's name")
    } else {
        Ok(())
    }
}

/// The host's rule for metric names.
fn valid_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `ResponseCode` → `response_code`, `APIKey` → `api_key`, `APIID` →
/// `apiid`: a word starts at an upper-case letter after a lower-case one
/// or a digit, or at the last capital of an acronym followed by lower
/// case. Anything but ASCII letters and digits becomes `_`.
pub fn snake_case(field: &str) -> String {
    let chars: Vec<char> = field.chars().collect();
    let mut out = String::with_capacity(field.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let starts_word = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if starts_word && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out
}

/// Checks what only the whole list shows: names whose exported series
/// would collide, and caps that together exceed the host's budget.
fn check_together(key: &str, specs: &[Spec]) -> Result<(), Error> {
    let mut taken: Vec<(String, String)> = [SERIES_CAPPED, VALUES_MISSING]
        .iter()
        .map(|n| {
            (
                format!("{n}_total"),
                format!("the plugin's own counter {n}"),
            )
        })
        .collect();
    for (i, spec) in specs.iter().enumerate() {
        let exported = match spec.kind {
            Kind::Counter => vec![format!("{}_total", spec.name)],
            Kind::Histogram { .. } => ["", "_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{}{s}", spec.name))
                .collect(),
        };
        for e in exported {
            if let Some((_, owner)) = taken.iter().find(|(t, _)| *t == e) {
                return Err(fatal(
                    &format!("{key}[{i}].name"),
                    format!(
                        "{:?} would export pumphouse_plugin_{e}, which {owner} exports too",
                        spec.name
                    ),
                ));
            }
            taken.push((e, format!("metric {:?}", spec.name)));
        }
    }
    // Each metric may hold max_series label sets plus `__other__`, and the
    // plugin's own two counters one series per metric each.
    let series: usize = specs
        .iter()
        .map(|s| s.max_series.saturating_add(3))
        .fold(0, usize::saturating_add);
    if series > HOST_SERIES_BUDGET {
        return Err(fatal(
            key,
            format!(
                "the metrics' max_series add up to {series} series, more than the {HOST_SERIES_BUDGET} the host keeps per pump; lower max_series"
            ),
        ));
    }
    Ok(())
}

fn reject_unknown(key: &str, map: &Map<String, Value>, known: &[&str]) -> Result<(), Error> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(fatal(
            key,
            format!("unknown key {k:?}; expected one of {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn string(key: &str, v: Option<&Value>) -> Result<String, Error> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(fatal(key, format!("expected a string, got {other}"))),
        None => Err(fatal(key, "missing")),
    }
}

fn positive(key: &str, v: &Value) -> Result<usize, Error> {
    v.as_u64()
        .filter(|n| *n >= 1)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            fatal(
                key,
                format!("expected a whole number of at least 1, got {v}"),
            )
        })
}

fn fatal(key: &str, why: impl std::fmt::Display) -> Error {
    Error::fatal(format!("{key}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::json;

    fn parse(v: Value) -> Result<Settings, Error> {
        Settings::parse(&Config::from(v))
    }

    fn err(v: Value) -> String {
        parse(v).unwrap_err().message().to_owned()
    }

    #[test]
    fn snake_case_splits_words_and_acronyms() {
        for (field, label) in [
            ("ResponseCode", "response_code"),
            ("APIID", "apiid"),
            ("APIKey", "api_key"),
            ("OrgID", "org_id"),
            ("IPAddress", "ip_address"),
            ("Method", "method"),
            ("geo.country", "geo_country"),
            ("already_snake", "already_snake"),
            ("Version2Name", "version2_name"),
        ] {
            assert_eq!(snake_case(field), label, "{field}");
        }
    }

    #[test]
    fn labels_take_both_forms() {
        let s = parse(json!({"metrics": [{
            "name": "reqs", "type": "counter",
            "labels": ["ResponseCode", {"field": "APIID", "label": "api"}, {"field": "OrgID"}]
        }]}))
        .unwrap();
        let spec = &s.metrics.unwrap()[0];
        let names: Vec<_> = spec.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["response_code", "api", "org_id"]);
        assert_eq!(spec.labels[1].field, "APIID");
        assert_eq!(spec.max_series, DEFAULT_MAX_SERIES);
        assert_eq!(spec.kind, Kind::Counter);
    }

    #[test]
    fn defaults_follow_the_schema() {
        let s = parse(json!({"max_series": 50})).unwrap();
        assert_eq!(s.metrics, None);
        let tyk = s.specs(Schema::Tyk);
        assert_eq!(tyk[0].name, "tyk_http_requests");
        let labels: Vec<_> = tyk[0]
            .labels
            .iter()
            .map(|l| (l.field.as_str(), l.name.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("ResponseCode", "code"),
                ("APIID", "api"),
                ("Method", "method")
            ]
        );
        assert_eq!(
            tyk[1].kind,
            Kind::Histogram {
                value_field: "RequestTime".into()
            }
        );
        assert!(tyk.iter().all(|m| m.max_series == 50));
        assert!(tyk
            .iter()
            .flat_map(|m| &m.labels)
            .all(|l| l.field != "Path"));
        let iam = s.specs(Schema::Iam);
        assert_eq!(iam.len(), 1);
        assert_eq!(iam[0].labels[0].name, "user");
        assert_eq!(iam[0].labels[1].field, "Effect");
        assert!(s.specs(Schema::Generic).is_empty());
        // The defaults pass the checks a configured list gets.
        for schema in [Schema::Tyk, Schema::Iam] {
            check_together("metrics", &defaults(schema, DEFAULT_MAX_SERIES)).unwrap();
        }
    }

    #[test]
    fn configured_metrics_apply_to_every_schema() {
        let s = parse(json!({"max_series": 7, "metrics": [
            {"name": "lat", "type": "histogram", "value_field": "RequestTime", "max_series": 3},
            {"name": "n", "type": "counter"}
        ]}))
        .unwrap();
        assert_eq!(s.specs(Schema::Iam), s.specs(Schema::Tyk));
        let specs = s.specs(Schema::Generic);
        assert_eq!(specs[0].max_series, 3);
        assert_eq!(specs[1].max_series, 7);
        assert!(specs[1].labels.is_empty());
    }

    #[test]
    fn config_errors_name_the_key() {
        let cases = [
            (json!({"metrics": []}), "metrics:"),
            (json!({"metrics": "x"}), "metrics:"),
            (json!({"max_series": 0}), "max_series:"),
            (json!({"max_series": "10"}), "max_series:"),
            (json!({"bogus": 1}), "config: unknown key \"bogus\""),
            (
                json!({"metrics": [{"type": "counter"}]}),
                "metrics[0].name: missing",
            ),
            (
                json!({"metrics": [{"name": "Bad-Name", "type": "counter"}]}),
                "metrics[0].name: \"Bad-Name\"",
            ),
            (
                json!({"metrics": [{"name": &"x".repeat(65), "type": "counter"}]}),
                "metrics[0].name:",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "gauge"}]}),
                "metrics[0].type: \"gauge\"",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "histogram"}]}),
                "metrics[0].value_field: required for a histogram",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "counter", "value_field": "X"}]}),
                "metrics[0].value_field:",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "counter", "labels": [1]}]}),
                "metrics[0].labels[0]:",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "counter", "labels": "Method"}]}),
                "metrics[0].labels:",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "counter", "labels": ["2FA"]}]}),
                "metrics[0].labels[0]: label \"2_fa\" must match",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "counter",
                    "labels": [{"field": "X", "label": "__x"}]}]}),
                "metrics[0].labels[0]: label \"__x\" is reserved",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "counter", "labels": ["Pump"]}]}),
                "metrics[0].labels[0]: label \"pump\" is reserved",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "counter",
                    "labels": [{"field": "X", "lable": "x"}]}]}),
                "metrics[0].labels[0]: unknown key \"lable\"",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "counter",
                    "labels": ["Method", {"field": "M", "label": "method"}]}]}),
                "metrics[0].labels[1]: label \"method\" appears twice",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "histogram", "value_field": "T",
                    "labels": [{"field": "L", "label": "le"}]}]}),
                "metrics[0].labels[0]: \"le\"",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "counter",
                    "labels": ["A", "B", "C", "D", "E", "F", "G", "H", "I"]}]}),
                "metrics[0].labels: at most 8",
            ),
            (
                json!({"metrics": [{"name": "a", "type": "counter", "max_series": -1}]}),
                "metrics[0].max_series:",
            ),
        ];
        for (config, want) in cases {
            let got = err(config.clone());
            assert!(got.contains(want), "{config}: {got:?} lacks {want:?}");
        }
    }

    #[test]
    fn colliding_names_and_oversized_caps_are_refused() {
        let got = err(json!({"metrics": [
            {"name": "a", "type": "counter"},
            {"name": "a_total", "type": "histogram", "value_field": "T"}
        ]}));
        assert!(got.starts_with("metrics[1].name:"), "{got}");
        let got = err(json!({"metrics": [
            {"name": "h", "type": "histogram", "value_field": "T"},
            {"name": "h_count", "type": "histogram", "value_field": "T"}
        ]}));
        assert!(got.starts_with("metrics[1].name:"), "{got}");
        let got =
            err(json!({"metrics": [{"name": "prometheus_series_capped", "type": "counter"}]}));
        assert!(got.contains("the plugin's own counter"), "{got}");
        let got = err(json!({"metrics": [
            {"name": "a", "type": "counter"}, {"name": "a", "type": "counter"}
        ]}));
        assert!(got.starts_with("metrics[1].name:"), "{got}");
        // Two default Tyk metrics of 6000 series each exceed the host's 10,000.
        let got = err(json!({"max_series": 6000}));
        assert!(got.starts_with("max_series:"), "{got}");
        let got = err(json!({"metrics": [{"name": "a", "type": "counter", "max_series": 10_000}]}));
        assert!(got.starts_with("metrics:"), "{got}");
        parse(json!({"metrics": [{"name": "a", "type": "counter", "max_series": 9_990}]})).unwrap();
    }
}
