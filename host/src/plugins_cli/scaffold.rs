//! `pumphouse plugins new`: a plugin crate that builds with one
//! `cargo build --release`.

use std::path::{Path, PathBuf};

use crate::runtime::Kind;

/// The SDK this binary was built from, used when `--sdk` is not given.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-sdk");

/// Why a plugin crate could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "plugin name {0:?}: use lowercase letters, digits, '-' and '_', starting with a letter"
    )]
    Name(String),
    #[error("{0} already exists; choose another name or --dir")]
    Exists(PathBuf),
    #[error("{0}: no pumphouse-sdk there (expected plugin-sdk/Cargo.toml); pass --sdk PATH to the plugin-sdk directory of a pumphouse checkout")]
    NoSdk(PathBuf),
    #[error("no pumphouse-sdk found next to this binary's sources; pass --sdk PATH to the plugin-sdk directory of a pumphouse checkout")]
    SdkUnknown,
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// Crate and plugin name.
    pub name: String,
    pub kind: Kind,
    /// Directory the crate's folder is created in.
    pub dir: PathBuf,
    /// The `plugin-sdk` directory; `None`: the one this binary was built from.
    pub sdk: Option<PathBuf>,
}

/// Creates `<dir>/<name>` and returns its path.
pub fn scaffold(new: &NewPlugin) -> Result<PathBuf, ScaffoldError> {
    let name = new.name.as_str();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(ScaffoldError::Name(name.to_string()));
    }
    let sdk = sdk_path(new.sdk.as_deref())?;
    let root = new.dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let ty = type_name(name);
    // Relative to the crate, so the manifest names no machine's absolute
    // path and keeps working when the checkout and the crate move together.
    let sdk_dep = std::fs::create_dir_all(&new.dir)
        .and_then(|()| std::fs::canonicalize(&new.dir))
        .map(|dir| relative_to(&dir.join(name), &sdk))
        .unwrap_or(sdk);
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk_dep)),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        (".gitignore", "/target\n".to_string()),
        (
            "src/lib.rs",
            match new.kind {
                Kind::Sink => SINK_TEMPLATE,
                Kind::Filter => FILTER_TEMPLATE,
            }
            .replace("{{name}}", name)
            .replace("{{Type}}", &ty),
        ),
        (
            "README.md",
            README_TEMPLATE
                .replace("{{name}}", name)
                .replace("{{kind}}", &new.kind.to_string())
                .replace("{{crate}}", &name.replace('-', "_")),
        ),
    ];
    for (rel, text) in files {
        let path = root.join(rel);
        let write = |p: &Path| -> std::io::Result<()> {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(p, text.as_bytes())
        };
        write(&path).map_err(|source| ScaffoldError::Write { path, source })?;
    }
    Ok(root)
}

fn sdk_path(given: Option<&Path>) -> Result<PathBuf, ScaffoldError> {
    let (path, explicit) = match given {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(BUILT_SDK), false),
    };
    if !path.join("Cargo.toml").is_file() {
        return Err(if explicit {
            ScaffoldError::NoSdk(path)
        } else {
            ScaffoldError::SdkUnknown
        });
    }
    // Absolute here; the manifest gets it relative to the new crate.
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

/// The path that leads from directory `from` to `to`, both absolute
/// (`/a/b/c`, `/a/plugin-sdk` → `../../plugin-sdk`).
fn relative_to(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// `my-sink` → `MySink`.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    // A TOML string literal, escaped whatever the path holds.
    let sdk = toml::Value::String(sdk.display().to_string()).to_string();
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

# A pumphouse plugin is a WebAssembly component: a cdylib built for
# wasm32-wasip2 (see .cargo/config.toml).
[lib]
crate-type = ["cdylib"]

[dependencies]
pumphouse-sdk = {{ path = {sdk} }}
serde = {{ version = "1", features = ["derive"] }}

# Its own workspace, even when created inside another one.
[workspace]
"#
    )
}

const CARGO_CONFIG: &str = r#"# Plugins run in pumphouse as WASI preview 2 components.
# `rustup target add wasm32-wasip2` once, then `cargo build --release`.
[build]
target = "wasm32-wasip2"
"#;

const SINK_TEMPLATE: &str = r#"//! `{{name}}`: a pumphouse sink plugin. It logs and counts every batch; put
//! the delivery (a file in a sandbox dir, an HTTP API with
//! `pumphouse_sdk::http`) in `write`.

use pumphouse_sdk::{Batch, Config, Encoding, Error, PluginInfo, Sink, WriteError};
use serde::Deserialize;

/// The pump's `config` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct {{Type}}Config {
    /// Text in front of every log line.
    #[serde(default)]
    prefix: String,
}

pub struct {{Type}} {
    prefix: String,
}

impl Sink for {{Type}} {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let {{Type}}Config { prefix } = config.parse()?;
        Ok({{Type}} { prefix })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        for rec in batch.records() {
            // A record that is not JSON makes the host bisect the batch and
            // dead-letter it.
            let value = rec.value()?;
            pumphouse_sdk::debug!("{}record {}: {value}", self.prefix, rec.id());
        }
        pumphouse_sdk::metrics::counter_add("records_seen", batch.len() as u64, &[]);
        pumphouse_sdk::info!("{}{} records", self.prefix, batch.len());
        Ok(())
    }
}

pumphouse_sdk::export_sink!({{Type}});
"#;

const FILTER_TEMPLATE: &str = r#"//! `{{name}}`: a pumphouse filter plugin. It keeps the records that have a
//! value in the configured `field`.

use pumphouse_sdk::{Batch, Config, Encoding, Error, Filter, PluginInfo, Verdict};
use serde::Deserialize;

/// The filter's `config` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct {{Type}}Config {
    /// Top-level field that must be present and not null.
    #[serde(default = "default_field")]
    field: String,
}

fn default_field() -> String {
    "Username".into()
}

pub struct {{Type}} {
    field: String,
}

impl Filter for {{Type}} {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Msgpack,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let {{Type}}Config { field } = config.parse()?;
        Ok({{Type}} { field })
    }

    fn process(&mut self, batch: &Batch) -> Result<Verdict, Error> {
        let kept = batch
            .records()
            .filter(|rec| rec.field(&self.field).is_some())
            .map(|rec| rec.index())
            .collect();
        Ok(Verdict::from_indices(kept, batch.len()))
    }
}

pumphouse_sdk::export_filter!({{Type}});
"#;

const README_TEMPLATE: &str = r#"# {{name}}

A pumphouse {{kind}} plugin.

## Build

```sh
rustup target add wasm32-wasip2   # once
cargo build --release
```

The component is `target/wasm32-wasip2/release/{{crate}}.wasm`.

## Try it

```sh
pumphouse plugins inspect target/wasm32-wasip2/release/{{crate}}.wasm
pumphouse produce --format iam --count 250 --to-file records.jsonl
pumphouse plugins test target/wasm32-wasip2/release/{{crate}}.wasm --input records.jsonl --format iam
```

`plugins test` runs the plugin on sample records (`.jsonl`: one JSON object
per line, such as `produce --to-file`, the `file` sink or `pumphouse dlq
list --json` write them; `.msgpack`: concatenated MessagePack records, as
`pumphouse produce` pushes them) without Redis, prints what the plugin did
with each batch, and exits non-zero when a batch failed, so it fits a CI
job.

## Deploy

Copy the `.wasm` into the host's `plugins_dir` (to a temporary name, then
rename) and name it in a pump:

```toml
[[pumps]]
name = "{{name}}"
plugin = "{{crate}}.wasm"
```

The plugin sees only what the pump's `[pumps.sandbox]` grants: `dirs`,
`env`, `allowed_outbound_hosts`, `sockets`. See the pumphouse-sdk README
for the API, the error semantics and each capability.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_paths_are_relative_to_the_crate() {
        let rel = |a: &str, b: &str| relative_to(Path::new(a), Path::new(b));
        assert_eq!(
            rel("/w/repo/my-sink", "/w/repo/plugin-sdk"),
            Path::new("../plugin-sdk")
        );
        assert_eq!(
            rel("/tmp/x/my-sink", "/w/repo/plugin-sdk"),
            Path::new("../../../w/repo/plugin-sdk")
        );
    }

    #[test]
    fn names_become_types() {
        assert_eq!(type_name("my-sink"), "MySink");
        assert_eq!(type_name("es_bulk2"), "EsBulk2");
    }

    #[test]
    fn scaffolds_a_crate_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = Path::new(BUILT_SDK);
        let new = NewPlugin {
            name: "my-sink".into(),
            kind: Kind::Sink,
            dir: dir.path().to_path_buf(),
            sdk: Some(sdk.to_path_buf()),
        };
        let root = scaffold(&new).unwrap();
        let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("crate-type = [\"cdylib\"]"), "{cargo}");
        let manifest = toml::from_str::<toml::Table>(&cargo).unwrap();
        let dep = manifest["dependencies"]["pumphouse-sdk"]["path"]
            .as_str()
            .unwrap();
        assert!(dep.starts_with(".."), "{dep}");
        assert_eq!(
            std::fs::canonicalize(root.join(dep)).unwrap(),
            std::fs::canonicalize(sdk).unwrap()
        );
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(
            lib.contains("export_sink!(MySink)") && !lib.contains("{{"),
            "{lib}"
        );
        assert!(std::fs::read_to_string(root.join(".cargo/config.toml"))
            .unwrap()
            .contains("wasm32-wasip2"));
        assert!(matches!(scaffold(&new), Err(ScaffoldError::Exists(_))));
        let bad = NewPlugin {
            name: "Bad Name".into(),
            ..new.clone()
        };
        assert!(matches!(scaffold(&bad), Err(ScaffoldError::Name(_))));
        let nosdk = NewPlugin {
            name: "other".into(),
            sdk: Some(dir.path().join("nowhere")),
            ..new
        };
        let e = scaffold(&nosdk).unwrap_err().to_string();
        assert!(e.contains("--sdk"), "{e}");
    }
}
