//! /v1/debug: fault injection for the supervision and chaos tests, only with
//! `debug.fault_injection`.

use actix_web::{web, HttpResponse};
use edgerun_actors::{NetFaults, Slot, SupervisorMsg};
use serde_json::json;

use crate::error::{ApiError, ErrorCode};

#[derive(Clone)]
pub struct DebugCtx {
    pub enabled: bool,
    pub supervisor: Slot<SupervisorMsg>,
}

pub async fn fail_actor(
    ctx: web::Data<DebugCtx>,
    actor: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require(&ctx)?;
    let Some(sup) = ctx.supervisor.get() else {
        return Err(ApiError::Unavailable {
            code: ErrorCode::Unavailable,
            message: "the supervisor is not running".into(),
            details: json!(null),
        });
    };
    let actor = actor.into_inner();
    let res = sup
        .call(
            |reply| SupervisorMsg::InjectFailure {
                actor: actor.clone(),
                reply,
            },
            None,
        )
        .await;
    match res {
        Ok(ractor::rpc::CallResult::Success(Ok(()))) => {
            Ok(HttpResponse::Accepted().json(json!({ "failed": actor })))
        }
        Ok(ractor::rpc::CallResult::Success(Err(msg))) => Err(ApiError::Conflict {
            code: ErrorCode::NotRunning,
            message: msg,
            details: json!(null),
        }),
        _ => Err(ApiError::Unavailable {
            code: ErrorCode::Unavailable,
            message: "the supervisor is stopping".into(),
            details: json!(null),
        }),
    }
}

fn require(ctx: &DebugCtx) -> Result<(), ApiError> {
    if ctx.enabled {
        Ok(())
    } else {
        Err(ApiError::NotFound(
            "fault injection is off (debug.fault_injection = false)".into(),
        ))
    }
}

/// `PUT /v1/debug/net`: set the faults on this node's outgoing cluster RPC (replaces any
/// earlier ones); `{}` heals.
pub async fn set_net(
    ctx: web::Data<DebugCtx>,
    faults: web::Json<NetFaults>,
) -> Result<HttpResponse, ApiError> {
    require(&ctx)?;
    let faults = faults.into_inner();
    if faults.loss_percent > 100 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            format!(
                "loss_percent: {} is not a share; accepted: 0 to 100",
                faults.loss_percent
            ),
        ));
    }
    tracing::warn!(?faults, "fault injection: cluster RPC faults set");
    edgerun_actors::set_net_faults(faults);
    Ok(HttpResponse::Ok().json(edgerun_actors::net_faults()))
}

/// `GET /v1/debug/net`: the faults in force.
pub async fn get_net(ctx: web::Data<DebugCtx>) -> Result<HttpResponse, ApiError> {
    require(&ctx)?;
    Ok(HttpResponse::Ok().json(edgerun_actors::net_faults()))
}
