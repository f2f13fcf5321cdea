//! The host's cache of compiled plugins: each component's machine code,
//! serialized once by wasmtime and kept on disk under the file's SHA-256
//! and the engine's compatibility hash. A later start maps that file
//! (`Component::deserialize_file`: 1–2 ms for an 18 MB Python component)
//! where wasmtime's own cache hashes the bytes again and decompresses its
//! entry (~140 ms for the same component).
//!
//! The files are native code the host runs: the directory is created
//! private to the host's user, entries are written to a temporary name and
//! renamed, and one that wasmtime refuses (another version, another CPU) is
//! compiled again and replaced. Entries of plugins no longer used stay
//! until someone removes them.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

/// Where compiled plugins are kept for one engine configuration.
#[derive(Debug)]
pub struct CompiledCache {
    dir: PathBuf,
    /// The engine's `precompile_compatibility_hash`: code compiled by
    /// another wasmtime or with other settings gets another name.
    engine: u64,
}

impl CompiledCache {
    /// `$XDG_CACHE_HOME/pumphouse/compiled`, else
    /// `$HOME/.cache/pumphouse/compiled`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })?;
        Some(base.join("pumphouse").join("compiled"))
    }

    /// A cache in `dir` (created, private to this user) for `engine`.
    pub fn open(dir: PathBuf, engine: &Engine) -> std::io::Result<CompiledCache> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(CompiledCache {
            dir,
            engine: h.finish(),
        })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{:016x}.cwasm", self.engine))
    }

    /// The component of `bytes` (whose SHA-256 is `sha256`): from the
    /// cache, or compiled and then stored. Failing to store is logged, not
    /// an error: the plugin runs, the next start compiles again.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<Component> {
        let path = self.path(sha256);
        if path.is_file() {
            // SAFETY: the file was written by `store` below from wasmtime's
            // own `serialize`, in a directory only this user can write;
            // wasmtime checks that it was made by a compatible engine.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "compiled plugin not usable, compiling again: {e:#}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = store(&component, &path) {
            tracing::warn!(path = %path.display(), "cannot keep the compiled plugin: {e:#}");
        }
        Ok(component)
    }
}

fn store(component: &Component, path: &Path) -> wasmtime::Result<()> {
    let code = component.serialize()?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, code)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(component)`: the preamble of an empty component.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    fn engine() -> Engine {
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true);
        Engine::new(&cfg).unwrap()
    }

    #[test]
    fn a_component_is_compiled_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompiledCache::open(dir.path().join("c"), &engine).unwrap();
        let bytes = EMPTY.to_vec();
        cache.component(&engine, &bytes, "abc").unwrap();
        let path = cache.path("abc");
        let stored = std::fs::read(&path).unwrap();
        assert!(!stored.is_empty());
        // Read back, not compiled again: garbage in place of the source
        // bytes would not compile.
        cache.component(&engine, b"not wasm", "abc").unwrap();
        // An entry wasmtime refuses is compiled again and replaced.
        std::fs::write(&path, b"damaged").unwrap();
        cache.component(&engine, &bytes, "abc").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), stored);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("c"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }
}
