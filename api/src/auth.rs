//! Authentication and roles.
//!
//! `POST /v1/auth/token {"api_key"}` trades an API key for an HS256 JWT (claims `sub`, `role`,
//! `iat`, `exp`). Every other route needs a bearer token whose role is at least the route's
//! (viewer < operator < admin; see [`required_role`]); `/healthz`, `/readyz`, `/metrics` and
//! the token route are open. API keys are kept only as SHA-256 hashes and never logged; a
//! token's subject is the key's id (the first 12 hex digits of that hash), not the key.
//! With `auth.enabled = false` every request acts as an anonymous admin (the node warns at
//! start).

use std::path::Path;

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use edgerun_config::secret::{hex, random_bytes};
use edgerun_config::{AuthConfig, AuthRole};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Roles in increasing power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl From<AuthRole> for Role {
    fn from(r: AuthRole) -> Role {
        match r {
            AuthRole::Admin => Role::Admin,
            AuthRole::Operator => Role::Operator,
            AuthRole::Viewer => Role::Viewer,
        }
    }
}

/// Who is calling, as the middleware established it (in the request's extensions).
#[derive(Clone, Debug)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    /// False when auth is off (the subject is then the client's address).
    pub authenticated: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    iat: u64,
    exp: u64,
}

struct Key {
    hash: [u8; 32],
    id: String,
    role: Role,
}

pub struct Auth {
    pub enabled: bool,
    secret: Vec<u8>,
    keys: Vec<Key>,
    ttl_secs: u64,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A secret file's contents, created if missing (and said so in the log).
fn read_or_create(
    path: &Path,
    what: &str,
    make: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let s = edgerun_config::secret::read_or_create(path, what, make)?;
    if s.created {
        tracing::warn!(path = %path.display(), "created {what} (mode 0600)");
    }
    Ok(s.bytes)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Auth {
    /// Everything from `[auth]`: the secret and the keys (created if missing); the defaults
    /// live in `data_dir`.
    pub fn load(cfg: &AuthConfig, data_dir: &Path) -> Result<Auth, String> {
        let secret_file = if cfg.jwt_secret_file.as_os_str().is_empty() {
            data_dir.join("jwt.secret")
        } else {
            cfg.jwt_secret_file.clone()
        };
        let default_keys = [edgerun_config::ApiKey {
            key_file: data_dir.join("admin.key"),
            role: AuthRole::Admin,
        }];
        let api_keys: &[edgerun_config::ApiKey] = if cfg.api_keys.is_empty() {
            &default_keys
        } else {
            &cfg.api_keys
        };
        if !cfg.enabled {
            return Ok(Auth {
                enabled: false,
                secret: Vec::new(),
                keys: Vec::new(),
                ttl_secs: cfg.token_ttl_secs,
            });
        }
        let secret = read_or_create(&secret_file, "the JWT secret", || {
            random_bytes(32).map(|b| hex(&b).into_bytes())
        })?;
        let secret: Vec<u8> = String::from_utf8_lossy(&secret).trim().as_bytes().to_vec();
        if secret.len() < 16 {
            return Err(format!(
                "auth.jwt_secret_file {}: the secret is {} bytes; at least 16 are needed",
                secret_file.display(),
                secret.len()
            ));
        }
        let mut keys = Vec::new();
        for (i, k) in api_keys.iter().enumerate() {
            let raw = read_or_create(&k.key_file, "an API key", || {
                random_bytes(24).map(|b| format!("er_{}", hex(&b)).into_bytes())
            })?;
            let key = String::from_utf8_lossy(&raw).trim().to_string();
            if key.len() < 16 {
                return Err(format!(
                    "auth.api_keys[{i}].key_file {}: the key is shorter than 16 characters",
                    k.key_file.display()
                ));
            }
            let hash = sha256(key.as_bytes());
            keys.push(Key {
                id: format!("key:{}", &hex(&hash)[..12]),
                hash,
                role: k.role.into(),
            });
        }
        for k in api_keys {
            tracing::info!(role = ?k.role, key_file = %k.key_file.display(), "API key (trade it for a token at POST /v1/auth/token)");
        }
        Ok(Auth {
            enabled: cfg.enabled,
            secret,
            keys,
            ttl_secs: cfg.token_ttl_secs,
        })
    }

    /// A token for `api_key`, or none for an unknown key.
    pub fn issue(&self, api_key: &str) -> Result<Option<(String, Role, u64)>, ApiError> {
        let h = sha256(api_key.trim().as_bytes());
        // Compare every key's hash in full (no early exit on the first byte).
        let found = self.keys.iter().fold(None, |found, k| {
            let same = k
                .hash
                .iter()
                .zip(h.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            if same {
                Some(k)
            } else {
                found
            }
        });
        let Some(k) = found else { return Ok(None) };
        let iat = now_secs();
        let claims = Claims {
            sub: k.id.clone(),
            role: k.role,
            iat,
            exp: iat + self.ttl_secs,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))?;
        Ok(Some((token, k.role, self.ttl_secs)))
    }

    /// The principal of a bearer token.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        match jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&self.secret), &v) {
            Ok(d) => Ok(Principal {
                subject: d.claims.sub,
                role: d.claims.role,
                authenticated: true,
            }),
            Err(e) => Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => unauthorized(
                    "token_expired",
                    "the token has expired; get a new one from POST /v1/auth/token",
                ),
                _ => unauthorized("invalid_token", "the token is not valid for this cluster"),
            }),
        }
    }
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::Unauthorized {
        code,
        message: message.to_string(),
    }
}

/// The least role a route needs; `None` = open to anyone.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    let p = path.trim_end_matches('/');
    if matches!(
        p,
        "" | "/healthz" | "/readyz" | "/metrics" | "/v1/auth/token" | "/v1/openapi.json"
    ) {
        return None;
    }
    let admin =
        p.starts_with("/v1/cluster/") || p.starts_with("/v1/debug/") || p.starts_with("/v1/admin/");
    if admin {
        return Some(Role::Admin);
    }
    if *method == Method::GET || *method == Method::HEAD {
        return Some(Role::Viewer);
    }
    Some(Role::Operator)
}

/// Middleware: establish the principal and check the route's role. A refusal is answered here
/// (401/403 in the usual error shape).
pub async fn authorize<B: actix_web::body::MessageBody + 'static>(
    req: ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<B>>, actix_web::Error> {
    match check(&req) {
        Ok(p) => {
            if let Some(p) = p {
                req.extensions_mut().insert(p);
            }
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(e) => {
            // A refused write is audited too (reads are not audited).
            if let Some(g) = req.app_data::<web::Data<crate::guard::Guard>>() {
                if req.method() != Method::GET && req.method() != Method::HEAD {
                    let status = actix_web::ResponseError::status_code(&e).as_u16();
                    g.audit_refused(&req, e.code(), status);
                }
            }
            Ok(req.error_response(e).map_into_right_body())
        }
    }
}

fn check(req: &ServiceRequest) -> Result<Option<Principal>, ApiError> {
    let auth = req.app_data::<web::Data<Auth>>().cloned();
    let need = required_role(req.method(), req.path());
    let principal = match &auth {
        Some(a) if a.enabled => {
            let bearer = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| {
                    h.strip_prefix("Bearer ")
                        .or_else(|| h.strip_prefix("bearer "))
                })
                .map(str::trim);
            match (bearer, need) {
                (Some(t), _) => match a.verify(t) {
                    Ok(p) => Some(p),
                    Err(e) if need.is_some() => return Err(e),
                    Err(_) => None,
                },
                (None, Some(_)) => {
                    return Err(unauthorized(
                        "missing_token",
                        "this call needs a bearer token (Authorization: Bearer <token> from POST /v1/auth/token)",
                    ))
                }
                (None, None) => None,
            }
        }
        _ => Some(Principal {
            subject: req
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|| "unknown".into()),
            role: Role::Admin,
            authenticated: false,
        }),
    };
    if let (Some(need), Some(p)) = (need, &principal) {
        if p.role < need {
            return Err(ApiError::Forbidden {
                message: format!(
                    "this call needs the {} role; the token has {}",
                    need.as_str(),
                    p.role.as_str()
                ),
                need: need.as_str(),
            });
        }
    }
    Ok(principal)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub api_key: String,
}

/// POST /v1/auth/token
pub async fn token(
    auth: web::Data<Auth>,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    if !auth.enabled {
        return Err(ApiError::bad_request(
            "auth_disabled",
            "authentication is off on this node (auth.enabled = false): no token is needed",
        ));
    }
    match auth.issue(&body.api_key)? {
        Some((token, role, ttl)) => Ok(HttpResponse::Ok().json(json!({
            "token": token, "expires_in": ttl, "role": role.as_str()
        }))),
        None => Err(unauthorized("invalid_api_key", "the API key is not known")),
    }
}

/// The caller's subject: the token's when authenticated, else the client's address.
pub fn subject(req: &HttpRequest) -> String {
    req.extensions()
        .get::<Principal>()
        .map(|p| p.subject.clone())
        .or_else(|| req.peer_addr().map(|a| a.ip().to_string()))
        .unwrap_or_else(|| "unknown".into())
}
