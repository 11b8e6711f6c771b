//! The boot sequence of a node: linear steps, one log line each.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use edgerun_actors::executor::container::own_cgroup;
use edgerun_actors::executor::{
    cgroup, ContainerConfig, ContainerExecutor, Executor, InprocExecutor, ProcessExecutor,
    ProcessLimits, ProcessSandbox,
};
use edgerun_actors::metrics_names as m;
use edgerun_actors::{
    core_children, ClusterHandle, CoreParts, CppKernels, Kernels, NodeExit, NodeSupervisor, Policy,
    Retention, Slot, SupervisorArgs, SupervisorMsg,
};
use edgerun_api::{ApiParts, ApiSpec, ClusterCtx, DebugCtx, TasksCtx};
use edgerun_config::{IsolationMode, NodeConfig, Sources};
use edgerun_model::NodeInfo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ractor::Actor;
use tokio::sync::watch;

/// Log to stderr with the default filter (`EDGERUN_LOG` or `RUST_LOG` replaces it).
pub fn init_logging() {
    crate::logging::init_default();
}

fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    use metrics_exporter_prometheus::Matcher;
    // Histograms (not summaries): seconds from 0.5 ms to 2 min; batch sizes 1 to 4096.
    let seconds = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0, 120.0,
    ];
    let sizes = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(m::RAFT_BATCH_SIZE.into()), &sizes))
        .context("metric buckets")?
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    m::describe_all();
    Ok(handle)
}

/// Run a node until it is told to stop (Ctrl-C, SIGTERM) or its supervisor gives up.
/// `sources`: where `cfg` came from, re-read on SIGHUP.
pub fn run(cfg: NodeConfig, sources: Option<Sources>) -> anyhow::Result<()> {
    crate::logging::init(&cfg.log).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("edgerun")
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run_node(cfg, sources, shutdown_signal()))
}

/// What a node builds from its settings before it writes anything; an error names the key.
pub struct Preflight {
    pub cache: Option<Arc<edgerun_actors::cache::ResultCache>>,
    pub backups: Option<edgerun_actors::monitor::BackupPlan>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Everything the node checks at start that the config's own validation cannot (it would need
/// the files, the cron parser, the Redis client): used by the start and by `--check-config`,
/// so that the two cannot drift apart. Writes nothing and connects nowhere.
pub fn preflight(cfg: &NodeConfig) -> anyhow::Result<Preflight> {
    let cache = result_cache(cfg)?;
    if !cfg.redis.url.is_empty() {
        // The shared rate limits parse the same URL (the cache may be off).
        edgerun_actors::redis_link::RedisLink::new(
            &cfg.redis.url,
            Duration::from_millis(cfg.redis.timeout_ms.max(1)),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let backups = backup_plan(cfg)?;
    let tls = match (&cfg.api.tls_cert_file, &cfg.api.tls_key_file) {
        (Some(cert), Some(key)) => {
            let t = edgerun_api::tls::server_config(cert, key)
                .map_err(|e| anyhow::anyhow!("api: {e}"))?;
            tracing::info!(cert = %cert.display(), "REST API over TLS (HTTPS only)");
            Some(Arc::new(t))
        }
        _ => None,
    };
    Ok(Preflight {
        cache,
        backups,
        tls,
    })
}

/// The result cache `[cache]` asks for: Redis when `redis.url` is set, else in-process.
fn result_cache(
    cfg: &NodeConfig,
) -> anyhow::Result<Option<Arc<edgerun_actors::cache::ResultCache>>> {
    use edgerun_actors::cache::ResultCache;
    let c = &cfg.cache;
    if !c.enabled {
        tracing::info!("result cache off (cache.enabled = false)");
        return Ok(None);
    }
    let ttl = Duration::from_secs(c.ttl_secs);
    let cache = if cfg.redis.url.is_empty() {
        ResultCache::local(c.local_entries, ttl, c.max_entry_bytes)
    } else {
        let link = edgerun_actors::redis_link::RedisLink::new(
            &cfg.redis.url,
            Duration::from_millis(cfg.redis.timeout_ms.max(1)),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        ResultCache::redis(link, ttl, c.max_entry_bytes)
    };
    tracing::info!(backend = %cache.describe(), ttl_secs = c.ttl_secs, "result cache for deterministic kernels");
    Ok(Some(Arc::new(cache)))
}

/// The scheduled backups `[backup]` asks for.
fn backup_plan(cfg: &NodeConfig) -> anyhow::Result<Option<edgerun_actors::monitor::BackupPlan>> {
    let b = &cfg.backup;
    if b.schedule.trim().is_empty() {
        return Ok(None);
    }
    let (schedule, tz) = edgerun_actors::scheduler::cron::parse(&b.schedule, &b.timezone)
        .map_err(|e| anyhow::anyhow!("backup.schedule: {e}"))?;
    let dir = if b.dir.as_os_str().is_empty() {
        cfg.node.data_dir.join("backups")
    } else {
        b.dir.clone()
    };
    tracing::info!(schedule = %b.schedule, dir = %dir.display(), keep = b.keep, "scheduled backups");
    Ok(Some(edgerun_actors::monitor::BackupPlan {
        schedule,
        tz,
        dir,
        keep: b.keep,
    }))
}

/// SIGHUP re-reads the configuration (log filter, rate limits); see [`crate::control`].
fn spawn_reload_on_sighup(control: Arc<crate::control::NodeControl>) {
    use edgerun_api::handlers::admin::Control;
    #[cfg(unix)]
    {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload through POST /v1/admin/reload");
                return;
            }
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: re-reading the configuration");
                let c = control.clone();
                match tokio::task::spawn_blocking(move || c.reload()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "the configuration was not reloaded; nothing changed")
                    }
                    Err(e) => tracing::error!(error = %e, "reloading failed"),
                }
            }
        });
    }
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
/// The container executor is returned a second time so that shutdown can clean it up.
async fn choose_executor(
    cfg: &NodeConfig,
    kernels: Arc<dyn Kernels>,
) -> anyhow::Result<(Arc<dyn Executor>, Option<Arc<ContainerExecutor>>)> {
    let exe = std::env::current_exe().context("finding the edgerun binary")?;
    let max_result = cfg.executor.max_result_mb as usize * 1024 * 1024;
    match cfg.executor.isolation {
        IsolationMode::Inproc => {
            tracing::warn!("executor: inproc (kernels on threads inside the node, no isolation; for benchmarks)");
            Ok((
                Arc::new(InprocExecutor {
                    kernels,
                    max_result,
                }),
                None,
            ))
        }
        IsolationMode::Process => Ok((process_executor(cfg, &exe, "").await?, None)),
        mode @ (IsolationMode::Container | IsolationMode::Auto) => {
            match container_executor(cfg, &exe).await {
                Ok(c) => {
                    tracing::info!("executor: container (a youki container per attempt: namespaces, cgroup limits, seccomp)");
                    Ok((c.clone(), Some(c)))
                }
                Err(why) if mode == IsolationMode::Auto => Ok((
                    process_executor(
                        cfg,
                        &exe,
                        &format!(", because containers cannot be made here: {why}"),
                    )
                    .await?,
                    None,
                )),
                Err(why) => anyhow::bail!(
                    "executor.isolation = \"container\", but containers cannot be made here: {why}"
                ),
            }
        }
    }
}

/// The cgroup under which this node's task cgroups go: the node's own, then one name per
/// node *and* data dir (nodes sharing a host, in tests and dev clusters, must never clean up
/// each other's tasks).
fn task_cgroup_parent(cfg: &NodeConfig) -> Result<String, String> {
    std::fs::create_dir_all(&cfg.node.data_dir)
        .map_err(|e| format!("creating {}: {e}", cfg.node.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&cfg.node.data_dir)
        .map_err(|e| format!("resolving {}: {e}", cfg.node.data_dir.display()))?;
    // FNV-1a: stable across builds, so a new binary finds what an old one left.
    let tag = data_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0x811c_9dc5u32, |h, b| {
            (h ^ *b as u32).wrapping_mul(0x0100_0193)
        });
    Ok(format!(
        "{}/edgerun-n{}-{tag:08x}",
        own_cgroup().trim_end_matches('/'),
        cfg.node.id
    ))
}

/// Set up the process executor: find out with a probe of the shim how far this node can
/// confine a task (another uid, no capabilities, seccomp, a cgroup), say so, and refuse exec
/// tasks where that is not all unless the operator opted in.
async fn process_executor(
    cfg: &NodeConfig,
    exe: &std::path::Path,
    why: &str,
) -> anyhow::Result<Arc<dyn Executor>> {
    let root = nix::unistd::geteuid().is_root();
    let ids = cfg.executor.task_ids()?;
    let cgroup_parent = match (root, cgroup::layout()) {
        (true, Some(_)) => {
            // Make (and remove) one attempt cgroup now: a read-only cgroupfs (an unprivileged
            // container) is found once here, not at every attempt.
            let tried = task_cgroup_parent(cfg).and_then(|p| {
                let test = cgroup::AttemptCgroup::create(&p, "probe", 64 << 20, 8)?;
                cgroup::kill_and_remove(&test.rel);
                Ok(p)
            });
            match tried {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!("process isolation without cgroups: {e}; a task's processes are killed by process group only (one that starts a new session survives its task) and only rlimits bound its memory");
                    None
                }
            }
        }
        (true, None) => {
            tracing::warn!("process isolation without cgroups: none under /sys/fs/cgroup; a task's processes are killed by process group only (one that starts a new session survives its task)");
            None
        }
        (false, _) => None,
    };
    let mut limits = ProcessLimits {
        exe: exe.to_path_buf(),
        allow_exec: cfg.executor.allow_exec_without_container,
        allow_unsandboxed_exec: cfg.executor.allow_unsandboxed_exec,
        sandbox: ProcessSandbox {
            ids: root.then_some(ids),
            seccomp: true,
            cgroup_parent,
        },
        pids: cfg.executor.default_pids,
        default_disk_mb: cfg.executor.default_disk_mb,
        max_result: cfg.executor.max_result_mb as usize * 1024 * 1024,
    };
    // Try the whole sandbox; where a part of it fails, say why and keep what works.
    let mut gaps: Vec<String> = Vec::new();
    if !root {
        gaps.push(format!(
            "the node does not run as root, so tasks run as its own uid {} instead of executor.task_user",
            nix::unistd::geteuid()
        ));
    }
    let probe = |l: &ProcessLimits| {
        let e = ProcessExecutor::new(l.clone());
        async move { e.probe().await }
    };
    if let Err(e) = probe(&limits).await {
        gaps.push(format!("the full sandbox failed its probe: {e}"));
        limits.sandbox.seccomp = false;
        if let Err(e) = probe(&limits).await {
            gaps.push(format!("without seccomp too: {e}"));
            limits.sandbox.ids = None;
        }
    }
    // What a crashed run of this node left (killed and removed).
    if let Some(parent) = limits.sandbox.cgroup_parent.clone() {
        let _ = tokio::task::spawn_blocking(move || cgroup::kill_and_remove(&parent)).await;
    }
    let s = &limits.sandbox;
    let mut has = vec![
        "a child process per attempt with rlimits (memory, file size) and a timeout".to_string(),
    ];
    if let Some((u, g)) = s.ids {
        has.push(format!(
            "as uid {u} gid {g} (executor.task_user = {:?}) without supplementary groups",
            cfg.executor.task_user
        ));
    }
    if s.seccomp {
        has.push("no capabilities, no_new_privs, the containers' seccomp profile".into());
    }
    match &s.cgroup_parent {
        Some(p) => {
            has.push(format!(
                "in a cgroup per attempt (pids.max {}, memory from the task; everything in it killed when the attempt ends)",
                cfg.executor.default_pids
            ));
            tracing::info!(cgroup_parent = %p, "task cgroups go under this parent");
        }
        None => has.push("no cgroup: the process group is killed at the end".into()),
    }
    tracing::info!("executor: process ({}){why}", has.join("; "));
    if !s.complete() {
        let exec = match (cfg.executor.allow_exec_without_container, cfg.executor.allow_unsandboxed_exec) {
            (false, _) => "exec tasks are refused (executor.allow_exec_without_container = false)",
            (true, false) => "exec tasks are refused (executor.allow_unsandboxed_exec = false)",
            (true, true) => "EXEC TASKS RUN ANYWAY (executor.allow_unsandboxed_exec = true): any operator can read the node's data dir, cluster.secret, jwt.secret and API keys, and so become an admin and a cluster member",
        };
        tracing::warn!(
            "PROCESS ISOLATION CANNOT SANDBOX TASKS HERE ({}): a task runs as uid {}{} and can read and write whatever that user can, signal the node's processes{}; kernel tasks still run; {exec}",
            gaps.join("; "),
            s.ids.map_or_else(|| nix::unistd::geteuid().as_raw(), |(u, _)| u),
            if s.seccomp { "" } else { " without seccomp" },
            if root && s.ids.is_none() { ", and use every capability of root" } else { "" },
        );
    }
    Ok(Arc::new(ProcessExecutor::new(limits)))
}

/// Set up the container executor: clean what a crashed run left, then run a probe container.
async fn container_executor(
    cfg: &NodeConfig,
    exe: &std::path::Path,
) -> Result<Arc<ContainerExecutor>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the node does not run as root".into());
    }
    if !std::path::Path::new("/sys/fs/cgroup").is_dir() {
        return Err("/sys/fs/cgroup is missing".into());
    }
    let parent = task_cgroup_parent(cfg)?;
    let c = ContainerExecutor::new(ContainerConfig {
        exe: exe.to_path_buf(),
        root: cfg.node.data_dir.join("sandbox"),
        cgroup_parent: parent.clone(),
        pids: cfg.executor.default_pids,
        node: cfg.node.id,
        exec_kernel: false,
        pool: cfg.executor.slots as usize,
        allow_network: cfg.executor.allow_network,
        default_disk_mb: cfg.executor.default_disk_mb,
        max_result: cfg.executor.max_result_mb as usize * 1024 * 1024,
    });
    tracing::info!(cgroup_parent = %parent, "task cgroups go under this parent");
    c.clean()
        .await
        .map_err(|e| format!("cleaning the sandbox directory: {e}"))?;
    c.probe().await?;
    Ok(Arc::new(c))
}

/// Fail with the key, the address and the cause when `addr` cannot be listened on (the
/// listener is closed again at once; the server binds it for real later).
pub(crate) fn check_listen(key: &str, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow::anyhow!(
            "{key} {addr} is already in use (another edgerun?); stop it or choose another address"
        )),
        Err(e) => Err(anyhow::anyhow!("{key} {addr} cannot be listened on: {e}")),
    }
}

pub async fn run_node(
    cfg: NodeConfig,
    sources: Option<Sources>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tracing::info!(node = cfg.node.id, tier = cfg.node.tier.as_str(), data_dir = %cfg.node.data_dir.display(), "starting edgerun {}", env!("CARGO_PKG_VERSION"));

    // The ports first, before anything is written: a taken port is the likeliest start-up
    // failure and must not leave a half-made data directory behind.
    check_listen("api.listen", cfg.api.listen)?;
    check_listen("cluster.listen", cfg.cluster.listen)?;

    let kernels: Arc<dyn Kernels> = Arc::new(CppKernels);

    let metrics = install_metrics()?;
    tracing::info!("metrics recorder installed");
    {
        // Histogram samples wait in the recorder until drained; a scrape drains them, and so
        // does this, so a node nobody scrapes does not grow without bound (21 MB per 100k
        // tasks before this ran).
        let handle = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }

    // What the settings name outside themselves (a Redis URL, a backup schedule and its time
    // zone, TLS files) is checked before anything is written; `--check-config` checks the same.
    let Preflight {
        cache,
        backups,
        tls,
    } = preflight(&cfg)?;

    // Private to the node's user (SECURITY.md, "Data at rest"): a data directory made
    // looser (by hand, or by an edgerun before umask 077) is tightened to 0700.
    let (data, prepared) =
        edgerun_raft::DataDir::open(&cfg.node.data_dir, cfg.raft.cache_capacity_mb).map_err(
            |e| match e {
                edgerun_raft::DataDirError::Open { .. } => anyhow::anyhow!(
                    "{e}; if its files are damaged, {}",
                    edgerun_raft::doctor::RECOVERY
                ),
                e => anyhow::anyhow!("{e}"),
            },
        )?;
    if let edgerun_raft::Prepared::Tightened(was) = prepared {
        tracing::info!(
            data_dir = %cfg.node.data_dir.display(),
            "the data directory was mode {was:04o}; now 0700 (only this user may read it)"
        );
    }
    let db = data.db().clone();
    edgerun_raft::doctor::check(&data).map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!("data directory checked");
    {
        // The database's and the Raft log's sizes on disk, every 10 s (the Monitor has no
        // handle on the files).
        let data = data.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let data = data.clone();
                if let Ok((db_bytes, log_bytes)) =
                    tokio::task::spawn_blocking(move || data.sizes()).await
                {
                    if let Some(b) = db_bytes {
                        metrics::gauge!(m::SLED_DISK_BYTES).set(b as f64);
                    }
                    metrics::gauge!(m::RAFT_LOG_BYTES).set(log_bytes as f64);
                }
            }
        });
    }
    // Every durable write on this database flushes through one flusher (one flush at a time).
    let flusher = edgerun_raft::Flusher::new(db.clone());
    let results =
        edgerun_raft::ResultStore::open(&db, flusher.clone()).map_err(anyhow::Error::msg)?;
    let outbox = edgerun_raft::Outbox::open(&db, flusher.clone()).map_err(anyhow::Error::msg)?;
    let checkpoint_store =
        edgerun_raft::CheckpointStore::open(&db, flusher.clone()).map_err(anyhow::Error::msg)?;
    tracing::info!(path = %data.db_path().display(), cache_mb = cfg.raft.cache_capacity_mb, "database open");

    let node = edgerun_raft::start_raft(&cfg, &data, &flusher)
        .await
        .map_err(|e| match e {
            // The snapshot or the log did not decode: damaged state.
            edgerun_raft::RaftStoreError::Storage(_) => anyhow::anyhow!(
                "{e}; the data directory {} may be damaged: {}",
                cfg.node.data_dir.display(),
                edgerun_raft::doctor::RECOVERY
            ),
            edgerun_raft::RaftStoreError::Damaged { .. } => anyhow::anyhow!(
                "the data directory {} is damaged: {e}; {}",
                cfg.node.data_dir.display(),
                edgerun_raft::doctor::RECOVERY
            ),
            e => e.into(),
        })?;
    tracing::info!(id = node.id, "raft started");

    let stream_kernels = kernels.clone();
    let (executor, containers) = match choose_executor(&cfg, kernels.clone()).await {
        Ok(x) => x,
        Err(e) => {
            shutdown_raft(&node, &db).await;
            return Err(e);
        }
    };
    // WebAssembly tasks run on the node's wasm runtime whatever the isolation above is. A node
    // that cannot set it up (no virtual memory for the pool?) still runs everything else:
    // its wasm tasks fail and uploads through it are refused, each saying why.
    let wasm = match edgerun_wasm::Runtime::new(&edgerun_wasm::RuntimeConfig {
        cache_dir: cfg.node.data_dir.join("wasm-cache"),
        instances: edgerun_actors::executor::wasm::instances(cfg.executor.slots),
        max_memory_mb: cfg.executor.wasm_max_memory_mb,
    }) {
        Ok(rt) => {
            tracing::info!(
                max_memory_mb = cfg.executor.wasm_max_memory_mb,
                "wasm runtime ready (wasmtime, pooling allocator)"
            );
            Some(Arc::new(rt))
        }
        Err(e) => {
            tracing::error!(error = %e, "no wasm runtime on this node: wasm tasks fail here");
            None
        }
    };
    let max_result = cfg.executor.max_result_mb as usize * 1024 * 1024;
    let executor: Arc<dyn Executor> = Arc::new(edgerun_actors::executor::wasm::Routed {
        base: executor,
        wasm: wasm.as_ref().map(|rt| {
            Arc::new(edgerun_actors::executor::wasm::WasmExecutor {
                runtime: rt.clone(),
                view: node.view.clone(),
                max_result,
            })
        }),
        http: Arc::new(edgerun_actors::executor::http::HttpExecutor {
            // Checked by the config's validation.
            allow: Arc::new(
                edgerun_config::allow::parse(&cfg.executor.http_allow).unwrap_or_default(),
            ),
            max_body: max_result,
        }),
    });

    let info = NodeInfo {
        id: cfg.node.id,
        tier: cfg.node.tier,
        labels: cfg.node.labels.clone(),
        api: cfg.advertised_api(),
        rpc: cfg.advertised_rpc(),
        slots: cfg.executor.slots,
        cpu_millis: capacity_cpu_millis(&cfg),
        memory_mb: capacity_memory_mb(&cfg),
        registered_at_ms: 0,
        up: true,
        down_since_ms: None,
    };
    let alerts = Arc::new(edgerun_actors::alerts::Alerts::new(
        edgerun_actors::alerts::AlertRules {
            node_down: cfg.alerts.node_down,
            pending_over: cfg.alerts.pending_over,
            failure_rate_percent: cfg.alerts.failure_rate_percent,
            failure_window_ms: cfg.alerts.failure_window_secs.saturating_mul(1000),
            failure_min_finished: cfg.alerts.failure_min_finished,
            disk_percent: cfg.alerts.disk_percent,
            webhook_url: Some(cfg.alerts.webhook_url.clone()).filter(|u| !u.is_empty()),
        },
    ));
    let ingress = edgerun_actors::streams::Ingress::default();
    let files_dir = cfg.streams.files_dir(&cfg.node.data_dir);
    if let Err(e) = private_dir(&files_dir) {
        shutdown_raft(&node, &db).await;
        return Err(anyhow::anyhow!(
            "streams.files_dir {}: {e}",
            files_dir.display()
        ));
    }
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
        policy: scheduler_policy(&cfg),
        results: results.clone(),
        inline_result_max: cfg.retention.inline_result_max_bytes,
        outbox,
        retention: Retention {
            max_finished: cfg.retention.max_finished,
            max_age_ms: cfg.retention.max_age_secs.saturating_mul(1000),
            interval: Duration::from_millis(cfg.retention.interval_ms),
        },
        forward_timeout: Duration::from_millis(cfg.raft.forward_timeout_ms),
        kernel_delay: Duration::from_millis(cfg.debug.kernel_delay_ms),
        alerts: alerts.clone(),
        data_dir: cfg.node.data_dir.clone(),
        cache,
        backups,
        streams: edgerun_actors::StreamsParts {
            ingress: ingress.clone(),
            files_dir,
            max_record_bytes: cfg.streams.max_record_bytes,
            queue_batches: cfg.streams.queue_batches,
            max_restarts: cfg.streams.max_restarts,
            window: Duration::from_secs(cfg.streams.window_secs),
            // Checked by the config's validation.
            http_allow: Arc::new(
                edgerun_config::allow::parse(&cfg.streams.http_sink_allow).unwrap_or_default(),
            ),
            kernels: stream_kernels,
            checkpoints: checkpoint_store,
            inline_checkpoint_bytes: cfg.streams.inline_checkpoint_bytes,
        },
    });
    let auth = match edgerun_api::Auth::load(&cfg.auth, &cfg.node.data_dir) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            shutdown_raft(&node, &db).await;
            return Err(anyhow::anyhow!("auth: {e}"));
        }
    };
    if auth.enabled {
        tracing::info!(
            keys = auth.key_count(),
            "authentication on: every /v1 call needs a bearer token"
        );
    } else {
        tracing::warn!("AUTHENTICATION IS OFF (auth.enabled = false): anyone who reaches this node's REST port can do everything; do not expose it");
    }
    let guard = match edgerun_api::Guard::new(
        &cfg.limits,
        &cfg.audit,
        cfg.node.id,
        cfg.node.data_dir.join("audit.log"),
    )
    .and_then(|g| {
        if cfg.redis.url.is_empty() {
            return Ok(g);
        }
        let shared = edgerun_api::shared_limit::SharedLimit::new(
            &cfg.redis.url,
            Duration::from_millis(cfg.redis.timeout_ms.max(1)),
        )?;
        tracing::info!(redis = %shared.shown(), "rate limits are shared by all nodes through Redis");
        Ok(g.with_shared(shared))
    }) {
        Ok(g) => Arc::new(g),
        Err(e) => {
            shutdown_raft(&node, &db).await;
            return Err(anyhow::anyhow!("api: {e}"));
        }
    };
    tracing::info!(
        path = %guard.audit_path().display(),
        max_bytes = cfg.audit.max_bytes,
        max_files = cfg.audit.max_files,
        rate = cfg.limits.requests_per_second,
        burst = cfg.limits.burst,
        address_rate = cfg.limits.address_requests_per_second,
        address_burst = cfg.limits.address_burst,
        "audit log and rate limits ready"
    );
    {
        // Counted refusals are written once their window ends, even if nothing else comes.
        let g = guard.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                g.flush_refusals();
            }
        });
    }
    let control = Arc::new(crate::control::NodeControl::new(
        cfg.clone(),
        sources,
        guard.clone(),
        auth.clone(),
    ));
    spawn_reload_on_sighup(control.clone());
    let supervisor_slot: Slot<SupervisorMsg> = Slot::default();
    let cluster = ClusterHandle::new(node.clone(), results, ingress);
    children.push(Arc::new(ApiSpec::new(ApiParts {
        listen: cfg.api.listen,
        workers: cfg.api.workers,
        max_body: cfg.api.max_body_bytes,
        body_timeout: Duration::from_millis(cfg.api.body_timeout_ms),
        tasks: TasksCtx {
            node: cluster.clone(),
            proposer,
            kernels,
            read_timeout: Duration::from_millis(cfg.raft.forward_timeout_ms),
            admission: edgerun_model::Admission {
                max_pending: cfg.limits.max_pending,
                max_pending_per_submitter: cfg.limits.max_pending_per_submitter,
                idempotency_window_ms: cfg.limits.idempotency_window_secs.saturating_mul(1000),
            },
            policy: scheduler_policy(&cfg),
            streams: edgerun_api::handlers::streams::StreamLimits {
                max_body: cfg.streams.max_body_bytes,
                max_results: cfg.streams.max_results,
            },
            modules: edgerun_api::handlers::modules::ModuleLimits {
                runtime: wasm.clone(),
                max_bytes: cfg.executor.max_module_bytes,
            },
        },
        cluster: ClusterCtx {
            node: cluster,
            timeout: Duration::from_millis(cfg.raft.forward_timeout_ms),
            alerts,
        },
        debug: DebugCtx {
            enabled: cfg.debug.fault_injection,
            supervisor: supervisor_slot.clone(),
        },
        metrics,
        auth,
        guard,
        tls,
        admin: edgerun_api::handlers::admin::AdminCtx { control },
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
                if let Some(c) = &containers {
                    let _ = c.clean().await;
                }
                shutdown_raft(&node, &db).await;
                anyhow::bail!("{why}");
            }
        };
    supervisor_slot.set(Some(sup.clone()));
    tracing::info!(api = %cfg.api.listen, "node started");

    // Raft stops for good on a storage error (a full disk, a failing device). A node without
    // Raft would keep answering and running nothing useful, so it stops (fail-stop) and says
    // why; whatever restarts it finds the log intact up to the last acknowledged write.
    let mut raft_metrics = node.raft.metrics();
    let raft_fatal = async move {
        match raft_metrics.wait_for(|m| m.running_state.is_err()).await {
            Ok(m) => m.running_state.clone().err().map(|e| e.to_string()),
            Err(_) => std::future::pending().await,
        }
    };
    let mut fatal: Option<String> = None;
    tokio::select! {
        _ = stop => {
            tracing::info!("stop requested; shutting down");
            let _ = sup.cast(SupervisorMsg::Shutdown);
        }
        _ = exit_rx.wait_for(|e| e.is_some()) => {}
        why = raft_fatal => {
            let why = why.unwrap_or_else(|| "unknown error".into());
            tracing::error!(error = %why, data_dir = %cfg.node.data_dir.display(), "raft stopped on a fatal error; the node stops");
            fatal = Some(why);
            let _ = sup.cast(SupervisorMsg::Shutdown);
        }
    }
    let _ = sup_handle.await;
    supervisor_slot.set(None);
    if let Some(c) = &containers {
        // Kill what still runs and remove this node's cgroups, bundles and container state.
        if let Err(e) = c.clean().await {
            tracing::warn!(error = %e, "removing containers at shutdown");
        }
    }
    shutdown_raft(&node, &db).await;
    if let Some(why) = fatal {
        anyhow::bail!(
            "raft stopped: {why}. Nothing acknowledged is lost: check the data directory {} \
             (free disk space, a failing device) and start the node again",
            cfg.node.data_dir.display()
        );
    }
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

/// The `[scheduler]` settings as the placement code takes them.
pub fn scheduler_policy(cfg: &NodeConfig) -> Policy {
    Policy {
        placement: cfg.scheduler.placement,
        aging_ms: cfg.scheduler.aging_secs.saturating_mul(1000),
        preemption: cfg.scheduler.preemption,
        min_gap: cfg.scheduler.preemption_min_gap,
    }
}

/// CPU offered to tasks: `executor.cpu_millis`, or 1000 per core.
fn capacity_cpu_millis(cfg: &NodeConfig) -> u32 {
    if cfg.executor.cpu_millis > 0 {
        return cfg.executor.cpu_millis;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cores.saturating_mul(1000)).unwrap_or(u32::MAX)
}

/// Memory offered to tasks: `executor.memory_mb`, or 80% of MemTotal.
fn capacity_memory_mb(cfg: &NodeConfig) -> u32 {
    if cfg.executor.memory_mb > 0 {
        return cfg.executor.memory_mb;
    }
    let total_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(1024 * 1024);
    u32::try_from(total_kb / 1024 * 8 / 10).unwrap_or(u32::MAX)
}

/// Create `dir` (and its parents) if missing; a directory the node creates is 0700.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
