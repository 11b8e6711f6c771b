//! `edgerun`: one binary for every node, plus a small client for the REST API.
//!
//! ```text
//! edgerun node --config node.toml     run a node
//! edgerun dev                         a local node with a demo task, for trying things out
//! edgerun task submit|get|wait|list|cancel, edgerun cluster status, edgerun kernels
//! ```
//!
//! # Layout
//! - `cli`: argument parsing (clap) and dispatch; `output`: tables or JSON (`-o json`).
//! - `wiring`: a node's boot sequence; `logging`: its log; `control`: what changes while it
//!   runs (log filter, limits, keys).
//! - `dev`: `edgerun dev`, a local cluster of child processes.
//! - `client`: the blocking REST client the commands use; `batch`: bulk submit and wait;
//!   `top`: the live view; `backup`: backup, restore, doctor; `cert`: a private CA for TLS.
//! - `container`: `edgerun container-run`, the single-threaded helper that drives one youki
//!   container; `sandbox`: the executor's helper processes.
//! - the benchmarks (`edgerun bench`, `bench-sandbox`, `bench-kernels`) are the
//!   `edgerun-bench` crate (`bench/`), dispatched from `cli`.
//!
//! Every subcommand runs with umask 077: whatever the process creates (data directory, Raft
//! log, database, results, backups, certificates, sandbox bundles; and the helpers it
//! starts, which inherit it) is readable by the node's user only.

mod backup;
mod batch;
mod cert;
mod cli;
mod client;
mod container;
mod control;
mod dev;
mod logging;
mod output;
mod sandbox;
mod stream_cli;
mod top;
mod wiring;

use clap::Parser;

fn main() {
    // First, before anything can create a file (SECURITY.md, "Data at rest").
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = cli::Cli::parse();
    if let Err(e) = cli::run(cli) {
        eprintln!("edgerun: error: {e:#}");
        std::process::exit(client::exit_code(&e));
    }
}
