//! The tls-site component: the WIT exports over the library (the `handler.connection` resource is
//! a [`Connection`]), and the one place where the library's types become the WIT's.
//!
//! Built by default for world `tls-site` (keyless: the host's crypto, `host_crypto.rs`), or with
//! the feature `portable` for world `tls-site-portable` (pure-Rust crypto, private keys read at
//! initialisation). The crypto below is the only difference.

use crate::config::{ConfigError, Identity, SniTable};
use crate::connection::{Connection, Ending, Event, Failure, Next, Served};
use bindings::exports::tls_site::site::handler;
use bindings::exports::tls_site::site::site as site_export;
use bindings::{InitError, tls_site::site::identity};
use rustls::pki_types::CertificateDer;
use site::SITE;
use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

/// The bindings of world `tls-site` (or `tls-site-portable`), generated ahead of time from wit/ as
/// `wit_bindgen::generate!({ path: "../../wit", world, generate_all })` would, and checked in, so
/// that the component's tree has no macro toolchain; tests/bindings.rs checks them against wit/ and
/// refreshes them: `TLS_SITE_BLESS=1 cargo test -p tls-site-guest bindings`. Not for rustfmt: the
/// test compares them with the generator's output.
#[cfg(not(feature = "portable"))]
#[rustfmt::skip]
#[path = "bindings/tls_site.rs"]
pub(crate) mod bindings;
#[cfg(feature = "portable")]
#[rustfmt::skip]
#[path = "bindings/tls_site_portable.rs"]
pub(crate) mod bindings;

static TABLE: OnceLock<SniTable> = OnceLock::new();

/// More than a connection allocates at most: a PDF's connection peaks some 150 KiB above the
/// snapshot (its rustls buffers, the flight of records).
const CONNECTION_HEAP: usize = 512 * 1024;

struct Component;

impl bindings::Guest for Component {
    fn initialise() -> Result<(), InitError> {
        let identities = identity::certificates()
            .into_iter()
            .map(|certificate| {
                let key =
                    crypto::signing_key(certificate.key).map_err(|why| ConfigError::BadKey {
                        names: certificate.names.clone(),
                        why,
                    })?;
                let chain = certificate
                    .chain
                    .into_iter()
                    .map(CertificateDer::from)
                    .collect();
                Ok(Identity {
                    chain,
                    names: certificate.names,
                    key,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let table = SniTable::new(
            &SITE,
            identities,
            Arc::new(crypto::provider()),
            crypto::ticketer(),
        )?;
        // A second call keeps the first table: the snapshot has already been taken.
        let _ = TABLE.set(table);
        // Grow the heap now by what a connection allocates, so that the snapshot has it: a
        // connection then never grows its memory, which costs the host system calls per
        // connection (pages made accessible, then reset).
        drop(std::hint::black_box(Vec::<u8>::with_capacity(
            CONNECTION_HEAP,
        )));
        Ok(())
    }
}

impl site_export::Guest for Component {
    fn resources() -> Vec<site_export::Resource> {
        SITE.responses()
            .iter()
            .map(|response| site_export::Resource {
                hosts: response
                    .hosts()
                    .iter()
                    .map(|host| host.to_string())
                    .collect(),
                content_type: response.content_type().to_owned(),
                bytes: response.body().len() as u64,
                sha256: response.sha256().to_owned(),
                is_default: response.is_default(),
            })
            .collect()
    }
}

impl handler::Guest for Component {
    type Connection = OneConnection;
}

/// The `handler.connection` resource: one [`Connection`] over the table `initialise` built.
struct OneConnection(RefCell<Connection<'static>>);

impl handler::GuestConnection for OneConnection {
    fn open() -> Result<handler::Connection, handler::Failure> {
        let table = TABLE.get().ok_or(handler::Failure::NotInitialised)?;
        Ok(handler::Connection::new(OneConnection(RefCell::new(
            Connection::new(table),
        ))))
    }

    fn step(&self, event: handler::Event) -> handler::Step {
        let mut connection = self.0.borrow_mut();
        let next = match event {
            handler::Event::Received(bytes) => connection.step(Event::Received(&bytes)),
            handler::Event::EndOfStream => connection.step(Event::EndOfStream),
            handler::Event::Sent => connection.step(Event::Sent),
            handler::Event::TimedOut => connection.step(Event::TimedOut),
            handler::Event::Stalled => connection.step(Event::Broken(Failure::Stalled)),
            handler::Event::Broken(why) => connection.step(Event::Broken(Failure::Io(why))),
        };
        let next = match next {
            Next::Read => handler::Next::Read,
            Next::Write => handler::Next::Write,
            Next::Drain => handler::Next::Drain,
            Next::Close => handler::Next::Close,
            Next::Done => handler::Next::Done,
        };
        handler::Step {
            send: connection.take_outgoing(),
            next,
        }
    }

    fn outcome(&self) -> Result<handler::Served, handler::Failure> {
        Ok(self.0.borrow().outcome()?.into())
    }
}

bindings::export!(Component with_types_in bindings);

impl From<ConfigError> for InitError {
    fn from(error: ConfigError) -> Self {
        match error {
            ConfigError::BadKey { names, why } => {
                InitError::BadKey(format!("certificate for {}: {why}", names.join(", ")))
            }
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
            request: served.request.map(|request| handler::Request {
                method: request.method,
                target: request.target,
                version: request.version,
                user_agent: request.user_agent,
            }),
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
    use rustls::pki_types::{
        PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    };
    use rustls::server::ProducesTickets;
    use rustls::sign::SigningKey;
    use std::sync::Arc;

    /// The private key the host names `key`, read from the host and parsed here.
    pub fn signing_key(key: KeyId) -> Result<Arc<dyn SigningKey>, String> {
        let private = private_keys::private_key(key)
            .ok_or_else(|| format!("the host gave no private key {key}"))?;
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
