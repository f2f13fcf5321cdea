//! Reads a tyk-pump or iam-pump config into one neutral form. The two
//! spell the same settings differently (`enable_cluster` /
//! `enable-cluster`), and tyk-pump lets `TYK_PMP_*` variables override
//! any field.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{Dialect, MigrateError, Text};

/// The old config, dialect-neutral.
#[derive(Debug)]
pub(super) struct Old {
    pub dialect: Dialect,
    pub redis: OldRedis,
    /// Seconds between purges.
    pub purge_delay: Option<Text>,
    /// tyk-pump: records per purge (0: the whole list).
    pub purge_chunk: Option<Text>,
    pub omit_detailed_recording: bool,
    /// tyk-pump: raw request/response bytes kept per record.
    pub max_record_size: Option<Text>,
    /// Health check listener: iam `host:port`, tyk a port.
    pub health_address: Option<Text>,
    pub health_port: Option<Text>,
    pub pumps: Vec<OldPump>,
}

/// The Redis settings of either tool.
#[derive(Debug, Default)]
pub(super) struct OldRedis {
    pub host: Option<Text>,
    pub port: Option<Text>,
    /// `addrs`, or tyk's deprecated `hosts` map as `host:port`.
    pub addrs: Vec<Text>,
    pub username: Option<Text>,
    pub password: Option<Text>,
    pub database: Option<Text>,
    pub master_name: Option<Text>,
    pub sentinel_password: Option<Text>,
    pub enable_cluster: bool,
    pub use_ssl: bool,
    pub insecure: bool,
    pub ca_file: Option<Text>,
    pub cert_file: Option<Text>,
    pub key_file: Option<Text>,
    pub key_prefix: Option<Text>,
}

/// One pump of the old config.
#[derive(Debug)]
pub(super) struct OldPump {
    /// The key in `pumps`.
    pub name: String,
    /// `type`, lower case (the key when unset).
    pub kind: String,
    pub filters: OldFilters,
    /// Seconds per write (0: none).
    pub timeout: Option<Text>,
    pub omit_detailed_recording: bool,
    pub max_record_size: Option<Text>,
    pub meta: Meta,
}

/// `filters`: tyk org/api/response-code lists, iam usernames.
#[derive(Debug, Default)]
pub(super) struct OldFilters {
    pub lists: Vec<(&'static str, Vec<Value>)>,
}

/// A pump's `meta`, with `TYK_PMP_PUMPS_<NAME>_META_<FIELD>` overrides.
/// Remembers which keys were read, so the rest can be listed.
#[derive(Debug)]
pub(super) struct Meta {
    dialect: Dialect,
    map: Map<String, Value>,
    env_prefix: String,
    env: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl Meta {
    /// A string (or number) setting; `go_field` is the field's Go name,
    /// which tyk-pump's override variable is named after.
    pub fn text(&self, key: &str, go_field: &str) -> Option<Text> {
        self.used.borrow_mut().insert(key.to_string());
        let var = format!("{}{go_field}", self.env_prefix);
        if self.dialect == Dialect::TykPump && self.env.contains_key(&var) {
            return Some(Text::Env(format!("${{{var}}}")));
        }
        self.map.get(key).and_then(|v| text(self.dialect, v))
    }

    /// A boolean; an override variable decides by its current value.
    pub fn flag(&self, key: &str, go_field: &str) -> bool {
        self.used.borrow_mut().insert(key.to_string());
        let var = format!("{}{go_field}", self.env_prefix);
        if self.dialect == Dialect::TykPump {
            if let Some(v) = self.env.get(&var) {
                return v.eq_ignore_ascii_case("true") || v == "1";
            }
        }
        self.map.get(key).is_some_and(truthy)
    }

    /// A raw value (lists, tables).
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.used.borrow_mut().insert(key.to_string());
        self.map.get(key)
    }

    /// A list of strings.
    pub fn texts(&self, key: &str) -> Vec<Text> {
        match self.value(key) {
            Some(Value::Array(items)) => {
                items.iter().filter_map(|v| text(self.dialect, v)).collect()
            }
            Some(v) => text(self.dialect, v).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Keys that were set but never read: they have no counterpart.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        self.map
            .iter()
            .filter(|(k, v)| !used.contains(*k) && k.as_str() != "meta_env_prefix" && !is_unset(v))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every key and value, secrets replaced, for a commented block.
    pub fn redacted(&self) -> Vec<(String, String)> {
        self.map
            .iter()
            .map(|(k, v)| {
                let secret = [
                    "password",
                    "token",
                    "secret",
                    "key",
                    "url",
                    "connection_string",
                ]
                .iter()
                .any(|s| k.to_ascii_lowercase().contains(s));
                let shown = if secret && !v.is_null() {
                    "\"<redacted>\"".to_string()
                } else {
                    v.to_string()
                };
                (k.clone(), shown)
            })
            .collect()
    }
}

/// A zero, empty or null value: tyk-pump and iam-pump treat it as unset.
fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// A scalar as text; in iam's YAML a `${...}` stays a reference.
fn text(dialect: Dialect, v: &Value) -> Option<Text> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    if dialect == Dialect::IamPump && s.contains("${") {
        Some(Text::Env(s))
    } else {
        Some(Text::Lit(s))
    }
}

/// Reads `text` in `dialect`.
pub(super) fn parse(
    dialect: Dialect,
    text: &str,
    env: &BTreeMap<String, String>,
) -> Result<Old, MigrateError> {
    let root: Value = match dialect {
        Dialect::TykPump => serde_json::from_str(text).map_err(|e| MigrateError::Parse {
            dialect: dialect.name(),
            message: e.to_string(),
        })?,
        Dialect::IamPump => serde_yaml_ng::from_str(text).map_err(|e| MigrateError::Parse {
            dialect: dialect.name(),
            message: e.to_string(),
        })?,
    };
    let Value::Object(root) = root else {
        return Err(MigrateError::Parse {
            dialect: dialect.name(),
            message: "the top level must be a map".into(),
        });
    };
    let reader = Reader { dialect, env };
    Ok(match dialect {
        Dialect::TykPump => reader.tyk(&root)?,
        Dialect::IamPump => reader.iam(&root)?,
    })
}

struct Reader<'a> {
    dialect: Dialect,
    env: &'a BTreeMap<String, String>,
}

impl Reader<'_> {
    /// A top-level or nested setting: the first set override variable
    /// wins, else the file's value.
    fn get(&self, map: &Map<String, Value>, key: &str, vars: &[String]) -> Option<Text> {
        if let Some(var) = vars.iter().find(|v| self.env.contains_key(*v)) {
            return Some(Text::Env(format!("${{{var}}}")));
        }
        map.get(key)
            .filter(|v| !is_unset(v))
            .and_then(|v| text(self.dialect, v))
    }

    fn flag(&self, map: &Map<String, Value>, key: &str, vars: &[String]) -> bool {
        if let Some(v) = vars.iter().find_map(|v| self.env.get(v)) {
            return v.eq_ignore_ascii_case("true") || v == "1";
        }
        map.get(key).is_some_and(truthy)
    }

    fn tyk(&self, root: &Map<String, Value>) -> Result<Old, MigrateError> {
        let top = |go: &str| vec![format!("TYK_PMP_{go}")];
        let empty = Map::new();
        let storage = object(root, "analytics_storage_config")?.unwrap_or(&empty);
        // tyk-pump applies TYK_PMP_ANALYTICSSTORAGECONFIG_*, then the Redis
        // handler TYK_PMP_REDIS_* and TYK_PMP_TEMPORAL_STORAGE_* (last wins).
        let vars = |go: &str| {
            vec![
                format!("TYK_PMP_TEMPORAL_STORAGE_{go}"),
                format!("TYK_PMP_REDIS_{go}"),
                format!("TYK_PMP_ANALYTICSSTORAGECONFIG_{go}"),
            ]
        };
        let get = |k: &str, go: &str| self.get(storage, k, &vars(go));
        let flag = |k: &str, go: &str| self.flag(storage, k, &vars(go));
        let mut addrs: Vec<Text> = match storage.get("addrs") {
            Some(Value::Array(a)) => a.iter().filter_map(|v| text(self.dialect, v)).collect(),
            _ => Vec::new(),
        };
        if addrs.is_empty() {
            if let Some(Value::Object(hosts)) = storage.get("hosts") {
                addrs = hosts
                    .iter()
                    .map(|(h, p)| {
                        let port = text(self.dialect, p)
                            .map(|t| t.template())
                            .unwrap_or_default();
                        Text::Lit(format!("{h}:{port}"))
                    })
                    .collect();
            }
        }
        let redis = OldRedis {
            host: get("host", "HOST"),
            port: get("port", "PORT"),
            addrs,
            username: get("username", "USERNAME"),
            password: get("password", "PASSWORD"),
            database: get("database", "DATABASE"),
            master_name: get("master_name", "MASTERNAME"),
            sentinel_password: get("sentinel_password", "SENTINELPASSWORD"),
            enable_cluster: flag("enable_cluster", "ENABLECLUSTER"),
            use_ssl: flag("use_ssl", "USESSL") || flag("redis_use_ssl", "REDISUSESSL"),
            insecure: flag("ssl_insecure_skip_verify", "SSLINSECURESKIPVERIFY")
                || flag(
                    "redis_ssl_insecure_skip_verify",
                    "REDISSSLINSECURESKIPVERIFY",
                ),
            ca_file: get("ssl_ca_file", "SSLCAFILE"),
            cert_file: get("ssl_cert_file", "SSLCERTFILE"),
            key_file: get("ssl_key_file", "SSLKEYFILE"),
            key_prefix: get("key_prefix", "KEYPREFIX")
                .or_else(|| get("redis_key_prefix", "REDISKEYPREFIX")),
        };
        let mut pumps = Vec::new();
        let file_pumps = object(root, "pumps")?.cloned().unwrap_or_default();
        // tyk-pump upper-cases pump names for its override variables, and a
        // pump may exist only as TYK_PMP_PUMPS_<NAME>_TYPE.
        let mut names: BTreeMap<String, String> = file_pumps
            .keys()
            .map(|k| (k.to_ascii_uppercase(), k.clone()))
            .collect();
        for var in self.env.keys() {
            if let Some(name) = var
                .strip_prefix("TYK_PMP_PUMPS_")
                .and_then(|r| r.strip_suffix("_TYPE"))
            {
                if !name.contains("_META") {
                    names
                        .entry(name.to_string())
                        .or_insert_with(|| name.to_ascii_lowercase());
                }
            }
        }
        for (upper, name) in names {
            let pump = match file_pumps.get(&name) {
                Some(Value::Object(p)) => p.clone(),
                None => Map::new(),
                Some(_) => {
                    return Err(MigrateError::Invalid {
                        field: format!("pumps.{name}"),
                        message: "must be a map".into(),
                    })
                }
            };
            let pvar = |go: &str| vec![format!("TYK_PMP_PUMPS_{upper}_{go}")];
            let kind = self
                .env
                .get(&format!("TYK_PMP_PUMPS_{upper}_TYPE"))
                .cloned()
                .or_else(|| pump.get("type").and_then(Value::as_str).map(str::to_string))
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| name.clone())
                .to_ascii_lowercase();
            pumps.push(OldPump {
                filters: filters(&pump, &name)?,
                timeout: self.get(&pump, "timeout", &pvar("TIMEOUT")),
                omit_detailed_recording: self.flag(
                    &pump,
                    "omit_detailed_recording",
                    &pvar("OMITDETAILEDRECORDING"),
                ),
                max_record_size: self.get(&pump, "max_record_size", &pvar("MAXRECORDSIZE")),
                meta: self.meta(&pump, &name, format!("TYK_PMP_PUMPS_{upper}_META_"))?,
                name,
                kind,
            });
        }
        Ok(Old {
            dialect: self.dialect,
            redis,
            purge_delay: self.get(root, "purge_delay", &top("PURGEDELAY")),
            purge_chunk: self.get(root, "purge_chunk", &top("PURGECHUNK")),
            omit_detailed_recording: self.flag(
                root,
                "omit_detailed_recording",
                &top("OMITDETAILEDRECORDING"),
            ),
            max_record_size: self.get(root, "max_record_size", &top("MAXRECORDSIZE")),
            health_address: None,
            health_port: self.get(
                root,
                "health_check_endpoint_port",
                &top("HEALTHCHECKENDPOINTPORT"),
            ),
            pumps,
        })
    }

    fn iam(&self, root: &Map<String, Value>) -> Result<Old, MigrateError> {
        let empty = Map::new();
        let r = object(root, "redis")?.unwrap_or(&empty);
        let get = |k: &str| self.get(r, k, &[]);
        let redis = OldRedis {
            host: get("host"),
            port: get("port"),
            addrs: match r.get("addrs") {
                Some(Value::Array(a)) => a.iter().filter_map(|v| text(self.dialect, v)).collect(),
                Some(Value::String(s)) if !s.is_empty() => s
                    .split(',')
                    .map(|a| text(self.dialect, &Value::String(a.trim().into())).unwrap())
                    .collect(),
                _ => Vec::new(),
            },
            username: get("username"),
            password: get("password"),
            database: get("database"),
            master_name: get("master-name"),
            sentinel_password: None,
            enable_cluster: self.flag(r, "enable-cluster", &[]),
            use_ssl: self.flag(r, "use-ssl", &[]),
            insecure: self.flag(r, "ssl-insecure-skip-verify", &[]),
            ca_file: None,
            cert_file: None,
            key_file: None,
            key_prefix: None,
        };
        let mut pumps = Vec::new();
        for (name, pump) in object(root, "pumps")?.cloned().unwrap_or_default() {
            let Value::Object(pump) = pump else {
                return Err(MigrateError::Invalid {
                    field: format!("pumps.{name}"),
                    message: "must be a map".into(),
                });
            };
            let kind = pump
                .get("type")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .unwrap_or(&name)
                .to_ascii_lowercase();
            pumps.push(OldPump {
                filters: filters(&pump, &name)?,
                timeout: self.get(&pump, "timeout", &[]),
                omit_detailed_recording: self.flag(&pump, "omit-detailed-recording", &[]),
                max_record_size: None,
                meta: self.meta(&pump, &name, String::new())?,
                name,
                kind,
            });
        }
        Ok(Old {
            dialect: self.dialect,
            redis,
            purge_delay: self.get(root, "purge-delay", &[]),
            purge_chunk: None,
            omit_detailed_recording: self.flag(root, "omit-detailed-recording", &[]),
            max_record_size: None,
            health_address: self.get(root, "health-check-address", &[]),
            health_port: None,
            pumps,
        })
    }

    fn meta(
        &self,
        pump: &Map<String, Value>,
        name: &str,
        env_prefix: String,
    ) -> Result<Meta, MigrateError> {
        let map = match pump.get("meta") {
            Some(Value::Object(m)) => m.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                return Err(MigrateError::Invalid {
                    field: format!("pumps.{name}.meta"),
                    message: "must be a map".into(),
                })
            }
        };
        let env = self
            .env
            .iter()
            .filter(|(k, _)| !env_prefix.is_empty() && k.starts_with(&env_prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Meta {
            dialect: self.dialect,
            map,
            env_prefix,
            env,
            used: RefCell::default(),
        })
    }
}

fn object<'a>(
    map: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, MigrateError> {
    match map.get(key) {
        Some(Value::Object(m)) => Ok(Some(m)),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(MigrateError::Invalid {
            field: key.into(),
            message: "must be a map".into(),
        }),
    }
}

/// `filters`, under pumphouse's names (which are iam's and tyk's own).
fn filters(pump: &Map<String, Value>, name: &str) -> Result<OldFilters, MigrateError> {
    let Some(f) = object(pump, "filters").map_err(|e| match e {
        MigrateError::Invalid { message, .. } => MigrateError::Invalid {
            field: format!("pumps.{name}.filters"),
            message,
        },
        e => e,
    })?
    else {
        return Ok(OldFilters::default());
    };
    let mut lists = Vec::new();
    for key in [
        "usernames",
        "skip_usernames",
        "org_ids",
        "skip_org_ids",
        "api_ids",
        "skip_api_ids",
        "response_codes",
        "skip_response_codes",
    ] {
        match f.get(key) {
            Some(Value::Array(items)) if !items.is_empty() => lists.push((key, items.clone())),
            None | Some(Value::Null) | Some(Value::Array(_)) => {}
            Some(_) => {
                return Err(MigrateError::Invalid {
                    field: format!("pumps.{name}.filters.{key}"),
                    message: "must be a list".into(),
                })
            }
        }
    }
    Ok(OldFilters { lists })
}
