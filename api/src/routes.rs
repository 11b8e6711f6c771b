//! The route table: every REST path in one place, with who may call it.
//!
//! Authorization is decided by the route that matched, never by the request's path text:
//! each route is registered as its own resource wrapped in [`crate::auth::require`] with the
//! role [`ROUTES`] gives it. The router matches the percent-decoded path, so
//! `/v1/%61dmin/snapshot` reaches the admin route and needs what the admin route needs;
//! a path that matches no route gets 404/405 and runs nothing.

use actix_web::dev::HttpServiceFactory;
use actix_web::{guard, http::Method, web, FromRequest, Handler, Responder};

use crate::auth::Role;
use crate::error::{json_error, ApiError, ErrorCode};
use crate::handlers::{
    admin, cluster, dashboard, debug, events, jobs, modules, streams, system, tasks,
};

/// One route: method (OpenAPI's spelling), full path template, the least role it needs
/// (`None`: open to anyone), and whether the OpenAPI document lists it (the `/v1/debug`
/// test hooks are not).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub need: Option<Role>,
    pub documented: bool,
}

const fn open(method: &'static str, path: &'static str) -> Route {
    Route {
        method,
        path,
        need: None,
        documented: true,
    }
}

const fn needs(method: &'static str, path: &'static str, role: Role) -> Route {
    Route {
        method,
        path,
        need: Some(role),
        documented: true,
    }
}

const fn hook(method: &'static str, path: &'static str) -> Route {
    Route {
        method,
        path,
        need: Some(Role::Admin),
        documented: false,
    }
}

use Role::{Admin, Operator, Viewer};

/// Every route and who may call it. viewer < operator < admin.
pub const ROUTES: &[Route] = &[
    open("get", "/healthz"),
    open("get", "/readyz"),
    open("get", "/metrics"),
    // The dashboard page asks for a token itself.
    open("get", "/"),
    open("get", "/v1/openapi.json"),
    open("post", "/v1/auth/token"),
    needs("post", "/v1/tasks", Operator),
    needs("get", "/v1/tasks", Viewer),
    needs("post", "/v1/tasks/batch", Operator),
    // A read (many waits in one call) with a body, hence POST.
    needs("post", "/v1/tasks/wait", Viewer),
    needs("get", "/v1/tasks/{id}", Viewer),
    needs("get", "/v1/tasks/{id}/wait", Viewer),
    needs("post", "/v1/tasks/{id}/cancel", Operator),
    needs("get", "/v1/dlq", Viewer),
    needs("post", "/v1/dlq/{id}/requeue", Operator),
    needs("post", "/v1/jobs", Operator),
    needs("get", "/v1/jobs", Viewer),
    needs("get", "/v1/jobs/{id}", Viewer),
    needs("delete", "/v1/jobs/{id}", Operator),
    needs("post", "/v1/modules", Operator),
    needs("get", "/v1/modules", Viewer),
    needs("get", "/v1/modules/{id}", Viewer),
    needs("delete", "/v1/modules/{id}", Operator),
    needs("post", "/v1/streams", Operator),
    needs("get", "/v1/streams", Viewer),
    needs("get", "/v1/streams/{id}", Viewer),
    needs("delete", "/v1/streams/{id}", Operator),
    needs("post", "/v1/streams/{id}/pause", Operator),
    needs("post", "/v1/streams/{id}/resume", Operator),
    needs("post", "/v1/streams/{id}/records", Operator),
    needs("get", "/v1/streams/{id}/results", Viewer),
    needs("get", "/v1/events", Viewer),
    needs("get", "/v1/kernels", Viewer),
    needs("get", "/v1/cluster", Viewer),
    needs("post", "/v1/cluster/learners", Admin),
    needs("post", "/v1/cluster/members/{id}/promote", Admin),
    needs("delete", "/v1/cluster/members/{id}", Admin),
    needs("get", "/v1/nodes", Viewer),
    needs("get", "/v1/alerts", Viewer),
    needs("get", "/v1/admin/log", Admin),
    needs("put", "/v1/admin/log", Admin),
    needs("post", "/v1/admin/reload", Admin),
    needs("get", "/v1/admin/snapshot", Admin),
    hook("post", "/v1/debug/fail/{actor}"),
    hook("put", "/v1/debug/net"),
    hook("get", "/v1/debug/net"),
];

/// The operations of the OpenAPI document, as (method, path) (`openapi.rs`; a test checks
/// they agree).
pub fn documented() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES
        .iter()
        .filter(|r| r.documented)
        .map(|r| (r.method, r.path))
}

/// The table's entry for (method, path template).
pub fn find(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

/// One route as its own resource: matched on its path and method only, wrapped in the role
/// check of its table entry. A route missing from the table needs admin (and a unit test
/// fails).
fn at<F, Args>(method: &'static str, path: &'static str, handler: F) -> impl HttpServiceFactory
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let need = find(method, path).map_or(Some(Role::Admin), |r| r.need);
    let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET);
    web::resource(path)
        .guard(guard::Method(m))
        .route(web::route().to(handler))
        .wrap(actix_web::middleware::from_fn(move |req, next| {
            crate::auth::require(need, req, next)
        }))
}

/// Register every route on `cfg`. `max_body` bounds JSON bodies (413 past it).
pub fn configure(cfg: &mut web::ServiceConfig, max_body: usize) {
    let json = web::JsonConfig::default()
        .limit(max_body)
        .content_type_required(false)
        .error_handler(move |err, _req| json_error(err, max_body).into());
    let query = web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::bad_request(ErrorCode::InvalidQuery, err.to_string()).into()
    });
    cfg.app_data(json)
        .app_data(query)
        .service(at("get", "/healthz", system::healthz))
        .service(at("get", "/readyz", system::readyz))
        .service(at("get", "/metrics", system::metrics))
        .service(at("get", "/", dashboard::page))
        .service(at("get", "/v1/openapi.json", crate::openapi::serve))
        .service(at("post", "/v1/auth/token", crate::auth::token))
        .service(at("post", "/v1/tasks", tasks::submit))
        .service(at("get", "/v1/tasks", tasks::list))
        .service(at("post", "/v1/tasks/batch", tasks::submit_batch))
        .service(at("post", "/v1/tasks/wait", tasks::wait_many))
        // Other methods on /tasks/batch and /tasks/wait get 405, not GET /tasks/{id} with
        // id "batch".
        .route("/v1/tasks/batch", web::route().to(system::not_found))
        .route("/v1/tasks/wait", web::route().to(system::not_found))
        .service(at("get", "/v1/tasks/{id}", tasks::get))
        .service(at("get", "/v1/tasks/{id}/wait", tasks::wait))
        .service(at("post", "/v1/tasks/{id}/cancel", tasks::cancel))
        .service(at("get", "/v1/dlq", tasks::dlq))
        .service(at("post", "/v1/dlq/{id}/requeue", tasks::requeue))
        .service(at("post", "/v1/jobs", jobs::create))
        .service(at("get", "/v1/jobs", jobs::list))
        .service(at("get", "/v1/jobs/{id}", jobs::get))
        .service(at("delete", "/v1/jobs/{id}", jobs::delete))
        .service(at("post", "/v1/modules", modules::upload))
        .service(at("get", "/v1/modules", modules::list))
        .service(at("get", "/v1/modules/{id}", modules::get))
        .service(at("delete", "/v1/modules/{id}", modules::delete))
        .service(at("post", "/v1/streams", streams::create))
        .service(at("get", "/v1/streams", streams::list))
        .service(at("get", "/v1/streams/{id}", streams::get))
        .service(at("delete", "/v1/streams/{id}", streams::delete))
        .service(at("post", "/v1/streams/{id}/pause", streams::pause))
        .service(at("post", "/v1/streams/{id}/resume", streams::resume))
        .service(at("post", "/v1/streams/{id}/records", streams::records))
        .service(at("get", "/v1/streams/{id}/results", streams::results))
        .service(at("get", "/v1/events", events::events))
        .service(at("get", "/v1/kernels", system::kernels))
        .service(at("get", "/v1/cluster", cluster::cluster))
        .service(at("post", "/v1/cluster/learners", cluster::add_learner))
        .service(at(
            "post",
            "/v1/cluster/members/{id}/promote",
            cluster::promote,
        ))
        .service(at("delete", "/v1/cluster/members/{id}", cluster::remove))
        .service(at("get", "/v1/nodes", cluster::nodes))
        .service(at("get", "/v1/alerts", cluster::alerts))
        .service(at("get", "/v1/admin/log", admin::get_log))
        .service(at("put", "/v1/admin/log", admin::set_log))
        .service(at("post", "/v1/admin/reload", admin::reload))
        .service(at("get", "/v1/admin/snapshot", admin::snapshot))
        .service(at("post", "/v1/debug/fail/{actor}", debug::fail_actor))
        .service(at("put", "/v1/debug/net", debug::set_net))
        .service(at("get", "/v1/debug/net", debug::get_net))
        .default_service(web::to(system::not_found));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn every_registered_route_is_in_the_table_and_every_entry_is_registered() {
        // Whitespace removed, so a call split over lines reads like one on a line.
        let src: String = include_str!("routes.rs").split_whitespace().collect();
        let body = src
            .split("pubfnconfigure(")
            .nth(1)
            .and_then(|s| s.split("#[cfg(test)]").next())
            .unwrap_or("");
        let mut registered = BTreeSet::new();
        for call in body.split(".service(at(\"").skip(1) {
            let mut parts = call.split('"');
            let method = parts.next().unwrap_or("");
            let path = parts.nth(1).unwrap_or("");
            assert!(
                super::find(method, path).is_some(),
                "{method} {path} is registered but not in routes::ROUTES"
            );
            assert!(
                registered.insert((method.to_string(), path.to_string())),
                "{method} {path} is registered twice"
            );
        }
        let table: BTreeSet<(String, String)> = super::ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(
            table.len(),
            super::ROUTES.len(),
            "a route is in the table twice"
        );
        assert_eq!(registered, table);
    }

    #[test]
    fn writes_need_an_operator_and_cluster_admin_and_debug_routes_need_an_admin() {
        use super::Role;
        for r in super::ROUTES {
            if r.path.starts_with("/v1/cluster/")
                || r.path.starts_with("/v1/admin/")
                || r.path.starts_with("/v1/debug/")
            {
                assert_eq!(r.need, Some(Role::Admin), "{} {}", r.method, r.path);
            } else if r.method != "get" && r.path != "/v1/auth/token" && r.path != "/v1/tasks/wait"
            {
                assert!(
                    r.need >= Some(Role::Operator),
                    "{} {} is a write",
                    r.method,
                    r.path
                );
            }
        }
    }
}
