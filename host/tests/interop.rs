//! Interop: the real host and component against every TLS client this machine has (curl,
//! `openssl s_client`, Python's `ssl`, rustls, headless Chromium) for every host name, each
//! checked for the bytes it got and, where the client can say, the key-exchange group.
//!
//! These run outside programs, so they are ignored by default (the second test layer):
//! `cargo test --release -p tls-site --test interop -- --ignored`. A missing program fails with
//! the Debian package that provides it: curl, openssl, python3, chromium, libnss3-tools.

#[path = "../../tests/client.rs"]
mod client;

use client::{Trust, config_for_groups, fetch};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tls_site::sandbox::{Ending, Outcome, Resource, Timeouts};
use tls_site::{BUILT_COMPONENT, ServeOptions, Server, certs};

/// The site, served on loopback by the host's sandbox from an accept loop of the test's own, which
/// keeps every connection's outcome (the access log's record) for the checks.
struct Site {
    addr: SocketAddr,
    ca: PathBuf,
    resources: Vec<Resource>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
}

/// The site, and the suite's turn: one client program at a time, so that the connections recorded
/// while a test holds it are its client's.
fn site() -> (&'static Site, MutexGuard<'static, ()>) {
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    (shared_site(), turn)
}

fn shared_site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tls-site-interop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let resources = tls_site::inspect::site_resources(
                    Path::new(BUILT_COMPONENT),
                    Default::default(),
                )
                .await
                .unwrap();
                certs::dev_certs(&dir, &tls_site::inspect::hosts_default_first(&resources))
                    .unwrap();
                let mut options = ServeOptions::new(BUILT_COMPONENT.into(), dir.clone());
                options.https = ([127, 0, 0, 1], 0).into();
                options.no_http = true;
                let server = Server::start(&options).await.unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let outcomes = Arc::new(Mutex::new(Vec::new()));
                let ca = dir.join(certs::DEV_CA_FILE);
                let site = Site {
                    addr: listener.local_addr().unwrap(),
                    ca,
                    resources,
                    outcomes: outcomes.clone(),
                };
                sender.send(site).unwrap();
                let timeouts = Timeouts {
                    handshake: Duration::from_secs(10),
                    stall: Duration::from_secs(10),
                    connection: Duration::from_secs(30),
                };
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let (sandbox, outcomes) = (server.sandbox(), outcomes.clone());
                    tokio::spawn(async move {
                        let outcome = sandbox.serve_connection(stream, timeouts).await.outcome;
                        outcomes.lock().unwrap().push(outcome);
                    });
                }
            });
        });
        receiver.recv().unwrap()
    })
}

impl Site {
    /// Every host name with its resource.
    fn hosts(&self) -> impl Iterator<Item = (&str, &Resource)> {
        self.resources.iter().flat_map(|resource| {
            resource
                .hosts
                .iter()
                .map(move |host| (host.as_str(), resource))
        })
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/", self.addr.port())
    }

    /// The outcomes of the connections for SNI `host` so far.
    fn served(&self, host: &str) -> Vec<tls_site::sandbox::Served> {
        let outcomes = self.outcomes.lock().unwrap();
        let served = outcomes.iter().filter_map(|outcome| match outcome {
            Outcome::Served(served) if served.server_name.as_deref() == Some(host) => {
                Some(served.clone())
            }
            _ => None,
        });
        served.collect()
    }
}

/// The path of `name`, or a failure that says which Debian package to install.
fn program(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|file| file.is_file())
    });
    found.unwrap_or_else(|| panic!("{name} is not installed: `apt-get install {package}` (.ci/run installs it for this suite)"))
}

fn run(command: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The body of an HTTP/1.1 response (head, blank line, body).
fn body(response: &[u8]) -> &[u8] {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no response head: {:?}",
                String::from_utf8_lossy(&response[..response.len().min(200)])
            )
        });
    &response[split + 4..]
}

fn request(host: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

#[test]
#[ignore = "outside programs: curl"]
fn curl_gets_every_host_names_bytes() {
    let ((site, _turn), curl) = (site(), program("curl", "curl"));
    for (host, resource) in site.hosts() {
        let output = run(
            Command::new(&curl)
                .args(["--silent", "--show-error", "--fail", "--cacert"])
                .arg(&site.ca)
                .arg("--resolve")
                .arg(format!("{host}:{}:127.0.0.1", site.addr.port()))
                .arg(site.url(host)),
            b"",
        );
        assert!(
            output.status.success(),
            "curl {host}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(sha256_hex(&output.stdout), resource.sha256, "curl {host}");
    }
}

#[test]
#[ignore = "outside programs: openssl"]
fn openssl_s_client_gets_every_host_names_bytes() {
    let ((site, _turn), openssl) = (site(), program("openssl", "openssl"));
    for (host, resource) in site.hosts() {
        let started = Instant::now();
        let output = run(
            Command::new(&openssl)
                .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
                .arg(site.addr.to_string())
                .args(["-servername", host, "-CAfile"])
                .arg(&site.ca),
            &request(host),
        );
        assert!(
            output.status.success(),
            "openssl {host}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            sha256_hex(body(&output.stdout)),
            resource.sha256,
            "openssl s_client {host}"
        );
        // s_client waits for the server's end of stream: it comes at once, not after a drain.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "openssl {host} took {:?}",
            started.elapsed()
        );
    }
}

/// Python's `ssl` (the OpenSSL it was built with), with the default context: certificate and
/// name checked, and an end without close_notify would be an error.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
context = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", port)) as raw:
    with context.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
        print(tls.version(), file=sys.stderr)
sys.stdout.buffer.write(response)
"#;

#[test]
#[ignore = "outside programs: python3"]
fn python_ssl_gets_every_host_names_bytes() {
    let ((site, _turn), python) = (site(), program("python3", "python3"));
    for (host, resource) in site.hosts() {
        let output = run(
            Command::new(&python)
                .args(["-c", PYTHON_CLIENT, host, &site.addr.port().to_string()])
                .arg(&site.ca),
            b"",
        );
        assert!(
            output.status.success(),
            "python {host}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stderr).trim(),
            "TLSv1.3",
            "python {host}"
        );
        assert_eq!(
            sha256_hex(body(&output.stdout)),
            resource.sha256,
            "python ssl {host}"
        );
    }
}

#[test]
#[ignore = "outside programs: none, but part of the suite"]
fn rustls_gets_every_host_names_bytes_with_the_hybrid_group_and_without() {
    let (site, _turn) = site();
    let x25519 = rustls::crypto::ring::kx_group::X25519;
    for (host, resource) in site.hosts() {
        for (groups, expected) in [
            (
                vec![client::X25519MLKEM768, x25519],
                rustls::NamedGroup::X25519MLKEM768,
            ),
            (vec![x25519], rustls::NamedGroup::X25519),
        ] {
            let fetched = fetch(
                site.addr,
                host,
                true,
                config_for_groups(Trust::Ca(&site.ca), groups),
            )
            .unwrap();
            assert_eq!(fetched.key_exchange, Some(expected), "rustls {host}");
            assert_eq!(sha256_hex(&fetched.body), resource.sha256, "rustls {host}");
        }
    }
}

/// Headless Chromium (Debian's), trusting the development CA through an NSS database in a
/// throwaway home: every host name is opened, and each connection it made is served whole, with
/// the hybrid group, and closed cleanly.
#[test]
#[ignore = "outside programs: chromium, certutil"]
fn chromium_negotiates_the_hybrid_group_for_every_host_name() {
    let ((site, _turn), chromium, certutil) = (
        site(),
        program("chromium", "chromium"),
        program("certutil", "libnss3-tools"),
    );
    let home =
        std::env::temp_dir().join(format!("tls-site-interop-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let nssdb = home.join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let database = format!("sql:{}", nssdb.display());
    for args in [
        vec!["-N", "-d", &database, "--empty-password"],
        vec![
            "-A",
            "-d",
            &database,
            "-n",
            "tls-site dev CA",
            "-t",
            "C,,",
            "-i",
        ],
    ] {
        let output = run(
            Command::new(&certutil)
                .args(&args)
                .args(args.contains(&"-A").then_some(&site.ca)),
            b"",
        );
        assert!(
            output.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for (host, resource) in site.hosts() {
        let before = site.served(host).len();
        let output = run(
            Command::new(&chromium)
                .env("HOME", &home)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                ])
                .args([
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ])
                .arg(format!(
                    "--user-data-dir={}",
                    home.join("profile").display()
                ))
                .args(["--timeout=20000", "--dump-dom"])
                .arg(site.url(host)),
            b"",
        );
        let dom = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "chromium {host}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if resource.content_type.starts_with("text/html") {
            assert!(
                dom.contains("</html>") && !dom.contains("ERR_"),
                "chromium {host} did not show the page: {dom}"
            );
        }
        // The connection is logged once the guest has returned, a moment after the client is done.
        let deadline = Instant::now() + Duration::from_secs(5);
        let served = loop {
            let served = site.served(host);
            if served.len() > before || Instant::now() > deadline {
                break served[before..].to_vec();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            !served.is_empty(),
            "chromium {host}: no connection was served; it printed {dom}"
        );
        for connection in served {
            assert_eq!(
                connection.key_exchange.as_deref(),
                Some("X25519MLKEM768"),
                "chromium {host}"
            );
            assert_eq!(connection.resource, resource.hosts[0], "chromium {host}");
            assert!(connection.client_finished, "chromium {host}");
            assert_eq!(connection.ending, Ending::Clean, "chromium {host}");
        }
    }
}
