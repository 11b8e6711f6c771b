//! HTTP tasks: the node calls a URL for the task (API.md "HTTP tasks"), with ureq on a
//! blocking thread, whatever `executor.isolation` is for other work.
//!
//! Only addresses in `executor.http_allow` are connected to: the client's resolver returns
//! only allowed addresses ([`edgerun_config::allow::resolve`]), for the first request and for
//! every redirect hop (at most [`MAX_REDIRECTS`]), so neither a name that resolves elsewhere
//! nor a redirect reaches the node's own API or a metadata address unless allowed.
//!
//! How a call ends → the attempt's outcome:
//! - a status in `expect_status` → succeeded: `{"status", "headers", "body"}` (the body parsed
//!   as JSON when it is JSON, else text);
//! - 5xx, 429, 408 and connection errors → `http_error`, retried under the task's policy;
//!   another status → `http_status`, not retried (the same call would get it again);
//! - an address not allowed → `http_denied` at once, not retried;
//! - a response body over `executor.max_result_mb` → `result_too_large`;
//! - `timeout_ms` passed → timed out (retried).

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgerun_model::{HttpCall, Isolation, Outcome, Work};
use serde_json::{json, Value};

use super::{failed, result_too_large, Executor, Job, RunFuture};

pub const MAX_REDIRECTS: u32 = 5;

pub struct HttpExecutor {
    /// `executor.http_allow`, parsed.
    pub allow: Arc<Vec<edgerun_config::allow::Allowed>>,
    /// `executor.max_result_mb`, in bytes: the largest response body kept.
    pub max_body: usize,
}

const SETTING: &str = "executor.http_allow";

impl Executor for HttpExecutor {
    fn isolation(&self) -> Isolation {
        Isolation::Http
    }

    fn run(&self, job: Job) -> RunFuture<'_> {
        Box::pin(async move {
            let Work::Http(call) = job.work else {
                return failed(
                    "unsupported",
                    "only http tasks run on the HTTP client",
                    false,
                );
            };
            let (allow, max_body, timeout) = (self.allow.clone(), self.max_body, job.timeout);
            match tokio::task::spawn_blocking(move || call_once(&call, &allow, max_body, timeout))
                .await
            {
                Ok(o) => o,
                Err(e) => failed(
                    "worker_crashed",
                    format!("the HTTP call panicked: {e}"),
                    true,
                ),
            }
        })
    }
}

fn call_once(
    call: &HttpCall,
    allow: &Arc<Vec<edgerun_config::allow::Allowed>>,
    max_body: usize,
    timeout: Duration,
) -> Outcome {
    let list = allow.clone();
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(MAX_REDIRECTS)
        .resolver(move |netloc: &str| edgerun_config::allow::resolve(&list, netloc, SETTING))
        .build();
    let mut req = agent.request(&call.method, &call.url);
    let mut typed = false;
    for (k, v) in &call.headers {
        typed |= k.eq_ignore_ascii_case("content-type");
        req = req.set(k, v);
    }
    let started = Instant::now();
    let sent = match &call.body {
        Some(b) => {
            if !typed {
                req = req.set("content-type", "application/json");
            }
            req.send_string(b)
        }
        None => req.call(),
    };
    let resp = match sent {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => {
            let said = t.to_string();
            if said.contains(SETTING) {
                return failed("http_denied", format!("{}: {said}", call.url), false);
            }
            if started.elapsed() >= timeout {
                return Outcome::TimedOut {
                    after_ms: timeout.as_millis() as u64,
                };
            }
            return failed("http_error", format!("{}: {said}", call.url), true);
        }
    };
    let status = resp.status();
    let headers: serde_json::Map<String, Value> = resp
        .headers_names()
        .into_iter()
        .filter_map(|h| resp.header(&h).map(|v| (h.clone(), json!(v))))
        .collect();
    let mut body = Vec::new();
    let read = resp
        .into_reader()
        .take(max_body as u64 + 1)
        .read_to_end(&mut body);
    if let Err(e) = read {
        if started.elapsed() >= timeout {
            return Outcome::TimedOut {
                after_ms: timeout.as_millis() as u64,
            };
        }
        return failed(
            "http_error",
            format!("{}: reading the answer: {e}", call.url),
            true,
        );
    }
    if body.len() > max_body {
        return result_too_large(body.len() as u64, true, max_body);
    }
    let text = String::from_utf8_lossy(&body);
    let body_value = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| json!(text));
    let result = json!({ "status": status, "headers": headers, "body": body_value });
    let (lo, hi) = call.expect_status;
    if (lo..=hi).contains(&status) {
        return Outcome::Succeeded {
            result: result.to_string(),
        };
    }
    let retryable = status >= 500 || status == 429 || status == 408;
    let code = if retryable {
        "http_error"
    } else {
        "http_status"
    };
    Outcome::Failed {
        error: edgerun_model::TaskError {
            code: code.into(),
            message: format!(
                "{} {} answered {status}, expected {lo}..={hi}",
                call.method, call.url
            ),
        },
        retryable,
        output: Some(result.to_string()),
    }
}
