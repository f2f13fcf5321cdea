//! Which language a component was written in, read from the metadata its
//! toolchain leaves behind: `producers` custom sections (rustc writes
//! `language: Rust`) and the shared libraries a `dylink.0` section names
//! (componentize-py links CPython as `libpython3.N.so`). Pure parsing of
//! the binary's section headers; code sections are skipped, not read.

/// Nesting deeper than this is not followed (real toolchains nest two
/// levels: component, core module).
const MAX_DEPTH: usize = 8;

/// What the metadata of a component and its nested modules says.
#[derive(Debug, Default, PartialEq)]
struct Metadata {
    /// `producers` → `language` values, e.g. `Rust`.
    languages: Vec<String>,
    /// `producers` → `processed-by` entries: (tool, version).
    processed_by: Vec<(String, String)>,
    /// `dylink.0` needed libraries, e.g. `libpython3.14.so`.
    needed: Vec<String>,
}

/// The languages the host tells apart, because what a component imports
/// without the plugin asking for it depends on its language's runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Rust,
    Python,
    JavaScript,
    /// Any other language the metadata names, or several.
    Other,
}

/// A component's source language as its metadata tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLanguage {
    pub family: Family,
    /// The language with the toolchain where it can tell (`Python 3.14
    /// (componentize-py)`, `Rust (rustc 1.95.0)`), as `plugins inspect`
    /// prints it.
    pub name: String,
}

/// The source language of the component in `bytes`; `None` when the
/// binary says nothing about it.
pub fn source_language(bytes: &[u8]) -> Option<SourceLanguage> {
    let mut m = Metadata::default();
    walk(bytes, 0, &mut m)?;
    describe(&m)
}

fn describe(m: &Metadata) -> Option<SourceLanguage> {
    let lang = |family, name| Some(SourceLanguage { family, name });
    // An interpreter linked in says more than the glue around it: a Python
    // component also holds a small module rustc built.
    if let Some(py) = m.needed.iter().find_map(|n| {
        n.strip_prefix("libpython")
            .and_then(|v| v.strip_suffix(".so"))
    }) {
        let tool = if m.needed.iter().any(|n| n.contains("componentize_py")) {
            " (componentize-py)"
        } else {
            ""
        };
        return lang(Family::Python, format!("Python {py}{tool}"));
    }
    let tool = |name: &str| {
        m.processed_by
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(name))
            .map(|(t, v)| format!("{t} {v}"))
    };
    if m.languages
        .iter()
        .any(|l| l.eq_ignore_ascii_case("javascript"))
        || tool("componentize-js").is_some()
        || tool("ComponentizeJS").is_some()
    {
        let by = tool("componentize-js")
            .or_else(|| tool("ComponentizeJS"))
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        return lang(Family::JavaScript, format!("JavaScript{by}"));
    }
    let mut langs: Vec<&str> = Vec::new();
    for l in &m.languages {
        if !langs.contains(&l.as_str()) {
            langs.push(l);
        }
    }
    match langs.as_slice() {
        [] => None,
        ["Rust"] => lang(
            Family::Rust,
            match tool("rustc") {
                Some(t) => format!("Rust ({t})"),
                None => "Rust".to_string(),
            },
        ),
        // wasi-libc, which every Rust component links, is C.
        many if many.contains(&"Rust")
            && many.iter().all(|l| *l == "Rust" || l.starts_with('C')) =>
        {
            lang(Family::Rust, many.join(", "))
        }
        many => lang(Family::Other, many.join(", ")),
    }
}

/// A cursor over bytes that fails (None) instead of reading past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn leb_u32(&mut self) -> Option<u32> {
        let mut out: u32 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.byte()?;
            out |= u32::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn string(&mut self) -> Option<String> {
        let n = self.leb_u32()? as usize;
        Some(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

/// Walks one module or component binary; None when it is malformed.
fn walk(bytes: &[u8], depth: usize, m: &mut Metadata) -> Option<()> {
    if depth > MAX_DEPTH {
        return Some(());
    }
    let mut r = Reader::new(bytes);
    if r.take(4)? != b"\0asm" {
        return None;
    }
    // Version 1 layer 0: a core module; layer 1: a component.
    let header = r.take(4)?;
    let component = header[2..] == [1, 0];
    while !r.done() {
        let id = r.byte()?;
        let size = r.leb_u32()? as usize;
        let body = r.take(size)?;
        match id {
            0 => custom(body, m),
            // A component's nested core modules (1) and components (4).
            1 | 4 if component => {
                // A malformed nested binary is skipped, not fatal: the
                // outer component already compiled.
                let _ = walk(body, depth + 1, m);
            }
            _ => {}
        }
    }
    Some(())
}

fn custom(body: &[u8], m: &mut Metadata) {
    let mut r = Reader::new(body);
    let Some(name) = r.string() else { return };
    let rest = &body[r.pos..];
    match name.as_str() {
        "producers" => {
            let _ = producers(rest, m);
        }
        "dylink.0" => {
            let _ = dylink(rest, m);
        }
        _ => {}
    }
}

fn producers(body: &[u8], m: &mut Metadata) -> Option<()> {
    let mut r = Reader::new(body);
    for _ in 0..r.leb_u32()? {
        let field = r.string()?;
        for _ in 0..r.leb_u32()? {
            let name = r.string()?;
            let version = r.string()?;
            match field.as_str() {
                "language" => m.languages.push(name),
                "processed-by" => m.processed_by.push((name, version)),
                _ => {}
            }
        }
    }
    Some(())
}

/// The `WASM_DYLINK_NEEDED` subsection of `dylink.0`.
const DYLINK_NEEDED: u8 = 2;

fn dylink(body: &[u8], m: &mut Metadata) -> Option<()> {
    let mut r = Reader::new(body);
    while !r.done() {
        let kind = r.byte()?;
        let size = r.leb_u32()? as usize;
        let sub = r.take(size)?;
        if kind == DYLINK_NEEDED {
            let mut s = Reader::new(sub);
            for _ in 0..s.leb_u32()? {
                m.needed.push(s.string()?);
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn string(s: &str, out: &mut Vec<u8>) {
        leb(s.len(), out);
        out.extend_from_slice(s.as_bytes());
    }

    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len(), out);
        out.extend_from_slice(body);
    }

    fn producers_section(fields: &[(&str, &[(&str, &str)])]) -> Vec<u8> {
        let mut b = Vec::new();
        string("producers", &mut b);
        leb(fields.len(), &mut b);
        for (field, values) in fields {
            string(field, &mut b);
            leb(values.len(), &mut b);
            for (n, v) in *values {
                string(n, &mut b);
                string(v, &mut b);
            }
        }
        b
    }

    fn module(customs: &[Vec<u8>]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        // A type section with no types, to skip over.
        section(1, &[0], &mut m);
        for c in customs {
            section(0, c, &mut m);
        }
        m
    }

    fn component(modules: &[Vec<u8>]) -> Vec<u8> {
        let mut c = b"\0asm\x0d\0\x01\0".to_vec();
        for m in modules {
            section(1, m, &mut c);
        }
        c
    }

    fn dylink_needed(libs: &[&str]) -> Vec<u8> {
        let mut b = Vec::new();
        string("dylink.0", &mut b);
        let mut sub = Vec::new();
        leb(libs.len(), &mut sub);
        for l in libs {
            string(l, &mut sub);
        }
        // A mem-info subsection (1) first, to skip over.
        b.extend_from_slice(&[1, 4, 0, 0, 0, 0]);
        b.push(DYLINK_NEEDED);
        leb(sub.len(), &mut b);
        b.extend(sub);
        b
    }

    fn name(bytes: &[u8], family: Family) -> Option<String> {
        let l = source_language(bytes)?;
        assert_eq!(l.family, family, "{}", l.name);
        Some(l.name)
    }

    #[test]
    fn rust_components_name_rustc() {
        let rust = module(&[producers_section(&[
            ("language", &[("Rust", "")]),
            ("processed-by", &[("rustc", "1.95.0 (abc 2026-01-01)")]),
        ])]);
        assert_eq!(
            name(&component(&[rust]), Family::Rust).as_deref(),
            Some("Rust (rustc 1.95.0 (abc 2026-01-01))")
        );
    }

    #[test]
    fn python_wins_over_its_rust_glue() {
        let glue = module(&[producers_section(&[("language", &[("Rust", "")])])]);
        let py = module(&[dylink_needed(&[
            "libc.so",
            "libpython3.14.so",
            "libcomponentize_py_runtime.so",
        ])]);
        assert_eq!(
            name(&component(&[glue, py]), Family::Python).as_deref(),
            Some("Python 3.14 (componentize-py)")
        );
    }

    #[test]
    fn javascript_and_unknown() {
        let js = module(&[producers_section(&[
            ("language", &[("JavaScript", "")]),
            ("processed-by", &[("ComponentizeJS", "0.19.3")]),
        ])]);
        assert_eq!(
            name(&component(&[js]), Family::JavaScript).as_deref(),
            Some("JavaScript (ComponentizeJS 0.19.3)")
        );
        let mixed = module(&[producers_section(&[(
            "language",
            &[("Rust", ""), ("C11", "")],
        )])]);
        assert_eq!(
            name(&component(&[mixed]), Family::Rust).as_deref(),
            Some("Rust, C11")
        );
        let other = module(&[producers_section(&[(
            "language",
            &[("Go", ""), ("Rust", "")],
        )])]);
        assert_eq!(
            name(&component(&[other]), Family::Other).as_deref(),
            Some("Go, Rust")
        );
        assert_eq!(source_language(&component(&[module(&[])])), None);
    }

    #[test]
    fn malformed_binaries_say_nothing_and_do_not_panic() {
        assert_eq!(source_language(b"not wasm"), None);
        let mut c = component(&[module(&[producers_section(&[(
            "language",
            &[("Rust", "")],
        )])])]);
        // Every truncation is refused or read as far as it goes.
        for n in 0..c.len() {
            let _ = source_language(&c[..n]);
        }
        // A section claiming more bytes than there are.
        c.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(source_language(&c), None);
    }
}
