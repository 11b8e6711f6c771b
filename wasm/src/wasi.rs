//! The WASI preview-1 surface a task's module sees: its arguments, stdin (the task's input),
//! stdout and stderr (captured, capped), a monotonic clock, random bytes and `proc_exit`.
//! Nothing else exists: there are no descriptors beyond 0–2 and no preopened directories, so
//! every file, directory and socket call answers `EBADF`; the wall clock answers
//! `ENOTCAPABLE`; `poll_oneoff` (sleep) answers `ENOTSUP`; the environment is empty.
//!
//! Why not `wasmtime-wasi`: its preview-1 layer is built on the component model and a tokio
//! runtime (about 150 crates, wiggle's macros among them) to offer, here, eight functions; and
//! what a task may reach is this node's security boundary, which reads best as the short list
//! below rather than as the defaults of a general-purpose WASI host. A module that imports a
//! preview-1 function not implemented here still links: the function answers with an errno
//! (`define_rest`), as a host without that capability would.

use std::time::Instant;

use wasmtime::{Caller, Extern, FuncType, Linker, Val};

pub const MODULE: &str = "wasi_snapshot_preview1";

/// WASI preview-1 errno values used here.
pub mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const FAULT: i32 = 21;
    pub const INVAL: i32 = 28;
    pub const NOSYS: i32 = 52;
    pub const NOTSUP: i32 = 58;
    pub const SPIPE: i32 = 70;
    pub const NOTCAPABLE: i32 = 76;
}

/// Every function of WASI preview 1 (wasi_snapshot_preview1.witx).
pub const PREVIEW1: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// The ones implemented below; the rest answer an errno.
const IMPLEMENTED: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_close",
    "fd_fdstat_get",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_read",
    "fd_seek",
    "fd_write",
    "poll_oneoff",
    "proc_exit",
    "random_get",
    "sched_yield",
];

/// `proc_exit(code)`: ends the run with this exit code.
#[derive(Debug, thiserror::Error)]
#[error("the module exited with code {0}")]
pub struct Exit(pub i32);

/// What one run's store holds.
pub struct Ctx {
    pub args: Vec<Vec<u8>>,
    pub stdin: Vec<u8>,
    pub stdin_pos: usize,
    pub stdout: Capped,
    pub stderr: Capped,
    pub started: Instant,
    pub limits: crate::Limits,
}

/// Output kept up to a cap; what passes it is counted and dropped.
#[derive(Default)]
pub struct Capped {
    pub bytes: Vec<u8>,
    pub cap: usize,
    pub dropped: u64,
}

impl Capped {
    pub fn new(cap: usize) -> Capped {
        Capped {
            bytes: Vec::new(),
            cap,
            dropped: 0,
        }
    }

    fn push(&mut self, b: &[u8]) {
        let room = self.cap.saturating_sub(self.bytes.len());
        let take = room.min(b.len());
        self.bytes.extend_from_slice(&b[..take]);
        self.dropped += (b.len() - take) as u64;
    }
}

/// The guest's memory and the store's data at once.
fn mem<'a>(caller: &'a mut Caller<'_, Ctx>) -> Option<(&'a mut [u8], &'a mut Ctx)> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m.data_and_store_mut(caller)),
        _ => None,
    }
}

fn slice(m: &[u8], ptr: i32, len: u32) -> Option<&[u8]> {
    let start = ptr as u32 as usize;
    m.get(start..start.checked_add(len as usize)?)
}

fn slice_mut(m: &mut [u8], ptr: i32, len: u32) -> Option<&mut [u8]> {
    let start = ptr as u32 as usize;
    m.get_mut(start..start.checked_add(len as usize)?)
}

fn put_u32(m: &mut [u8], ptr: i32, v: u32) -> Option<()> {
    slice_mut(m, ptr, 4)?.copy_from_slice(&v.to_le_bytes());
    Some(())
}

fn put_u64(m: &mut [u8], ptr: i32, v: u64) -> Option<()> {
    slice_mut(m, ptr, 8)?.copy_from_slice(&v.to_le_bytes());
    Some(())
}

fn get_u32(m: &[u8], ptr: u32) -> Option<u32> {
    let b = slice(m, ptr as i32, 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The (ptr, len) pairs of an iovec array.
fn iovecs(m: &[u8], iovs: i32, n: i32) -> Option<Vec<(u32, u32)>> {
    let n = u32::try_from(n).ok()?;
    (0..n)
        .map(|i| {
            let at = (iovs as u32).checked_add(i.checked_mul(8)?)?;
            Some((get_u32(m, at)?, get_u32(m, at.checked_add(4)?)?))
        })
        .collect()
}

/// argv or environ: the count and buffer size, or the pointers and the strings.
fn sizes(m: &mut [u8], list: &[Vec<u8>], count_ptr: i32, size_ptr: i32) -> i32 {
    let size: usize = list.iter().map(|a| a.len() + 1).sum();
    match put_u32(m, count_ptr, list.len() as u32).and_then(|_| put_u32(m, size_ptr, size as u32)) {
        Some(()) => errno::SUCCESS,
        None => errno::FAULT,
    }
}

fn strings(m: &mut [u8], list: &[Vec<u8>], ptrs: i32, buf: i32) -> i32 {
    let mut at = buf as u32;
    for (i, a) in list.iter().enumerate() {
        let ok = (|| {
            put_u32(m, (ptrs as u32).checked_add(i as u32 * 4)? as i32, at)?;
            let dst = slice_mut(m, at as i32, a.len() as u32 + 1)?;
            dst[..a.len()].copy_from_slice(a);
            dst[a.len()] = 0;
            at = at.checked_add(a.len() as u32 + 1)?;
            Some(())
        })();
        if ok.is_none() {
            return errno::FAULT;
        }
    }
    errno::SUCCESS
}

/// Add the implemented functions to `linker`.
pub fn define(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "args_sizes_get",
        |mut c: Caller<'_, Ctx>, count: i32, size: i32| -> i32 {
            match mem(&mut c) {
                Some((m, ctx)) => sizes(m, &ctx.args, count, size),
                None => errno::FAULT,
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "args_get",
        |mut c: Caller<'_, Ctx>, ptrs: i32, buf: i32| -> i32 {
            match mem(&mut c) {
                Some((m, ctx)) => strings(m, &ctx.args, ptrs, buf),
                None => errno::FAULT,
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_sizes_get",
        |mut c: Caller<'_, Ctx>, count: i32, size: i32| -> i32 {
            match mem(&mut c) {
                Some((m, _)) => sizes(m, &[], count, size),
                None => errno::FAULT,
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_get",
        |_: Caller<'_, Ctx>, _: i32, _: i32| -> i32 { errno::SUCCESS },
    )?;
    // Clock ids: 0 realtime (not given), 1 monotonic (from the run's start), 2 and 3 the
    // process's and thread's CPU time (the monotonic clock: a run is one thread).
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        |mut c: Caller<'_, Ctx>, id: i32, out: i32| -> i32 {
            if id == 0 {
                return errno::NOTCAPABLE;
            }
            if !(1..=3).contains(&id) {
                return errno::INVAL;
            }
            match mem(&mut c).and_then(|(m, _)| put_u64(m, out, 1_000)) {
                Some(()) => errno::SUCCESS,
                None => errno::FAULT,
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut c: Caller<'_, Ctx>, id: i32, _precision: i64, out: i32| -> i32 {
            if id == 0 {
                return errno::NOTCAPABLE;
            }
            if !(1..=3).contains(&id) {
                return errno::INVAL;
            }
            match mem(&mut c)
                .and_then(|(m, ctx)| put_u64(m, out, ctx.started.elapsed().as_nanos() as u64))
            {
                Some(()) => errno::SUCCESS,
                None => errno::FAULT,
            }
        },
    )?;
    linker.func_wrap(MODULE, "fd_close", |_: Caller<'_, Ctx>, fd: i32| -> i32 {
        if (0..=2).contains(&fd) {
            errno::SUCCESS
        } else {
            errno::BADF
        }
    })?;
    // fdstat: filetype (u8) at 0, flags (u16) at 2, rights base (u64) at 8, inheriting at 16.
    // Filetype unknown, not a character device: libc treats the streams as files, not
    // terminals, and buffers stdout fully.
    linker.func_wrap(
        MODULE,
        "fd_fdstat_get",
        |mut c: Caller<'_, Ctx>, fd: i32, out: i32| -> i32 {
            const FD_READ: u64 = 1 << 1;
            const FD_WRITE: u64 = 1 << 6;
            const POLL_FD_READWRITE: u64 = 1 << 27;
            let rights = match fd {
                0 => FD_READ | POLL_FD_READWRITE,
                1 | 2 => FD_WRITE | POLL_FD_READWRITE,
                _ => return errno::BADF,
            };
            let Some((m, _)) = mem(&mut c) else {
                return errno::FAULT;
            };
            let Some(s) = slice_mut(m, out, 24) else {
                return errno::FAULT;
            };
            s.fill(0);
            s[8..16].copy_from_slice(&rights.to_le_bytes());
            errno::SUCCESS
        },
    )?;
    // No preopened directories: the scan libc makes from descriptor 3 ends at once.
    linker.func_wrap(
        MODULE,
        "fd_prestat_get",
        |_: Caller<'_, Ctx>, _: i32, _: i32| -> i32 { errno::BADF },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        |_: Caller<'_, Ctx>, _: i32, _: i32, _: i32| -> i32 { errno::BADF },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        |_: Caller<'_, Ctx>, fd: i32, _: i64, _: i32, _: i32| -> i32 {
            if (0..=2).contains(&fd) {
                errno::SPIPE
            } else {
                errno::BADF
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_read",
        |mut c: Caller<'_, Ctx>, fd: i32, iovs: i32, n: i32, nread: i32| -> i32 {
            if fd != 0 {
                return errno::BADF;
            }
            let Some((m, ctx)) = mem(&mut c) else {
                return errno::FAULT;
            };
            let Some(vecs) = iovecs(m, iovs, n) else {
                return errno::FAULT;
            };
            let mut total = 0u32;
            for (ptr, len) in vecs {
                let rest = &ctx.stdin[ctx.stdin_pos.min(ctx.stdin.len())..];
                let take = rest.len().min(len as usize);
                let Some(dst) = slice_mut(m, ptr as i32, take as u32) else {
                    return errno::FAULT;
                };
                dst.copy_from_slice(&rest[..take]);
                ctx.stdin_pos += take;
                total += take as u32;
                if take < len as usize {
                    break;
                }
            }
            match put_u32(m, nread, total) {
                Some(()) => errno::SUCCESS,
                None => errno::FAULT,
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_write",
        |mut c: Caller<'_, Ctx>, fd: i32, iovs: i32, n: i32, nwritten: i32| -> i32 {
            if fd != 1 && fd != 2 {
                return errno::BADF;
            }
            let Some((m, ctx)) = mem(&mut c) else {
                return errno::FAULT;
            };
            let Some(vecs) = iovecs(m, iovs, n) else {
                return errno::FAULT;
            };
            let out = if fd == 1 {
                &mut ctx.stdout
            } else {
                &mut ctx.stderr
            };
            let mut total = 0u32;
            for (ptr, len) in vecs {
                let Some(src) = slice(m, ptr as i32, len) else {
                    return errno::FAULT;
                };
                out.push(src);
                total = total.saturating_add(len);
            }
            match put_u32(m, nwritten, total) {
                Some(()) => errno::SUCCESS,
                None => errno::FAULT,
            }
        },
    )?;
    // sleep() and friends: no timers here (a task that waits is a task that can be shorter).
    linker.func_wrap(
        MODULE,
        "poll_oneoff",
        |_: Caller<'_, Ctx>, _: i32, _: i32, _: i32, _: i32| -> i32 { errno::NOTSUP },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |_: Caller<'_, Ctx>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(Exit(code)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "random_get",
        |mut c: Caller<'_, Ctx>, buf: i32, len: i32| -> i32 {
            let Some((m, _)) = mem(&mut c) else {
                return errno::FAULT;
            };
            let Some(dst) = slice_mut(m, buf, len as u32) else {
                return errno::FAULT;
            };
            match getrandom::fill(dst) {
                Ok(()) => errno::SUCCESS,
                Err(_) => errno::NOSYS,
            }
        },
    )?;
    linker.func_wrap(MODULE, "sched_yield", |_: Caller<'_, Ctx>| -> i32 {
        errno::SUCCESS
    })?;
    Ok(())
}

/// Define the preview-1 functions `module` imports that are not implemented: each answers an
/// errno (descriptors, paths and sockets `EBADF`: none exist; the rest `ENOSYS`).
pub fn define_rest(linker: &mut Linker<Ctx>, module: &wasmtime::Module) -> wasmtime::Result<()> {
    for i in module.imports() {
        if i.module() != MODULE || IMPLEMENTED.contains(&i.name()) {
            continue;
        }
        let Some(ty) = i.ty().func().cloned() else {
            continue;
        };
        let name = i.name().to_string();
        let answer =
            if name.starts_with("fd_") || name.starts_with("path_") || name.starts_with("sock_") {
                errno::BADF
            } else if name == "proc_raise" {
                errno::NOTSUP
            } else {
                errno::NOSYS
            };
        let ty: FuncType = ty;
        linker.func_new(MODULE, &name, ty, move |_, _, results: &mut [Val]| {
            if let Some(r) = results.first_mut() {
                *r = Val::I32(answer);
            }
            Ok(())
        })?;
    }
    Ok(())
}
