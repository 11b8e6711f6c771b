//! Metric names, in one place so the exporter, dashboards and tests agree.

pub const ACTOR_RESTARTS: &str = "edgerun_actor_restarts_total";
pub const TASKS_BY_STATUS: &str = "edgerun_tasks";
/// Attempts this node ran whose completion the cluster accepted, by `status`.
pub const TASKS_FINISHED: &str = "edgerun_tasks_finished_total";
/// Run time of attempts on this node, by `kernel` and `isolation`.
pub const TASK_DURATION: &str = "edgerun_task_duration_seconds";
/// From submission to the start of an attempt on this node.
pub const TASK_QUEUE_WAIT: &str = "edgerun_task_queue_wait_seconds";
/// Tasks created by submissions through this node's API.
pub const TASKS_SUBMITTED: &str = "edgerun_tasks_submitted_total";
/// Pending tasks by `priority` (the cluster's, as this node sees it).
pub const SCHEDULER_PENDING: &str = "edgerun_scheduler_pending";
/// The leader's id as this node sees it (0: none known).
pub const RAFT_LEADER: &str = "edgerun_raft_leader";
/// The highest log index this node has committed and applied.
pub const RAFT_COMMIT_INDEX: &str = "edgerun_raft_commit_index";
/// On the leader: entries each `peer` is behind the leader's log.
pub const RAFT_REPLICATION_LAG: &str = "edgerun_raft_replication_lag";
/// 1 when `node` is up (heartbeats within its lease), 0 when marked down.
pub const NODE_UP: &str = "edgerun_node_up";
/// Records through each stream job's `stage` (in, out, filtered, late, malformed), on the node
/// that runs it.
pub const STREAM_RECORDS: &str = "edgerun_stream_records_total";
/// Wall clock minus the job's watermark.
pub const STREAM_WATERMARK_LAG: &str = "edgerun_stream_watermark_lag_seconds";
/// From the sink's flush to the committed checkpoint.
pub const STREAM_CHECKPOINT_SECONDS: &str = "edgerun_stream_checkpoint_seconds";
/// Committed checkpoints of a stream job, by where the bytes are `kept` (`log`: in the Raft
/// entry; `by_hash`: off the log, on this node and up to two others).
pub const STREAM_CHECKPOINTS: &str = "edgerun_stream_checkpoints_total";
/// Size of a stream job's last checkpoint.
pub const STREAM_CHECKPOINT_BYTES: &str = "edgerun_stream_checkpoint_bytes";
/// Restarts of a stream job's runner on this node.
pub const STREAM_RESTARTS: &str = "edgerun_stream_restarts_total";
/// POSTs of records refused with 429 (the job's input queue was full).
pub const STREAM_INGEST_REFUSED: &str = "edgerun_stream_ingest_refused_total";
/// Gauges of the whole cluster (every node knows them from the replicated state): only the
/// leader's /metrics shows them, so that `sum()` over the nodes counts each task once.
pub const CLUSTER_WIDE: &[&str] = &[TASKS_BY_STATUS, NODE_UP, SCHEDULER_PENDING];
/// Time to answer a REST call, by `route`, `method` and `status`.
pub const HTTP_DURATION: &str = "edgerun_http_request_duration_seconds";
/// Alerts firing, by `alert` kind.
pub const ALERTS_FIRING: &str = "edgerun_alerts_firing";
/// Bytes the sled database takes on disk.
pub const SLED_DISK_BYTES: &str = "edgerun_sled_disk_bytes";
/// Bytes the Raft log's segment files take on disk.
pub const RAFT_LOG_BYTES: &str = "edgerun_raft_log_bytes";
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
/// Container executor: building and starting an attempt's container.
pub const CONTAINER_START: &str = "edgerun_container_start_seconds";
/// Result cache lookups that found a result / did not; failed exchanges with Redis.
pub const CACHE_HITS: &str = "edgerun_cache_hits_total";
pub const CACHE_MISSES: &str = "edgerun_cache_misses_total";
pub const CACHE_ERRORS: &str = "edgerun_cache_errors_total";

/// Register help texts and units for every metric (Prometheus wants a HELP line for each).
pub fn describe_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        ACTOR_RESTARTS,
        "Actors restarted by their supervisor, by actor"
    );
    describe_gauge!(
        TASKS_BY_STATUS,
        "Tasks in the cluster by status (cluster-wide: exported by the leader only)"
    );
    describe_counter!(
        TASKS_FINISHED,
        "Attempts run here whose completion the cluster accepted, by status"
    );
    describe_histogram!(
        TASK_DURATION,
        Unit::Seconds,
        "Run time of attempts on this node, by kernel and isolation"
    );
    describe_histogram!(
        TASK_QUEUE_WAIT,
        Unit::Seconds,
        "Time from submission to an attempt starting on this node"
    );
    describe_counter!(
        TASKS_SUBMITTED,
        "Tasks created by submissions through this node's API"
    );
    describe_gauge!(
        SCHEDULER_PENDING,
        "Pending tasks by priority (cluster-wide: exported by the leader only)"
    );
    describe_gauge!(
        edgerun_raft::breaker::CIRCUIT_OPEN,
        "1 while cluster RPC to the peer fails fast (circuit open or probing), by peer"
    );
    describe_counter!(
        edgerun_raft::breaker::CIRCUIT_OPENED,
        "Times the circuit to a peer opened after repeated failures, by peer"
    );
    describe_counter!(
        edgerun_raft::breaker::FAST_FAILURES,
        "Cluster RPC calls refused at once because the peer's circuit was open, by peer"
    );
    describe_counter!(
        CACHE_HITS,
        "Attempts whose result came from the result cache (the kernel did not run)"
    );
    describe_counter!(
        CACHE_MISSES,
        "Result cache lookups that found nothing (or failed)"
    );
    describe_counter!(
        CACHE_ERRORS,
        "Result cache exchanges with Redis that failed or timed out"
    );
    describe_histogram!(
        CONTAINER_START,
        Unit::Seconds,
        "Time to create and start an attempt's container (container executor)"
    );
    describe_counter!(RAFT_PROPOSALS, "Writes proposed to Raft by this node");
    describe_counter!(STREAM_RECORDS, "Records through a stream job's stage");
    describe_gauge!(
        STREAM_WATERMARK_LAG,
        "Wall clock minus a stream job's watermark"
    );
    describe_histogram!(
        STREAM_CHECKPOINT_SECONDS,
        "Time to flush a stream job's sink and commit its checkpoint"
    );
    describe_counter!(
        STREAM_CHECKPOINTS,
        "Committed checkpoints of a stream job, by where they are kept (log, by_hash)"
    );
    describe_gauge!(
        STREAM_CHECKPOINT_BYTES,
        "Size of a stream job's last committed checkpoint"
    );
    describe_counter!(STREAM_RESTARTS, "Restarts of a stream job's runner");
    describe_counter!(
        STREAM_INGEST_REFUSED,
        "Record POSTs refused because a stream job's input queue was full"
    );
    describe_histogram!(RAFT_BATCH_SIZE, "Writes per Raft entry (group commit)");
    describe_gauge!(RAFT_TERM, "This node's current Raft term");
    describe_gauge!(RAFT_IS_LEADER, "1 while this node leads");
    describe_gauge!(
        RAFT_LEADER,
        "The leader's node id as this node sees it (0: none known)"
    );
    describe_gauge!(
        RAFT_LAST_APPLIED,
        "Last log index applied to this node's state machine"
    );
    describe_gauge!(
        RAFT_COMMIT_INDEX,
        "Highest log index committed and applied on this node"
    );
    describe_gauge!(
        RAFT_REPLICATION_LAG,
        "On the leader: log entries each peer is behind"
    );
    describe_gauge!(
        NODE_UP,
        "1 when the node is up (heartbeats within its lease), 0 when down (cluster-wide: exported by the leader only)"
    );
    describe_counter!(
        SCHEDULER_PLACED,
        "Attempts placed by this node's scheduler while leading"
    );
    describe_histogram!(
        SCHEDULER_PLAN_SECONDS,
        Unit::Seconds,
        "Time to plan one scheduling round"
    );
    describe_counter!(
        SCHEDULER_PREEMPTED,
        "Attempts preempted for higher-priority tasks"
    );
    describe_counter!(JOB_FIRES, "Tasks created by periodic jobs");
    describe_counter!(TASKS_COLLECTED, "Finished tasks removed by retention");
    describe_gauge!(WORKER_BUSY_SLOTS, "Attempts running on this node");
    describe_counter!(
        TASKS_STOPPED,
        "Running attempts this node stopped (cancel, preemption, reassignment)"
    );
    describe_gauge!(
        WORKER_OUTBOX,
        "Completions kept on disk until the cluster takes them"
    );
    describe_counter!(
        COMPLETIONS_REFUSED,
        "Completions the cluster refused (stale attempt or cancelled)"
    );
    describe_counter!(
        HTTP_REQUESTS,
        "REST calls answered, by route, method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer a REST call, by route, method and status"
    );
    describe_gauge!(
        ALERTS_FIRING,
        "Alerts firing, by kind (node_down, pending, failure_rate, disk)"
    );
    describe_counter!(HTTP_RATE_LIMITED, "REST calls refused by the rate limit");
    describe_gauge!(
        SLED_DISK_BYTES,
        Unit::Bytes,
        "Bytes the sled database takes on disk"
    );
    describe_gauge!(
        RAFT_LOG_BYTES,
        Unit::Bytes,
        "Bytes the Raft log's segment files take on disk"
    );
}
