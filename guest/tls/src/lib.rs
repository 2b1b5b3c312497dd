//! The tls-site component: the site behind rustls, serving one connection per call.
//!
//! Built by default for world `tls-site` (keyless: the host signs, exchanges keys, protects
//! records and seals tickets), or with the feature `portable` for world `tls-site-portable`
//! (pure-Rust crypto, private keys read at initialisation). `crypto.rs` is the only difference.
//!
//! `initialise` builds the TLS configuration from the host's certificates (the site itself was
//! built at compile time); the host snapshots the instance right after, so every connection
//! starts from that state and pays for none of it.

mod config;
mod connection;
mod crypto;
#[cfg(not(feature = "portable"))]
mod host_crypto;

mod bindings {
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

use bindings::exports::tls_site::site::handler::{self, Deadlines, Failure, Served};
use bindings::exports::tls_site::site::site as site_export;
use bindings::wasi::clocks::monotonic_clock;
use bindings::wasi::io::streams::{InputStream, OutputStream};
use bindings::{tls_site::site::identity, InitError};
use rustls::ServerConfig;
use site::SITE;
use std::sync::{Arc, OnceLock};

static TLS_CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();

struct Component;

impl bindings::Guest for Component {
    fn initialise() -> Result<(), InitError> {
        let default_host = SITE.default_response().hosts()[0];
        let identities = identity::certificates()
            .into_iter()
            .map(|certificate| {
                let key = crypto::signing_key(certificate.key).map_err(|why| {
                    InitError::BadKey(format!("certificate for {}: {why}", certificate.names.join(", ")))
                })?;
                Ok(config::Identity { chain: certificate.chain, names: certificate.names, key })
            })
            .collect::<Result<Vec<_>, InitError>>()?;
        let config = config::make_config(identities, default_host)?;
        // A second call keeps the first configuration: the snapshot has already been taken.
        let _ = TLS_CONFIG.set(config);
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
    fn handle(input: InputStream, output: OutputStream, deadlines: Deadlines) -> Result<Served, Failure> {
        let config = TLS_CONFIG.get().ok_or(Failure::NotInitialised)?;
        let read_until = monotonic_clock::now().saturating_add(deadlines.handshake);
        let mut streams = connection::WasiStreams { input: &input, output: &output, read_until, stall: deadlines.stall };
        connection::serve(config, &SITE, &mut streams)
    }
}

bindings::export!(Component with_types_in bindings);
