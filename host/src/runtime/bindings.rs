//! Host-side bindings generated from `wit/pump.wit`.
//!
//! The two plugin worlds share their imports (`host`, `kv`, `types`), so the
//! filter world maps both onto the sink world's generated code: one set of
//! types, one `host` implementation, one `add_to_linker`.

/// The `pump-sink` world, plus the shared `types` and `host` interfaces.
pub mod sink {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "pump-sink",
        imports: {
            "pumphouse:plugin/kv.get": async,
            "pumphouse:plugin/kv.commit": async,
        },
        exports: { default: async },
    });
}

/// The `pump-filter` world.
pub mod filter {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "pump-filter",
        exports: { default: async },
        with: {
            "pumphouse:plugin/types": super::sink::pumphouse::plugin::types,
            "pumphouse:plugin/host": super::sink::pumphouse::plugin::host,
            "pumphouse:plugin/kv": super::sink::pumphouse::plugin::kv,
        },
    });
}

pub use sink::pumphouse::plugin::host::{Label, Level};
pub use sink::pumphouse::plugin::types::{
    Batch, Encoding, Event, FailedEvent, PluginInfo, Schema, Verdict, WriteError,
};

impl From<crate::record::Schema> for Schema {
    fn from(s: crate::record::Schema) -> Schema {
        match s {
            crate::record::Schema::Iam => Schema::Iam,
            crate::record::Schema::Tyk => Schema::Tyk,
            crate::record::Schema::Generic => Schema::Generic,
        }
    }
}

impl From<Schema> for crate::record::Schema {
    fn from(s: Schema) -> crate::record::Schema {
        match s {
            Schema::Iam => crate::record::Schema::Iam,
            Schema::Tyk => crate::record::Schema::Tyk,
            Schema::Generic => crate::record::Schema::Generic,
        }
    }
}
