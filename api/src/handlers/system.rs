//! /healthz, /readyz, /metrics, /v1/kernels, and JSON 404s.

use actix_web::{web, HttpRequest, HttpResponse};
use edgerun_actors::Readiness;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::error::{ApiError, ErrorCode};
use crate::handlers::cluster::ClusterCtx;

pub async fn healthz(ctx: web::Data<ClusterCtx>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "node": ctx.node.id() }))
}

/// Ready when a leader is known, this node's state machine has applied entries and (on a
/// follower) calls to the leader are not failing fast: right after the leader came back, the
/// circuit to it stays open until the next heartbeat's probe gets through, and until then a
/// forwarded write or read would be refused.
pub async fn readyz(ctx: web::Data<ClusterCtx>) -> Result<HttpResponse, ApiError> {
    let not_ready = |message: String, leader: Option<u64>| ApiError::Unavailable {
        code: ErrorCode::NotReady,
        message,
        details: json!({ "leader": leader }),
    };
    match ctx.node.readiness() {
        Readiness::Ready { leader, applied } => Ok(HttpResponse::Ok()
            .json(json!({ "status": "ready", "leader": leader, "applied": applied }))),
        Readiness::LeaderFailing { leader } => Err(not_ready(
            format!(
                "calls to the leader (node {leader}) are failing; waiting for it to answer again"
            ),
            Some(leader),
        )),
        Readiness::CatchingUp { leader } => Err(not_ready(
            "state machine has not caught up yet".into(),
            Some(leader),
        )),
        Readiness::NoLeader => Err(not_ready("no leader yet".into(), None)),
    }
}

/// The Prometheus text. Cluster-wide gauges ([`edgerun_actors::metrics_names::CLUSTER_WIDE`])
/// only on the leader: every node knows them, and `sum()` over three nodes would count
/// each task three times.
pub async fn metrics(
    handle: web::Data<PrometheusHandle>,
    ctx: web::Data<ClusterCtx>,
) -> HttpResponse {
    let text = handle.render();
    let leads = ctx.node.is_leader();
    let body = if leads {
        text
    } else {
        without_families(&text, edgerun_actors::metrics_names::CLUSTER_WIDE)
    };
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}

/// `text` (Prometheus exposition) without the samples, HELP and TYPE lines of `families`.
fn without_families(text: &str, families: &[&str]) -> String {
    let of = |line: &str, name: &str| {
        let line = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if !families.iter().any(|f| of(line, f)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub async fn kernels() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "kernels": edgerun_actors::catalog() }))
}

/// Does `path` fit the route template `pattern` (`/v1/tasks/{id}`)?
fn fits(pattern: &str, path: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(p, x)| (p.starts_with('{') && !x.is_empty()) || p == x)
}

/// No route: 405 with `Allow` when the path exists with other methods, else 404.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    // A literal route (`/v1/tasks/batch`) wins over a template that also fits it.
    let docs: Vec<(&str, &str)> = crate::routes::documented().collect();
    let exact = docs.iter().any(|(_, p)| *p == req.path());
    let allowed: Vec<String> = docs
        .iter()
        .filter(|(_, p)| {
            if exact {
                *p == req.path()
            } else {
                fits(p, req.path())
            }
        })
        .map(|(m, _)| m.to_uppercase())
        .collect();
    if !allowed.is_empty() {
        let allow = allowed.join(", ");
        return Ok(HttpResponse::MethodNotAllowed()
            .insert_header((actix_web::http::header::ALLOW, allow.clone()))
            .json(json!({"error": {
                "code": "method_not_allowed",
                "message": format!("{} is not allowed on {}; allowed: {allow}", req.method(), req.path()),
                "details": {"allow": allowed},
            }})));
    }
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_wide_families_are_cut_whole_and_nothing_else() {
        let text = "# HELP edgerun_tasks Tasks\n# TYPE edgerun_tasks gauge\nedgerun_tasks{status=\"failed\"} 1\n# HELP edgerun_tasks_submitted_total S\nedgerun_tasks_submitted_total 3\nedgerun_node_up{node=\"2\"} 1\n";
        let out = super::without_families(text, &["edgerun_tasks", "edgerun_node_up"]);
        assert_eq!(
            out,
            "# HELP edgerun_tasks_submitted_total S\nedgerun_tasks_submitted_total 3\n"
        );
    }

    #[test]
    fn templates_fit_paths_segment_by_segment() {
        assert!(super::fits("/v1/tasks/{id}", "/v1/tasks/7"));
        assert!(super::fits("/v1/tasks/{id}", "/v1/tasks/batch"));
        assert!(!super::fits("/v1/tasks/{id}", "/v1/tasks/7/wait"));
        assert!(!super::fits("/v1/tasks/{id}", "/v1/tasks/"));
        assert!(super::fits("/v1/tasks", "/v1/tasks"));
    }
}
