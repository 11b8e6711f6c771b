//! Where the nodes live and how the network between them is broken.
//!
//! - [`Net::Netns`] (root): each node in its own network namespace, joined by veth pairs to
//!   one bridge; the harness talks to nodes from the host side of the bridge. Partitions and
//!   packet loss are iptables rules inside the node's namespace, so they are real packet
//!   loss: TCP retransmits, connections stall, nothing is told "refused".
//! - [`Net::Local`] (anyone): processes on 127.0.0.1; partitions, loss and latency go through
//!   the nodes' own fault filter on outgoing cluster RPC (`PUT /v1/debug/net`).
//! - [`Net::Docker`] (a Docker engine and the `edgerun:latest` image from
//!   `deploy/build-image.sh`): each node a container on one Docker network with a fixed
//!   address; kill is `docker kill`, pause is `docker pause`; partitions and loss are the same
//!   iptables rules as netns, set inside the container's namespace with `nsenter`. The node's
//!   directory is bind-mounted at the same path. No clock faults (no libfaketime inside).
//!
//! Latency is always the fault filter's: the kernel here has no `sch_netem`, so `tc netem`
//! cannot be used (checked at start; see [`Net::netem_available`]).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Interface and namespace names start with this, so a crashed run's leftovers can be found.
const PREFIX: &str = "ech";
const SUBNET: &str = "10.231.0";
const API_PORT: u16 = 7100;
const RPC_PORT: u16 = 7200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Netns,
    Local,
    Docker,
}

const DOCKER_SUBNET: &str = "10.232.0";
const DOCKER_NET: &str = "edgerun-chaos";
pub const DOCKER_IMAGE: &str = "edgerun:latest";

/// The container name of node `id` (docker backend).
pub fn container(id: u64) -> String {
    format!("{DOCKER_NET}-n{id}")
}

/// Addresses of one node.
#[derive(Debug, Clone)]
pub struct Addrs {
    pub api: String,
    pub rpc: String,
}

pub enum Net {
    Netns {
        bridge: String,
        made: BTreeSet<u64>,
        forward_rule: bool,
    },
    Local {
        ports: BTreeMap<u64, (u16, u16)>,
    },
    Docker {
        made: bool,
    },
}

fn docker_ip(id: u64) -> String {
    format!("{DOCKER_SUBNET}.{}", 10 + id)
}

/// Output of a command, or why it failed.
fn output(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run(args: &[&str]) -> Result<()> {
    output(args).map(|_| ())
}

fn quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

fn free_port() -> Result<u16> {
    Ok(edgerun_testkit::free_port())
}

fn ns(id: u64) -> String {
    format!("{PREFIX}-n{id}")
}

fn ip(id: u64) -> String {
    format!("{SUBNET}.{}", 10 + id)
}

impl Net {
    /// The backend asked for; `auto` is netns when root and `ip netns` works.
    pub fn open(kind: Option<Kind>) -> Result<Net> {
        let kind = match kind {
            Some(k) => k,
            None if nix::unistd::geteuid().is_root() && Net::netns_works() => Kind::Netns,
            None => {
                eprintln!("chaos: not root or no `ip netns`: nodes run on 127.0.0.1 and network faults go through the nodes' RPC fault filter");
                Kind::Local
            }
        };
        match kind {
            Kind::Local => Ok(Net::Local {
                ports: BTreeMap::new(),
            }),
            Kind::Docker => {
                output(&["docker", "info", "--format", "{{.ServerVersion}}"])
                    .context("the docker backend needs a Docker engine")?;
                output(&["docker", "image", "inspect", DOCKER_IMAGE]).with_context(|| {
                    format!("the docker backend runs the image {DOCKER_IMAGE}; build it with deploy/build-image.sh")
                })?;
                Net::docker_sweep();
                run(&[
                    "docker",
                    "network",
                    "create",
                    "--subnet",
                    &format!("{DOCKER_SUBNET}.0/24"),
                    DOCKER_NET,
                ])?;
                Ok(Net::Docker { made: true })
            }
            Kind::Netns => {
                Net::sweep();
                let bridge = format!("{PREFIX}-br");
                run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
                run(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("{SUBNET}.1/24"),
                    "dev",
                    &bridge,
                ])?;
                run(&["ip", "link", "set", &bridge, "up"])?;
                // With br_netfilter loaded (Docker loads it), bridged frames traverse the host's
                // FORWARD chain, whose policy Docker sets to DROP.
                let forward_rule =
                    run(&["iptables", "-I", "FORWARD", "-i", &bridge, "-j", "ACCEPT"]).is_ok();
                Ok(Net::Netns {
                    bridge,
                    made: BTreeSet::new(),
                    forward_rule,
                })
            }
        }
    }

    /// Remove the containers and network a crashed docker run left.
    fn docker_sweep() {
        if let Ok(ids) = output(&[
            "docker",
            "ps",
            "-aq",
            "--filter",
            &format!("name={DOCKER_NET}-n"),
        ]) {
            for id in ids.split_whitespace() {
                quiet(&["docker", "rm", "-f", id]);
            }
        }
        quiet(&["docker", "network", "rm", DOCKER_NET]);
    }

    fn netns_works() -> bool {
        let probe = format!("{PREFIX}-probe");
        let ok = run(&["ip", "netns", "add", &probe]).is_ok();
        quiet(&["ip", "netns", "del", &probe]);
        ok && run(&["iptables", "--version"]).is_ok()
    }

    /// Whether `tc netem` can be used here (it cannot on a kernel without sch_netem).
    pub fn netem_available() -> bool {
        let probe = format!("{PREFIX}-tcp");
        if run(&["ip", "link", "add", &probe, "type", "dummy"]).is_err() {
            return false;
        }
        let ok = run(&[
            "tc", "qdisc", "add", "dev", &probe, "root", "netem", "delay", "1ms",
        ])
        .is_ok();
        quiet(&["ip", "link", "del", &probe]);
        ok
    }

    /// Remove what a crashed earlier run left behind.
    fn sweep() {
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with(&format!("{PREFIX}-")) {
                    quiet(&["ip", "netns", "del", name]);
                }
            }
        }
        quiet(&["ip", "link", "del", &format!("{PREFIX}-br")]);
        while run(&[
            "iptables",
            "-D",
            "FORWARD",
            "-i",
            &format!("{PREFIX}-br"),
            "-j",
            "ACCEPT",
        ])
        .is_ok()
        {}
    }

    pub fn kind(&self) -> Kind {
        match self {
            Net::Netns { .. } => Kind::Netns,
            Net::Local { .. } => Kind::Local,
            Net::Docker { .. } => Kind::Docker,
        }
    }

    /// Make the place for node `id` (idempotent) and return its addresses.
    pub fn place(&mut self, id: u64) -> Result<Addrs> {
        match self {
            Net::Docker { .. } => Ok(Addrs {
                api: format!("{}:{API_PORT}", docker_ip(id)),
                rpc: format!("{}:{RPC_PORT}", docker_ip(id)),
            }),
            Net::Local { ports } => {
                let (api, rpc) = match ports.get(&id) {
                    Some(p) => *p,
                    None => {
                        let p = (free_port()?, free_port()?);
                        ports.insert(id, p);
                        p
                    }
                };
                Ok(Addrs {
                    api: format!("127.0.0.1:{api}"),
                    rpc: format!("127.0.0.1:{rpc}"),
                })
            }
            Net::Netns { bridge, made, .. } => {
                if !made.contains(&id) {
                    let (n, host, inner) =
                        (ns(id), format!("{PREFIX}-v{id}"), format!("{PREFIX}-p{id}"));
                    run(&["ip", "netns", "add", &n])?;
                    run(&[
                        "ip", "link", "add", &host, "type", "veth", "peer", "name", &inner,
                    ])?;
                    run(&["ip", "link", "set", &inner, "netns", &n])?;
                    run(&["ip", "link", "set", &host, "master", bridge, "up"])?;
                    let inside = |args: &[&str]| {
                        let mut all = vec!["ip", "netns", "exec", &n];
                        all.extend_from_slice(args);
                        run(&all)
                    };
                    inside(&[
                        "ip",
                        "addr",
                        "add",
                        &format!("{}/24", ip(id)),
                        "dev",
                        &inner,
                    ])?;
                    inside(&["ip", "link", "set", &inner, "up"])?;
                    inside(&["ip", "link", "set", "lo", "up"])?;
                    made.insert(id);
                }
                Ok(Addrs {
                    api: format!("{}:{API_PORT}", ip(id)),
                    rpc: format!("{}:{RPC_PORT}", ip(id)),
                })
            }
        }
    }

    /// The command that runs `program` as node `id`, whose files are under `dir`.
    pub fn command(&self, id: u64, program: &str, dir: &std::path::Path) -> Command {
        match self {
            Net::Docker { .. } => {
                // The image's own binary; the node's directory at the same path inside.
                let _ = program;
                let name = container(id);
                quiet(&["docker", "rm", "-f", &name]);
                let mut c = Command::new("docker");
                c.args(["run", "--rm", "--name", &name, "--network", DOCKER_NET])
                    .args(["--ip", &docker_ip(id)])
                    .arg("-v")
                    .arg(format!("{0}:{0}", dir.display()))
                    .arg(DOCKER_IMAGE);
                c
            }
            Net::Local { .. } => Command::new(program),
            Net::Netns { .. } => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns(id), program]);
                c
            }
        }
    }

    /// Cut node `from`'s traffic to node `to` (netns: both directions of packets between the
    /// two are dropped on `from`'s side when `both`, only `from → to` otherwise).
    /// Local: `from` stops sending RPC to `to`; the harness sets the other side itself.
    pub fn netns_block(&self, from: u64, to: u64, both: bool) -> Result<()> {
        let peer = self.ip_of(to);
        self.in_node(
            from,
            &["iptables", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"],
        )?;
        if both {
            self.in_node(
                from,
                &["iptables", "-A", "INPUT", "-s", &peer, "-j", "DROP"],
            )?;
        }
        Ok(())
    }

    fn ip_of(&self, id: u64) -> String {
        match self {
            Net::Docker { .. } => docker_ip(id),
            _ => ip(id),
        }
    }

    fn subnet(&self) -> &'static str {
        match self {
            Net::Docker { .. } => DOCKER_SUBNET,
            _ => SUBNET,
        }
    }

    /// Run a command in node `id`'s network namespace (netns or container).
    fn in_node(&self, id: u64, args: &[&str]) -> Result<()> {
        match self {
            Net::Docker { .. } => {
                let pid = output(&[
                    "docker",
                    "inspect",
                    "--format",
                    "{{.State.Pid}}",
                    &container(id),
                ])?;
                let mut all = vec!["nsenter", "-t", pid.as_str(), "-n"];
                all.extend_from_slice(args);
                run(&all)
            }
            _ => {
                let n = ns(id);
                let mut all = vec!["ip", "netns", "exec", n.as_str()];
                all.extend_from_slice(args);
                run(&all)
            }
        }
    }

    /// Drop `percent` of the packets node `id` receives from other nodes (not the harness's,
    /// which come from the bridge address and are accepted first).
    pub fn netns_loss(&self, id: u64, percent: u8) -> Result<()> {
        let p = format!("{:.2}", f64::from(percent) / 100.0);
        let harness = format!("{}.1", self.subnet());
        let subnet = format!("{}.0/24", self.subnet());
        self.in_node(
            id,
            &["iptables", "-A", "INPUT", "-s", &harness, "-j", "ACCEPT"],
        )?;
        self.in_node(
            id,
            &[
                "iptables",
                "-A",
                "INPUT",
                "-s",
                &subnet,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ],
        )
    }

    /// Remove every packet rule on node `id`.
    pub fn netns_clear(&self, id: u64) -> Result<()> {
        self.in_node(id, &["iptables", "-F"])
    }

    /// Tear everything down.
    pub fn close(&mut self) {
        if let Net::Docker { made } = self {
            if *made {
                Net::docker_sweep();
                *made = false;
            }
        }
        if let Net::Netns {
            bridge,
            made,
            forward_rule,
        } = self
        {
            for id in made.iter() {
                quiet(&["ip", "netns", "del", &ns(*id)]);
                quiet(&["ip", "link", "del", &format!("{PREFIX}-v{id}")]);
            }
            made.clear();
            if *forward_rule {
                quiet(&["iptables", "-D", "FORWARD", "-i", bridge, "-j", "ACCEPT"]);
                *forward_rule = false;
            }
            quiet(&["ip", "link", "del", bridge]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.close();
    }
}
