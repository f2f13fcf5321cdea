//! The typed config builder of the end-to-end tests: a host config is a
//! TOML table built by name, never by pasting strings, so a test says
//! which fields it sets and the builder writes valid TOML.
//!
//! ```ignore
//! let config = HostConfig::new(&redis)
//!     .source("batch_size", 50)
//!     .pump(Pump::file("healthy", "healthy.jsonl"))
//!     .pump(Pump::new("slow", fixture("faulty")).set("timeout", "1s").config("delay_ms", 200));
//! let host = Host::start(&config);
//! ```
//!
//! Keys may be dotted paths (`"retry.max_attempts"`, `"sandbox.dirs"`):
//! each part is a table created on first use.

use std::fmt;

use toml::{Table, Value};

use super::harness::{plugin, RedisServer};

/// The table holding the last part of dotted `path`, and that part;
/// tables on the way are created.
fn parent_of<'a, 'p>(table: &'a mut Table, path: &'p str) -> (&'a mut Table, &'p str) {
    let (parent, last) = match path.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, path),
    };
    let mut t = table;
    for part in parent.into_iter().flat_map(|p| p.split('.')) {
        let next = t
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        t = match next {
            Value::Table(inner) => inner,
            other => panic!("config path {path}: {part} is {other}, not a table"),
        };
    }
    (t, last)
}

/// Sets `path` (dotted) in `table` to `value`, creating tables on the way.
fn set_path(table: &mut Table, path: &str, value: Value) {
    let (t, last) = parent_of(table, path);
    t.insert(last.to_string(), value);
}

/// Merges `from` into `into`: tables merge key by key, anything else
/// replaces what was there.
fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn parse(fragment: &str) -> Table {
    fragment
        .parse::<Table>()
        .unwrap_or_else(|e| panic!("bad TOML fragment {fragment:?}: {e}"))
}

/// A whole host config: `[source]`, top-level settings and `[[pumps]]`.
/// `Host::start` adds `[server]`.
#[derive(Clone)]
pub struct HostConfig {
    doc: Table,
    pumps: Vec<Pump>,
}

impl HostConfig {
    /// A list source of iam records on `redis`, polled every 20 ms.
    pub fn new(redis: &RedisServer) -> HostConfig {
        Self::at_url(&redis.url())
    }

    /// Like [`HostConfig::new`], for any Redis URL (one that is down, say).
    pub fn at_url(url: &str) -> HostConfig {
        let mut doc = Table::new();
        set_path(&mut doc, "source.redis_url", url.into());
        set_path(&mut doc, "source.format", "iam".into());
        set_path(&mut doc, "source.poll_interval", "20ms".into());
        HostConfig {
            doc,
            pumps: Vec::new(),
        }
    }

    /// Records are Tyk's.
    pub fn tyk(self) -> HostConfig {
        self.source("format", "tyk")
    }

    /// Records are any MessagePack maps (`format = "generic"`).
    pub fn generic(self) -> HostConfig {
        self.source("format", "generic")
    }

    /// `[source.tls]` with a CA and a client certificate and key (paths).
    pub fn tls(self, ca_file: &str, cert_file: &str, key_file: &str) -> HostConfig {
        self.source("tls.ca_file", ca_file)
            .source("tls.cert_file", cert_file)
            .source("tls.key_file", key_file)
    }

    /// Sets `source.<key>`.
    pub fn source(self, key: &str, value: impl Into<Value>) -> HostConfig {
        self.set(&format!("source.{key}"), value)
    }

    /// Sets a top-level setting by dotted path (`"spool_dir"`,
    /// `"reload.watch"`, `"shutdown.drain_timeout"`).
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> HostConfig {
        set_path(&mut self.doc, path, value.into());
        self
    }

    /// Adds a pump.
    pub fn pump(mut self, pump: Pump) -> HostConfig {
        self.pumps.push(pump);
        self
    }

    /// Replaces the pump named `name` by `edit` of it, keeping its place:
    /// a reload test changes one pump of the config it started with.
    pub fn edit_pump(mut self, name: &str, edit: impl FnOnce(Pump) -> Pump) -> HostConfig {
        let i = self.pump_index(name);
        let pump = self.pumps.remove(i);
        self.pumps.insert(i, edit(pump));
        self
    }

    /// Drops the pump named `name`.
    pub fn without_pump(mut self, name: &str) -> HostConfig {
        let i = self.pump_index(name);
        self.pumps.remove(i);
        self
    }

    fn pump_index(&self, name: &str) -> usize {
        self.pumps
            .iter()
            .position(|p| p.table.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no pump named {name} in the config"))
    }

    /// The TOML document.
    pub fn to_toml(&self) -> String {
        let mut doc = self.doc.clone();
        let pumps: Vec<Value> = self
            .pumps
            .iter()
            .map(|p| Value::Table(p.table.clone()))
            .collect();
        if !pumps.is_empty() {
            doc.insert("pumps".into(), Value::Array(pumps));
        }
        toml::to_string(&doc).expect("a TOML table serialises")
    }
}

impl fmt::Display for HostConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_toml())
    }
}

/// One `[[pumps]]` entry.
#[derive(Clone)]
pub struct Pump {
    table: Table,
}

impl Pump {
    /// A pump of the plugin at `plugin` (a path) with nothing else set.
    pub fn new(name: &str, plugin: impl Into<String>) -> Pump {
        let mut table = Table::new();
        table.insert("name".into(), name.into());
        table.insert("plugin".into(), Value::String(plugin.into()));
        Pump { table }
    }

    /// The sink at `plugin` with `config.path = "/out/<file>"` and the host
    /// dir's `out/` mounted as `/out`.
    pub fn sink(name: &str, plugin: impl Into<String>, file: &str) -> Pump {
        Pump::new(name, plugin)
            .config("path", format!("/out/{file}"))
            .mount("out", "/out")
    }

    /// The `file` sink writing `<host dir>/out/<file>`.
    pub fn file(name: &str, file: &str) -> Pump {
        Pump::sink(name, plugin("file"), file)
    }

    /// Sets a field by dotted path (`"timeout"`, `"retry.max_attempts"`,
    /// `"sandbox.sockets"`, `"filters.usernames"`).
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Pump {
        set_path(&mut self.table, path, value.into());
        self
    }

    /// Sets `config.<key>`, the plugin's own config.
    pub fn config(self, key: &str, value: impl Into<Value>) -> Pump {
        self.set(&format!("config.{key}"), value)
    }

    /// Sets `sandbox.<key>`.
    pub fn sandbox(self, key: &str, value: impl Into<Value>) -> Pump {
        self.set(&format!("sandbox.{key}"), value)
    }

    /// Sets `filters.<key>`, one of the host's record filters
    /// (`"usernames"`, `"skip_response_codes"`).
    pub fn filter(self, key: &str, value: impl Into<Value>) -> Pump {
        self.set(&format!("filters.{key}"), value)
    }

    /// Appends the filter plugin at `plugin` to `filters_chain`, with
    /// `config` as its config table.
    pub fn filter_plugin<'a, V: Into<Value>>(
        mut self,
        plugin: impl Into<String>,
        config: impl IntoIterator<Item = (&'a str, V)>,
    ) -> Pump {
        let mut f = Table::new();
        f.insert("plugin".into(), Value::String(plugin.into()));
        let config: Table = config
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        f.insert("config".into(), Value::Table(config));
        push_to(&mut self.table, "filters_chain", Value::Table(f));
        self
    }

    /// Buffers in a disk spool (`buffer = "disk"`) instead of memory.
    pub fn disk(self) -> Pump {
        self.set("buffer", "disk")
    }

    /// Retries start at `initial` and are capped at `max`.
    pub fn retry(self, initial: &str, max: &str) -> Pump {
        self.set("retry.initial", initial).set("retry.max", max)
    }

    /// Mounts `host` (relative to the host's dir) as `guest`.
    pub fn mount(self, host: &str, guest: &str) -> Pump {
        self.dir(host, guest, false)
    }

    /// Adds a `sandbox.dirs` entry.
    pub fn dir(mut self, host: &str, guest: &str, read_only: bool) -> Pump {
        let mut d = Table::new();
        d.insert("host".into(), host.into());
        d.insert("guest".into(), guest.into());
        if read_only {
            d.insert("read_only".into(), true.into());
        }
        push_to(&mut self.table, "sandbox.dirs", Value::Table(d));
        self
    }

    /// Merges a TOML fragment into the pump, for settings easier read as
    /// TOML (`"rate_limit = { records_per_second = 100 }"`).
    pub fn toml(mut self, fragment: &str) -> Pump {
        merge(&mut self.table, parse(fragment));
        self
    }
}

/// Appends `value` to the array at `path`, creating it.
fn push_to(table: &mut Table, path: &str, value: Value) {
    let (t, last) = parent_of(table, path);
    match t
        .entry(last.to_string())
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(a) => a.push(value),
        other => panic!("config path {path} is {other}, not an array"),
    }
}

/// A TOML array of strings, for list fields (`sandbox.sockets`,
/// `filters.usernames`).
pub fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|s| Value::String(s.as_ref().to_string()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_nested_tables_and_pump_arrays() {
        let cfg = HostConfig::at_url("redis://127.0.0.1:1/0")
            .source("batch_size", 50)
            .set("shutdown.drain_timeout", "3s")
            .pump(
                Pump::new("a", "/p/a.wasm")
                    .set("retry.max_attempts", 2)
                    .config("mode", "x")
                    .mount("out", "/out")
                    .sandbox("sockets", strings(["127.0.0.1:1"]))
                    .toml("rate_limit = { records_per_second = 10 }")
                    .filter_plugin("/p/f.wasm", [("mode", "keep")]),
            );
        let doc: Table = cfg.to_toml().parse().unwrap();
        assert_eq!(doc["source"]["batch_size"].as_integer(), Some(50));
        assert_eq!(doc["source"]["format"].as_str(), Some("iam"));
        assert_eq!(doc["shutdown"]["drain_timeout"].as_str(), Some("3s"));
        let p = &doc["pumps"][0];
        assert_eq!(p["retry"]["max_attempts"].as_integer(), Some(2));
        assert_eq!(p["config"]["mode"].as_str(), Some("x"));
        assert_eq!(p["sandbox"]["dirs"][0]["guest"].as_str(), Some("/out"));
        assert_eq!(p["sandbox"]["sockets"][0].as_str(), Some("127.0.0.1:1"));
        assert_eq!(p["rate_limit"]["records_per_second"].as_integer(), Some(10));
        assert_eq!(p["filters_chain"][0]["plugin"].as_str(), Some("/p/f.wasm"));
        assert_eq!(
            p["filters_chain"][0]["config"]["mode"].as_str(),
            Some("keep")
        );
    }
}
