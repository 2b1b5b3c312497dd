//! Serving a connection: a fresh instance of the initialised component (made at start-up by
//! `snapshot.rs`, or loaded from `tls-site compile`'s file) per connection, granted nothing but
//! the host's crypto (`guest_state.rs`); the host reads and writes the socket, the instance's
//! `handler.connection` says what to send and what to wait for, within the deadlines.

pub use crate::bindings::{Ending, Failure, Resource, Served};
use crate::bindings::{TlsSitePre, portable, tls_site};
use crate::certs::Certificate;
use crate::crypto::{Keys, UnusableKey};
use crate::engine::{self, Limits};
use crate::guest_state::{GuestState, new_store};
use crate::metrics::CertificateExpiry;
pub use crate::options::Timeouts;
use crate::precompiled::{self, PrecompiledError};
#[cfg(feature = "compiler")]
use crate::snapshot::{self, SnapshotError};
use crate::tickets::{TICKET_KEY_ROTATION, TicketKeys};
use drive::drive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

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
    #[error(
        "{path}: the site's memory starts larger than `--instance-memory` lets an instance have ({limit_mib} MiB); its files live in that memory: raise `--instance-memory` to the site's size and a few MiB more: {source:#}"
    )]
    InstanceMemory {
        path: PathBuf,
        limit_mib: usize,
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

/// What one connection came to, and the most linear memory its instance used.
#[derive(Debug)]
pub struct Report {
    pub outcome: Outcome,
    pub memory_peak: usize,
    pub milestones: Milestones,
}

/// When a connection got where, for the metrics' histograms.
#[derive(Clone, Copy, Debug, Default)]
pub struct Milestones {
    /// The flight that carries the response (the server's handshake and the response's first
    /// bytes, in one write) had left.
    pub response_sent: Option<std::time::Instant>,
    /// The guest had the client's Finished and began to close. It reads the Finished only once
    /// the response has left, so for a response of more than one write this is after it all.
    pub client_finished: Option<std::time::Instant>,
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
    /// The SHA-256 of the component's file, lower-case hex: what the metrics say is served.
    component_sha256: String,
    /// The certificates it serves: their names and when each expires, for the metrics.
    certificates: Vec<CertificateExpiry>,
}

impl SandboxError {
    /// `error` as `InstanceMemory` if wasmtime refused the component because its memory starts
    /// larger than `limits` allow (it says so only in its message), else as `otherwise` has it.
    fn or_instance_memory(
        path: &Path,
        limits: &Limits,
        error: wasmtime::Error,
        otherwise: impl FnOnce(wasmtime::Error) -> SandboxError,
    ) -> SandboxError {
        let too_large = error.chain().any(|cause| {
            cause
                .to_string()
                .contains("does not fit in pooling allocator requirements")
        });
        match too_large {
            true => SandboxError::InstanceMemory {
                path: path.to_owned(),
                limit_mib: limits.memory_bytes >> 20,
                source: error,
            },
            false => otherwise(error),
        }
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
        let engine = engine::engine(&limits)?;
        let tickets = Arc::new(TicketKeys::new(TICKET_KEY_ROTATION));
        Sandbox::on_engine(engine, limits, tickets, component_path, certificates).await
    }

    /// A sandbox for another component or other certificates (a reload, a renewal), on this one's
    /// engine: its pool of instances, its epoch clock and its limits are shared, so the
    /// connections still on this sandbox and those on the next count against one cap. The
    /// session-ticket keys carry over, so returning clients still resume.
    pub async fn successor(
        &self,
        component_path: &Path,
        certificates: &[Certificate],
    ) -> Result<Sandbox, SandboxError> {
        Sandbox::on_engine(
            self.engine.clone(),
            self.limits.clone(),
            self.tickets.clone(),
            component_path,
            certificates,
        )
        .await
    }

    async fn on_engine(
        engine: Engine,
        limits: Limits,
        tickets: Arc<TicketKeys>,
        component_path: &Path,
        certificates: &[Certificate],
    ) -> Result<Sandbox, SandboxError> {
        let file = read_component(component_path)?;
        let component_sha256 = ring::digest::digest(&ring::digest::SHA256, &file)
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let linker = linker(&engine)?;
        let keys = Arc::new(Keys::load(certificates)?);

        let component = match precompiled::body(&file) {
            Some(body) => {
                precompiled::load(&engine, body, Some(certificates)).map_err(|source| {
                    let precompiled = |source| SandboxError::Precompiled {
                        path: component_path.to_owned(),
                        source,
                    };
                    match source {
                        PrecompiledError::Elsewhere(error) => SandboxError::or_instance_memory(
                            component_path,
                            &limits,
                            error,
                            |error| precompiled(PrecompiledError::Elsewhere(error)),
                        ),
                        source => precompiled(source),
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
                let snapshot = snapshot::snapshot(&linker, &file, state).await.map_err(
                    |source| match source {
                        SnapshotError::NotAComponent(error) => SandboxError::or_instance_memory(
                            component_path,
                            &limits,
                            error,
                            |error| SandboxError::Snapshot {
                                path: component_path.to_owned(),
                                source: SnapshotError::NotAComponent(error),
                            },
                        ),
                        source => SandboxError::Snapshot {
                            path: component_path.to_owned(),
                            source,
                        },
                    },
                )?;
                wasmtime::component::Component::new(&engine, &snapshot).map_err(|source| {
                    SandboxError::or_instance_memory(component_path, &limits, source, |source| {
                        SandboxError::NotAComponent {
                            path: component_path.to_owned(),
                            source,
                        }
                    })
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
            component_sha256,
            certificates: certificates
                .iter()
                .map(|certificate| CertificateExpiry::of(&certificate.names, &certificate.chain))
                .collect(),
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
        let limits = Limits::one_off();
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

    /// The SHA-256 of the component's file (the `.wasm`, or `tls-site compile`'s file), hex.
    pub fn component_sha256(&self) -> &str {
        &self.component_sha256
    }

    /// The certificates it serves.
    pub fn certificates(&self) -> &[CertificateExpiry] {
        &self.certificates
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
        self.serve_connection_read(stream, Vec::new(), timeouts)
            .await
    }

    /// As `serve_connection`, for a connection whose `first_bytes` were read already
    /// (admission.rs): they are the instance's first event.
    pub async fn serve_connection_read(
        &self,
        stream: TcpStream,
        first_bytes: Vec<u8>,
        timeouts: Timeouts,
    ) -> Report {
        let mut store = self.store();
        let mut milestones = Milestones::default();
        let connection = Accepted {
            stream,
            first_bytes,
        };
        let outcome = serve_in(&self.pre, &mut store, connection, timeouts, &mut milestones).await;
        Report {
            outcome,
            memory_peak: store.data().held.memory.peak(),
            milestones,
        }
    }
}

/// An accepted connection, and what was read from it before its instance.
pub(crate) struct Accepted {
    pub stream: TcpStream,
    pub first_bytes: Vec<u8>,
}

async fn serve_in(
    pre: &TlsSitePre<GuestState>,
    store: &mut Store<GuestState>,
    connection: Accepted,
    timeouts: Timeouts,
    milestones: &mut Milestones,
) -> Outcome {
    let site = match pre.instantiate_async(&mut *store).await {
        Ok(site) => site,
        Err(error) if error.is::<wasmtime::Trap>() => {
            return Outcome::Trapped(format!("{error:#}"));
        }
        Err(error) => return Outcome::NoInstance(format!("{error:#}")),
    };
    cpu_deadline(store, timeouts.connection);
    let driven = drive(&site, store, connection, timeouts, milestones);
    match tokio::time::timeout(timeouts.connection, driven).await {
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

/// The tests' TLS client (the top-level tests/client.rs), for this module's tests and
/// guest_state.rs's: loaded once.
mod drive;

#[cfg(test)]
#[path = "../../tests/client.rs"]
pub(crate) mod client;

/// Keyless, proven: the private key is nowhere in the guest's linear memory.
#[cfg(all(test, feature = "compiler"))]
mod tests;
