//! The helpers the executors run as child processes: `edgerun kernel-exec` and
//! `edgerun exec-shim`. Both set their own limits first and never start a runtime, a logger
//! or threads: they are small, single-threaded programs.

use std::ffi::CString;
use std::io::{Read, Write};

use edgerun_actors::executor::exit_codes;
use edgerun_actors::{CppKernels, KernelError, Kernels};
use nix::sys::resource::{setrlimit, Resource};

fn set_memory_limit(memory_mb: Option<u64>) -> Result<(), String> {
    if let Some(mb) = memory_mb {
        let bytes = mb.saturating_mul(1024 * 1024);
        setrlimit(Resource::RLIMIT_DATA, bytes, bytes)
            .map_err(|e| format!("setting the memory limit to {mb} MiB: {e}"))?;
    }
    Ok(())
}

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(code)
}

/// Run one kernel: input JSON on stdin, result JSON on stdout; exit codes in `exit_codes`.
pub fn kernel_exec(
    kernel: &str,
    memory_mb: Option<u64>,
    input_file: Option<&std::path::Path>,
) -> ! {
    if let Err(e) = set_memory_limit(memory_mb) {
        fail(exit_codes::HELPER_ERROR, &e);
    }
    let mut input = String::new();
    let read = match input_file {
        Some(p) => std::fs::File::open(p).and_then(|mut f| f.read_to_string(&mut input)),
        None => std::io::stdin().read_to_string(&mut input),
    };
    if let Err(e) = read {
        fail(exit_codes::HELPER_ERROR, &format!("reading the input: {e}"));
    }
    match CppKernels.run(kernel, &input) {
        Ok(result) => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(result.as_bytes()).and_then(|_| out.flush()) {
                fail(
                    exit_codes::HELPER_ERROR,
                    &format!("writing the result: {e}"),
                );
            }
            std::process::exit(0)
        }
        Err(e @ (KernelError::InvalidInput(_) | KernelError::Unknown(_))) => {
            fail(exit_codes::INVALID_INPUT, &e.to_string())
        }
        Err(e) => fail(exit_codes::KERNEL_ERROR, &e.to_string()),
    }
}

/// Set limits, then replace this process with `argv`.
pub fn exec_shim(memory_mb: Option<u64>, argv: &[String]) -> ! {
    if let Err(e) = set_memory_limit(memory_mb) {
        fail(exit_codes::HELPER_ERROR, &e);
    }
    let args: Result<Vec<CString>, _> = argv.iter().map(|a| CString::new(a.as_bytes())).collect();
    let args = match args {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => fail(exit_codes::HELPER_ERROR, "exec-shim: no command given"),
        Err(_) => fail(
            exit_codes::HELPER_ERROR,
            "exec-shim: an argument contains a NUL byte",
        ),
    };
    match nix::unistd::execvp(&args[0], &args) {
        Ok(never) => match never {},
        Err(e) => fail(
            exit_codes::HELPER_ERROR,
            &format!("cannot run {:?}: {e}", argv[0]),
        ),
    }
}
