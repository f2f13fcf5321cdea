//! Compiled plugins by path, kept across reloads: a file whose bytes did
//! not change is not compiled again. Each file is read and hashed once per
//! load; the runtime compiles those same bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::runtime::{read_plugin, LoadError, Plugin, Runtime};

#[derive(Default)]
pub struct PluginCache {
    plugins: HashMap<PathBuf, Arc<Plugin>>,
}

impl PluginCache {
    /// The compiled plugin at `path`, compiling it if it is new or changed.
    pub async fn get(&mut self, runtime: &Runtime, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        let (bytes, sha) = read_plugin(path).await?;
        if let Some(p) = self.plugins.get(path).filter(|p| p.sha256 == sha) {
            return Ok(p.clone());
        }
        tracing::info!(path = %path.display(), bytes = bytes.len(), "loading plugin");
        let p = Arc::new(runtime.load_bytes(path, bytes, sha).await?);
        tracing::info!(path = %path.display(), name = %p.info.name, version = %p.info.version, kind = %p.kind, sha256 = %p.sha256, "plugin loaded");
        self.plugins.insert(path.to_path_buf(), p.clone());
        Ok(p)
    }
}
