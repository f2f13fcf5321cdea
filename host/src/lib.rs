//! # pumphouse
//!
//! Drains analytics records (iam-authz-server, Tyk Gateway, or any
//! MessagePack map) from Redis lists in leased batches and hands them to
//! sandboxed WebAssembly plugins, acknowledging a batch only when every
//! pump has delivered it or dead-lettered what it could not.
//!
//! ## Map of the crate
//! | module | concern | I/O? |
//! |---|---|---|
//! | [`config`] | TOML config, one file per section: types, defaults, `${ENV}` interpolation, validation | reads the file |
//! | [`record`] | decode records once, JSON/MessagePack re-encoding, time formats | pure |
//! | [`source::redis`] | lists: leased claims, acks, lease renewal and takeover; streams: consumer group, `XAUTOCLAIM`; dead letters | Redis |
//! | [`spool`] | durable per-pump spool of `buffer = "disk"` pumps (redb, checksummed entries) | disk |
//! | [`sandbox`] | the network allowlists as parsed types (`allowed_outbound_hosts`, `sockets`) and which addresses are non-public; a leaf | pure |
//! | [`runtime`] | wasmtime engine, plugin loading, sandboxed instances (dirs, env, HTTP allowlist, sockets, log limits), the `host` imports | wasm |
//! | [`pipeline`] | claim → decode → per-pump lanes → ack; retry, split, bisect, rate limits; health | tasks |
//! | [`server`] | `/healthz`, `/readyz`, `/metrics` | HTTP |
//! | [`telemetry`] | logging setup and metric names | — |
//! | [`daemon`] | wiring for `run` and `check` | all |
//! | [`produce`] | producer-compatible encoders and the load generator | Redis |
//! | [`demo`] | `pumphouse demo`: private Redis, produce, run, summarise | processes |
//! | [`dlq`] | the dead-letter entry format, its writer, and `pumphouse dlq list/replay/purge` | Redis |
//! | [`plugins_cli`] | `pumphouse plugins new/inspect/test` for plugin authors | files, wasm |
//!
//! The binary (`main.rs`) only parses the command line and calls in here.

pub mod config;
pub mod daemon;
pub mod demo;
pub mod dlq;
pub mod pipeline;
pub mod plugins_cli;
pub mod produce;
pub mod record;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod source;
pub mod spool;
pub mod telemetry;
