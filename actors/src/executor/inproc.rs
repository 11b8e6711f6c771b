//! `inproc`: kernels on a blocking thread inside the node. No isolation at all: a kernel that
//! runs past its timeout keeps its thread until it returns. Exists for benchmarks and tests.

use std::sync::Arc;

use edgerun_cpp::{KernelError, Kernels};
use edgerun_model::{Isolation, Outcome, Work};

use super::{failed, Executor, Job, RunFuture};

pub struct InprocExecutor {
    pub kernels: Arc<dyn Kernels>,
}

pub(crate) fn kernel_failure(e: KernelError) -> Outcome {
    // Kernels are deterministic: the same input fails the same way again.
    failed(e.code(), e.to_string(), false)
}

impl Executor for InprocExecutor {
    fn isolation(&self) -> Isolation {
        Isolation::Inproc
    }

    fn run(&self, job: Job) -> RunFuture<'_> {
        Box::pin(async move {
            let (kernel, input) = match job.work {
                Work::Kernel { kernel, input } => (kernel, input),
                Work::Exec { .. } => {
                    return failed(
                        "unsupported",
                        "exec tasks need process or container isolation; this node runs inproc",
                        false,
                    )
                }
            };
            let kernels = self.kernels.clone();
            let run = tokio::task::spawn_blocking(move || kernels.run(&kernel, &input));
            match tokio::time::timeout(job.timeout, run).await {
                Ok(Ok(Ok(result))) => Outcome::Succeeded { result },
                Ok(Ok(Err(e))) => kernel_failure(e),
                Ok(Err(join)) => failed(
                    "worker_crashed",
                    format!("the kernel thread died: {join}"),
                    true,
                ),
                Err(_) => Outcome::TimedOut {
                    after_ms: job.timeout.as_millis() as u64,
                },
            }
        })
    }
}
