//! `edgerun bench wasm`: WebAssembly tasks.
//!
//! - **start**: one run of a module that reads its input and prints `{}`, on the node's wasm
//!   runtime (prepared once, an instance from the pool per run), beside a process start of
//!   the same C program compiled natively (fork + exec + wait), N of each, same run.
//! - **speed**: the same C matmul (n × n, doubles) compiled natively (clang -O2) and to
//!   wasm32-wasi (clang -O2, run by wasmtime/Cranelift), the module's time beside the native
//!   program's, each timing itself with the monotonic clock around the multiplication only.
//! - **e2e**: wasm tasks through a real 3-node cluster (batches of 100), tasks/s.
//!
//! Needs clang, lld and wasi-libc (scripts/setup installs them).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::cluster::{agent, edgerun_cluster, f, percentiles, post_json, wait_cluster};

const NOOP: &str = r#"
#include <stdio.h>
int main(void) { char buf[4096]; while (fread(buf, 1, sizeof buf, stdin) > 0) {} puts("{}"); return 0; }
"#;

/// Prints {"n": n, "ns": nanoseconds of the multiplication, "check": a checksum}.
const MATMUL: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 256;
  double *a = malloc(sizeof(double) * n * n), *b = malloc(sizeof(double) * n * n),
         *c = calloc((size_t)n * n, sizeof(double));
  if (!a || !b || !c) return 2;
  for (int i = 0; i < n * n; i++) { a[i] = (i % 17) * 0.25; b[i] = (i % 13) * 0.5; }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < n; i++)
    for (int k = 0; k < n; k++) {
      double x = a[i * n + k];
      for (int j = 0; j < n; j++) c[i * n + j] += x * b[k * n + j];
    }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double check = 0;
  for (int i = 0; i < n * n; i++) check += c[i];
  long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
  printf("{\"n\":%d,\"ns\":%lld,\"check\":%.17g}\n", n, ns, check);
  return 0;
}
"#;

fn clang(dir: &Path, name: &str, src: &str, wasm: bool) -> anyhow::Result<std::path::PathBuf> {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src)?;
    let out = dir.join(if wasm {
        format!("{name}.wasm")
    } else {
        name.to_string()
    });
    let mut cmd = Command::new("clang");
    if wasm {
        // SIMD on both sides: the native build vectorizes for SSE2, wasm for simd128
        // (Cranelift compiles it to SSE/AVX).
        cmd.args(["--target=wasm32-wasi", "-msimd128", "-Wl,--strip-all"]);
    }
    let o = cmd
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&c)
        .output()
        .context("clang (./scripts/setup installs it)")?;
    anyhow::ensure!(
        o.status.success(),
        "clang {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(out)
}

fn runtime(dir: &Path) -> anyhow::Result<edgerun_wasm::Runtime> {
    edgerun_wasm::Runtime::new(&edgerun_wasm::RuntimeConfig {
        cache_dir: dir.join("wasm-cache"),
        instances: 8,
        max_memory_mb: 1024,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))
}

fn run_once(
    rt: &edgerun_wasm::Runtime,
    hash: &[u8; 32],
    args: &[&str],
    stdin: &[u8],
) -> anyhow::Result<edgerun_wasm::Ran> {
    let r = rt
        .run(
            hash,
            edgerun_wasm::Run {
                args: args.iter().map(|s| s.to_string()).collect(),
                stdin: stdin.to_vec(),
                timeout: Duration::from_secs(120),
                memory_bytes: 512 << 20,
                stdout_cap: 1 << 20,
                stderr_cap: 1 << 16,
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        r.ended == edgerun_wasm::Ended::Exited(0),
        "the module ended {:?}: {}",
        r.ended,
        String::from_utf8_lossy(&r.stderr)
    );
    Ok(r)
}

pub fn wasm(dir: &Path, n: usize, matmul_n: usize, tasks: usize) -> anyhow::Result<Value> {
    std::fs::create_dir_all(dir)?;
    let rt = runtime(dir)?;
    // ---- start
    let noop_wasm = std::fs::read(clang(dir, "noop", NOOP, true)?)?;
    let noop_native = clang(dir, "noop", NOOP, false)?;
    let h = edgerun_wasm::sha256(&noop_wasm);
    let compile = Instant::now();
    rt.prepare(h, &noop_wasm)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let compile_ms = compile.elapsed().as_secs_f64() * 1000.0;
    let input = br#"{"values":[1,2,3]}"#;
    let mut wasm_ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        run_once(&rt, &h, &["noop"], input)?;
        wasm_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut proc_ms = Vec::with_capacity(n);
    for _ in 0..n.min(1000) {
        let t = Instant::now();
        let mut child = Command::new(&noop_native)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        if let Some(mut i) = child.stdin.take() {
            use std::io::Write;
            i.write_all(input)?;
        }
        let o = child.wait_with_output()?;
        anyhow::ensure!(o.status.success(), "the native noop failed");
        proc_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (w, p) = (percentiles(&mut wasm_ms), percentiles(&mut proc_ms));
    let ratio = p["p50_ms"].as_f64().unwrap_or(0.0) / w["p50_ms"].as_f64().unwrap_or(f64::NAN);
    println!(
        "wasm start: {n} runs, p50 {} ms p99 {} ms (first compile {compile_ms:.1} ms); a native process (fork+exec+wait) p50 {} ms p99 {} ms: wasm {ratio:.1}x faster",
        f(&w, "p50_ms"),
        f(&w, "p99_ms"),
        f(&p, "p50_ms"),
        f(&p, "p99_ms")
    );
    // ---- speed
    let mm_wasm = std::fs::read(clang(dir, "matmul", MATMUL, true)?)?;
    let mm_native = clang(dir, "matmul", MATMUL, false)?;
    let mh = edgerun_wasm::sha256(&mm_wasm);
    rt.prepare(mh, &mm_wasm)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let arg = matmul_n.to_string();
    let mut rows = Vec::new();
    for round in 0..3 {
        let r = run_once(&rt, &mh, &["matmul", &arg], b"")?;
        let wv: Value = serde_json::from_slice(&r.stdout)?;
        let o = Command::new(&mm_native).arg(&arg).output()?;
        anyhow::ensure!(o.status.success(), "the native matmul failed");
        let nv: Value = serde_json::from_slice(&o.stdout)?;
        anyhow::ensure!(wv["check"] == nv["check"], "results differ: {wv} vs {nv}");
        let (wns, nns) = (
            wv["ns"].as_f64().unwrap_or(0.0),
            nv["ns"].as_f64().unwrap_or(0.0),
        );
        let flops = 2.0 * (matmul_n as f64).powi(3);
        println!(
            "wasm speed, matmul n={matmul_n} (round {}): wasm {:.1} ms ({:.2} GFLOP/s), native {:.1} ms ({:.2} GFLOP/s): wasm at {:.0}% of native",
            round + 1,
            wns / 1e6,
            flops / wns,
            nns / 1e6,
            flops / nns,
            100.0 * nns / wns
        );
        rows.push(json!({ "wasm_ms": wns / 1e6, "native_ms": nns / 1e6, "wasm_share_of_native": nns / wns }));
    }
    // ---- e2e
    let e2e = e2e(dir, tasks, &noop_wasm)?;
    Ok(json!({
        "start": { "runs": n, "wasm": w, "process": p, "process_over_wasm_p50": ratio,
                   "first_compile_ms": compile_ms },
        "matmul": { "n": matmul_n, "rounds": rows },
        "e2e": e2e,
    }))
}

fn e2e(dir: &Path, tasks: usize, module: &[u8]) -> anyhow::Result<Value> {
    let procs = edgerun_cluster(
        &dir.join("cluster"),
        3,
        &[
            "executor.isolation=\"inproc\"".into(),
            "executor.slots=16".into(),
            "cache.enabled=false".into(),
        ],
    )?;
    let a = agent();
    wait_cluster(&a, &procs)?;
    let urls: Vec<String> = procs.iter().map(|p| p.url.clone()).collect();
    let up = a
        .post(&format!("{}/v1/modules?name=noop", urls[0]))
        .send_bytes(module)
        .map_err(|e| anyhow::anyhow!("uploading: {e}"))?;
    anyhow::ensure!(up.status() < 300, "upload: {}", up.status());
    let started = Instant::now();
    let per_call = 100;
    let mut ids = Vec::new();
    for (i, chunk) in (0..tasks).collect::<Vec<_>>().chunks(per_call).enumerate() {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|k| json!({ "wasm": { "module": "noop" }, "input": { "k": k } }))
            .collect();
        let url = format!("{}/v1/tasks/batch", urls[i % urls.len()]);
        let v = loop {
            match post_json(&a, &url, &json!({ "tasks": batch })) {
                Ok(v) => break v,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        ids.extend(v["ids"].as_array().cloned().unwrap_or_default());
    }
    let submitted = started.elapsed().as_secs_f64();
    crate::cluster::poll(
        "every wasm task to end",
        Duration::from_secs(600),
        Duration::from_millis(20),
        || {
            let done: u64 = ["succeeded", "failed", "timed_out"]
                .iter()
                .filter_map(|s| crate::cluster::count_status(&a, &urls[0], s))
                .sum();
            (done >= tasks as u64).then_some(())
        },
    )?;
    let secs = started.elapsed().as_secs_f64();
    let ok = crate::cluster::count_status(&a, &urls[0], "succeeded").unwrap_or(0);
    println!(
        "wasm e2e: {tasks} tasks on 3 nodes in {secs:.2} s = {:.0} tasks/s (submitted in {submitted:.2} s); {ok} succeeded",
        tasks as f64 / secs
    );
    Ok(
        json!({ "tasks": tasks, "secs": secs, "tasks_per_second": tasks as f64 / secs,
               "succeeded": ok, "submitted_in_secs": submitted }),
    )
}
