//! The Api actor: owns the actix-web server and plugs into the node supervisor.
//!
//! actix-web runs inside the node's tokio runtime (its workers have their own
//! single-threaded runtimes). The actor binds in `pre_start`, so a taken port fails the
//! node's start with the address in the message; if the server ever stops on its own the
//! actor fails and the supervisor restarts it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use edgerun_actors::child::SpawnFuture;
use edgerun_actors::{ChildSpec, Slot};
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

use crate::handlers::cluster::ClusterCtx;
use crate::handlers::debug::DebugCtx;
use crate::handlers::tasks::TasksCtx;

/// Everything the REST server is built from.
#[derive(Clone)]
pub struct ApiParts {
    pub listen: SocketAddr,
    pub workers: usize,
    pub max_body: usize,
    /// How long a request body may take to arrive (`api.body_timeout_ms`).
    pub body_timeout: std::time::Duration,
    pub tasks: TasksCtx,
    pub cluster: ClusterCtx,
    pub debug: DebugCtx,
    pub metrics: PrometheusHandle,
    pub auth: Arc<crate::auth::Auth>,
    pub guard: Arc<crate::guard::Guard>,
    /// HTTPS instead of HTTP ([`crate::tls`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub admin: crate::handlers::admin::AdminCtx,
}

pub enum ApiMsg {
    ServerExited(String),
}

pub struct ApiServer;

pub struct ApiState {
    handle: ServerHandle,
}

/// Count and time every answer by route (the pattern, so ids do not make new series),
/// method and status.
async fn count_requests(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use edgerun_actors::metrics_names as m;
    let started = std::time::Instant::now();
    let method = req.method().as_str().to_owned();
    let res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_str().to_owned();
    metrics::counter!(m::HTTP_REQUESTS, "route" => route.clone(), "method" => method.clone(), "status" => status.clone()).increment(1);
    metrics::histogram!(m::HTTP_DURATION, "route" => route, "method" => method, "status" => status)
        .record(started.elapsed().as_secs_f64());
    Ok(res)
}

fn build(parts: ApiParts) -> std::io::Result<actix_web::dev::Server> {
    let p = parts.clone();
    let mut server = HttpServer::new(move || {
        let p = p.clone();
        // Outermost last: count → per-address limit → who calls → per-subject limit and
        // audit → body deadline → the router, whose routes each check their role.
        App::new()
            .wrap(actix_web::middleware::from_fn(crate::body::deadline))
            .wrap(actix_web::middleware::from_fn(crate::guard::guard))
            .wrap(actix_web::middleware::from_fn(crate::auth::authenticate))
            .wrap(actix_web::middleware::from_fn(crate::guard::limit_address))
            .wrap(actix_web::middleware::from_fn(count_requests))
            .app_data(web::Data::new(crate::body::BodyTimeout(p.body_timeout)))
            .app_data(web::Data::from(p.auth.clone()))
            .app_data(web::Data::from(p.guard.clone()))
            .app_data(web::Data::new(p.tasks))
            .app_data(web::Data::new(p.cluster))
            .app_data(web::Data::new(p.debug))
            .app_data(web::Data::new(p.admin))
            .app_data(web::Data::new(p.metrics))
            .configure(|cfg| crate::routes::configure(cfg, p.max_body))
    })
    .disable_signals()
    .shutdown_timeout(5);
    if parts.workers > 0 {
        server = server.workers(parts.workers);
    }
    let server = match &parts.tls {
        Some(tls) => server.bind_rustls_0_23(parts.listen, (**tls).clone())?,
        None => server.bind(parts.listen)?,
    };
    Ok(server.run())
}

impl Actor for ApiServer {
    type Msg = ApiMsg;
    type State = ApiState;
    type Arguments = ApiParts;

    async fn pre_start(
        &self,
        myself: ActorRef<ApiMsg>,
        parts: ApiParts,
    ) -> Result<ApiState, ActorProcessingErr> {
        let listen = parts.listen;
        let tls = parts.tls.is_some();
        let server = build(parts).map_err(|e| format!("binding api.listen {listen}: {e}"))?;
        let handle = server.handle();
        tokio::spawn(async move {
            let res = server.await;
            let _ = myself.cast(ApiMsg::ServerExited(match res {
                Ok(()) => "the HTTP server stopped".into(),
                Err(e) => format!("the HTTP server failed: {e}"),
            }));
        });
        tracing::info!(%listen, scheme = if tls { "https" } else { "http" }, "REST API listening");
        Ok(ApiState { handle })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ApiMsg>,
        state: &mut ApiState,
    ) -> Result<(), ActorProcessingErr> {
        state.handle.stop(true).await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<ApiMsg>,
        msg: ApiMsg,
        _state: &mut ApiState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ApiMsg::ServerExited(why) => Err(why.into()),
        }
    }
}

/// The supervisor's view of the Api actor.
pub struct ApiSpec {
    parts: ApiParts,
    slot: Slot<ApiMsg>,
    /// The last server started, stopped before a new one binds (a panicking actor skips
    /// post_stop and would otherwise leave it listening).
    last: Arc<Mutex<Option<ServerHandle>>>,
}

impl ApiSpec {
    pub fn new(parts: ApiParts) -> ApiSpec {
        ApiSpec {
            parts,
            slot: Slot::default(),
            last: Arc::new(Mutex::new(None)),
        }
    }
}

impl ChildSpec for ApiSpec {
    fn name(&self) -> &'static str {
        "api"
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture<'_> {
        Box::pin(async move {
            let previous = self.last.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(h) = previous {
                h.stop(false).await;
            }
            let (r, _) = ApiServer::spawn_linked(
                Some(format!("api-{}", edgerun_actors::now_ms())),
                ApiServer,
                self.parts.clone(),
                supervisor,
            )
            .await?;
            self.slot.set(Some(r.clone()));
            Ok(r.get_cell())
        })
    }

    fn inject_failure(&self) -> bool {
        self.slot.get().is_some_and(|r| {
            r.stop(Some(edgerun_actors::INJECTED_FAILURE.into()));
            true
        })
    }
}
