//! `[executor]`: how tasks run (isolation, slots, default resources, sandbox ids).

use serde::{Deserialize, Serialize};

use crate::{invalid, ConfigError};

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
    /// Largest WebAssembly module `POST /v1/modules` takes (413 beyond). Modules live in the
    /// replicated state.
    pub max_module_bytes: usize,
    /// The most memory a wasm task may have (its `resources.memory_mb` is capped at this);
    /// sizes the wasm runtime's pool.
    pub wasm_max_memory_mb: u32,
    /// Where HTTP tasks may call: networks (`10.0.0.0/8`) and `host:port` pairs, checked on
    /// the address connected to (every redirect hop too). Empty (the default) allows none, so
    /// that a task cannot reach the node's own API or a metadata service unless allowed.
    pub http_allow: Vec<String>,
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
            max_module_bytes: 8 * 1024 * 1024,
            wasm_max_memory_mb: 1024,
            http_allow: Vec::new(),
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

impl ExecutorConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1024).contains(&self.slots) {
            return Err(invalid("executor.slots", self.slots, "1 to 1024"));
        }
        if self.default_timeout_ms == 0 {
            return Err(invalid(
                "executor.default_timeout_ms",
                0,
                "a positive number of milliseconds",
            ));
        }
        if !(16..=1_048_576).contains(&self.default_memory_mb) {
            return Err(invalid(
                "executor.default_memory_mb",
                self.default_memory_mb,
                "16 to 1048576",
            ));
        }
        if !(8..=65_536).contains(&self.default_pids) {
            return Err(invalid(
                "executor.default_pids",
                self.default_pids,
                "8 to 65536",
            ));
        }
        if !(1..=1_048_576).contains(&self.default_disk_mb) {
            return Err(invalid(
                "executor.default_disk_mb",
                self.default_disk_mb,
                "1 to 1048576",
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_module_bytes) {
            return Err(invalid(
                "executor.max_module_bytes",
                self.max_module_bytes,
                "1024 to 67108864",
            ));
        }
        if let Err(e) = crate::allow::parse(&self.http_allow) {
            return Err(invalid(
                "executor.http_allow",
                e,
                "networks (10.0.0.0/8) and host:port pairs",
            ));
        }
        if !(1..=4096).contains(&self.wasm_max_memory_mb) {
            return Err(invalid(
                "executor.wasm_max_memory_mb",
                self.wasm_max_memory_mb,
                "1 to 4096 (a wasm32 memory is at most 4 GiB)",
            ));
        }
        if !(1..=4096).contains(&self.max_result_mb) {
            return Err(invalid(
                "executor.max_result_mb",
                self.max_result_mb,
                "1 to 4096",
            ));
        }
        self.task_ids()?;
        Ok(())
    }
}
