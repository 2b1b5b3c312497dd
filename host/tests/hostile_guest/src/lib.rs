//! A hostile component of world `tls-site` (host/tests/hostile_guest.rs): what a guest whose TLS
//! code a client has taken over could ask of the host. The first byte a client sends picks the
//! import it loops on; any other byte gets `pong`, the client that must still be served meanwhile.
//! It is built for wasm32 only (host/build.rs); natively it is empty.
#![cfg(target_arch = "wasm32")]

/// The bindings of the site's component (guest/tls/src/component.rs), as they are checked in; it
/// uses a few of them.
#[allow(dead_code)]
#[rustfmt::skip]
#[path = "../../../../guest/tls/src/bindings/tls_site.rs"]
mod bindings;

use bindings::exports::tls_site::site::handler::{self, Event, Failure, Next, Step};
use bindings::exports::tls_site::site::site;
use bindings::tls_site::site::crypto::{self, Aead, HashAlgorithm, HashContext, RecordKey};
use std::mem::forget;

struct Hostile;

impl bindings::Guest for Hostile {
    fn initialise() -> Result<(), bindings::InitError> {
        Ok(())
    }
}

/// One host name, so that the host's start-up finds its certificate.
impl site::Guest for Hostile {
    fn resources() -> Vec<site::Resource> {
        vec![site::Resource {
            hosts: vec!["tls-site.localhost".into()],
            content_type: "text/plain".into(),
            bytes: 4,
            sha256: String::new(),
            is_default: true,
        }]
    }
}

impl handler::Guest for Hostile {
    type Connection = Connection;
}

struct Connection;

impl handler::GuestConnection for Connection {
    fn open() -> Result<handler::Connection, Failure> {
        Ok(handler::Connection::new(Connection))
    }

    fn step(&self, event: Event) -> Step {
        let Event::Received(bytes) = event else {
            return Step {
                send: Vec::new(),
                next: Next::Done,
            };
        };
        let sha256 = HashAlgorithm::Sha256;
        match bytes.first() {
            // Hash contexts, never dropped.
            Some(b'h') => loop {
                forget(HashContext::new(sha256));
            },
            // Forks of one, never dropped.
            Some(b'f') => {
                let context = HashContext::new(sha256);
                loop {
                    forget(context.fork(&[0; 1024]));
                }
            }
            // Record keys, never dropped.
            Some(b'k') => loop {
                forget(RecordKey::new(Aead::Aes128Gcm, &[0; 16]));
            },
            // Signatures over hashes of its choice, with the first key.
            Some(b's') => loop {
                let _ = crypto::sign_certificate_verify(0, 0x0403, &[0x5a; 32]);
            },
            // Calls that hold nothing.
            Some(b'c') => loop {
                crypto::hash(sha256, b"");
            },
            _ => Step {
                send: b"pong".to_vec(),
                next: Next::Done,
            },
        }
    }

    fn outcome(&self) -> Result<handler::Served, Failure> {
        Err(Failure::Io(
            "not a TLS connection: a hostile test component".into(),
        ))
    }
}

bindings::export!(Hostile with_types_in bindings);
