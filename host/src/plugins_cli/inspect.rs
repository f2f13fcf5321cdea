//! `pumphouse plugins inspect`: what a plugin is and which capabilities it
//! would use, read from its component type.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::runtime::{encoding_name, Plugin};

/// A capability a plugin can import and the sandbox field that grants it.
pub struct Capability {
    name: &'static str,
    /// Import name prefixes that use it.
    prefixes: &'static [&'static str],
    granted_by: &'static str,
    /// Shown instead of "used" when importing it says little: every Rust
    /// plugin imports `wasi:cli/environment`, because std's panic handler
    /// looks up `RUST_BACKTRACE`, whether or not the plugin reads a variable.
    imported_by_std: Option<&'static str>,
}

const CAPABILITIES: &[Capability] = &[
    Capability {
        name: "http",
        prefixes: &["wasi:http/"],
        granted_by: "sandbox.allowed_outbound_hosts",
        imported_by_std: None,
    },
    Capability {
        name: "filesystem",
        prefixes: &["wasi:filesystem/"],
        granted_by: "sandbox.dirs",
        imported_by_std: None,
    },
    Capability {
        name: "env",
        prefixes: &["wasi:cli/environment"],
        granted_by: "sandbox.env",
        imported_by_std: Some(
            "imported   (by every Rust plugin: std looks up RUST_BACKTRACE on a panic); \
             the plugin sees only the variables sandbox.env names",
        ),
    },
    Capability {
        name: "sockets",
        prefixes: &["wasi:sockets/"],
        granted_by: "sandbox.sockets",
        imported_by_std: None,
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
            .as_deref()
            .unwrap_or("unknown (no producers metadata)")
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
    for (name, used, c) in capabilities(&p.imports) {
        let _ = match (used, c.imported_by_std) {
            (true, Some(note)) => writeln!(out, "  {name:<11} {note}"),
            (true, None) => writeln!(out, "  {name:<11} used     granted by {}", c.granted_by),
            (false, _) => writeln!(out, "  {name:<11} unused"),
        };
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
}
