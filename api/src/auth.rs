//! Authentication and roles.
//!
//! `POST /v1/auth/token {"api_key"}` trades an API key for an HS256 JWT (claims `sub`, `role`,
//! `iat`, `exp`). Every other route needs a bearer token whose role is at least the route's
//! (viewer < operator < admin; the table is [`crate::routes::ROUTES`]); `/healthz`,
//! `/readyz`, `/metrics` and the token route are open. [`authenticate`] (before routing)
//! only establishes who calls; [`require`], around each route, decides, so the decision is
//! the matched route's and never the path text's. API keys are kept only as SHA-256 hashes
//! and never logged; a token's subject is the key's id (the first 12 hex digits of that
//! hash), not the key, and a token is honoured only while its key is loaded (a reload that
//! removes the key revokes it).
//! With `auth.enabled = false` every request acts as an anonymous admin (the node warns at
//! start).

use std::path::Path;

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use edgerun_config::secret::{hex, random_bytes};
use edgerun_config::{AuthConfig, AuthRole};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorCode};

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
    /// The API keys in force: a token is honoured only while the key it was issued for is
    /// here (a reload that drops or replaces a key revokes its tokens).
    keys: std::sync::RwLock<Vec<Key>>,
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

/// The configured API keys, or the default admin key in the data dir.
fn key_specs(cfg: &AuthConfig, data_dir: &Path) -> Vec<edgerun_config::ApiKey> {
    if cfg.api_keys.is_empty() {
        vec![edgerun_config::ApiKey {
            key_file: data_dir.join("admin.key"),
            role: AuthRole::Admin,
        }]
    } else {
        cfg.api_keys.clone()
    }
}

/// Each key file read (created if missing), kept as its hash.
fn load_keys(api_keys: &[edgerun_config::ApiKey]) -> Result<Vec<Key>, String> {
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
    Ok(keys)
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
        let api_keys = key_specs(cfg, data_dir);
        if !cfg.enabled {
            return Ok(Auth {
                enabled: false,
                secret: Vec::new(),
                keys: std::sync::RwLock::new(Vec::new()),
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
        let keys = load_keys(&api_keys)?;
        for k in &api_keys {
            tracing::info!(role = ?k.role, key_file = %k.key_file.display(), "API key (trade it for a token at POST /v1/auth/token)");
        }
        Ok(Auth {
            enabled: cfg.enabled,
            secret,
            keys: std::sync::RwLock::new(keys),
            ttl_secs: cfg.token_ttl_secs,
        })
    }

    /// How many API keys are in force (the default admin key counts).
    pub fn key_count(&self) -> usize {
        self.keys.read().map_or(0, |k| k.len())
    }

    /// Read the API keys again (a reload): tokens of keys no longer there stop working at
    /// once. True when the set of keys or roles changed. A key file that cannot be read
    /// changes nothing and says why.
    pub fn reload_keys(&self, cfg: &AuthConfig, data_dir: &Path) -> Result<bool, String> {
        if !self.enabled {
            return Ok(false);
        }
        let fresh = load_keys(&key_specs(cfg, data_dir))?;
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let ids = |k: &[Key]| -> Vec<(String, Role)> {
            let mut v: Vec<_> = k.iter().map(|k| (k.id.clone(), k.role)).collect();
            v.sort();
            v
        };
        let changed = ids(&keys) != ids(&fresh);
        if changed {
            tracing::warn!(
                before = keys.len(),
                after = fresh.len(),
                "API keys changed: tokens of removed keys are refused from now on"
            );
        }
        *keys = fresh;
        Ok(changed)
    }

    /// A token for `api_key`, or none for an unknown key.
    pub fn issue(&self, api_key: &str) -> Result<Option<(String, Role, u64)>, ApiError> {
        let h = sha256(api_key.trim().as_bytes());
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        // Compare every key's hash in full (no early exit on the first byte).
        let found = keys.iter().fold(None, |found, k| {
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
            Ok(d) => {
                // The key must still be in force; its role now caps the token's.
                let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
                let Some(k) = keys.iter().find(|k| k.id == d.claims.sub) else {
                    return Err(unauthorized(
                        ErrorCode::TokenRevoked,
                        "the API key this token was issued for is no longer accepted; get a token for a current key",
                    ));
                };
                Ok(Principal {
                    subject: d.claims.sub,
                    role: d.claims.role.min(k.role),
                    authenticated: true,
                })
            }
            Err(e) => Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => unauthorized(
                    ErrorCode::TokenExpired,
                    "the token has expired; get a new one from POST /v1/auth/token",
                ),
                _ => unauthorized(
                    ErrorCode::InvalidToken,
                    "the token is not valid for this cluster",
                ),
            }),
        }
    }
}

fn unauthorized(code: ErrorCode, message: &str) -> ApiError {
    ApiError::Unauthorized {
        code,
        message: message.to_string(),
    }
}

/// Why a bearer token was not accepted, kept for the route to answer with if it needs a
/// token (an open route ignores a bad one).
#[derive(Clone, Debug)]
pub struct TokenRefused {
    pub code: ErrorCode,
    pub message: String,
}

/// The role the matched route needs (`None`: open), recorded by [`require`] for the audit.
#[derive(Clone, Copy, Debug)]
pub struct RouteNeed(pub Option<Role>);

/// Middleware for every request, before routing: establish who is calling from the bearer
/// token (or the anonymous admin when auth is off). Nothing is refused here: the route that
/// matches decides what it needs ([`require`]).
pub async fn authenticate<B: actix_web::body::MessageBody + 'static>(
    req: ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let auth = req.app_data::<web::Data<Auth>>().cloned();
    match &auth {
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
            if let Some(t) = bearer {
                match a.verify(t) {
                    Ok(p) => {
                        req.extensions_mut().insert(p);
                    }
                    Err(ApiError::Unauthorized { code, message }) => {
                        req.extensions_mut().insert(TokenRefused { code, message });
                    }
                    Err(e) => {
                        req.extensions_mut().insert(TokenRefused {
                            code: ErrorCode::InvalidToken,
                            message: e.to_string(),
                        });
                    }
                }
            }
        }
        _ => {
            let subject = req
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|| "unknown".into());
            req.extensions_mut().insert(Principal {
                subject,
                role: Role::Admin,
                authenticated: false,
            });
        }
    }
    next.call(req).await
}

/// Middleware of one route: refuse the call unless the caller has `need` (401 without a
/// valid token, 403 with too weak a role). `None` lets anyone in.
pub async fn require<B: actix_web::body::MessageBody + 'static>(
    need: Option<Role>,
    req: ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<B>>, actix_web::Error> {
    req.extensions_mut().insert(RouteNeed(need));
    if let Err(e) = allowed(need, &req) {
        return Ok(req.error_response(e).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

fn allowed(need: Option<Role>, req: &ServiceRequest) -> Result<(), ApiError> {
    let Some(need) = need else { return Ok(()) };
    let ext = req.extensions();
    let Some(p) = ext.get::<Principal>() else {
        return Err(match ext.get::<TokenRefused>() {
            Some(r) => unauthorized(r.code, &r.message),
            None => unauthorized(
                ErrorCode::MissingToken,
                "this call needs a bearer token (Authorization: Bearer <token> from POST /v1/auth/token)",
            ),
        });
    };
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
    Ok(())
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
            ErrorCode::AuthDisabled,
            "authentication is off on this node (auth.enabled = false): no token is needed",
        ));
    }
    match auth.issue(&body.api_key)? {
        Some((token, role, ttl)) => Ok(HttpResponse::Ok().json(json!({
            "token": token, "expires_in": ttl, "role": role.as_str()
        }))),
        None => Err(unauthorized(
            ErrorCode::InvalidApiKey,
            "the API key is not known",
        )),
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
