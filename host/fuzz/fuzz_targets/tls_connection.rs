//! Fuzz target: arbitrary bytes from a client into the guest's connection code (the `tls_site_guest`
//! library, compiled natively with its pure-Rust provider, as the `portable` component uses it).
//!
//! The input is what the client sends. Its first byte picks the size of the pieces it arrives in,
//! so that records split across reads are explored too. Whatever the bytes, `serve` must return
//! (a response or a typed failure) without panicking, and never write more than the response
//! and the handshake can account for.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use site::SITE;
use std::sync::{Arc, LazyLock};
use tls_site_guest::{Drained, Failure, Identity, SniTable, Transport, portable, serve};

/// The SNI table for the development certificate (certs/), which covers every name of the site,
/// with the pure-Rust provider (the default component's provider is the host's, across an import).
static TABLE: LazyLock<SniTable> = LazyLock::new(|| {
    let chain = CertificateDer::pem_slice_iter(include_bytes!("../../../certs/dev.chain.pem"))
        .map(|certificate| certificate.expect("certs/dev.chain.pem"))
        .collect();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("../../../certs/dev.key.pem")).expect("certs/dev.key.pem");
    let key = portable::load_private_key(key).expect("certs/dev.key.pem");
    let names = SITE.responses().iter().flat_map(|r| r.hosts().iter().map(|h| h.to_string())).collect();
    SniTable::new(&SITE, vec![Identity { chain, names, key }], Arc::new(portable::provider()), None)
        .expect("the development certificate")
});

/// The client's bytes, handed out in pieces of at most `piece` bytes.
struct Scripted<'a> {
    rest: &'a [u8],
    piece: usize,
    written: usize,
}

impl Transport for Scripted<'_> {
    fn read(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (now, later) = self.rest.split_at(self.rest.len().min(self.piece));
        self.rest = later;
        Ok(Some(now.to_vec()))
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.written += bytes.len();
        Ok(())
    }

    fn close_write(&mut self) {}

    fn drain(&mut self, max_bytes: usize, _max_nanos: u64, each: &mut dyn FnMut(&[u8]) -> bool) -> Drained {
        let mut drained = 0;
        while drained < max_bytes {
            match self.read() {
                Ok(Some(bytes)) => {
                    drained += bytes.len();
                    if !each(&bytes) {
                        return Drained::Done;
                    }
                }
                _ => return Drained::Closed,
            }
        }
        Drained::BytesBound
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, client_bytes)) = input.split_first() else { return };
    let piece = [1, 5, 64, 517, 4096, 16 * 1024][split as usize % 6];
    let mut client = Scripted { rest: client_bytes, piece, written: 0 };
    let largest_response = SITE.responses().iter().map(|r| r.head().len() + r.body().len()).max().unwrap_or(0);
    match serve(&TABLE, &mut client) {
        // A response needs a whole handshake from the client; whatever it was, what went out is
        // one response plus TLS framing, never more.
        Ok(served) => assert!(served.bytes as usize <= largest_response),
        Err(Failure::Tls(_) | Failure::Io(_)) => {}
        Err(other) => panic!("unexpected failure: {other:?}"),
    }
    // Handshake, records of at most 16 KiB each with their overhead, alerts: bounded by the
    // response's size plus a generous allowance for the handshake.
    assert!(client.written <= largest_response + largest_response / 8 + 16 * 1024, "wrote {} bytes", client.written);
});
