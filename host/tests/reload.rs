//! Reloading the site while it serves (host/src/reload.rs, watcher.rs): thousands of real rustls
//! connections across a swap of the certificate or of the component, none failed and only the new
//! site served after it; reloads that fail and keep the old site; the directory of a Kubernetes
//! Secret volume flipped; and two hosts that share a ticket-key file resuming each other's
//! sessions.

#[path = "../../tests/client.rs"]
mod client;

mod support;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tls_site::{BUILT_COMPONENT, BUILT_PORTABLE_COMPONENT, Event, ServeOptions, Server, certs};

/// Connections in all, a second (spread over `CLIENTS` threads), and before the reload.
const CONNECTIONS: usize = 2_000;
const RATE: f64 = 250.0;
const CLIENTS: usize = 4;
const BEFORE_RELOAD: usize = 500;
/// Connections begun after the swap, at least.
const AFTER_SWAP: usize = 500;
/// A generous bound on waiting for something that should come in seconds.
const PATIENCE: Duration = Duration::from_secs(120);

const HOST: &str = "tls-site.localhost";

/// A development CA and its leaf for every host name, in `dir`; returns the leaf.
fn make_certs(dir: &Path) -> Vec<u8> {
    certs::dev_certs(dir, &support::site_hosts()).unwrap();
    leaf_in(dir)
}

fn leaf_in(dir: &Path) -> Vec<u8> {
    certs::load_dir(dir).unwrap()[0].chain[0].clone()
}

/// Replaces the pair served from `to` with the one in `from` (the CA file stays).
fn copy_pair(from: &Path, to: &Path) {
    for file in ["dev.chain.pem", "dev.key.pem"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

fn options(certs: &Path) -> ServeOptions {
    let mut options = ServeOptions::new(BUILT_COMPONENT.into(), certs.to_owned());
    options.https = ([127, 0, 0, 1], 0).into();
    options.no_http = true;
    // Reloads only when a test asks, unless it tests the watch.
    options.watch = Duration::ZERO;
    options
}

fn start(options: &ServeOptions) -> (tokio::runtime::Runtime, Server) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(Server::start(options)).unwrap();
    (runtime, server)
}

fn stop(runtime: tokio::runtime::Runtime, server: Server) -> Arc<tls_site::Stats> {
    runtime
        .block_on(async { tokio::time::timeout(PATIENCE, server.shutdown()).await })
        .unwrap()
}

/// A client that trusts `cas` and never resumes (a resumed handshake shows no certificate).
fn client_trusting(cas: &[&Path]) -> ClientConfig {
    let provider = rustls::crypto::ring::default_provider();
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(CertificateDer::from_pem_file(ca).unwrap())
            .unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config
}

/// One connection of the load: whether it began after the swap, and what it got.
struct Made {
    after_swap: bool,
    /// The leaf certificate served.
    got: Result<Vec<u8>, String>,
}

/// `CLIENTS` threads making connections to `addr`, about `RATE` a second together, each a full
/// handshake and a whole page; `reload` runs once `BEFORE_RELOAD` are made, and the load goes on
/// until `CONNECTIONS` are made and `AFTER_SWAP` of them began after `reload` returned.
fn load_across(
    addr: SocketAddr,
    client: ClientConfig,
    page_bytes: usize,
    reload: impl FnOnce(),
) -> Vec<Made> {
    let made = Arc::new(Mutex::new(Vec::<Made>::new()));
    let (swapped, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let counted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(CLIENTS as f64 / RATE);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let (made, swapped, done, counted, client) = (
                made.clone(),
                swapped.clone(),
                done.clone(),
                counted.clone(),
                client.clone(),
            );
            std::thread::spawn(move || {
                // Staggered, so the threads' connections interleave evenly.
                let mut next = started + interval.mul_f64(index as f64 / CLIENTS as f64);
                while !done.load(Ordering::SeqCst) {
                    if let Some(ahead) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(ahead);
                    }
                    next += interval;
                    let after_swap = swapped.load(Ordering::SeqCst);
                    let got = client::fetch(addr, HOST, true, client.clone()).and_then(|page| {
                        if page.status_line == "HTTP/1.1 200 OK" && page.body.len() == page_bytes {
                            Ok(page.leaf)
                        } else {
                            Err(format!(
                                "{} with {} bytes",
                                page.status_line,
                                page.body.len()
                            ))
                        }
                    });
                    made.lock().unwrap().push(Made { after_swap, got });
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let wait_until = |what: &str, condition: &dyn Fn() -> bool| {
        let deadline = Instant::now() + PATIENCE * 5;
        while !condition() {
            assert!(Instant::now() < deadline, "never {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_until("made the connections before the reload", &|| {
        counted.load(Ordering::SeqCst) >= BEFORE_RELOAD
    });
    reload();
    swapped.store(true, Ordering::SeqCst);
    let at_swap = counted.load(Ordering::SeqCst);
    wait_until("made the connections after the swap", &|| {
        let now = counted.load(Ordering::SeqCst);
        now >= CONNECTIONS && now >= at_swap + AFTER_SWAP
    });
    done.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let made = std::mem::take(&mut *made.lock().unwrap());
    eprintln!(
        "{} connections in {:.1} s ({:.0} a second), {} begun after the swap",
        made.len(),
        started.elapsed().as_secs_f64(),
        made.len() as f64 / started.elapsed().as_secs_f64(),
        made.iter().filter(|m| m.after_swap).count(),
    );
    made
}

/// The connections that failed, a few of them told.
fn assert_none_failed(made: &[Made]) {
    let failed: Vec<&String> = made.iter().filter_map(|m| m.got.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} connections failed, e.g. {:?}",
        failed.len(),
        made.len(),
        &failed[..failed.len().min(5)]
    );
}

fn page_bytes(server: &Server) -> usize {
    server
        .resources()
        .iter()
        .find(|r| r.hosts.iter().any(|h| h == HOST))
        .unwrap()
        .bytes as usize
}

/// SIGHUP's reload, under load: the certificate directory now holds another certificate. No
/// connection fails; those begun after the swap all get the new certificate.
#[test]
fn a_reload_under_load_swaps_the_certificate_and_no_connection_fails() {
    let (served, other) = (
        support::temp_dir("reload-cert-served"),
        support::temp_dir("reload-cert-other"),
    );
    let (old_leaf, new_leaf) = (make_certs(&served), make_certs(&other));
    let client = client_trusting(&[
        &served.join(certs::DEV_CA_FILE),
        &other.join(certs::DEV_CA_FILE),
    ]);
    let (runtime, server) = start(&options(&served));
    let made = load_across(server.https_addr(), client, page_bytes(&server), || {
        copy_pair(&other, &served);
        let reloaded = runtime.block_on(server.reload("test")).unwrap();
        assert_eq!(reloaded.certificates, 1);
    });
    assert!(made.len() >= CONNECTIONS);
    assert_none_failed(&made);
    fn leaf(made: &Made) -> &Vec<u8> {
        made.got.as_ref().unwrap()
    }
    assert!(
        made.iter()
            .filter(|m| m.after_swap)
            .all(|m| *leaf(m) == new_leaf),
        "a connection begun after the swap got the old certificate"
    );
    assert!(
        made.iter().any(|m| *leaf(m) == old_leaf),
        "the old one served before"
    );
    let stats = stop(runtime, server);
    assert_eq!(stats.get(Event::Served), made.len() as u64, "{stats}");
    assert_eq!(
        (
            stats.get(Event::ReloadInstalled),
            stats.get(Event::ReloadFailed)
        ),
        (1, 0)
    );
}

/// The same, swapping the component: the keyless build for the portable one, moved over the
/// file the host was started with. Both serve the same groups and bytes, so the client cannot
/// tell them apart; the sandbox says which file it was made from. Which connections get the new
/// sandbox is the same pointer swap as the certificate test's, which the client can see.
#[test]
fn a_reload_under_load_swaps_the_component_and_no_connection_fails() {
    let dir = support::temp_dir("reload-component");
    make_certs(&dir);
    let component = dir.join("site.wasm");
    std::fs::copy(BUILT_COMPONENT, &component).unwrap();
    let mut options = options(&dir);
    options.component = component.clone();
    let (runtime, server) = start(&options);
    let sha256 = |path: &str| -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &std::fs::read(path).unwrap());
        digest
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    };
    assert_eq!(server.sandbox().component_sha256(), sha256(BUILT_COMPONENT));
    let client = client_trusting(&[&dir.join(certs::DEV_CA_FILE)]);
    let made = load_across(server.https_addr(), client, page_bytes(&server), || {
        // As an operator would deploy it: the new file moved over the old.
        let staged = dir.join("site.wasm.new");
        std::fs::copy(BUILT_PORTABLE_COMPONENT, &staged).unwrap();
        std::fs::rename(&staged, &component).unwrap();
        runtime.block_on(server.reload("test")).unwrap();
    });
    assert_none_failed(&made);
    assert!(made.iter().any(|m| m.after_swap));
    assert_eq!(
        server.sandbox().component_sha256(),
        sha256(BUILT_PORTABLE_COMPONENT),
        "the portable component is served now"
    );
    let stats = stop(runtime, server);
    assert_eq!(stats.get(Event::Served), made.len() as u64, "{stats}");
    assert_eq!(stats.get(Event::ReloadInstalled), 1);
}

/// Reloads that cannot work: each says why, is counted, and the old site goes on serving the
/// old certificate; a good reload after them still works.
#[test]
fn a_failed_reload_keeps_the_old_site_serving() {
    let (served, other, partial) = (
        support::temp_dir("reload-broken-served"),
        support::temp_dir("reload-broken-other"),
        support::temp_dir("reload-broken-partial"),
    );
    let (old_leaf, new_leaf) = (make_certs(&served), make_certs(&other));
    let mut hosts = support::site_hosts();
    let uncovered = hosts.pop().unwrap();
    certs::dev_certs(&partial, &hosts).unwrap();
    let component = served.join("site.wasm");
    std::fs::copy(BUILT_COMPONENT, &component).unwrap();
    let ticket_file = served.join("ticket.keys");
    std::fs::write(&ticket_file, random_bytes(80)).unwrap();
    let mut options = options(&served);
    options.component = component.clone();
    options.ticket_keys = Some(ticket_file.clone());
    let (runtime, server) = start(&options);
    let client = client_trusting(&[
        &served.join(certs::DEV_CA_FILE),
        &other.join(certs::DEV_CA_FILE),
    ]);
    let served_leaf = || {
        client::fetch(server.https_addr(), HOST, true, client.clone())
            .unwrap()
            .leaf
    };
    let reload_fails_saying = |says: &str| {
        let error = runtime
            .block_on(server.reload("test"))
            .expect_err("the reload must fail")
            .to_string();
        assert!(error.contains(says), "{says}: {error}");
        assert_eq!(
            served_leaf(),
            old_leaf,
            "still the old site, after: {error}"
        );
    };
    let (chain, key) = (served.join("dev.chain.pem"), served.join("dev.key.pem"));
    let (old_chain, old_key) = (std::fs::read(&chain).unwrap(), std::fs::read(&key).unwrap());

    // The new chain beside the old key: a copy stopped halfway.
    std::fs::copy(other.join("dev.chain.pem"), &chain).unwrap();
    reload_fails_saying("does not match the certificate");
    // A certificate that leaves a host name of the site uncovered.
    copy_pair(&partial, &served);
    reload_fails_saying(&uncovered);
    std::fs::write(&chain, &old_chain).unwrap();
    std::fs::write(&key, &old_key).unwrap();
    // A component cut short.
    let wasm = std::fs::read(BUILT_COMPONENT).unwrap();
    std::fs::write(&component, &wasm[..wasm.len() / 2]).unwrap();
    reload_fails_saying("not a tls-site component");
    std::fs::write(&component, &wasm).unwrap();
    // A ticket-key file with a newline after the key.
    std::fs::write(&ticket_file, [random_bytes(80), b"\n".to_vec()].concat()).unwrap();
    reload_fails_saying("81 bytes is not a whole number of 80-byte keys");
    std::fs::write(&ticket_file, random_bytes(80)).unwrap();

    copy_pair(&other, &served);
    runtime.block_on(server.reload("test")).unwrap();
    assert_eq!(served_leaf(), new_leaf);
    let stats = stop(runtime, server);
    assert_eq!(
        (
            stats.get(Event::ReloadFailed),
            stats.get(Event::ReloadInstalled)
        ),
        (4, 1),
        "{stats}"
    );
    assert_eq!(stats.get(Event::Served), 5, "{stats}");
}

fn random_bytes(count: usize) -> Vec<u8> {
    use std::io::Read as _;
    let mut bytes = vec![0; count];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes
}

/// A Kubernetes Secret volume, as kubelet updates it: the files are symlinks through `..data`,
/// which flips to a new directory at once. The watch sees it and reloads, with no signal.
#[test]
fn a_secret_volume_update_is_served_without_a_signal() {
    use std::os::unix::fs::symlink;
    let (volume, first, second) = (
        support::temp_dir("reload-secret-volume"),
        support::temp_dir("reload-secret-first"),
        support::temp_dir("reload-secret-second"),
    );
    let (old_leaf, new_leaf) = (make_certs(&first), make_certs(&second));
    let files = ["dev.chain.pem", "dev.key.pem"];
    for (version, from) in [("..2026_12_04_1", &first), ("..2026_12_04_2", &second)] {
        std::fs::create_dir(volume.join(version)).unwrap();
        for file in files {
            std::fs::copy(from.join(file), volume.join(version).join(file)).unwrap();
        }
    }
    symlink("..2026_12_04_1", volume.join("..data")).unwrap();
    for file in files {
        symlink(format!("..data/{file}"), volume.join(file)).unwrap();
    }
    let mut options = options(&volume);
    options.watch = Duration::from_millis(100);
    let (runtime, server) = start(&options);
    let client = client_trusting(&[
        &first.join(certs::DEV_CA_FILE),
        &second.join(certs::DEV_CA_FILE),
    ]);
    let served_leaf = || {
        client::fetch(server.https_addr(), HOST, true, client.clone())
            .unwrap()
            .leaf
    };
    assert_eq!(served_leaf(), old_leaf);

    // kubelet's atomic update: a new symlink, renamed over `..data`.
    symlink("..2026_12_04_2", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut fetched = 0;
    while served_leaf() != new_leaf {
        fetched += 1;
        assert!(Instant::now() < deadline, "the flip was never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = stop(runtime, server);
    assert_eq!(
        (
            stats.get(Event::ReloadInstalled),
            stats.get(Event::ReloadFailed)
        ),
        (1, 0),
        "one reload, once both files were in place: {stats}"
    );
    assert_eq!(stats.get(Event::Served), fetched + 2);
}

/// Two hosts (two replicas behind a load balancer) given the same `--ticket-keys` file: a session
/// begun on one resumes on the other, both ways. A host with its own keys does not resume it.
#[test]
fn two_hosts_sharing_a_ticket_key_file_resume_each_others_sessions() {
    let dir = support::temp_dir("reload-shared-tickets");
    make_certs(&dir);
    let ticket_file = dir.join("ticket.keys");
    std::fs::write(&ticket_file, random_bytes(2 * 80)).unwrap();
    let mut options = options(&dir);
    options.ticket_keys = Some(ticket_file);
    let (runtime_one, one) = start(&options);
    let (runtime_other, other) = start(&options);
    options.ticket_keys = None;
    let (runtime_own, own_keys) = start(&options);

    // One client, one session store: as a browser returning to the same name.
    let client = client::config(client::Trust::Ca(&dir.join(certs::DEV_CA_FILE)), &[]);
    let handshake = |server: &Server| {
        let page = client::fetch(server.https_addr(), HOST, true, client.clone()).unwrap();
        assert_eq!(page.status_line, "HTTP/1.1 200 OK");
        page.handshake.unwrap()
    };
    assert_eq!(handshake(&one), HandshakeKind::Full);
    assert_eq!(handshake(&other), HandshakeKind::Resumed, "one's ticket");
    assert_eq!(
        handshake(&one),
        HandshakeKind::Resumed,
        "the other's ticket"
    );
    assert_eq!(
        handshake(&own_keys),
        HandshakeKind::Full,
        "a ticket from the shared keys does not open with a host's own"
    );
    for (runtime, server) in [
        (runtime_one, one),
        (runtime_other, other),
        (runtime_own, own_keys),
    ] {
        stop(runtime, server);
    }
}
