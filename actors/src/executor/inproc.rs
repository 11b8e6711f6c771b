//! `inproc`: kernels on a blocking thread inside the node. No isolation at all: a kernel that
//! runs past its timeout keeps its thread until it returns. Exists for benchmarks and tests.
//! A result over `max_result` bytes fails `result_too_large` (it was made in the node's
//! memory, but is neither kept nor stored).

use std::sync::Arc;

use edgerun_cpp::{KernelError, Kernels};
use edgerun_model::{Isolation, Outcome, Work};

use super::{failed, result_too_large, Executor, Job, RunFuture};

pub struct InprocExecutor {
    pub kernels: Arc<dyn Kernels>,
    /// Largest result accepted, in bytes (`executor.max_result_mb`).
    pub max_result: usize,
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
                w @ (Work::Wasm { .. } | Work::Http(_)) => return super::not_routed(&w, "inproc"),
            };
            let kernels = self.kernels.clone();
            let run = tokio::task::spawn_blocking(move || kernels.run(&kernel, &input));
            match tokio::time::timeout(job.timeout, run).await {
                Ok(Ok(Ok(result))) if result.len() > self.max_result => {
                    result_too_large(result.len() as u64, false, self.max_result)
                }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use edgerun_cpp::CppKernels;

    use super::*;

    fn job(work: Work) -> Job {
        Job {
            task: 1,
            attempt: 1,
            work,
            timeout: Duration::from_secs(30),
            memory_mb: 512,
            cpu_millis: None,
            network: false,
            disk_mb: None,
        }
    }

    /// A 300x1 by 1x300 matmul: a 90,000-cell result, well over 64 KiB as JSON.
    fn big_matmul() -> Work {
        let a: Vec<Vec<f32>> = (0..300).map(|i| vec![i as f32]).collect();
        let b: Vec<Vec<f32>> = vec![(0..300).map(|i| i as f32).collect()];
        Work::Kernel {
            kernel: "matmul".into(),
            input: serde_json::json!({ "a": a, "b": b }).to_string(),
        }
    }

    #[tokio::test]
    async fn a_result_over_the_cap_fails_result_too_large() {
        let small = InprocExecutor {
            kernels: Arc::new(CppKernels),
            max_result: 64 * 1024,
        };
        match small.run(job(big_matmul())).await {
            Outcome::Failed {
                error, retryable, ..
            } => {
                assert_eq!(error.code, "result_too_large");
                assert!(!retryable);
                assert!(
                    error.message.contains("executor.max_result_mb")
                        && error.message.contains("bytes"),
                    "{}",
                    error.message
                );
            }
            other => panic!("expected result_too_large, got {other:?}"),
        }
        let roomy = InprocExecutor {
            kernels: Arc::new(CppKernels),
            max_result: 16 * 1024 * 1024,
        };
        assert!(matches!(
            roomy.run(job(big_matmul())).await,
            Outcome::Succeeded { .. }
        ));
    }
}
