//! The wasmtime engine every guest runs in: its settings (pooling allocator, epoch interruption),
//! the epoch clock that CPU deadlines count in, and the limits each instance lives under.

use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// An instance's memory cap: its linear memory and what it holds in the host, shared with the
/// unikernel.
pub use tls_site_shared::memory_cap::MemoryCap;

/// How often the engine's epoch advances; CPU deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// CPU time the component may take to initialise or to list its resources.
pub const START_UP_DEADLINE: Duration = Duration::from_secs(60);

/// The memory cap per instance. An instance of the snapshot starts at 1.2 MiB (the site's bytes
/// and the TLS configuration) and reached at most 1.4 MiB serving a PDF, and the same under tens
/// of thousands of garbage connections (the access log's `mem=`, the stats' `guest-memory-peak`).
/// 4 MiB leaves room for rustls's largest buffers (a 64 KiB handshake message, 16 KiB records)
/// while a guest that runs away is cut off: its allocation fails and it traps, alone.
pub const DEFAULT_INSTANCE_MEMORY: usize = tls_site_shared::defaults::INSTANCE_MEMORY;

/// Bytes of an instance's memory reset by hand (`config`): what a connection writes (about
/// 160 KiB for the page, more for a PDF) with room. This much stays resident per pool slot
/// between connections; an instance that wrote more (a client that grew its heap) gives the rest
/// back with `madvise`, as before.
const MEMORY_KEEP_RESIDENT: usize = 1 << 20;

/// Bytes of an instance's tables reset by hand (`config`): more than the component's few hundred
/// functions take.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Limits every instance lives under.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Instances alive at once: connections in flight, plus one for start-up work.
    pub instances: u32,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
}

impl Limits {
    /// For the commands that run the operator's own component once, outside serving (`inspect`,
    /// `dev-certs`, `compile`): room for a site of any size, since its files live in its linear
    /// memory (up to wasm32's 4 GiB). Only `serve --instance-memory` caps the instances that
    /// serve clients.
    pub fn one_off() -> Limits {
        Limits {
            instances: 4,
            memory_bytes: WASM32_MEMORY,
        }
    }
}

/// The most linear memory a wasm32 module can have: 65,536 pages of 64 KiB.
const WASM32_MEMORY: usize = 4 << 30;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            instances: 256,
            memory_bytes: DEFAULT_INSTANCE_MEMORY,
        }
    }
}

/// An engine for `limits`, with its epoch clock running.
pub fn engine(limits: &Limits) -> wasmtime::Result<Engine> {
    let engine = Engine::new(&config(limits))?;
    // The epoch clock: a weak handle, so the thread ends when the engine does.
    let weak = engine.weak();
    std::thread::spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    });
    Ok(engine)
}

/// An engine that compiles for the baseline of this architecture (no AVX, BMI, ...), so its code
/// runs on any CPU of it; `engine` checks that when it loads the code. It runs nothing itself.
#[cfg(feature = "compiler")]
pub fn baseline_compiler(limits: &Limits) -> wasmtime::Result<Engine> {
    let mut baseline = config(limits);
    // An explicit target turns off the detection of this CPU's extensions.
    baseline.target(&format!(
        "{}-unknown-{}",
        std::env::consts::ARCH,
        std::env::consts::OS
    ))?;
    Engine::new(&baseline)
}

/// An engine that compiles for the unikernel (host/unikernel): its target, and the settings its
/// engine runs with, shared with it. It runs nothing itself.
#[cfg(feature = "compiler")]
pub fn unikernel_compiler() -> wasmtime::Result<Engine> {
    use tls_site_shared::unikernel_engine;
    let mut config = Config::new();
    config.target(unikernel_engine::TARGET)?;
    unikernel_engine::configure(&mut config);
    // The unikernel's wasmtime is built without threads and GC (no std): code for it must use
    // none of the proposals that need them, which this build of wasmtime would otherwise enable.
    config
        .wasm_threads(false)
        .wasm_exceptions(false)
        .wasm_function_references(false);
    for flag in unikernel_engine::CRANELIFT_FLAGS {
        // SAFETY: the unikernel checks at start that its CPU has each of these (it refuses the
        // code otherwise), as wasmtime asks of an embedder without std.
        unsafe { config.cranelift_flag_enable(flag) };
    }
    Engine::new(&config)
}

/// The engine's settings; code compiled ahead must be made with the same.
fn config(limits: &Limits) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(limits.instances)
        .total_core_instances(limits.instances * 8)
        .total_memories(limits.instances * 2)
        .total_tables(limits.instances * 4)
        .total_stacks(limits.instances)
        .max_memory_size(limits.memory_bytes);
    // Reset an instance's memory and tables by hand, not with madvise(MADV_DONTNEED): the pages
    // stay mapped, so the next instance in the slot takes no page faults, and the kernel need not
    // flush the TLBs of the other CPUs running our threads (two IPIs a connection on two threads,
    // docs/performance.md). PAGEMAP_SCAN (Linux 6.7) tells which pages the instance wrote, and
    // only those are copied back from the snapshot; without it wasmtime would memset the whole
    // budget every time, so the budget is given only with it. The dirty bytes of a slot beyond
    // the budget are still dropped with madvise.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
    }
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        // 64x64->128-bit multiplies as instructions, for a guest built with `+wide-arithmetic`
        // (docs/performance.md): without them each is a call to compiler-rt's `__multi3`.
        .wasm_wide_arithmetic(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // Hidden, for profiling (docs/performance.md): `/tmp/perf-PID.map` names the guest's compiled
    // functions for `perf`.
    if std::env::var_os("TLS_SITE_PERF_MAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// `deadline` in epoch ticks.
pub fn ticks(deadline: Duration) -> u64 {
    (deadline.as_millis() / EPOCH_TICK.as_millis()) as u64
}
