//! End-to-end tests: each starts its own redis-server on a free port and
//! drives the real `pumphouse` binary with real `.wasm` plugins.

mod aggregate;
mod cli;
mod config;
mod delivery;
mod deploy;
mod faults;
mod harness;
mod js;
mod migrate;
mod plugins_cli;
mod python;
mod records;
mod redis_cluster;
mod redis_prod;
mod redis_sentinel;
mod reliability;
mod reload;
mod reporter;
mod sandbox;
mod sink_servers;
mod sinks_clickhouse;
mod sinks_csv;
mod sinks_http;
mod sinks_influxdb;
mod sinks_prometheus;
mod sinks_redis;
mod sinks_sql;
mod sql_servers;
mod status_page;
mod wat_fixtures;
