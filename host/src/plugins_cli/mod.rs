//! The plugin author's commands: `plugins new` (scaffold a Rust crate or
//! a Python project),
//! `plugins inspect` (world, imports, capabilities) and `plugins test`
//! (run a plugin on sample records without Redis).

pub mod inspect;
pub mod run;
pub mod scaffold;

pub use inspect::render as inspect_report;
pub use run::{run as test_plugin, Outcome, SandboxArgs, TestError, TestRun};
pub use scaffold::{scaffold, Lang, NewPlugin, ScaffoldError};
