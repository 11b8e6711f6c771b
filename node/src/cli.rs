//! Command-line parsing (clap) and dispatch.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use edgerun_config::{parse_override, Sources};

use crate::client::{exit, fail, Client};
use crate::output::{self, Output};

const EXAMPLES: &str = "\
Examples:
  edgerun dev                                   a local 3-node cluster with demo tasks
  edgerun node --config node.toml               run a node (no file is read without --config)
  edgerun task submit --kernel stats --input '{\"values\": [1, 2, 3]}' --wait
  edgerun task submit --kernel stats --input '{\"values\": [1]}' --count 1000 --wait
  edgerun task submit --file tasks.jsonl --wait one task per line, with a progress bar
  edgerun cluster status                        members, leader, load, tasks by state
  edgerun stream create --file job.json         a stream job (sources, windows, sinks)
  edgerun top                                   the same, live
  edgerun task list --status failed -o json     any client command as JSON

Client commands talk to --url (EDGERUN_URL, default http://127.0.0.1:7101) with --token or
--api-key (EDGERUN_TOKEN, EDGERUN_API_KEY).

Exit codes of client commands:
  0  done (a waited-for task succeeded)
  1  a task ended without succeeding, or did not end within the wait
  2  bad usage or a request refused as invalid (HTTP 400, 409, 413, 422)
  3  not found (HTTP 404)
  4  no or bad credentials, or too weak a role (HTTP 401, 403)
  5  the node cannot be reached or cannot serve now (HTTP 429, 5xx)";

#[derive(Parser)]
#[command(
    name = "edgerun",
    version,
    about = "A compute cluster for the edge: Raft-replicated tasks, C++ kernels, supervised actors.",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node.
    Node(NodeArgs),
    /// Run a local cluster on 127.0.0.1 for trying things out; submits demo tasks and shows them run.
    Dev(DevArgs),
    /// Submit and inspect tasks (a client of the REST API).
    Task {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: TaskCmd,
    },
    /// Stream jobs: continuous pipelines over sensor data (sources, windows, sinks).
    ///
    /// Example: edgerun stream create --file temps.json && edgerun stream list
    Stream {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: crate::stream_cli::StreamCmd,
    },
    /// Cluster membership and leader.
    Cluster {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Follow the cluster's events live (Server-Sent Events from GET /v1/events), one line
    /// each: `task {"id":7,"status":"running",...}`, `leader {...}`, `node {...}`.
    ///
    /// Example: edgerun events --status failed,timed_out
    Events {
        #[command(flatten)]
        conn: Conn,
        /// Only this task.
        #[arg(long)]
        task: Option<u64>,
        /// Only these task statuses (comma-separated).
        #[arg(long)]
        status: Option<String>,
        /// Only these kinds: task, leader, node (comma-separated).
        #[arg(long)]
        kinds: Option<String>,
    },
    /// A live view of the cluster: members with their load, tasks by state, tasks finished
    /// per second; redrawn every --interval until Ctrl-C.
    ///
    /// Example: edgerun top --interval 2s     (edgerun top --once -o json for scripts)
    Top {
        #[command(flatten)]
        conn: Conn,
        /// Time between frames.
        #[arg(long, default_value = "1s")]
        interval: String,
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
        /// Stop after this many frames.
        #[arg(long)]
        frames: Option<u64>,
    },
    /// Save a backup of the cluster's state (GET /v1/admin/snapshot; admin role) to a new
    /// FILE, checked (length, SHA-256, format) before it is written. FILE is created mode 0600
    /// (it holds every task's input and result) and never replaced: if it exists, nothing is
    /// downloaded or written and the command fails (exit 2).
    ///
    /// Example: edgerun backup --out /var/backups/edgerun-$(date +%F).backup
    Backup {
        #[command(flatten)]
        conn: Conn,
        /// The new backup file (must not exist; missing directories are made 0700).
        #[arg(long)]
        out: PathBuf,
    },
    /// Seed an empty data directory from a backup, as member --id; then start the node on it.
    /// Restore every member from the same file (each with its own id) to bring a cluster back.
    /// A truncated or damaged file is refused and nothing is written.
    ///
    /// Example: edgerun restore --from cluster.backup --data-dir /var/lib/edgerun --id 1
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        /// This node's id (it must be a member in the backup).
        #[arg(long)]
        id: u64,
    },
    /// Report on a stopped node's data directory: sizes, space amplification, log, vote and
    /// snapshot indexes, and anything damaged (exit 1 then). Warns (exit 0) about files and
    /// directories group or others can read, with the chmod that fixes each; with --config,
    /// also about the secret files, TLS key and backup directory the config names elsewhere.
    ///
    /// Example: edgerun doctor --data-dir /var/lib/edgerun
    Doctor {
        /// The data directory (default: node.data_dir of --config).
        #[arg(long, required_unless_present = "config")]
        data_dir: Option<PathBuf>,
        /// The node's TOML config file, to check the secret files it names as well.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: Output,
    },
    /// List the kernels with their input schemas.
    Kernels {
        #[command(flatten)]
        conn: Conn,
    },
    /// Make a private CA and a server certificate for the REST API's TLS (api.tls_cert_file,
    /// api.tls_key_file); clients trust the CA with --ca-cert.
    ///
    /// Example: edgerun cert --out /etc/edgerun/tls --host node1.example.org --host 10.0.0.5
    Cert {
        /// Directory for ca.pem, server.pem and server.key.
        #[arg(long)]
        out: PathBuf,
        /// A DNS name or IP address the certificate is for (repeat for more).
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        hosts: Vec<String>,
        /// Days the certificates are valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Benchmarks on loopback with real processes: submit (beside etcd), e2e, failover,
    /// memory, startup, scheduler. Each prints a table and writes bench-<scenario>.json.
    ///
    /// Example: edgerun bench submit --clients 16 --secs 5
    Bench {
        #[command(subcommand)]
        scenario: edgerun_bench::cluster::BenchCmd,
    },
    /// Measure each kernel's throughput and matmul GFLOP/s on this machine.
    BenchKernels,
    /// Measure the per-task overhead of each isolation mode (and of `runc run`) on this machine.
    BenchSandbox {
        /// Tasks per mode.
        #[arg(long, default_value_t = 200)]
        n: usize,
        /// Working directory (a temporary one by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also time `runc run` of the same bundle (runc must be installed).
        #[arg(long)]
        runc: bool,
    },
    /// (internal) Run one kernel: input JSON on stdin, result JSON on stdout.
    #[command(hide = true)]
    KernelExec {
        kernel: String,
        /// Read the input from this file instead of standard input.
        #[arg(long)]
        input: Option<PathBuf>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// (internal) Run one container from a bundle (used by the container executor).
    #[command(hide = true)]
    ContainerRun {
        #[arg(long)]
        bundle: Option<PathBuf>,
        #[arg(long)]
        state_root: PathBuf,
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        #[arg(long, default_value = "")]
        cgroup: String,
        /// Delete every container left in --state-root instead.
        #[arg(long)]
        clean: bool,
        /// Wait for the other arguments as one JSON line on stdin (pre-started helpers).
        #[arg(long)]
        orders_on_stdin: bool,
        /// Exec `/edgerun kernel-exec` in the container instead of calling the kernel from its
        /// init process (slower; for comparison).
        #[arg(long)]
        exec_kernel: bool,
    },
    /// (internal) Set limits, then run the command after `--`.
    #[command(hide = true)]
    ExecShim {
        #[command(flatten)]
        sandbox: SandboxArgs,
        /// Confine this process, then exit 0 instead of running the command (the node's
        /// start-up check of what process isolation can do here).
        #[arg(long)]
        probe: bool,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

/// How `kernel-exec` and `exec-shim` confine themselves (process isolation; see
/// `crate::sandbox`).
#[derive(Args, Debug, Default)]
pub struct SandboxArgs {
    /// Memory limit (RLIMIT_DATA), in MiB.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// Largest file the task may write (RLIMIT_FSIZE), in MiB.
    #[arg(long)]
    pub fsize_mb: Option<u64>,
    /// Join this cgroup dir first (once per hierarchy).
    #[arg(long)]
    pub cgroup: Vec<PathBuf>,
    /// Run as UID:GID without supplementary groups (the caller must be root).
    #[arg(long)]
    pub user: Option<String>,
    /// Drop every capability (bounding set included), set no_new_privs and load the tasks'
    /// seccomp profile.
    #[arg(long)]
    pub seccomp: bool,
}

#[derive(Args)]
pub struct NodeArgs {
    /// TOML config file (keys as in API.md). Without it the node runs on the defaults,
    /// `EDGERUN_*` variables and flags: no file is read from a default place.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set executor.slots=8 (repeatable; applied last).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Shortcut for --set node.id=N.
    #[arg(long)]
    pub id: Option<u64>,
    /// Shortcut for --set node.data_dir=DIR.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Shortcut for --set api.listen=ADDR.
    #[arg(long)]
    pub api_listen: Option<String>,
    /// Check the configuration (all layers) and what it names (backup schedule and time zone,
    /// Redis URL, TLS files) as a start would, writing nothing; exit 0 and "config ok", or
    /// the error.
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Args)]
pub struct DevArgs {
    /// Nodes to start (voters of one cluster; the first runs in this process when alone).
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Data directory (kept on exit). Without it: $TMPDIR/edgerun-dev-<port> (e.g.
    /// /tmp/edgerun-dev-7101, so that its admin.key has a name you can type), made fresh at
    /// start and removed on exit.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// REST port of node 1; node i gets port + i - 1, and its cluster RPC port + 100.
    #[arg(long, default_value_t = 7101)]
    pub port: u16,
    /// Do not submit the demo tasks.
    #[arg(long)]
    pub no_demo: bool,
    /// Serve the REST API over HTTPS with a fresh private CA and certificate (in the data
    /// directory; clients pass --ca-cert DIR/tls/ca.pem).
    #[arg(long)]
    pub tls: bool,
}

#[derive(Args, Clone)]
pub struct Conn {
    /// The node's REST address.
    #[arg(
        long,
        env = "EDGERUN_URL",
        default_value = "http://127.0.0.1:7101",
        global = true
    )]
    pub url: String,
    /// A bearer token (from POST /v1/auth/token).
    #[arg(long, env = "EDGERUN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// An API key, traded for a token on the first call.
    #[arg(long, env = "EDGERUN_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Trust this CA (PEM) for an https --url, e.g. the ca.pem from `edgerun cert` or
    /// `edgerun dev --tls`.
    #[arg(long, env = "EDGERUN_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// `text` (tables and summaries) or `json` (the API's JSON).
    #[arg(
        long,
        short = 'o',
        env = "EDGERUN_OUTPUT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub output: Output,
}

impl Conn {
    pub fn client(&self) -> anyhow::Result<Client> {
        match &self.ca_cert {
            Some(ca) => Client::with_ca(&self.url, self.token.clone(), self.api_key.clone(), ca),
            None => Ok(Client::with_credentials(
                &self.url,
                self.token.clone(),
                self.api_key.clone(),
            )),
        }
    }
}

#[derive(Subcommand)]
enum TaskCmd {
    /// Submit tasks: --kernel NAME --input JSON, or --file with one task (API.md's shape) or
    /// many (JSON lines); --count N submits N copies. Many go in batches; --wait shows a
    /// progress bar and a summary, and exits 1 unless every task succeeded.
    ///
    /// Examples:
    ///   edgerun task submit --kernel stats --input '{"values": [1, 2]}' --wait
    ///   edgerun task submit --kernel matmul --input @input.json --count 500 --wait
    ///   edgerun task submit --file tasks.jsonl --wait
    #[command(verbatim_doc_comment)]
    Submit {
        /// The kernel to run (`edgerun kernels` lists them).
        #[arg(long, conflicts_with = "file")]
        kernel: Option<String>,
        /// Kernel input as JSON text, or @FILE to read it from a file.
        #[arg(long, requires = "kernel")]
        input: Option<String>,
        /// A task as JSON, or JSON lines (one task per line); - for standard input.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        priority: Option<i32>,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Submit this many copies of the task.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        count: u64,
        /// Wait for the tasks to end: the task (one) or a summary (many).
        #[arg(long)]
        wait: bool,
        /// With --wait and many tasks: give up waiting after this long (e.g. 90s, 10m).
        #[arg(long, default_value = "10m")]
        timeout: String,
    },
    /// Show a task.
    Get { id: u64 },
    /// Wait until a task ends (or the timeout passes) and show it; exit 0 if it succeeded,
    /// 1 if it did not (or has not ended).
    Wait {
        id: u64,
        #[arg(long, default_value = "30s")]
        timeout: String,
    },
    /// List tasks, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Cursor: the `next` of the previous page.
        #[arg(long)]
        after: Option<u64>,
    },
    /// Cancel a task unless it already ended.
    Cancel { id: u64 },
    /// Follow a task's status changes live until it ends; exit 0 if it succeeded, 1 if not.
    ///
    /// Example: edgerun task watch 42
    Watch { id: u64 },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Leader, term, members (role, tier, up/down, load) and tasks by state.
    Status,
    /// Add a node that replicates the state but does not vote.
    AddLearner {
        #[arg(long)]
        id: u64,
        /// Its cluster RPC address, host:port.
        #[arg(long)]
        rpc: String,
        /// Its REST address, host:port.
        #[arg(long)]
        api: String,
    },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a voter or learner from the cluster.
    Remove { id: u64 },
}

/// Config sources for `edgerun node`: file, process env, flags.
pub fn node_sources(a: &NodeArgs) -> anyhow::Result<Sources> {
    let mut overrides = Vec::new();
    if let Some(id) = a.id {
        overrides.push(("node.id".to_string(), id.to_string()));
    }
    if let Some(d) = &a.data_dir {
        overrides.push((
            "node.data_dir".to_string(),
            toml_string(&d.display().to_string()),
        ));
    }
    if let Some(l) = &a.api_listen {
        overrides.push(("api.listen".to_string(), toml_string(l)));
    }
    for s in &a.set {
        overrides.push(parse_override(s)?);
    }
    Ok(Sources {
        file: a.config.clone(),
        env: Sources::process_env(),
        overrides,
    })
}

/// Quote a string as a TOML value so paths with odd characters survive the flag layer.
pub fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| s.to_string())
}

fn read_arg(v: &str) -> anyhow::Result<String> {
    match v.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}")),
        None => Ok(v.to_string()),
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Node(a) => {
            let cfg = edgerun_config::load(&node_sources(&a)?)?;
            if a.check_config {
                // What the start checks besides the values (schedule, time zone, Redis URL,
                // TLS files), without writing or connecting anything.
                crate::wiring::preflight(&cfg)?;
                println!(
                    "config ok: node {} ({}), api {}, rpc {}, {} peer(s)",
                    cfg.node.id,
                    cfg.node.tier.as_str(),
                    cfg.api.listen,
                    cfg.advertised_rpc(),
                    cfg.cluster.peers.len()
                );
                return Ok(());
            }
            crate::wiring::run(cfg, Some(node_sources(&a)?))
        }
        Cmd::Dev(a) => crate::dev::run(a),
        Cmd::Cert { out, hosts, days } => crate::cert::run(&out, &hosts, days),
        Cmd::Bench { scenario } => edgerun_bench::cluster::run(scenario),
        Cmd::BenchKernels => edgerun_bench::kernels::run(),
        Cmd::BenchSandbox { n, dir, runc } => edgerun_bench::sandbox::run(n, dir, runc),
        Cmd::KernelExec {
            kernel,
            input,
            sandbox,
        } => crate::sandbox::kernel_exec(&kernel, &sandbox, input.as_deref()),
        Cmd::ContainerRun {
            bundle,
            state_root,
            id,
            timeout_ms,
            cgroup,
            clean,
            exec_kernel,
            orders_on_stdin,
        } => {
            if clean {
                crate::container::clean_state(&state_root)
            }
            if orders_on_stdin {
                crate::container::run_from_stdin(state_root)
            }
            let (Some(bundle), Some(id)) = (bundle, id) else {
                anyhow::bail!("container-run needs --bundle and --id (or --clean)");
            };
            crate::container::run(crate::container::RunArgs {
                bundle,
                state_root,
                id,
                timeout: std::time::Duration::from_millis(timeout_ms),
                cgroup,
                exec_kernel,
                stdout_cap: crate::container::DEFAULT_CAP,
                stderr_cap: crate::container::DEFAULT_CAP,
            })
        }
        Cmd::ExecShim {
            sandbox,
            probe,
            argv,
        } => crate::sandbox::exec_shim(&sandbox, probe, &argv),
        Cmd::Restore { from, data_dir, id } => crate::backup::restore(&from, &data_dir, id),
        Cmd::Doctor {
            data_dir,
            config,
            output,
        } => {
            let cfg = match &config {
                Some(file) => {
                    let mut overrides = Vec::new();
                    if let Some(d) = &data_dir {
                        overrides.push((
                            "node.data_dir".to_string(),
                            toml_string(&d.display().to_string()),
                        ));
                    }
                    Some(edgerun_config::load(&Sources {
                        file: Some(file.clone()),
                        env: Sources::process_env(),
                        overrides,
                    })?)
                }
                None => None,
            };
            let data_dir = match (data_dir, &cfg) {
                (Some(d), _) => d,
                (None, Some(c)) => c.node.data_dir.clone(),
                (None, None) => anyhow::bail!("give --data-dir or --config"),
            };
            crate::backup::doctor(&data_dir, cfg.as_ref(), output)
        }
        Cmd::Kernels { .. }
        | Cmd::Events { .. }
        | Cmd::Cluster { .. }
        | Cmd::Task { .. }
        | Cmd::Stream { .. }
        | Cmd::Top { .. }
        | Cmd::Backup { .. } => run_client(cli.cmd).map_err(crate::client::with_exit_code),
    }
}

/// Print `v` as JSON, or as `text(v)`.
fn show(
    out: Output,
    v: &serde_json::Value,
    text: impl FnOnce(&serde_json::Value) -> String,
) -> anyhow::Result<()> {
    match out {
        Output::Json => Client::print(v),
        Output::Text => {
            let t = text(v);
            println!("{}", t.trim_end());
            Ok(())
        }
    }
}

/// Parse `1s`, `500ms`; a bare number is seconds.
fn parse_interval(raw: &str) -> anyhow::Result<std::time::Duration> {
    let d = match raw.parse::<u64>() {
        Ok(s) => std::time::Duration::from_secs(s),
        Err(_) => humantime::parse_duration(raw).map_err(|e| {
            fail(
                exit::INVALID,
                format!("--interval {raw:?}: {e}; e.g. 1s, 500ms"),
            )
        })?,
    };
    if d < std::time::Duration::from_millis(100) {
        return Err(fail(
            exit::INVALID,
            format!("--interval {raw:?}: at least 100ms"),
        ));
    }
    Ok(d)
}

fn run_client(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Backup { conn, out } => crate::backup::backup(&conn.client()?, &out, conn.output),
        Cmd::Kernels { conn } => {
            let v = conn.client()?.get("/v1/kernels")?;
            show(conn.output, &v, output::kernels_table)
        }
        Cmd::Events {
            conn,
            task,
            status,
            kinds,
        } => {
            let mut q = Vec::new();
            if let Some(t) = task {
                q.push(format!("task={t}"));
            }
            if let Some(s) = status {
                q.push(format!("status={s}"));
            }
            if let Some(k) = kinds {
                q.push(format!("kinds={k}"));
            }
            let path = format!("/v1/events?{}", q.join("&"));
            let out = conn.output;
            conn.client()?.events(&path, |kind, data| {
                match out {
                    Output::Text => println!("{kind} {data}"),
                    Output::Json => {
                        println!("{}", serde_json::json!({ "event": kind, "data": data }))
                    }
                }
                true
            })
        }
        Cmd::Top {
            conn,
            interval,
            once,
            frames,
        } => {
            let every = parse_interval(&interval)?;
            let frames = if once { Some(1) } else { frames };
            crate::top::run(&conn.client()?, conn.output, every, frames)
        }
        Cmd::Cluster { conn, cmd } => {
            let c = conn.client()?;
            let after = match cmd {
                ClusterCmd::Status => c.get("/v1/cluster")?,
                ClusterCmd::AddLearner { id, rpc, api } => c.post(
                    "/v1/cluster/learners",
                    &serde_json::json!({ "id": id, "rpc": rpc, "api": api }),
                )?,
                ClusterCmd::Promote { id } => c.post(
                    &format!("/v1/cluster/members/{id}/promote"),
                    &serde_json::json!({}),
                )?,
                ClusterCmd::Remove { id } => c.delete(&format!("/v1/cluster/members/{id}"))?,
            };
            match conn.output {
                Output::Json => Client::print(&after),
                Output::Text => {
                    // Loads come from /v1/nodes; the table is still useful without them.
                    let nodes = c.get("/v1/nodes").ok();
                    println!(
                        "{}",
                        output::cluster_text(&after, nodes.as_ref()).trim_end()
                    );
                    Ok(())
                }
            }
        }
        Cmd::Stream { conn, cmd } => {
            let c = conn.client()?;
            crate::stream_cli::run(&c, conn.output, cmd)
        }
        Cmd::Task { conn, cmd } => {
            let c = conn.client()?;
            let out = conn.output;
            match cmd {
                TaskCmd::Submit {
                    kernel,
                    input,
                    file,
                    priority,
                    idempotency_key,
                    count,
                    wait,
                    timeout,
                } => {
                    let timeout = parse_interval(&timeout)?;
                    let mut tasks = read_tasks(kernel, input, file)?;
                    for task in tasks.iter_mut() {
                        if let Some(obj) = task.as_object_mut() {
                            if let Some(p) = priority {
                                obj.insert("priority".into(), p.into());
                            }
                            if let Some(k) = &idempotency_key {
                                obj.insert("idempotency_key".into(), k.clone().into());
                            }
                        }
                    }
                    if count > 1 {
                        if tasks.len() != 1 {
                            return Err(fail(
                                exit::INVALID,
                                "--count copies one task; the file holds several",
                            ));
                        }
                        if idempotency_key.is_some() {
                            return Err(fail(
                                exit::INVALID,
                                "--count with --idempotency-key would make one task, not copies",
                            ));
                        }
                        let one = tasks.remove(0);
                        tasks = (0..count).map(|_| one.clone()).collect();
                    }
                    if tasks.len() == 1 {
                        let created = c.post("/v1/tasks", &tasks[0])?;
                        if !wait {
                            return show(out, &created, |t| {
                                format!(
                                    "{}\n(edgerun task watch {} follows it)",
                                    output::task_text(t),
                                    t["id"]
                                )
                            });
                        }
                        let id = created
                            .get("id")
                            .and_then(|v| v.as_u64())
                            .context("the answer has no task id")?;
                        let t = c.get(&format!("/v1/tasks/{id}/wait?timeout=300s"))?;
                        show(out, &t, output::task_text)?;
                        return ended_well(&t);
                    }
                    crate::batch::submit_many(&c, out, tasks, wait, timeout)
                }
                TaskCmd::Get { id } => {
                    let t = c.get(&format!("/v1/tasks/{id}"))?;
                    show(out, &t, output::task_text)
                }
                TaskCmd::Wait { id, timeout } => {
                    let t = c.get(&format!("/v1/tasks/{id}/wait?timeout={timeout}"))?;
                    show(out, &t, output::task_text)?;
                    ended_well(&t)
                }
                TaskCmd::List {
                    status,
                    limit,
                    after,
                } => {
                    let mut q = format!("/v1/tasks?limit={limit}");
                    if let Some(s) = status {
                        q.push_str(&format!("&status={s}"));
                    }
                    if let Some(a) = after {
                        q.push_str(&format!("&after={a}"));
                    }
                    let v = c.get(&q)?;
                    show(out, &v, output::tasks_table)
                }
                TaskCmd::Cancel { id } => {
                    let v = c.post(&format!("/v1/tasks/{id}/cancel"), &serde_json::json!({}))?;
                    show(out, &v, output::task_text)
                }
                TaskCmd::Watch { id } => watch(&c, out, id),
            }
        }
        _ => unreachable_client(),
    }
}

fn unreachable_client() -> anyhow::Result<()> {
    Err(anyhow::anyhow!("not a client command"))
}

/// Exit 1 unless the task succeeded.
fn ended_well(t: &serde_json::Value) -> anyhow::Result<()> {
    match t["status"].as_str() {
        Some("succeeded") => Ok(()),
        Some(s) if TERMINAL.contains(&s) => Err(fail(
            exit::TASK_FAILED,
            format!("task {} ended {s}", t["id"]),
        )),
        s => Err(fail(
            exit::TASK_FAILED,
            format!(
                "task {} has not ended (still {})",
                t["id"],
                s.unwrap_or("?")
            ),
        )),
    }
}

/// The tasks `submit` was given: one from --kernel/--input, or one or many from --file (a
/// JSON task, or JSON lines).
fn read_tasks(
    kernel: Option<String>,
    input: Option<String>,
    file: Option<PathBuf>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    match (kernel, file) {
        (Some(k), _) => {
            let input = match input {
                Some(i) => {
                    serde_json::from_str(&read_arg(&i)?).context("--input is not valid JSON")?
                }
                None => serde_json::json!({}),
            };
            Ok(vec![serde_json::json!({ "kernel": k, "input": input })])
        }
        (None, Some(f)) => {
            let text = if f.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?
            };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                return match v {
                    serde_json::Value::Object(_) => Ok(vec![v]),
                    _ => anyhow::bail!("{}: a task is a JSON object", f.display()),
                };
            }
            let mut tasks = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("{} line {}: not JSON", f.display(), i + 1))?;
                anyhow::ensure!(
                    v.is_object(),
                    "{} line {}: a task is a JSON object",
                    f.display(),
                    i + 1
                );
                tasks.push(v);
            }
            anyhow::ensure!(!tasks.is_empty(), "{}: no tasks in it", f.display());
            Ok(tasks)
        }
        (None, None) => anyhow::bail!("give --kernel NAME --input JSON, or --file tasks.json"),
    }
}

const TERMINAL: [&str; 4] = ["succeeded", "failed", "timed_out", "cancelled"];

/// `task watch`: the task's status now, then each change as it is applied, until it ends.
fn watch(c: &Client, out: Output, id: u64) -> anyhow::Result<()> {
    let print = |status: &str, t: &serde_json::Value| {
        let node = t.get("node").and_then(|n| n.as_u64());
        let attempt = t.get("attempt").and_then(|a| a.as_u64()).unwrap_or(0);
        if out == Output::Json {
            println!(
                "{}",
                serde_json::json!({ "task": id, "status": status, "attempt": attempt, "node": node })
            );
            return;
        }
        match node {
            Some(n) => println!("task {id}: {status} (attempt {attempt}, node {n})"),
            None => println!("task {id}: {status}"),
        }
    };
    let finish = |t: &serde_json::Value| -> anyhow::Result<()> {
        let status = t["status"].as_str().unwrap_or("?");
        if out == Output::Json {
            println!("{t}");
        }
        if status == "succeeded" {
            if out == Output::Text {
                println!(
                    "{}",
                    serde_json::to_string(&t["result"]).unwrap_or_default()
                );
            }
            Ok(())
        } else {
            Err(fail(
                exit::TASK_FAILED,
                format!(
                    "task {id} ended {status}: {}",
                    t["error"]["message"].as_str().unwrap_or("")
                ),
            ))
        }
    };
    let last = std::cell::RefCell::new(String::new());
    let mut ended: Option<serde_json::Value> = None;
    // The stream opens first, then the current state is read: no change falls between.
    c.events_opened(
        &format!("/v1/events?task={id}&kinds=task"),
        || {
            let t = c.get(&format!("/v1/tasks/{id}"))?;
            let status = t["status"].as_str().unwrap_or("?").to_string();
            print(&status, &t);
            *last.borrow_mut() = status.clone();
            if TERMINAL.contains(&status.as_str()) {
                ended = Some(t);
                return Ok(false);
            }
            Ok(true)
        },
        |_, data| {
            let status = data["status"].as_str().unwrap_or("?").to_string();
            if *last.borrow() != status {
                print(&status, data);
                *last.borrow_mut() = status.clone();
            }
            !TERMINAL.contains(&status.as_str())
        },
    )?;
    match ended {
        Some(t) => finish(&t),
        None => finish(&c.get(&format!("/v1/tasks/{id}"))?),
    }
}
