//! `edgerun bench-kernels`: throughput of each kernel called directly (no cluster, no
//! sandbox), and matmul GFLOP/s at n = 256, 512, 1024. `scripts/bench-kernels` runs it next
//! to numpy's OpenBLAS sgemm in the same run.

use std::time::{Duration, Instant};

use edgerun_actors::{CppKernels, Kernels};
use edgerun_cpp::{matmul, sha256_hex, Matrix};
use serde_json::json;

/// Run `f` repeatedly for about `budget` (at least 3 times); the median seconds per run.
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut runs = Vec::new();
    let start = Instant::now();
    while runs.len() < 3 || (start.elapsed() < budget && runs.len() < 1000) {
        let t = Instant::now();
        f();
        runs.push(t.elapsed().as_secs_f64());
    }
    runs.sort_by(|a, b| a.total_cmp(b));
    runs[runs.len() / 2]
}

fn series(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 7919) % 1000) as f64 / 10.0).collect()
}

pub fn run() -> anyhow::Result<()> {
    let budget = Duration::from_millis(700);
    println!("| kernel | input | median time | throughput |");
    println!("|---|---|---|---|");
    for n in [256usize, 512, 1024] {
        let a = Matrix {
            rows: n,
            cols: n,
            data: (0..n * n).map(|i| (i % 13) as f32 * 0.5).collect(),
        };
        let b = Matrix {
            rows: n,
            cols: n,
            data: (0..n * n).map(|i| (i % 7) as f32 * 0.25).collect(),
        };
        let s = time(budget, || {
            let _ = matmul(&a, &b);
        });
        println!(
            "| matmul | {n}x{n} f32 | {:.2} ms | {:.2} GFLOP/s |",
            s * 1e3,
            2.0 * (n as f64).powi(3) / s / 1e9
        );
    }
    let k = CppKernels;
    let cases: Vec<(&str, String, String, f64, &str)> = vec![
        ("stats", "1M values".into(), json!({ "values": series(1_000_000) }).to_string(), 1e6, "values/s"),
        ("sort", "1M values".into(), json!({ "values": series(1_000_000) }).to_string(), 1e6, "values/s"),
        ("fft", "2^16 values".into(), json!({ "values": series(1 << 16) }).to_string(), (1 << 16) as f64, "values/s"),
        (
            "conv2d",
            "512x512, 5x5".into(),
            json!({ "image": vec![vec![1.5f32; 512]; 512], "kernel": vec![vec![0.04f32; 5]; 5] }).to_string(),
            512.0 * 512.0,
            "pixels/s",
        ),
        ("sobel", "512x512".into(), json!({ "image": vec![vec![1.5f32; 512]; 512] }).to_string(), 512.0 * 512.0, "pixels/s"),
        (
            "window_agg",
            "100k points, 1 s / 250 ms".into(),
            json!({ "points": (0..100_000).map(|i| json!({ "t": i * 10, "v": (i % 97) as f64 })).collect::<Vec<_>>(), "window_ms": 1000, "slide_ms": 250, "aggs": ["count", "sum", "mean", "min", "max", "anomaly"] })
                .to_string(),
            1e5,
            "points/s",
        ),
    ];
    for (name, what, input, items, unit) in cases {
        let s = time(budget, || {
            let _ = k.run(name, &input);
        });
        println!(
            "| {name} (JSON in and out) | {what} | {:.2} ms | {:.2} M {unit} |",
            s * 1e3,
            items / s / 1e6
        );
    }
    let data = vec![0x5au8; 16 * 1024 * 1024];
    let s = time(budget, || {
        let _ = sha256_hex(&data);
    });
    println!(
        "| sha256 (bytes, no base64) | 16 MiB | {:.2} ms | {:.0} MB/s |",
        s * 1e3,
        16.0 * 1.048576 / s
    );
    Ok(())
}
