//! One `edgerun` process under a harness: started with its stderr (and, if asked, stdout) in
//! a log file, signalled by name, stopped cleanly or killed with -9 and reaped, and never left
//! running when the harness lets go of it (a stopped one is continued first, or it would
//! not die).

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process and what happened to it.
#[derive(Default)]
pub struct NodeProcess {
    child: Option<Child>,
}

/// Where a start's output goes.
pub enum Log<'a> {
    /// A new file (truncated) for this start: stderr in it, stdout dropped.
    Fresh(&'a Path),
    /// Appended to one file across restarts, stdout and stderr both.
    Append(&'a Path),
}

impl NodeProcess {
    /// Start `cmd` (stdin closed) with its output going to `log`. A process still running
    /// is killed first.
    pub fn spawn(&mut self, mut cmd: Command, log: Log<'_>) -> std::io::Result<u32> {
        self.kill9();
        let (out, err) = match log {
            Log::Fresh(p) => (Stdio::null(), Stdio::from(std::fs::File::create(p)?)),
            Log::Append(p) => {
                let f = OpenOptions::new().create(true).append(true).open(p)?;
                (Stdio::from(f.try_clone()?), Stdio::from(f))
            }
        };
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn()?;
        let pid = child.id();
        self.child = Some(child);
        Ok(pid)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Started and not exited (a stopped process counts as running).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// How the process ended, if it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Send a signal by name (`STOP`, `CONT`, `TERM`, `INT`, ...).
    pub fn signal(&self, name: &str) -> Result<(), String> {
        let pid = self.pid().ok_or("the process is not running")?;
        let st = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .map_err(|e| format!("kill -{name} {pid}: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("kill -{name} {pid}: {st}"))
        }
    }

    /// Wait up to `within` for the process to exit by itself; its status, or none.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            match self.child.as_mut()?.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`; reaped either way. How it
    /// ended when it exited by itself (or had already), none when it had to be killed or
    /// was never started.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.child.as_ref()?;
        if self.is_running() {
            let _ = self.signal("CONT");
            let _ = self.signal("TERM");
        }
        match self.wait_exit(grace) {
            Some(st) => {
                self.child = None;
                Some(st)
            }
            None => {
                self.kill9();
                None
            }
        }
    }

    /// kill -9 (continuing a stopped process first) and reap. Nothing if not running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = Command::new("kill")
                    .args(["-CONT", &c.id().to_string()])
                    .status();
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_logged_signalled_and_never_left_behind() {
        let dir = std::env::temp_dir().join(format!("testkit-process-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let log = dir.join("p.log");
        let mut p = NodeProcess::default();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started >&2; exec sleep 600"]);
        let pid = p
            .spawn(cmd, Log::Fresh(&log))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(p.is_running());
        // Its stderr reaches the log (waited for before the STOP, which would hold it back).
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&log).unwrap_or_default().trim() != "started" {
            assert!(Instant::now() < deadline, "nothing in the log");
            std::thread::sleep(Duration::from_millis(10));
        }
        p.signal("STOP").unwrap_or_else(|e| panic!("{e}"));
        // A stopped process is still killed (continued first) and reaped.
        p.kill9();
        assert!(!p.is_running());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is still there"
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap 'exit 3' TERM; while :; do sleep 0.05; done"]);
        p.spawn(cmd, Log::Append(&log))
            .unwrap_or_else(|e| panic!("{e}"));
        // Give the shell a moment to set its trap: wait until it has a child (the sleep).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(format!(
            "/proc/{}/task/{}/children",
            p.pid().unwrap_or(0),
            p.pid().unwrap_or(0)
        ))
        .is_ok_and(|c| !c.trim().is_empty())
        {
            assert!(
                Instant::now() < deadline,
                "the shell never started its loop"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let st = p.stop(Duration::from_secs(30));
        assert_eq!(st.and_then(|s| s.code()), Some(3), "{st:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
