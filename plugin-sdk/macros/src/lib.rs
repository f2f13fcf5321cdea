//! Export macros for pumphouse plugins. Use them through `pumphouse-sdk`:
//! `pumphouse_sdk::export_sink!(MySink)` and
//! `pumphouse_sdk::export_filter!(MyFilter)`.
//!
//! Each expands, in the plugin crate, to the wit-bindgen bindings of one
//! world (`pump-sink` or `pump-filter`) whose shared types and host imports
//! are the SDK's own (bound once, in the SDK, for the import-only world
//! `sdk`). Only the exported world's component type is emitted into the
//! plugin, so the component exports exactly that world.

use proc_macro::TokenStream;

/// The package text, embedded when this crate is compiled.
const WIT: &str = include_str!("../../../wit/pump.wit");

/// Exports a `pumphouse_sdk::Sink` implementation as world `pump-sink`.
#[proc_macro]
pub fn export_sink(input: TokenStream) -> TokenStream {
    expand(input, &SINK)
}

/// Exports a `pumphouse_sdk::Filter` implementation as world `pump-filter`.
#[proc_macro]
pub fn export_filter(input: TokenStream) -> TokenStream {
    expand(input, &FILTER)
}

struct Kind {
    world: &'static str,
    prefix: &'static str,
    export: &'static str,
    method: &'static str,
    signature: &'static str,
}

const SINK: Kind = Kind {
    world: "pump-sink",
    prefix: "sink",
    export: "sink",
    method: "write",
    signature:
        "(batch: ::pumphouse_sdk::Batch) -> ::core::result::Result<(), ::pumphouse_sdk::WriteError>",
};

const FILTER: Kind = Kind {
    world: "pump-filter",
    prefix: "filter",
    export: "filter",
    method: "process",
    signature: "(batch: ::pumphouse_sdk::Batch) -> ::core::result::Result<::pumphouse_sdk::Verdict, ::std::string::String>",
};

fn expand(input: TokenStream, kind: &Kind) -> TokenStream {
    let ty = input.to_string();
    let ty = ty.trim().trim_end_matches(',').trim_end();
    if ty.is_empty() {
        return compile_error(&format!(
            "expected a type: `export_{}!(MyType)`",
            kind.prefix
        ));
    }
    let Kind {
        world,
        prefix,
        export,
        method,
        signature,
    } = kind;
    let sdk = "::pumphouse_sdk::__bindings::pumphouse::plugin";
    let code = format!(
        r#"
#[doc(hidden)]
type __PumphouseExported = {ty};

#[doc(hidden)]
#[allow(dead_code, unused_imports, missing_docs, clippy::all)]
mod __pumphouse_export {{
    ::pumphouse_sdk::__wit_bindgen::generate!({{
        inline: {wit:?},
        world: {world:?},
        runtime_path: "::pumphouse_sdk::__wit_bindgen::rt",
        with: {{
            "pumphouse:plugin/types@0.1.0": {sdk}::types,
            "pumphouse:plugin/host@0.1.0": {sdk}::host,
            "pumphouse:plugin/kv@0.1.0": {sdk}::kv,
        }},
    }});

    struct Export;

    impl self::exports::pumphouse::plugin::plugin::Guest for Export {{
        fn describe() -> ::pumphouse_sdk::PluginInfo {{
            ::pumphouse_sdk::__private::{prefix}_describe::<super::__PumphouseExported>()
        }}

        fn init(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {{
            ::pumphouse_sdk::__private::{prefix}_init::<super::__PumphouseExported>(config)
        }}
    }}

    impl self::exports::pumphouse::plugin::{export}::Guest for Export {{
        fn {method}{signature} {{
            ::pumphouse_sdk::__private::{prefix}_{method}::<super::__PumphouseExported>(batch)
        }}
    }}

    export!(Export);
}}
"#,
        wit = WIT,
    );
    code.parse()
        .unwrap_or_else(|e| compile_error(&format!("pumphouse export macro: {e}")))
}

fn compile_error(message: &str) -> TokenStream {
    format!("::core::compile_error!({message:?});")
        .parse()
        .expect("compile_error! tokens")
}
