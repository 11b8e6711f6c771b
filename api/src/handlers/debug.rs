//! /v1/debug: fault injection for supervision tests, only with `debug.fault_injection`.

use actix_web::{web, HttpResponse};
use edgerun_actors::{Slot, SupervisorMsg};
use serde_json::json;

use crate::error::ApiError;

#[derive(Clone)]
pub struct DebugCtx {
    pub enabled: bool,
    pub supervisor: Slot<SupervisorMsg>,
}

pub async fn fail_actor(
    ctx: web::Data<DebugCtx>,
    actor: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !ctx.enabled {
        return Err(ApiError::NotFound(
            "fault injection is off (debug.fault_injection = false)".into(),
        ));
    }
    let Some(sup) = ctx.supervisor.get() else {
        return Err(ApiError::Unavailable {
            code: "unavailable",
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
            code: "not_running",
            message: msg,
            details: json!(null),
        }),
        _ => Err(ApiError::Unavailable {
            code: "unavailable",
            message: "the supervisor is stopping".into(),
            details: json!(null),
        }),
    }
}
