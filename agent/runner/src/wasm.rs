//! `wasm` algorithms: a WASI preview 1 command module run by wasmtime
//! inside the runner process.
//!
//! The module sees:
//! - `argv` = `["algo", args...]`;
//! - no environment variables at all;
//! - the datasets directory, read-only, at `/datasets`, and the results
//!   directory, read-write, at `/results`. wasi-libc resolves relative
//!   paths against `/`, so `datasets/x` and `results/y` (the relative paths a
//!   `bin` algorithm would use from /cocos) work too;
//! - stdout and stderr, streamed to the output sink; stdin is empty;
//! - no sockets.
//!
//! Limits: linear memory (a [`ResourceLimiter`] that traps on growth past
//! the cap), wall-clock time (epoch interruption: a timer thread ticks the
//! engine's epoch every 10 ms and the store yields to the async executor at
//! every tick, where the deadline and Stop are checked), bytes written to
//! stdout+stderr, and the size of the results directory (measured every
//! 100 ms by the same thread).

use crate::error::{RunError, RunnerError};
use crate::run::RunContext;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWrite;
use wasmtime::{Engine, Linker, Module, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// Guest path of the datasets directory.
pub const GUEST_DATASETS: &str = "/datasets";
/// Guest path of the results directory.
pub const GUEST_RESULTS: &str = "/results";
/// `argv[0]` of the module.
pub const GUEST_ARGV0: &str = "algo";
/// Interval of the epoch ticks.
const TICK: Duration = Duration::from_millis(10);
/// The results directory is measured every this many ticks.
const RESULTS_CHECK_TICKS: u32 = 10;
/// Most elements of a table (the default limiter has none).
const MAX_TABLE_ELEMENTS: usize = 10_000_000;

/// The wasmtime engine, shared by all runs (one at a time).
pub(crate) struct WasmRuntime {
    engine: Engine,
}

impl WasmRuntime {
    /// An engine with epoch interruption on; Cranelift compiles modules to
    /// native code.
    pub(crate) fn new() -> Result<Self, RunnerError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| RunnerError::WasmEngine(e.to_string()))?;
        Ok(Self { engine })
    }
}

/// Why the timer thread or an output stream asks the guest to stop.
#[derive(Default)]
struct Flags {
    output_exceeded: AtomicBool,
    results_exceeded: AtomicBool,
}

impl Flags {
    fn any(&self) -> bool {
        self.output_exceeded.load(Ordering::Relaxed)
            || self.results_exceeded.load(Ordering::Relaxed)
    }
}

struct State {
    wasi: WasiP1Ctx,
    limiter: Limiter,
}

struct Limiter {
    max_memory: usize,
    exceeded: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.exceeded = true;
            wasmtime::bail!("memory limit of {} bytes exceeded", self.max_memory);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The epoch ticker: a thread that ticks the engine every [`TICK`] and
/// watches the size of the results directory. Stopped when dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(
        engine: Engine,
        results: PathBuf,
        max_results: u64,
        flags: Arc<Flags>,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                let mut ticks = 0u32;
                while !stop_thread.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticks = ticks.wrapping_add(1);
                    if ticks.is_multiple_of(RESULTS_CHECK_TICKS)
                        && tree_size(&results) > max_results
                    {
                        flags.results_exceeded.store(true, Ordering::Relaxed);
                    }
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Total size of the regular files under `root` (symbolic links not
/// followed).
fn tree_size(root: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

/// The guest's stdout or stderr: to the run's output, within the budget.
#[derive(Clone)]
struct GuestOutput {
    ctx_out: Arc<crate::output::RunOutput>,
    stderr: bool,
    budget: Arc<AtomicU64>,
    flags: Arc<Flags>,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let wanted = buf.len() as u64;
        let granted = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left - left.min(wanted))
            })
            .map_or(0, |left| left.min(wanted));
        let granted = usize::try_from(granted).unwrap_or(buf.len()).min(buf.len());
        if granted < buf.len() {
            self.flags.output_exceeded.store(true, Ordering::Relaxed);
        }
        if granted == 0 && !buf.is_empty() {
            return Poll::Ready(Err(io::Error::other("output limit exceeded")));
        }
        if self.stderr {
            self.ctx_out.stderr(&buf[..granted]);
        } else {
            self.ctx_out.stdout(&buf[..granted]);
        }
        Poll::Ready(Ok(granted))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn module_error(what: &str, err: &wasmtime::Error) -> RunError {
    RunError::WasmModule(format!("{what}: {err}"))
}

/// Runs the request's wasm module to its end, a limit or a Stop.
pub(crate) async fn run_wasm(ctx: &RunContext, runtime: &WasmRuntime) -> Result<(), RunError> {
    let limits = &ctx.config.wasm;
    let request = &ctx.request;
    let engine = runtime.engine.clone();

    let time_limit = limits.max_time_secs.unwrap_or(ctx.config.run_timeout_secs);
    let deadline = ctx
        .ctl
        .deadline
        .min(tokio::time::Instant::now() + crate::config::bounded_secs(time_limit));
    let timed_out = || {
        if deadline < ctx.ctl.deadline {
            RunError::TimedOut(time_limit)
        } else {
            RunError::TimedOut(ctx.ctl.timeout_secs)
        }
    };

    // Compiling is CPU work: off the async threads, and abandoned on Stop.
    let path = request.algorithm.clone();
    let compile_engine = engine.clone();
    let compile = tokio::task::spawn_blocking(move || Module::from_file(&compile_engine, &path));
    let module = tokio::select! {
        joined = compile => match joined {
            Ok(Ok(module)) => module,
            Ok(Err(err)) => return Err(module_error("loading", &err)),
            Err(err) => return Err(RunError::WasmModule(format!("compiler task: {err}"))),
        },
        () = tokio::time::sleep_until(deadline) => return Err(timed_out()),
        () = ctx.ctl.cancel.cancelled() => return Err(RunError::Stopped),
    };

    let flags = Arc::new(Flags::default());
    let budget = Arc::new(AtomicU64::new(limits.max_output_bytes));
    let output = |stderr| GuestOutput {
        ctx_out: ctx.out.clone(),
        stderr,
        budget: budget.clone(),
        flags: flags.clone(),
    };
    let mut builder = WasiCtxBuilder::new();
    builder.arg(GUEST_ARGV0);
    for arg in &request.args {
        builder.arg(arg);
    }
    builder.stdout(output(false)).stderr(output(true));
    builder
        .preopened_dir(&request.datasets, GUEST_DATASETS, FsPerms::ReadOnly)
        .map_err(|e| module_error("opening the datasets directory", &e))?;
    builder
        .preopened_dir(&request.results, GUEST_RESULTS, FsPerms::ReadWrite)
        .map_err(|e| module_error("opening the results directory", &e))?;
    let state = State {
        wasi: builder.build_p1(),
        limiter: Limiter {
            max_memory: usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX),
            exceeded: false,
        },
    };

    let mut store = Store::new(&engine, state);
    store.limiter(|state| &mut state.limiter);
    let callback_flags = flags.clone();
    store.epoch_deadline_callback(move |_| {
        if callback_flags.any() {
            wasmtime::bail!("interrupted by the runner");
        }
        // Yield at every tick: the executor then checks the deadline and Stop.
        Ok(UpdateDeadline::Yield(1))
    });
    store.set_epoch_deadline(1);

    let mut linker: Linker<State> = Linker::new(&engine);
    p1::add_to_linker_async(&mut linker, |state: &mut State| &mut state.wasi)
        .map_err(|e| module_error("linking WASI", &e))?;

    let _ticker = Ticker::start(
        engine.clone(),
        request.results.clone(),
        limits.max_results_bytes,
        flags.clone(),
    )
    .map_err(|source| RunError::Prepare {
        what: "start the epoch thread for",
        path: request.algorithm.clone(),
        source,
    })?;

    let call = async {
        let instance = linker
            .instantiate_async(&mut store, &module)
            .await
            .map_err(|e| (true, e))?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|e| (true, e))?;
        start
            .call_async(&mut store, ())
            .await
            .map_err(|e| (false, e))
    };
    let result = tokio::select! {
        result = call => result,
        () = tokio::time::sleep_until(deadline) => return Err(timed_out()),
        () = ctx.ctl.cancel.cancelled() => return Err(RunError::Stopped),
    };
    let Err((instantiating, err)) = result else {
        return Ok(());
    };
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return match exit.0 {
            0 => Ok(()),
            code => Err(RunError::Exited {
                code,
                stderr_tail: ctx.out.stderr_tail(),
            }),
        };
    }
    if store.data().limiter.exceeded {
        return Err(RunError::WasmMemoryLimit(limits.max_memory_bytes));
    }
    if flags.output_exceeded.load(Ordering::Relaxed) {
        return Err(RunError::WasmOutputLimit(limits.max_output_bytes));
    }
    if flags.results_exceeded.load(Ordering::Relaxed) {
        return Err(RunError::ResultsLimit(limits.max_results_bytes));
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return Err(RunError::WasmTrap(trap.to_string()));
    }
    if instantiating {
        Err(module_error("instantiating", &err))
    } else {
        Err(RunError::WasmTrap(err.to_string()))
    }
}
