//! The tls-site component: the WIT exports over the library, the `wasi:io` streams as its
//! [`Transport`], and the one place where the library's types become the WIT's.
//!
//! Built by default for world `tls-site` (keyless: the host's crypto, `host_crypto.rs`), or with
//! the feature `portable` for world `tls-site-portable` (pure-Rust crypto, private keys read at
//! initialisation). The crypto below is the only difference.

use crate::config::{ConfigError, Identity, SniTable};
use crate::connection::{self, Drained, Ending, Failure, READ_CHUNK, Served, Transport};
use bindings::exports::tls_site::site::handler::{self, Deadlines};
use bindings::exports::tls_site::site::site as site_export;
use bindings::wasi::clocks::monotonic_clock;
use bindings::wasi::io::poll;
use bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};
use bindings::{InitError, tls_site::site::identity};
use rustls::pki_types::CertificateDer;
use site::SITE;
use std::sync::{Arc, OnceLock};

pub(crate) mod bindings {
    #[cfg(not(feature = "portable"))]
    wit_bindgen::generate!({
        path: "../../wit",
        world: "tls-site",
        generate_all,
    });
    #[cfg(feature = "portable")]
    wit_bindgen::generate!({
        path: "../../wit",
        world: "tls-site-portable",
        generate_all,
    });
}

static TABLE: OnceLock<SniTable> = OnceLock::new();

struct Component;

impl bindings::Guest for Component {
    fn initialise() -> Result<(), InitError> {
        let identities = identity::certificates()
            .into_iter()
            .map(|certificate| {
                let key = crypto::signing_key(certificate.key)
                    .map_err(|why| ConfigError::BadKey { names: certificate.names.clone(), why })?;
                let chain = certificate.chain.into_iter().map(CertificateDer::from).collect();
                Ok(Identity { chain, names: certificate.names, key })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let table = SniTable::new(&SITE, identities, Arc::new(crypto::provider()), crypto::ticketer())?;
        // A second call keeps the first table: the snapshot has already been taken.
        let _ = TABLE.set(table);
        Ok(())
    }
}

impl site_export::Guest for Component {
    fn resources() -> Vec<site_export::Resource> {
        SITE.responses()
            .iter()
            .map(|response| site_export::Resource {
                hosts: response.hosts().iter().map(|host| host.to_string()).collect(),
                content_type: response.content_type().to_owned(),
                bytes: response.body().len() as u64,
                sha256: response.sha256().to_owned(),
                is_default: response.is_default(),
            })
            .collect()
    }
}

impl handler::Guest for Component {
    fn handle(input: InputStream, output: OutputStream, deadlines: Deadlines) -> Result<handler::Served, handler::Failure> {
        let table = TABLE.get().ok_or(handler::Failure::NotInitialised)?;
        let read_until = monotonic_clock::now().saturating_add(deadlines.handshake);
        let mut streams = WasiStreams { input: &input, output: Some(output), read_until, stall: deadlines.stall };
        Ok(connection::serve(table, &mut streams)?.into())
    }
}

bindings::export!(Component with_types_in bindings);

impl From<ConfigError> for InitError {
    fn from(error: ConfigError) -> Self {
        match error {
            ConfigError::BadKey { names, why } => InitError::BadKey(format!("certificate for {}: {why}", names.join(", "))),
            ConfigError::NoDefaultCertificate(host) => InitError::NoDefaultCertificate(host),
            ConfigError::UncoveredHosts(hosts) => InitError::UncoveredHosts(hosts),
        }
    }
}

impl From<Served> for handler::Served {
    fn from(served: Served) -> Self {
        handler::Served {
            server_name: served.server_name,
            resource: served.resource.to_owned(),
            bytes: served.bytes,
            client_finished: served.client_finished,
            key_exchange: served.key_exchange.map(|group| format!("{group:?}")),
            ending: match served.ending {
                Ending::Clean => handler::Ending::Clean,
                Ending::TimedOut => handler::Ending::TimedOut,
                Ending::CutOff => handler::Ending::CutOff,
            },
        }
    }
}

impl From<Failure> for handler::Failure {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Tls(error) => handler::Failure::Tls(error.to_string()),
            Failure::Io(why) => handler::Failure::Io(why),
            Failure::HandshakeTimeout => handler::Failure::HandshakeTimeout,
            Failure::Stalled => handler::Failure::Stalled,
        }
    }
}

/// The crypto of world `tls-site`: the host's, keyless, with its session tickets.
#[cfg(not(feature = "portable"))]
mod crypto {
    pub use crate::host_crypto::{provider, signing_key, ticketer};
}

/// The crypto of world `tls-site-portable`: pure Rust, with the private keys read from the host.
#[cfg(feature = "portable")]
mod crypto {
    use super::bindings::tls_site::site::identity::KeyId;
    use super::bindings::tls_site::site::private_keys::{self, KeyFormat};
    pub use crate::portable::provider;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
    use rustls::server::ProducesTickets;
    use rustls::sign::SigningKey;
    use std::sync::Arc;

    /// The private key the host names `key`, read from the host and parsed here.
    pub fn signing_key(key: KeyId) -> Result<Arc<dyn SigningKey>, String> {
        let private = private_keys::private_key(key).ok_or_else(|| format!("the host gave no private key {key}"))?;
        crate::portable::load_private_key(match private.format {
            KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(private.der)),
            KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(private.der)),
            KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(private.der)),
        })
        .map_err(|error| error.to_string())
    }

    /// No resumption: ticket keys made inside the component would be frozen into the snapshot,
    /// never rotated.
    pub fn ticketer() -> Option<Arc<dyn ProducesTickets>> {
        None
    }
}

/// The component's transport: the two streams of the connection the host accepted, and how long
/// the client may keep the guest waiting.
struct WasiStreams<'a> {
    input: &'a InputStream,
    /// Dropped by `close_write`: the host then ends the connection's write side (its FIN).
    output: Option<OutputStream>,
    /// When `read` gives up on the client: the end of its time to send a handshake.
    read_until: monotonic_clock::Instant,
    /// How long `write_all` waits for the client to take more of the response.
    stall: monotonic_clock::Duration,
}

impl Transport for WasiStreams<'_> {
    fn read(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        let readable = self.input.subscribe();
        let timeout = monotonic_clock::subscribe_instant(self.read_until);
        loop {
            match self.input.read(READ_CHUNK) {
                Ok(bytes) if bytes.is_empty() => {}
                Ok(bytes) => return Ok(Some(bytes)),
                Err(StreamError::Closed) => return Ok(None),
                Err(StreamError::LastOperationFailed(error)) => return Err(Failure::Io(error.to_debug_string())),
            }
            if !poll::poll(&[&readable, &timeout]).contains(&0) {
                return Err(Failure::HandshakeTimeout);
            }
        }
    }

    fn write_all(&mut self, mut rest: &[u8]) -> Result<(), Failure> {
        let output = self.output()?;
        while !rest.is_empty() {
            let room = output.check_write().map_err(stream_failure)?;
            if room == 0 {
                self.wait_until_writable()?;
                continue;
            }
            let (now, later) = rest.split_at(rest.len().min(room as usize));
            output.write(now).map_err(stream_failure)?;
            rest = later;
        }
        // As `blocking-flush`, with the stall bound: the stream is writable again once the bytes
        // have left.
        output.flush().map_err(stream_failure)?;
        self.wait_until_writable()?;
        output.check_write().map(|_| ()).map_err(stream_failure)
    }

    fn close_write(&mut self) {
        // Every write above waited until its bytes had left, so none is lost.
        self.output = None;
    }

    fn drain(&mut self, max_bytes: usize, max_nanos: u64, each: &mut dyn FnMut(&[u8]) -> bool) -> Drained {
        let timeout = monotonic_clock::subscribe_duration(max_nanos);
        let readable = self.input.subscribe();
        let mut drained = 0;
        while drained < max_bytes {
            let ready = poll::poll(&[&readable, &timeout]);
            if !ready.contains(&0) {
                return Drained::TimeBound;
            }
            match self.input.read(READ_CHUNK) {
                Ok(bytes) => {
                    drained += bytes.len();
                    if !each(&bytes) {
                        return Drained::Done;
                    }
                }
                Err(_) => return Drained::Closed,
            }
        }
        Drained::BytesBound
    }
}

impl WasiStreams<'_> {
    fn output(&self) -> Result<&OutputStream, Failure> {
        self.output.as_ref().ok_or_else(|| Failure::Io("written after the end of the stream".into()))
    }

    /// Waits for the client to take bytes, at most `stall`.
    fn wait_until_writable(&self) -> Result<(), Failure> {
        let writable = self.output()?.subscribe();
        let timeout = monotonic_clock::subscribe_duration(self.stall);
        match poll::poll(&[&writable, &timeout]).contains(&0) {
            true => Ok(()),
            false => Err(Failure::Stalled),
        }
    }
}

fn stream_failure(error: StreamError) -> Failure {
    match error {
        StreamError::Closed => Failure::Io("the client closed the connection".into()),
        StreamError::LastOperationFailed(error) => Failure::Io(error.to_debug_string()),
    }
}
