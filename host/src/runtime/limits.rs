//! What one plugin instance may allocate: `sandbox.max_memory` bounds the
//! sum of all of its linear memories and tables (wasmtime's own
//! `StoreLimits` bounds each memory alone, so sixteen memories could hold
//! sixteen times the limit), and the number of memories, tables and core
//! instances is capped. A breach traps the call as a memory error.

use wasmtime::ResourceLimiter;

/// Most linear memories one plugin instance may create.
pub const MAX_MEMORIES: usize = 4;
/// Most tables one plugin instance may create.
pub const MAX_TABLES: usize = 32;
/// Most core instances one plugin instance may create (a component is
/// several: its modules and the shims between them).
pub const MAX_INSTANCES: usize = 256;
/// Bytes a table element counts: wasmtime stores a pointer per element.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// A growth past `sandbox.max_memory`; the call traps with it.
#[derive(Debug, thiserror::Error)]
#[error("growing a {what} by {grow} bytes would take the instance's memories and tables to {total} bytes, over sandbox.max_memory of {limit} bytes")]
pub struct OverLimit {
    what: &'static str,
    grow: usize,
    total: usize,
    limit: usize,
}

/// The limiter of one store.
#[derive(Debug)]
pub struct Limits {
    limit: usize,
    /// Bytes of memory and tables granted so far (they never shrink).
    used: usize,
    /// The last grant, taken back if the growth then failed.
    pending: usize,
}

impl Limits {
    pub fn new(max_bytes: usize) -> Limits {
        Limits {
            limit: max_bytes,
            used: 0,
            pending: 0,
        }
    }

    fn grow(&mut self, what: &'static str, grow: usize) -> wasmtime::Result<bool> {
        let total = self.used.saturating_add(grow);
        if total > self.limit {
            return Err(OverLimit {
                what,
                grow,
                total,
                limit: self.limit,
            }
            .into());
        }
        self.used = total;
        self.pending = grow;
        Ok(true)
    }

    fn failed(&mut self) {
        self.used -= std::mem::take(&mut self.pending);
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.grow("memory", desired.saturating_sub(current))
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.failed();
        Err(error.context("memory growth failed"))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let grow = desired.saturating_sub(current);
        self.grow("table", grow.saturating_mul(TABLE_ELEMENT_BYTES))
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.failed();
        Err(error.context("table growth failed"))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut l = Limits::new(1 << 20);
        assert!(l.memory_growing(0, 512 << 10, None).unwrap());
        // A second memory counts on top of the first.
        assert!(l.memory_growing(0, 256 << 10, None).unwrap());
        // 32 Ki elements of 8 bytes are 256 KiB: exactly what is left.
        assert!(l
            .table_growing(0, (256 << 10) / TABLE_ELEMENT_BYTES, None)
            .unwrap());
        let e = l.memory_growing(0, 64 << 10, None).unwrap_err();
        assert!(e.downcast_ref::<OverLimit>().is_some(), "{e:#}");
        assert!(l.table_growing(10, 11, None).is_err());
        // A growth past the memory's own maximum fails without a grant.
        assert!(!l.memory_growing(0, 128 << 10, Some(64 << 10)).unwrap());
    }

    /// A store limited as a plugin's is, and a module compiled from `wat`.
    fn store_and_module(limit: usize, wat: &str) -> (wasmtime::Store<Limits>, wasmtime::Module) {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, wat::parse_str(wat).unwrap()).unwrap();
        let mut store = wasmtime::Store::new(&engine, Limits::new(limit));
        store.limiter(|l| l);
        (store, module)
    }

    fn instantiate(
        store: &mut wasmtime::Store<Limits>,
        module: &wasmtime::Module,
    ) -> wasmtime::Result<wasmtime::Instance> {
        wasmtime::Instance::new(store, module, &[])
    }

    /// `n` memories of `pages` 64 KiB pages each.
    fn memories(n: usize, pages: u32) -> String {
        format!("(module {})", format!("(memory {pages})").repeat(n))
    }

    #[test]
    fn wasmtime_sums_the_memories_of_a_store_through_the_limiter() {
        // Four memories of 1 MiB fit 4 MiB; a fifth is one too many.
        let (mut store, module) = store_and_module(4 << 20, &memories(4, 16));
        instantiate(&mut store, &module).unwrap();
        let (mut store, module) = store_and_module(usize::MAX, &memories(MAX_MEMORIES + 1, 0));
        let e = instantiate(&mut store, &module).unwrap_err();
        assert!(format!("{e:#}").contains("memory count too high"), "{e:#}");
        // Three memories of 1 MiB under 2 MiB: the third is refused by
        // the sum, though each alone is under the limit.
        let (mut store, module) = store_and_module(2 << 20, &memories(3, 16));
        let e = instantiate(&mut store, &module).unwrap_err();
        assert!(e.downcast_ref::<OverLimit>().is_some(), "{e:#}");
    }

    #[test]
    fn wasmtime_counts_table_growth_and_tables_through_the_limiter() {
        let grow = r#"(module
            (table $t 1 funcref)
            (func (export "grow") (param i32) (result i32)
                (table.grow $t (ref.null func) (local.get 0))))"#;
        let (mut store, module) = store_and_module(1 << 20, grow);
        let inst = instantiate(&mut store, &module).unwrap();
        let f = inst.get_typed_func::<i32, i32>(&mut store, "grow").unwrap();
        // 1 Ki elements fit; 128 Mi elements (1 GiB of pointers) trap.
        assert_eq!(f.call(&mut store, 1024).unwrap(), 1);
        let e = f.call(&mut store, 128 << 20).unwrap_err();
        assert!(e.downcast_ref::<OverLimit>().is_some(), "{e:#}");
        let tables = format!("(module {})", "(table 0 funcref)".repeat(MAX_TABLES + 1));
        let (mut store, module) = store_and_module(usize::MAX, &tables);
        let e = instantiate(&mut store, &module).unwrap_err();
        assert!(format!("{e:#}").contains("table count too high"), "{e:#}");
    }

    #[test]
    fn wasmtime_caps_the_instances_of_a_store() {
        let (mut store, module) = store_and_module(usize::MAX, "(module)");
        for _ in 0..MAX_INSTANCES {
            instantiate(&mut store, &module).unwrap();
        }
        let e = instantiate(&mut store, &module).unwrap_err();
        assert!(
            format!("{e:#}").contains("instance count too high"),
            "{e:#}"
        );
    }

    #[test]
    fn a_failed_growth_gives_its_grant_back() {
        let mut l = Limits::new(1 << 20);
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        let _ = l.memory_grow_failed(wasmtime::Error::msg("no pages"));
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
    }
}
