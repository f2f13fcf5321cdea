//! `pumphouse plugins inspect`: what a plugin is and which capabilities it
//! would use, read from its component type.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::runtime::producers::Family;
use crate::runtime::{encoding_name, Plugin};

/// A capability a plugin can import and the sandbox field that grants it.
pub struct Capability {
    name: &'static str,
    /// Import name prefixes that use it.
    prefixes: &'static [&'static str],
    granted_by: &'static str,
    /// Shown instead of "used" when importing it says little because the
    /// language's runtime imports it for every plugin: why, per language.
    imported_by_runtime: fn(Family) -> Option<&'static str>,
}

fn never(_: Family) -> Option<&'static str> {
    None
}

// Who imports a capability for every plugin of a language, whether or not
// the plugin uses it (checked against the bundled and fixture components).

fn env_importer(family: Family) -> Option<&'static str> {
    match family {
        Family::Rust => Some("every Rust plugin: std looks up RUST_BACKTRACE on a panic"),
        Family::Python => Some("every Python plugin: CPython's C library links it"),
        // ComponentizeJS components do not import it.
        Family::JavaScript | Family::Other => None,
    }
}

fn filesystem_importer(family: Family) -> Option<&'static str> {
    match family {
        Family::Python => Some("every Python plugin: CPython's C library links it"),
        Family::JavaScript => Some("every JavaScript plugin: the engine's C library links it"),
        Family::Rust | Family::Other => None,
    }
}

fn sockets_importer(family: Family) -> Option<&'static str> {
    match family {
        Family::Python => Some("every Python plugin: CPython's socket module links it"),
        Family::JavaScript | Family::Rust | Family::Other => None,
    }
}

const CAPABILITIES: &[Capability] = &[
    Capability {
        name: "http",
        prefixes: &["wasi:http/"],
        granted_by: "sandbox.allowed_outbound_hosts",
        imported_by_runtime: never,
    },
    Capability {
        name: "filesystem",
        prefixes: &["wasi:filesystem/"],
        granted_by: "sandbox.dirs",
        imported_by_runtime: filesystem_importer,
    },
    Capability {
        name: "env",
        prefixes: &["wasi:cli/environment"],
        granted_by: "sandbox.env",
        imported_by_runtime: env_importer,
    },
    Capability {
        name: "sockets",
        prefixes: &["wasi:sockets/"],
        granted_by: "sandbox.sockets",
        imported_by_runtime: sockets_importer,
    },
];

/// `wasi:http/types@0.2.3` → `wasi:http`.
fn package(import: &str) -> &str {
    import.split('/').next().unwrap_or(import)
}

/// Which capabilities `imports` use, in [`CAPABILITIES`] order.
pub fn capabilities(imports: &[String]) -> Vec<(&'static str, bool, &'static Capability)> {
    CAPABILITIES
        .iter()
        .map(|c| {
            let used = imports
                .iter()
                .any(|i| c.prefixes.iter().any(|p| i.starts_with(p)));
            (c.name, used, c)
        })
        .collect()
}

/// What `plugins inspect` says of capability `c` of a plugin in `family`.
fn capability_line(used: bool, c: &Capability, family: Family) -> String {
    match (used, (c.imported_by_runtime)(family)) {
        (false, _) => "unused".to_string(),
        (true, None) => format!("used     granted by {}", c.granted_by),
        (true, Some(who)) => format!(
            "imported   (by {who}); the plugin gets only what {} grants",
            c.granted_by
        ),
    }
}

/// The report `plugins inspect` prints.
pub fn render(p: &Plugin) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "file:     {} ({} bytes, sha256 {})",
        p.path.display(),
        p.size,
        p.sha256
    );
    let _ = writeln!(out, "world:    pumphouse:plugin/pump-{}@0.1.0", p.kind);
    let _ = writeln!(
        out,
        "language: {}",
        p.language
            .as_ref()
            .map_or("unknown (no producers metadata)", |l| l.name.as_str())
    );
    let _ = writeln!(out, "name:     {}", p.info.name);
    let _ = writeln!(out, "version:  {}", p.info.version);
    let _ = writeln!(out, "accepts:  {}", encoding_name(p.info.accepts));
    let _ = writeln!(out, "exports:");
    for e in &p.exports {
        let _ = writeln!(out, "  {e}");
    }
    let _ = writeln!(
        out,
        "capabilities (imported; the pump's sandbox decides what they reach):"
    );
    let family = p.language.as_ref().map_or(Family::Other, |l| l.family);
    for (name, used, c) in capabilities(&p.imports) {
        let _ = writeln!(out, "  {name:<11} {}", capability_line(used, c, family));
    }
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for i in &p.imports {
        groups.entry(package(i)).or_default().push(i);
    }
    let _ = writeln!(out, "imports:");
    for (pkg, names) in groups {
        let _ = writeln!(out, "  {pkg}");
        for n in names {
            let _ = writeln!(out, "    {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_map_to_capabilities() {
        let imports: Vec<String> = [
            "wasi:http/outgoing-handler@0.2.12",
            "wasi:cli/stderr@0.2.0",
            "wasi:filesystem/preopens@0.2.0",
            "pumphouse:plugin/host@0.1.0",
        ]
        .map(String::from)
        .to_vec();
        let caps = capabilities(&imports);
        let used: Vec<&str> = caps.iter().filter(|c| c.1).map(|c| c.0).collect();
        assert_eq!(used, ["http", "filesystem"]);
        assert_eq!(package("wasi:http/types@0.2.3"), "wasi:http");
    }

    #[test]
    fn runtime_notes_name_the_plugins_language() {
        let cap = |name: &str| CAPABILITIES.iter().find(|c| c.name == name).unwrap();
        let line = |name: &str, family| capability_line(true, cap(name), family);
        let rust = line("env", Family::Rust);
        assert!(
            rust.starts_with("imported   (by every Rust plugin"),
            "{rust}"
        );
        assert!(rust.contains("RUST_BACKTRACE"), "{rust}");
        assert!(
            rust.ends_with("the plugin gets only what sandbox.env grants"),
            "{rust}"
        );
        for name in ["env", "filesystem", "sockets"] {
            let py = line(name, Family::Python);
            assert!(py.starts_with("imported   (by every Python plugin"), "{py}");
        }
        let js = line("filesystem", Family::JavaScript);
        assert!(
            js.starts_with("imported   (by every JavaScript plugin"),
            "{js}"
        );
        assert!(js.ends_with("what sandbox.dirs grants"), "{js}");
        // Imports no runtime makes for every plugin are the plugin's own.
        for (name, family) in [
            ("env", Family::JavaScript),
            ("env", Family::Other),
            ("filesystem", Family::Rust),
            ("sockets", Family::JavaScript),
            ("http", Family::Python),
        ] {
            let l = line(name, family);
            assert!(
                l.starts_with("used     granted by sandbox."),
                "{name} {family:?}: {l}"
            );
        }
        assert_eq!(capability_line(false, cap("env"), Family::Rust), "unused");
    }
}
