//! /v1/admin: the node's log filter, and re-reading its configuration (the same as SIGHUP).
//! Admin role only. These act on the node that answers, not on the whole cluster.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};

/// What the node lets the API change while it runs.
pub trait Control: Send + Sync {
    /// The log filter in force.
    fn log_filter(&self) -> String;
    /// `text` or `json`.
    fn log_format(&self) -> &'static str;
    /// Replace the log filter; a bad one changes nothing and says why.
    fn set_log_filter(&self, filter: &str) -> Result<(), String>;
    /// Re-read the configuration from where it came from (file, environment, flags) and
    /// apply what can change at run time.
    fn reload(&self) -> Result<ReloadReport, String>;
}

/// What a reload did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ReloadReport {
    /// Keys whose new values are in force now.
    pub applied: Vec<String>,
    /// Keys that changed but take effect only after a restart.
    pub needs_restart: Vec<String>,
}

#[derive(Clone)]
pub struct AdminCtx {
    pub control: Arc<dyn Control>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LogView {
    /// tracing's filter syntax, e.g. `info,edgerun::trace=debug`.
    pub filter: String,
    /// `text` or `json` (set at start).
    pub format: &'static str,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogChange {
    /// The new filter, e.g. `debug` or `info,edgerun::trace=debug`.
    pub filter: String,
}

fn view(ctx: &AdminCtx) -> LogView {
    LogView {
        filter: ctx.control.log_filter(),
        format: ctx.control.log_format(),
    }
}

pub async fn get_log(ctx: web::Data<AdminCtx>) -> HttpResponse {
    HttpResponse::Ok().json(view(&ctx))
}

pub async fn set_log(
    ctx: web::Data<AdminCtx>,
    body: web::Json<LogChange>,
) -> Result<HttpResponse, ApiError> {
    let filter = body.into_inner().filter;
    if filter.trim().is_empty() || filter.len() > 4096 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidFilter,
            "filter: 1 to 4096 characters, e.g. info or info,edgerun::trace=debug",
        ));
    }
    ctx.control
        .set_log_filter(&filter)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidFilter, e))?;
    tracing::info!(filter = %filter, "log filter changed through the API");
    Ok(HttpResponse::Ok().json(view(&ctx)))
}

/// GET /v1/admin/snapshot: a backup of the replicated state as of now (after a read barrier,
/// so it holds every write acknowledged before the call), with its SHA-256 in the header line
/// and in `x-edgerun-sha256`. `edgerun backup --out FILE` saves it.
pub async fn snapshot(
    tasks: web::Data<crate::handlers::tasks::TasksCtx>,
) -> Result<HttpResponse, ApiError> {
    tasks.barrier(None).await?;
    let node = tasks.node.clone();
    let started = std::time::Instant::now();
    let info = web::block(move || node.take_backup())
        .await
        .map_err(|e| ApiError::Internal(format!("taking a snapshot: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(
        bytes = info.snapshot_bytes,
        tasks = info.tasks,
        last_index = info.last_index,
        ms = started.elapsed().as_millis() as u64,
        "backup snapshot served"
    );
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("x-edgerun-sha256", info.sha256.clone()))
        .insert_header(("x-edgerun-last-index", info.last_index.to_string()))
        .insert_header((
            "content-disposition",
            format!(
                "attachment; filename=\"edgerun-{}.backup\"",
                info.created_ms
            ),
        ))
        .body(info.file))
}

pub async fn reload(ctx: web::Data<AdminCtx>) -> Result<HttpResponse, ApiError> {
    let c = ctx.control.clone();
    let report = web::block(move || c.reload())
        .await
        .map_err(|e| ApiError::Internal(format!("reloading: {e}")))?
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidConfig, e))?;
    Ok(HttpResponse::Ok().json(report))
}
