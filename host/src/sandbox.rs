//! The sandbox: the wasmtime engine, the initialised snapshot of the site component, and a fresh
//! instance of it per connection with nothing granted but that connection's two streams.

use crate::certs::Certificate;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, Val};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store};
use wasmtime_wasi::p2::pipe::{AsyncReadStream, AsyncWriteStream};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "tls-site",
    exports: { default: async },
    with: { "wasi": wasmtime_wasi::p2::bindings },
});

pub use exports::tls_site::site::handler::{Failure, Served};
use exports::tls_site::site::handler::Deadlines;
pub use exports::tls_site::site::site::Resource;
use self::tls_site::site::identity;

/// How often the engine's epoch advances; CPU deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// CPU time the component may take to initialise or to list its resources.
const START_UP_DEADLINE: Duration = Duration::from_secs(60);

/// Room in the host-side write buffer: a whole first flight (handshake and the start of the
/// response) fits, so it reaches the socket in one write.
const WRITE_BUDGET: usize = 256 * 1024;

/// The wasm export that `initialise`s the component, as wizer calls it.
const INIT_CALL: &str = "initialise()";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{path}: cannot read the component: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a tls-site component: {source:#}")]
    NotAComponent { path: PathBuf, source: wasmtime::Error },
    #[error("the component refused the certificates: {0}")]
    Init(String),
    #[error("the component trapped while initialising: {0:#}")]
    InitTrapped(wasmtime::Error),
    #[error("wasmtime: {0:#}")]
    Wasmtime(#[from] wasmtime::Error),
}

/// Limits every instance lives under.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Instances alive at once: connections in flight, plus one for start-up work.
    pub instances: u32,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { instances: 256, memory_bytes: DEFAULT_INSTANCE_MEMORY }
    }
}

/// The memory cap per instance. An instance of the snapshot starts at 1.2 MiB (the site's bytes
/// and the TLS configuration) and reached at most 1.4 MiB serving a PDF, and the same under tens
/// of thousands of garbage connections (the access log's `mem=`, the stats' `guest-memory-peak`).
/// 4 MiB leaves room for rustls's largest buffers (a 64 KiB handshake message, 16 KiB records)
/// while a guest that runs away is cut off: its allocation fails and it traps, alone.
pub const DEFAULT_INSTANCE_MEMORY: usize = 4 << 20;

/// How long a connection may take: in all, and by step.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From the first bytes to the whole ClientHello (enforced by the guest).
    pub handshake: Duration,
    /// The longest the client may leave the response untaken (enforced by the guest).
    pub stall: Duration,
    /// The whole connection, from the first bytes to close (enforced by the host, in wall-clock
    /// time for the client and as an epoch deadline for the guest's CPU).
    pub connection: Duration,
}

/// What one connection came to, and the most linear memory its instance used.
#[derive(Debug)]
pub struct Report {
    pub outcome: Outcome,
    pub memory_peak: usize,
}

/// How one connection ended.
#[derive(Debug)]
pub enum Outcome {
    Served(Served),
    Failed(Failure),
    /// The guest trapped (a bug, or its CPU deadline); only this connection is lost.
    Trapped(String),
    /// The client took longer than the connection deadline.
    TimedOut,
    /// No instance could be made (the pool is full, or the host is out of memory).
    NoInstance(String),
}

/// The engine and the initialised component, ready to serve.
pub struct Sandbox {
    engine: Engine,
    pre: TlsSitePre<GuestState>,
    limits: Limits,
}

/// What a guest instance's store holds: an empty WASI context, its resource table and limits.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    certificates: Vec<identity::Certificate>,
}

impl GuestState {
    fn new(memory_bytes: usize, certificates: Vec<identity::Certificate>) -> GuestState {
        GuestState {
            wasi: empty_wasi(),
            table: ResourceTable::new(),
            memory: MemoryCap { limit: memory_bytes, peak: 0 },
            certificates,
        }
    }
}

/// The instance's memory cap, which also remembers how much the instance used.
pub(crate) struct MemoryCap {
    limit: usize,
    peak: usize,
}

/// Table elements one instance may have: far more than the component's few hundred functions.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.peak = self.peak.max(current);
        let allowed = desired <= self.limit;
        if allowed {
            self.peak = self.peak.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// WASI as the guest gets it: no preopened directories, no environment, no arguments, no
/// network (sockets exist in the interface, every use is refused), stdio empty. What remains
/// is clocks and randomness, which TLS needs.
pub(crate) fn empty_wasi() -> WasiCtx {
    WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl identity::Host for GuestState {
    fn certificates(&mut self) -> Vec<identity::Certificate> {
        std::mem::take(&mut self.certificates)
    }
}

impl Sandbox {
    /// Compiles the component, initialises it once with the certificates, snapshots the result,
    /// and prepares instances of the snapshot.
    pub async fn new(
        component_path: &Path,
        certificates: &[Certificate],
        limits: Limits,
    ) -> Result<Sandbox, SandboxError> {
        let wasm = std::fs::read(component_path)
            .map_err(|source| SandboxError::Unreadable { path: component_path.to_owned(), source })?;
        let engine = engine(&limits)?;
        let linker = linker(&engine)?;

        let mut store = new_store(&engine, limits.memory_bytes, to_wit(certificates));
        let instantiate = async |store: &mut Store<GuestState>, component: &Component| {
            linker.instantiate_async(store, component).await
        };
        let (snapshot, returned) = wasmtime_wizer::Wizer::new()
            .init_func(INIT_CALL)
            .run_component(&mut store, &wasm, instantiate)
            .await
            .map_err(|error| classify_load_error(component_path, error))?;
        if let [Val::Result(Err(error))] = &returned[..] {
            return Err(SandboxError::Init(describe(error.as_deref())));
        }

        let component = Component::new(&engine, &snapshot)
            .map_err(|source| SandboxError::NotAComponent { path: component_path.to_owned(), source })?;
        let pre = TlsSitePre::new(linker.instantiate_pre(&component)?)?;
        Ok(Sandbox { engine, pre, limits })
    }

    fn store(&self) -> Store<GuestState> {
        new_store(&self.engine, self.limits.memory_bytes, Vec::new())
    }

    /// What the component serves.
    pub async fn resources(&self) -> Result<Vec<Resource>, SandboxError> {
        let mut store = self.store();
        let site = self.pre.instantiate_async(&mut store).await?;
        Ok(site.tls_site_site_site().call_resources(&mut store).await?)
    }

    /// What the component at `component_path` serves, without certificates or a snapshot. Works
    /// for any component that exports `tls-site:site/site`: the TLS component and the edge twin.
    pub async fn inspect(component_path: &Path, limits: Limits) -> Result<Vec<Resource>, SandboxError> {
        let not_a_site = |source| SandboxError::NotAComponent { path: component_path.to_owned(), source };
        let wasm = std::fs::read(component_path)
            .map_err(|source| SandboxError::Unreadable { path: component_path.to_owned(), source })?;
        let engine = engine(&limits)?;
        let component = Component::new(&engine, &wasm).map_err(not_a_site)?;
        let imports_http = component.component_type().imports(&engine).any(|(name, _)| name.starts_with("wasi:http/"));
        let listed = if imports_http {
            let state = crate::edge::EdgeState::new(limits.memory_bytes);
            list_resources(crate::edge::linker(&engine)?, &component, state).await
        } else {
            list_resources(linker(&engine)?, &component, GuestState::new(limits.memory_bytes, Vec::new())).await
        };
        listed.map_err(not_a_site)
    }

    /// Serves one accepted connection from a fresh instance of the snapshot, within `timeouts`.
    pub async fn serve_connection(&self, stream: TcpStream, timeouts: Timeouts) -> Report {
        let mut store = self.store();
        let outcome = Self::serve_in(&self.pre, &mut store, stream, timeouts).await;
        Report { outcome, memory_peak: store.data().memory.peak }
    }

    async fn serve_in(pre: &TlsSitePre<GuestState>, store: &mut Store<GuestState>, stream: TcpStream, timeouts: Timeouts) -> Outcome {
        // Each TLS flight leaves as one write; without this, Nagle and delayed ACKs stall it.
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let site = match pre.instantiate_async(&mut *store).await {
            Ok(site) => site,
            Err(error) if error.is::<wasmtime::Trap>() => return Outcome::Trapped(format!("{error:#}")),
            Err(error) => return Outcome::NoInstance(format!("{error:#}")),
        };
        store.set_epoch_deadline(ticks(timeouts.connection));
        let table = &mut store.data_mut().table;
        let input: DynInputStream = Box::new(AsyncReadStream::new(reader));
        let output: DynOutputStream = Box::new(AsyncWriteStream::new(WRITE_BUDGET, writer));
        let (Ok(input), Ok(output)) = (table.push(input), table.push(output)) else {
            return Outcome::NoInstance("resource table full".into());
        };
        let deadlines = Deadlines { handshake: nanos(timeouts.handshake), stall: nanos(timeouts.stall) };
        let handled = site.tls_site_site_handler().call_handle(&mut *store, input, output, deadlines);
        match tokio::time::timeout(timeouts.connection, handled).await {
            Ok(Ok(Ok(served))) => Outcome::Served(served),
            Ok(Ok(Err(failure))) => Outcome::Failed(failure),
            Ok(Err(trap)) => Outcome::Trapped(format!("{trap:#}")),
            Err(_elapsed) => Outcome::TimedOut,
        }
    }
}

/// Calls `site.resources` on a fresh instance of `component`.
async fn list_resources<T: Send + 'static>(
    linker: Linker<T>,
    component: &Component,
    state: T,
) -> wasmtime::Result<Vec<Resource>> {
    let pre = linker.instantiate_pre(component)?;
    let indices = exports::tls_site::site::site::GuestIndices::new(&pre)?;
    let mut store = Store::new(component.engine(), state);
    store.set_epoch_deadline(ticks(START_UP_DEADLINE));
    store.epoch_deadline_trap();
    let instance = pre.instantiate_async(&mut store).await?;
    indices.load(&mut store, &instance)?.call_resources(&mut store).await
}

fn nanos(duration: Duration) -> u64 {
    duration.as_nanos().try_into().unwrap_or(u64::MAX)
}

/// `deadline` in epoch ticks.
pub(crate) fn ticks(deadline: Duration) -> u64 {
    (deadline.as_millis() / EPOCH_TICK.as_millis()) as u64
}

/// A store for one instance, with the start-up CPU deadline; connections set their own.
fn new_store(engine: &Engine, memory_bytes: usize, certificates: Vec<identity::Certificate>) -> Store<GuestState> {
    let mut store = Store::new(engine, GuestState::new(memory_bytes, certificates));
    store.limiter(|state| &mut state.memory);
    store.set_epoch_deadline(ticks(START_UP_DEADLINE));
    store.epoch_deadline_trap();
    store
}

pub(crate) fn engine(limits: &Limits) -> Result<Engine, SandboxError> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(limits.instances)
        .total_core_instances(limits.instances * 8)
        .total_memories(limits.instances * 2)
        .total_tables(limits.instances * 4)
        .total_stacks(limits.instances)
        .max_memory_size(limits.memory_bytes);
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
    let engine = Engine::new(&config)?;
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

fn linker(engine: &Engine) -> Result<Linker<GuestState>, SandboxError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    identity::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |state| state)?;
    Ok(linker)
}

fn to_wit(certificates: &[Certificate]) -> Vec<identity::Certificate> {
    certificates
        .iter()
        .map(|certificate| identity::Certificate {
            chain: certificate.chain.clone(),
            private_key: certificate.private_key.clone(),
            key_format: match certificate.key_format {
                crate::certs::KeyFormat::Pkcs8 => identity::KeyFormat::Pkcs8,
                crate::certs::KeyFormat::Sec1 => identity::KeyFormat::Sec1,
                crate::certs::KeyFormat::Pkcs1 => identity::KeyFormat::Pkcs1,
            },
            names: certificate.names.clone(),
        })
        .collect()
}

/// Wizer compiles and instantiates the component: its errors are those of a bad file, a
/// component of another world, or a trap in `initialise`.
fn classify_load_error(path: &Path, error: wasmtime::Error) -> SandboxError {
    if error.chain().any(|cause| cause.to_string().contains("initialization function trapped")) {
        SandboxError::InitTrapped(error)
    } else {
        SandboxError::NotAComponent { path: path.to_owned(), source: error }
    }
}

/// `init-error` as wizer hands it back: a variant case and its text.
fn describe(error: Option<&Val>) -> String {
    match error {
        Some(Val::Variant(case, Some(payload))) => match payload.as_ref() {
            Val::String(text) => format!("{case}: {text}"),
            other => format!("{case}: {other:?}"),
        },
        other => format!("{other:?}"),
    }
}
