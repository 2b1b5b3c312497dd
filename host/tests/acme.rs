//! ACME tests: the real host library gets its certificates from a real ACME server on loopback
//! (Debian's `pebble`, with `pebble-challtestsrv` as its DNS, answering every name with
//! 127.0.0.1), validated by real HTTP-01 requests to the host's port-80 side; real rustls clients
//! check what is served. Also: a certificate on disk is reused, a CA that cannot be reached keeps
//! the old certificate (or the placeholder) serving.

#[path = "../../tests/client.rs"]
mod client;

mod support;

use client::{Trust, config, fetch};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tls_site::options::AcmeOptions;
use tls_site::{BUILT_COMPONENT, Event, ServeOptions, Server};

/// How long pebble's certificates live in the test of the real timer: renewal comes after 50 to
/// 60 s (a third left, with jitter), leaving 30 s before the old one expires for the new one to be
/// swapped in (on a loaded 2-core machine the order took under a second and the new snapshot
/// about 20 s). The other pebble test asks for the renewal instead of waiting for it.
const SHORT_VALIDITY_SECONDS: u64 = 90;
/// Let's Encrypt's: renewal is due in two months, i.e. never during a test.
const USUAL_VALIDITY_SECONDS: u64 = 90 * 24 * 3600;

/// A bound on waiting for things that take seconds, so that a broken setup fails instead of
/// hanging; generous because the machine may be slow and shared.
const PATIENCE: Duration = Duration::from_secs(600);

/// A port free on loopback for TCP and UDP now (pebble and its DNS need numbers up front).
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < PATIENCE,
            "gave up after {PATIENCE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A throwaway CA and a leaf signed by it, as PEM: (ca, chain, key).
fn ca_and_leaf(
    names: &[&str],
    not_before: SystemTime,
    not_after: SystemTime,
) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut leaf_params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    leaf_params.not_before = not_before.into();
    leaf_params.not_after = not_after.into();
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

/// pebble and its DNS server, killed when dropped.
struct Pebble {
    processes: Vec<Child>,
    directory: String,
    management: SocketAddr,
    /// The root pebble's directory TLS certificate chains to (made here, not pebble's own CA).
    directory_ca: PathBuf,
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` (the host's port-80 side), issuing
    /// certificates that live `validity` seconds.
    fn start(dir: &Path, http_port: u16, validity: u64) -> Pebble {
        let (listen, management, dns) = (free_port(), free_port(), free_port());
        let (ca, chain, key) = ca_and_leaf(
            &["localhost", "127.0.0.1"],
            SystemTime::now() - days(1),
            SystemTime::now() + days(30),
        );
        let directory_ca = dir.join("directory-ca.pem");
        std::fs::write(&directory_ca, ca).unwrap();
        std::fs::write(dir.join("directory.pem"), chain).unwrap();
        std::fs::write(dir.join("directory.key.pem"), key).unwrap();
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("directory.pem"),
            "privateKey": dir.join("directory.key.pem"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();

        // Every name is 127.0.0.1 (no AAAA: the host listens on IPv4 loopback); no challenge
        // servers of its own.
        let dns_server = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-management",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(std::fs::File::create(dir.join("challtestsrv.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("challtestsrv.err")).unwrap())
            .spawn()
            .expect("pebble-challtestsrv (apt-get install pebble)");
        let pebble = Command::new("pebble")
            .args([
                "-config",
                dir.join("pebble.json").to_str().unwrap(),
                "-dnsserver",
                &format!("127.0.0.1:{dns}"),
            ])
            // Validate at once rather than after a random few seconds; never reject a good nonce
            // (a real CA rarely does; instant-acme is not what is tested here).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(std::fs::File::create(dir.join("pebble.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("pebble.err")).unwrap())
            .spawn()
            .expect("pebble (apt-get install pebble)");
        let pebble = Pebble {
            processes: vec![dns_server, pebble],
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: ([127, 0, 0, 1], management).into(),
            directory_ca,
        };
        wait_until("pebble to listen", || {
            TcpStream::connect(("127.0.0.1", listen)).is_ok()
        });
        pebble
    }

    /// The root pebble issues under (new on each start), from its management interface.
    fn issuing_root(&self, dir: &Path) -> PathBuf {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_file(&self.directory_ca).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(tls), name).unwrap();
        let mut stream =
            rustls::StreamOwned::new(connection, TcpStream::connect(self.management).unwrap());
        stream
            .write_all(b"GET /roots/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let response = String::from_utf8(response).unwrap();
        let pem = &response[response
            .find("-----BEGIN CERTIFICATE-----")
            .expect("a PEM root")..];
        let path = dir.join("pebble-root.pem");
        std::fs::write(&path, pem).unwrap();
        path
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

/// The host, in this process, on its own runtime.
struct Host {
    runtime: tokio::runtime::Runtime,
    server: Option<Server>,
}

impl Host {
    fn start(http_port: u16, acme: AcmeOptions) -> Host {
        let mut options =
            ServeOptions::new(BUILT_COMPONENT.into(), PathBuf::from("unused-with-acme"));
        options.https = ([127, 0, 0, 1], 0).into();
        options.http = ([127, 0, 0, 1], http_port).into();
        options.acme = Some(acme);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let server = runtime.block_on(Server::start(&options)).unwrap();
        Host {
            runtime,
            server: Some(server),
        }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    fn hosts(&self) -> Vec<String> {
        tls_site::inspect::hosts_default_first(self.server().resources())
    }

    fn count(&self, kind: Event) -> u64 {
        self.server().stats().get(kind)
    }

    fn stop(mut self) {
        let server = self.server.take().unwrap();
        self.runtime.block_on(server.shutdown());
    }
}

fn acme_options(directory: &str, state: &Path) -> AcmeOptions {
    let mut options = AcmeOptions::new(directory.to_owned(), state.to_owned());
    options.contacts = vec!["ops@tls-site.localhost".into()];
    options.terms_agreed = true;
    options
}

/// pebble (with its DNS) and the host as its client, the first certificate served: for the
/// pebble tests, which are layer 2 (`cargo test --release -- --ignored`, see README.md).
fn host_with_a_pebble_certificate(name: &str, validity: u64) -> (PathBuf, Pebble, Host) {
    let dir = support::temp_dir(&format!("acme-{name}"));
    let http_port = free_port();
    let pebble = Pebble::start(&dir, http_port, validity);
    let mut options = acme_options(&pebble.directory, &dir.join("state"));
    options.directory_ca = Some(pebble.directory_ca.clone());
    let started = Instant::now();
    let host = Host::start(http_port, options);
    wait_until("the first certificate", || {
        host.count(Event::AcmeInstalled) >= 1
    });
    eprintln!(
        "first certificate served {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
    (dir, pebble, host)
}

/// The leaf every host name is served with now: the same for all (one order, every name a SAN).
fn leaf_for_every_name(host: &Host, root: &Path) -> Vec<u8> {
    let mut leaf = None;
    for name in host.hosts() {
        let fetched = fetch(
            host.server().https_addr(),
            &name,
            true,
            config(Trust::Ca(root), &[]),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(fetched.status_line, "HTTP/1.1 200 OK", "{name}");
        assert_eq!(
            *leaf.get_or_insert(fetched.leaf.clone()),
            fetched.leaf,
            "{name}: one certificate for all names"
        );
    }
    leaf.expect("the site has host names")
}

#[test]
#[ignore = "layer 2: needs pebble (apt-get install pebble)"]
fn pebble_issues_for_every_name_over_http01_and_renewal_fails_no_client() {
    let (dir, pebble, host) = host_with_a_pebble_certificate("pebble", USUAL_VALIDITY_SECONDS);
    let root = pebble.issuing_root(&dir);
    let https = host.server().https_addr();
    let hosts = host.hosts();
    let first_leaf = leaf_for_every_name(&host, &root);
    assert!(
        host.count(Event::HttpAcmeChallenge) >= hosts.len() as u64,
        "every name validated over HTTP-01"
    );

    let state = dir.join("state");
    let certificate_dir = tls_site::acme::certificate_dir(&state, &pebble.directory);
    let mode = |path: PathBuf| std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(state.clone()), 0o700);
    assert_eq!(mode(certificate_dir.clone()), 0o700);
    // The pair in the directory `live` points at (made live at once, acme/state.rs).
    for file in ["account.json", "live/site.key.pem", "live/site.chain.pem"] {
        assert_eq!(mode(certificate_dir.join(file)), 0o600, "{file}");
    }

    // Clients keep coming while the certificate is renewed; the renewal is asked for rather
    // than waited for (the real timer has its own test below).
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, root, name) = (stop.clone(), root.clone(), hosts[0].clone());
        std::thread::spawn(move || {
            let (mut leaves, mut failures, mut served) = (Vec::<Vec<u8>>::new(), Vec::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                match fetch(https, &name, true, config(Trust::Ca(&root), &[])) {
                    Ok(fetched) if fetched.status_line == "HTTP/1.1 200 OK" => {
                        served += 1;
                        if leaves.last() != Some(&fetched.leaf) {
                            leaves.push(fetched.leaf);
                        }
                    }
                    Ok(fetched) => failures.push(fetched.status_line),
                    Err(error) => failures.push(error),
                }
            }
            (leaves, failures, served)
        })
    };
    wait_until("the client loop to be served", || {
        host.count(Event::Served) >= hosts.len() as u64 + 5
    });
    assert!(
        host.server().renew_certificate_now(),
        "an ACME server renews"
    );
    wait_until("the renewal", || host.count(Event::AcmeInstalled) >= 2);
    let served_before_swap = host.count(Event::Served);
    wait_until("clients served by the new certificate", || {
        host.count(Event::Served) >= served_before_swap + 20
    });
    stop.store(true, Ordering::Relaxed);
    let (leaves, failures, served) = client.join().unwrap();
    eprintln!(
        "renewal: {served} requests during the client loop, {} failed, {} leaves seen",
        failures.len(),
        leaves.len()
    );

    assert!(
        failures.is_empty(),
        "{} of {served} requests failed during renewal: {failures:?}",
        failures.len()
    );
    assert_eq!(
        leaves.first(),
        Some(&first_leaf),
        "the loop began on the first certificate"
    );
    assert!(leaves.len() >= 2, "the loop saw the renewed certificate");
    assert_eq!(
        &leaf_for_every_name(&host, &root),
        leaves.last().unwrap(),
        "the renewed certificate covers every name"
    );
    assert_eq!(host.count(Event::AcmeFailed), 0);
    host.stop();
}

/// The one slow test: nothing asks, the certificate ages, the timer renews it when it is due
/// (about a minute: pebble issues it for SHORT_VALIDITY_SECONDS).
#[test]
#[ignore = "layer 2: needs pebble (apt-get install pebble)"]
fn pebble_certificate_is_renewed_by_the_timer_when_a_third_of_its_life_is_left() {
    let (dir, pebble, host) =
        host_with_a_pebble_certificate("pebble-timer", SHORT_VALIDITY_SECONDS);
    let root = pebble.issuing_root(&dir);
    let first_leaf = leaf_for_every_name(&host, &root);
    let on_disk = tls_site::certs::load_dir(
        &tls_site::acme::certificate_dir(&dir.join("state"), &pebble.directory).join("live"),
    )
    .unwrap();
    let validity = tls_site::acme::Validity::of(&on_disk[0]).unwrap();
    let earliest = validity.renewal_time(1.0);

    wait_until("the renewal by the timer", || {
        host.count(Event::AcmeInstalled) >= 2
    });
    assert!(SystemTime::now() >= earliest, "renewed before it was due");
    let renewed = leaf_for_every_name(&host, &root);
    assert_ne!(renewed, first_leaf, "a new certificate is served");
    assert_eq!(host.count(Event::AcmeFailed), 0);
    host.stop();
}

/// A listener that stands in for a CA that cannot be reached: it counts connections, says nothing.
fn dead_directory() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let directory = format!("https://{}/dir", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, Ordering::Relaxed);
            drop(stream);
        }
    });
    (directory, connections)
}

/// Writes a certificate for `hosts` into where the host looks for the one from `directory`.
fn certificate_on_disk(
    state: &Path,
    directory: &str,
    hosts: &[String],
    not_before: SystemTime,
    not_after: SystemTime,
) -> PathBuf {
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let (ca, chain, key) = ca_and_leaf(&names, not_before, not_after);
    let dir = tls_site::acme::certificate_dir(state, directory);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("site.chain.pem"), chain).unwrap();
    std::fs::write(dir.join("site.key.pem"), key).unwrap();
    let ca_file = state.join("test-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    ca_file
}

#[test]
fn a_valid_certificate_on_disk_is_served_without_asking_and_a_failed_renewal_keeps_it() {
    let dir = support::temp_dir("acme-on-disk");
    let (directory, connections) = dead_directory();
    let hosts = support::site_hosts();
    let now = SystemTime::now();

    // Fresh (10 of 90 days used): served at once; the CA is not contacted.
    let state = dir.join("fresh");
    let ca = certificate_on_disk(&state, &directory, &hosts, now - days(10), now + days(80));
    let leaf = tls_site::certs::load_dir(&tls_site::acme::certificate_dir(&state, &directory))
        .unwrap()[0]
        .chain[0]
        .clone();
    let host = Host::start(free_port(), acme_options(&directory, &state));
    for name in &hosts {
        let fetched = fetch(
            host.server().https_addr(),
            name,
            true,
            config(Trust::Ca(&ca), &[]),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(fetched.leaf, leaf, "{name}");
    }
    host.stop();
    assert_eq!(
        connections.load(Ordering::Relaxed),
        0,
        "a valid certificate on disk: nothing asked of the CA"
    );

    // Due (70 of 90 days used): renewal is tried at once, fails, is retried after a wait, and
    // the old certificate keeps serving throughout.
    let state = dir.join("due");
    let ca = certificate_on_disk(&state, &directory, &hosts, now - days(70), now + days(20));
    let mut options = acme_options(&directory, &state);
    options.first_retry_wait = Duration::from_millis(200);
    let host = Host::start(free_port(), options);
    wait_until("two failed renewals", || host.count(Event::AcmeFailed) >= 2);
    for name in &hosts {
        let fetched = fetch(
            host.server().https_addr(),
            name,
            true,
            config(Trust::Ca(&ca), &[]),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(fetched.status_line, "HTTP/1.1 200 OK");
    }
    assert!(
        connections.load(Ordering::Relaxed) >= 2,
        "each renewal did try the CA"
    );
    assert_eq!(host.count(Event::AcmeInstalled), 0);
    host.stop();
}

#[test]
fn without_a_certificate_the_placeholder_serves_until_the_ca_answers() {
    let dir = support::temp_dir("acme-placeholder");
    let (directory, connections) = dead_directory();
    let mut options = acme_options(&directory, &dir.join("state"));
    options.first_retry_wait = Duration::from_millis(200);
    let host = Host::start(free_port(), options);
    wait_until("a failed first order", || {
        host.count(Event::AcmeFailed) >= 1
    });
    for name in host.hosts() {
        let fetched = fetch(
            host.server().https_addr(),
            &name,
            true,
            config(Trust::Anyone, &[]),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(fetched.status_line, "HTTP/1.1 200 OK");
        let leaf = String::from_utf8_lossy(&fetched.leaf).into_owned();
        assert!(
            leaf.contains("placeholder (self-signed)"),
            "{name}: not the placeholder"
        );
    }
    assert!(connections.load(Ordering::Relaxed) >= 1);
    // A client that checks certificates refuses the placeholder: it is no one's certificate.
    let (ca, _, _) = ca_and_leaf(&["x.test"], SystemTime::now(), SystemTime::now() + days(1));
    std::fs::write(dir.join("other-ca.pem"), ca).unwrap();
    let hosts = host.hosts();
    assert!(
        fetch(
            host.server().https_addr(),
            &hosts[0],
            true,
            config(Trust::Ca(&dir.join("other-ca.pem")), &[])
        )
        .is_err()
    );
    host.stop();
}

#[test]
fn acme_without_agreeing_to_the_terms_or_without_port_80_refuses_to_start() {
    let dir = support::temp_dir("acme-refuse");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut options = ServeOptions::new(BUILT_COMPONENT.into(), dir.clone());
    options.https = ([127, 0, 0, 1], 0).into();
    options.http = ([127, 0, 0, 1], 0).into();
    let mut acme = acme_options("https://127.0.0.1:9/dir", &dir);
    acme.terms_agreed = false;
    options.acme = Some(acme.clone());
    let error = runtime
        .block_on(Server::start(&options))
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("--acme-agree-terms"), "{error}");
    acme.terms_agreed = true;
    options.acme = Some(acme);
    options.no_http = true;
    let error = runtime
        .block_on(Server::start(&options))
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("--no-http"), "{error}");
}
