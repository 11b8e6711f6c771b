//! Alerts: thresholds from `[alerts]` checked by the Monitor every tick.
//!
//! Rules (each off at 0 / false):
//! - `node_down`: a registered node is marked down (one alert per node);
//! - `pending_over`: more than N tasks pending;
//! - `failure_rate_percent`: of the tasks that ended in the last `failure_window_secs` (at
//!   least `failure_min_finished` of them), more than X% failed or timed out;
//! - `disk_percent`: the file system holding this node's data dir is more than Y% full.
//!
//! Every node evaluates the cluster rules on its replicated state (so `GET /v1/alerts` answers
//! the same anywhere) and the disk rule for itself. A change (firing or resolved) is a log
//! line and, with `webhook_url`, a JSON POST; for cluster rules only the leader logs and posts,
//! so one change is reported once. `edgerun_alerts_firing{alert}` counts what fires.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use edgerun_model::{ClusterState, TaskStatus};
use serde::Serialize;

use crate::metrics_names as m;

/// The thresholds (`[alerts]`).
#[derive(Debug, Clone)]
pub struct AlertRules {
    pub node_down: bool,
    pub pending_over: u64,
    pub failure_rate_percent: f64,
    pub failure_window_ms: u64,
    pub failure_min_finished: u64,
    pub disk_percent: f64,
    pub webhook_url: Option<String>,
}

/// The kinds, for the metric's label.
pub const KINDS: [&str; 4] = ["node_down", "pending", "failure_rate", "disk"];

/// One firing alert.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    /// Unique while firing: the kind, and for node_down/disk the node (`node_down:3`).
    pub name: String,
    pub kind: &'static str,
    pub message: String,
    /// When it started firing (ms since the epoch).
    pub since_ms: u64,
    /// Cluster-wide (evaluated from the replicated state) or about this node only.
    pub cluster: bool,
}

/// A found condition: (name, kind, message, cluster-wide).
type Found = (String, &'static str, String, bool);

/// What the rules find in `state` (and this node's disk use), now.
pub fn evaluate(
    rules: &AlertRules,
    state: &ClusterState,
    now_ms: u64,
    me: u64,
    disk_used_percent: Option<f64>,
) -> Vec<Found> {
    let mut out = Vec::new();
    if rules.node_down {
        for n in state.nodes.values().filter(|n| !n.up) {
            let since = n
                .down_since_ms
                .map(|s| format!(" for {} s", now_ms.saturating_sub(s) / 1000))
                .unwrap_or_default();
            out.push((
                format!("node_down:{}", n.id),
                "node_down",
                format!(
                    "node {} ({}, {}) is down{since}",
                    n.id,
                    n.tier.as_str(),
                    n.api
                ),
                true,
            ));
        }
    }
    if rules.pending_over > 0 {
        let pending = state.count(TaskStatus::Pending);
        if pending > rules.pending_over {
            out.push((
                "pending".into(),
                "pending",
                format!("{pending} tasks pending (threshold {})", rules.pending_over),
                true,
            ));
        }
    }
    if rules.failure_rate_percent > 0.0 {
        let since = now_ms.saturating_sub(rules.failure_window_ms);
        let (mut ended, mut bad) = (0u64, 0u64);
        for t in state.finished() {
            if t.finished_at_ms.is_some_and(|f| f >= since) {
                match t.status {
                    TaskStatus::Succeeded => ended += 1,
                    TaskStatus::Failed | TaskStatus::TimedOut => {
                        ended += 1;
                        bad += 1;
                    }
                    _ => {}
                }
            }
        }
        if ended >= rules.failure_min_finished.max(1) {
            let rate = 100.0 * bad as f64 / ended as f64;
            if rate > rules.failure_rate_percent {
                out.push((
                    "failure_rate".into(),
                    "failure_rate",
                    format!(
                        "{rate:.0}% of the {ended} tasks that ended in the last {} s failed or timed out (threshold {}%)",
                        rules.failure_window_ms / 1000,
                        rules.failure_rate_percent
                    ),
                    true,
                ));
            }
        }
    }
    if rules.disk_percent > 0.0 {
        if let Some(used) = disk_used_percent.filter(|u| *u > rules.disk_percent) {
            out.push((
                format!("disk:{me}"),
                "disk",
                format!(
                    "node {me}'s data disk is {used:.0}% full (threshold {}%)",
                    rules.disk_percent
                ),
                false,
            ));
        }
    }
    out
}

/// A change to report.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub alert: Alert,
    /// "firing" or "resolved".
    pub state: &'static str,
    pub node: u64,
    pub ts_ms: u64,
}

/// The firing alerts of this node, shared by the Monitor (writer) and the API (reader).
pub struct Alerts {
    pub rules: AlertRules,
    firing: Mutex<BTreeMap<String, Alert>>,
}

impl Alerts {
    pub fn new(rules: AlertRules) -> Alerts {
        for k in KINDS {
            metrics::gauge!(m::ALERTS_FIRING, "alert" => k).set(0.0);
        }
        Alerts {
            rules,
            firing: Mutex::new(BTreeMap::new()),
        }
    }

    /// What fires now, oldest first.
    pub fn firing(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self
            .firing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|a| (a.since_ms, a.name.clone()));
        v
    }

    /// Take what the rules found now; return the changes since the last call.
    pub fn update(&self, found: Vec<Found>, me: u64, now_ms: u64) -> Vec<Change> {
        let mut firing = self.firing.lock().unwrap_or_else(|p| p.into_inner());
        let mut changes = Vec::new();
        let names: std::collections::BTreeSet<String> = found.iter().map(|f| f.0.clone()).collect();
        let gone: Vec<String> = firing
            .keys()
            .filter(|k| !names.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(a) = firing.remove(&k) {
                changes.push(Change {
                    alert: a,
                    state: "resolved",
                    node: me,
                    ts_ms: now_ms,
                });
            }
        }
        for (name, kind, message, cluster) in found {
            match firing.get_mut(&name) {
                Some(a) => a.message = message,
                None => {
                    let a = Alert {
                        name: name.clone(),
                        kind,
                        message,
                        since_ms: now_ms,
                        cluster,
                    };
                    firing.insert(name, a.clone());
                    changes.push(Change {
                        alert: a,
                        state: "firing",
                        node: me,
                        ts_ms: now_ms,
                    });
                }
            }
        }
        for k in KINDS {
            let n = firing.values().filter(|a| a.kind == k).count();
            metrics::gauge!(m::ALERTS_FIRING, "alert" => k).set(n as f64);
        }
        changes
    }

    /// Log and post `changes`; cluster-wide ones only when `leading`.
    pub fn report(&self, changes: Vec<Change>, leading: bool) {
        for c in changes {
            if c.alert.cluster && !leading {
                continue;
            }
            match c.state {
                "firing" => {
                    tracing::warn!(alert = %c.alert.name, "ALERT firing: {}", c.alert.message)
                }
                _ => tracing::info!(alert = %c.alert.name, "alert resolved: {}", c.alert.message),
            }
            if let Some(url) = self.rules.webhook_url.clone() {
                tokio::task::spawn_blocking(move || post(&url, &c));
            }
        }
    }
}

/// POST one change as JSON; failures are logged, never retried (the next change comes).
fn post(url: &str, c: &Change) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let body = match serde_json::to_value(c) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "encoding an alert for the webhook");
            return;
        }
    };
    if let Err(e) = agent.post(url).send_json(body) {
        tracing::warn!(alert = %c.alert.name, error = %e, "alert webhook failed");
    }
}

/// Percent used of the file system holding `path`.
pub fn disk_used_percent(path: &std::path::Path) -> Option<f64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let total = s.blocks() as f64 * s.fragment_size() as f64;
    let avail = s.blocks_available() as f64 * s.fragment_size() as f64;
    (total > 0.0).then(|| 100.0 * (total - avail) / total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AlertRules {
        AlertRules {
            node_down: true,
            pending_over: 2,
            failure_rate_percent: 50.0,
            failure_window_ms: 60_000,
            failure_min_finished: 2,
            disk_percent: 90.0,
            webhook_url: None,
        }
    }

    #[test]
    fn disk_rule_and_transitions() {
        let s = ClusterState::new();
        let r = rules();
        assert!(evaluate(&r, &s, 1000, 1, Some(50.0)).is_empty());
        let found = evaluate(&r, &s, 1000, 1, Some(95.0));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "disk:1");
        let a = Alerts::new(r);
        let ch = a.update(found.clone(), 1, 1000);
        assert_eq!((ch.len(), ch[0].state), (1, "firing"));
        assert!(
            a.update(found, 1, 2000).is_empty(),
            "still firing: no change"
        );
        assert_eq!(a.firing()[0].since_ms, 1000);
        let ch = a.update(Vec::new(), 1, 3000);
        assert_eq!((ch.len(), ch[0].state), (1, "resolved"));
        assert!(a.firing().is_empty());
    }
}
