//! Component-level tests: the real host library runs the real component on loopback, and a real
//! rustls client checks certificates and bytes for every host name.

#[path = "../../tests/client.rs"]
mod client;

mod support;

use client::{Trust, config, fetch};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tls_site::sandbox::{Ending, Outcome, Resource, Sandbox, Timeouts};
use tls_site::{BUILT_COMPONENT, BUILT_PORTABLE_COMPONENT, Event, ServeOptions, Server, certs};

/// One server for the whole file, on its own runtime thread: initialising the component costs
/// a couple of seconds, serving a connection a few milliseconds.
struct Shared {
    https: SocketAddr,
    http: SocketAddr,
    ca: PathBuf,
    resources: Vec<Resource>,
    runtime: tokio::runtime::Handle,
    server: &'static Server,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = support::temp_dir("test-shared");
        let hosts = support::site_hosts();
        certs::dev_certs(&dir, &hosts).unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let options = options(&dir);
            let server: &'static Server =
                Box::leak(Box::new(runtime.block_on(Server::start(&options)).unwrap()));
            sender
                .send(Shared {
                    https: server.https_addr(),
                    http: server.http_addr().unwrap(),
                    ca: dir.join(certs::DEV_CA_FILE),
                    resources: server.resources().to_vec(),
                    runtime: runtime.handle().clone(),
                    server,
                })
                .unwrap();
            runtime.block_on(std::future::pending::<()>());
        });
        receiver.recv().unwrap()
    })
}

fn options(certs: &Path) -> ServeOptions {
    let mut options = ServeOptions::new(BUILT_COMPONENT.into(), certs.to_owned());
    options.https = ([127, 0, 0, 1], 0).into();
    options.http = ([127, 0, 0, 1], 0).into();
    options
}

fn default_resource(shared: &Shared) -> &Resource {
    shared.resources.iter().find(|r| r.is_default).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn dev_leaf(shared: &Shared) -> Vec<u8> {
    let chain = shared.ca.with_file_name("dev.chain.pem");
    certs::load_dir(chain.parent().unwrap()).unwrap()[0].chain[0].clone()
}

#[test]
fn every_host_name_gets_its_own_bytes_over_a_verified_tls13_connection() {
    let shared = shared();
    for resource in &shared.resources {
        for host in &resource.hosts {
            let fetched = fetch(
                shared.https,
                host,
                true,
                config(Trust::Ca(&shared.ca), &[b"h2", b"http/1.1"]),
            )
            .unwrap_or_else(|e| panic!("{host}: {e}"));
            assert_eq!(fetched.status_line, "HTTP/1.1 200 OK", "{host}");
            assert_eq!(
                fetched.header("content-type"),
                Some(resource.content_type.as_str()),
                "{host}"
            );
            assert_eq!(
                fetched.header("content-length"),
                Some(resource.bytes.to_string().as_str()),
                "{host}"
            );
            assert_eq!(fetched.header("connection"), Some("close"));
            assert!(fetched.header("strict-transport-security").is_some());
            assert_eq!(fetched.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(fetched.body.len() as u64, resource.bytes, "{host}");
            assert_eq!(sha256_hex(&fetched.body), resource.sha256, "{host}");
            assert_eq!(fetched.alpn.as_deref(), Some(&b"http/1.1"[..]), "never h2");
            assert_eq!(fetched.version, Some(rustls::ProtocolVersion::TLSv1_3));
        }
    }
}

#[test]
fn no_sni_and_an_unknown_name_get_the_default_certificate_and_page() {
    let shared = shared();
    let default = default_resource(shared);
    let leaf = dev_leaf(shared);
    // No SNI at all; the client still checks the certificate against the default name.
    let default_host = &default.hosts[0];
    let fetched = fetch(
        shared.https,
        default_host,
        false,
        config(Trust::Ca(&shared.ca), &[]),
    )
    .unwrap();
    assert_eq!(sha256_hex(&fetched.body), default.sha256);
    assert_eq!(fetched.leaf, leaf);
    // A name the site does not serve.
    let fetched = fetch(
        shared.https,
        "unknown.example",
        true,
        config(Trust::Anyone, &[]),
    )
    .unwrap();
    assert_eq!(sha256_hex(&fetched.body), default.sha256);
    assert_eq!(fetched.leaf, leaf);
    assert_eq!(fetched.alpn, None, "a client that offers no ALPN gets none");
}

#[test]
fn a_client_that_offers_only_h2_is_refused() {
    let shared = shared();
    let host = &default_resource(shared).hosts[0];
    let error = fetch(
        shared.https,
        host,
        true,
        config(Trust::Ca(&shared.ca), &[b"h2"]),
    )
    .err()
    .unwrap();
    assert!(error.contains("NoApplicationProtocol"), "{error}");
}

#[test]
fn tls12_only_clients_are_refused() {
    let shared = shared();
    let config =
        client::config_for_versions(Trust::Ca(&shared.ca), &[], &[&rustls::version::TLS12]);
    let host = &default_resource(shared).hosts[0];
    let error = fetch(shared.https, host, true, config).err().unwrap();
    assert!(
        error.contains("ProtocolVersion") || error.contains("protocol version"),
        "{error}"
    );
}

#[test]
fn port_80_redirects_to_the_https_url_of_the_host() {
    let shared = shared();
    let port = shared.https.port();
    let paper = shared.resources.iter().find(|r| !r.is_default).unwrap();
    let default_host = &default_resource(shared).hosts[0];
    for (host, expected) in [
        (
            paper.hosts[0].as_str(),
            format!("https://{}:{port}/", paper.hosts[0]),
        ),
        ("unknown.example", format!("https://{default_host}:{port}/")),
    ] {
        let response = raw_exchange(
            shared.http,
            format!("GET /any HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        );
        assert!(
            response.starts_with("HTTP/1.1 301 Moved Permanently\r\n"),
            "{response}"
        );
        assert!(
            response.contains(&format!("\r\nLocation: {expected}\r\n")),
            "{response}"
        );
    }
    let response = raw_exchange(shared.http, b"\x16\x03\x01\x00\x05hello\r\n\r\n");
    assert!(
        response.starts_with("HTTP/1.1 400 Bad Request"),
        "{response}"
    );
}

/// Writes `request`, reads until the server closes.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    socket.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = socket.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn garbage_instead_of_a_client_hello_is_closed_and_the_next_client_is_served() {
    let shared = shared();
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3],
        &[0u8; 600],
    ] {
        let reply = raw_exchange(shared.https, garbage);
        // At most a TLS alert record (type 21), then the close.
        assert!(reply.is_empty() || reply.as_bytes()[0] == 21, "{reply:?}");
    }
    let default = default_resource(shared);
    let fetched = fetch(
        shared.https,
        &default.hosts[0],
        true,
        config(Trust::Ca(&shared.ca), &[]),
    )
    .unwrap();
    assert_eq!(sha256_hex(&fetched.body), default.sha256);
}

#[test]
fn a_guest_trap_costs_only_its_own_connection() {
    let shared = shared();
    let sandbox = shared.server.sandbox();
    let outcomes = shared.runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut outcomes = Vec::new();
        // A zero deadline: the guest is interrupted at its first epoch check, a real wasm trap.
        for deadline in [Duration::ZERO, Duration::from_secs(20)] {
            let ca = shared.ca.clone();
            let client = std::thread::spawn(move || {
                fetch(
                    addr,
                    "tls-site.localhost",
                    true,
                    config(Trust::Ca(&ca), &[]),
                )
            });
            let (stream, _) = listener.accept().await.unwrap();
            let timeouts = Timeouts {
                handshake: Duration::from_secs(20),
                stall: Duration::from_secs(20),
                connection: deadline,
            };
            outcomes.push(sandbox.serve_connection(stream, timeouts).await.outcome);
            let fetched = tokio::task::spawn_blocking(move || client.join().unwrap())
                .await
                .unwrap();
            outcomes.push(match fetched {
                Ok(f) => Outcome::Served(tls_site::sandbox::Served {
                    server_name: None,
                    resource: f.status_line,
                    bytes: f.body.len() as u64,
                    client_finished: true,
                    key_exchange: None,
                    ending: tls_site::sandbox::Ending::Clean,
                    request: None,
                }),
                Err(e) => Outcome::Trapped(format!("client: {e}")),
            });
        }
        outcomes
    });
    assert!(
        matches!(&outcomes[0], Outcome::Trapped(why) if why.contains("interrupt")),
        "{:?}",
        outcomes[0]
    );
    assert!(
        matches!(&outcomes[1], Outcome::Trapped(why) if why.starts_with("client:")),
        "the trapped client got nothing"
    );
    assert!(
        matches!(&outcomes[2], Outcome::Served(_)),
        "{:?}",
        outcomes[2]
    );
    assert!(
        matches!(&outcomes[3], Outcome::Served(s) if s.resource == "HTTP/1.1 200 OK"),
        "{:?}",
        outcomes[3]
    );
    // And the server itself still serves.
    let default = default_resource(shared);
    let fetched = fetch(
        shared.https,
        &default.hosts[0],
        true,
        config(Trust::Ca(&shared.ca), &[]),
    )
    .unwrap();
    assert_eq!(sha256_hex(&fetched.body), default.sha256);
}

#[test]
fn many_concurrent_clients_all_get_whole_bodies() {
    let shared = shared();
    let paper = shared
        .resources
        .iter()
        .find(|r| r.content_type == "application/pdf")
        .unwrap();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (addr, ca, host) = (shared.https, shared.ca.clone(), paper.hosts[0].clone());
            std::thread::spawn(move || {
                fetch(addr, &host, true, config(Trust::Ca(&ca), &[])).map(|f| f.body)
            })
        })
        .collect();
    for client in clients {
        assert_eq!(sha256_hex(&client.join().unwrap().unwrap()), paper.sha256);
    }
}

#[test]
fn a_certificate_directory_without_the_default_host_fails_at_start_naming_it() {
    let dir = support::temp_dir("test-wrong-names");
    certs::dev_certs(&dir, &["other.example".to_owned()]).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime
        .block_on(Server::start(&options(&dir)))
        .err()
        .expect("start must fail");
    let message = error.to_string();
    assert!(
        message.contains("no-default-certificate") && message.contains("tls-site.localhost"),
        "{message}"
    );
}

/// One table from SNI name to certificate and response is built at initialisation: a host name
/// of the site that no certificate covers fails the start, by name, not the first client.
#[test]
fn a_host_name_no_certificate_covers_fails_at_start_naming_it() {
    let dir = support::temp_dir("test-uncovered");
    let mut hosts = support::site_hosts();
    let uncovered = hosts.pop().unwrap();
    certs::dev_certs(&dir, &hosts).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime
        .block_on(Server::start(&options(&dir)))
        .err()
        .expect("start must fail");
    let message = error.to_string();
    assert!(
        message.contains("uncovered-hosts") && message.contains(&uncovered),
        "{message}"
    );
    assert!(
        !hosts
            .iter()
            .any(|covered| message.contains(&format!(" {covered}"))),
        "only the uncovered name: {message}"
    );
}

#[test]
fn shutdown_stops_accepting_and_returns() {
    let dir = support::temp_dir("test-shutdown");
    certs::dev_certs(&dir, &support::site_hosts()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(Server::start(&options(&dir))).unwrap();
    let addr = server.https_addr();
    let fetched = fetch(
        addr,
        "tls-site.localhost",
        true,
        config(Trust::Ca(&dir.join(certs::DEV_CA_FILE)), &[]),
    );
    assert!(fetched.is_ok());
    let garbage = raw_exchange(addr, b"not a ClientHello, just some bytes\r\n\r\n");
    assert!(garbage.is_empty() || garbage.as_bytes()[0] == 21);
    let stats = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), server.shutdown()).await })
        .unwrap();
    assert!(
        TcpStream::connect(addr).is_err(),
        "the port is closed after shutdown"
    );
    // Every connection is counted by how it ended.
    assert_eq!(
        (stats.get(Event::Served), stats.get(Event::TlsFailed)),
        (1, 1),
        "{stats}"
    );
}

/// A server of its own, with the development certificates and `configure`d options.
fn start_with(
    name: &str,
    configure: impl FnOnce(&mut ServeOptions),
) -> (tokio::runtime::Runtime, Server, PathBuf) {
    start_in(
        name,
        |dir| drop(certs::dev_certs(dir, &support::site_hosts()).unwrap()),
        configure,
    )
}

/// The sum of the samples named `name` in the server's metrics, parsed as a scraper would.
fn scraped(server: &Server, name: &str) -> f64 {
    let text = server.metrics().encode();
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .map(|sample| match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        })
        .sum()
}

/// A server of its own, with the certificates `make_certs` writes into its directory.
fn start_in(
    name: &str,
    make_certs: impl FnOnce(&Path),
    configure: impl FnOnce(&mut ServeOptions),
) -> (tokio::runtime::Runtime, Server, PathBuf) {
    let dir = support::temp_dir(&format!("test-{name}"));
    make_certs(&dir);
    let mut options = options(&dir);
    configure(&mut options);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(Server::start(&options)).unwrap();
    (runtime, server, dir.join(certs::DEV_CA_FILE))
}

/// Connections the kernel holds for the listeners on `addr`, not yet accepted by the server: a
/// listening socket's `rx_queue` in /proc/net/tcp is its accept queue (Linux).
fn waiting_to_be_accepted(addr: SocketAddr) -> u64 {
    let port = format!(":{:04X}", addr.port());
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let queues: Vec<u64> = tcp
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields[1].ends_with(&port) && fields[3] == "0A")
        .map(|fields| u64::from_str_radix(fields[4].split(':').nth(1).unwrap(), 16).unwrap())
        .collect();
    assert!(!queues.is_empty(), "no listener on {addr} in /proc/net/tcp");
    queues.iter().sum()
}

#[test]
fn silent_connections_hold_no_instance_and_a_real_client_is_served() {
    let (runtime, server, ca) = start_with("silent", |options| {
        options.max_instances = 2;
        options.hello_timeout = Duration::from_secs(120);
        options.connection_deadline = Duration::from_secs(120);
    });
    // Ten times as many silent clients as there are instances, all accepted by the server.
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(server.https_addr()).unwrap())
        .collect();
    for _ in 0..600 {
        if waiting_to_be_accepted(server.https_addr()) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        waiting_to_be_accepted(server.https_addr()),
        0,
        "all accepted"
    );
    // The metrics count them open, at no instance.
    wait_for_scraped(&server, "tls_site_open_connections", 20.0);
    assert_eq!(scraped(&server, "tls_site_instances_in_use"), 0.0);
    let fetched = fetch(
        server.https_addr(),
        "tls-site.localhost",
        true,
        config(Trust::Ca(&ca), &[]),
    );
    assert!(fetched.is_ok(), "{:?}", fetched.err());
    assert_eq!(
        server.stats().get(Event::WaitedForInstance),
        0,
        "the real client found an instance free: the silent ones hold none"
    );
    assert_eq!(scraped(&server, "tls_site_instance_waits_total"), 0.0);
    drop(silent);
    let stats = stop(runtime, server);
    assert_eq!(
        (stats.get(Event::Silent), stats.get(Event::Served)),
        (20, 1),
        "{stats}"
    );
}

/// Scrapes until `name` reads `value` (the server gets there on its own time), for a minute at
/// most, then asserts it.
fn wait_for_scraped(server: &Server, name: &str, value: f64) {
    for _ in 0..600 {
        if scraped(server, name) == value {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(scraped(server, name), value, "{name}");
}

/// A client that finds every instance at work waits, is counted once in the metrics, and is
/// served when the instance is free.
#[test]
fn a_client_that_waits_for_an_instance_is_counted_and_then_served() {
    let (runtime, server, ca) = start_with("instance-waits", |options| {
        options.max_instances = 1;
        options.handshake_timeout = Duration::from_secs(2);
    });
    // The first record of a ClientHello split in two, the second never sent: it holds the one
    // instance until its handshake deadline.
    let mut holder = TcpStream::connect(server.https_addr()).unwrap();
    holder
        .write_all(&client::first_of_a_split_client_hello("tls-site.localhost"))
        .unwrap();
    wait_for_scraped(&server, "tls_site_instances_in_use", 1.0);
    let fetched = fetch(
        server.https_addr(),
        "tls-site.localhost",
        true,
        config(Trust::Ca(&ca), &[]),
    );
    assert!(fetched.is_ok(), "{:?}", fetched.err());
    assert_eq!(scraped(&server, "tls_site_instance_waits_total"), 1.0);
    drop(holder);
    let stats = stop(runtime, server);
    assert_eq!(stats.get(Event::WaitedForInstance), 1, "{stats}");
}

/// A client that sends part of its ClientHello's record and waits holds no instance: the one
/// instance there is serves a real client meanwhile, without a wait.
#[test]
fn a_client_with_half_a_client_hello_holds_no_instance() {
    let (runtime, server, ca) = start_with("half-hello", |options| {
        options.max_instances = 1;
        options.handshake_timeout = Duration::from_secs(2);
    });
    let hello = client::client_hello("tls-site.localhost");
    let mut dribbler = TcpStream::connect(server.https_addr()).unwrap();
    dribbler.write_all(&hello[..hello.len() / 2]).unwrap();
    wait_for_scraped(&server, "tls_site_open_connections", 1.0);
    let fetched = fetch(
        server.https_addr(),
        "tls-site.localhost",
        true,
        config(Trust::Ca(&ca), &[]),
    );
    assert!(fetched.is_ok(), "{:?}", fetched.err());
    assert_eq!(scraped(&server, "tls_site_instance_waits_total"), 0.0);
    // At its handshake deadline it is closed, having had no instance.
    dribbler
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(dribbler.read(&mut [0; 16]).unwrap_or(0), 0);
    let stats = stop(runtime, server);
    assert_eq!(
        (
            stats.get(Event::HandshakeTimeout),
            stats.get(Event::Served),
            stats.get(Event::WaitedForInstance)
        ),
        (1, 1, 0),
        "{stats}"
    );
}

/// A ClientHello that comes in two parts, the second after a pause, is put together by admission
/// (which holds the first part while it waits for the rest) and handed whole to an instance: the
/// handshake completes and the page comes back.
#[test]
fn a_client_hello_sent_in_two_parts_with_a_pause_is_served() {
    let shared = shared();
    let server_name = rustls::pki_types::ServerName::try_from("tls-site.localhost").unwrap();
    let config = std::sync::Arc::new(config(Trust::Ca(&shared.ca), &[]));
    let mut tls = rustls::ClientConnection::new(config, server_name).unwrap();
    let mut hello = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut hello).unwrap();
    }
    let mut socket = TcpStream::connect(shared.https).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (first, rest) = hello.split_at(hello.len() / 2);
    socket.write_all(first).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    socket.write_all(rest).unwrap();
    let mut stream = rustls::Stream::new(&mut tls, &mut socket);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: tls-site.localhost\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&response[..response.len().min(200)])
    );
    let page = default_resource(shared);
    assert!(page.hosts.iter().any(|host| host == "tls-site.localhost"));
    let body = &response[response.len() - page.bytes as usize..];
    assert_eq!(sha256_hex(body), page.sha256);
}

#[test]
fn a_client_that_never_sends_a_hello_is_closed() {
    let (runtime, server, _) = start_with("hello-timeout", |options| {
        options.hello_timeout = Duration::from_millis(300)
    });
    let mut silent = TcpStream::connect(server.https_addr()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buffer = [0u8; 16];
    // EOF (0) rather than the 30 s read timeout: the server hung up on us.
    assert_eq!(silent.read(&mut buffer).unwrap(), 0);
    let stats = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), server.shutdown()).await })
        .unwrap();
    assert_eq!(stats.get(Event::Silent), 1, "{stats}");
}

fn stop(runtime: tokio::runtime::Runtime, server: Server) -> std::sync::Arc<tls_site::Stats> {
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), server.shutdown()).await })
        .unwrap()
}

#[test]
fn the_portable_component_serves_the_same_bytes_as_the_keyless_one() {
    let shared = shared();
    let (runtime, portable, ca) = start_with("portable", |options| {
        options.component = BUILT_PORTABLE_COMPONENT.into()
    });
    for host in shared.resources.iter().flat_map(|r| &r.hosts) {
        let keyless = fetch(shared.https, host, true, config(Trust::Ca(&shared.ca), &[])).unwrap();
        let pure = fetch(
            portable.https_addr(),
            host,
            true,
            config(Trust::Ca(&ca), &[]),
        )
        .unwrap();
        assert_eq!(pure.status_line, keyless.status_line, "{host}");
        assert_eq!(pure.headers, keyless.headers, "{host}");
        assert!(pure.body == keyless.body, "{host}: the bodies differ");
        assert_eq!(pure.handshake, Some(rustls::HandshakeKind::Full));
    }
    assert_eq!(
        stop(runtime, portable).get(Event::Served),
        shared
            .resources
            .iter()
            .map(|r| r.hosts.len() as u64)
            .sum::<u64>()
    );
}

/// The portable component's own provider (guest/tls/src/portable.rs) in wasm, for every group:
/// the hybrid post-quantum one against the aws-lc-rs client, the (EC)DH ones against ring's.
#[test]
fn the_portable_component_does_each_key_exchange_group() {
    use rustls::crypto::ring::kx_group;
    let (runtime, portable, ca) = start_with("portable-groups", |options| {
        options.component = BUILT_PORTABLE_COMPONENT.into()
    });
    for group in [
        client::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
        kx_group::SECP384R1,
    ] {
        let client = client::config_for_groups(Trust::Ca(&ca), vec![group]);
        let fetched = fetch(portable.https_addr(), "tls-site.localhost", true, client)
            .unwrap_or_else(|e| panic!("{group:?}: {e}"));
        assert_eq!(fetched.key_exchange, Some(group.name()));
        assert_eq!(sha256_hex(&fetched.body), default_resource(shared()).sha256);
    }
    stop(runtime, portable);
}

/// ECDSA P-256 and P-384, Ed25519 and RSA-PSS: each key stays in the host, which signs the
/// handshake's CertificateVerify, over a SHA-256 transcript hash and over a SHA-384 one (the host
/// takes only the hash, of either length).
#[test]
fn the_host_signs_with_each_kind_of_key() {
    use rustls::crypto::ring::cipher_suite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
    for (label, key) in client::every_kind_of_key() {
        let make_certs =
            |dir: &Path| drop(certs::dev_certs_with_key(dir, &support::site_hosts(), key).unwrap());
        let (runtime, server, ca) = start_in(&format!("sign-{label}"), make_certs, |_| {});
        let leaf = certs::load_dir(ca.parent().unwrap()).unwrap()[0].chain[0].clone();
        for suite in [TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384] {
            let fetched = fetch(
                server.https_addr(),
                "tls-site.localhost",
                true,
                client::config_for_suite(Trust::Ca(&ca), suite),
            )
            .unwrap_or_else(|e| panic!("{label}, {:?}: {e}", suite.suite()));
            assert_eq!(fetched.status_line, "HTTP/1.1 200 OK", "{label}");
            assert_eq!(fetched.leaf, leaf, "{label}");
        }
        stop(runtime, server);
    }
}

#[test]
fn the_host_does_each_key_exchange_group() {
    use rustls::crypto::ring::kx_group;
    let shared = shared();
    for group in [
        client::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
        kx_group::SECP384R1,
    ] {
        let client = client::config_for_groups(Trust::Ca(&shared.ca), vec![group]);
        let fetched = fetch(shared.https, "tls-site.localhost", true, client)
            .unwrap_or_else(|e| panic!("{group:?}: {e}"));
        assert_eq!(fetched.key_exchange, Some(group.name()));
        assert_eq!(sha256_hex(&fetched.body), default_resource(shared).sha256);
    }
}

/// A client whose P-256 key share is not a point on the curve: the host's key exchange fails,
/// and the guest answers with an alert rather than trapping.
#[test]
fn a_failing_host_crypto_call_is_a_tls_alert_not_a_trap() {
    let (runtime, server, ca) = start_with("bad-key-share", |_| {});
    let client = client::config_for_groups(Trust::Ca(&ca), vec![&OffTheCurve]);
    let error = fetch(server.https_addr(), "tls-site.localhost", true, client)
        .err()
        .expect("the handshake must fail");
    assert!(
        error.contains("received fatal alert: IllegalParameter"),
        "{error}"
    );
    // The server goes on serving.
    let fetched = fetch(
        server.https_addr(),
        "tls-site.localhost",
        true,
        config(Trust::Ca(&ca), &[]),
    )
    .unwrap();
    assert_eq!(fetched.status_line, "HTTP/1.1 200 OK");
    let stats = stop(runtime, server);
    assert_eq!(
        (
            stats.get(Event::TlsFailed),
            stats.get(Event::Trapped),
            stats.get(Event::Served)
        ),
        (1, 0, 1),
        "{stats}"
    );
}

#[derive(Debug)]
struct OffTheCurve;

impl rustls::crypto::SupportedKxGroup for OffTheCurve {
    fn start(&self) -> Result<Box<dyn rustls::crypto::ActiveKeyExchange>, rustls::Error> {
        Ok(Box::new(OffTheCurve))
    }

    fn name(&self) -> rustls::NamedGroup {
        rustls::NamedGroup::secp256r1
    }
}

impl rustls::crypto::ActiveKeyExchange for OffTheCurve {
    fn complete(self: Box<Self>, _: &[u8]) -> Result<rustls::crypto::SharedSecret, rustls::Error> {
        Err(rustls::Error::General("never completes".into()))
    }

    fn pub_key(&self) -> &[u8] {
        // An uncompressed point (0x04, x, y) with x = y = 1: not on P-256.
        const POINT: [u8; 65] = {
            let mut point = [0u8; 65];
            point[0] = 4;
            point[32] = 1;
            point[64] = 1;
            point
        };
        &POINT
    }

    fn group(&self) -> rustls::NamedGroup {
        rustls::NamedGroup::secp256r1
    }
}

/// Tickets are sealed by the host with keys every instance shares, and each connection is a
/// fresh instance: a second connection resumes on an instance that never saw the first. The keys
/// rotate (rustls's `TicketRotator`, here every 3 s): a ticket opens with the current and the
/// previous key, and not once its key has been rotated out. A key rotates at the first use after
/// its time is up, so each rotation below is one connection after a wait; 3 s, not 1, so that on
/// a loaded machine no connection of the test comes late enough to rotate a second time.
#[test]
fn a_returning_client_resumes_until_its_ticket_key_is_rotated_out() {
    let rotation = Duration::from_secs(3);
    // Longer than a rotation, whatever part of its second the clock was in.
    let rotation_due = rotation + Duration::from_millis(1100);
    let (runtime, server, ca) =
        start_with("resume", |options| options.ticket_key_rotation = rotation);
    let client = config(Trust::Ca(&ca), &[]);
    let page = sha256_hex(
        &fetch(
            server.https_addr(),
            "tls-site.localhost",
            true,
            client.clone(),
        )
        .unwrap()
        .body,
    );
    let handshake = || {
        let fetched = fetch(
            server.https_addr(),
            "tls-site.localhost",
            true,
            client.clone(),
        )
        .unwrap();
        assert_eq!(sha256_hex(&fetched.body), page);
        fetched.handshake.unwrap()
    };
    let rotate = || {
        std::thread::sleep(rotation_due);
        // Another client, without a ticket: its connection is the first use of the keys.
        let stranger = fetch(
            server.https_addr(),
            "tls-site.localhost",
            true,
            config(Trust::Ca(&ca), &[]),
        )
        .unwrap();
        assert_eq!(stranger.handshake, Some(rustls::HandshakeKind::Full));
    };
    assert_eq!(
        handshake(),
        rustls::HandshakeKind::Resumed,
        "the ticket from the first connection"
    );
    rotate();
    assert_eq!(
        handshake(),
        rustls::HandshakeKind::Resumed,
        "the previous key still opens tickets"
    );
    rotate();
    rotate();
    assert_eq!(
        handshake(),
        rustls::HandshakeKind::Full,
        "the key of the client's ticket is gone"
    );
    assert_eq!(
        handshake(),
        rustls::HandshakeKind::Resumed,
        "with the ticket of the full handshake"
    );
    assert_eq!(stop(runtime, server).get(Event::Served), 8);
}

/// `tls-site compile`'s file: the same site, loaded instead of compiled; only with the
/// certificates it was made with; and a damaged one is refused at start with a clear error.
#[test]
fn a_precompiled_component_serves_the_same_bytes_and_only_with_its_certificates() {
    let shared = shared();
    let dir = support::temp_dir("test-precompiled");
    certs::dev_certs(&dir, &support::site_hosts()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let precompiled = runtime
        .block_on(Sandbox::precompile(
            Path::new(BUILT_COMPONENT),
            &certs::load_dir(&dir).unwrap(),
        ))
        .unwrap();
    let file = dir.join("site.cwasm");
    std::fs::write(&file, &precompiled).unwrap();
    assert!(tls_site::precompiled::is_precompiled(&file).unwrap());
    let listed = runtime
        .block_on(tls_site::inspect::site_resources(&file, Default::default()))
        .unwrap();
    let summary = |resources: &[Resource]| {
        resources
            .iter()
            .map(|r| (r.hosts.clone(), r.sha256.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        summary(&listed),
        summary(&shared.resources),
        "inspect reads the precompiled file too"
    );

    let (runtime, server, ca) = start_in(
        "precompiled-serve",
        |serve_dir| copy_dir(&dir, serve_dir),
        |options| options.component = file.clone(),
    );
    for host in shared.resources.iter().flat_map(|r| &r.hosts) {
        let compiled_at_start =
            fetch(shared.https, host, true, config(Trust::Ca(&shared.ca), &[])).unwrap();
        let precompiled =
            fetch(server.https_addr(), host, true, config(Trust::Ca(&ca), &[])).unwrap();
        assert_eq!(
            precompiled.status_line, compiled_at_start.status_line,
            "{host}"
        );
        assert!(
            precompiled.body == compiled_at_start.body,
            "{host}: the bodies differ"
        );
    }
    stop(runtime, server);

    let other_certs = support::temp_dir("test-precompiled-other");
    certs::dev_certs(&other_certs, &support::site_hosts()).unwrap();
    let mut options = options(&other_certs);
    options.component = file.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime
        .block_on(Server::start(&options))
        .err()
        .expect("other certificates must be refused");
    assert!(
        error
            .to_string()
            .contains("precompiled with other certificates"),
        "{error}"
    );

    std::fs::write(&file, &precompiled[..precompiled.len() / 2]).unwrap();
    options.certs = dir.clone();
    let error = runtime
        .block_on(Server::start(&options))
        .err()
        .expect("a damaged file must be refused");
    assert!(
        error
            .to_string()
            .contains("damaged, its contents are not those it was written with"),
        "{error}"
    );

    // Whole, but one byte of the machine code changed.
    let mut damaged = precompiled.clone();
    *damaged.last_mut().unwrap() ^= 1;
    std::fs::write(&file, &damaged).unwrap();
    let error = runtime
        .block_on(Server::start(&options))
        .err()
        .expect("a damaged file must be refused");
    assert!(error.to_string().contains("damaged"), "{error}");

    // Whole and as written, but not wasmtime's (a file from another build would be refused the
    // same way, by wasmtime's check of its version and settings).
    let header = b"tls-site precompiled v1\n".len() + 32;
    let not_wasmtimes = b"not an ELF file that wasmtime wrote".to_vec();
    let forged = [
        &precompiled[..header],
        &Sha256::digest(&not_wasmtimes)[..],
        &not_wasmtimes,
    ]
    .concat();
    std::fs::write(&file, &forged).unwrap();
    let error = runtime
        .block_on(Server::start(&options))
        .err()
        .expect("a file wasmtime did not write must be refused");
    assert!(
        error
            .to_string()
            .contains("make it again with this binary's `tls-site compile`"),
        "{error}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "pem") {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// Serves one connection on a listener of its own with the shared server's sandbox (generous
/// deadlines), while `client` runs against it on a thread. Returns the outcome, when the guest
/// returned, and what the client returned.
fn serve_one<T: Send + 'static>(
    client: impl FnOnce(SocketAddr) -> T + Send + 'static,
) -> (Outcome, std::time::Instant, T) {
    let shared = shared();
    let sandbox = shared.server.sandbox();
    shared.runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || client(addr));
        let (stream, _) = listener.accept().await.unwrap();
        let timeouts = Timeouts {
            handshake: Duration::from_secs(20),
            stall: Duration::from_secs(20),
            connection: Duration::from_secs(60),
        };
        let outcome = sandbox.serve_connection(stream, timeouts).await.outcome;
        let returned = std::time::Instant::now();
        let client = tokio::task::spawn_blocking(move || client.join().unwrap())
            .await
            .unwrap();
        (outcome, returned, client)
    })
}

/// A TLS connection to `addr` for the default host, with the request sent; the client's
/// provider is ring's with `groups`.
fn connect(
    addr: SocketAddr,
    groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let shared = shared();
    let config = std::sync::Arc::new(client::config_for_groups(Trust::Ca(&shared.ca), groups));
    let name = rustls::pki_types::ServerName::try_from("tls-site.localhost").unwrap();
    let socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls =
        rustls::StreamOwned::new(rustls::ClientConnection::new(config, name).unwrap(), socket);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: tls-site.localhost\r\n\r\n")
        .unwrap();
    tls
}

/// A key-exchange group no server knows (a code point from the private-use range): a client
/// whose first key share is for it gets a HelloRetryRequest for another.
#[derive(Debug)]
struct UnknownGroup;

impl rustls::crypto::SupportedKxGroup for UnknownGroup {
    fn start(&self) -> Result<Box<dyn rustls::crypto::ActiveKeyExchange>, rustls::Error> {
        Ok(Box::new(UnknownGroup))
    }

    fn name(&self) -> rustls::NamedGroup {
        rustls::NamedGroup::Unknown(0xfe00)
    }
}

impl rustls::crypto::ActiveKeyExchange for UnknownGroup {
    fn complete(self: Box<Self>, _: &[u8]) -> Result<rustls::crypto::SharedSecret, rustls::Error> {
        Err(rustls::Error::General(
            "a server chose the unknown group".into(),
        ))
    }

    fn pub_key(&self) -> &[u8] {
        &[1; 32]
    }

    fn group(&self) -> rustls::NamedGroup {
        rustls::NamedGroup::Unknown(0xfe00)
    }
}

/// A HelloRetryRequest costs the client one round trip, not a stall: the server's flight leaves
/// as soon as the second ClientHello is in, and the client's Finished is read and checked (it
/// gets its session ticket, which rustls sends only then).
#[test]
fn a_hello_retry_request_costs_a_round_trip_not_a_second() {
    use rustls::client::ClientSessionStore as _;
    let tickets = std::sync::Arc::new(rustls::client::ClientSessionMemoryCache::new(4));
    let client_tickets = tickets.clone();
    let (outcome, _, fetched) = serve_one(move |addr| {
        let shared = shared();
        let started = std::time::Instant::now();
        let mut config = client::config_for_groups(
            Trust::Ca(&shared.ca),
            vec![&UnknownGroup, rustls::crypto::ring::kx_group::X25519],
        );
        config.resumption = rustls::client::Resumption::store(client_tickets);
        let fetched = fetch(addr, "tls-site.localhost", true, config);
        (fetched, started.elapsed())
    });
    let (fetched, took) = fetched;
    let fetched = fetched.unwrap();
    assert!(
        matches!(&outcome, Outcome::Served(served) if served.client_finished),
        "{outcome:?}"
    );
    assert_eq!(
        fetched.handshake,
        Some(rustls::HandshakeKind::FullWithHelloRetryRequest)
    );
    assert_eq!(fetched.key_exchange, Some(rustls::NamedGroup::X25519));
    assert_eq!(sha256_hex(&fetched.body), default_resource(shared()).sha256);
    assert!(
        took < Duration::from_millis(500),
        "the retried handshake took {took:?}"
    );
    let name = rustls::pki_types::ServerName::try_from("tls-site.localhost").unwrap();
    assert!(
        tickets.take_tls13_ticket(&name).is_some(),
        "the client got no session ticket"
    );
}

/// After its close_notify the server half-closes at once (the client sees the end of the stream
/// while its own side is still open), and it stops draining at the client's close_notify.
#[test]
fn the_server_half_closes_then_stops_draining_at_the_clients_close_notify() {
    let (outcome, returned, (eof_after, close_notify_sent, _socket)) = serve_one(|addr| {
        let mut tls = connect(addr, vec![rustls::crypto::ring::kx_group::X25519]);
        let mut response = Vec::new();
        tls.read_to_end(&mut response).unwrap();
        let got_close_notify = std::time::Instant::now();
        let mut rest = [0u8; 64];
        assert_eq!(
            tls.sock.read(&mut rest).unwrap(),
            0,
            "the server's end of stream, after its close_notify"
        );
        let eof_after = got_close_notify.elapsed();
        // Our close_notify, and the socket kept open: only the close_notify can end the drain.
        tls.conn.send_close_notify();
        tls.conn.write_tls(&mut tls.sock).unwrap();
        (eof_after, std::time::Instant::now(), tls.sock)
    });
    assert!(
        matches!(&outcome, Outcome::Served(served) if served.client_finished),
        "{outcome:?}"
    );
    assert!(
        eof_after < Duration::from_millis(500),
        "the server's FIN came {eof_after:?} after its close_notify"
    );
    let drained_for = returned.saturating_duration_since(close_notify_sent);
    assert!(
        drained_for < Duration::from_millis(500),
        "the guest drained for {drained_for:?} after the client's close_notify"
    );
}

/// What a client sends after the response, up to the drain's bound, is read: the client gets a
/// clean close, not a reset.
#[test]
fn up_to_the_drain_bound_a_client_gets_a_clean_close() {
    let (outcome, _, end) = serve_one(|addr| {
        let mut tls = connect(addr, vec![rustls::crypto::ring::kx_group::X25519]);
        let mut response = Vec::new();
        tls.read_to_end(&mut response).unwrap();
        // Fifteen full records (240 KiB and their headers), then its close_notify and its end of
        // stream: more than the host reads ahead of the guest (up to 192 KiB, wasmtime-wasi's
        // buffers), so a guest that stops reading early leaves bytes unread, which is a reset.
        for _ in 0..15 {
            tls.write_all(&[b'x'; 16 * 1024]).unwrap();
        }
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        tls.sock.read_to_end(&mut rest).map(|_| rest.len())
    });
    assert!(
        matches!(&outcome, Outcome::Served(served) if served.ending == Ending::Clean),
        "{outcome:?}"
    );
    assert!(matches!(end, Ok(0)), "the client's close ended in {end:?}");

    // Beyond the bound the client is cut off, and the outcome (so the access log) says so.
    let (outcome, _, ()) = serve_one(|addr| {
        let mut tls = connect(addr, vec![rustls::crypto::ring::kx_group::X25519]);
        let mut response = Vec::new();
        tls.read_to_end(&mut response).unwrap();
        for _ in 0..64 {
            if tls.write_all(&[b'x'; 16 * 1024]).is_err() {
                break;
            }
        }
    });
    assert!(
        matches!(&outcome, Outcome::Served(served) if served.ending == Ending::CutOff),
        "{outcome:?}"
    );
}

/// A client that offers the hybrid group first, as current browsers do, gets it: every host name,
/// its own bytes, and the group in the access log's record.
#[test]
fn the_hybrid_post_quantum_group_is_negotiated_when_offered() {
    let shared = shared();
    let groups = || {
        vec![
            client::X25519MLKEM768,
            rustls::crypto::ring::kx_group::X25519,
        ]
    };
    for resource in &shared.resources {
        for host in &resource.hosts {
            let fetched = fetch(
                shared.https,
                host,
                true,
                client::config_for_groups(Trust::Ca(&shared.ca), groups()),
            )
            .unwrap();
            assert_eq!(
                fetched.key_exchange,
                Some(rustls::NamedGroup::X25519MLKEM768),
                "{host}"
            );
            assert_eq!(
                fetched.handshake,
                Some(rustls::HandshakeKind::Full),
                "{host}"
            );
            assert_eq!(sha256_hex(&fetched.body), resource.sha256, "{host}");
        }
    }
    let ca = shared.ca.clone();
    let (outcome, _, fetched) = serve_one(move |addr| {
        fetch(
            addr,
            "tls-site.localhost",
            true,
            client::config_for_groups(Trust::Ca(&ca), groups()),
        )
    });
    fetched.unwrap();
    assert!(
        matches!(&outcome, Outcome::Served(served) if served.key_exchange.as_deref() == Some("X25519MLKEM768")),
        "{outcome:?}"
    );
}

/// A client that lists the hybrid group first in supported_groups but sends only an X25519 share
/// gets a ServerHello for X25519, not a HelloRetryRequest for the hybrid group.
#[test]
fn a_client_offering_the_hybrid_group_without_a_share_for_it_gets_no_retry() {
    let shared = shared();
    // A real ClientHello with supported_groups x25519 (0x001d), X25519MLKEM768 (0x11ec) and an
    // X25519 share; the two groups swapped.
    let config = client::config_for_groups(
        Trust::Ca(&shared.ca),
        vec![
            rustls::crypto::ring::kx_group::X25519,
            client::X25519MLKEM768,
        ],
    );
    let name = rustls::pki_types::ServerName::try_from("tls-site.localhost").unwrap();
    let mut connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut hello).unwrap();
    }
    let at = hello
        .windows(4)
        .position(|w| w == [0x00, 0x1d, 0x11, 0xec])
        .expect("supported_groups: x25519, X25519MLKEM768");
    hello[at..at + 4].copy_from_slice(&[0x11, 0xec, 0x00, 0x1d]);

    let mut socket = TcpStream::connect(shared.https).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    socket.write_all(&hello).unwrap();
    let mut reply = vec![0; 5 + 4 + 2 + 32];
    socket.read_exact(&mut reply).unwrap();
    const RETRY_RANDOM: [u8; 32] = [
        0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8,
        0x91, 0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8,
        0x33, 0x9c,
    ];
    assert_eq!((reply[0], reply[5]), (22, 2), "a ServerHello: {reply:?}");
    assert_ne!(reply[11..43], RETRY_RANDOM, "the server asked for a retry");
    let length = u16::from_be_bytes([reply[3], reply[4]]) as usize;
    let mut rest = vec![0; length + 5 - reply.len()];
    socket.read_exact(&mut rest).unwrap();
    // Its key_share extension (51): 36 bytes, group x25519.
    assert!(
        rest.windows(6)
            .any(|w| w == [0x00, 0x33, 0x00, 0x24, 0x00, 0x1d]),
        "the ServerHello's share is not X25519: {rest:?}"
    );
}
