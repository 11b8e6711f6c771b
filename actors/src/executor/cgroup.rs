//! Cgroups of tasks: the per-attempt cgroup of process isolation, and killing and removing
//! a task's cgroup tree (process and container isolation alike).
//!
//! ```text
//!  /sys/fs/cgroup/{pids,memory}/<parent>/<attempt>   (v1: one dir per controller used)
//!  /sys/fs/cgroup/<parent>/<attempt>                  (v2: the unified hierarchy)
//! ```
//!
//! `<parent>` is the same relative path in every hierarchy (the node's own memory cgroup,
//! then `edgerun-n<id>-<hash of data dir>`), as libcontainer does for containers. The
//! process shim writes its own pid into each attempt dir's `cgroup.procs` before it drops
//! its privileges; everything it starts stays there (a task cannot leave: the cgroupfs is
//! root's). At the end of the attempt [`kill_and_remove`] kills what is left (`cgroup.kill`
//! on v2, else SIGKILL to every pid until the dir is empty) and removes the dirs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup path of this process for the memory controller (v1) or the unified hierarchy.
pub fn own_cgroup() -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("/"),
        );
        if controllers.split(',').any(|c| c == "memory") {
            return path.to_string();
        }
        if controllers.is_empty() {
            unified = Some(path.to_string());
        }
    }
    unified.unwrap_or_else(|| "/".into())
}

/// Which hierarchy this host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2 only (`/sys/fs/cgroup/cgroup.controllers`).
    Unified,
    /// cgroup v1 controllers under `/sys/fs/cgroup/<controller>` (with or without a hybrid
    /// `unified` mount).
    Legacy,
}

/// The layout of `/sys/fs/cgroup`, or `None` where there are no cgroups to use.
pub fn layout() -> Option<Layout> {
    let root = Path::new(ROOT);
    if root.join("cgroup.controllers").is_file() {
        Some(Layout::Unified)
    } else if root.join("pids").join("cgroup.procs").is_file()
        || root.join("memory").join("cgroup.procs").is_file()
    {
        Some(Layout::Legacy)
    } else {
        None
    }
}

/// One attempt's cgroup: its dirs (one per v1 controller used, or one on v2).
#[derive(Debug)]
pub struct AttemptCgroup {
    /// Relative to each hierarchy's root: what [`kill_and_remove`] takes.
    pub rel: String,
    /// Absolute dirs the task's first process joins.
    pub dirs: Vec<PathBuf>,
    memory_dir: Option<PathBuf>,
    /// Limits that could not be set here (said in the attempt's log line once).
    pub missing: Vec<&'static str>,
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

impl AttemptCgroup {
    /// Make `<parent>/<name>` with `pids.max = pids` and a memory limit of `memory_bytes`.
    /// Blocking (cgroupfs writes).
    pub fn create(
        parent: &str,
        name: &str,
        memory_bytes: u64,
        pids: u32,
    ) -> Result<AttemptCgroup, String> {
        let rel = format!("{}/{name}", parent.trim_end_matches('/'));
        let rel_dir = rel.trim_start_matches('/').to_string();
        let mut cg = AttemptCgroup {
            rel,
            dirs: Vec::new(),
            memory_dir: None,
            missing: Vec::new(),
        };
        let made = match layout() {
            None => Err("no cgroup hierarchy under /sys/fs/cgroup".to_string()),
            Some(Layout::Unified) => cg.create_unified(parent, &rel_dir, memory_bytes, pids),
            Some(Layout::Legacy) => cg.create_legacy(&rel_dir, memory_bytes, pids),
        };
        match made {
            Ok(()) => Ok(cg),
            Err(e) => {
                kill_and_remove(&cg.rel);
                Err(e)
            }
        }
    }

    fn create_unified(
        &mut self,
        parent: &str,
        rel_dir: &str,
        memory_bytes: u64,
        pids: u32,
    ) -> Result<(), String> {
        let root = Path::new(ROOT);
        let parent_dir = root.join(parent.trim_start_matches('/'));
        std::fs::create_dir_all(&parent_dir)
            .map_err(|e| format!("creating {}: {e}", parent_dir.display()))?;
        // Delegate the controllers to the attempts where the hierarchy allows it (it does not
        // where the node's own cgroup holds processes and has none enabled: then the attempt
        // cgroup still tracks and kills every process, without limits).
        if let Some(up) = parent_dir.parent() {
            let _ = write(&up.join("cgroup.subtree_control"), "+memory +pids");
        }
        let _ = write(&parent_dir.join("cgroup.subtree_control"), "+memory +pids");
        let dir = root.join(rel_dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if write(&dir.join("pids.max"), &pids.to_string()).is_err() {
            self.missing.push("pids");
        }
        if write(&dir.join("memory.max"), &memory_bytes.to_string()).is_ok() {
            let _ = write(&dir.join("memory.swap.max"), "0");
            self.memory_dir = Some(dir.clone());
        } else {
            self.missing.push("memory");
        }
        self.dirs.push(dir);
        Ok(())
    }

    fn create_legacy(&mut self, rel_dir: &str, memory_bytes: u64, pids: u32) -> Result<(), String> {
        let root = Path::new(ROOT);
        for controller in ["pids", "memory"] {
            let base = root.join(controller);
            if !base.join("cgroup.procs").is_file() {
                self.missing.push(controller);
                continue;
            }
            let dir = base.join(rel_dir);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let set = match controller {
                "pids" => write(&dir.join("pids.max"), &pids.to_string()),
                _ => write(
                    &dir.join("memory.limit_in_bytes"),
                    &memory_bytes.to_string(),
                ),
            };
            set.map_err(|e| format!("setting the {controller} limit in {}: {e}", dir.display()))?;
            if controller == "memory" {
                self.memory_dir = Some(dir.clone());
            }
            self.dirs.push(dir);
        }
        if self.dirs.is_empty() {
            return Err("neither the pids nor the memory controller is mounted".into());
        }
        Ok(())
    }

    /// How many times the kernel's OOM killer struck in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = &self.memory_dir else {
            return 0;
        };
        for file in ["memory.events", "memory.oom_control"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                for line in text.lines() {
                    if let Some(n) = line.strip_prefix("oom_kill ") {
                        return n.trim().parse().unwrap_or(0);
                    }
                }
            }
        }
        0
    }
}

/// The dirs of `rel` under every hierarchy that has it (v1 controllers, a hybrid
/// `unified`, or the v2 root).
fn dirs_of(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    let mut roots: Vec<PathBuf> = std::fs::read_dir(ROOT)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").is_file())
                .collect()
        })
        .unwrap_or_default();
    roots.push(PathBuf::from(ROOT));
    roots
        .into_iter()
        .map(|r| r.join(rel))
        .filter(|d| !rel.is_empty() && d.is_dir())
        .collect()
}

/// Every dir under `dir`, children before their parents, `dir` last.
fn depth_first(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                depth_first(&p, out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

/// One pass: signal every process of `rel`'s tree to die (`cgroup.kill` where the kernel has
/// it, else SIGKILL to each pid listed). Does not wait.
pub fn kill_all(rel: &str) {
    for top in dirs_of(rel) {
        let mut all = Vec::new();
        depth_first(&top, &mut all);
        for dir in all {
            let killed = dir.join("cgroup.kill");
            if killed.is_file() && write(&killed, "1").is_ok() {
                continue;
            }
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    if pid > 0 {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
        }
    }
}

/// Kill every process of `rel`'s tree, wait until the cgroups are empty, and remove them.
/// Blocking; gives up after a few seconds (what is left is removed at the next start).
/// Returns what is left, empty on success.
pub fn kill_and_remove(rel: &str) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut nap = Duration::from_millis(1);
    loop {
        kill_all(rel);
        let mut left = Vec::new();
        for top in dirs_of(rel) {
            let mut all = Vec::new();
            depth_first(&top, &mut all);
            for dir in all {
                if std::fs::remove_dir(&dir).is_err() && dir.is_dir() {
                    left.push(dir);
                }
            }
        }
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_touched_for_an_empty_path() {
        assert!(dirs_of("").is_empty());
        assert!(dirs_of("/").is_empty());
        assert!(kill_and_remove("/no/such/edgerun/cgroup").is_empty());
    }
}
