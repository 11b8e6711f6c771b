//! `[scheduler]` (placement policy, preemption) and `[retention]` (how long finished tasks
//! and their results are kept).

use serde::{Deserialize, Serialize};

use crate::{invalid, ConfigError};

/// How the leader places tasks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// `spread` (least busy node) or `binpack` (busiest node that fits); a task may override.
    pub placement: edgerun_model::Placement,
    /// A pending task gains one priority point per this many seconds of waiting, so that low
    /// priorities are not starved. 0 = no aging.
    pub aging_secs: u64,
    /// Let a higher-priority task that fits nowhere evict lower-priority running ones (they
    /// go back to pending without losing an attempt).
    pub preemption: bool,
    /// A preemptor's priority must exceed its victims' by at least this much.
    pub preemption_min_gap: i32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            placement: edgerun_model::Placement::Spread,
            aging_secs: 60,
            preemption: false,
            preemption_min_gap: 1,
        }
    }
}

/// How long finished tasks are kept. Unfinished tasks are never collected.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Keep at most this many finished tasks (the oldest go first). 0 = no count limit.
    pub max_finished: u64,
    /// Forget finished tasks older than this (seconds since they ended). 0 = no age limit.
    pub max_age_secs: u64,
    /// How often the leader looks for tasks to collect (milliseconds).
    pub interval_ms: u64,
    /// A result longer than this (bytes of JSON) is kept off-Raft on the node that made it,
    /// and fetched from there through any node.
    pub inline_result_max_bytes: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_finished: 100_000,
            max_age_secs: 7 * 86_400,
            interval_ms: 5_000,
            inline_result_max_bytes: 64 * 1024,
        }
    }
}

impl SchedulerConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.preemption_min_gap < 1 {
            return Err(invalid(
                "scheduler.preemption_min_gap",
                self.preemption_min_gap,
                "1 to 100",
            ));
        }
        Ok(())
    }
}

impl RetentionConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.inline_result_max_bytes < 256 {
            return Err(invalid(
                "retention.inline_result_max_bytes",
                self.inline_result_max_bytes,
                "at least 256",
            ));
        }
        if self.interval_ms < 100 {
            return Err(invalid(
                "retention.interval_ms",
                self.interval_ms,
                "at least 100",
            ));
        }
        Ok(())
    }
}
