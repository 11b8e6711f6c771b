//! The route table: every REST path in one place.

use actix_web::web;

use crate::error::{json_error, ApiError};
use crate::handlers::{admin, cluster, dashboard, debug, events, jobs, system, tasks};

/// Every route but the `/v1/debug` test hooks, as (method, path) in OpenAPI's spelling: the
/// operations of the OpenAPI document (`openapi.rs`; a test checks they agree).
pub const DOCUMENTED: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("post", "/v1/auth/token"),
    ("post", "/v1/tasks"),
    ("get", "/v1/tasks"),
    ("post", "/v1/tasks/batch"),
    ("get", "/v1/tasks/{id}"),
    ("get", "/v1/tasks/{id}/wait"),
    ("post", "/v1/tasks/{id}/cancel"),
    ("get", "/v1/dlq"),
    ("post", "/v1/dlq/{id}/requeue"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("delete", "/v1/jobs/{id}"),
    ("get", "/v1/events"),
    ("get", "/v1/kernels"),
    ("get", "/v1/cluster"),
    ("post", "/v1/cluster/learners"),
    ("post", "/v1/cluster/members/{id}/promote"),
    ("delete", "/v1/cluster/members/{id}"),
    ("get", "/v1/nodes"),
    ("get", "/v1/alerts"),
    ("get", "/v1/admin/log"),
    ("put", "/v1/admin/log"),
    ("post", "/v1/admin/reload"),
    ("get", "/v1/admin/snapshot"),
    ("get", "/"),
];

/// Register every route on `cfg`. `max_body` bounds JSON bodies (413 past it).
pub fn configure(cfg: &mut web::ServiceConfig, max_body: usize) {
    let json = web::JsonConfig::default()
        .limit(max_body)
        .content_type_required(false)
        .error_handler(move |err, _req| json_error(err, max_body).into());
    let query = web::QueryConfig::default()
        .error_handler(|err, _req| ApiError::bad_request("invalid_query", err.to_string()).into());
    cfg.app_data(json)
        .app_data(query)
        .route("/healthz", web::get().to(system::healthz))
        .route("/readyz", web::get().to(system::readyz))
        .route("/metrics", web::get().to(system::metrics))
        .route("/", web::get().to(dashboard::page))
        .service(
            web::scope("/v1")
                .route("/openapi.json", web::get().to(crate::openapi::serve))
                .route("/auth/token", web::post().to(crate::auth::token))
                .route("/tasks", web::post().to(tasks::submit))
                .route("/tasks", web::get().to(tasks::list))
                .route("/tasks/batch", web::post().to(tasks::submit_batch))
                // Other methods on /tasks/batch get 405, not GET /tasks/{id} with id "batch".
                .route("/tasks/batch", web::route().to(system::not_found))
                .route("/tasks/{id}", web::get().to(tasks::get))
                .route("/tasks/{id}/wait", web::get().to(tasks::wait))
                .route("/tasks/{id}/cancel", web::post().to(tasks::cancel))
                .route("/dlq", web::get().to(tasks::dlq))
                .route("/dlq/{id}/requeue", web::post().to(tasks::requeue))
                .route("/jobs", web::post().to(jobs::create))
                .route("/jobs", web::get().to(jobs::list))
                .route("/jobs/{id}", web::get().to(jobs::get))
                .route("/jobs/{id}", web::delete().to(jobs::delete))
                .route("/events", web::get().to(events::events))
                .route("/kernels", web::get().to(system::kernels))
                .route("/cluster", web::get().to(cluster::cluster))
                .route("/cluster/learners", web::post().to(cluster::add_learner))
                .route(
                    "/cluster/members/{id}/promote",
                    web::post().to(cluster::promote),
                )
                .route("/cluster/members/{id}", web::delete().to(cluster::remove))
                .route("/nodes", web::get().to(cluster::nodes))
                .route("/alerts", web::get().to(cluster::alerts))
                .route("/admin/log", web::get().to(admin::get_log))
                .route("/admin/log", web::put().to(admin::set_log))
                .route("/admin/reload", web::post().to(admin::reload))
                .route("/admin/snapshot", web::get().to(admin::snapshot))
                .route("/debug/fail/{actor}", web::post().to(debug::fail_actor))
                .route("/debug/net", web::put().to(debug::set_net))
                .route("/debug/net", web::get().to(debug::get_net)),
        )
        .default_service(web::to(system::not_found));
}
