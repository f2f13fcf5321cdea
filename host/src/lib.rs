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
//! | [`source::redis`] | `RedisSource` = `ListSource` (leased claims, acks, lease renewal and takeover) or `StreamSource` (consumer group, `XAUTOCLAIM`, poison entries); dead letters; [`source::redis::conn`]: every Redis connection (connection settings, connect retry, following the primary behind Sentinel, slot-safe pipelines and transactions on a Cluster, redaction); [`source::redis::topology`]: what a `redis_url` names (one server, Sentinel or Cluster), parsed without I/O | Redis |
//! | [`spool`] | durable per-pump spool of `buffer = "disk"` pumps (redb, checksummed entries) | disk |
//! | [`sandbox`] | the network allowlists as parsed types (`allowed_outbound_hosts`, `sockets`) and which addresses are non-public; a leaf | pure |
//! | [`runtime`] | wasmtime engine, plugin loading, sandboxed instances (dirs, env, HTTP allowlist, sockets, log limits), the `host` imports | wasm |
//! | [`batch`] | a claimed batch decoded once, its shared encoded forms, and its count of lanes still on it | pure |
//! | [`pump`] | a pump from config to running lane: spec, plugin cache, lanes (memory, disk), filter chain, delivery (retry, split, bisect), the running set and its reload diff | tasks |
//! | [`pipeline`] | claim → decode → dispatch to the lanes → ack; lease renewal and takeover | tasks |
//! | [`status`] | live health of the source and each pump, read by `/readyz` and the status page | — |
//! | [`server`] | the status page `/` and `/api/status` (with its ring buffer of rates), `/healthz`, `/readyz`, `/metrics`, `/admin` | HTTP |
//! | [`telemetry`] | logging setup, metric names, and the tap that lets the status page read a few metrics back | — |
//! | [`backoff`] | retrying work that must not be given up (dead letters, spool writes) | — |
//! | [`daemon`] | `run` (start everything), `check`, and the reload trigger (file watch, SIGHUP, `/admin/reload`) | all |
//! | [`notify`] | systemd readiness (`READY=1`, `RELOADING=1`, `STOPPING=1`) | socket |
//! | [`produce`] | producer-compatible encoders and the load generator | Redis |
//! | [`demo`] | `pumphouse demo`: private Redis, produce, run, summarise | processes |
//! | [`dlq`] | the dead-letter entry format, its writer, and `pumphouse dlq list/replay/purge` | Redis |
//! | [`migrate`] | `pumphouse migrate`: a tyk-pump or iam-pump config as pumphouse TOML | pure |
//! | [`plugins_cli`] | `pumphouse plugins new/inspect/test` for plugin authors | files, wasm |
//!
//! The binary (`main.rs`) only parses the command line and calls in here.

pub mod backoff;
pub mod batch;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod dlq;
pub mod migrate;
pub mod notify;
pub mod pipeline;
pub mod plugins_cli;
pub mod produce;
pub mod pump;
pub mod record;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod source;
pub mod spool;
pub mod status;
pub mod telemetry;
