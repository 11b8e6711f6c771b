//! `edgerun top`: the cluster's members, their load and the tasks by state, redrawn every
//! interval, with tasks finished per second between frames. Text redraws the terminal (or
//! prints frames one after another when stdout is not a terminal); `-o json` prints one JSON
//! object per frame.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{self, Output};

const ENDED: [&str; 4] = ["succeeded", "failed", "timed_out", "cancelled"];

fn finished(c: &Value) -> u64 {
    ENDED.iter().filter_map(|s| c["tasks"][*s].as_u64()).sum()
}

pub fn run(c: &Client, out: Output, every: Duration, frames: Option<u64>) -> anyhow::Result<()> {
    let redraw = out == Output::Text && std::io::stdout().is_terminal();
    let mut last: Option<(Instant, u64)> = None;
    let mut shown = 0u64;
    loop {
        let frame = c
            .get("/v1/cluster")
            .and_then(|cl| Ok((cl, c.get("/v1/nodes")?)));
        match frame {
            Ok((cl, nodes)) => {
                let now = Instant::now();
                let done = finished(&cl);
                let rate = last.map(|(t, n)| {
                    done.saturating_sub(n) as f64 / now.duration_since(t).as_secs_f64().max(1e-3)
                });
                last = Some((now, done));
                match out {
                    Output::Json => println!(
                        "{}",
                        json!({ "cluster": cl, "nodes": nodes["nodes"], "finished_per_second": rate })
                    ),
                    Output::Text => {
                        if redraw {
                            print!("\x1b[2J\x1b[H");
                        }
                        println!(
                            "edgerun top — every {:?} — Ctrl-C to quit\n{}finished/s: {}\n",
                            every,
                            output::cluster_text(&cl, Some(&nodes)),
                            rate.map_or("…".into(), |r| format!("{r:.1}"))
                        );
                    }
                }
            }
            // The first frame fails the command; later, a node that stops answering is shown
            // and asked again.
            Err(e) if shown == 0 => return Err(e),
            Err(e) => println!("cannot read the cluster: {e:#}"),
        }
        shown += 1;
        if frames.is_some_and(|f| shown >= f) {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}
