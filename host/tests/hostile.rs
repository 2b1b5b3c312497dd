//! Hostile clients against the real host and component on loopback: malformed records, partial
//! hellos, floods, clients that stop reading or reset. Each must cost only its own connection,
//! end with a close (or an alert) and be counted by how it ended.

#[path = "../../tests/client.rs"]
mod client;

mod support;

use client::{Trust, client_hello, config, fetch};
use sha2::{Digest, Sha256};
use socket2::{Domain, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tls_site::sandbox::Resource;
use tls_site::{BUILT_COMPONENT, Event, ServeOptions, Server, Stats, certs};

/// Short handshake and stall timeouts, and a connection deadline far beyond them and beyond the
/// clients' own read timeouts: a test passes only if the short ones did the work.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
const STALL_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECTION_DEADLINE: Duration = Duration::from_secs(300);
/// How long a client waits for the server to hang up before calling it a failure.
const CLIENT_PATIENCE: Duration = Duration::from_secs(60);

/// A server of its own for each test, so that what it counts is that test's connections alone.
struct Host {
    server: Server,
    https: SocketAddr,
    ca: PathBuf,
    resources: Vec<Resource>,
    /// Last, so that it outlives the server when a test drops both.
    runtime: tokio::runtime::Runtime,
}

impl Host {
    fn start(name: &str) -> Host {
        let dir = support::temp_dir(&format!("hostile-{name}"));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        certs::dev_certs(&dir, &support::site_hosts()).unwrap();
        let mut options = ServeOptions::new(BUILT_COMPONENT.into(), dir.clone());
        options.https = ([127, 0, 0, 1], 0).into();
        options.no_http = true;
        options.handshake_timeout = HANDSHAKE_TIMEOUT;
        options.stall_timeout = STALL_TIMEOUT;
        options.connection_deadline = CONNECTION_DEADLINE;
        // A small send buffer, as `--send-buffer 4096`: otherwise loopback's autotuned buffers
        // swallow a whole PDF and no client could make the server wait.
        options.send_buffer = Some(4096);
        let server = runtime.block_on(Server::start(&options)).unwrap();
        Host {
            https: server.https_addr(),
            ca: dir.join(certs::DEV_CA_FILE),
            resources: server.resources().to_vec(),
            runtime,
            server,
        }
    }

    fn resource(&self, content_type: &str) -> &Resource {
        self.resources
            .iter()
            .find(|r| r.content_type.starts_with(content_type))
            .unwrap()
    }

    /// A real client still gets the right bytes.
    fn assert_still_serves(&self) {
        let page = self.resource("text/html");
        let fetched = fetch(
            self.https,
            &page.hosts[0],
            true,
            config(Trust::Ca(&self.ca), &[]),
        )
        .unwrap();
        assert_eq!(format!("{:x}", Sha256::digest(&fetched.body)), page.sha256);
    }

    /// Waits until the server has counted `at_least` connections as `kind` (counting follows the
    /// close by a moment).
    fn wait_for_count(&self, kind: Event, at_least: u64) {
        let stats = self.server.stats();
        for _ in 0..600 {
            if stats.get(kind) >= at_least {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("expected {at_least} connections counted {kind}: {stats}");
    }

    /// Stops the server once every connection has ended (each within its deadline), and returns
    /// how they all ended.
    fn stop(self) -> Arc<Stats> {
        let Host {
            runtime, server, ..
        } = self;
        runtime.block_on(server.shutdown())
    }
}

/// Sends `bytes` (then half-closes if `then_close`), and reads what comes back until the server
/// closes. Panics if it does not close within `CLIENT_PATIENCE`.
fn exchange(host: &Host, bytes: &[u8], then_close: bool) -> Vec<u8> {
    let mut socket = TcpStream::connect(host.https).unwrap();
    socket.set_read_timeout(Some(CLIENT_PATIENCE)).unwrap();
    socket.write_all(bytes).unwrap();
    if then_close {
        socket.shutdown(Shutdown::Write).unwrap();
    }
    let mut reply = Vec::new();
    match socket.read_to_end(&mut reply) {
        Ok(_) => {}
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
        Err(error) => panic!(
            "the server did not close the connection: {error} (sent {} bytes)",
            bytes.len()
        ),
    }
    reply
}

/// Bytes that look random, the same on every run.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 56) as u8
        })
        .collect()
}

#[test]
fn malformed_records_get_an_alert_or_a_close_and_nothing_else_breaks() {
    let host = Host::start("malformed");
    let hello = client_hello("tls-site.localhost");
    let mut oversized = hello.clone();
    oversized[3..5].copy_from_slice(&0x4801u16.to_be_bytes()); // a record longer than TLS allows
    let mut hello_then_garbage = hello.clone();
    hello_then_garbage.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x20]);
    hello_then_garbage.extend_from_slice(&noise(32, 7));
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("random bytes", noise(4096, 1), false),
        (
            "a truncated ClientHello, then close",
            hello[..hello.len() / 2].to_vec(),
            true,
        ),
        ("an oversized record", oversized, false),
        (
            "application data first",
            [&[0x17, 0x03, 0x03, 0x00, 0x10][..], &noise(16, 2)].concat(),
            false,
        ),
        (
            "a fatal alert first",
            vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
            false,
        ),
        (
            "change_cipher_spec first",
            vec![0x14, 0x03, 0x03, 0x00, 0x01, 0x01],
            false,
        ),
        (
            "a Finished message first",
            [
                &[0x16, 0x03, 0x03, 0x00, 0x24, 0x14, 0x00, 0x00, 0x20][..],
                &noise(32, 3),
            ]
            .concat(),
            false,
        ),
        (
            "a record of zero length",
            vec![0x16, 0x03, 0x01, 0x00, 0x00],
            false,
        ),
        (
            "a ClientHello, then a forged encrypted record",
            hello_then_garbage,
            false,
        ),
    ];
    for (case, bytes, then_close) in &cases {
        let reply = exchange(&host, bytes, *then_close);
        // Nothing, an alert (21), or the start of the server's handshake (22) when the
        // ClientHello itself was good.
        assert!(
            reply.is_empty() || reply[0] == 21 || reply[0] == 22,
            "{case}: {:?}",
            &reply[..reply.len().min(16)]
        );
    }
    host.assert_still_serves();
    let stats = host.stop();
    assert_eq!(
        stats.get(Event::TlsFailed) + stats.get(Event::IoFailed),
        cases.len() as u64,
        "every case failed, and only its own connection: {stats}"
    );
    assert_eq!(stats.get(Event::Served), 1, "{stats}");
}

#[test]
fn a_partial_client_hello_is_cut_off_at_the_handshake_timeout() {
    let host = Host::start("partial-hello");
    let hello = client_hello("tls-site.localhost");
    // The first bytes (so an instance is taken), then nothing: the connection deadline is minutes
    // away, the client waits a minute, so only the handshake timeout can close this in time.
    let reply = exchange(&host, &hello[..20], false);
    assert!(reply.is_empty(), "{reply:?}");
    host.assert_still_serves();
    let stats = host.stop();
    assert_eq!(stats.get(Event::HandshakeTimeout), 1, "{stats}");
    assert_eq!(stats.get(Event::Served), 1, "{stats}");
}

/// A socket whose receive buffer is as small as the kernel allows, so a client that does not
/// read stops the server's writes almost at once.
fn small_window_client(host: &Host) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    socket.connect(&host.https.into()).unwrap();
    let socket: TcpStream = socket.into();
    socket.set_read_timeout(Some(CLIENT_PATIENCE)).unwrap();
    socket
}

#[test]
fn a_client_that_stops_reading_is_cut_off_at_the_stall_timeout() {
    let host = Host::start("stall");
    let paper = host.resource("application/pdf");
    let mut socket = small_window_client(&host);
    socket.write_all(&client_hello(&paper.hosts[0])).unwrap();
    // Read nothing until the server says it cut us off: the response does not fit in the window
    // and the socket buffers.
    host.wait_for_count(Event::Stalled, 1);
    // What was sent before the cut is less than the response: the rest never left.
    let mut reply = Vec::new();
    let _ = socket.read_to_end(&mut reply);
    assert!(
        (reply.len() as u64) < paper.bytes,
        "{} of {} bytes",
        reply.len(),
        paper.bytes
    );
    host.assert_still_serves();
    let stats = host.stop();
    assert_eq!(stats.get(Event::Stalled), 1, "{stats}");
}

#[test]
fn a_client_that_resets_mid_response_costs_only_its_connection() {
    let host = Host::start("reset");
    let paper = host.resource("application/pdf");
    let mut socket = small_window_client(&host);
    socket.write_all(&client_hello(&paper.hosts[0])).unwrap();
    let mut first = [0u8; 512];
    socket.read_exact(&mut first).unwrap();
    assert_eq!(first[0], 22, "the server's handshake began");
    // A reset, not a close: linger with a zero timeout.
    Socket::from(socket)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    host.wait_for_count(Event::IoFailed, 1);
    host.assert_still_serves();
    let stats = host.stop();
    assert_eq!(
        (stats.get(Event::IoFailed), stats.get(Event::Served)),
        (1, 1),
        "{stats}"
    );
}

#[test]
fn a_client_that_floods_without_reading_is_cut_off() {
    let host = Host::start("flood");
    const FLOOD_LIMIT: usize = 256 << 20;
    for (case, first) in [
        ("garbage", noise(1024, 9)),
        (
            "a ClientHello, then garbage",
            client_hello("tls-site.localhost"),
        ),
    ] {
        let mut socket = TcpStream::connect(host.https).unwrap();
        socket.set_write_timeout(Some(CLIENT_PATIENCE)).unwrap();
        let chunk = noise(64 << 10, 11);
        let mut sent = 0;
        let mut result = socket.write_all(&first);
        while result.is_ok() && sent < FLOOD_LIMIT {
            result = socket.write_all(&chunk);
            sent += chunk.len();
        }
        let error = result.expect_err(&format!(
            "{case}: the server took {sent} bytes without closing"
        ));
        assert!(
            matches!(
                error.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ),
            "{case}: {error} after {sent} bytes"
        );
    }
    host.assert_still_serves();
}
