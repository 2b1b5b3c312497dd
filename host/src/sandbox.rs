//! The sandbox: the wasmtime engine, the initialised snapshot of the site component (made at
//! start-up, or ahead of time by `tls-site compile`), and a fresh instance of it per connection
//! with nothing granted but that connection's two streams and the host's crypto (crypto.rs).

use crate::certs::Certificate;
use crate::crypto::{Keys, TicketKeys};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    imports: { default: trappable },
    exports: { default: async },
    with: {
        "wasi": wasmtime_wasi::p2::bindings,
        "tls-site:site/crypto.key-exchange": crate::crypto::EphemeralKeyExchange,
        "tls-site:site/crypto.record-key": crate::crypto::RecordProtection,
    },
});

/// The portable world's one import of its own, `private-keys`; its exports are those of
/// `tls-site`, so one `TlsSitePre` serves both kinds of component.
pub(crate) mod portable {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tls-site-portable",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi": wasmtime_wasi::p2::bindings,
            "tls-site:site/identity": super::tls_site::site::identity,
        },
    });
}

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

/// The first bytes of a file `tls-site compile` writes; then the SHA-256 of the certificates
/// baked into it (`certificates_digest`), the SHA-256 of the rest, and the rest: wasmtime's
/// serialized component, machine code that is checked whole before it is mapped executable.
const PRECOMPILED_MAGIC: &[u8] = b"tls-site precompiled v1\n";
const DIGEST_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{path}: cannot read the component: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a tls-site component: {source:#}")]
    NotAComponent { path: PathBuf, source: wasmtime::Error },
    #[error("{path}: precompiled by another build of tls-site or for another kind of machine; make it again with this binary's `tls-site compile`: {source:#}")]
    PrecompiledElsewhere { path: PathBuf, source: wasmtime::Error },
    #[error("{path}: precompiled with other certificates than these; make it again with `tls-site compile --certs` and the certificates to serve")]
    PrecompiledForOtherCertificates { path: PathBuf },
    #[error("{path}: damaged, its contents are not those it was written with: a partial copy, or (in a VM) an initramfs the kernel could not unpack whole for lack of memory")]
    PrecompiledDamaged { path: PathBuf },
    #[error("the component refused the certificates: {0}")]
    Init(String),
    #[error("the component trapped while initialising: {0:#}")]
    InitTrapped(wasmtime::Error),
    #[error(transparent)]
    UnusableKey(#[from] crate::crypto::UnusableKey),
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
    keys: Arc<Keys>,
    tickets: Arc<TicketKeys>,
}

/// What a guest instance's store holds: an empty WASI context, its resource table and limits,
/// and the host's keys, which the guest can use but not read.
pub struct GuestState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    memory: MemoryCap,
    certificates: Vec<identity::Certificate>,
    pub(crate) keys: Arc<Keys>,
    pub(crate) tickets: Arc<TicketKeys>,
    /// Only while the component initialises may the portable world read a private key.
    pub(crate) initialising: bool,
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
    fn certificates(&mut self) -> wasmtime::Result<Vec<identity::Certificate>> {
        Ok(std::mem::take(&mut self.certificates))
    }
}

impl Sandbox {
    /// Compiles the component, initialises it once with the certificates, snapshots the result,
    /// and prepares instances of the snapshot. A file `tls-site compile` made is that snapshot
    /// already compiled: it is only loaded.
    pub async fn new(
        component_path: &Path,
        certificates: &[Certificate],
        limits: Limits,
    ) -> Result<Sandbox, SandboxError> {
        let file = read(component_path)?;
        let engine = engine(&limits)?;
        let linker = linker(&engine)?;
        let keys = Arc::new(Keys::load(certificates)?);
        let tickets = Arc::new(TicketKeys::new(crate::crypto::TICKET_KEY_ROTATION));

        let component = match file.strip_prefix(PRECOMPILED_MAGIC) {
            Some(precompiled) => load_precompiled(&engine, component_path, precompiled, Some(certificates))?,
            None => {
                let mut state = GuestState::new(limits.memory_bytes, to_wit(certificates), keys.clone(), tickets.clone());
                state.initialising = true;
                let snapshot = snapshot(&linker, component_path, &file, state).await?;
                Component::new(&engine, &snapshot)
                    .map_err(|source| SandboxError::NotAComponent { path: component_path.to_owned(), source })?
            }
        };
        let pre = TlsSitePre::new(linker.instantiate_pre(&component)?)?;
        Ok(Sandbox { engine, pre, limits, keys, tickets })
    }

    /// What `Sandbox::new` makes of the component at start-up, made now and compiled to machine
    /// code, as the bytes of a file that `new` then only has to load: no Cranelift, no snapshot,
    /// which matters where start-up is slow (a microVM in software emulation). The code is for
    /// the baseline of this architecture, so it runs on any CPU of it; the certificates' chains
    /// are in it (their keys are not), and `new` checks that they are the ones it is given.
    pub async fn precompile(component_path: &Path, certificates: &[Certificate]) -> Result<Vec<u8>, SandboxError> {
        let wasm = read(component_path)?;
        if wasm.starts_with(PRECOMPILED_MAGIC) {
            return Err(SandboxError::NotAComponent {
                path: component_path.to_owned(),
                source: wasmtime::Error::msg("it is precompiled already; give the .wasm it was made from"),
            });
        }
        let limits = Limits::default();
        let linker = linker(&engine(&limits)?)?;
        let keys = Arc::new(Keys::load(certificates)?);
        let mut state = GuestState::new(limits.memory_bytes, to_wit(certificates), keys, Arc::new(TicketKeys::new(Duration::MAX)));
        state.initialising = true;
        let snapshot = snapshot(&linker, component_path, &wasm, state).await?;
        let mut baseline = config(&limits);
        // An explicit target turns off the detection of this CPU's extensions (AVX, BMI, ...):
        // the code then needs none, and `new` checks that at load.
        baseline.target(&format!("{}-unknown-{}", std::env::consts::ARCH, std::env::consts::OS))?;
        let code = Engine::new(&baseline)?
            .precompile_component(&snapshot)
            .map_err(|source| SandboxError::NotAComponent { path: component_path.to_owned(), source })?;
        Ok([PRECOMPILED_MAGIC, &certificates_digest(certificates), ring::digest::digest(&ring::digest::SHA256, &code).as_ref(), &code].concat())
    }

    /// Shares `tickets` with this sandbox, e.g. the keys of the sandbox this one replaces, so that
    /// returning clients still resume.
    pub fn with_ticket_keys(mut self, tickets: Arc<TicketKeys>) -> Sandbox {
        self.tickets = tickets;
        self
    }

    /// The session-ticket keys every instance seals and opens tickets with.
    pub fn ticket_keys(&self) -> &Arc<TicketKeys> {
        &self.tickets
    }

    fn store(&self) -> Store<GuestState> {
        let state = GuestState::new(self.limits.memory_bytes, Vec::new(), self.keys.clone(), self.tickets.clone());
        new_store(&self.engine, state)
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
        let file = read(component_path)?;
        let engine = engine(&limits)?;
        let component = match file.strip_prefix(PRECOMPILED_MAGIC) {
            Some(precompiled) => load_precompiled(&engine, component_path, precompiled, None)?,
            None => Component::new(&engine, &file).map_err(not_a_site)?,
        };
        let imports_http = component.component_type().imports(&engine).any(|(name, _)| name.starts_with("wasi:http/"));
        let listed = if imports_http {
            let state = crate::edge::EdgeState::new(limits.memory_bytes);
            list_resources(crate::edge::linker(&engine)?, &component, state).await
        } else {
            let state = GuestState::new(limits.memory_bytes, Vec::new(), Default::default(), Arc::new(TicketKeys::new(Duration::MAX)));
            list_resources(linker(&engine)?, &component, state).await
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

impl GuestState {
    fn new(memory_bytes: usize, certificates: Vec<identity::Certificate>, keys: Arc<Keys>, tickets: Arc<TicketKeys>) -> GuestState {
        GuestState {
            wasi: empty_wasi(),
            table: ResourceTable::new(),
            memory: MemoryCap { limit: memory_bytes, peak: 0 },
            certificates,
            keys,
            tickets,
            initialising: false,
        }
    }
}

/// Whether the file at `path` is one `tls-site compile` made.
pub fn is_precompiled(path: &Path) -> Result<bool, SandboxError> {
    use std::io::Read as _;
    let mut start = [0; PRECOMPILED_MAGIC.len()];
    let read = std::fs::File::open(path).and_then(|mut file| file.read(&mut start));
    let read = read.map_err(|source| SandboxError::Unreadable { path: path.to_owned(), source })?;
    Ok(start[..read] == *PRECOMPILED_MAGIC)
}

fn read(path: &Path) -> Result<Vec<u8>, SandboxError> {
    std::fs::read(path).map_err(|source| SandboxError::Unreadable { path: path.to_owned(), source })
}

/// The machine code `Sandbox::precompile` wrote (after its magic), for `certificates` if given.
fn load_precompiled(engine: &Engine, path: &Path, file: &[u8], certificates: Option<&[Certificate]>) -> Result<Component, SandboxError> {
    let damaged = || SandboxError::PrecompiledDamaged { path: path.to_owned() };
    let (certificates_seen, rest) = file.split_first_chunk::<DIGEST_BYTES>().ok_or_else(damaged)?;
    let (code_digest, code) = rest.split_first_chunk::<DIGEST_BYTES>().ok_or_else(damaged)?;
    if ring::digest::digest(&ring::digest::SHA256, code).as_ref() != code_digest {
        return Err(damaged());
    }
    if certificates.is_some_and(|certificates| certificates_digest(certificates) != *certificates_seen) {
        return Err(SandboxError::PrecompiledForOtherCertificates { path: path.to_owned() });
    }
    // SAFETY: wasmtime runs the bytes as machine code. They come from the operator's own file,
    // as trusted as this binary, written by `precompile` (magic and checksum checked above);
    // wasmtime itself checks its version, the target and the settings before loading.
    unsafe { Component::deserialize(engine, code) }
        .map_err(|source| SandboxError::PrecompiledElsewhere { path: path.to_owned(), source })
}

/// SHA-256 over the certificates as the guest gets them: their names and chains, in order.
fn certificates_digest(certificates: &[Certificate]) -> [u8; DIGEST_BYTES] {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    // Every list and every item length-prefixed: no two different inputs give the same bytes.
    let mut update = |parts: &mut dyn ExactSizeIterator<Item = &[u8]>| {
        digest.update(&(parts.len() as u64).to_be_bytes());
        for part in parts {
            digest.update(&(part.len() as u64).to_be_bytes());
            digest.update(part);
        }
    };
    for certificate in certificates {
        update(&mut certificate.names.iter().map(String::as_bytes));
        update(&mut certificate.chain.iter().map(Vec::as_slice));
    }
    digest.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Instantiates the component at `path` (bytes `wasm`) with `state`, calls its `initialise` and
/// returns a snapshot of the initialised instance: a component that starts in that state.
async fn snapshot(linker: &Linker<GuestState>, path: &Path, wasm: &[u8], state: GuestState) -> Result<Vec<u8>, SandboxError> {
    let mut store = new_store(linker.engine(), state);
    let instantiate = async |store: &mut Store<GuestState>, component: &Component| {
        linker.instantiate_async(store, component).await
    };
    let (snapshot, returned) = wasmtime_wizer::Wizer::new()
        .init_func(INIT_CALL)
        .run_component(&mut store, wasm, instantiate)
        .await
        .map_err(|error| classify_load_error(path, error))?;
    if let [Val::Result(Err(error))] = &returned[..] {
        return Err(SandboxError::Init(describe(error.as_deref())));
    }
    Ok(snapshot)
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
fn new_store(engine: &Engine, state: GuestState) -> Store<GuestState> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.memory);
    store.set_epoch_deadline(ticks(START_UP_DEADLINE));
    store.epoch_deadline_trap();
    store
}

pub(crate) fn engine(limits: &Limits) -> Result<Engine, SandboxError> {
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

/// The engine's settings; a precompiled component must be made with the same.
fn config(limits: &Limits) -> Config {
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
    config
}

fn linker(engine: &Engine) -> Result<Linker<GuestState>, SandboxError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    identity::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |state| state)?;
    tls_site::site::crypto::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |state| state)?;
    tls_site::site::tickets::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |state| state)?;
    portable::tls_site::site::private_keys::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// The certificates as the guest sees them: the i-th names its key by `key-id` i (`Keys::load`).
fn to_wit(certificates: &[Certificate]) -> Vec<identity::Certificate> {
    (0..).zip(certificates)
        .map(|(key, certificate)| identity::Certificate {
            chain: certificate.chain.clone(),
            names: certificate.names.clone(),
            key,
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

#[cfg(test)]
#[path = "../../tests/client.rs"]
mod client;

/// Keyless means the private key is nowhere in the guest's linear memory. A component does not
/// export its memory to the host, so these tests read it as wizer does for a snapshot: wizer
/// instruments the (already initialised) component with exports that return each memory's
/// contents, the instrumented instance serves real connections, and wizer's snapshot of it then
/// holds that memory as data segments, which are searched for the key.
#[cfg(test)]
mod tests {
    use super::*;
    use client::{Trust, config, fetch};
    use wasmtime_wizer::{WasmtimeWizerComponent, Wizer};

    /// The component's memory (as a snapshot component) after serving `connections`, and the
    /// private scalar of the P-256 key it served with.
    async fn memory_after_connections(component_path: &Path, connections: usize) -> (Vec<u8>, Vec<u8>) {
        let name = component_path.file_stem().unwrap().to_string_lossy();
        let dir = std::env::temp_dir().join(format!("tls-site-memory-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::certs::dev_certs(&dir, &["tls-site.localhost".to_owned()]).unwrap();
        let certificates = crate::certs::load_dir(&dir).unwrap();
        let scalar = p256_scalar(&certificates[0].private_key);

        let limits = Limits::default();
        let engine = engine(&limits).unwrap();
        let linker = linker(&engine).unwrap();
        let keys = Arc::new(Keys::load(&certificates).unwrap());
        let tickets = Arc::new(TicketKeys::new(crate::crypto::TICKET_KEY_ROTATION));
        let mut state = GuestState::new(limits.memory_bytes, to_wit(&certificates), keys.clone(), tickets.clone());
        state.initialising = true;
        let wasm = std::fs::read(component_path).unwrap();
        let initialised = snapshot(&linker, component_path, &wasm, state).await.unwrap();

        let wizer = Wizer::new();
        let (context, instrumented) = wizer.instrument_component(&initialised).unwrap();
        let component = Component::new(&engine, &instrumented).unwrap();
        let mut store = new_store(&engine, GuestState::new(limits.memory_bytes, Vec::new(), keys, tickets));
        let instance = linker.instantiate_async(&mut store, &component).await.unwrap();
        let site = TlsSite::new(&mut store, &instance).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ca = dir.join(crate::certs::DEV_CA_FILE);
        for _ in 0..connections {
            let ca = ca.clone();
            let client = std::thread::spawn(move || fetch(addr, "tls-site.localhost", true, config(Trust::Ca(&ca), &[])));
            let (stream, _) = listener.accept().await.unwrap();
            let (reader, writer) = stream.into_split();
            let input: DynInputStream = Box::new(AsyncReadStream::new(reader));
            let output: DynOutputStream = Box::new(AsyncWriteStream::new(WRITE_BUDGET, writer));
            let table = &mut store.data_mut().table;
            let (input, output) = (table.push(input).unwrap(), table.push(output).unwrap());
            let deadlines = Deadlines { handshake: nanos(Duration::from_secs(60)), stall: nanos(Duration::from_secs(60)) };
            let served = site.tls_site_site_handler().call_handle(&mut store, input, output, deadlines).await.unwrap();
            assert!(served.is_ok(), "{served:?}");
            let fetched = tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap().unwrap();
            assert_eq!(fetched.status_line, "HTTP/1.1 200 OK");
        }
        let memory = wizer.snapshot_component(&context, &mut WasmtimeWizerComponent { store: &mut store, instance }).await.unwrap();
        (memory, scalar)
    }

    /// The 32-byte private scalar in a P-256 PKCS#8 key: the OCTET STRING after ECPrivateKey's
    /// version 1 (RFC 5915).
    fn p256_scalar(pkcs8: &[u8]) -> Vec<u8> {
        let at = pkcs8.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).expect("an ECPrivateKey");
        pkcs8[at + 5..at + 37].to_vec()
    }

    /// Whether any 16 consecutive bytes of `secret` are in `memory`, in the key's byte order or
    /// reversed (little-endian limbs).
    fn holds_part_of(memory: &[u8], secret: &[u8]) -> bool {
        let reversed: Vec<u8> = secret.iter().rev().copied().collect();
        [secret, &reversed[..]].iter().any(|bytes| bytes.windows(16).any(|part| memory.windows(16).any(|w| w == part)))
    }

    /// The digest that ties a precompiled file to its certificates: what the guest sees counts
    /// (names, chains, their order), the private key does not (it never enters the file).
    #[test]
    fn the_certificates_digest_covers_what_the_guest_sees_and_only_that() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs");
        let certificates = crate::certs::load_dir(&dir).unwrap();
        let digest = certificates_digest(&certificates);
        let mut other_key = certificates.clone();
        other_key[0].private_key = b"another key".to_vec();
        assert_eq!(certificates_digest(&other_key), digest);

        let mut name_moved = certificates.clone();
        let name = name_moved[0].names.pop().unwrap();
        name_moved[0].chain.insert(0, name.into_bytes());
        assert_ne!(certificates_digest(&name_moved), digest);
        let (first, mut second) = (certificates[0].clone(), certificates[0].clone());
        second.names.truncate(1);
        let in_order = certificates_digest(&[first.clone(), second.clone()]);
        assert_ne!(in_order, digest, "one more certificate");
        assert_ne!(certificates_digest(&[second, first]), in_order, "the order is the guest's key ids");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Runtime::new().unwrap()
    }

    #[test]
    fn the_keyless_component_never_holds_the_private_key() {
        let (memory, scalar) = runtime().block_on(memory_after_connections(Path::new(crate::BUILT_COMPONENT), 3));
        assert!(memory.len() > 1 << 20, "the snapshot holds the site's bytes: {}", memory.len());
        assert!(!holds_part_of(&memory, &scalar), "the private key is in the keyless component's memory");
    }

    /// The check above can fail: the portable component parses the key itself, and it is found.
    #[test]
    fn the_portable_component_does_hold_the_private_key() {
        let (memory, scalar) = runtime().block_on(memory_after_connections(Path::new(crate::BUILT_PORTABLE_COMPONENT), 3));
        assert!(holds_part_of(&memory, &scalar), "the portable component's memory should hold its key");
    }
}
