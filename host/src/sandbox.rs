//! Serving a connection: a fresh instance of the initialised component (made at start-up by
//! `snapshot.rs`, or loaded from `tls-site compile`'s file) per connection, granted nothing but
//! the host's crypto (`guest_state.rs`); the host reads and writes the socket, the instance's
//! `handler.connection` says what to send and what to wait for, within the deadlines.

pub use crate::bindings::{Ending, Failure, Resource, Served};
use crate::bindings::{Event, Next, TlsSite, TlsSitePre, portable, tls_site};
use crate::certs::Certificate;
use crate::crypto::{Keys, UnusableKey};
use crate::engine::{self, Limits};
use crate::guest_state::{GuestState, new_store};
use crate::precompiled::{self, PrecompiledError};
#[cfg(feature = "compiler")]
use crate::snapshot::{self, SnapshotError};
use crate::tickets::{TICKET_KEY_ROTATION, TicketKeys};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

/// The largest read handed to the guest at once: a TLS record of the largest size.
const READ_BYTES: usize = 16 * 1024 + 256;

/// How long the client may take, after the response, to send its Finished and then to close
/// (wit/tls-site.wit, `handler.next`: `drain`, `close`); each phase has this long.
const DRAIN_TIME: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{path}: cannot read the component: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a tls-site component: {source:#}")]
    NotAComponent {
        path: PathBuf,
        source: wasmtime::Error,
    },
    #[error("{path}: {source}")]
    Precompiled {
        path: PathBuf,
        source: PrecompiledError,
    },
    #[cfg(feature = "compiler")]
    #[error("{path}: {source}")]
    Snapshot {
        path: PathBuf,
        source: SnapshotError,
    },
    #[error(
        "{path}: this tls-site is built without a compiler (the microVM's, `--no-default-features`) and loads only what `tls-site compile` made; compile the component first, with a full build: `tls-site compile --certs DIR --out site.cwasm`"
    )]
    NeedsCompiling { path: PathBuf },
    #[error(transparent)]
    UnusableKey(#[from] UnusableKey),
    #[error("wasmtime: {0:#}")]
    Wasmtime(#[from] wasmtime::Error),
}

/// How long a connection may take: in all, and by step.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From the first bytes to the whole ClientHello.
    pub handshake: Duration,
    /// The longest the client may leave the response untaken.
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

impl Sandbox {
    /// Compiles the component, initialises it once with the certificates, snapshots the result,
    /// and prepares instances of the snapshot. A file `tls-site compile` made is that snapshot
    /// already compiled: it is only loaded.
    pub async fn new(
        component_path: &Path,
        certificates: &[Certificate],
        limits: Limits,
    ) -> Result<Sandbox, SandboxError> {
        let file = read_component(component_path)?;
        let engine = engine::engine(&limits)?;
        let linker = linker(&engine)?;
        let keys = Arc::new(Keys::load(certificates)?);
        let tickets = Arc::new(TicketKeys::new(TICKET_KEY_ROTATION));

        let component = match precompiled::body(&file) {
            Some(body) => {
                precompiled::load(&engine, body, Some(certificates)).map_err(|source| {
                    SandboxError::Precompiled {
                        path: component_path.to_owned(),
                        source,
                    }
                })?
            }
            #[cfg(not(feature = "compiler"))]
            None => {
                return Err(SandboxError::NeedsCompiling {
                    path: component_path.to_owned(),
                });
            }
            #[cfg(feature = "compiler")]
            None => {
                let state = GuestState::initialising(
                    limits.memory_bytes,
                    certificates,
                    keys.clone(),
                    tickets.clone(),
                );
                let snapshot =
                    snapshot::snapshot(&linker, &file, state)
                        .await
                        .map_err(|source| SandboxError::Snapshot {
                            path: component_path.to_owned(),
                            source,
                        })?;
                wasmtime::component::Component::new(&engine, &snapshot).map_err(|source| {
                    SandboxError::NotAComponent {
                        path: component_path.to_owned(),
                        source,
                    }
                })?
            }
        };
        let pre = TlsSitePre::new(linker.instantiate_pre(&component)?)?;
        Ok(Sandbox {
            engine,
            pre,
            limits,
            keys,
            tickets,
        })
    }

    /// What `Sandbox::new` makes of the component at start-up, made now and compiled to machine
    /// code for the baseline of this architecture, as the bytes of a file that `new` then only has
    /// to load: no Cranelift, no snapshot, which matters where start-up is slow (a microVM in
    /// software emulation). The certificates' chains are in it (their keys are not).
    #[cfg(feature = "compiler")]
    pub async fn precompile(
        component_path: &Path,
        certificates: &[Certificate],
    ) -> Result<Vec<u8>, SandboxError> {
        let compiler = engine::baseline_compiler(&Limits::default())?;
        Self::precompile_with(component_path, certificates, &compiler).await
    }

    /// The same snapshot as `precompile`, compiled for the unikernel (host/unikernel): its target
    /// and engine settings (`tls_site_shared::unikernel_engine`).
    #[cfg(feature = "compiler")]
    pub async fn precompile_for_unikernel(
        component_path: &Path,
        certificates: &[Certificate],
    ) -> Result<Vec<u8>, SandboxError> {
        let compiler = engine::unikernel_compiler()?;
        Self::precompile_with(component_path, certificates, &compiler).await
    }

    /// The snapshot with `certificates`, compiled by `compiler`.
    #[cfg(feature = "compiler")]
    async fn precompile_with(
        component_path: &Path,
        certificates: &[Certificate],
        compiler: &Engine,
    ) -> Result<Vec<u8>, SandboxError> {
        let wasm = read_component(component_path)?;
        if precompiled::body(&wasm).is_some() {
            let source =
                wasmtime::Error::msg("it is precompiled already; give the .wasm it was made from");
            return Err(SandboxError::NotAComponent {
                path: component_path.to_owned(),
                source,
            });
        }
        let limits = Limits::default();
        let linker = linker(&engine::engine(&limits)?)?;
        let keys = Arc::new(Keys::load(certificates)?);
        let state = GuestState::initialising(
            limits.memory_bytes,
            certificates,
            keys,
            Arc::new(TicketKeys::new(TICKET_KEY_ROTATION)),
        );
        let snapshot = snapshot::snapshot(&linker, &wasm, state)
            .await
            .map_err(|source| SandboxError::Snapshot {
                path: component_path.to_owned(),
                source,
            })?;
        let code = compiler.precompile_component(&snapshot).map_err(|source| {
            SandboxError::NotAComponent {
                path: component_path.to_owned(),
                source,
            }
        })?;
        Ok(precompiled::file(certificates, &code))
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
        new_store(
            &self.engine,
            GuestState::serving(
                self.limits.memory_bytes,
                self.keys.clone(),
                self.tickets.clone(),
            ),
        )
    }

    /// What the component serves.
    pub async fn resources(&self) -> Result<Vec<Resource>, SandboxError> {
        let mut store = self.store();
        let site = self.pre.instantiate_async(&mut store).await?;
        Ok(site.tls_site_site_site().call_resources(&mut store).await?)
    }

    /// Serves one accepted connection from a fresh instance of the snapshot, within `timeouts`.
    pub async fn serve_connection(&self, stream: TcpStream, timeouts: Timeouts) -> Report {
        let mut store = self.store();
        let outcome = serve_in(&self.pre, &mut store, stream, timeouts).await;
        Report {
            outcome,
            memory_peak: store.data().memory.peak(),
        }
    }
}

async fn serve_in(
    pre: &TlsSitePre<GuestState>,
    store: &mut Store<GuestState>,
    stream: TcpStream,
    timeouts: Timeouts,
) -> Outcome {
    let site = match pre.instantiate_async(&mut *store).await {
        Ok(site) => site,
        Err(error) if error.is::<wasmtime::Trap>() => {
            return Outcome::Trapped(format!("{error:#}"));
        }
        Err(error) => return Outcome::NoInstance(format!("{error:#}")),
    };
    cpu_deadline(store, timeouts.connection);
    match tokio::time::timeout(timeouts.connection, drive(&site, store, stream, timeouts)).await {
        Ok(Ok(Ok(served))) => Outcome::Served(served),
        Ok(Ok(Err(failure))) => Outcome::Failed(failure),
        Ok(Err(trap)) => Outcome::Trapped(format!("{trap:#}")),
        Err(_elapsed) => Outcome::TimedOut,
    }
}

/// The guest's CPU for one connection: at each epoch tick it runs through it yields to the other
/// connections of its thread (a step takes microseconds, so only a guest stuck computing yields
/// more than now and then), and once `deadline` has passed it traps. A deadline of zero traps
/// at the first check.
fn cpu_deadline(store: &mut Store<GuestState>, deadline: Duration) {
    let until = std::time::Instant::now() + deadline;
    store.epoch_deadline_callback(move |_| match std::time::Instant::now() < until {
        true => Ok(UpdateDeadline::Yield(1)),
        false => Err(wasmtime::Trap::Interrupt.into()),
    });
    store.set_epoch_deadline(u64::from(!deadline.is_zero()));
}

/// The connection's I/O, in this one task: reads the client's bytes and hands them to the guest's
/// `handler.connection`, writes what it answers, and waits as it says, each wait bounded by its
/// deadline (wit/tls-site.wit, `handler`).
pub(crate) async fn drive(
    site: &TlsSite,
    store: &mut Store<GuestState>,
    mut stream: TcpStream,
    timeouts: Timeouts,
) -> wasmtime::Result<Result<Served, Failure>> {
    // Each TLS flight leaves as one write; without this, Nagle and delayed ACKs stall it.
    let _ = stream.set_nodelay(true);
    let handler = site.tls_site_site_handler().connection();
    let connection = match handler.call_open(&mut *store).await? {
        Ok(connection) => connection,
        Err(failure) => return Ok(Err(failure)),
    };
    let handshake_until = Instant::now() + timeouts.handshake;
    let (mut next, mut drain_until, mut write_closed) = (Next::Read, None, false);
    // What went wrong while writing, told to the guest instead of the next wait's event.
    let mut write_failed = None;
    loop {
        let event = match (write_failed.take(), next) {
            (Some(event), _) => event,
            (None, Next::Read) => read(&mut stream, handshake_until).await,
            (None, Next::Write) => Event::Sent,
            (None, Next::Drain | Next::Close) => {
                if next == Next::Close && !write_closed {
                    // The FIN after our last bytes: the client can close, while we still read.
                    let _ = stream.shutdown().await;
                    write_closed = true;
                }
                let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN_TIME);
                read(&mut stream, until).await
            }
            (None, Next::Done) => break,
        };
        let step = handler.call_step(&mut *store, connection, &event).await?;
        if step.next != next {
            drain_until = None;
        }
        next = step.next;
        write_failed = write(&mut stream, &step.send, timeouts.stall).await;
    }
    handler.call_outcome(&mut *store, connection).await
}

/// Writes `bytes` whole; if the client takes none of them for `stall`, or the connection breaks,
/// says so as the guest's event.
async fn write(stream: &mut TcpStream, mut bytes: &[u8], stall: Duration) -> Option<Event> {
    while !bytes.is_empty() {
        match tokio::time::timeout(stall, stream.write(bytes)).await {
            Ok(Ok(0)) => return Some(Event::Broken("the connection took no more bytes".into())),
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(error)) => return Some(Event::Broken(error.to_string())),
            Err(_elapsed) => return Some(Event::Stalled),
        }
    }
    None
}

/// The client's next bytes, as the guest's event: its bytes, its end of stream, or the deadline.
async fn read(stream: &mut TcpStream, until: Instant) -> Event {
    // Read into a buffer of its own, which becomes the event: no copy, no zeroing.
    let mut bytes = Vec::with_capacity(READ_BYTES);
    match tokio::time::timeout_at(until, stream.read_buf(&mut bytes)).await {
        Ok(Ok(0)) => Event::EndOfStream,
        Ok(Ok(_)) => Event::Received(bytes),
        Ok(Err(error)) => Event::Broken(error.to_string()),
        Err(_elapsed) => Event::TimedOut,
    }
}

pub(crate) fn read_component(path: &Path) -> Result<Vec<u8>, SandboxError> {
    std::fs::read(path).map_err(|source| SandboxError::Unreadable {
        path: path.to_owned(),
        source,
    })
}

/// What a guest is linked with: WASI (granted empty) and the host's own interfaces.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    tls_site::site::identity::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |state| state)?;
    tls_site::site::crypto::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |state| state)?;
    tls_site::site::tickets::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |state| state)?;
    portable::tls_site::site::private_keys::add_to_linker::<_, HasSelf<GuestState>>(
        &mut linker,
        |state| state,
    )?;
    Ok(linker)
}

#[cfg(all(test, feature = "compiler"))]
#[path = "../../tests/client.rs"]
mod client;

/// Keyless means the private key is nowhere in the guest's linear memory. A component does not
/// export its memory to the host, so these tests read it as wizer does for a snapshot: wizer
/// instruments the (already initialised) component with exports that return each memory's
/// contents, the instrumented instance serves real connections, and wizer's snapshot of it then
/// holds that memory as data segments, which are searched for the key.
#[cfg(all(test, feature = "compiler"))]
mod tests {
    use super::*;
    use crate::bindings::TlsSite;
    use client::{Trust, config_for_groups, fetch};
    use wasmtime::component::Component;
    use wasmtime_wizer::{WasmtimeWizerComponent, Wizer};

    /// Development certificates for the hosts of `component_path`, made in a directory of their
    /// own for `label` (its CA is `certs::DEV_CA_FILE` there).
    async fn dev_certificates(component_path: &Path, label: &str) -> (PathBuf, Vec<Certificate>) {
        let dir = std::env::temp_dir().join(format!("tls-site-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hosts = crate::inspect::hosts_default_first(
            &crate::inspect::site_resources(component_path, Limits::default())
                .await
                .unwrap(),
        );
        crate::certs::dev_certs(&dir, &hosts).unwrap();
        let certificates = crate::certs::load_dir(&dir).unwrap();
        (dir, certificates)
    }

    /// The component initialised with `certificates` (its snapshot, as `Sandbox::new` makes it),
    /// and what its instances are served with.
    struct Initialised {
        snapshot: Vec<u8>,
        engine: Engine,
        linker: Linker<GuestState>,
        keys: Arc<Keys>,
        tickets: Arc<TicketKeys>,
        limits: Limits,
    }

    impl Initialised {
        async fn new(
            component_path: &Path,
            certificates: &[Certificate],
            limits: Limits,
        ) -> Initialised {
            let engine = engine::engine(&limits).unwrap();
            let linker = linker(&engine).unwrap();
            let keys = Arc::new(Keys::load(certificates).unwrap());
            let tickets = Arc::new(TicketKeys::new(TICKET_KEY_ROTATION));
            let state = GuestState::initialising(
                limits.memory_bytes,
                certificates,
                keys.clone(),
                tickets.clone(),
            );
            let snapshot =
                snapshot::snapshot(&linker, &std::fs::read(component_path).unwrap(), state)
                    .await
                    .unwrap();
            Initialised {
                snapshot,
                engine,
                linker,
                keys,
                tickets,
                limits,
            }
        }

        fn store(&self) -> Store<GuestState> {
            new_store(
                &self.engine,
                GuestState::serving(
                    self.limits.memory_bytes,
                    self.keys.clone(),
                    self.tickets.clone(),
                ),
            )
        }
    }

    /// A real client on a thread of its own, fetching the default page over a new connection
    /// (trusting the development CA in `dir`, offering `groups`): the connection, accepted, and
    /// the client, to be joined with `fetched`.
    async fn client_connection(
        dir: &Path,
        groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
    ) -> (
        TcpStream,
        std::thread::JoinHandle<Result<client::Fetched, String>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ca = dir.join(crate::certs::DEV_CA_FILE);
        let client = std::thread::spawn(move || {
            fetch(
                addr,
                "tls-site.localhost",
                true,
                config_for_groups(Trust::Ca(&ca), groups),
            )
        });
        (listener.accept().await.unwrap().0, client)
    }

    /// What the client of `client_connection` fetched; it must have succeeded.
    async fn fetched(
        client: std::thread::JoinHandle<Result<client::Fetched, String>>,
    ) -> client::Fetched {
        tokio::task::spawn_blocking(move || client.join().unwrap())
            .await
            .unwrap()
            .unwrap()
    }

    fn timeouts(seconds: u64) -> Timeouts {
        let each = Duration::from_secs(seconds);
        Timeouts {
            handshake: each,
            stall: each,
            connection: each,
        }
    }

    /// The component's memory (as a snapshot component) after serving `connections`, and the
    /// private scalar of the P-256 key it served with.
    async fn memory_after_connections(
        component_path: &Path,
        connections: usize,
    ) -> (Vec<u8>, Vec<u8>) {
        let name = component_path.file_stem().unwrap().to_string_lossy();
        let (dir, certificates) = dev_certificates(component_path, &format!("memory-{name}")).await;
        let scalar = p256_scalar(&certificates[0].private_key);

        let initialised = Initialised::new(component_path, &certificates, Limits::default()).await;
        let wizer = Wizer::new();
        let (context, instrumented) = wizer.instrument_component(&initialised.snapshot).unwrap();
        let component = Component::new(&initialised.engine, &instrumented).unwrap();
        let mut store = initialised.store();
        let instance = initialised
            .linker
            .instantiate_async(&mut store, &component)
            .await
            .unwrap();
        let site = TlsSite::new(&mut store, &instance).unwrap();
        for _ in 0..connections {
            // The hybrid group first, as browsers offer it: its secrets pass through the guest too.
            let (stream, client) = client_connection(
                &dir,
                vec![
                    client::X25519MLKEM768,
                    rustls::crypto::ring::kx_group::X25519,
                ],
            )
            .await;
            let served = drive(&site, &mut store, stream, timeouts(60))
                .await
                .unwrap();
            assert!(served.is_ok(), "{served:?}");
            assert_eq!(fetched(client).await.status_line, "HTTP/1.1 200 OK");
        }
        let memory = wizer
            .snapshot_component(
                &context,
                &mut WasmtimeWizerComponent {
                    store: &mut store,
                    instance,
                },
            )
            .await
            .unwrap();
        (memory, scalar)
    }

    /// Instances are reset by hand where the kernel can say which pages were written (engine.rs):
    /// the next instance in a slot must still start from the snapshot, with nothing of the
    /// connection served before it. One slot, so each instance takes the one before's.
    #[test]
    fn the_next_instance_in_a_slot_starts_from_the_snapshot() {
        runtime().block_on(async {
            let (dir, certificates) =
                dev_certificates(Path::new(crate::BUILT_COMPONENT), "reset").await;
            let limits = Limits {
                instances: 1,
                ..Limits::default()
            };
            let initialised =
                Initialised::new(Path::new(crate::BUILT_COMPONENT), &certificates, limits).await;
            let wizer = Wizer::new();
            let (context, instrumented) =
                wizer.instrument_component(&initialised.snapshot).unwrap();
            let component = Component::new(&initialised.engine, &instrumented).unwrap();
            let memory_of_a_new_instance = async || {
                let mut store = initialised.store();
                let instance = initialised
                    .linker
                    .instantiate_async(&mut store, &component)
                    .await
                    .unwrap();
                wizer
                    .snapshot_component(
                        &context,
                        &mut WasmtimeWizerComponent {
                            store: &mut store,
                            instance,
                        },
                    )
                    .await
                    .unwrap()
            };

            let pristine = memory_of_a_new_instance().await;
            {
                let mut store = initialised.store();
                let instance = initialised
                    .linker
                    .instantiate_async(&mut store, &component)
                    .await
                    .unwrap();
                let site = TlsSite::new(&mut store, &instance).unwrap();
                let (stream, client) =
                    client_connection(&dir, vec![rustls::crypto::ring::kx_group::X25519]).await;
                assert!(
                    drive(&site, &mut store, stream, timeouts(60))
                        .await
                        .unwrap()
                        .is_ok()
                );
                fetched(client).await;
                assert_ne!(
                    wizer
                        .snapshot_component(
                            &context,
                            &mut WasmtimeWizerComponent {
                                store: &mut store,
                                instance
                            }
                        )
                        .await
                        .unwrap(),
                    pristine,
                    "serving changed the instance's memory"
                );
            }
            assert!(
                memory_of_a_new_instance().await == pristine,
                "the next instance in the slot kept something of the connection before it"
            );
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    /// A guest that runs through epoch ticks yields and goes on (`cpu_deadline`): only the
    /// connection's deadline in wall-clock time cuts it off, not how many ticks passed. The
    /// epoch here races ahead (the 10 s deadline is 1000 ticks, gone in about a millisecond), so
    /// the guest meets a passed tick at nearly every check and yields each time.
    #[test]
    fn a_guest_yields_at_epoch_ticks_and_is_cut_off_only_by_its_deadline() {
        runtime().block_on(async {
            let (dir, certificates) =
                dev_certificates(Path::new(crate::BUILT_COMPONENT), "yield").await;
            let sandbox = Sandbox::new(
                Path::new(crate::BUILT_COMPONENT),
                &certificates,
                Limits::default(),
            )
            .await
            .unwrap();
            let racing = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let epoch = {
                let (engine, racing) = (sandbox.engine.clone(), racing.clone());
                std::thread::spawn(move || {
                    while racing.load(std::sync::atomic::Ordering::Relaxed) {
                        engine.increment_epoch();
                        for _ in 0..10 {
                            std::hint::spin_loop();
                        }
                    }
                })
            };
            let (stream, client) =
                client_connection(&dir, vec![rustls::crypto::ring::kx_group::X25519]).await;
            let report = sandbox.serve_connection(stream, timeouts(10)).await;
            racing.store(false, std::sync::atomic::Ordering::Relaxed);
            epoch.join().unwrap();
            assert!(
                matches!(report.outcome, Outcome::Served(_)),
                "{:?}",
                report.outcome
            );
            assert_eq!(fetched(client).await.status_line, "HTTP/1.1 200 OK");
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    /// The 32-byte private scalar in a P-256 PKCS#8 key: the OCTET STRING after ECPrivateKey's
    /// version 1 (RFC 5915).
    fn p256_scalar(pkcs8: &[u8]) -> Vec<u8> {
        let at = pkcs8
            .windows(5)
            .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
            .expect("an ECPrivateKey");
        pkcs8[at + 5..at + 37].to_vec()
    }

    /// Whether any 16 consecutive bytes of `secret` are in `memory`, in the key's byte order or
    /// reversed (little-endian limbs).
    fn holds_part_of(memory: &[u8], secret: &[u8]) -> bool {
        let reversed: Vec<u8> = secret.iter().rev().copied().collect();
        [secret, &reversed[..]].iter().any(|bytes| {
            bytes
                .windows(16)
                .any(|part| memory.windows(16).any(|w| w == part))
        })
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Runtime::new().unwrap()
    }

    #[test]
    fn the_keyless_component_never_holds_the_private_key() {
        let (memory, scalar) = runtime().block_on(memory_after_connections(
            Path::new(crate::BUILT_COMPONENT),
            3,
        ));
        assert!(
            memory.len() > 1 << 19,
            "the snapshot holds the site's bytes: {}",
            memory.len()
        );
        assert!(
            !holds_part_of(&memory, &scalar),
            "the private key is in the keyless component's memory"
        );
    }

    /// The check above can fail: the portable component parses the key itself, and it is found.
    #[test]
    fn the_portable_component_does_hold_the_private_key() {
        let (memory, scalar) = runtime().block_on(memory_after_connections(
            Path::new(crate::BUILT_PORTABLE_COMPONENT),
            3,
        ));
        assert!(
            holds_part_of(&memory, &scalar),
            "the portable component's memory should hold its key"
        );
    }
}
