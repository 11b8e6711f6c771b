//! Metric names, in one place so the exporter, dashboards and tests agree.

pub const ACTOR_RESTARTS: &str = "edgerun_actor_restarts_total";
pub const TASKS_BY_STATUS: &str = "edgerun_tasks";
pub const TASKS_COMPLETED: &str = "edgerun_tasks_completed_total";
pub const TASK_RUN_SECONDS: &str = "edgerun_task_run_seconds";
pub const RAFT_PROPOSALS: &str = "edgerun_raft_proposals_total";
pub const RAFT_BATCH_SIZE: &str = "edgerun_raft_batch_size";
pub const RAFT_TERM: &str = "edgerun_raft_term";
pub const RAFT_IS_LEADER: &str = "edgerun_raft_is_leader";
pub const RAFT_LAST_APPLIED: &str = "edgerun_raft_last_applied";
pub const SCHEDULER_PLACED: &str = "edgerun_scheduler_placed_total";
pub const WORKER_BUSY_SLOTS: &str = "edgerun_worker_busy_slots";
pub const HTTP_REQUESTS: &str = "edgerun_http_requests_total";
pub const COMPLETIONS_REFUSED: &str = "edgerun_completions_refused_total";
pub const SCHEDULER_PLAN_SECONDS: &str = "edgerun_scheduler_plan_seconds";
pub const SCHEDULER_PREEMPTED: &str = "edgerun_scheduler_preempted_total";
pub const JOB_FIRES: &str = "edgerun_job_fires_total";
pub const TASKS_COLLECTED: &str = "edgerun_tasks_collected_total";
pub const TASKS_STOPPED: &str = "edgerun_worker_tasks_stopped_total";
pub const WORKER_OUTBOX: &str = "edgerun_worker_outbox";
pub const HTTP_RATE_LIMITED: &str = "edgerun_http_rate_limited_total";
