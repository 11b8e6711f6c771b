//! Reading state written by earlier formats.
//!
//! Format 6 → 7 added `ClusterState::streams` at the end of the state, 7 → 8
//! `ClusterState::modules`; everything before them is encoded the same. A format 6 or 7 state
//! is decoded into [`ClusterStateV6`] / [`ClusterStateV7`] (the fields it had) and becomes a
//! format 8 state with what it lacked empty. Log entries of both still apply: commands and
//! work kinds added since are new variants at the end of their enums.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::job::Job;
use crate::node::{NodeId, NodeInfo};
use crate::state::ClusterState;
use crate::store::TaskStore;
use crate::task::{JobId, TaskId};

/// The formats this build migrates from.
pub const FROM: &[u16] = &[6, 7];

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

/// `ClusterState`'s serialized fields in format 7, in order.
#[derive(Deserialize)]
pub struct ClusterStateV7 {
    pub tasks: TaskStore,
    pub next_id: TaskId,
    pub idempotency: BTreeMap<String, (TaskId, u64)>,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub jobs: BTreeMap<JobId, Job>,
    pub next_job_id: JobId,
    pub streams: crate::stream::Streams,
}

impl From<ClusterStateV7> for ClusterState {
    fn from(v: ClusterStateV7) -> ClusterState {
        let mut s = ClusterState::new();
        s.tasks = v.tasks;
        s.next_id = v.next_id;
        s.idempotency = v.idempotency;
        s.nodes = v.nodes;
        s.jobs = v.jobs;
        s.next_job_id = v.next_job_id;
        s.streams = v.streams;
        s.rebuild_indexes();
        s
    }
}
