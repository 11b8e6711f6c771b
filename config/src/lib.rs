//! Node configuration: defaults < TOML file < `EDGERUN_*` environment < command-line flags.
//!
//! # Layout
//! - [`NodeConfig`] and one plain-data section per component (each takes only its own).
//! - [`Sources`]: where the layers come from. Tests pass their own environment instead of
//!   touching the process's.
//! - [`load`]: merges the layers with figment, rejects unknown keys and wrong types, then
//!   [`NodeConfig::validate`]s the values once.
//! - [`secret`]: secret files shared by a cluster's nodes (JWT key, API keys, cluster secret):
//!   made 0600 when missing, refused when too short or readable by others.
//! - `tests` (private): the layering, unknown keys, messages and every validation rule.
//!
//! Environment variables map to keys by splitting at the first `_` after the prefix:
//! `EDGERUN_API_LISTEN` is `api.listen`, `EDGERUN_NODE_DATA_DIR` is `node.data_dir`.
//! Flags are `--set key=value` (dotted keys) plus a few named shortcuts in the binary.
//! Values in env and flags are parsed like TOML values (`4`, `true`, `"x"`, `[1, 2]`).
//!
//! Every error names the key, the value and what would be accepted, and where it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use edgerun_model::{NodeId, Tier};
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

pub mod secret;

/// Prefix of the environment variables read as configuration.
pub const ENV_PREFIX: &str = "EDGERUN_";
/// Environment variables with the prefix that are not configuration keys.
const ENV_NOT_KEYS: &[&str] = &[
    "EDGERUN_LOG",
    "EDGERUN_URL",
    "EDGERUN_TOKEN",
    "EDGERUN_API_KEY",
    "EDGERUN_CA_CERT",
    "EDGERUN_OUTPUT",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub api: ApiConfig,
    pub cluster: ClusterConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub audit: AuditConfig,
    pub redis: RedisConfig,
    pub cache: CacheConfig,
    pub backup: BackupConfig,
    pub executor: ExecutorConfig,
    pub raft: RaftConfig,
    pub supervisor: SupervisorConfig,
    pub scheduler: SchedulerConfig,
    pub retention: RetentionConfig,
    pub alerts: AlertsConfig,
    pub log: LogConfig,
    pub debug: DebugConfig,
}

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

/// The REST server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// actix-web worker threads (0 = one per core).
    pub workers: usize,
    /// A request body not received in full within this long is answered 408 and its
    /// connection closed (a client trickling bytes does not hold a connection).
    pub body_timeout_ms: u64,
    /// PEM certificate chain: with `tls_key_file`, the API speaks HTTPS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            max_body_bytes: 16 * 1024 * 1024,
            workers: 0,
            body_timeout_ms: 10_000,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Voter,
    Learner,
}

/// One initial cluster member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: NodeId,
    /// host:port of its cluster RPC.
    pub rpc: String,
    /// host:port of its REST API.
    pub api: String,
}

/// Cluster membership and node-to-node RPC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub listen: SocketAddr,
    /// Address other nodes use to reach this node's RPC; defaults to `listen`.
    pub advertise_rpc: Option<String>,
    /// Address clients and peers use to reach this node's REST API; defaults to `api.listen`.
    pub advertise_api: Option<String>,
    pub role: Role,
    /// The initial members, this node included. Empty = a single-node cluster of this node.
    pub peers: Vec<Peer>,
    /// How often each node reports to the leader.
    pub heartbeat_ms: u64,
    /// A node silent for this long is marked down and its tasks go elsewhere.
    pub lease_ms: u64,
    /// The secret every member shares: cluster RPC connections prove it (HMAC handshake)
    /// and every frame carries a MAC under a key derived from it. Created (random, mode
    /// 0600) if missing; copy it to every node. Empty = `<data_dir>/cluster.secret`.
    pub secret_file: PathBuf,
    /// Cluster RPC to a peer fails at once after this many failures in a row, until a probe
    /// gets through (one per `breaker_cooldown_ms`). 0 = never.
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7201)),
            advertise_rpc: None,
            advertise_api: None,
            role: Role::Voter,
            peers: Vec::new(),
            heartbeat_ms: 500,
            lease_ms: 3_000,
            secret_file: PathBuf::new(),
            breaker_failures: 5,
            breaker_cooldown_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthRole {
    /// Everything, membership and debug switches included.
    Admin,
    /// Submit, cancel, requeue, jobs; and read.
    #[serde(alias = "submitter")]
    Operator,
    /// Read only.
    #[serde(alias = "reader")]
    Viewer,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub key_file: PathBuf,
    pub role: AuthRole,
}

/// JWT authentication (enforced by the security issue; the keys are accepted now).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// On by default: every /v1 call needs a bearer token.
    pub enabled: bool,
    /// HS256 key; created (random, mode 0600) if missing. Empty = `<data_dir>/jwt.secret`.
    /// Every node of a cluster must use the same secret (a token from one node is checked by
    /// any other), so point them at one shared file.
    pub jwt_secret_file: PathBuf,
    /// Each key file holds one API key (created with a random key, mode 0600, if missing).
    /// Empty = one admin key in `<data_dir>/admin.key`.
    pub api_keys: Vec<ApiKey>,
    /// Lifetime of an issued token, in seconds.
    pub token_ttl_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            jwt_secret_file: PathBuf::new(),
            api_keys: Vec::new(),
            token_ttl_secs: 3600,
        }
    }
}

/// Request rate limits per client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Per token subject (per client address when auth is off), after authentication.
    pub requests_per_second: u32,
    pub burst: u32,
    /// Per client address, before anything else is looked at (a token is not even
    /// checked beyond it): what keeps unauthenticated floods off the audit log and the CPU.
    pub address_requests_per_second: u32,
    pub address_burst: u32,
    /// Most pending tasks in the cluster; a submission beyond it is answered 429 and nothing
    /// of it is stored. 0 = no limit.
    pub max_pending: u64,
    /// Most pending tasks of one submitter (token subject, or client address without auth).
    /// 0 = no limit.
    pub max_pending_per_submitter: u64,
    /// How long an idempotency key is remembered (seconds). 0 = as long as its task is kept.
    pub idempotency_window_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            requests_per_second: 200,
            burst: 400,
            address_requests_per_second: 1000,
            address_burst: 2000,
            max_pending: 100_000,
            max_pending_per_submitter: 0,
            idempotency_window_secs: 86_400,
        }
    }
}

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

/// The audit log (`<data_dir>/audit.log`): rotated by size, a bounded number kept, so that
/// it can never fill the disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The file is rotated (`audit.log` → `audit.log.1` → ...) once it holds this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept beside the current one; older ones are removed.
    pub max_files: u32,
    /// Refusals of unauthenticated clients (no or bad token, bad API key, over the
    /// per-address limit) are written once per client address and reason in this many
    /// seconds, with a count, instead of one line each.
    pub refusal_window_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_bytes: 16 * 1024 * 1024,
            max_files: 4,
            refusal_window_secs: 60,
        }
    }
}

/// Optional Redis for the shared result cache and rate limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// e.g. `redis://127.0.0.1:6379`; empty = in-process cache and limits.
    pub url: String,
    /// A Redis call not answered within this falls back to the node-local way.
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            timeout_ms: 250,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum IsolationMode {
    Container,
    Process,
    Inproc,
    #[default]
    Auto,
}

/// How this node's Worker runs tasks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    pub isolation: IsolationMode,
    /// Tasks run at once on this node.
    pub slots: u32,
    /// Wall-clock limit of one attempt when the task gives none.
    pub default_timeout_ms: u64,
    /// Memory limit of one attempt when the task gives none.
    pub default_memory_mb: u32,
    /// Most processes one attempt may have (containers; enforced by the pids cgroup).
    pub default_pids: u32,
    /// Let exec tasks run without a container (process isolation: as `task_user`, without
    /// capabilities, under seccomp, in a cgroup). Off by default: an exec task is arbitrary
    /// code.
    pub allow_exec_without_container: bool,
    /// Let exec tasks run under process isolation even where the node cannot sandbox them
    /// (it does not run as root, so it cannot change uid; or the kernel has no seccomp):
    /// they then run as the node's own user and can read what it reads. Off by default.
    pub allow_unsandboxed_exec: bool,
    /// The user process-isolated tasks run as: a user name (looked up at start) or
    /// `uid:gid`. It must not be able to read the data dir (secrets, keys, the Raft log).
    pub task_user: String,
    /// Disk one attempt may write when the task gives no `resources.disk_mb`: the size of a
    /// container's writable `/work` (a tmpfs) and the largest file any task may write
    /// (`RLIMIT_FSIZE`).
    pub default_disk_mb: u32,
    /// Largest kernel result an attempt may return; a bigger one fails `result_too_large`.
    pub max_result_mb: u32,
    /// Let tasks that ask for it (`resources.network`) use the host's network; containers
    /// otherwise get only a loopback device.
    pub allow_network: bool,
    /// CPU this node offers to tasks, in millicores; 0 = 1000 per core of the machine.
    pub cpu_millis: u32,
    /// Memory this node offers to tasks, in MiB; 0 = 80% of the machine's memory.
    pub memory_mb: u32,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            isolation: IsolationMode::Auto,
            slots: 4,
            default_timeout_ms: 30_000,
            default_memory_mb: 512,
            default_pids: 128,
            allow_exec_without_container: false,
            allow_unsandboxed_exec: false,
            task_user: "nobody".into(),
            default_disk_mb: 256,
            max_result_mb: 16,
            allow_network: false,
            cpu_millis: 0,
            memory_mb: 0,
        }
    }
}

impl ExecutorConfig {
    /// `task_user` as (uid, gid): `uid:gid` numbers, or a user name looked up in the user
    /// database (getpwnam) for its uid and primary gid. Root (uid or gid 0) is refused: the
    /// point is a user without the node's rights.
    pub fn task_ids(&self) -> Result<(u32, u32), ConfigError> {
        let v = self.task_user.trim();
        let accepted = || {
            "a user name that exists on this host (e.g. nobody) or uid:gid numbers (e.g. \
             65534:65534), not root"
        };
        let refuse = || invalid("executor.task_user", &self.task_user, accepted());
        let ids = if let Some((u, g)) = v.split_once(':') {
            match (u.parse::<u32>(), g.parse::<u32>()) {
                (Ok(u), Ok(g)) => (u, g),
                _ => return Err(refuse()),
            }
        } else {
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(refuse());
            }
            match nix::unistd::User::from_name(v) {
                Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
                Ok(None) | Err(_) => return Err(refuse()),
            }
        };
        if ids.0 == 0 || ids.1 == 0 {
            return Err(refuse());
        }
        Ok(ids)
    }
}

/// Raft: timing, snapshots, batching, and the sled store that keeps the vote and results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    pub heartbeat_ms: u64,
    /// A follower that stops hearing from its leader campaigns after a timeout in this range;
    /// each node takes its own slot of it (1.5 heartbeats wide, by node id) so that two
    /// survivors never keep campaigning in the same instant.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_after_logs: u64,
    /// Log entries kept behind the last snapshot (for slow followers).
    pub keep_logs_after_snapshot: u64,
    /// sled's page cache (vote, markers, off-Raft results; the Raft log is in segment
    /// files); sled's own default (~1 GiB) is far too much for an edge box.
    pub cache_capacity_mb: u64,
    /// Most commands gathered into one Raft entry while an earlier write is in flight.
    pub max_batch: usize,
    /// Most log entries in one AppendEntries. openraft gives an append one heartbeat interval
    /// to finish, so a follower catching up must be fed in pieces it can store in that time.
    pub max_payload_entries: u64,
    /// Connecting to a peer's cluster RPC gives up after this long (peer unreachable).
    pub connect_timeout_ms: u64,
    /// A forwarded write, read-index or membership request gives up after this long.
    pub forward_timeout_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_ms: 50,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 550,
            snapshot_after_logs: 5000,
            keep_logs_after_snapshot: 1000,
            cache_capacity_mb: 64,
            max_batch: 4096,
            max_payload_entries: 64,
            connect_timeout_ms: 500,
            forward_timeout_ms: 10_000,
        }
    }
}

/// Restart policy of the node supervisor (Erlang's max restart intensity).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// More restarts of one actor than this within `window_secs` shut the node down.
    pub max_restarts: u32,
    pub window_secs: u64,
    /// First restart delay; doubles with each restart in the window up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: 5,
            window_secs: 30,
            backoff_initial_ms: 50,
            backoff_max_ms: 2_000,
        }
    }
}

/// Alert thresholds (checked every second by each node's Monitor); 0 turns a rule off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Alert while a node is marked down.
    pub node_down: bool,
    /// Alert while more than this many tasks are pending.
    pub pending_over: u64,
    /// Alert while more than this share of recently ended tasks failed or timed out...
    pub failure_rate_percent: f64,
    /// ... over this window ...
    pub failure_window_secs: u64,
    /// ... once at least this many ended in it.
    pub failure_min_finished: u64,
    /// Alert while the data dir's file system is fuller than this.
    pub disk_percent: f64,
    /// POST each change (firing, resolved) as JSON here; empty = no webhook.
    pub webhook_url: String,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            node_down: true,
            pending_over: 10_000,
            failure_rate_percent: 50.0,
            failure_window_secs: 300,
            failure_min_finished: 20,
            disk_percent: 90.0,
            webhook_url: String::new(),
        }
    }
}

/// Result memoization of deterministic kernels: in Redis when `redis.url` is set (shared by
/// every node), else in this process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// How long a result is kept.
    pub ttl_secs: u64,
    /// Results longer than this (bytes of JSON) are not kept.
    pub max_entry_bytes: usize,
    /// Most results kept in the in-process cache (without Redis).
    pub local_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            ttl_secs: 3600,
            max_entry_bytes: 1024 * 1024,
            local_entries: 10_000,
        }
    }
}

/// Scheduled backups of the replicated state, written by this node into its own directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Cron with seconds (`0 0 3 * * *`: 03:00 every day); empty = no scheduled backups.
    pub schedule: String,
    /// IANA time zone the schedule is read in.
    pub timezone: String,
    /// Where they go; empty = `<data_dir>/backups`.
    pub dir: PathBuf,
    /// Newest backups kept; older ones are removed.
    pub keep: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            schedule: String::new(),
            timezone: "UTC".into(),
            dir: PathBuf::new(),
            keep: 7,
        }
    }
}

/// The node's log (stderr).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Which lines to show, in tracing's filter syntax (`info`, `warn,edgerun_actors=debug`).
    /// `info,edgerun::trace=debug` adds one line per step of every task, each with the
    /// task's trace id. `EDGERUN_LOG` (or `RUST_LOG`) replaces it when set. Changeable while
    /// the node runs: `PUT /v1/admin/log`, or edit the file and send SIGHUP.
    pub filter: String,
    /// `text` (one readable line per event) or `json` (one JSON object per line).
    pub format: LogFormat,
}

/// The filter a node logs with unless told otherwise.
pub const DEFAULT_LOG_FILTER: &str =
    "info,openraft=warn,sled=warn,actix_server=warn,actix_web=warn";

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: DEFAULT_LOG_FILTER.into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Switches for tests. Off by default; never turn them on in production.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Enables `POST /v1/debug/fail/{actor}`, which makes that actor fail (supervision tests).
    pub fault_injection: bool,
    /// Every attempt waits this long before its kernel runs, so failure tests can catch tasks
    /// mid-run. 0 (the default) = no delay.
    pub kernel_delay_ms: u64,
}

/// Where the layers come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A TOML file; it must exist if given.
    pub file: Option<PathBuf>,
    /// Environment variables (all of them; those without the prefix are ignored).
    pub env: Vec<(String, String)>,
    /// `key=value` overrides from flags, applied last, in order.
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// The process's real environment.
    pub fn process_env() -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Parse(String),
    #[error("bad flag {flag:?}: expected key=value, e.g. executor.slots=8")]
    Flag { flag: String },
    #[error("bad environment variable {var}: expected {ENV_PREFIX}<SECTION>_<KEY>, e.g. EDGERUN_API_LISTEN")]
    EnvName { var: String },
    #[error("invalid value for {key}: {value:?}; accepted: {accepted}")]
    Invalid {
        key: &'static str,
        value: String,
        accepted: String,
    },
}

/// One named layer of keys (an env var, a flag): errors name it.
struct Layer {
    name: String,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn layer(name: String, key: &str, raw: &str) -> Layer {
    // A TOML value (number, string, array, inline table), else the text as a plain string.
    // Not figment's own `Value::from_str`: it panics on some escapes in quoted strings
    // (found by the fuzz test raft/tests/t90_fuzz.rs with `"ে\ "`).
    let value: Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .and_then(|v| Value::serialize(v).ok())
            .unwrap_or_else(|| Value::from(raw.to_string())),
        Err(_) => Value::from(raw.to_string()),
    };
    Layer {
        name,
        dict: match figment::util::nest(key, value) {
            Value::Dict(_, d) => d,
            _ => Dict::new(),
        },
    }
}

/// Merge the layers, check types and unknown keys, then validate the values.
pub fn load(sources: &Sources) -> Result<NodeConfig, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(NodeConfig::default()));
    if let Some(path) = &sources.file {
        // Toml::file would silently treat a missing file as empty: check first.
        std::fs::metadata(path).map_err(|e| ConfigError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        fig = fig.merge(Toml::file_exact(path));
    }
    for (var, raw) in &sources.env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_KEYS.contains(&var.as_str()) {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = rest.split_once('_') else {
            return Err(ConfigError::EnvName { var: var.clone() });
        };
        let dotted = format!("{section}.{key}");
        fig = fig.merge(layer(format!("environment variable {var}"), &dotted, raw));
    }
    for (key, raw) in &sources.overrides {
        fig = fig.merge(layer(format!("flag --set {key}={raw}"), key, raw));
    }
    let cfg: NodeConfig = fig.extract().map_err(|e| ConfigError::Parse(describe(e)))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Parse one `key=value` flag.
pub fn parse_override(flag: &str) -> Result<(String, String), ConfigError> {
    match flag.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(ConfigError::Flag {
            flag: flag.to_string(),
        }),
    }
}

/// figment's errors, one per line, with the key and where the value came from.
fn describe(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let mut s = match &e.kind {
                // figment's own text quotes the list twice (``a` or `b``).
                figment::error::Kind::UnknownVariant(found, expected) => {
                    format!("unknown value `{found}`, accepted: {}", quoted(expected))
                }
                figment::error::Kind::UnknownField(found, expected) => {
                    format!("unknown key `{found}`, accepted: {}", quoted(expected))
                }
                other => other.to_string(),
            };
            if !e.path.is_empty() {
                s = format!("{s} for key {}", e.path.join("."));
            }
            if let Some(md) = &e.metadata {
                s = match &md.source {
                    Some(src) => format!("{s} (from {} {src})", md.name),
                    None => format!("{s} (from {})", md.name),
                };
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `a`, `b` or `c`.
fn quoted(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match q.split_last() {
        None => "none".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn invalid(key: &'static str, value: impl ToString, accepted: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        accepted: accepted.into(),
    }
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

impl NodeConfig {
    /// Check values that types alone cannot (ranges, cross-field rules).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.id == 0 {
            return Err(invalid("node.id", 0, "an integer from 1 to 2^64-1"));
        }
        if self.cluster.breaker_failures > 0 && self.cluster.breaker_cooldown_ms == 0 {
            return Err(invalid(
                "cluster.breaker_cooldown_ms",
                0,
                "milliseconds, at least 1 (or cluster.breaker_failures = 0)",
            ));
        }
        if !self.backup.schedule.is_empty() && self.backup.keep == 0 {
            return Err(invalid("backup.keep", 0, "at least 1"));
        }
        if self.cache.enabled && self.cache.ttl_secs == 0 {
            return Err(invalid("cache.ttl_secs", 0, "seconds, at least 1"));
        }
        if self.cache.enabled && self.cache.local_entries == 0 {
            return Err(invalid(
                "cache.local_entries",
                0,
                "at least 1 (or cache.enabled = false)",
            ));
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(invalid("node.data_dir", "", "a directory path"));
        }
        if !(1..=1024).contains(&self.executor.slots) {
            return Err(invalid("executor.slots", self.executor.slots, "1 to 1024"));
        }
        if self.executor.default_timeout_ms == 0 {
            return Err(invalid(
                "executor.default_timeout_ms",
                0,
                "a positive number of milliseconds",
            ));
        }
        if !(16..=1_048_576).contains(&self.executor.default_memory_mb) {
            return Err(invalid(
                "executor.default_memory_mb",
                self.executor.default_memory_mb,
                "16 to 1048576",
            ));
        }
        if !(8..=65_536).contains(&self.executor.default_pids) {
            return Err(invalid(
                "executor.default_pids",
                self.executor.default_pids,
                "8 to 65536",
            ));
        }
        if !(1..=1_048_576).contains(&self.executor.default_disk_mb) {
            return Err(invalid(
                "executor.default_disk_mb",
                self.executor.default_disk_mb,
                "1 to 1048576",
            ));
        }
        if !(1..=4096).contains(&self.executor.max_result_mb) {
            return Err(invalid(
                "executor.max_result_mb",
                self.executor.max_result_mb,
                "1 to 4096",
            ));
        }
        self.executor.task_ids()?;
        if self.scheduler.preemption_min_gap < 1 {
            return Err(invalid(
                "scheduler.preemption_min_gap",
                self.scheduler.preemption_min_gap,
                "1 to 100",
            ));
        }
        if !(1..=30 * 86_400).contains(&self.auth.token_ttl_secs) {
            return Err(invalid(
                "auth.token_ttl_secs",
                self.auth.token_ttl_secs,
                "1 to 2592000 (30 days)",
            ));
        }
        if self.retention.inline_result_max_bytes < 256 {
            return Err(invalid(
                "retention.inline_result_max_bytes",
                self.retention.inline_result_max_bytes,
                "at least 256",
            ));
        }
        if self.retention.interval_ms < 100 {
            return Err(invalid(
                "retention.interval_ms",
                self.retention.interval_ms,
                "at least 100",
            ));
        }
        if self.api.max_body_bytes < 1024 {
            return Err(invalid(
                "api.max_body_bytes",
                self.api.max_body_bytes,
                "at least 1024",
            ));
        }
        if self.api.workers > 256 {
            return Err(invalid(
                "api.workers",
                self.api.workers,
                "0 (one per core) to 256",
            ));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_ms {
            return Err(invalid(
                "raft.election_timeout_min_ms",
                r.election_timeout_min_ms,
                format!(
                    "more than raft.heartbeat_ms ({}), which must be positive",
                    r.heartbeat_ms
                ),
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(invalid(
                "raft.election_timeout_max_ms",
                r.election_timeout_max_ms,
                format!(
                    "more than raft.election_timeout_min_ms ({})",
                    r.election_timeout_min_ms
                ),
            ));
        }
        if r.cache_capacity_mb == 0 || r.cache_capacity_mb > 65_536 {
            return Err(invalid(
                "raft.cache_capacity_mb",
                r.cache_capacity_mb,
                "1 to 65536",
            ));
        }
        if r.snapshot_after_logs == 0 {
            return Err(invalid(
                "raft.snapshot_after_logs",
                0,
                "a positive number of entries",
            ));
        }
        if r.connect_timeout_ms == 0 || r.forward_timeout_ms == 0 {
            return Err(invalid(
                "raft.connect_timeout_ms",
                r.connect_timeout_ms,
                "positive, with a positive raft.forward_timeout_ms",
            ));
        }
        let c = &self.cluster;
        if c.heartbeat_ms == 0 || c.lease_ms < 2 * c.heartbeat_ms {
            return Err(invalid(
                "cluster.lease_ms",
                c.lease_ms,
                format!(
                    "at least twice cluster.heartbeat_ms ({}), which must be positive",
                    c.heartbeat_ms
                ),
            ));
        }
        if !(1..=1_000_000).contains(&r.max_batch) {
            return Err(invalid("raft.max_batch", r.max_batch, "1 to 1000000"));
        }
        if !(1..=10_000).contains(&r.max_payload_entries) {
            return Err(invalid(
                "raft.max_payload_entries",
                r.max_payload_entries,
                "1 to 10000",
            ));
        }
        if self.limits.requests_per_second == 0 {
            return Err(invalid(
                "limits.requests_per_second",
                0,
                "a positive number",
            ));
        }
        if self.limits.burst < self.limits.requests_per_second.min(1) {
            return Err(invalid(
                "limits.burst",
                self.limits.burst,
                "a positive number",
            ));
        }
        if self.limits.address_requests_per_second == 0 {
            return Err(invalid(
                "limits.address_requests_per_second",
                0,
                "a positive number",
            ));
        }
        if self.limits.address_burst == 0 {
            return Err(invalid("limits.address_burst", 0, "a positive number"));
        }
        if self.audit.max_bytes < 4096 {
            return Err(invalid(
                "audit.max_bytes",
                self.audit.max_bytes,
                "at least 4096",
            ));
        }
        if self.audit.max_files > 1000 {
            return Err(invalid(
                "audit.max_files",
                self.audit.max_files,
                "0 to 1000",
            ));
        }
        if self.audit.refusal_window_secs > 86_400 {
            return Err(invalid(
                "audit.refusal_window_secs",
                self.audit.refusal_window_secs,
                "0 (a line per refusal) to 86400",
            ));
        }
        if !(100..=600_000).contains(&self.api.body_timeout_ms) {
            return Err(invalid(
                "api.body_timeout_ms",
                self.api.body_timeout_ms,
                "100 to 600000",
            ));
        }
        let url = &self.redis.url;
        if !(url.is_empty() || url.starts_with("redis://")) {
            // Never echo the URL: it may carry a password.
            return Err(invalid(
                "redis.url",
                "(not shown: it may hold a password)",
                "empty, or redis://[:password@]host:port[/db]",
            ));
        }
        if self.api.tls_cert_file.is_some() != self.api.tls_key_file.is_some() {
            return Err(invalid(
                "api.tls_cert_file",
                "(only one of the pair is set)",
                "both api.tls_cert_file and api.tls_key_file, or neither",
            ));
        }
        let a = &self.alerts;
        if !(0.0..=100.0).contains(&a.failure_rate_percent) {
            return Err(invalid(
                "alerts.failure_rate_percent",
                a.failure_rate_percent,
                "0 (off) to 100",
            ));
        }
        if !(0.0..=100.0).contains(&a.disk_percent) {
            return Err(invalid(
                "alerts.disk_percent",
                a.disk_percent,
                "0 (off) to 100",
            ));
        }
        if a.failure_window_secs == 0 {
            return Err(invalid(
                "alerts.failure_window_secs",
                a.failure_window_secs,
                "a positive number of seconds",
            ));
        }
        if !(a.webhook_url.is_empty()
            || a.webhook_url.starts_with("http://")
            || a.webhook_url.starts_with("https://"))
        {
            return Err(invalid(
                "alerts.webhook_url",
                &a.webhook_url,
                "empty, or an http:// or https:// URL",
            ));
        }
        if self.redis.timeout_ms == 0 || self.redis.timeout_ms > 60_000 {
            return Err(invalid(
                "redis.timeout_ms",
                self.redis.timeout_ms,
                "1 to 60000",
            ));
        }
        let s = &self.supervisor;
        if s.max_restarts == 0 || s.window_secs == 0 {
            return Err(invalid(
                "supervisor.max_restarts",
                s.max_restarts,
                "positive, with a positive supervisor.window_secs",
            ));
        }
        if s.backoff_max_ms < s.backoff_initial_ms {
            return Err(invalid(
                "supervisor.backoff_max_ms",
                s.backoff_max_ms,
                "at least supervisor.backoff_initial_ms",
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in &self.cluster.peers {
            if p.id == 0 || !ids.insert(p.id) {
                return Err(invalid(
                    "cluster.peers",
                    format!("id {}", p.id),
                    "unique ids from 1",
                ));
            }
            if !is_host_port(&p.rpc) || !is_host_port(&p.api) {
                return Err(invalid(
                    "cluster.peers",
                    format!("{{ id = {}, rpc = {:?}, api = {:?} }}", p.id, p.rpc, p.api),
                    "host:port addresses",
                ));
            }
        }
        if !self.cluster.peers.is_empty()
            && self.cluster.role == Role::Voter
            && !ids.contains(&self.node.id)
        {
            return Err(invalid(
                "cluster.peers",
                format!("ids {ids:?}"),
                format!(
                    "a list that includes this voter (node.id = {})",
                    self.node.id
                ),
            ));
        }
        for (key, addr) in [
            ("cluster.advertise_rpc", &self.cluster.advertise_rpc),
            ("cluster.advertise_api", &self.cluster.advertise_api),
        ] {
            if let Some(a) = addr {
                if !is_host_port(a) {
                    return Err(invalid(key, a, "host:port"));
                }
            }
        }
        Ok(())
    }

    /// The RPC address peers should use for this node.
    pub fn advertised_rpc(&self) -> String {
        self.cluster
            .advertise_rpc
            .clone()
            .unwrap_or_else(|| self.cluster.listen.to_string())
    }

    /// The REST address clients should use for this node.
    pub fn advertised_api(&self) -> String {
        self.cluster
            .advertise_api
            .clone()
            .unwrap_or_else(|| self.api.listen.to_string())
    }

    pub fn data_dir(&self) -> &Path {
        &self.node.data_dir
    }

    /// The cluster RPC secret's file.
    pub fn cluster_secret_file(&self) -> PathBuf {
        if self.cluster.secret_file.as_os_str().is_empty() {
            self.node.data_dir.join("cluster.secret")
        } else {
            self.cluster.secret_file.clone()
        }
    }
}

#[cfg(test)]
mod tests;
