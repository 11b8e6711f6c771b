//! The ChildSpecs of the core actors (the Api's lives in the api crate).

use std::sync::Arc;
use std::time::Duration;

use crate::executor::Executor;
use edgerun_model::NodeInfo;
use edgerun_raft::RaftNode;
use ractor::{Actor, ActorCell};

use crate::child::{ChildSpec, Slot, SpawnFuture};
use crate::cluster::{ClusterRpc, ClusterRpcArgs, LeaderHandler};
use crate::monitor::{Monitor, MonitorArgs};
use crate::scheduler::{Scheduler, SchedulerArgs, SchedulerMsg};
use crate::shard::{ShardArgs, ShardMsg, StateShard};
use crate::streams::{ManagerArgs, RunnerCtx, StreamManager};
use crate::worker::{Worker, WorkerArgs};
use crate::Proposer;

/// Everything the core actors are built from.
#[derive(Clone)]
pub struct CoreParts {
    pub node: RaftNode,
    pub info: NodeInfo,
    pub executor: Arc<dyn Executor>,
    pub default_memory_mb: u32,
    pub slots: u32,
    pub default_timeout: Duration,
    pub max_batch: usize,
    /// Where cluster RPC listens.
    pub rpc_listen: std::net::SocketAddr,
    pub heartbeat: Duration,
    pub lease: Duration,
    /// Off-Raft results, and the size above which a result goes there.
    pub results: edgerun_raft::ResultStore,
    pub inline_result_max: usize,
    pub outbox: edgerun_raft::Outbox,
    pub policy: crate::scheduler::Policy,
    pub retention: crate::scheduler::Retention,
    pub forward_timeout: Duration,
    /// `debug.kernel_delay_ms`.
    pub kernel_delay: Duration,
    pub alerts: Arc<crate::alerts::Alerts>,
    pub data_dir: std::path::PathBuf,
    /// Scheduled backups (`[backup]`); none when off.
    pub backups: Option<crate::monitor::BackupPlan>,
    /// The result cache (`[cache]`); none when off.
    pub cache: Option<Arc<crate::cache::ResultCache>>,
    /// `[streams]`, and the door POSTed records come in by.
    pub streams: StreamsParts,
}

/// What the StreamManager and its runners are built from.
#[derive(Clone)]
pub struct StreamsParts {
    pub ingress: crate::streams::Ingress,
    pub files_dir: std::path::PathBuf,
    pub max_record_bytes: usize,
    pub queue_batches: usize,
    pub max_restarts: u32,
    pub window: Duration,
    /// `streams.http_sink_allow`, parsed.
    pub http_allow: Arc<Vec<edgerun_config::allow::Allowed>>,
    /// The kernels a window step may run.
    pub kernels: Arc<dyn edgerun_cpp::Kernels>,
    /// Checkpoints kept by hash, and the size above which a checkpoint goes there.
    pub checkpoints: edgerun_raft::CheckpointStore,
    pub inline_checkpoint_bytes: usize,
}

/// Spawns an actor into a slot and fails it on request.
struct Spec<M: ractor::Message> {
    name: &'static str,
    slot: Slot<M>,
    start: Box<dyn Fn(ActorCell, Slot<M>) -> SpawnFuture<'static> + Send + Sync>,
}

impl<M: ractor::Message> ChildSpec for Spec<M> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture<'_> {
        (self.start)(supervisor, self.slot.clone())
    }

    fn inject_failure(&self) -> bool {
        self.slot.get().is_some_and(|r| {
            r.stop(Some(crate::INJECTED_FAILURE.into()));
            true
        })
    }
}

fn spec<A, F>(name: &'static str, slot: Slot<A::Msg>, make: F) -> Arc<dyn ChildSpec>
where
    A: Actor,
    F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    Arc::new(Spec {
        name,
        slot,
        start: Box::new(move |sup, slot| {
            let make = make.clone();
            Box::pin(async move {
                let (actor, args) = make();
                let (r, _) = A::spawn_linked(
                    Some(format!("{name}-{}", crate::now_ms())),
                    actor,
                    args,
                    sup,
                )
                .await?;
                slot.set(Some(r.clone()));
                Ok(r.get_cell())
            })
        }),
    })
}

/// The core children in start order, and the proposer that reaches the StateShard.
pub fn core_children(p: CoreParts) -> (Vec<Arc<dyn ChildSpec>>, Proposer) {
    let shard: Slot<ShardMsg> = Slot::default();
    let scheduler: Slot<SchedulerMsg> = Slot::default();
    let proposer = Proposer::new(shard.clone());
    let mut out: Vec<Arc<dyn ChildSpec>> = Vec::new();
    {
        let p = p.clone();
        out.push(spec::<StateShard, _>("state_shard", shard, move || {
            (
                StateShard,
                ShardArgs {
                    node: p.node.clone(),
                    max_batch: p.max_batch,
                    forward_timeout: p.forward_timeout,
                },
            )
        }));
    }
    {
        let handler = Arc::new(LeaderHandler {
            node: p.node.clone(),
            proposer: proposer.clone(),
            scheduler: scheduler.clone(),
            results: p.results.clone(),
            ingress: p.streams.ingress.clone(),
            checkpoints: p.streams.checkpoints.clone(),
        });
        let listen = p.rpc_listen;
        out.push(spec::<ClusterRpc, _>(
            "cluster_rpc",
            Slot::default(),
            move || {
                (
                    ClusterRpc,
                    ClusterRpcArgs {
                        listen,
                        handler: handler.clone(),
                    },
                )
            },
        ));
    }
    {
        let (p, proposer, scheduler) = (p.clone(), proposer.clone(), scheduler.clone());
        out.push(spec::<Monitor, _>("monitor", Slot::default(), move || {
            (
                Monitor,
                MonitorArgs {
                    node: p.node.clone(),
                    proposer: proposer.clone(),
                    info: p.info.clone(),
                    scheduler: scheduler.clone(),
                    heartbeat: p.heartbeat,
                    alerts: p.alerts.clone(),
                    data_dir: p.data_dir.clone(),
                    backups: p.backups.clone(),
                },
            )
        }));
    }
    {
        let (p, proposer) = (p.clone(), proposer.clone());
        out.push(spec::<Scheduler, _>("scheduler", scheduler, move || {
            (
                Scheduler,
                SchedulerArgs {
                    node: p.node.clone(),
                    proposer: proposer.clone(),
                    lease: p.lease,
                    policy: p.policy,
                    retention: p.retention,
                },
            )
        }));
    }
    {
        let (p, proposer) = (p.clone(), proposer.clone());
        out.push(spec::<Worker, _>("worker", Slot::default(), move || {
            (
                Worker,
                WorkerArgs {
                    node: p.node.clone(),
                    proposer: proposer.clone(),
                    executor: p.executor.clone(),
                    slots: p.slots,
                    default_timeout: p.default_timeout,
                    delay: p.kernel_delay,
                    default_memory_mb: p.default_memory_mb,
                    results: p.results.clone(),
                    inline_result_max: p.inline_result_max,
                    outbox: p.outbox.clone(),
                    cache: p.cache.clone(),
                },
            )
        }));
    }
    {
        let (p, proposer) = (p.clone(), proposer.clone());
        out.push(spec::<StreamManager, _>(
            "streams",
            Slot::default(),
            move || {
                let s = &p.streams;
                (
                    StreamManager,
                    ManagerArgs {
                        node: p.node.clone(),
                        ctx: RunnerCtx {
                            node: p.node.id,
                            proposer: proposer.clone(),
                            ingress: s.ingress.clone(),
                            files_dir: s.files_dir.clone(),
                            max_record_bytes: s.max_record_bytes,
                            queue_batches: s.queue_batches,
                            http_allow: s.http_allow.clone(),
                            kernels: s.kernels.clone(),
                            raft: p.node.clone(),
                            checkpoints: s.checkpoints.clone(),
                            inline_checkpoint_bytes: s.inline_checkpoint_bytes,
                        },
                        max_restarts: s.max_restarts,
                        window: s.window,
                    },
                )
            },
        ));
    }
    (out, proposer)
}
