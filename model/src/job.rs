//! Periodic jobs: a cron schedule that makes a task at each slot.
//!
//! The state machine keeps, per job, the last slot it decided on. A `Fire` command carries
//! slots in increasing order; one at or before that mark is refused, so no slot is ever fired
//! twice, whichever leader proposes it and however often. The fire record and the task it
//! makes are written by the same entry: a task from a job never exists without its record.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::task::{JobId, TaskId, TaskSpec};

/// What to do when a slot comes while the previous fire's task has not ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Skip the slot.
    #[default]
    Forbid,
    /// Fire anyway.
    Allow,
}

/// What to do with slots that passed while no leader could fire them (failover, downtime).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Fire none of them.
    #[default]
    Skip,
    /// Fire one task for all of them (the latest slot).
    FireOnce,
    /// Fire each of them, oldest first.
    FireAll,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Forbid => "forbid",
            Overlap::Allow => "allow",
        }
    }
}

impl Misfire {
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::Skip => "skip",
            Misfire::FireOnce => "fire_once",
            Misfire::FireAll => "fire_all",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JobSpec {
    pub name: String,
    /// Cron with seconds: `sec min hour day-of-month month day-of-week [year]`.
    pub schedule: String,
    /// IANA time zone name the schedule is read in (`UTC`, `Europe/Berlin`).
    pub timezone: String,
    pub task: TaskSpec,
    pub overlap: Overlap,
    pub misfire: Misfire,
    /// A missed slot older than this is never fired, whatever the policy.
    pub misfire_deadline_ms: u64,
}

/// One decided slot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FireRecord {
    pub slot_ms: u64,
    /// Proposer's clock when the decision was committed.
    pub decided_at_ms: u64,
    /// The task made for this slot, or none when skipped.
    pub task: Option<TaskId>,
    /// Why the slot was skipped (`misfire`, `overlap`, `deadline`).
    pub skipped: Option<String>,
}

/// One slot's decision in a `Fire` command: fire it, or skip it and say why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SlotDecision {
    pub slot_ms: u64,
    pub skip: Option<String>,
}

/// Most fire records kept per job (older ones are only counted).
pub const RECENT_FIRES: usize = 32;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub created_at_ms: u64,
    /// Slots that made a task.
    pub fires: u64,
    /// Slots decided and skipped.
    pub skipped: u64,
    /// The last slot decided (fired or skipped); slots at or before it are never fired.
    pub last_slot_ms: Option<u64>,
    /// The last slot that made a task, and that task.
    pub last_fire_ms: Option<u64>,
    pub last_task: Option<TaskId>,
    pub recent: VecDeque<FireRecord>,
}
