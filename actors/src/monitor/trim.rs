//! Memory handed back: every [`TRIM_EVERY`], on a blocking thread, the allocator returns its
//! free pages to the system, so that resident memory follows what the node holds instead of
//! its highest peak (glibc keeps freed arenas otherwise). `malloc_trim` is reached through the
//! cxx bridge (ARCHITECTURE.md says why).

use std::time::{Duration, Instant};

/// How often freed memory is handed back.
const TRIM_EVERY: Duration = Duration::from_secs(10);

pub(super) struct Trimmer {
    /// When free memory was last handed back.
    last: Instant,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Trimmer {
    pub(super) fn new() -> Self {
        Trimmer {
            last: Instant::now(),
            running: None,
        }
    }

    /// Hand freed memory back if it is time (and no trim is running).
    pub(super) fn tick(&mut self) {
        if self.last.elapsed() < TRIM_EVERY
            || self.running.as_ref().is_some_and(|h| !h.is_finished())
        {
            return;
        }
        self.last = Instant::now();
        self.running = Some(tokio::task::spawn_blocking(|| {
            let started = Instant::now();
            let released = edgerun_cpp::release_free_memory();
            tracing::trace!(
                released,
                ms = started.elapsed().as_millis() as u64,
                "free memory handed back"
            );
        }));
    }
}
