//! The `wasi:filesystem` calls the sandbox narrows beyond wasmtime-wasi's
//! preopens, by redefining them in the linker around the crate's own
//! implementation:
//!
//! - `symlink-at` is refused (`not-permitted`) unless the pump sets
//!   `sandbox.allow_symlinks`: a plugin cannot follow a link out of its
//!   preopen, but a log shipper or backup job reading the directory on
//!   the host would;
//! - `open-at` is refused (`insufficient-memory`: WASI has no "too many
//!   open files") once the instance holds `sandbox.max_open_files`
//!   descriptors, so a plugin cannot take the host's descriptors.
//!
//! An open descriptor is counted while the host still holds its file: the
//! instance keeps a weak handle on each one it opened, and a file stays
//! open for as long as the guest's descriptor or a stream reading it
//! does. Counting that way needs no hook on close.

use std::sync::{Arc, Weak};

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};

use super::PluginState;
use crate::telemetry;

/// The interface wasmtime-wasi links (guests asking for an older 0.2
/// release resolve to it too).
const INTERFACE: &str = "wasi:filesystem/types@0.2.12";

/// What an instance may do with the files of its preopens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePolicy {
    /// `sandbox.allow_symlinks`.
    pub allow_symlinks: bool,
    /// `sandbox.max_open_files`.
    pub max_open_files: usize,
}

/// An instance's open files.
#[derive(Debug)]
pub(super) struct OpenFiles {
    policy: FilePolicy,
    open: Vec<Weak<std::fs::File>>,
}

impl OpenFiles {
    pub(super) fn new(policy: FilePolicy) -> OpenFiles {
        OpenFiles {
            policy,
            open: Vec::new(),
        }
    }

    /// Files the instance still holds.
    fn live(&mut self) -> usize {
        self.open.retain(|w| w.strong_count() > 0);
        self.open.len()
    }
}

/// Redefines `symlink-at` and `open-at` on top of wasmtime-wasi's.
pub(super) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(INTERFACE)?;
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store, (fd, old, new): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                let state = store.data_mut();
                if !state.files.policy.allow_symlinks {
                    state.deny_file("symlink", &new, "sandbox.allow_symlinks is not set");
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let r = HostDescriptor::symlink_at(&mut state.filesystem(), fd, old, new).await;
                match r {
                    Ok(()) => Ok((Ok(()),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                let max = state.files.policy.max_open_files;
                if state.files.live() >= max {
                    let why =
                        format!("the instance holds {max} open files (sandbox.max_open_files)");
                    state.deny_file("open_files", &path, &why);
                    return Ok((Err(ErrorCode::InsufficientMemory),));
                }
                let mut fs = state.filesystem();
                let opened =
                    HostDescriptor::open_at(&mut fs, fd, path_flags, path, open_flags, flags).await;
                let opened = match opened {
                    Ok(r) => r,
                    Err(e) => return Ok((Err(e.downcast()?),)),
                };
                let held = match fs.table.get(&opened)? {
                    Descriptor::File(f) => Arc::downgrade(&f.file),
                    Descriptor::Dir(d) => Arc::downgrade(&d.dir),
                };
                state.files.open.push(held);
                Ok((Ok(opened),))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

impl PluginState {
    /// Counts a refused file operation and logs it within the pump's budget.
    fn deny_file(&self, capability: &'static str, path: &str, why: &str) {
        metrics::counter!(telemetry::SANDBOX_DENIALS, "pump" => self.pump.to_string(), "capability" => capability)
            .increment(1);
        if self.logs.admit() {
            let path = super::text::PluginText::new(path);
            tracing::warn!(pump = &*self.pump, capability, path = %path, "file operation denied: {why}");
        }
    }
}
