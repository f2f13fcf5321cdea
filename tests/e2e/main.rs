//! End-to-end tests: each starts its own redis-server on a free port and
//! drives the real `pumphouse` binary with real `.wasm` plugins.

mod aggregate;
mod cli;
mod delivery;
mod faults;
mod harness;
mod plugins_cli;
mod reliability;
mod reload;
mod reporter;
mod sandbox;
mod sinks_prometheus;
