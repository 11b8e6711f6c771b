//! WebAssembly tasks: the node's wasm runtime ([`edgerun_wasm`]) runs a module from the
//! replicated state on a blocking thread, whatever `executor.isolation` is for other work.
//!
//! [`Routed`] puts it beside the node's executor: wasm work goes to [`WasmExecutor`], the rest
//! to the isolation executor, and each completion records which (`isolation: "wasm"`).
//!
//! How a run ends → the attempt's outcome:
//! - exit 0 → succeeded: stdout parsed as JSON, or `{"stdout": "..."}` when it is not JSON;
//!   stdout over `executor.max_result_mb` → `result_too_large` (not retried: it would again);
//! - a nonzero exit → `wasm_exit`, a trap → `wasm_trap`, memory past the cap → `wasm_oom`,
//!   the timeout → timed out: each retried under the task's policy;
//! - a module that is gone or not runnable here → `unknown_module` / `invalid_module` (never
//!   retried); a node problem (the runtime, a full pool) → retried.

use std::sync::Arc;

use edgerun_model::{Isolation, Outcome, Work};
use edgerun_raft::StateView;

use super::{failed, result_too_large, Executor, Job, RunFuture};

/// stderr kept per attempt (in failure messages and logs).
const STDERR_CAP: usize = 64 * 1024;

pub struct WasmExecutor {
    pub runtime: Arc<edgerun_wasm::Runtime>,
    pub view: StateView,
    pub max_result: usize,
}

fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim_end();
    match s.char_indices().rev().nth(500) {
        Some((i, _)) => format!("…{}", &s[i..]),
        None => s.to_string(),
    }
}

impl Executor for WasmExecutor {
    fn isolation(&self) -> Isolation {
        Isolation::Wasm
    }

    fn run(&self, job: Job) -> RunFuture<'_> {
        Box::pin(async move {
            let Work::Wasm {
                module,
                args,
                input,
            } = job.work
            else {
                return failed(
                    "unsupported",
                    "only wasm tasks run on the wasm runtime",
                    false,
                );
            };
            let Some(hash) = edgerun_wasm::hash_of_id(&module) else {
                return failed(
                    "unknown_module",
                    format!("{module} is not a module id"),
                    false,
                );
            };
            let runtime = self.runtime.clone();
            let bytes = if runtime.is_prepared(&hash) {
                None
            } else {
                match self
                    .view
                    .read(|s| s.modules.get(&module).map(|m| m.bytes.clone()))
                {
                    Some(b) => Some(b),
                    None => {
                        return failed(
                            "unknown_module",
                            format!("module {module} is not in the cluster (deleted?)"),
                            false,
                        )
                    }
                }
            };
            let mut argv = vec![module.clone()];
            argv.extend(args);
            let run = edgerun_wasm::Run {
                args: argv,
                stdin: input.into_bytes(),
                timeout: job.timeout,
                memory_bytes: (job.memory_mb as usize) << 20,
                // One byte over the cap tells "over" from "exactly at".
                stdout_cap: self.max_result + 1,
                stderr_cap: STDERR_CAP,
            };
            let ran = tokio::task::spawn_blocking(move || {
                if let Some(b) = bytes {
                    runtime.prepare(hash, &b)?;
                }
                runtime.run(&hash, run)
            })
            .await;
            let ran = match ran {
                Ok(Ok(r)) => r,
                Ok(Err(edgerun_wasm::WasmError::Invalid(why))) => {
                    return failed(
                        "invalid_module",
                        format!("module {module} cannot run: {why}"),
                        false,
                    )
                }
                Ok(Err(e)) => return failed("wasm_runtime", e.to_string(), true),
                Err(join) => {
                    return failed(
                        "worker_crashed",
                        format!("the wasm run panicked: {join}"),
                        true,
                    )
                }
            };
            let stderr = tail(&ran.stderr);
            let said = if stderr.is_empty() {
                String::new()
            } else {
                format!("; stderr: {stderr}")
            };
            match ran.ended {
                edgerun_wasm::Ended::Exited(0) => {
                    if ran.stdout.len() > self.max_result || ran.stdout_dropped > 0 {
                        return result_too_large(
                            ran.stdout.len() as u64 + ran.stdout_dropped,
                            false,
                            self.max_result,
                        );
                    }
                    let text = String::from_utf8_lossy(&ran.stdout);
                    let result = match serde_json::from_str::<serde_json::Value>(&text) {
                        Ok(_) => text.trim().to_string(),
                        Err(_) => serde_json::json!({ "stdout": text }).to_string(),
                    };
                    Outcome::Succeeded { result }
                }
                edgerun_wasm::Ended::Exited(code) => {
                    failed("wasm_exit", format!("exited with code {code}{said}"), true)
                }
                edgerun_wasm::Ended::TimedOut => Outcome::TimedOut {
                    after_ms: job.timeout.as_millis() as u64,
                },
                edgerun_wasm::Ended::OutOfMemory => failed(
                    "wasm_oom",
                    format!(
                        "the module needed more than its {} MiB of memory{said}",
                        job.memory_mb
                    ),
                    true,
                ),
                edgerun_wasm::Ended::Trap(t) => failed("wasm_trap", format!("{t}{said}"), true),
                edgerun_wasm::Ended::Busy => {
                    failed("wasm_busy", "no wasm instance was free on this node", true)
                }
            }
        })
    }
}

/// The node's executor with wasm work routed to the wasm runtime (when the node has one) and
/// http work to the HTTP client.
pub struct Routed {
    pub base: Arc<dyn Executor>,
    pub wasm: Option<Arc<WasmExecutor>>,
    pub http: Arc<super::http::HttpExecutor>,
}

impl Executor for Routed {
    fn isolation(&self) -> Isolation {
        self.base.isolation()
    }

    fn isolation_for(&self, work: &Work) -> Isolation {
        match work {
            Work::Wasm { .. } if self.wasm.is_some() => Isolation::Wasm,
            Work::Http(_) => Isolation::Http,
            other => self.base.isolation_for(other),
        }
    }

    fn run(&self, job: Job) -> RunFuture<'_> {
        match (&job.work, &self.wasm) {
            (Work::Wasm { .. }, Some(w)) => w.run(job),
            (Work::Http(_), _) => self.http.run(job),
            _ => self.base.run(job),
        }
    }
}

/// The wasm runtime's pool: the node's slots, twice (a timed-out run's instance is back in
/// the pool before the next attempt needs one), at least 8.
pub fn instances(slots: u32) -> u32 {
    slots.saturating_mul(2).max(8)
}
