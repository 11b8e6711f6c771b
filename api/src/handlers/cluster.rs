//! /v1/cluster and /v1/nodes.

use actix_web::{web, HttpResponse};
use edgerun_actors::RaftNode;
use serde_json::json;

/// What the cluster handlers need.
#[derive(Clone)]
pub struct ClusterCtx {
    pub node: RaftNode,
}

pub async fn cluster(ctx: web::Data<ClusterCtx>) -> HttpResponse {
    let m = ctx.node.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let members: Vec<_> = ctx.node.view.read(|s| {
        membership
            .nodes()
            .map(|(id, member)| {
                let info = s.nodes.get(id);
                json!({
                    "id": id,
                    "tier": info.map(|n| n.tier.as_str()),
                    "role": if voters.contains(id) { "voter" } else { "learner" },
                    "api": member.api,
                    "rpc": member.rpc,
                    "state": match info { Some(n) if n.up => "up", Some(_) => "down", None => "unregistered" },
                    "leader": m.current_leader == Some(*id),
                })
            })
            .collect()
    });
    HttpResponse::Ok().json(json!({
        "id": ctx.node.id,
        "leader": m.current_leader,
        "term": m.current_term,
        "last_applied": m.last_applied.map(|l| l.index),
        "members": members,
    }))
}

pub async fn nodes(ctx: web::Data<ClusterCtx>) -> HttpResponse {
    let nodes: Vec<_> = ctx.node.view.read(|s| {
        s.nodes
            .values()
            .map(|n| {
                json!({
                    "id": n.id,
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
