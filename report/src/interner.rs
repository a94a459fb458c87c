//! Small integer ids for repeated strings (command names): per-process state then holds a
//! `u32` instead of a `String`, and comparing or hashing a key stays cheap.

use std::collections::HashMap;

/// Interned strings, each stored once.
#[derive(Clone, Debug, Default)]
pub(crate) struct Interner {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Interner {
    /// The id of `name`, interning it on first sight.
    pub(crate) fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }

    /// The string behind `id`; `[unknown]` for an id this interner never gave out.
    pub(crate) fn name(&self, id: u32) -> &str {
        self.names
            .get(id as usize)
            .map_or("[unknown]", String::as_str)
    }
}
