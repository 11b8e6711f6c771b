//! Engine throughput, records through a pipeline on one core:
//! `cargo bench -p edgerun-streams --bench pipeline`.
//!
//! 1,000 keys, a 1 s tumbling window with count, mean, max and p99, after a CEL filter and map
//! (the shape of issue 24's ingest benchmark, without HTTP or a sink).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgerun_streams::{pipeline, Pipeline, TimeSpec};
use serde_json::json;

fn records(n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            json!({
                "sensor": format!("s{}", i % 1000),
                "ts": 1_700_000_000_000i64 + (i as i64),
                "temp": (i % 97) as f64 / 3.0,
            })
        })
        .collect()
}

fn job(with_exprs: bool) -> Pipeline {
    let mut steps = vec![];
    if with_exprs {
        steps.push(json!({ "filter": "temp > -50.0" }));
        steps.push(json!({ "map": { "temp_f": "temp * 1.8 + 32.0" } }));
    }
    steps.push(json!({ "key_by": "sensor" }));
    steps.push(json!({ "window": { "type": "tumbling", "size_ms": 1000 },
        "aggregate": { "n": { "count": "*" }, "mean": { "mean": "temp" }, "hi": { "max": "temp" }, "p99": { "p99": "temp" } } }));
    let steps = pipeline(&serde_json::Value::Array(steps)).unwrap_or_else(|e| panic!("{e}"));
    Pipeline::new(
        "bench",
        TimeSpec {
            field: Some("ts".into()),
            max_delay_ms: 100,
            idle_ms: None,
        },
        steps,
    )
}

fn bench(c: &mut Criterion) {
    let rs = records(100_000);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(rs.len() as u64));
    g.sample_size(10);
    for (name, exprs) in [("window only", false), ("filter+map+window", true)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut p = job(exprs);
                let mut out = Vec::new();
                for (i, r) in rs.iter().enumerate() {
                    p.push(r.clone(), i as i64, &mut out);
                }
                out.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
