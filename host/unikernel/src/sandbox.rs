//! The site component in the unikernel: wasmtime without std, the component `tls-site compile
//! --unikernel` made (the snapshot initialised with the certificates, compiled ahead for this
//! engine), a fresh instance per connection granted nothing but this host's crypto and tickets,
//! and `handler.connection` driven from a smoltcp socket within the host's deadlines.

use crate::clock::Instant;
use crate::crypto::{self as native, AeadAlgorithm, CryptoError, Group, Keys};
use crate::tickets::TicketKeys;
use alloc::format;
use alloc::string::{String, ToString as _};
use alloc::sync::Arc;
use alloc::vec::Vec;
use smoltcp::socket::tcp;
use tls_site_shared::crypto_bounds::HostObject;
use tls_site_shared::held::Held;
use wasmtime::component::{
    Component, ComponentType, HasSelf, Linker, Lower, Resource, ResourceAny,
};
use wasmtime::{Config, CustomCodeMemory, Engine, Store};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "tls-site",
    imports: { default: trappable },
    with: {
        "tls-site:site/crypto.record-key": crate::crypto::RecordProtection,
        "tls-site:site/crypto.hash-context": crate::crypto::HashContext,
    },
});

use exports::tls_site::site::handler::{Ending, Event, Failure, Next, Request, Served};
use exports::tls_site::site::site::Resource as SiteResource;
use tls_site::site::crypto::{self as wit, Aead, HashAlgorithm, KeyId, NamedGroup};
use tls_site::site::{identity, tickets};

/// The largest read handed to the guest at once: a TLS record of the largest size.
const READ_BYTES: usize = 16 * 1024 + 256;
/// How long the client may take, after the response, to send its Finished and then to close.
const DRAIN_MS: u64 = 1000;
/// The guest's CPU for one connection, in fuel (about one unit per wasm instruction): far more than
/// a handshake and the largest response take, so only a guest stuck computing runs out. There is
/// no timer interrupt to cut it off by the clock, as the host's epoch does.
const CONNECTION_FUEL: u64 = 4_000_000_000;
/// The guest's CPU to list its resources at start.
const START_UP_FUEL: u64 = 1_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the image holds no site: build it with host/vm/build-unikernel")]
    NoSite,
    #[error("wasmtime: {0:?}")]
    Wasmtime(wasmtime::Error),
}

impl From<wasmtime::Error> for SandboxError {
    fn from(error: wasmtime::Error) -> Self {
        SandboxError::Wasmtime(error)
    }
}

/// Deadlines, as the host's defaults (`tls-site serve --help`).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub handshake_ms: u64,
    pub stall_ms: u64,
    pub connection_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        use tls_site_shared::defaults;
        Timeouts {
            handshake_ms: defaults::HANDSHAKE_MS,
            stall_ms: defaults::STALL_MS,
            connection_ms: defaults::CONNECTION_MS,
        }
    }
}

/// What a guest instance is granted.
pub struct GuestState {
    /// Its host objects, memory cap and counts against the crypto bounds.
    held: Held<native::HashContext, native::RecordProtection>,
    keys: Arc<Keys>,
    tickets: Arc<spinning_top::Spinlock<TicketKeys>>,
}

/// The engine and the component, ready to serve.
pub struct Sandbox {
    engine: Engine,
    pre: TlsSitePre<GuestState>,
    keys: Arc<Keys>,
    tickets: Arc<spinning_top::Spinlock<TicketKeys>>,
    memory_bytes: usize,
}

/// Code is run where it was loaded: all memory is mapped writable and executable (boot.rs), so
/// publishing needs nothing; wasmtime calls this instead of changing page protections.
struct IdentityMappedCode;

impl CustomCodeMemory for IdentityMappedCode {
    fn required_alignment(&self) -> usize {
        4096
    }

    fn publish_executable(&self, _ptr: *const u8, _len: usize) -> wasmtime::Result<()> {
        Ok(())
    }

    fn unpublish_executable(&self, _ptr: *const u8, _len: usize) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// `wasi:clocks`' `datetime`.
#[derive(Clone, Copy, ComponentType, Lower)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

/// The clocks the guest's std reads while serving (rustls's ticket times): the wall clock from
/// the RTC and the TSC, the monotonic clock from the TSC. The version is the one the guest's std
/// imports.
fn add_clocks(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    let mut wall = linker.instance("wasi:clocks/wall-clock@0.2.6")?;
    wall.func_wrap("now", |_, ()| {
        let millis = crate::clock::unix_millis();
        Ok((Datetime {
            seconds: millis / 1000,
            nanoseconds: (millis % 1000) as u32 * 1_000_000,
        },))
    })?;
    wall.func_wrap("resolution", |_, ()| {
        Ok((Datetime {
            seconds: 0,
            nanoseconds: 1_000_000,
        },))
    })?;
    let mut monotonic = linker.instance("wasi:clocks/monotonic-clock@0.2.6")?;
    monotonic.func_wrap("now", |_, ()| {
        Ok((Instant::now().millis_since_boot() * 1_000_000,))
    })?;
    monotonic.func_wrap("resolution", |_, ()| Ok((1_000_000u64,)))?;
    Ok(())
}

/// Whether this CPU has `feature` (wasmtime asks for those the code was compiled to use).
fn cpu_has(feature: &str) -> Option<bool> {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    Some(match feature {
        "sse3" => leaf1.ecx & (1 << 0) != 0,
        "ssse3" => leaf1.ecx & (1 << 9) != 0,
        "sse4.1" => leaf1.ecx & (1 << 19) != 0,
        "sse4.2" => leaf1.ecx & (1 << 20) != 0,
        _ => return None,
    })
}

impl Sandbox {
    /// Loads the precompiled site `code` (wasmtime's serialized component, checked against its
    /// digest when the image was built: build.rs), with the private keys `keys` (in `key-id`
    /// order).
    pub fn new(code: &[u8], keys: Keys, memory_bytes: usize) -> Result<Sandbox, SandboxError> {
        if code.is_empty() {
            return Err(SandboxError::NoSite);
        }
        let mut config = Config::new();
        tls_site_shared::unikernel_engine::configure(&mut config);
        config.with_custom_code_memory(Some(Arc::new(IdentityMappedCode)));
        // SAFETY: SSE is enabled at boot (boot.rs) and the unikernel's own code passes no floats
        // to or from the guest, so the hardware float ABI of the compiled code is sound here.
        unsafe { config.x86_float_abi_ok(true) };
        // SAFETY: `cpu_has` answers from CPUID, truthfully.
        unsafe { config.detect_host_feature(cpu_has) };
        let engine = Engine::new(&config)?;
        // SAFETY: the bytes are the image's own, made by `tls-site compile --unikernel` at build
        // time (its magic and checksum checked then); wasmtime checks its version, target and
        // settings before loading.
        let component = unsafe { Component::deserialize(&engine, code) }?;
        let mut linker = Linker::new(&engine);
        TlsSite::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |state| state)?;
        add_clocks(&mut linker)?;
        // The other WASI imports of the guest's std, which this world does not name
        // (environment, stdio, filesystem...): none is called while serving, as the host grants
        // them empty; a call traps and ends that connection alone.
        linker.define_unknown_imports_as_traps(&component)?;
        let pre = TlsSitePre::new(linker.instantiate_pre(&component)?)?;
        Ok(Sandbox {
            engine,
            pre,
            keys: Arc::new(keys),
            tickets: Arc::new(spinning_top::Spinlock::new(TicketKeys::new(
                crate::tickets::TICKET_KEY_ROTATION_MS,
            ))),
            memory_bytes,
        })
    }

    fn store(&self, fuel: u64) -> Store<GuestState> {
        let mut store = Store::new(
            &self.engine,
            GuestState {
                held: Held::new(self.memory_bytes),
                keys: self.keys.clone(),
                tickets: self.tickets.clone(),
            },
        );
        store.limiter(|state| &mut state.held.memory);
        store.set_fuel(fuel).expect("fuel is on in this engine");
        store
    }

    /// What the component serves.
    pub fn resources(&self) -> Result<Vec<SiteResource>, SandboxError> {
        let mut store = self.store(START_UP_FUEL);
        let site = self.pre.instantiate(&mut store)?;
        Ok(site.tls_site_site_site().call_resources(&mut store)?)
    }

    /// A fresh instance for a connection accepted now, waiting for its ClientHello.
    pub fn connection(&self, now: Instant, timeouts: Timeouts) -> Connection {
        let mut store = self.store(CONNECTION_FUEL);
        let state = match self.pre.instantiate(&mut store) {
            Ok(site) => match site
                .tls_site_site_handler()
                .connection()
                .call_open(&mut store)
            {
                Ok(Ok(handle)) => Ok((site, handle)),
                Ok(Err(failure)) => Err(Outcome::Failed(failure)),
                Err(trap) => Err(Outcome::Trapped(format!("{trap:?}"))),
            },
            Err(error) => Err(Outcome::NoInstance(format!("{error:?}"))),
        };
        Connection {
            store,
            state: Some(state),
            next: Next::Read,
            pending: Vec::new(),
            sent: 0,
            last_progress: now,
            handshake_until: now.plus_millis(timeouts.handshake_ms),
            drain_until: None,
            until: now.plus_millis(timeouts.connection_ms),
            write_closed: false,
            write_failed: None,
            timeouts,
        }
    }
}

/// How one connection ended.
#[derive(Debug)]
pub enum Outcome {
    Served(Served),
    Failed(Failure),
    /// The guest trapped (a bug, or its fuel ran out); only this connection is lost.
    Trapped(String),
    /// The client took longer than the connection deadline.
    TimedOut,
    /// No instance could be made (out of memory).
    NoInstance(String),
}

impl Outcome {
    /// What the access log's counts count it as.
    pub fn event(&self) -> tls_site_shared::stats::Event {
        use tls_site_shared::stats::Event;
        match self {
            Outcome::Served(_) => Event::Served,
            Outcome::Failed(Failure::Tls(_)) => Event::TlsFailed,
            Outcome::Failed(Failure::Io(_)) => Event::IoFailed,
            Outcome::Failed(Failure::NotInitialised) => Event::NotInitialised,
            Outcome::Failed(Failure::HandshakeTimeout) => Event::HandshakeTimeout,
            Outcome::Failed(Failure::Stalled) => Event::Stalled,
            Outcome::Trapped(_) => Event::Trapped,
            Outcome::TimedOut => Event::TimedOut,
            Outcome::NoInstance(_) => Event::NoInstance,
        }
    }
}

/// One connection in flight: its instance and where its exchange stands.
pub struct Connection {
    store: Store<GuestState>,
    /// The instance and its `handler.connection`, or why there is none.
    state: Option<Result<(TlsSite, ResourceAny), Outcome>>,
    next: Next,
    /// The bytes of the last step still to be sent, and how many have been.
    pending: Vec<u8>,
    sent: usize,
    /// When the client last took some of `pending`.
    last_progress: Instant,
    handshake_until: Instant,
    drain_until: Option<Instant>,
    until: Instant,
    write_closed: bool,
    /// What went wrong while writing, told to the guest instead of the next wait's event.
    write_failed: Option<Event>,
    timeouts: Timeouts,
}

impl Connection {
    /// The most linear memory the instance has used.
    pub fn memory_peak(&self) -> usize {
        self.store.data().held.memory.peak()
    }

    /// Moves the exchange on as far as `socket` allows now: the outcome once it is over.
    pub fn advance(&mut self, socket: &mut tcp::Socket<'_>, now: Instant) -> Option<Outcome> {
        let (site, handle) = match self.state.take()? {
            Ok(running) => running,
            Err(outcome) => {
                socket.abort();
                return Some(outcome);
            }
        };
        match self.advance_running(&site, handle, socket, now) {
            Ok(None) => {
                self.state = Some(Ok((site, handle)));
                None
            }
            Ok(Some(outcome)) => Some(outcome),
            Err(trap) => {
                socket.abort();
                Some(Outcome::Trapped(format!("{trap:?}")))
            }
        }
    }

    fn advance_running(
        &mut self,
        site: &TlsSite,
        handle: ResourceAny,
        socket: &mut tcp::Socket<'_>,
        now: Instant,
    ) -> wasmtime::Result<Option<Outcome>> {
        let handler = site.tls_site_site_handler().connection();
        loop {
            if now >= self.until {
                socket.abort();
                return Ok(Some(Outcome::TimedOut));
            }
            if !self.flush(socket, now) {
                return Ok(None);
            }
            let event = match (self.write_failed.take(), self.next) {
                (Some(event), _) => event,
                (None, Next::Read) => match read(socket, self.handshake_until, now) {
                    Some(event) => event,
                    None => return Ok(None),
                },
                (None, Next::Write) => Event::Sent,
                (None, Next::Drain | Next::Close) => {
                    if self.next == Next::Close && !self.write_closed {
                        // The FIN after our last bytes: the client can close, while we still read.
                        socket.close();
                        self.write_closed = true;
                    }
                    let until = *self
                        .drain_until
                        .get_or_insert_with(|| now.plus_millis(DRAIN_MS));
                    match read(socket, until, now) {
                        Some(event) => event,
                        None => return Ok(None),
                    }
                }
                (None, Next::Done) => {
                    let outcome = handler.call_outcome(&mut self.store, handle)?;
                    socket.close();
                    return Ok(Some(match outcome {
                        Ok(served) => Outcome::Served(served),
                        Err(failure) => Outcome::Failed(failure),
                    }));
                }
            };
            let step = handler.call_step(&mut self.store, handle, &event)?;
            if step.next != self.next {
                self.drain_until = None;
            }
            self.next = step.next;
            self.pending = step.send;
            self.sent = 0;
            self.last_progress = now;
        }
    }

    /// Sends what is pending, as far as the socket takes it: whether all of it is gone (or the
    /// failure to send it is noted for the guest).
    fn flush(&mut self, socket: &mut tcp::Socket<'_>, now: Instant) -> bool {
        if self.sent == self.pending.len() {
            return true;
        }
        if !socket.may_send() {
            self.write_failed = Some(Event::Broken("the connection took no more bytes".into()));
        } else {
            match socket.send_slice(&self.pending[self.sent..]) {
                Ok(0) => {}
                Ok(sent) => {
                    self.sent += sent;
                    self.last_progress = now;
                }
                Err(error) => self.write_failed = Some(Event::Broken(error.to_string())),
            }
            if self.write_failed.is_none() && self.sent < self.pending.len() {
                if now.millis_since(self.last_progress) < self.timeouts.stall_ms {
                    return false;
                }
                self.write_failed = Some(Event::Stalled);
            }
        }
        self.pending.clear();
        self.sent = 0;
        true
    }
}

/// The client's next bytes as the guest's event, its end of stream, or the deadline; `None` if
/// there is nothing yet.
fn read(socket: &mut tcp::Socket<'_>, until: Instant, now: Instant) -> Option<Event> {
    if socket.can_recv() {
        let mut bytes = alloc::vec![0; READ_BYTES.min(socket.recv_queue())];
        let read = socket.recv_slice(&mut bytes).unwrap_or(0);
        bytes.truncate(read);
        return Some(Event::Received(bytes));
    }
    if !socket.may_recv() && socket.state() != tcp::State::SynReceived {
        return Some(Event::EndOfStream);
    }
    (now >= until).then_some(Event::TimedOut)
}

/// A request as the host's line has it: `request="GET / HTTP/1.1" ua="curl/8.5.0"`, `-` for what
/// the client did not send (the guest has escaped `"` in them).
struct RequestFields<'a>(Option<&'a Request>);

impl core::fmt::Display for RequestFields<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Some(request) = self.0 else {
            return f.write_str("request=- ua=-");
        };
        write!(
            f,
            "request=\"{} {} {}\" ",
            request.method, request.target, request.version
        )?;
        match &request.user_agent {
            Some(agent) => write!(f, "ua=\"{agent}\""),
            None => f.write_str("ua=-"),
        }
    }
}

/// The access log's line for an HTTPS connection, as the host writes it (host/src/access_log.rs,
/// `https_line`).
pub fn https_line(
    peer: impl core::fmt::Display,
    timeouts: &Timeouts,
    outcome: &Outcome,
    memory_peak: usize,
) -> String {
    let seconds = |ms: u64| ms as f64 / 1000.0;
    let line = match outcome {
        Outcome::Served(served) => format!(
            "https {peer} sni={} resource={} bytes={} kx={} {} ok{}{}",
            served.server_name.as_deref().unwrap_or("-"),
            served.resource,
            served.bytes,
            served.key_exchange.as_deref().unwrap_or("-"),
            RequestFields(served.request.as_ref()),
            if served.client_finished {
                ""
            } else {
                " (client did not finish its handshake)"
            },
            match served.ending {
                Ending::Clean => "",
                Ending::TimedOut => " (client did not close within the drain's second)",
                Ending::CutOff =>
                    " (client cut off: it sent more than the drain's 256 KiB after the response, and got a reset)",
            },
        ),
        Outcome::Failed(Failure::Tls(why)) => format!("https {peer} failed tls: {why}"),
        Outcome::Failed(Failure::Io(why)) => format!("https {peer} failed io: {why}"),
        Outcome::Failed(Failure::NotInitialised) => {
            format!("https {peer} failed: component not initialised")
        }
        Outcome::Failed(Failure::HandshakeTimeout) => format!(
            "https {peer} timed out: no whole ClientHello within {} s (--handshake-timeout)",
            seconds(timeouts.handshake_ms)
        ),
        Outcome::Failed(Failure::Stalled) => format!(
            "https {peer} stalled: the client took none of the response for {} s (--stall-timeout)",
            seconds(timeouts.stall_ms)
        ),
        Outcome::Trapped(why) => format!("https {peer} trapped: {}", why.replace('\n', " | ")),
        Outcome::TimedOut => format!(
            "https {peer} timed out: connection not done within {} s (--timeout)",
            seconds(timeouts.connection_ms)
        ),
        Outcome::NoInstance(why) => format!("https {peer} refused: no instance: {why}"),
    };
    format!("{line} mem={}KiB", memory_peak >> 10)
}

impl identity::Host for GuestState {
    /// Only `initialise` asks, and it ran at build time (the snapshot): nothing to give now, as
    /// the host gives nothing to a serving instance.
    fn certificates(&mut self) -> wasmtime::Result<Vec<identity::Certificate>> {
        Ok(Vec::new())
    }
}

impl From<CryptoError> for wit::CryptoError {
    fn from(error: CryptoError) -> wit::CryptoError {
        match error {
            CryptoError::UnknownKey(key) => wit::CryptoError::UnknownKey(key),
            CryptoError::Unsupported(why) => wit::CryptoError::Unsupported(why),
            CryptoError::Rejected(why) => wit::CryptoError::Rejected(why),
        }
    }
}

impl From<HashAlgorithm> for native::HashAlgorithm {
    fn from(algorithm: HashAlgorithm) -> native::HashAlgorithm {
        match algorithm {
            HashAlgorithm::Sha256 => native::HashAlgorithm::Sha256,
            HashAlgorithm::Sha384 => native::HashAlgorithm::Sha384,
        }
    }
}

impl wit::Host for GuestState {
    fn signature_schemes(&mut self, key: KeyId) -> wasmtime::Result<Vec<u16>> {
        self.held.call()?;
        Ok(self.keys.signature_schemes(key))
    }

    /// One signature per connection, as a handshake signs once: a second traps the instance.
    fn sign_certificate_verify(
        &mut self,
        key: KeyId,
        scheme: u16,
        transcript_hash: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::CryptoError>> {
        self.held.bounds.sign()?;
        Ok(self
            .keys
            .sign_certificate_verify(key, scheme, &transcript_hash)
            .map_err(Into::into))
    }

    fn named_groups(&mut self) -> wasmtime::Result<Vec<NamedGroup>> {
        self.held.call()?;
        Ok(native::GROUPS
            .iter()
            .map(|group| match group {
                Group::X25519MlKem768 => NamedGroup::X25519Mlkem768,
                Group::X25519 => NamedGroup::X25519,
                Group::Secp256r1 => NamedGroup::Secp256r1,
            })
            .collect())
    }

    fn encapsulate(
        &mut self,
        group: NamedGroup,
        client_share: Vec<u8>,
    ) -> wasmtime::Result<Result<wit::Encapsulated, wit::CryptoError>> {
        self.held.call()?;
        let group = match group {
            NamedGroup::X25519Mlkem768 => Group::X25519MlKem768,
            NamedGroup::X25519 => Group::X25519,
            NamedGroup::Secp256r1 => Group::Secp256r1,
            NamedGroup::Secp384r1 => {
                return Ok(Err(wit::CryptoError::Unsupported(
                    "secp384r1 is not offered by the unikernel".into(),
                )));
            }
        };
        Ok(native::encapsulate(group, &client_share)
            .map(|done| wit::Encapsulated {
                share: done.share,
                shared_secret: done.shared_secret,
            })
            .map_err(Into::into))
    }

    fn hash(&mut self, algorithm: HashAlgorithm, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        self.held.call()?;
        Ok(native::hash(algorithm.into(), &data))
    }

    fn hmac(
        &mut self,
        algorithm: HashAlgorithm,
        key: Vec<u8>,
        message: Vec<u8>,
    ) -> wasmtime::Result<Vec<u8>> {
        self.held.call()?;
        Ok(native::hmac(algorithm.into(), &key, &message))
    }
}

impl wit::HostHashContext for GuestState {
    fn new(&mut self, algorithm: HashAlgorithm) -> wasmtime::Result<Resource<native::HashContext>> {
        self.held.call()?;
        self.held.hold(
            HostObject::HashContext,
            native::HashContext::new(algorithm.into()),
        )
    }

    fn digest(
        &mut self,
        context: Resource<native::HashContext>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Vec<u8>> {
        self.held.call()?;
        Ok(self.held.table.get_mut(&context)?.digest(&data))
    }

    fn fork(
        &mut self,
        context: Resource<native::HashContext>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<native::HashContext>> {
        self.held.call()?;
        let fork = self.held.table.get_mut(&context)?.fork(&data);
        self.held.hold(HostObject::HashContext, fork)
    }

    fn finish(
        &mut self,
        context: Resource<native::HashContext>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Vec<u8>> {
        self.held.call()?;
        Ok(self
            .held
            .release(HostObject::HashContext, context)?
            .finish(&data))
    }

    fn drop(&mut self, context: Resource<native::HashContext>) -> wasmtime::Result<()> {
        self.held.release(HostObject::HashContext, context)?;
        Ok(())
    }
}

impl wit::HostRecordKey for GuestState {
    fn new(
        &mut self,
        algorithm: Aead,
        key: Vec<u8>,
    ) -> wasmtime::Result<Result<Resource<native::RecordProtection>, wit::CryptoError>> {
        self.held.call()?;
        let algorithm = match algorithm {
            Aead::Aes128Gcm => AeadAlgorithm::Aes128Gcm,
            Aead::Aes256Gcm => AeadAlgorithm::Aes256Gcm,
            Aead::Chacha20Poly1305 => AeadAlgorithm::Chacha20Poly1305,
        };
        match native::RecordProtection::new(algorithm, &key) {
            Ok(protection) => Ok(Ok(self.held.hold(HostObject::RecordKey, protection)?)),
            Err(error) => Ok(Err(error.into())),
        }
    }

    fn seal(
        &mut self,
        key: Resource<native::RecordProtection>,
        nonce: Vec<u8>,
        aad: Vec<u8>,
        plaintext: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::CryptoError>> {
        self.held.call()?;
        Ok(self
            .held
            .table
            .get(&key)?
            .seal(&nonce, &aad, plaintext)
            .map_err(Into::into))
    }

    fn open(
        &mut self,
        key: Resource<native::RecordProtection>,
        nonce: Vec<u8>,
        aad: Vec<u8>,
        sealed: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::CryptoError>> {
        self.held.call()?;
        Ok(self
            .held
            .table
            .get(&key)?
            .open(&nonce, &aad, sealed)
            .map_err(Into::into))
    }

    fn drop(&mut self, key: Resource<native::RecordProtection>) -> wasmtime::Result<()> {
        self.held.release(HostObject::RecordKey, key)?;
        Ok(())
    }
}

impl tickets::Host for GuestState {
    fn seal(&mut self, state: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.held.call()?;
        Ok(self.tickets.lock().seal(&state))
    }

    fn open(&mut self, ticket: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.held.call()?;
        Ok(self.tickets.lock().open(&ticket))
    }

    fn lifetime_seconds(&mut self) -> wasmtime::Result<u32> {
        self.held.call()?;
        Ok(self.tickets.lock().lifetime_seconds())
    }
}

impl wasi::random::random::Host for GuestState {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        // A guest asking for more than a record's worth is not TLS: refused by a trap.
        if len > 1 << 16 {
            wasmtime::bail!("get-random-bytes: {len} bytes asked for");
        }
        let mut bytes = alloc::vec![0; len as usize];
        crate::entropy::fill(&mut bytes);
        Ok(bytes)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(crate::entropy::next_u64().expect("RDRAND stopped answering"))
    }
}
