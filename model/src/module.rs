//! WebAssembly modules (format 8): uploaded once, kept in the replicated state, run by tasks.
//!
//! A module is content-addressed: its id is `sha256:<hex of its bytes>`, so the same bytes
//! uploaded twice are one module. A name points to the latest upload under that name; a task
//! names a module by id or by name and is stored with the id the name had at submission, so
//! an upload under the same name later does not change what a submitted task runs.
//!
//! The bytes live in the state, replicated by Raft like everything else: every node has every
//! module without a fetch path, a module survives the loss of any minority of nodes, and a
//! node restarted from a snapshot has them all. What that costs is bounded by the upload cap
//! (`executor.max_module_bytes`, 8 MiB by default; C modules built with wasi-libc are tens to
//! hundreds of KiB).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One uploaded module.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WasmModule {
    /// `sha256:<64 hex digits>` of `bytes`.
    pub id: String,
    /// The name it was last uploaded under.
    pub name: String,
    pub bytes: Vec<u8>,
    pub created_ms: u64,
    /// Who uploaded it (the token's subject, or the client's address without auth).
    pub uploader: String,
}

/// A module as listed (no bytes).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModuleInfo {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub created_ms: u64,
    pub uploader: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Modules {
    by_id: BTreeMap<String, WasmModule>,
    /// name → the id of its latest upload.
    names: BTreeMap<String, String>,
}

/// The id of `bytes`.
pub fn module_id(bytes: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(bytes);
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Whether `s` is spelled like a module id (not whether it exists).
pub fn is_module_id(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl Modules {
    /// Store `m` (its id must be its bytes' hash: the proposer checked; checked again here so
    /// that every node decides the same). Returns whether it is new; a known id gets the new
    /// name pointed at it.
    pub fn put(&mut self, m: WasmModule) -> Result<bool, String> {
        if module_id(&m.bytes) != m.id {
            return Err("the module's id is not the SHA-256 of its bytes".into());
        }
        self.names.insert(m.name.clone(), m.id.clone());
        match self.by_id.get_mut(&m.id) {
            Some(known) => {
                known.name = m.name;
                Ok(false)
            }
            None => {
                self.by_id.insert(m.id.clone(), m);
                Ok(true)
            }
        }
    }

    /// Remove a module; names pointing at it go too.
    pub fn remove(&mut self, id: &str) -> bool {
        let gone = self.by_id.remove(id).is_some();
        if gone {
            self.names.retain(|_, v| v != id);
        }
        gone
    }

    /// The module with this id, or the latest upload under this name.
    pub fn resolve(&self, id_or_name: &str) -> Option<&WasmModule> {
        self.by_id
            .get(id_or_name)
            .or_else(|| self.names.get(id_or_name).and_then(|id| self.by_id.get(id)))
    }

    pub fn get(&self, id: &str) -> Option<&WasmModule> {
        self.by_id.get(id)
    }

    pub fn list(&self) -> impl Iterator<Item = ModuleInfo> + '_ {
        self.by_id.values().map(WasmModule::info)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl WasmModule {
    pub fn info(&self) -> ModuleInfo {
        ModuleInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            size: self.bytes.len() as u64,
            created_ms: self.created_ms,
            uploader: self.uploader.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, bytes: &[u8]) -> WasmModule {
        WasmModule {
            id: module_id(bytes),
            name: name.into(),
            bytes: bytes.to_vec(),
            created_ms: 1,
            uploader: "u".into(),
        }
    }

    #[test]
    fn same_bytes_are_one_module_and_a_name_follows_the_latest_upload() {
        let mut ms = Modules::default();
        assert_eq!(ms.put(m("a", b"one")), Ok(true));
        assert_eq!(ms.put(m("a", b"one")), Ok(false));
        assert_eq!(ms.len(), 1);
        assert_eq!(ms.put(m("a", b"two")), Ok(true));
        assert_eq!(
            ms.resolve("a").map(|x| x.bytes.clone()),
            Some(b"two".to_vec())
        );
        let one = module_id(b"one");
        assert!(is_module_id(&one));
        assert_eq!(
            ms.resolve(&one).map(|x| x.bytes.clone()),
            Some(b"one".to_vec())
        );
        // A forged id is refused.
        let mut bad = m("b", b"three");
        bad.id = one.clone();
        assert!(ms.put(bad).is_err());
        assert!(ms.remove(&module_id(b"two")));
        assert!(ms.resolve("a").is_none(), "the name went with its module");
        assert!(ms.resolve(&one).is_some());
        assert!(!is_module_id("sha256:xyz"));
    }
}
