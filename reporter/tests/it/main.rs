//! Integration tests of the reporter. Each test starts its own
//! redis-server on a free port; none depends on timing to pass.

#[path = "../../examples/service/app.rs"]
mod app;
mod connection;
mod delivery;
mod full;
mod layer;
#[path = "../../examples/service/load.rs"]
mod load;
mod outage;
mod production;
mod servers;
mod stream;
mod support;
mod tasks;
