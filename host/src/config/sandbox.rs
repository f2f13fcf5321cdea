//! `[pumps.sandbox]`: what a pump's plugins may touch. The network entries
//! deserialize straight into the [`crate::sandbox`] rule types, so they are
//! parsed once, here.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::FieldError;
use crate::sandbox::{OutboundRule, SocketRule};

/// Memory a plugin instance may hold: all of its linear memories and
/// tables together.
pub const DEFAULT_MAX_MEMORY: ByteSize = ByteSize::mib(128);
/// Cap on each wait of a plugin's outbound HTTP request (connect, first
/// byte, between bytes).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Plugin log lines per second a pump may write on average.
pub const DEFAULT_LOG_LINES_PER_SECOND: u32 = 100;
/// Plugin log lines a pump may write in a burst above the average.
pub const DEFAULT_LOG_BURST: u32 = 500;
/// Bytes of `kv` state a pump may keep in Redis (keys, values and a fixed
/// charge per key, see [`crate::runtime::kv::KEY_OVERHEAD`]): enough for
/// the `aggregate` plugin's windows and a day of its batch markers at
/// ten batches a second, far below what would fill a Redis shared with
/// the producers.
pub const DEFAULT_KV_MAX_BYTES: ByteSize = ByteSize::mib(128);
/// Keys of `kv` state a pump may keep in Redis.
pub const DEFAULT_KV_MAX_KEYS: u64 = 1_000_000;
/// Files (and directories) one plugin instance may hold open: far more
/// than a sink writing a few files needs, far fewer than the host's
/// descriptors.
pub const DEFAULT_MAX_OPEN_FILES: u32 = 256;
/// Outbound HTTP connections one plugin instance may hold at once
/// (requests not yet answered and responses not yet read or dropped).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 64;

/// `[pumps.sandbox]`: deny by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Limit on one plugin instance's memory, e.g. `"64MiB"`: all of its
    /// linear memories and tables together (a table element counts 8
    /// bytes). Growing past it traps the call (`kind="memory"`).
    pub max_memory: ByteSize,
    /// Host directories the plugin can see; nothing else of the filesystem
    /// is visible.
    pub dirs: Vec<DirConfig>,
    /// Names of host environment variables the plugin sees (values are
    /// read when an instance starts; unset ones are skipped with a
    /// warning). No other variable is visible.
    pub env: Vec<String>,
    /// Where plugins may send HTTP requests: `scheme://host:port` entries;
    /// `*.example.com` for subdomains, `*` for any port. Empty: none.
    pub allowed_outbound_hosts: Vec<OutboundRule>,
    /// Let allowed host names resolve to loopback, private or link-local
    /// addresses (an entry naming such an IP literally is allowed anyway).
    pub allow_private_networks: bool,
    /// Cap on the connect, first-byte and between-bytes waits of a
    /// plugin's HTTP request; the plugin may only ask for less.
    #[serde(with = "humantime_serde")]
    pub http_timeout: Duration,
    /// `host:port` peers plugins may open TCP/UDP sockets to (port may be
    /// `*`). Empty: no sockets and no name lookups.
    pub sockets: Vec<SocketRule>,
    /// Average plugin log lines per second for this pump; more are dropped
    /// and counted.
    pub log_lines_per_second: u32,
    /// Plugin log lines this pump may write in a burst.
    pub log_burst: u32,
    /// Quota of the pump's `kv` state in Redis, in bytes (each key is
    /// charged its name, its value and a fixed overhead). A commit that
    /// would take the state past it is refused before it reaches Redis.
    pub kv_max_bytes: ByteSize,
    /// Quota of the pump's `kv` state in Redis, in keys.
    pub kv_max_keys: u64,
    /// Let plugins create symbolic links in their writable dirs. Off: a
    /// link the plugin cannot follow may still mislead a program on the
    /// host that reads the directory.
    pub allow_symlinks: bool,
    /// Files and directories one plugin instance may hold open; opening
    /// more fails with an error the plugin sees.
    pub max_open_files: u32,
    /// Connections one plugin instance may hold at once: outbound HTTP
    /// requests (until the response is read or dropped) and `wasi:sockets`
    /// TCP sockets (until dropped); a request or socket past it is denied.
    pub max_connections: u32,
    /// PEM files of CA certificates the pump's plugins trust besides the
    /// webpki roots, for HTTPS and for TLS over `sandbox.sockets`
    /// (`wasi:tls`), e.g. a private CA that signed the database's
    /// certificate. Certificates and names are always verified.
    pub tls_ca_files: Vec<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_memory: DEFAULT_MAX_MEMORY,
            dirs: Vec::new(),
            env: Vec::new(),
            allowed_outbound_hosts: Vec::new(),
            allow_private_networks: false,
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            sockets: Vec::new(),
            log_lines_per_second: DEFAULT_LOG_LINES_PER_SECOND,
            log_burst: DEFAULT_LOG_BURST,
            kv_max_bytes: DEFAULT_KV_MAX_BYTES,
            kv_max_keys: DEFAULT_KV_MAX_KEYS,
            allow_symlinks: false,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls_ca_files: Vec::new(),
        }
    }
}

/// One preopened directory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirConfig {
    /// Directory on the host; created if missing. Relative paths are
    /// relative to the config file's directory.
    pub host: PathBuf,
    /// Where the plugin sees it, e.g. `/out`.
    pub guest: String,
    /// Plugin may only read.
    #[serde(default)]
    pub read_only: bool,
}

impl SandboxConfig {
    /// Range checks; fields are relative to `sandbox`. The network entries
    /// were checked when they were parsed.
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if self.max_memory < ByteSize::mib(1) {
            return Err(FieldError::new("max_memory", "must be at least 1MiB"));
        }
        for (j, name) in self.env.iter().enumerate() {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(FieldError::new(
                    format!("env[{j}]"),
                    format!("{name:?} is not a variable name (list names only; values come from the host's environment)"),
                ));
            }
        }
        if self.http_timeout < Duration::from_millis(1) {
            return Err(FieldError::new("http_timeout", "must be at least 1ms"));
        }
        if self.log_lines_per_second == 0 || self.log_burst == 0 {
            return Err(FieldError::new(
                "log_lines_per_second",
                "log_lines_per_second and log_burst must be at least 1",
            ));
        }
        if self.kv_max_bytes.as_u64() == 0 || self.kv_max_keys == 0 {
            return Err(FieldError::new(
                "kv_max_bytes",
                "kv_max_bytes and kv_max_keys must be at least 1",
            ));
        }
        if self.max_open_files == 0 || self.max_connections == 0 {
            return Err(FieldError::new(
                "max_open_files",
                "max_open_files and max_connections must be at least 1",
            ));
        }
        let mut guests = HashSet::new();
        for (j, d) in self.dirs.iter().enumerate() {
            if !d.guest.starts_with('/') {
                return Err(FieldError::new(
                    format!("dirs[{j}].guest"),
                    format!("{:?} must be an absolute path such as \"/out\"", d.guest),
                ));
            }
            if !guests.insert(d.guest.as_str()) {
                return Err(FieldError::new(
                    format!("dirs[{j}].guest"),
                    format!("{:?} is mounted twice", d.guest),
                ));
            }
        }
        Ok(())
    }
}
