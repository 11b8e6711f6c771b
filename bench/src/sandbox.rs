//! `edgerun bench-sandbox`: per-task overhead of each isolation mode, and of `runc run` on
//! the same bundle, measured in one run on this machine. Each mode runs the same tiny `stats`
//! kernel task `n` times in a row (after a warm-up); the table shows p50/p95 wall time per
//! task and the ratio to runc's median.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use edgerun_actors::executor::container::{own_cgroup, spec, SpecLimits};
use edgerun_actors::executor::{
    ContainerConfig, ContainerExecutor, Executor, InprocExecutor, Job, ProcessExecutor,
    ProcessLimits,
};
use edgerun_actors::CppKernels;
use edgerun_model::{Outcome, Work};

const INPUT: &str = r#"{"values":[3,1,4,1,5,9,2,6]}"#;

fn job() -> Job {
    Job {
        task: 1,
        attempt: 1,
        work: Work::Kernel {
            kernel: "stats".into(),
            input: INPUT.into(),
        },
        timeout: Duration::from_secs(30),
        memory_mb: 256,
        cpu_millis: None,
        network: false,
        disk_mb: None,
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(e: &dyn Executor, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let t = Instant::now();
        match e.run(job()).await {
            Outcome::Succeeded { .. } => {}
            other => anyhow::bail!("{:?} run {i} failed: {other:?}", e.isolation()),
        }
        if i >= 5 {
            out.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(out)
}

fn runc(exe: &Path, dir: &Path, n: usize) -> anyhow::Result<Vec<f64>> {
    let bundle = dir.join("runc-bundle");
    let input = bundle.join("input.json");
    std::fs::create_dir_all(bundle.join("rootfs"))?;
    std::fs::write(&input, INPUT)?;
    let args: Vec<String> = ["/edgerun", "kernel-exec", "stats", "--input", "/input.json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let parent = format!(
        "{}/edgerun-bench-runc-{}",
        own_cgroup().trim_end_matches('/'),
        std::process::id()
    );
    let state = dir.join("runc-state");
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let id = format!("bench-{}-{i}", std::process::id());
        let cfg = spec(
            &args,
            &BTreeMap::new(),
            Some(&input),
            exe,
            &job(),
            SpecLimits {
                pids: 128,
                disk_mb: 256,
            },
            &format!("{parent}/{id}"),
        );
        std::fs::write(bundle.join("config.json"), cfg.to_string())?;
        let t = Instant::now();
        let st = std::process::Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .context("running runc (install it: apt-get install runc)")?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if !st.status.success() {
            anyhow::bail!(
                "runc run failed: {}",
                String::from_utf8_lossy(&st.stderr).trim()
            );
        }
        if i >= 5 {
            out.push(ms);
        }
    }
    let _ = std::process::Command::new("find")
        .arg("/sys/fs/cgroup")
        .args([
            "-depth",
            "-type",
            "d",
            "-path",
            &format!("*{}*", parent.trim_start_matches('/')),
            "-exec",
            "rmdir",
            "{}",
            ";",
        ])
        .status();
    Ok(out)
}

pub fn run(n: usize, dir: Option<PathBuf>, with_runc: bool) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("edgerun-bench-")
        .tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows: Vec<(&str, Vec<f64>)> = Vec::new();
    rt.block_on(async {
        rows.push((
            "inproc",
            measure(
                &InprocExecutor {
                    kernels: Arc::new(CppKernels),
                    max_result: 16 * 1024 * 1024,
                },
                n,
            )
            .await?,
        ));
        let process = ProcessExecutor::new(ProcessLimits::plain(exe.clone()));
        rows.push(("process", measure(&process, n).await?));
        for (label, exec_kernel) in [("container", false), ("container, kernel via exec", true)] {
            let c = ContainerExecutor::new(ContainerConfig {
                exe: exe.clone(),
                root: dir.join("sandbox"),
                cgroup_parent: format!(
                    "{}/edgerun-bench-{}",
                    own_cgroup().trim_end_matches('/'),
                    std::process::id()
                ),
                pids: 128,
                node: 0,
                exec_kernel,
                pool: 1,
                allow_network: false,
                default_disk_mb: 256,
                max_result: 16 * 1024 * 1024,
            });
            c.clean().await?;
            match c.probe().await {
                Ok(()) => rows.push((label, measure(&c, n).await?)),
                Err(e) => eprintln!("{label}: skipped, containers cannot be made here: {e}"),
            }
            c.clean().await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    if with_runc {
        rows.push(("runc run", runc(&exe, &dir, n)?));
    }
    let runc_p50 = rows.iter().find(|(m, _)| *m == "runc run").map(|(_, v)| {
        let mut s = v.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        pct(&s, 0.5)
    });
    println!("per-task wall time, {n} tasks in a row each (stats kernel, 8 values):\n");
    println!("| mode | p50 ms | p95 ms | p50 / runc p50 |");
    println!("|---|---|---|---|");
    for (mode, mut v) in rows {
        v.sort_by(|a, b| a.total_cmp(b));
        let ratio = runc_p50.map_or("-".to_string(), |r| format!("{:.2}", pct(&v, 0.5) / r));
        println!(
            "| {mode} | {:.2} | {:.2} | {ratio} |",
            pct(&v, 0.5),
            pct(&v, 0.95)
        );
    }
    Ok(())
}
