//! The component's TLS code run natively, without wasm: a yardstick for what the sandbox costs.
//!
//! It serves the same site with the same library (`tls_site_guest`: the same SNI table, rustls
//! policy and pure-Rust crypto as the `portable` component) over `std::net` sockets instead of
//! the streams the wasmtime host hands the component. There is no sandbox, no snapshot, no
//! instance per connection and no access log: the difference between this and `tls-site serve`
//! is what those cost. Used by `host/benches/connections.rs`; not a server to deploy.
//!
//! With `ring` after the address it takes rustls's ring provider instead of the pure-Rust one:
//! the crypto the host does for the component (ring's ECDSA, SHA-2 and AES-GCM; ring's X25519
//! where the host's is aws-lc's), so that it is a floor for the sandbox: the same TLS code
//! natively, with native crypto and nothing around it.
//!
//!     cargo build --release -p tls-site-guest --features portable --example native
//!     target/release/examples/native certs/dev.chain.pem certs/dev.key.pem 127.0.0.1:8443 [ring]

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use site::SITE;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tls_site_guest::connection::READ_CHUNK;
use tls_site_guest::{Drained, Failure, Identity, SniTable, Transport, portable, serve};

/// Connections served at once, each on its own thread blocked in `accept`.
const WORKERS: usize = 16;
/// Bound on a client that stalls, so that it cannot hold a worker for ever.
const DEADLINE: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (chain, key, addr, provider) = match &args[..] {
        [chain, key, addr] => (chain, key, addr, portable::provider()),
        [chain, key, addr, ring] if ring == "ring" => {
            (chain, key, addr, rustls::crypto::ring::default_provider())
        }
        _ => {
            eprintln!(
                "usage: native CHAIN.pem KEY.pem ADDR [ring]   (e.g. certs/dev.chain.pem certs/dev.key.pem 127.0.0.1:8443)"
            );
            std::process::exit(2);
        }
    };
    let chain = CertificateDer::pem_file_iter(chain)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|error| fail(format_args!("{chain}: {error}")));
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| error.to_string())
        .and_then(|der| {
            (provider.key_provider.load_private_key(der)).map_err(|error| error.to_string())
        })
        .unwrap_or_else(|error| fail(format_args!("{key}: {error}")));
    // The development certificate covers every name of the site (`tls-site dev-certs`); the host
    // reads the names from the certificate, which this yardstick does not need to.
    let names = SITE
        .responses()
        .iter()
        .flat_map(|r| r.hosts().iter().map(|h| h.to_string()))
        .collect();
    let table = SniTable::new(
        &SITE,
        vec![Identity { chain, names, key }],
        Arc::new(provider),
        None,
    )
    .unwrap_or_else(|error| fail(format_args!("the certificate: {error}")));
    let table = Arc::new(table);

    let listener = TcpListener::bind(addr)
        .unwrap_or_else(|error| fail(format_args!("cannot listen on {addr}: {error}")));
    eprintln!(
        "native: listening on https://{}",
        listener.local_addr().unwrap()
    );
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let listener = listener.try_clone().expect("cloning the listener");
            let table = table.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_read_timeout(Some(DEADLINE));
                    let _ = stream.set_write_timeout(Some(DEADLINE));
                    if let Err(failure) = serve(&table, &mut Socket(stream)) {
                        eprintln!("native: failed: {failure}");
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

fn fail(message: std::fmt::Arguments<'_>) -> ! {
    eprintln!("native: {message}");
    std::process::exit(1);
}

/// The native transport: a blocking socket.
struct Socket(TcpStream);

impl Transport for Socket {
    fn read(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        let mut bytes = vec![0; READ_CHUNK as usize];
        match self.0.read(&mut bytes) {
            Ok(0) => Ok(None),
            Ok(n) => {
                bytes.truncate(n);
                Ok(Some(bytes))
            }
            Err(error) => Err(Failure::Io(error.to_string())),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.0
            .write_all(bytes)
            .map_err(|error| Failure::Io(error.to_string()))
    }

    fn close_write(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }

    fn drain(
        &mut self,
        max_bytes: usize,
        max_nanos: u64,
        each: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Drained {
        let deadline = Instant::now() + Duration::from_nanos(max_nanos);
        let mut bytes = vec![0; READ_CHUNK as usize];
        let mut drained = 0;
        while drained < max_bytes {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.0.set_read_timeout(Some(left)).is_err() {
                return Drained::TimeBound;
            }
            match self.0.read(&mut bytes) {
                Ok(0) => return Drained::Closed,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Drained::TimeBound;
                }
                Err(_) => return Drained::Closed,
                Ok(n) => {
                    drained += n;
                    if !each(&bytes[..n]) {
                        return Drained::Done;
                    }
                }
            }
        }
        Drained::BytesBound
    }
}
