//! End-to-end: the `tls-site` binary as a user runs it, against curl, openssl and a rustls client,
//! and stopped with SIGTERM; and the isolation proof: a real client is served, and the host's
//! memory stays bounded, while hundreds of idle and a stream of garbage connections are open.

mod client;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_tls-site");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tls-site-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `tls-site inspect --json`, parsed.
fn inspect() -> Vec<serde_json::Value> {
    let output = Command::new(BINARY)
        .args(["inspect", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The binary, serving on free loopback ports with fresh development certificates.
struct Running {
    child: Child,
    https: SocketAddr,
    http: SocketAddr,
    certs: PathBuf,
    log: mpsc::Receiver<String>,
    /// What it logged before it was ready.
    startup: Vec<String>,
    /// Where /metrics answers, with `--metrics`.
    metrics: Option<SocketAddr>,
}

impl Running {
    fn start(name: &str) -> Running {
        Running::start_with(name, &[])
    }

    /// As `start`, with more `serve` options.
    fn start_with(name: &str, options: &[&str]) -> Running {
        let certs = temp_dir(name);
        let made = Command::new(BINARY)
            .arg("dev-certs")
            .arg("--out")
            .arg(&certs)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let mut child = Command::new(BINARY)
            .args([
                "serve",
                "--https",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--certs",
            ])
            .arg(&certs)
            .args(options)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, log) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
                let _ = sender.send(line);
            }
        });
        let mut startup = Vec::new();
        let ready = loop {
            let line = log
                .recv_timeout(Duration::from_secs(120))
                .expect("the server never said it was listening");
            if line.contains("listening on https://") {
                break line;
            }
            startup.push(line);
        };
        let address = |marker: &str| -> Option<SocketAddr> {
            let start = ready.find(marker)? + marker.len();
            ready[start..]
                .split([' ', ')', '/', ','])
                .next()?
                .parse()
                .ok()
        };
        let (https, http) = (
            address("listening on https://").unwrap(),
            address(" and http://").unwrap(),
        );
        let metrics = address("metrics on http://");
        Running {
            child,
            https,
            http,
            certs,
            log,
            startup,
            metrics,
        }
    }

    fn ca(&self) -> PathBuf {
        self.certs.join("dev-ca.pem")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(log: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = log
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

fn sha256_of_file(path: &Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn curl_fetches_every_resource_whole_and_follows_the_redirect() {
    let server = Running::start("curl");
    let out = temp_dir("curl-out");
    for resource in inspect() {
        let host = resource["hosts"][0].as_str().unwrap();
        let file = out.join(host);
        let status = Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--cacert"])
            .arg(server.ca())
            .arg("--resolve")
            .arg(format!("{host}:{}:127.0.0.1", server.https.port()))
            .arg("--output")
            .arg(&file)
            .arg(format!("https://{host}:{}/", server.https.port()))
            .status()
            .expect("curl is installed (.ci/run installs it)");
        assert!(status.success(), "curl {host}");
        assert_eq!(
            sha256_of_file(&file),
            resource["sha256"].as_str().unwrap(),
            "{host}"
        );
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            resource["bytes"].as_u64().unwrap()
        );
        let line = wait_for(&server.log, &format!("sni={host} resource={host}"));
        // What curl asked for, as it said it, beside what SNI chose.
        assert!(
            line.contains(" request=\"GET / HTTP/1.1\" ua=\"curl/"),
            "{line}"
        );
    }
    // Port 80's answer, as curl sees it.
    let head = Command::new("curl")
        .args([
            "--silent",
            "--include",
            "--header",
            "Host: tls-site.localhost",
        ])
        .arg(format!("http://{}/", server.http))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout);
    assert!(head.starts_with("HTTP/1.1 301"), "{head}");
    assert!(
        head.contains(&format!(
            "Location: https://tls-site.localhost:{}/",
            server.https.port()
        )),
        "{head}"
    );
    // And curl following that redirect, as a browser would: from port 80 to the page over HTTPS.
    let host = "tls-site.localhost";
    let followed = out.join("followed");
    let output = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--location",
            "--cacert",
        ])
        .arg(server.ca())
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", server.http.port()))
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", server.https.port()))
        .arg("--output")
        .arg(&followed)
        .args(["--write-out", "%{num_redirects} %{url_effective}"])
        .arg(format!("http://{host}:{}/", server.http.port()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("1 https://{host}:{}/", server.https.port()),
        "one redirect, ending at the HTTPS page"
    );
    let page = inspect()
        .into_iter()
        .find(|resource| resource["hosts"].as_array().unwrap().contains(&host.into()))
        .unwrap();
    assert_eq!(sha256_of_file(&followed), page["sha256"].as_str().unwrap());
}

/// The curve of the first certificate in `s_client`'s output (the leaf), as `openssl x509` names
/// it (`prime256v1` is P-256), or what `openssl x509` said instead.
fn leaf_curve(s_client_output: &str) -> String {
    let (begin, end) = ("-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----");
    let start = s_client_output
        .find(begin)
        .expect("s_client shows the leaf");
    let stop = s_client_output[start..].find(end).unwrap() + start + end.len();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-text"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    x509.stdin
        .take()
        .unwrap()
        .write_all(&s_client_output.as_bytes()[start..stop])
        .unwrap();
    let text = String::from_utf8(x509.wait_with_output().unwrap().stdout).unwrap();
    text.lines()
        .find_map(|line| line.trim().strip_prefix("ASN1 OID: "))
        .map_or(text.clone(), str::to_owned)
}

#[test]
fn openssl_sees_tls13_an_ecdsa_p256_key_and_http11() {
    let server = Running::start("openssl");
    let output = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(server.https.to_string())
        .args([
            "-servername",
            "tls-site.localhost",
            "-alpn",
            "h2,http/1.1",
            "-CAfile",
        ])
        .arg(server.ca())
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("TLSv1.3"), "{text}");
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("Peer signature type: ECDSA"), "{text}");
    assert!(text.contains("Server public key is 256 bit"), "{text}");
    assert_eq!(leaf_curve(&text), "prime256v1", "the leaf's key is P-256");
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut server = Running::start("sigterm");
    let page = client::fetch(
        server.https,
        "tls-site.localhost",
        true,
        client::config(client::Trust::Ca(&server.ca()), &[]),
    );
    assert!(page.is_ok());
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopped = wait_for(&server.log, "stopped");
    assert!(
        stopped.contains("served=1"),
        "the shutdown line counts connections: {stopped}"
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

/// `tls-site serve --certs certs` and its other `args`, until it exits or says it is listening:
/// its stderr, and whether it exited (with success or not).
fn serve_until_ready_or_exit(certs: &Path, args: &[&str]) -> (String, Option<bool>) {
    let mut child = Command::new(BINARY)
        .args(["serve", "--https", "127.0.0.1:0", "--no-http", "--certs"])
        .arg(certs)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        stderr.push_str(&line);
        stderr.push('\n');
        if line.contains("listening on https://") {
            let _ = child.kill();
            let _ = child.wait();
            return (stderr, None);
        }
    }
    (stderr, Some(child.wait().unwrap().success()))
}

/// Writes `dev.chain.pem` (self-signed, for every host name of the site, expiring at
/// `not_after`) and `dev.key.pem` into a fresh directory for `name`.
fn certificate_expiring(name: &str, not_after: (i32, u8, u8)) -> PathBuf {
    let dir = temp_dir(name);
    let hosts: Vec<String> = inspect()
        .iter()
        .flat_map(|resource| resource["hosts"].as_array().unwrap().clone())
        .map(|host| host.as_str().unwrap().to_owned())
        .collect();
    let mut params = rcgen::CertificateParams::new(hosts).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let certificate = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("dev.chain.pem"), certificate.pem()).unwrap();
    std::fs::write(dir.join("dev.key.pem"), key.serialize_pem()).unwrap();
    dir
}

#[test]
fn serve_refuses_a_key_that_is_not_its_certificates_and_names_the_file() {
    let certs = certificate_expiring("mismatch", (2100, 1, 1));
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(certs.join("dev.key.pem"), other.serialize_pem()).unwrap();
    let (stderr, exited) = serve_until_ready_or_exit(&certs, &[]);
    assert_eq!(exited, Some(false), "{stderr}");
    let named = format!(
        "{}: does not match the certificate in {}",
        certs.join("dev.key.pem").display(),
        certs.join("dev.chain.pem").display()
    );
    assert!(stderr.contains(&named), "{stderr}");
}

/// The site's files live in each instance's memory: a cap below what the site starts with is
/// refused at start, naming the flag, rather than failing every connection.
#[test]
fn serve_refuses_an_instance_memory_smaller_than_the_site_and_names_the_flag() {
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs");
    let (stderr, exited) = serve_until_ready_or_exit(&certs, &["--instance-memory", "1"]);
    assert_eq!(exited, Some(false), "{stderr}");
    assert!(
        stderr.contains("larger than `--instance-memory` lets an instance have (1 MiB)")
            && stderr.contains("raise `--instance-memory`"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_an_expired_certificate_unless_allowed_and_says_so() {
    let certs = certificate_expiring("expired", (2021, 1, 1));
    let (stderr, exited) = serve_until_ready_or_exit(&certs, &[]);
    assert_eq!(exited, Some(false), "{stderr}");
    assert!(
        stderr.contains("dev.chain.pem: the certificate expired at 2021-01-01T00:00:00Z")
            && stderr.contains("--allow-expired"),
        "{stderr}"
    );

    let (stderr, exited) = serve_until_ready_or_exit(&certs, &["--allow-expired"]);
    assert_eq!(exited, None, "it serves: {stderr}");
    assert!(
        stderr.contains("WARNING") && stderr.contains("dev.chain.pem: the certificate expired"),
        "{stderr}"
    );
}

/// SIGHUP reloads: a new certificate in the directory is served without a restart, the log says
/// so, and a SIGHUP that finds a broken directory keeps the certificate served.
#[test]
fn sighup_reloads_the_certificates_and_a_bad_directory_keeps_the_old() {
    let server = Running::start_with("sighup", &["--watch", "0"]);
    let leaf_for = |ca: &Path| {
        client::fetch(
            server.https,
            "tls-site.localhost",
            true,
            client::config(client::Trust::Ca(ca), &[]),
        )
        .unwrap()
        .leaf
    };
    let old = leaf_for(&server.ca());
    let hangup = || {
        let sent = Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };

    let chain = server.certs.join("dev.chain.pem");
    let old_chain = std::fs::read(&chain).unwrap();
    std::fs::write(&chain, "not a certificate").unwrap();
    hangup();
    let failed = wait_for(&server.log, "RELOAD FAILED (SIGHUP)");
    assert!(failed.contains("dev.chain.pem"), "{failed}");
    assert_eq!(leaf_for(&server.ca()), old);
    std::fs::write(&chain, old_chain).unwrap();

    let other = temp_dir("sighup-other");
    let made = Command::new(BINARY)
        .arg("dev-certs")
        .arg("--out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success());
    for file in ["dev.chain.pem", "dev.key.pem"] {
        std::fs::copy(other.join(file), server.certs.join(file)).unwrap();
    }
    hangup();
    wait_for(&server.log, "reload (SIGHUP)");
    let new = leaf_for(&other.join("dev-ca.pem"));
    assert_ne!(new, old);
}

#[test]
fn inspect_lists_every_resource_with_one_default() {
    let listing = inspect();
    assert!(listing.len() >= 3);
    assert_eq!(listing.iter().filter(|r| r["default"] == true).count(), 1);
    for resource in &listing {
        assert!(resource["hosts"].as_array().is_some_and(|h| !h.is_empty()));
        assert_eq!(resource["sha256"].as_str().unwrap().len(), 64);
        assert!(resource["bytes"].as_u64().unwrap() > 0);
        assert!(resource["content_type"].is_string());
    }
}

/// The host's resident memory now and at its peak (VmRSS, VmHWM), in bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|line| line.starts_with(name)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The bound the isolation proof holds the host to: its peak resident memory, with 500 idle
/// and a stream of garbage connections, plus real clients (measured: 67 MiB after 21,000 garbage
/// connections; docs/performance.md's "Under attack" gives the 1000-connection figure).
const HOST_MEMORY_BOUND: u64 = 128 << 20;

#[test]
fn with_500_idle_and_a_stream_of_garbage_connections_a_real_client_still_gets_the_right_bytes() {
    // Idle clients stay idle for the whole test: the hello timeout is far away.
    let server = Running::start_with("isolation", &["--hello-timeout", "600", "--stats", "1"]);
    let idle: Vec<std::net::TcpStream> = (0..500)
        .map(|_| std::net::TcpStream::connect(server.https).unwrap())
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let garbage_senders: Vec<_> = (0..2)
        .map(|seed: u8| {
            let (stop, addr) = (stop.clone(), server.https);
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut sent = 0u32;
                let garbage: Vec<u8> = (0..2048u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
                    .collect();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut socket = std::net::TcpStream::connect(addr).unwrap();
                    socket
                        .set_read_timeout(Some(Duration::from_secs(60)))
                        .unwrap();
                    let _ = socket.write_all(&garbage);
                    let _ = socket.read_to_end(&mut Vec::new());
                    sent += 1;
                }
                sent
            })
        })
        .collect();

    let config = || client::config(client::Trust::Ca(&server.ca()), &[]);
    for round in 0..3 {
        for resource in inspect() {
            let host = resource["hosts"][0].as_str().unwrap();
            let fetched = client::fetch(server.https, host, true, config())
                .unwrap_or_else(|e| panic!("round {round}, {host}: {e}"));
            use sha2::Digest;
            let digest: String = sha2::Sha256::digest(&fetched.body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                digest,
                resource["sha256"].as_str().unwrap(),
                "round {round}, {host}"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let garbage: u32 = garbage_senders
        .into_iter()
        .map(|sender| sender.join().unwrap())
        .sum();
    assert!(garbage > 0);

    let (rss, peak) = memory_of(server.child.id());
    eprintln!(
        "host memory with {} idle connections after {garbage} garbage connections: rss {} KiB, peak {} KiB",
        idle.len(),
        rss >> 10,
        peak >> 10
    );
    assert!(
        peak < HOST_MEMORY_BOUND,
        "peak resident memory {} MiB, bound {} MiB",
        peak >> 20,
        HOST_MEMORY_BOUND >> 20
    );
    // The periodic stats line counts the garbage as TLS failures.
    let stats = wait_for(&server.log, "served=");
    assert!(
        stats.contains("stats: open=") && stats.contains("tls-failed="),
        "{stats}"
    );
    drop(idle);
}

#[test]
fn hitting_a_limit_says_which_and_clients_wait_rather_than_fail() {
    // Ten connections at most, idle ones closed after 1 s, and a guest memory budget that allows
    // two instances of 16 MiB.
    let options = [
        "--max-connections",
        "10",
        "--hello-timeout",
        "1",
        "--guest-memory",
        "32",
        "--instance-memory",
        "16",
    ];
    let server = Running::start_with("limits", &options);
    let budget = server.startup.iter().find(|line| {
        line.contains("limit: 2 instances at work at once, not 256 (--max-instances)")
    });
    assert!(budget.is_some(), "{:?}", server.startup);
    let idle: Vec<std::net::TcpStream> = (0..30)
        .map(|_| std::net::TcpStream::connect(server.https).unwrap())
        .collect();
    wait_for(
        &server.log,
        "limit: the most connections allowed are open (--max-connections)",
    );
    // This client waits in the backlog until idle ones time out, then is served.
    let page = client::fetch(
        server.https,
        "tls-site.localhost",
        true,
        client::config(client::Trust::Ca(&server.ca()), &[]),
    );
    assert!(page.is_ok(), "{:?}", page.err());
    drop(idle);
}

/// A plain HTTP GET with curl: the status and the body.
fn http_get(url: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--write-out", "\n%{http_code}"])
        .arg(url)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

/// A certificate file's notAfter, in seconds since the Unix epoch, as openssl and date read it.
fn not_after_of(chain: &Path) -> i64 {
    let output = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-in"])
        .arg(chain)
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let date = text.trim().strip_prefix("notAfter=").unwrap().to_owned();
    let output = Command::new("date")
        .args(["-u", "+%s", "-d", &date])
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The operator's view, with `--metrics` and `--log-format json`: /healthz and /readyz answer;
/// every log line is a JSON object, and each connection's has what curl asked for (method, path,
/// User-Agent) beside what was served; a scrape parses as Prometheus exposition, and its counters
/// are the connections made and the bytes their lines say, its certificate gauges the files'
/// notAfter, its build info the component's digest.
#[test]
fn metrics_and_json_logs_count_and_describe_the_connections_made() {
    let server = Running::start_with(
        "metrics",
        &["--metrics", "127.0.0.1:0", "--log-format", "json"],
    );
    for line in &server.startup {
        let object: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(
            object["time"].is_string() && object["message"].is_string(),
            "{line}"
        );
    }
    let metrics = server
        .metrics
        .expect("the ready line says where the metrics are");
    assert_eq!(
        http_get(&format!("http://{metrics}/healthz")),
        (200, "ok\n".into())
    );
    assert_eq!(http_get(&format!("http://{metrics}/readyz")).0, 200);
    assert_eq!(http_get(&format!("http://{metrics}/elsewhere")).0, 404);

    // Three connections for the page, two for a paper, each with a path and an agent of its own.
    let resources = inspect();
    let host_of = |default: bool| {
        let resource = resources
            .iter()
            .find(|resource| resource["default"].as_bool() == Some(default))
            .unwrap();
        resource["hosts"][0].as_str().unwrap().to_owned()
    };
    let made = [(host_of(true), 3), (host_of(false), 2)];
    let mut agents = std::collections::BTreeSet::new();
    for (host, times) in &made {
        for n in 0..*times {
            let agent = format!("ops-test/{host}/{n}");
            let status = Command::new("curl")
                .args([
                    "--silent",
                    "--show-error",
                    "--fail",
                    "--output",
                    "/dev/null",
                ])
                .args(["--user-agent", &agent, "--cacert"])
                .arg(server.ca())
                .arg("--resolve")
                .arg(format!("{host}:{}:127.0.0.1", server.https.port()))
                .arg(format!(
                    "https://{host}:{}/some/path?n={n}",
                    server.https.port()
                ))
                .status()
                .unwrap();
            assert!(status.success(), "curl {host}");
            agents.insert(agent);
        }
    }

    // Their lines, each one JSON object with the same facts as the text line.
    let mut lines = Vec::new();
    while lines.len() < agents.len() {
        let line = server
            .log
            .recv_timeout(Duration::from_secs(120))
            .expect("a line per connection");
        let object: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line}"));
        if object["scheme"] == "https" {
            lines.push(object);
        }
    }
    let mut agents_logged = std::collections::BTreeSet::new();
    for line in &lines {
        let text = line.to_string();
        assert_eq!(line["outcome"], "served", "{text}");
        assert_eq!(line["level"], "info", "{text}");
        assert_eq!(line["method"], "GET", "{text}");
        assert_eq!(line["version"], "HTTP/1.1", "{text}");
        assert!(
            line["uri"].as_str().unwrap().starts_with("/some/path?n="),
            "{text}"
        );
        assert_eq!(line["sni"], line["resource"], "{text}");
        assert!(line["bytes"].as_u64().unwrap() > 0, "{text}");
        assert!(line["guest_memory"].as_u64().unwrap() > 0, "{text}");
        assert!(line["duration_ms"].as_f64().is_some(), "{text}");
        assert!(
            line["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{text}"
        );
        assert!(line["kx"].as_str().unwrap() != "-", "{text}");
        assert!(line["message"].as_str().unwrap().contains(" ok "), "{text}");
        agents_logged.insert(line["user_agent"].as_str().unwrap().to_owned());
    }
    assert_eq!(agents_logged, agents);

    // The scrape, parsed as a scraper would.
    let (status, text) = http_get(&format!("http://{metrics}/metrics"));
    assert_eq!(status, 200);
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap();
    let samples = |name: &str| -> Vec<&prometheus_parse::Sample> {
        scrape.samples.iter().filter(|s| s.metric == name).collect()
    };
    let number = |sample: &prometheus_parse::Sample| match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{} is {other:?}", sample.metric),
    };
    for (host, times) in &made {
        let served: f64 = samples("tls_site_connections_total")
            .into_iter()
            .filter(|s| s.labels.get("outcome") == Some("served"))
            .filter(|s| s.labels.get("resource") == Some(host.as_str()))
            .inspect(|s| {
                let kx = s.labels.get("kx").unwrap();
                assert!(lines.iter().any(|line| line["kx"] == kx), "{kx}")
            })
            .map(number)
            .sum();
        assert_eq!(served, f64::from(*times), "{host}\n{text}");
    }
    let others: f64 = samples("tls_site_connections_total")
        .into_iter()
        .filter(|s| s.labels.get("outcome") != Some("served"))
        .map(number)
        .sum();
    assert_eq!(others, 0.0, "{text}");
    let bytes: u64 = lines
        .iter()
        .map(|line| line["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        number(samples("tls_site_sent_bytes_total")[0]),
        bytes as f64
    );
    let observations = |name: &str| match &samples(name)[0].value {
        prometheus_parse::Value::Histogram(buckets) => {
            let all = buckets.last().unwrap();
            assert_eq!(all.less_than, f64::INFINITY, "{name}");
            all.count
        }
        other => panic!("{name} is {other:?}"),
    };
    assert_eq!(observations("tls_site_connection_seconds"), 5.0);
    assert_eq!(observations("tls_site_first_byte_seconds"), 5.0);
    let handshakes = observations("tls_site_handshake_seconds");
    assert!((1.0..=5.0).contains(&handshakes), "{handshakes}");
    assert!(number(samples("tls_site_resident_memory_bytes")[0]) > 1e6);
    assert!(number(samples("tls_site_guest_memory_peak_bytes")[0]) > 0.0);

    // One gauge per certificate file, at its notAfter.
    let mut expected: Vec<i64> = std::fs::read_dir(&server.certs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".chain.pem"))
        .map(|chain| not_after_of(&chain))
        .collect();
    let mut gauges: Vec<i64> = samples("tls_site_certificate_not_after_seconds")
        .into_iter()
        .map(|s| number(s) as i64)
        .collect();
    expected.sort();
    gauges.sort();
    assert!(!expected.is_empty());
    assert_eq!(gauges, expected);

    let info = samples("tls_site_build_info");
    assert_eq!(
        info[0].labels.get("component_sha256"),
        Some(sha256_of_file(Path::new(env!("TLS_SITE_COMPONENT"))).as_str())
    );
    assert_eq!(number(info[0]), 1.0);
}
