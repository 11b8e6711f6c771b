//! `edgerun`: one binary for every node, plus a small client for the REST API.
//!
//! ```text
//! edgerun node --config node.toml     run a node
//! edgerun dev                         a local node with a demo task, for trying things out
//! edgerun task submit|get|wait|list|cancel, edgerun cluster status, edgerun kernels
//! ```

mod backup;
mod batch;
mod bench;
mod bench_kernels;
mod cert;
mod cli;
mod client;
mod container;
mod control;
mod dev;
mod logging;
mod output;
mod perf;
mod sandbox;
mod top;
mod wiring;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(e) = cli::run(cli) {
        eprintln!("edgerun: error: {e:#}");
        std::process::exit(client::exit_code(&e));
    }
}
