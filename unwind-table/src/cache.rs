//! Tables by build id, so a binary's CFI is compiled once however many processes map it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{Error, UnwindTable};

/// Compiled tables (and compile failures, so a bad file costs one attempt) keyed by build id
/// or whatever identity the caller has for files without one. In memory only: compiling libc
/// takes milliseconds, less than reading a cache file would be worth.
#[derive(Default)]
pub struct TableCache<K> {
    tables: HashMap<K, Result<Arc<UnwindTable>, Arc<str>>>,
}

impl<K: std::hash::Hash + Eq> TableCache<K> {
    /// An empty cache.
    pub fn new() -> Self {
        TableCache {
            tables: HashMap::new(),
        }
    }

    /// The table of `key`, compiling it with `compile` the first time.
    pub fn get_or_compile(
        &mut self,
        key: K,
        compile: impl FnOnce() -> Result<UnwindTable, Error>,
    ) -> Result<Arc<UnwindTable>, Arc<str>> {
        self.tables
            .entry(key)
            .or_insert_with(|| {
                compile()
                    .map(Arc::new)
                    .map_err(|e| Arc::from(e.to_string()))
            })
            .clone()
    }

    /// Number of files compiled (or failed).
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether nothing was compiled yet.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}
