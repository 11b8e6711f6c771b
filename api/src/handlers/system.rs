//! /healthz, /readyz, /metrics, /v1/kernels, and JSON 404s.

use actix_web::{web, HttpRequest, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::error::ApiError;
use crate::handlers::cluster::ClusterCtx;

pub async fn healthz(ctx: web::Data<ClusterCtx>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "node": ctx.node.id }))
}

/// Ready when a leader is known and this node's state machine has applied entries.
pub async fn readyz(ctx: web::Data<ClusterCtx>) -> Result<HttpResponse, ApiError> {
    let m = ctx.node.raft.metrics().borrow().clone();
    match (m.current_leader, m.last_applied) {
        (Some(leader), Some(applied)) => Ok(HttpResponse::Ok()
            .json(json!({ "status": "ready", "leader": leader, "applied": applied.index }))),
        (leader, _) => Err(ApiError::Unavailable {
            code: "not_ready",
            message: if leader.is_none() {
                "no leader yet".into()
            } else {
                "state machine has not caught up yet".into()
            },
            details: json!({ "leader": leader }),
        }),
    }
}

pub async fn metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

pub async fn kernels() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "kernels": edgerun_actors::catalog() }))
}

pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
