//! The helpers the process executor runs as child processes: `edgerun kernel-exec` and
//! `edgerun exec-shim`. Both confine themselves first and never start a runtime, a logger
//! or threads: they are small, single-threaded programs.
//!
//! Confinement, in this order (each step needs the privileges the next one drops):
//!
//! ```text
//!  join the attempt's cgroup (--cgroup, per hierarchy) ─ rlimits (data, file size, no core)
//!  ─ cd / ─ drop the capability bounding set ─ setgroups([]) → setgid → setuid (--user)
//!  ─ clear the other capability sets ─ no_new_privs ─ seccomp (--seccomp: the containers'
//!  profile, edgerun_actors::executor::seccomp) ─ check /proc/self/status says so
//! ```
//!
//! Any step that fails stops the helper with `HELPER_ERROR` and the step's name: a task never
//! runs less confined than the node asked for.

use std::ffi::CString;
use std::io::{Read, Write};
use std::path::PathBuf;

use edgerun_actors::executor::{exit_codes, seccomp};
use edgerun_actors::{CppKernels, KernelError, Kernels};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{Gid, Uid};

use crate::cli::SandboxArgs;

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(code)
}

fn mib(mb: u64) -> u64 {
    mb.saturating_mul(1024 * 1024)
}

/// `UID:GID` numbers.
fn parse_ids(s: &str) -> Result<(Uid, Gid), String> {
    let bad = || format!("--user {s:?}: expected UID:GID numbers");
    let (u, g) = s.split_once(':').ok_or_else(bad)?;
    let u: u32 = u.parse().map_err(|_| bad())?;
    let g: u32 = g.parse().map_err(|_| bad())?;
    Ok((Uid::from_raw(u), Gid::from_raw(g)))
}

/// Move this process into each cgroup dir given (before it can no longer write there).
fn join_cgroups(dirs: &[PathBuf]) -> Result<(), String> {
    let pid = std::process::id().to_string();
    for dir in dirs {
        std::fs::write(dir.join("cgroup.procs"), &pid)
            .map_err(|e| format!("joining cgroup {}: {e}", dir.display()))?;
    }
    Ok(())
}

fn set_limits(a: &SandboxArgs) -> Result<(), String> {
    if let Some(mb) = a.memory_mb {
        setrlimit(Resource::RLIMIT_DATA, mib(mb), mib(mb))
            .map_err(|e| format!("setting the memory limit to {mb} MiB: {e}"))?;
    }
    if let Some(mb) = a.fsize_mb {
        setrlimit(Resource::RLIMIT_FSIZE, mib(mb), mib(mb))
            .map_err(|e| format!("setting the file size limit to {mb} MiB: {e}"))?;
    }
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("disabling core dumps: {e}"))
}

/// Empty the bounding set, so that nothing run later can gain a capability back (needs
/// CAP_SETPCAP, which a root node has; a node without it has no capabilities to hand on and
/// no_new_privs keeps file capabilities from adding any).
fn drop_bounding_set() -> Result<(), String> {
    let setpcap = caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETPCAP)
        .map_err(|e| format!("reading capabilities: {e}"))?;
    if !setpcap {
        return Ok(());
    }
    for cap in caps::runtime::thread_all_supported() {
        caps::drop(None, caps::CapSet::Bounding, cap)
            .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
    }
    Ok(())
}

fn clear_capabilities() -> Result<(), String> {
    // Kernels before 4.3 have no ambient set: nothing to clear there.
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, caps::CapSet::Ambient)
            .map_err(|e| format!("clearing the ambient capabilities: {e}"))?;
    }
    for set in [
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| format!("clearing the {set:?} capabilities: {e}"))?;
    }
    Ok(())
}

fn switch_user(uid: Uid, gid: Gid) -> Result<(), String> {
    nix::unistd::setgroups(&[]).map_err(|e| format!("dropping supplementary groups: {e}"))?;
    nix::unistd::setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
    nix::unistd::setuid(uid).map_err(|e| format!("setuid({uid}): {e}"))?;
    if nix::unistd::getuid() != uid
        || nix::unistd::geteuid() != uid
        || nix::unistd::getegid() != gid
    {
        return Err(format!("still running as uid {}", nix::unistd::geteuid()));
    }
    // Root is gone for good: going back must fail.
    if !uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("could switch back to root after dropping it".into());
    }
    Ok(())
}

fn arch(name: &str) -> Option<libseccomp::ScmpArch> {
    use libseccomp::ScmpArch;
    match name {
        "SCMP_ARCH_X86_64" => Some(ScmpArch::X8664),
        "SCMP_ARCH_X86" => Some(ScmpArch::X86),
        "SCMP_ARCH_AARCH64" => Some(ScmpArch::Aarch64),
        _ => None,
    }
}

/// Load the tasks' seccomp profile (the one containers get) with libseccomp.
fn load_seccomp() -> Result<(), String> {
    use libseccomp::ScmpSyscall;
    use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
    let mut f = ScmpFilterContext::new(ScmpAction::Allow)
        .map_err(|e| format!("seccomp: making the filter: {e}"))?;
    let native = ScmpArch::native();
    for a in seccomp::ARCHITECTURES.iter().filter_map(|n| arch(n)) {
        if a != native {
            // An ABI this machine cannot run is harmless to list; one it can (i386 on
            // x86_64) is then filtered too instead of killed.
            let _ = f.add_arch(a);
        }
    }
    for r in seccomp::rules() {
        // A syscall libseccomp does not know does not exist here: nothing to refuse.
        let Ok(sc) = ScmpSyscall::from_name(r.syscall) else {
            continue;
        };
        let action = ScmpAction::Errno(r.errno as i32);
        let added = match r.arg0_has {
            Some(mask) => f.add_rule_conditional(
                action,
                sc,
                &[ScmpArgCompare::new(
                    0,
                    ScmpCompareOp::MaskedEqual(mask),
                    mask,
                )],
            ),
            None => f.add_rule(action, sc),
        };
        added.map_err(|e| format!("seccomp: adding the rule for {}: {e}", r.syscall))?;
    }
    f.load()
        .map_err(|e| format!("seccomp: loading the filter: {e}"))
}

/// What /proc/self/status must say once confined.
fn check_status(want_seccomp: bool) -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    if want_seccomp {
        for (name, want) in [
            ("CapEff:", "0000000000000000"),
            ("CapPrm:", "0000000000000000"),
            ("NoNewPrivs:", "1"),
            ("Seccomp:", "2"),
        ] {
            let got = field(name);
            if got != want {
                return Err(format!("after confinement {name} is {got:?}, not {want}"));
            }
        }
    }
    Ok(())
}

/// Confine this process as `a` says (see the module doc), or say which step failed.
pub fn confine(a: &SandboxArgs) -> Result<(), String> {
    join_cgroups(&a.cgroup)?;
    set_limits(a)?;
    nix::unistd::chdir("/").map_err(|e| format!("cd /: {e}"))?;
    let ids = a.user.as_deref().map(parse_ids).transpose()?;
    if ids.is_some() || a.seccomp {
        drop_bounding_set()?;
    }
    if let Some((uid, gid)) = ids {
        switch_user(uid, gid)?;
    }
    if a.seccomp {
        clear_capabilities()?;
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("setting no_new_privs: {e}"))?;
        load_seccomp()?;
    }
    check_status(a.seccomp)
}

/// Run one kernel: input JSON on stdin, result JSON on stdout; exit codes in `exit_codes`.
pub fn kernel_exec(kernel: &str, sandbox: &SandboxArgs, input_file: Option<&std::path::Path>) -> ! {
    // The input file (containers) is opened before confinement could take the right to.
    let file = input_file.map(std::fs::File::open);
    if let Err(e) = confine(sandbox) {
        fail(exit_codes::HELPER_ERROR, &format!("sandbox: {e}"));
    }
    let mut input = String::new();
    let read = match file {
        Some(f) => f.and_then(|mut f| f.read_to_string(&mut input)),
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

/// Confine this process, then replace it with `argv` (or exit 0 when probing).
pub fn exec_shim(sandbox: &SandboxArgs, probe: bool, argv: &[String]) -> ! {
    if let Err(e) = confine(sandbox) {
        fail(exit_codes::HELPER_ERROR, &format!("sandbox: {e}"));
    }
    if probe {
        std::process::exit(0)
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
