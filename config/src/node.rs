//! `[node]`: who this node is (id, tier, labels) and where it keeps its data.

use std::collections::BTreeMap;
use std::path::PathBuf;

use edgerun_model::{NodeId, Tier};
use serde::{Deserialize, Serialize};

use crate::{invalid, ConfigError};

/// Who this node is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Unique in the cluster; also the Raft node id.
    pub id: NodeId,
    /// Cloud nodes vote; edge nodes usually learn.
    pub tier: Tier,
    /// Free-form labels for placement constraints.
    pub labels: BTreeMap<String, String>,
    /// The node's data: the Raft log (segment files), snapshots (files), vote and
    /// off-Raft results (sled), the audit log and the outbox.
    pub data_dir: PathBuf,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            id: 1,
            tier: Tier::Cloud,
            labels: BTreeMap::new(),
            data_dir: PathBuf::from("./data/n1"),
        }
    }
}

impl NodeSection {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(invalid("node.id", 0, "an integer from 1 to 2^64-1"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("node.data_dir", "", "a directory path"));
        }
        Ok(())
    }
}
