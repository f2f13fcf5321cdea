//! Hostile sinks that Rust cannot express (several linear memories, a
//! `table.grow` of any size), written as WebAssembly text and made into
//! `pump-sink` components against `wit/pump.wit` when a test asks for one.

use std::path::{Path, PathBuf};

use crate::harness::root;

/// What the sink does beyond delivering.
pub(crate) enum Hog {
    /// Defines `extra` empty memories besides the one the canonical ABI
    /// uses, and grows each by `pages` 64 KiB pages in every `write`;
    /// traps with `unreachable` if a growth is merely refused (`-1`).
    Memories { extra: usize, pages: u32 },
    /// Grows a funcref table by `elements` in every `write`; traps with
    /// `unreachable` if the growth is merely refused (`-1`).
    TableGrow { elements: u32 },
}

/// The core module: a bump allocator for the host's arguments, a constant
/// `describe`, an `init` that accepts anything, and a `write` that hogs
/// and then reports success (every record delivered, nowhere).
fn core_wat(hog: &Hog) -> String {
    let (memories, grow) = match hog {
        Hog::Memories { extra, pages } => (
            (1..=*extra).map(|i| format!("(memory $m{i} 0)")).collect(),
            (1..=*extra)
                .map(|i| {
                    format!(
                        "(if (i32.eq (memory.grow $m{i} (i32.const {pages})) (i32.const -1)) (then unreachable))"
                    )
                })
                .collect(),
        ),
        Hog::TableGrow { elements } => (
            String::new(),
            format!(
                "(if (i32.eq (table.grow $t (ref.null func) (i32.const {elements})) (i32.const -1)) (then unreachable))"
            ),
        ),
    };
    format!(
        r#"(module
  (memory (export "memory") 1)
  {memories}
  (table $t 1 funcref)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 16) "wat-hog")
  (data (i32.const 32) "0.1.0")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    ;; align the bump pointer up to the requested alignment
    (local.set $p (i32.and
      (i32.sub (i32.add (global.get $heap) (local.get 2)) (i32.const 1))
      (i32.sub (i32.const 0) (local.get 2))))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq
              (memory.grow (i32.add (i32.shr_u
                (i32.sub (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
                (i32.const 16)) (i32.const 1)))
              (i32.const -1))
          (then unreachable))))
    (local.get $p))
  (func (export "pumphouse:plugin/plugin@0.1.0#describe") (result i32)
    ;; plugin-info {{ name, version, accepts: msgpack }}
    (i32.store (i32.const 64) (i32.const 16))
    (i32.store (i32.const 68) (i32.const 7))
    (i32.store (i32.const 72) (i32.const 32))
    (i32.store (i32.const 76) (i32.const 5))
    (i32.store8 (i32.const 80) (i32.const 0))
    (i32.const 64))
  (func (export "pumphouse:plugin/plugin@0.1.0#init") (param i32 i32) (result i32)
    (global.set $heap (i32.const 1024))
    (i32.store8 (i32.const 96) (i32.const 0))
    (i32.const 96))
  (func (export "pumphouse:plugin/sink@0.1.0#write")
    (param i32 i32 i32 i32 i32 i32) (result i32)
    {grow}
    ;; the arguments are read: the next call's may reuse their bytes
    (global.set $heap (i32.const 1024))
    (i32.store8 (i32.const 112) (i32.const 0))
    (i32.const 112))
)"#
    )
}

/// Builds the component for `hog` into `dir` and returns its path.
pub(crate) fn hog_component(dir: &Path, name: &str, hog: &Hog) -> PathBuf {
    let mut module = wat::parse_str(core_wat(hog)).expect("fixture WAT parses");
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_path(root().join("wit")).expect("wit/ parses");
    let world = resolve
        .select_world(&[pkg], Some("pump-sink"))
        .expect("wit/pump.wit has pump-sink");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("metadata embeds");
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .expect("the core module matches pump-sink")
        .encode()
        .expect("the component encodes");
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, component).unwrap();
    path
}
