//! Modules compiled from C here with Debian's clang for wasm32-wasi (installed by
//! scripts/setup), run on the real runtime.

use super::*;

/// Compile C source to a wasm32-wasi command module.
fn c_module(name: &str, src: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = dir.path().join(format!("{name}.c"));
    let out = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&c, src).unwrap_or_else(|e| panic!("{e}"));
    let o = std::process::Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-Wl,--strip-all", "-o"])
        .arg(&out)
        .arg(&c)
        .output()
        .unwrap_or_else(|e| panic!("clang (run ./scripts/setup): {e}"));
    assert!(
        o.status.success(),
        "clang failed for {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(&out).unwrap_or_else(|e| panic!("{e}"))
}

/// A module from WebAssembly text (wabt's wat2wasm).
fn wat_module(text: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let w = dir.path().join("m.wat");
    let out = dir.path().join("m.wasm");
    std::fs::write(&w, text).unwrap_or_else(|e| panic!("{e}"));
    let o = std::process::Command::new("wat2wasm")
        .arg(&w)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("wat2wasm (run ./scripts/setup): {e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(&out).unwrap_or_else(|e| panic!("{e}"))
}

fn runtime(dir: &Path) -> Runtime {
    Runtime::new(&RuntimeConfig {
        cache_dir: dir.join("wasm-cache"),
        instances: 4,
        max_memory_mb: 256,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn run_of(stdin: &str) -> Run {
    Run {
        args: vec!["m".into(), "--flag".into()],
        stdin: stdin.as_bytes().to_vec(),
        timeout: Duration::from_secs(10),
        memory_bytes: 64 << 20,
        stdout_cap: 1 << 20,
        stderr_cap: 1 << 16,
    }
}

fn prepared(rt: &Runtime, bytes: &[u8]) -> [u8; 32] {
    let h = sha256(bytes);
    rt.prepare(h, bytes).unwrap_or_else(|e| panic!("{e}"));
    h
}

const ECHO: &str = r#"
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf, stdin);
  long sum = 0;
  for (size_t i = 0; i < n; i++) sum += (unsigned char)buf[i];
  printf("{\"argc\":%d,\"arg1\":\"%s\",\"len\":%zu,\"sum\":%ld}", argc, argc > 1 ? argv[1] : "", n, sum);
  fprintf(stderr, "note: %zu bytes\n", n);
  return 0;
}
"#;

#[test]
fn a_command_reads_stdin_and_args_and_writes_stdout_and_stderr() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime(dir.path());
    let bytes = c_module("echo", ECHO);
    let (_, facts) = rt.check(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        facts.wasi_imports.contains(&"fd_write".to_string()),
        "{facts:?}"
    );
    let h = prepared(&rt, &bytes);
    let input = "{\"values\": [1, 2, 3]}";
    let r = rt.run(&h, run_of(input)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ended, Ended::Exited(0), "{r:?}");
    let sum: u64 = input.bytes().map(u64::from).sum();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        format!(
            "{{\"argc\":2,\"arg1\":\"--flag\",\"len\":{},\"sum\":{sum}}}",
            input.len()
        )
    );
    assert_eq!(
        String::from_utf8_lossy(&r.stderr),
        format!("note: {} bytes\n", input.len())
    );
    // Many runs of one prepared module, each with its own instance and input.
    for i in 0..200 {
        let s = "x".repeat(i);
        let r = rt.run(&h, run_of(&s)).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            String::from_utf8_lossy(&r.stdout).contains(&format!("\"len\":{i},")),
            "{r:?}"
        );
    }
}

#[test]
fn a_loop_is_stopped_at_its_timeout_and_the_next_run_works() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime(dir.path());
    let spin = c_module(
        "spin",
        "int main(void) { volatile unsigned long x = 0; for (;;) x++; return 0; }",
    );
    let h = prepared(&rt, &spin);
    let mut run = run_of("");
    run.timeout = Duration::from_millis(50);
    let r = rt.run(&h, run).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ended, Ended::TimedOut, "{r:?}");
    let echo = prepared(&rt, &c_module("echo", ECHO));
    let r = rt
        .run(&echo, run_of("ok"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ended, Ended::Exited(0));
}

#[test]
fn memory_past_the_cap_is_refused_and_reported_out_of_memory() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime(dir.path());
    // Touches every page it gets, 1 MiB at a time, until malloc says no (the blocks are kept
    // and read at the end, so that the compiler cannot drop them).
    let hog = c_module(
        "hog",
        r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static char *keep[4096];
int main(void) {
  size_t got = 0;
  for (; got < 4096; got++) {
    char *p = malloc(1 << 20);
    if (!p) break;
    memset(p, (int)got, 1 << 20);
    keep[got] = p;
  }
  long sum = 0;
  for (size_t i = 0; i < got; i++) sum += keep[i][i];
  fprintf(stderr, "malloc failed after %zu MiB (%ld)\n", got, sum);
  return 1;
}
"#,
    );
    let h = prepared(&rt, &hog);
    let mut run = run_of("");
    run.memory_bytes = 16 << 20;
    let r = rt.run(&h, run).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ended, Ended::OutOfMemory, "{r:?}");
    let said = String::from_utf8_lossy(&r.stderr).to_string();
    let mib: u64 = said
        .split("after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(999);
    assert!(
        (1..16).contains(&mib),
        "it got {mib} MiB under a 16 MiB cap: {said}"
    );
    // The same module under a larger cap gets further: the cap is per run.
    let mut run = run_of("");
    run.memory_bytes = 64 << 20;
    let r = rt.run(&h, run).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("after 6"),
        "{r:?}"
    );
    // A module whose initial memory is over the cap is refused at instantiation.
    let big = wat_module("(module (memory (export \"memory\") 512) (func (export \"_start\")))");
    let h = prepared(&rt, &big);
    let r = rt.run(&h, run_of("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.ended,
        Ended::Exited(0),
        "32 MiB under a 64 MiB cap: {r:?}"
    );
    let mut run = run_of("");
    run.memory_bytes = 16 << 20;
    let r = rt.run(&h, run).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ended, Ended::OutOfMemory, "{r:?}");
}

#[test]
fn files_sockets_and_the_wall_clock_are_not_there() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime(dir.path());
    let probe = c_module(
        "probe",
        r#"
#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <time.h>
#include <wasi/api.h>
int main(void) {
  FILE *f = fopen("/etc/passwd", "r");
  int open_errno = errno;
  __wasi_fd_t fd = 0;
  __wasi_errno_t sock = __wasi_sock_accept(3, 0, &fd);
  __wasi_errno_t path = __wasi_path_open(3, 0, "etc/passwd", 0, 0, 0, 0, &fd);
  __wasi_timestamp_t t = 0;
  __wasi_errno_t wall = __wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 1, &t);
  __wasi_errno_t mono = __wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &t);
  printf("{\"fopen\":%s,\"open_errno\":%d,\"sock\":%d,\"path\":%d,\"wall\":%d,\"mono\":%d,\"time\":%lld}",
         f ? "true" : "false", open_errno, sock, path, wall, mono, (long long)time(NULL));
  return 0;
}
"#,
    );
    let h = prepared(&rt, &probe);
    let r = rt.run(&h, run_of("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ended, Ended::Exited(0), "{r:?}");
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    // fopen finds no preopened directory (ENOTCAPABLE from libc); the raw calls get EBADF;
    // the wall clock ENOTCAPABLE (libc's time() then says 0, 1970); the monotonic clock works.
    assert!(out.contains("\"fopen\":false,\"open_errno\":76"), "{out}");
    assert!(out.contains("\"sock\":8,\"path\":8,"), "{out}");
    assert!(out.contains("\"wall\":76,\"mono\":0,\"time\":0"), "{out}");
}

#[test]
fn traps_exit_codes_and_capped_output_are_told_apart() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime(dir.path());
    let trap = prepared(
        &rt,
        &c_module("trap", "int main(void) { __builtin_trap(); return 0; }"),
    );
    let r = rt.run(&trap, run_of("")).unwrap_or_else(|e| panic!("{e}"));
    match &r.ended {
        Ended::Trap(t) => assert!(t.contains("unreachable"), "{t}"),
        e => panic!("{e:?}"),
    }
    let exit = prepared(
        &rt,
        &c_module("exit", "#include <stdlib.h>\nint main(void) { exit(7); }"),
    );
    let r = rt.run(&exit, run_of("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ended, Ended::Exited(7));
    let loud = prepared(
        &rt,
        &c_module(
            "loud",
            "#include <stdio.h>\nint main(void) { for (int i = 0; i < 100000; i++) fputs(\"0123456789\", stdout); return 0; }",
        ),
    );
    let mut run = run_of("");
    run.stdout_cap = 1000;
    let r = rt.run(&loud, run).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ended, Ended::Exited(0));
    assert_eq!(r.stdout.len(), 1000);
    assert_eq!(r.stdout_dropped, 1_000_000 - 1000);
}

#[test]
fn only_wasi_commands_are_accepted() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime(dir.path());
    let said = |b: &[u8]| match rt.check(b) {
        Err(WasmError::Invalid(s)) => s,
        Ok(_) => panic!("accepted"),
        Err(e) => panic!("{e}"),
    };
    assert!(said(b"#!/bin/sh\necho hi\n").contains("not a WebAssembly binary"));
    assert!(said(b"\0asm\x01\0\0\0\xff\xff").contains("not a valid module"));
    let lib = wat_module("(module (memory (export \"memory\") 1) (func (export \"f\")))");
    assert!(said(&lib).contains("no _start"));
    let env = wat_module(
        "(module (import \"env\" \"host\" (func)) (memory (export \"memory\") 1) (func (export \"_start\")))",
    );
    assert!(said(&env).contains("imports env::host"), "{}", said(&env));
    let odd = wat_module(
        "(module (import \"wasi_snapshot_preview1\" \"open_the_door\" (func)) (memory (export \"memory\") 1) (func (export \"_start\")))",
    );
    assert!(said(&odd).contains("not a WASI preview 1 function"));
    // A module importing preview-1 functions that are not implemented still links and runs:
    // they answer an errno (here fd_pwrite on descriptor 1: EBADF, written as its exit code).
    let rest = wat_module(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_pwrite" (func $pw (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (call $pw (i32.const 1) (i32.const 0) (i32.const 0) (i64.const 0) (i32.const 16)))))"#,
    );
    let h = prepared(&rt, &rest);
    let r = rt.run(&h, run_of("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ended, Ended::Exited(8), "{r:?}");
}

#[test]
fn compiled_modules_come_back_from_the_disk_cache_and_a_damaged_one_is_compiled_again() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bytes = c_module("echo", ECHO);
    let h = sha256(&bytes);
    {
        let rt = runtime(dir.path());
        rt.prepare(h, &bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    let cache = dir.path().join("wasm-cache");
    let files: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&files[0]), 0o600);
    }
    // A new runtime (a restarted node) loads it from the cache; bytes that do not match the
    // id are refused before anything is looked up.
    let rt = runtime(dir.path());
    assert!(matches!(
        rt.prepare(h, b"other"),
        Err(WasmError::Invalid(_))
    ));
    rt.prepare(h, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let r = rt.run(&h, run_of("abc")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ended, Ended::Exited(0));
    // Damage the cached file: it is not loaded, the module is compiled again and runs.
    let mut code = std::fs::read(&files[0]).unwrap_or_else(|e| panic!("{e}"));
    let mid = code.len() / 2;
    code[mid] ^= 0xff;
    std::fs::write(&files[0], &code).unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime(dir.path());
    rt.prepare(h, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let r = rt.run(&h, run_of("abc")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ended, Ended::Exited(0));
    // Compiled again and cached again: the same code, so the same name, now undamaged.
    let again = std::fs::read(&files[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(again, code, "the damaged file is still there");
    // Forgetting a module removes its compiled file.
    rt.forget(&h);
    assert!(!rt.is_prepared(&h));
    let left = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(99);
    assert_eq!(left, 0);
}

#[test]
fn module_ids_give_their_hash_and_bad_ones_nothing() {
    let hex: String = sha256(b"x").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hash_of_id(&format!("sha256:{hex}")), Some(sha256(b"x")));
    assert_eq!(hash_of_id("sha256:zz"), None);
    assert_eq!(hash_of_id(&format!("sha256:{}", "g".repeat(64))), None);
    assert_eq!(hash_of_id("md5:00"), None);
}
