//! GET /: the dashboard, one HTML page with its script and styles inline (no build step,
//! served from the binary). It reads `/v1/cluster`, `/v1/nodes`, `/v1/alerts` and
//! `/v1/tasks/{id}`, and stays live on `/v1/events`. With auth on it asks for an API key or
//! token (kept in the tab's sessionStorage; `/#token=...` also works and is never sent to a
//! server).

use actix_web::HttpResponse;

const PAGE: &str = include_str!("../dashboard.html");

pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("x-frame-options", "DENY"))
        .insert_header((
            "content-security-policy",
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ))
        .body(PAGE)
}
