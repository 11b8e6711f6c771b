//! Scheduled backups of the replicated state (`[backup]`): when one is due, the Monitor's tick
//! writes it on a blocking thread (one at a time) and keeps the newest `keep`.

use edgerun_model::NodeId;
use edgerun_raft::StateView;

use crate::now_ms;

/// When and where this node writes backups of the replicated state.
#[derive(Clone)]
pub struct BackupPlan {
    pub schedule: cron::Schedule,
    /// The schedule's time zone.
    pub tz: chrono_tz::Tz,
    pub dir: std::path::PathBuf,
    /// Newest backups kept.
    pub keep: usize,
}

impl BackupPlan {
    /// The next time after `after_ms` (ms since the epoch).
    fn next_after(&self, after_ms: u64) -> Option<u64> {
        crate::scheduler::cron::next_slot(&self.schedule, self.tz, after_ms)
    }
}

/// A plan and where it stands.
pub(super) struct ScheduledBackups {
    plan: BackupPlan,
    /// When the next backup is due (ms since the epoch).
    next: Option<u64>,
    /// The backup being written, if any (one at a time).
    writing: Option<tokio::task::JoinHandle<()>>,
}

impl ScheduledBackups {
    pub(super) fn new(plan: BackupPlan) -> Self {
        ScheduledBackups {
            plan,
            next: None,
            writing: None,
        }
    }

    /// Start a backup when one is due (and none is being written).
    pub(super) fn tick(&mut self, view: &StateView, id: NodeId) {
        let now = now_ms();
        let Some(due) = self.next else {
            self.next = self.plan.next_after(now);
            return;
        };
        if now < due || self.writing.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.next = self.plan.next_after(now);
        let (view, plan) = (view.clone(), self.plan.clone());
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let res = edgerun_raft::backup::take(&view, id, now_ms()).and_then(|(info, bytes)| {
                edgerun_raft::backup::write_rotated(&plan.dir, &info, &bytes, plan.keep)
                    .map(|p| (info, p))
            });
            match res {
                Ok((info, path)) => tracing::info!(
                    file = %path.display(),
                    bytes = info.bytes,
                    tasks = info.tasks,
                    last_index = info.last_index,
                    ms = started.elapsed().as_millis() as u64,
                    "scheduled backup written"
                ),
                Err(e) => {
                    tracing::error!(dir = %plan.dir.display(), error = %e, "scheduled backup failed")
                }
            }
        }));
    }
}
