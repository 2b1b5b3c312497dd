//! Component-level tests: the real host library runs the real component on loopback, and a real
//! rustls client checks certificates and bytes for every host name.

#[path = "../../tests/client.rs"]
mod client;

use client::{Trust, config, fetch};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tls_site::sandbox::{Outcome, Resource, Timeouts};
use tls_site::{BUILT_COMPONENT, ServeOptions, Server, certs};

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
        let dir = temp_dir("shared");
        let hosts = site_hosts();
        certs::dev_certs(&dir, &hosts).unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let options = options(&dir);
            let server: &'static Server = Box::leak(Box::new(runtime.block_on(Server::start(&options)).unwrap()));
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
    options.http = Some(([127, 0, 0, 1], 0).into());
    options
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tls-site-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The site's host names, default first, as `tls-site dev-certs` would certify them.
fn site_hosts() -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let resources = runtime
        .block_on(tls_site::sandbox::Sandbox::inspect(Path::new(BUILT_COMPONENT), Default::default()))
        .unwrap();
    tls_site::hosts_default_first(&resources)
}

fn default_resource(shared: &Shared) -> &Resource {
    shared.resources.iter().find(|r| r.is_default).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
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
            let fetched = fetch(shared.https, host, true, config(Trust::Ca(&shared.ca), &[b"h2", b"http/1.1"]))
                .unwrap_or_else(|e| panic!("{host}: {e}"));
            assert_eq!(fetched.status_line, "HTTP/1.1 200 OK", "{host}");
            assert_eq!(fetched.header("content-type"), Some(resource.content_type.as_str()), "{host}");
            assert_eq!(fetched.header("content-length"), Some(resource.bytes.to_string().as_str()), "{host}");
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
    let fetched = fetch(shared.https, default_host, false, config(Trust::Ca(&shared.ca), &[])).unwrap();
    assert_eq!(sha256_hex(&fetched.body), default.sha256);
    assert_eq!(fetched.leaf, leaf);
    // A name the site does not serve.
    let fetched = fetch(shared.https, "unknown.example", true, config(Trust::Anyone, &[])).unwrap();
    assert_eq!(sha256_hex(&fetched.body), default.sha256);
    assert_eq!(fetched.leaf, leaf);
    assert_eq!(fetched.alpn, None, "a client that offers no ALPN gets none");
}

#[test]
fn a_client_that_offers_only_h2_is_refused() {
    let shared = shared();
    let host = &default_resource(shared).hosts[0];
    let error = fetch(shared.https, host, true, config(Trust::Ca(&shared.ca), &[b"h2"])).err().unwrap();
    assert!(error.contains("NoApplicationProtocol"), "{error}");
}

#[test]
fn tls12_only_clients_are_refused() {
    let shared = shared();
    let config = client::config_for_versions(Trust::Ca(&shared.ca), &[], &[&rustls::version::TLS12]);
    let host = &default_resource(shared).hosts[0];
    let error = fetch(shared.https, host, true, config).err().unwrap();
    assert!(error.contains("ProtocolVersion") || error.contains("protocol version"), "{error}");
}

#[test]
fn port_80_redirects_to_the_https_url_of_the_host() {
    let shared = shared();
    let port = shared.https.port();
    let paper = shared.resources.iter().find(|r| !r.is_default).unwrap();
    let default_host = &default_resource(shared).hosts[0];
    for (host, expected) in [
        (paper.hosts[0].as_str(), format!("https://{}:{port}/", paper.hosts[0])),
        ("unknown.example", format!("https://{default_host}:{port}/")),
    ] {
        let response = raw_exchange(shared.http, format!("GET /any HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert!(response.starts_with("HTTP/1.1 301 Moved Permanently\r\n"), "{response}");
        assert!(response.contains(&format!("\r\nLocation: {expected}\r\n")), "{response}");
    }
    let response = raw_exchange(shared.http, b"\x16\x03\x01\x00\x05hello\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 400 Bad Request"), "{response}");
}

/// Writes `request`, reads until the server closes.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    socket.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = socket.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn garbage_instead_of_a_client_hello_is_closed_and_the_next_client_is_served() {
    let shared = shared();
    for garbage in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3], &[0u8; 600]] {
        let reply = raw_exchange(shared.https, garbage);
        // At most a TLS alert record (type 21), then the close.
        assert!(reply.is_empty() || reply.as_bytes()[0] == 21, "{reply:?}");
    }
    let default = default_resource(shared);
    let fetched = fetch(shared.https, &default.hosts[0], true, config(Trust::Ca(&shared.ca), &[])).unwrap();
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
            let client = std::thread::spawn(move || fetch(addr, "tls-site.localhost", true, config(Trust::Ca(&ca), &[])));
            let (stream, _) = listener.accept().await.unwrap();
            let timeouts = Timeouts { handshake: Duration::from_secs(20), stall: Duration::from_secs(20), connection: deadline };
            outcomes.push(sandbox.serve_connection(stream, timeouts).await.outcome);
            let fetched = tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
            outcomes.push(match fetched {
                Ok(f) => Outcome::Served(tls_site::sandbox::Served {
                    server_name: None,
                    resource: f.status_line,
                    bytes: f.body.len() as u64,
                    client_finished: true,
                }),
                Err(e) => Outcome::Trapped(format!("client: {e}")),
            });
        }
        outcomes
    });
    assert!(matches!(&outcomes[0], Outcome::Trapped(why) if why.contains("interrupt")), "{:?}", outcomes[0]);
    assert!(matches!(&outcomes[1], Outcome::Trapped(why) if why.starts_with("client:")), "the trapped client got nothing");
    assert!(matches!(&outcomes[2], Outcome::Served(_)), "{:?}", outcomes[2]);
    assert!(matches!(&outcomes[3], Outcome::Served(s) if s.resource == "HTTP/1.1 200 OK"), "{:?}", outcomes[3]);
    // And the server itself still serves.
    let default = default_resource(shared);
    let fetched = fetch(shared.https, &default.hosts[0], true, config(Trust::Ca(&shared.ca), &[])).unwrap();
    assert_eq!(sha256_hex(&fetched.body), default.sha256);
}

#[test]
fn many_concurrent_clients_all_get_whole_bodies() {
    let shared = shared();
    let paper = shared.resources.iter().find(|r| r.content_type == "application/pdf").unwrap();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (addr, ca, host) = (shared.https, shared.ca.clone(), paper.hosts[0].clone());
            std::thread::spawn(move || fetch(addr, &host, true, config(Trust::Ca(&ca), &[])).map(|f| f.body))
        })
        .collect();
    for client in clients {
        assert_eq!(sha256_hex(&client.join().unwrap().unwrap()), paper.sha256);
    }
}

#[test]
fn a_certificate_directory_without_the_default_host_fails_at_start_naming_it() {
    let dir = temp_dir("wrong-names");
    certs::dev_certs(&dir, &["other.example".to_owned()]).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime.block_on(Server::start(&options(&dir))).err().expect("start must fail");
    let message = error.to_string();
    assert!(message.contains("no-default-certificate") && message.contains("tls-site.localhost"), "{message}");
}

#[test]
fn shutdown_stops_accepting_and_returns() {
    let dir = temp_dir("shutdown");
    certs::dev_certs(&dir, &site_hosts()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(Server::start(&options(&dir))).unwrap();
    let addr = server.https_addr();
    let fetched = fetch(addr, "tls-site.localhost", true, config(Trust::Ca(&dir.join(certs::DEV_CA_FILE)), &[]));
    assert!(fetched.is_ok());
    let garbage = raw_exchange(addr, b"not a ClientHello, just some bytes\r\n\r\n");
    assert!(garbage.is_empty() || garbage.as_bytes()[0] == 21);
    let stats = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), server.shutdown()).await }).unwrap();
    assert!(TcpStream::connect(addr).is_err(), "the port is closed after shutdown");
    // Every connection is counted by how it ended.
    assert_eq!((stats.get("served"), stats.get("tls-failed")), (1, 1), "{stats}");
}

/// A server of its own with tight limits: two instances, a generous hello timeout.
fn start_with(name: &str, configure: impl FnOnce(&mut ServeOptions)) -> (tokio::runtime::Runtime, Server, PathBuf) {
    let dir = temp_dir(name);
    certs::dev_certs(&dir, &site_hosts()).unwrap();
    let mut options = options(&dir);
    configure(&mut options);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(Server::start(&options)).unwrap();
    (runtime, server, dir.join(certs::DEV_CA_FILE))
}

#[test]
fn silent_connections_hold_no_instance_and_a_real_client_is_served() {
    let (runtime, server, ca) = start_with("silent", |options| {
        options.max_instances = 2;
        options.hello_timeout = Duration::from_secs(120);
        options.connection_deadline = Duration::from_secs(120);
    });
    // Ten times as many silent clients as there are instances.
    let silent: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(server.https_addr()).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let fetched = fetch(server.https_addr(), "tls-site.localhost", true, config(Trust::Ca(&ca), &[]));
    assert!(fetched.is_ok(), "{:?}", fetched.err());
    drop(silent);
    runtime.block_on(async { tokio::time::timeout(Duration::from_secs(60), server.shutdown()).await }).unwrap();
}

#[test]
fn a_client_that_never_sends_a_hello_is_closed() {
    let (runtime, server, _) = start_with("hello-timeout", |options| options.hello_timeout = Duration::from_millis(300));
    let mut silent = TcpStream::connect(server.https_addr()).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buffer = [0u8; 16];
    // EOF (0) rather than the 30 s read timeout: the server hung up on us.
    assert_eq!(silent.read(&mut buffer).unwrap(), 0);
    let stats = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(60), server.shutdown()).await }).unwrap();
    assert_eq!(stats.get("silent"), 1, "{stats}");
}
