//! /v1/modules: WebAssembly modules (API.md "WebAssembly tasks").
//!
//! An upload is checked by this node's wasm runtime (it compiles, it is a WASI preview-1
//! command) before anything is stored; its id is the SHA-256 of its bytes, so the same bytes
//! are one module (201 the first time, 200 after). The bytes go into the replicated state
//! (see `edgerun_model::module`).

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use edgerun_model::module::{is_module_id, module_id, ModuleInfo, WasmModule};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{ApiError, ErrorCode};
use crate::handlers::tasks::{submitter, TasksCtx};

/// The wasm runtime uploads are checked with, and the size cap.
#[derive(Clone)]
pub struct ModuleLimits {
    pub runtime: Option<Arc<edgerun_wasm::Runtime>>,
    /// `executor.max_module_bytes` (413 past it).
    pub max_bytes: usize,
}

/// A module's name: what `?name=` and a task's `wasm.module` may say.
const MAX_NAME: usize = 128;

#[derive(Deserialize)]
pub struct UploadQuery {
    name: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModuleView {
    /// `sha256:<hex>` of the bytes.
    pub id: String,
    /// The name it was last uploaded under.
    pub name: String,
    pub size: u64,
    pub created_at: u64,
    pub uploader: String,
}

impl From<ModuleInfo> for ModuleView {
    fn from(m: ModuleInfo) -> ModuleView {
        ModuleView {
            id: m.id,
            name: m.name,
            size: m.size,
            created_at: m.created_ms,
            uploader: m.uploader,
        }
    }
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidModule, msg.into())
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME
        && !n.starts_with("sha256:")
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub async fn upload(
    ctx: web::Data<TasksCtx>,
    req: HttpRequest,
    q: web::Query<UploadQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = q.into_inner().name.unwrap_or_default();
    if !valid_name(&name) {
        return Err(invalid(format!(
            "name: {name:?} must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.' (and not start with sha256:)"
        )));
    }
    let Some(runtime) = ctx.modules.runtime.clone() else {
        return Err(ApiError::Unavailable {
            code: ErrorCode::Unavailable,
            message: "this node has no wasm runtime (see its log at start)".into(),
            details: serde_json::Value::Null,
        });
    };
    let body = crate::body::read_capped(payload, ctx.modules.max_bytes).await?;
    if body.is_empty() {
        return Err(invalid("the body is empty: send the module's .wasm bytes"));
    }
    // Compiling is CPU work: off the API's threads.
    let bytes = web::Bytes::from(body);
    let checked = {
        let (rt, b) = (runtime.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || rt.check(&b).map(|_| ()))
            .await
            .map_err(|e| ApiError::Internal(format!("checking the module: {e}")))?
    };
    match checked {
        Ok(()) => {}
        Err(edgerun_wasm::WasmError::Invalid(why)) => return Err(invalid(why)),
        Err(e) => return Err(ApiError::Internal(format!("checking the module: {e}"))),
    }
    let id = module_id(&bytes);
    let module = WasmModule {
        id: id.clone(),
        name: name.clone(),
        bytes: bytes.to_vec(),
        created_ms: edgerun_actors::now_ms(),
        uploader: submitter(&req),
    };
    let size = module.bytes.len() as u64;
    let created = ctx.proposer.put_module(module).await?;
    let view = ctx
        .node
        .read(|s| s.modules.get(&id).map(|m| ModuleView::from(m.info())))
        .unwrap_or(ModuleView {
            id: id.clone(),
            name,
            size,
            created_at: 0,
            uploader: String::new(),
        });
    Ok(if created {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

pub async fn list(ctx: web::Data<TasksCtx>) -> Result<HttpResponse, ApiError> {
    ctx.barrier(None).await?;
    let modules: Vec<ModuleView> = ctx
        .node
        .read(|s| s.modules.list().map(ModuleView::from).collect());
    Ok(HttpResponse::Ok().json(json!({ "modules": modules })))
}

pub async fn get(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    ctx.barrier(None).await?;
    let id = id.into_inner();
    match ctx
        .node
        .read(|s| s.modules.resolve(&id).map(|m| ModuleView::from(m.info())))
    {
        Some(v) => Ok(HttpResponse::Ok().json(v)),
        None => Err(ApiError::NotFound(format!("no module {id:?}"))),
    }
}

pub async fn delete(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if !is_module_id(&id) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidId,
            format!(
                "{id:?} is not a module id (sha256:<64 hex digits>); a module is deleted by its id"
            ),
        ));
    }
    match ctx.proposer.delete_module(id.clone()).await? {
        Ok(true) => {
            if let Some(rt) = &ctx.modules.runtime {
                if let Some(h) = edgerun_wasm::hash_of_id(&id) {
                    rt.forget(&h);
                }
            }
            Ok(HttpResponse::Ok().json(json!({ "id": id, "deleted": true })))
        }
        Ok(false) => Err(ApiError::NotFound(format!("no module {id}"))),
        Err(why) => Err(ApiError::Conflict {
            code: ErrorCode::ModuleInUse,
            message: format!("module {id} is in use: {why}"),
            details: json!({ "id": id }),
        }),
    }
}
