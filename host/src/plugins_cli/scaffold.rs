//! `pumphouse plugins new`: a plugin project that builds with one
//! command: a Rust crate (`cargo build --release`) or a Python package
//! (`./build`, which runs its tests and then componentize-py).

use std::path::{Path, PathBuf};

use crate::runtime::Kind;

/// The SDK this binary was built from, used when `--sdk` is not given.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-sdk");
/// The Python SDK of the same checkout.
const BUILT_PYTHON_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/python");
/// The JavaScript SDK of the same checkout.
const BUILT_JS_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/js");

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    /// The file that marks an SDK directory, and where it lives in a
    /// pumphouse checkout.
    fn sdk_marker(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Lang::Rust => (BUILT_SDK, "Cargo.toml", "plugin-sdk"),
            Lang::Python => (BUILT_PYTHON_SDK, "pumphouse_sdk/__init__.py", "sdk/python"),
            Lang::Js => (BUILT_JS_SDK, "src/index.js", "sdk/js"),
        }
    }
}

/// Why a plugin crate could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "plugin name {0:?}: use lowercase letters, digits, '-' and '_', starting with a letter"
    )]
    Name(String),
    #[error("{0} already exists; choose another name or --dir")]
    Exists(PathBuf),
    #[error("{0}: no pumphouse SDK there (expected {1}); pass --sdk PATH to the {2} directory of a pumphouse checkout")]
    NoSdk(PathBuf, &'static str, &'static str),
    #[error("no pumphouse SDK found next to this binary's sources; pass --sdk PATH to the {0} directory of a pumphouse checkout")]
    SdkUnknown(&'static str),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// Crate (or Python module) and plugin name.
    pub name: String,
    pub kind: Kind,
    pub lang: Lang,
    /// Directory the crate's folder is created in.
    pub dir: PathBuf,
    /// The `plugin-sdk` (Rust) or `sdk/python` directory; `None`: the one
    /// this binary was built from.
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
    let sdk = sdk_path(new.lang, new.sdk.as_deref())?;
    let root = new.dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let ty = type_name(name);
    // Relative to the project, so it names no machine's absolute path and
    // keeps working when the checkout and the project move together.
    let sdk_dep = std::fs::create_dir_all(&new.dir)
        .and_then(|()| std::fs::canonicalize(&new.dir))
        .map(|dir| relative_to(&dir.join(name), &sdk))
        .unwrap_or(sdk);
    let files = match new.lang {
        Lang::Rust => rust_files(name, &ty, new.kind, &sdk_dep),
        Lang::Python => python_files(name, &ty, new.kind, &sdk_dep),
        Lang::Js => js_files(name, &ty, new.kind, &sdk_dep),
    };
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
    if new.lang != Lang::Rust {
        make_executable(&root.join("build"))?;
    }
    Ok(root)
}

fn make_executable(path: &Path) -> Result<(), ScaffoldError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        ScaffoldError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn rust_files(name: &str, ty: &str, kind: Kind, sdk: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("Cargo.toml", cargo_toml(name, sdk)),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        (".gitignore", "/target\n".to_string()),
        (
            "src/lib.rs",
            match kind {
                Kind::Sink => SINK_TEMPLATE,
                Kind::Filter => FILTER_TEMPLATE,
            }
            .replace("{{name}}", name)
            .replace("{{Type}}", ty),
        ),
        (
            "README.md",
            README_TEMPLATE
                .replace("{{name}}", name)
                .replace("{{kind}}", &kind.to_string())
                .replace("{{crate}}", &name.replace('-', "_")),
        ),
    ]
}

/// `path` as one single-quoted shell word, whatever it holds.
fn shell_word(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn js_files(name: &str, ty: &str, kind: Kind, sdk: &Path) -> Vec<(&'static str, String)> {
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{Type}}", ty)
            .replace("{{kind}}", &kind.to_string())
    };
    let (app, test) = match kind {
        Kind::Sink => (JS_SINK_TEMPLATE, JS_SINK_TEST_TEMPLATE),
        Kind::Filter => (JS_FILTER_TEMPLATE, JS_FILTER_TEST_TEMPLATE),
    };
    // A JSON string literal, escaped whatever the path holds.
    let sdk_json = serde_json::Value::String(format!("file:{}", sdk.display())).to_string();
    vec![
        ("plugin.js", fill(app)),
        ("plugin.test.js", fill(test)),
        (
            "package.json",
            fill(JS_PACKAGE_TEMPLATE).replace("{{sdk}}", &sdk_json),
        ),
        ("build", fill(JS_BUILD_TEMPLATE)),
        (".gitignore", "*.wasm\nnode_modules/\n".to_string()),
        ("README.md", fill(JS_README_TEMPLATE)),
    ]
}

fn python_files(name: &str, ty: &str, kind: Kind, sdk: &Path) -> Vec<(&'static str, String)> {
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{Type}}", ty)
            .replace("{{kind}}", &kind.to_string())
    };
    let sdk = shell_word(sdk);
    let (app, test) = match kind {
        Kind::Sink => (PY_SINK_TEMPLATE, PY_SINK_TEST_TEMPLATE),
        Kind::Filter => (PY_FILTER_TEMPLATE, PY_FILTER_TEST_TEMPLATE),
    };
    vec![
        ("plugin.py", fill(app)),
        ("test_plugin.py", fill(test)),
        ("build", fill(PY_BUILD_TEMPLATE).replace("{{sdk}}", &sdk)),
        (".gitignore", "*.wasm\n__pycache__/\n".to_string()),
        ("README.md", fill(PY_README_TEMPLATE)),
    ]
}

fn sdk_path(lang: Lang, given: Option<&Path>) -> Result<PathBuf, ScaffoldError> {
    let (built, marker, where_) = lang.sdk_marker();
    let (path, explicit) = match given {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(built), false),
    };
    if !path.join(marker).is_file() {
        return Err(if explicit {
            ScaffoldError::NoSdk(path, marker, where_)
        } else {
            ScaffoldError::SdkUnknown(where_)
        });
    }
    // Absolute here; the project gets it relative to itself.
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

const PY_BUILD_TEMPLATE: &str = r#"#!/bin/sh
# Builds {{name}}.wasm: runs the tests (pytest), then componentize-py.
# Needs a Python 3 with componentize-py 0.25.1 and pytest:
#   python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1 pytest==8.3.4
#   PYTHON=.venv/bin/python ./build
set -eu
cd "$(dirname "$0")"
# The pumphouse Python SDK (sdk/python of a pumphouse checkout).
SDK=${PUMPHOUSE_PYTHON_SDK:-{{sdk}}}
PY=${PYTHON:-python3}
export PYTHONPATH="$SDK${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m pytest -q -p no:cacheprovider
"$PY" -m pumphouse_sdk build plugin.py -o {{name}}.wasm
"#;

const PY_SINK_TEMPLATE: &str = r#""""{{name}}: a pumphouse sink plugin. It logs and counts every batch; put
the delivery in `write`."""

from pumphouse_sdk import ConfigError, Sink, counter_add, log


class {{Type}}(Sink):
    name = "{{name}}"
    version = "0.1.0"
    accepts = "json"

    def init(self, config):
        unknown = set(config) - {"prefix"}
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        # Text in front of every log line.
        self.prefix = str(config.get("prefix", ""))

    def write(self, batch):
        for rec in batch:
            # A record that does not decode is reported alone and
            # dead-lettered by the host.
            log.debug(f"{self.prefix}record {rec.id}: {rec.value}")
        counter_add("records_seen", len(batch))
        log.info(f"{self.prefix}{len(batch)} records")
"#;

const PY_SINK_TEST_TEMPLATE: &str = r#"import pytest

from plugin import {{Type}}
from pumphouse_sdk import ConfigError
from pumphouse_sdk.testing import Harness


def test_counts_and_logs_every_batch():
    h = Harness({{Type}}, {"prefix": "> "})
    h.write(h.batch("iam", [{"Username": "alice"}, {"Username": "bob"}]))
    assert h.counter("records_seen") == 2
    assert ("info", "> 2 records") in h.logs


def test_unknown_config_is_refused():
    with pytest.raises(ConfigError, match="colour"):
        Harness({{Type}}, {"colour": "red"})
"#;

const PY_FILTER_TEMPLATE: &str = r#""""{{name}}: a pumphouse filter plugin. It keeps the records that have a
value in the configured `field`."""

from pumphouse_sdk import ConfigError, Filter


class {{Type}}(Filter):
    name = "{{name}}"
    version = "0.1.0"
    accepts = "json"

    def init(self, config):
        unknown = set(config) - {"field"}
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        # Top-level field that must be present and not null.
        self.field = str(config.get("field", "Username"))

    def process(self, batch):
        return [rec for rec in batch if rec.value.get(self.field) is not None]
"#;

const PY_FILTER_TEST_TEMPLATE: &str = r#"import pytest

from plugin import {{Type}}
from pumphouse_sdk import ConfigError, Keep
from pumphouse_sdk.testing import Harness


def test_keeps_records_with_the_field():
    h = Harness({{Type}}, {"field": "Username"})
    batch = h.batch("iam", [{"Username": "alice"}, {"Username": None}, {}])
    assert h.process(batch) == Keep([0])


def test_unknown_config_is_refused():
    with pytest.raises(ConfigError, match="colour"):
        Harness({{Type}}, {"colour": "red"})
"#;

const PY_README_TEMPLATE: &str = r#"# {{name}}

A pumphouse {{kind}} plugin in Python (the pumphouse Python SDK,
`sdk/python` of a pumphouse checkout).

## Build

Once, the pinned build tools in a virtualenv:

```sh
python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1 pytest==8.3.4
```

Then, the one command (tests, then the component `{{name}}.wasm`):

```sh
PYTHON=.venv/bin/python ./build
```

`./build` finds the SDK by the path it was created with; set
`PUMPHOUSE_PYTHON_SDK` when the checkout moves.

## Try it

```sh
pumphouse plugins inspect {{name}}.wasm
pumphouse produce --format iam --count 250 --to-file records.jsonl
pumphouse plugins test {{name}}.wasm --input records.jsonl --format iam
```

## Deploy

Copy `{{name}}.wasm` into the host's `plugins_dir` (to a temporary name,
then rename) and name it in a pump. A Python component is ~18 MB: give
its pump `sandbox.max_memory` of at least 64 MiB. The SDK's README
documents the API, the errors and the test harness.
"#;

const JS_PACKAGE_TEMPLATE: &str = r#"{
  "name": "{{name}}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "dependencies": {
    "@pumphouse/sdk": {{sdk}}
  }
}
"#;

const JS_BUILD_TEMPLATE: &str = r#"#!/bin/sh
# Builds {{name}}.wasm: links the SDK (package.json), runs the tests
# (node --test), then ComponentizeJS through the SDK's build.mjs. The SDK
# needs its pinned tools once: (cd <pumphouse>/sdk/js && npm ci).
set -eu
cd "$(dirname "$0")"
[ -e node_modules/@pumphouse/sdk ] || npm install --no-audit --no-fund --offline --loglevel=error
node --test
node node_modules/@pumphouse/sdk/build.mjs plugin.js -o {{name}}.wasm
"#;

const JS_SINK_TEMPLATE: &str = r#"// {{name}}: a pumphouse sink plugin. It logs and counts every batch; put
// the delivery in `write` (an `async write` may await fetch; build with
// --http).
import { ConfigError, counterAdd, log, Sink } from '@pumphouse/sdk';

export class {{Type}} extends Sink {
  static pluginName = '{{name}}';
  static version = '0.1.0';
  static accepts = 'json';

  init(config) {
    const unknown = Object.keys(config).filter((k) => k !== 'prefix');
    if (unknown.length) throw new ConfigError(`unknown config keys: ${unknown.join(', ')}`);
    // Text in front of every log line.
    this.prefix = String(config.prefix ?? '');
  }

  write(batch) {
    for (const rec of batch) {
      // A record that does not decode is reported alone and dead-lettered.
      log.debug(`${this.prefix}record ${rec.id}: ${JSON.stringify(rec.value)}`);
    }
    counterAdd('records_seen', batch.length);
    log.info(`${this.prefix}${batch.length} records`);
  }
}
"#;

const JS_SINK_TEST_TEMPLATE: &str = r#"import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness, PluginError } from '@pumphouse/sdk/testing';
import { {{Type}} } from './plugin.js';

test('counts and logs every batch', () => {
  const h = new Harness({{Type}}, { prefix: '> ' });
  h.write(h.batch('iam', [{ Username: 'alice' }, { Username: 'bob' }]));
  assert.equal(h.counter('records_seen'), 2);
  assert.deepEqual(h.host.logs.at(-1), ['info', '> 2 records']);
});

test('unknown config is refused', () => {
  assert.throws(() => new Harness({{Type}}, { colour: 'red' }), (e) => e instanceof PluginError && /colour/.test(e.message));
});
"#;

const JS_FILTER_TEMPLATE: &str = r#"// {{name}}: a pumphouse filter plugin. It keeps the records that have a
// value in the configured `field`.
import { ConfigError, Filter } from '@pumphouse/sdk';

export class {{Type}} extends Filter {
  static pluginName = '{{name}}';
  static version = '0.1.0';
  static accepts = 'json';

  init(config) {
    const unknown = Object.keys(config).filter((k) => k !== 'field');
    if (unknown.length) throw new ConfigError(`unknown config keys: ${unknown.join(', ')}`);
    // Top-level field that must be present and not null.
    this.field = String(config.field ?? 'Username');
  }

  process(batch) {
    return [...batch].filter((rec) => rec.value[this.field] != null);
  }
}
"#;

const JS_FILTER_TEST_TEMPLATE: &str = r#"import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness, PluginError } from '@pumphouse/sdk/testing';
import { {{Type}} } from './plugin.js';

test('keeps the records that have the field', () => {
  const h = new Harness({{Type}}, { field: 'Username' });
  assert.deepEqual(h.process(h.batch('iam', [{ Username: 'alice' }, { Username: null }, {}])), { keep: [0] });
});

test('unknown config is refused', () => {
  assert.throws(() => new Harness({{Type}}, { colour: 'red' }), (e) => e instanceof PluginError && /colour/.test(e.message));
});
"#;

const JS_README_TEMPLATE: &str = r#"# {{name}}

A pumphouse {{kind}} plugin in JavaScript (the pumphouse JavaScript SDK,
`sdk/js` of a pumphouse checkout).

## Build

Once, the SDK's pinned tools (ComponentizeJS, jco, rolldown):

```sh
(cd /path/to/pumphouse/sdk/js && npm ci)
```

Then, the one command (tests, then the component `{{name}}.wasm`):

```sh
./build
```

`package.json` names the SDK by the path it was created with; edit it
when the checkout moves.

## Try it

```sh
pumphouse plugins inspect {{name}}.wasm
pumphouse produce --format iam --count 250 --to-file records.jsonl
pumphouse plugins test {{name}}.wasm --input records.jsonl --format iam
```

## Deploy

Copy `{{name}}.wasm` into the host's `plugins_dir` (to a temporary name,
then rename) and name it in a pump. The SDK's README documents the API,
the errors and the test harness.
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
            lang: Lang::Rust,
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

    #[test]
    fn scaffolds_a_python_project() {
        let dir = tempfile::tempdir().unwrap();
        let new = NewPlugin {
            name: "my-filter".into(),
            kind: Kind::Filter,
            lang: Lang::Python,
            dir: dir.path().to_path_buf(),
            sdk: None,
        };
        let root = scaffold(&new).unwrap();
        let app = std::fs::read_to_string(root.join("plugin.py")).unwrap();
        assert!(
            app.contains("class MyFilter(Filter):") && app.contains(r#"name = "my-filter""#),
            "{app}"
        );
        let build = std::fs::read_to_string(root.join("build")).unwrap();
        assert!(build.contains("-o my-filter.wasm"), "{build}");
        // The SDK by a relative path that leads to it.
        let sdk = build
            .lines()
            .find_map(|l| l.strip_prefix("SDK=${PUMPHOUSE_PYTHON_SDK:-'"))
            .and_then(|l| l.strip_suffix("'}"))
            .unwrap();
        assert!(sdk.starts_with(".."), "{sdk}");
        assert!(root.join(sdk).join("pumphouse_sdk/__init__.py").is_file());
        for f in ["plugin.py", "test_plugin.py", "build", "README.md"] {
            let text = std::fs::read_to_string(root.join(f)).unwrap();
            assert!(!text.contains("{{"), "{f}: {text}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("build"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        let nosdk = NewPlugin {
            name: "other".into(),
            sdk: Some(dir.path().to_path_buf()),
            ..new
        };
        let e = scaffold(&nosdk).unwrap_err().to_string();
        assert!(e.contains("sdk/python"), "{e}");
    }
}
