//! /v1/cluster and /v1/nodes.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use edgerun_actors::{ClusterHandle, MemberChange};
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, ErrorCode};
use crate::handlers::tasks::parse_id;

/// What the cluster handlers need.
#[derive(Clone)]
pub struct ClusterCtx {
    /// This node's Raft replica.
    pub node: ClusterHandle,
    /// How long a membership change forwarded to the leader may take.
    pub timeout: Duration,
    /// What fires now (the Monitor evaluates the rules).
    pub alerts: std::sync::Arc<edgerun_actors::alerts::Alerts>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLearner {
    pub id: u64,
    pub rpc: String,
    pub api: String,
}

/// A member address as `host:port`: a DNS name or an IP address (IPv6 in brackets), a
/// non-zero port. The leader will connect to a learner's `rpc`, so addresses nothing should
/// connect to are refused: unspecified (0.0.0.0, ::), multicast, broadcast and link-local
/// (169.254.0.0/16 holds cloud metadata services; fe80::/10).
fn host_port(field: &str, v: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(
            ErrorCode::InvalidMember,
            format!(
                "{field}: {v:?} {why}; expected host:port, e.g. 10.0.0.4:7204 or n4.example:7204"
            ),
        )
    };
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err(bad("has no port"));
    };
    if !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return Err(bad("has no valid port (1-65535)"));
    }
    let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => Some(
            v6.parse::<std::net::Ipv6Addr>()
                .map(std::net::IpAddr::V6)
                .map_err(|_| bad("has a bracketed host that is not an IPv6 address"))?,
        ),
        None => host
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .map(std::net::IpAddr::V4),
    };
    match ip {
        Some(ip) => {
            let link_local = match ip {
                std::net::IpAddr::V4(a) => a.is_link_local() || a.is_broadcast(),
                std::net::IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
            };
            if ip.is_unspecified() || ip.is_multicast() || link_local {
                return Err(bad("is not an address a member can have"));
            }
        }
        None => {
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            };
            if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
                return Err(bad(
                    "has a host that is neither an IP address nor a DNS name",
                ));
            }
        }
    }
    Ok(())
}

async fn change(ctx: &ClusterCtx, c: MemberChange) -> Result<HttpResponse, ApiError> {
    ctx.node.change_membership(c, ctx.timeout).await?;
    Ok(cluster(web::Data::new(ctx.clone())).await)
}

/// POST /v1/cluster/learners: add a node that replicates but does not vote.
pub async fn add_learner(
    ctx: web::Data<ClusterCtx>,
    body: web::Json<NewLearner>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if b.id == 0 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidMember,
            "id: must be positive",
        ));
    }
    host_port("rpc", &b.rpc)?;
    host_port("api", &b.api)?;
    change(
        &ctx,
        MemberChange::AddLearner {
            id: b.id,
            rpc: b.rpc,
            api: b.api,
        },
    )
    .await
}

/// The member id from the path, or 404 (`hint` says what to do instead).
fn member(ctx: &ClusterCtx, raw: &str, hint: &str) -> Result<u64, ApiError> {
    let id = parse_id(raw)?;
    if ctx.node.is_member(id) {
        Ok(id)
    } else {
        Err(ApiError::NotFound(format!(
            "node {id} is not a member{hint}"
        )))
    }
}

/// POST /v1/cluster/members/{id}/promote: make a learner a voter.
pub async fn promote(
    ctx: web::Data<ClusterCtx>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = member(&ctx, &id, "; add it as a learner first")?;
    change(&ctx, MemberChange::Promote { id }).await
}

/// DELETE /v1/cluster/members/{id}: remove a voter or learner.
pub async fn remove(
    ctx: web::Data<ClusterCtx>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = member(&ctx, &id, "")?;
    change(&ctx, MemberChange::Remove { id }).await
}

pub async fn cluster(ctx: web::Data<ClusterCtx>) -> HttpResponse {
    let m = ctx.node.status();
    let (members, tasks): (Vec<_>, serde_json::Map<String, serde_json::Value>) = ctx.node.read(|s| {
        let tasks = edgerun_model::TaskStatus::ALL
            .iter()
            .map(|st| (st.as_str().to_string(), json!(s.count(*st))))
            .collect();
        let members = m
            .members
            .iter()
            .map(|member| {
                let info = s.nodes.get(&member.id);
                json!({
                    "id": member.id,
                    "tier": info.map(|n| n.tier.as_str()),
                    "role": member.role.as_str(),
                    "api": member.api,
                    "rpc": member.rpc,
                    "state": match info { Some(n) if n.up => "up", Some(_) => "down", None => "unregistered" },
                    "leader": m.leader == Some(member.id),
                })
            })
            .collect();
        (members, tasks)
    });
    HttpResponse::Ok().json(json!({
        "id": ctx.node.id(),
        "leader": m.leader,
        "term": m.term,
        "last_applied": m.last_applied,
        "last_log": m.last_log,
        "snapshot": m.snapshot,
        "purged": m.purged,
        "members": members,
        "tasks": tasks,
    }))
}

pub async fn nodes(ctx: web::Data<ClusterCtx>) -> HttpResponse {
    let nodes: Vec<_> = ctx.node.read(|s| {
        s.nodes
            .values()
            .map(|n| {
                let (cpu, mem) = s.active_on(n.id).fold((0u64, 0u64), |(c, m), t| {
                    (
                        c + u64::from(t.spec.resources.cpu_millis.unwrap_or(0)),
                        m + u64::from(t.spec.resources.memory_mb.unwrap_or(0)),
                    )
                });
                json!({
                    "id": n.id,
                    "cpu_millis": n.cpu_millis,
                    "memory_mb": n.memory_mb,
                    "cpu_millis_used": cpu,
                    "memory_mb_used": mem,
                    "tier": n.tier.as_str(),
                    "labels": n.labels,
                    "api": n.api,
                    "rpc": n.rpc,
                    "slots": n.slots,
                    "load": s.active_count(n.id),
                    "registered_at": n.registered_at_ms,
                    "up": n.up,
                })
            })
            .collect()
    });
    HttpResponse::Ok().json(json!({ "nodes": nodes }))
}

/// GET /v1/alerts: what fires now on this node (cluster-wide rules and its own disk).
pub async fn alerts(ctx: web::Data<ClusterCtx>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "node": ctx.node.id(), "alerts": ctx.alerts.firing() }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn member_addresses_are_checked() {
        for ok in [
            "127.0.0.1:7204",
            "10.0.0.4:1",
            "n4:7204",
            "n4.example.com:7204",
            "[::1]:7204",
            "[2001:db8::1]:80",
        ] {
            assert!(super::host_port("rpc", ok).is_ok(), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            ":7204",
            "0.0.0.0:7204",
            "[::]:7204",
            "169.254.169.254:80",
            "224.0.0.1:7204",
            "255.255.255.255:7204",
            "[fe80::1]:7204",
            "[zz]:7204",
            "a b:7204",
            "-x:7204",
            "x/y:7204",
            "user@host:7204",
        ] {
            assert!(super::host_port("rpc", bad).is_err(), "{bad}");
        }
    }
}
