//! WebAssembly tasks: a user's WASI (preview 1) command module run on wasmtime.
//!
//! ```text
//!  bytes ──check──▶ valid command? ──prepare──▶ compiled (disk cache by module hash and
//!                                               engine) ─▶ InstancePre in memory
//!  run(hash, args, stdin, timeout, memory) ──▶ Store + instance from the pool ─▶ _start
//!        ─▶ Ran { ended: exit code | timeout | out of memory | trap, stdout, stderr }
//! ```
//!
//! - One [`Runtime`] per node: one engine (Cranelift, epoch interruption, a pooling allocator
//!   sized by `instances`), a thread that advances the epoch every [`TICK`], and the modules
//!   prepared so far. A run is synchronous and CPU-bound: callers put it on a blocking thread.
//! - Limits per run: the module's memory is capped ([`Limits`]: a refused `memory.grow`
//!   returns -1 to the module, and the run is reported out of memory if it then fails); the
//!   timeout is an epoch deadline (a trap, whatever the module does); stdout and stderr are
//!   capped. What the module can reach is [`wasi`]'s short list.
//! - The compiled-code cache on disk is the one `unsafe` seam here: wasmtime maps compiled
//!   code it trusts. A cached file is used only when its SHA-256 (in its name) matches, so a
//!   damaged or altered file is compiled again, never loaded.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};

pub mod wasi;

/// How often the epoch advances: the granularity of timeouts.
pub const TICK: Duration = Duration::from_millis(2);

#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The bytes are not a module this runtime runs (said why); never stored.
    #[error("{0}")]
    Invalid(String),
    /// The runtime could not be set up or a module not compiled (a node problem).
    #[error("{0}")]
    Runtime(String),
    /// `run` of a module that was not prepared.
    #[error("module {0} is not prepared on this node")]
    NotPrepared(String),
}

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled modules are kept (made 0700).
    pub cache_dir: PathBuf,
    /// Runs at once (instances in the pool).
    pub instances: u32,
    /// The largest memory any run may have, in MiB.
    pub max_memory_mb: u32,
}

/// What a module needs from the host, checked at upload.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleFacts {
    /// The WASI preview-1 functions it imports.
    pub wasi_imports: Vec<String>,
    /// Its memory's initial size, in 64 KiB pages.
    pub initial_pages: u64,
}

/// One run.
#[derive(Debug, Clone)]
pub struct Run {
    /// argv, the module's name first.
    pub args: Vec<String>,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub stdout_cap: usize,
    pub stderr_cap: usize,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// `_start` returned (0) or the module called `proc_exit(code)`.
    Exited(i32),
    /// The timeout passed.
    TimedOut,
    /// The module asked for more memory than allowed and then failed.
    OutOfMemory,
    /// A trap (unreachable, out-of-bounds access, stack overflow, ...), said which.
    Trap(String),
    /// No instance was free in the pool.
    Busy,
}

#[derive(Debug, Clone)]
pub struct Ran {
    pub ended: Ended,
    pub stdout: Vec<u8>,
    /// Bytes past the cap, dropped.
    pub stdout_dropped: u64,
    pub stderr: Vec<u8>,
    pub stderr_dropped: u64,
    pub took: Duration,
}

/// A run's memory cap; remembers a refused growth.
pub struct Limits {
    pub memory_bytes: usize,
    pub refused: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory_bytes && maximum.is_none_or(|m| desired <= m);
        if !ok {
            self.refused = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000 && maximum.is_none_or(|m| desired <= m))
    }
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<wasi::Ctx>,
    cache_dir: PathBuf,
    /// The engine's compatibility, part of a cached file's name.
    compat: String,
    max_memory: usize,
    prepared: Mutex<HashMap<[u8; 32], Arc<InstancePre<wasi::Ctx>>>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// The hash in a module id (`sha256:<64 hex digits>`).
pub fn hash_of_id(id: &str) -> Option<[u8; 32]> {
    let hex = id.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

impl Runtime {
    pub fn new(cfg: &RuntimeConfig) -> Result<Runtime, WasmError> {
        let max_memory = (cfg.max_memory_mb as usize) << 20;
        let n = cfg.instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(n)
            .total_memories(n)
            .total_tables(n)
            .max_memory_size(max_memory);
        let mut c = Config::new();
        c.epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine =
            Engine::new(&c).map_err(|e| WasmError::Runtime(format!("the wasm engine: {e}")))?;
        let mut linker = Linker::new(&engine);
        wasi::define(&mut linker)
            .map_err(|e| WasmError::Runtime(format!("the WASI functions: {e}")))?;
        private_dir(&cfg.cache_dir).map_err(|e| {
            WasmError::Runtime(format!(
                "the compiled-module cache {}: {e}",
                cfg.cache_dir.display()
            ))
        })?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat = format!("{:016x}", h.finish());
        // The epoch ticker: ends when the engine is dropped.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                match weak.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
            })
            .map_err(|e| WasmError::Runtime(format!("the epoch thread: {e}")))?;
        Ok(Runtime {
            engine,
            linker,
            cache_dir: cfg.cache_dir.clone(),
            compat,
            max_memory,
            prepared: Mutex::new(HashMap::new()),
        })
    }

    /// Is `bytes` a WASI preview-1 command this runtime runs? Compiles it (the check
    /// wasmtime's own loading makes), so it is as slow as a first `prepare`.
    pub fn check(&self, bytes: &[u8]) -> Result<(Module, ModuleFacts), WasmError> {
        if bytes.get(..4) != Some(b"\0asm") {
            return Err(WasmError::Invalid(
                "not a WebAssembly binary (no \\0asm header)".into(),
            ));
        }
        let module = Module::from_binary(&self.engine, bytes)
            .map_err(|e| WasmError::Invalid(format!("not a valid module: {e}")))?;
        let facts = facts(&module)?;
        Ok((module, facts))
    }

    /// Make `bytes` (whose SHA-256 is `hash`) ready to run: from the disk cache when it has
    /// it, else compiled (and cached).
    pub fn prepare(&self, hash: [u8; 32], bytes: &[u8]) -> Result<(), WasmError> {
        if self.is_prepared(&hash) {
            return Ok(());
        }
        if sha256(bytes) != hash {
            return Err(WasmError::Invalid(
                "the module's bytes do not match its id".into(),
            ));
        }
        let module = match self.cached(&hash) {
            Some(m) => m,
            None => {
                let (m, _) = self.check(bytes)?;
                self.keep(&hash, &m);
                m
            }
        };
        let mut linker = self.linker.clone();
        wasi::define_rest(&mut linker, &module)
            .map_err(|e| WasmError::Runtime(format!("linking: {e}")))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| WasmError::Invalid(format!("cannot be linked: {e}")))?;
        if let Ok(mut p) = self.prepared.lock() {
            p.insert(hash, Arc::new(pre));
        }
        Ok(())
    }

    pub fn is_prepared(&self, hash: &[u8; 32]) -> bool {
        self.prepared.lock().is_ok_and(|p| p.contains_key(hash))
    }

    /// Forget a prepared module (deleted) and its cached file.
    pub fn forget(&self, hash: &[u8; 32]) {
        if let Ok(mut p) = self.prepared.lock() {
            p.remove(hash);
        }
        let prefix = format!("{}-", hex(hash));
        if let Ok(rd) = std::fs::read_dir(&self.cache_dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    fn cache_file(&self, hash: &[u8; 32], code_hash: &[u8; 32]) -> PathBuf {
        self.cache_dir.join(format!(
            "{}-{}-{}.cwasm",
            hex(hash),
            self.compat,
            hex(code_hash)
        ))
    }

    /// A compiled module from the disk cache whose bytes still hash to the name's hash.
    fn cached(&self, hash: &[u8; 32]) -> Option<Module> {
        let prefix = format!("{}-{}-", hex(hash), self.compat);
        let rd = std::fs::read_dir(&self.cache_dir).ok()?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(code_hex) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".cwasm"))
            else {
                continue;
            };
            let Ok(code) = std::fs::read(e.path()) else {
                continue;
            };
            if hex(&sha256(&code)) != code_hex {
                tracing::warn!(file = %e.path().display(), "a cached compiled module does not match its hash; compiling again");
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            // SAFETY: `code` is what `Module::serialize` wrote for this engine's settings (the
            // file's name carries the engine's compatibility hash and the bytes' SHA-256,
            // checked just above, so a damaged or replaced file never gets here), in a
            // directory only this node's user can write; wasmtime checks the version and
            // settings again inside.
            match unsafe { Module::deserialize(&self.engine, &code) } {
                Ok(m) => return Some(m),
                Err(err) => {
                    tracing::warn!(file = %e.path().display(), error = %err, "a cached compiled module did not load; compiling again");
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        None
    }

    fn keep(&self, hash: &[u8; 32], m: &Module) {
        let code = match m.serialize() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "a compiled module could not be serialized; not cached");
                return;
            }
        };
        let path = self.cache_file(hash, &sha256(&code));
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&code)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(file = %path.display(), error = %e, "a compiled module could not be cached");
        }
    }

    /// Run a prepared module once (synchronous: call it on a blocking thread).
    pub fn run(&self, hash: &[u8; 32], run: Run) -> Result<Ran, WasmError> {
        let pre = self
            .prepared
            .lock()
            .ok()
            .and_then(|p| p.get(hash).cloned())
            .ok_or_else(|| WasmError::NotPrepared(hex(hash)))?;
        let started = Instant::now();
        let ctx = wasi::Ctx {
            args: run.args.into_iter().map(String::into_bytes).collect(),
            stdin: run.stdin,
            stdin_pos: 0,
            stdout: wasi::Capped::new(run.stdout_cap),
            stderr: wasi::Capped::new(run.stderr_cap),
            started,
            limits: Limits {
                memory_bytes: run.memory_bytes.min(self.max_memory),
                refused: false,
            },
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|c| &mut c.limits);
        let ticks = run.timeout.as_micros().div_ceil(TICK.as_micros()) as u64 + 1;
        store.set_epoch_deadline(ticks);
        let result = pre.instantiate(&mut store).and_then(|i| {
            i.get_typed_func::<(), ()>(&mut store, "_start")?
                .call(&mut store, ())
        });
        let refused = store.data().limits.refused;
        let ended = match result {
            Ok(()) => Ended::Exited(0),
            Err(e) => classify(&e, refused),
        };
        let ctx = store.into_data();
        Ok(Ran {
            ended,
            stdout: ctx.stdout.bytes,
            stdout_dropped: ctx.stdout.dropped,
            stderr: ctx.stderr.bytes,
            stderr_dropped: ctx.stderr.dropped,
            took: started.elapsed(),
        })
    }
}

fn classify(e: &wasmtime::Error, refused: bool) -> Ended {
    if let Some(wasi::Exit(code)) = e.downcast_ref::<wasi::Exit>() {
        // A C program whose malloc failed usually says so and exits nonzero.
        return if *code != 0 && refused {
            Ended::OutOfMemory
        } else {
            Ended::Exited(*code)
        };
    }
    if let Some(t) = e.downcast_ref::<Trap>() {
        return match t {
            Trap::Interrupt => Ended::TimedOut,
            _ if refused => Ended::OutOfMemory,
            t => Ended::Trap(t.to_string()),
        };
    }
    if refused {
        // Its initial memory is over the cap: instantiation refused.
        return Ended::OutOfMemory;
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return Ended::Busy;
    }
    Ended::Trap(format!("{e}"))
}

/// A WASI preview-1 command: `_start` and an exported memory; every import a preview-1
/// function.
fn facts(m: &Module) -> Result<ModuleFacts, WasmError> {
    let mut wasi_imports = Vec::new();
    for i in m.imports() {
        if i.module() != wasi::MODULE {
            return Err(WasmError::Invalid(format!(
                "imports {}::{}: a task's module may import only WASI preview 1 ({})",
                i.module(),
                i.name(),
                wasi::MODULE
            )));
        }
        if !matches!(i.ty(), ExternType::Func(_)) || !wasi::PREVIEW1.contains(&i.name()) {
            return Err(WasmError::Invalid(format!(
                "imports {}::{}, which is not a WASI preview 1 function",
                i.module(),
                i.name()
            )));
        }
        wasi_imports.push(i.name().to_string());
    }
    match m.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
        Some(_) => {
            return Err(WasmError::Invalid(
                "exports _start with parameters or results; a WASI command's _start takes none"
                    .into(),
            ))
        }
        None => {
            return Err(WasmError::Invalid(
                "not a WASI command: no _start export (a reactor or a library?)".into(),
            ))
        }
    }
    let initial_pages = match m.get_export("memory") {
        Some(ExternType::Memory(t)) => t.minimum(),
        _ => {
            return Err(WasmError::Invalid(
                "exports no memory named \"memory\"".into(),
            ))
        }
    };
    Ok(ModuleFacts {
        wasi_imports,
        initial_pages,
    })
}

#[cfg(test)]
mod tests;
