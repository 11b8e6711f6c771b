//! Reading state written by the previous format.
//!
//! Format 6 → 7 added `ClusterState::streams` at the end of the state; everything before it
//! is encoded the same. A format 6 state is decoded into [`ClusterStateV6`] (the fields it
//! had) and becomes a format 7 state with no stream jobs.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::job::Job;
use crate::node::{NodeId, NodeInfo};
use crate::state::ClusterState;
use crate::store::TaskStore;
use crate::task::{JobId, TaskId};

/// The format this build migrates from.
pub const FROM: u16 = 6;

/// `ClusterState`'s serialized fields in format 6, in order.
#[derive(Deserialize)]
pub struct ClusterStateV6 {
    pub tasks: TaskStore,
    pub next_id: TaskId,
    pub idempotency: BTreeMap<String, (TaskId, u64)>,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub jobs: BTreeMap<JobId, Job>,
    pub next_job_id: JobId,
}

impl From<ClusterStateV6> for ClusterState {
    fn from(v: ClusterStateV6) -> ClusterState {
        let mut s = ClusterState::new();
        s.tasks = v.tasks;
        s.next_id = v.next_id;
        s.idempotency = v.idempotency;
        s.nodes = v.nodes;
        s.jobs = v.jobs;
        s.next_job_id = v.next_job_id;
        s.rebuild_indexes();
        s
    }
}
