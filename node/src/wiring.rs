//! The boot sequence of a node: linear steps, one log line each.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use edgerun_actors::executor::{Executor, InprocExecutor, ProcessExecutor, ProcessLimits};
use edgerun_actors::{
    core_children, CoreParts, CppKernels, Kernels, NodeExit, NodeSupervisor, Slot, SupervisorArgs,
    SupervisorMsg,
};
use edgerun_api::{ApiParts, ApiSpec, ClusterCtx, DebugCtx, TasksCtx};
use edgerun_config::{IsolationMode, NodeConfig};
use edgerun_model::NodeInfo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ractor::Actor;
use tokio::sync::watch;

/// Log to stderr; `EDGERUN_LOG` (or `RUST_LOG`) sets the filter.
pub fn init_logging() {
    let filter = std::env::var("EDGERUN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,openraft=warn,sled=warn,actix_server=warn,actix_web=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")
}

/// Run a node until it is told to stop (Ctrl-C, SIGTERM) or its supervisor gives up.
pub fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("edgerun")
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run_node(cfg, shutdown_signal()))
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The executor for `executor.isolation`, saying at start what was chosen and why.
fn choose_executor(
    cfg: &NodeConfig,
    kernels: Arc<dyn Kernels>,
) -> anyhow::Result<Arc<dyn Executor>> {
    let process = || -> anyhow::Result<Arc<dyn Executor>> {
        let exe =
            std::env::current_exe().context("finding the edgerun binary for process isolation")?;
        Ok(Arc::new(ProcessExecutor {
            limits: ProcessLimits {
                exe,
                allow_exec: cfg.executor.allow_exec_without_container,
            },
        }))
    };
    match cfg.executor.isolation {
        IsolationMode::Inproc => {
            tracing::warn!("executor: inproc (kernels on threads inside the node, no isolation; for benchmarks)");
            Ok(Arc::new(InprocExecutor { kernels }))
        }
        IsolationMode::Process => {
            tracing::info!("executor: process (a child process per attempt with rlimits and a timeout)");
            process()
        }
        IsolationMode::Auto => {
            tracing::info!("executor: process, because this build has no container executor yet (executor.isolation = auto)");
            process()
        }
        IsolationMode::Container => anyhow::bail!(
            "invalid value for executor.isolation: \"container\"; accepted in this build: \"auto\", \"process\" or \"inproc\" (the container executor is not built yet)"
        ),
    }
}

pub async fn run_node(
    cfg: NodeConfig,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tracing::info!(node = cfg.node.id, tier = cfg.node.tier.as_str(), data_dir = %cfg.node.data_dir.display(), "starting edgerun {}", env!("CARGO_PKG_VERSION"));

    let kernels: Arc<dyn Kernels> = Arc::new(CppKernels);
    let executor = choose_executor(&cfg, kernels.clone())?;

    let metrics = install_metrics()?;
    tracing::info!("metrics recorder installed");

    let db_path = cfg.db_path();
    let db = edgerun_raft::open_db(&db_path, cfg.raft.cache_capacity_mb)?;
    tracing::info!(path = %db_path.display(), cache_mb = cfg.raft.cache_capacity_mb, "database open");

    let node = edgerun_raft::start_raft(&cfg, &db).await?;
    tracing::info!(id = node.id, "raft started");

    let info = NodeInfo {
        id: cfg.node.id,
        tier: cfg.node.tier,
        labels: cfg.node.labels.clone(),
        api: cfg.advertised_api(),
        rpc: cfg.advertised_rpc(),
        slots: cfg.executor.slots,
        registered_at_ms: 0,
        up: true,
        down_since_ms: None,
    };
    let (mut children, proposer) = core_children(CoreParts {
        node: node.clone(),
        info,
        executor,
        default_memory_mb: cfg.executor.default_memory_mb,
        slots: cfg.executor.slots,
        default_timeout: Duration::from_millis(cfg.executor.default_timeout_ms),
        max_batch: cfg.raft.max_batch,
        rpc_listen: cfg.cluster.listen,
        heartbeat: Duration::from_millis(cfg.cluster.heartbeat_ms),
        lease: Duration::from_millis(cfg.cluster.lease_ms),
        forward_timeout: Duration::from_millis(cfg.raft.forward_timeout_ms),
        kernel_delay: Duration::from_millis(cfg.debug.kernel_delay_ms),
    });
    let supervisor_slot: Slot<SupervisorMsg> = Slot::default();
    children.push(Arc::new(ApiSpec::new(ApiParts {
        listen: cfg.api.listen,
        workers: cfg.api.workers,
        max_body: cfg.api.max_body_bytes,
        tasks: TasksCtx {
            node: node.clone(),
            proposer,
            kernels,
            read_timeout: Duration::from_millis(cfg.raft.forward_timeout_ms),
        },
        cluster: ClusterCtx {
            node: node.clone(),
            timeout: Duration::from_millis(cfg.raft.forward_timeout_ms),
        },
        debug: DebugCtx {
            enabled: cfg.debug.fault_injection,
            supervisor: supervisor_slot.clone(),
        },
        metrics,
    })));
    if cfg.debug.kernel_delay_ms > 0 {
        tracing::warn!(
            delay_ms = cfg.debug.kernel_delay_ms,
            "debug.kernel_delay_ms is set: every attempt waits before it runs"
        );
    }
    if cfg.debug.fault_injection {
        tracing::warn!(
            "debug.fault_injection is on: POST /v1/debug/fail/{{actor}} makes actors fail"
        );
    }

    let (exit_tx, mut exit_rx) = watch::channel::<Option<NodeExit>>(None);
    let args = SupervisorArgs {
        children,
        policy: cfg.supervisor.clone(),
        exit: exit_tx,
    };
    let (sup, sup_handle) =
        match Actor::spawn(Some("node_supervisor".into()), NodeSupervisor, args).await {
            Ok(x) => x,
            Err(e) => {
                let why = exit_rx
                    .borrow()
                    .clone()
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| e.to_string());
                shutdown_raft(&node, &db).await;
                anyhow::bail!("{why}");
            }
        };
    supervisor_slot.set(Some(sup.clone()));
    tracing::info!(api = %cfg.api.listen, "node started");

    tokio::select! {
        _ = stop => {
            tracing::info!("stop requested; shutting down");
            let _ = sup.cast(SupervisorMsg::Shutdown);
        }
        _ = exit_rx.wait_for(|e| e.is_some()) => {}
    }
    let _ = sup_handle.await;
    supervisor_slot.set(None);
    shutdown_raft(&node, &db).await;
    let exit = exit_rx.borrow().clone().unwrap_or(NodeExit::Stopped);
    match exit {
        NodeExit::Stopped => {
            tracing::info!("node stopped");
            Ok(())
        }
        other => anyhow::bail!("{other}"),
    }
}

async fn shutdown_raft(node: &edgerun_raft::RaftNode, db: &sled::Db) {
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    if let Err(e) = db.flush_async().await {
        tracing::error!(error = %e, "flushing the database at shutdown");
    }
}
