//! What a connection costs: tls-site, nginx and the guest's TLS code run natively, side by side.
//!
//! Starts each server on loopback, pinned to CPU 0 (`taskset -c 0`), pins this load generator to
//! CPU 1, and for the page host and a PDF host measures
//! - the server's CPU time per connection (utime+stime of the server and its children, from
//!   `/proc`, over the measurement window): the headline figure;
//! - connections per second with `--threads` clients for `--seconds` each;
//! - latency percentiles (handshake done, first byte, last byte) and server CPU per connection of
//!   `--sequential` connections made one after the other, paced at `--rate` a second (default 200,
//!   a visited site's pace; 0 for back to back). Their CPU is counted in nanoseconds
//!   (`/proc/PID/task/*/schedstat`), as the load phase's clock ticks would be too coarse.
//!
//! Each server and host gets `--rounds` turns, interleaved, and the figures are over all of them.
//! Every connection is new (a rustls client, ring provider) and every response is checked: status,
//! `Content-Length`, and the body's SHA-256 against `tls-site inspect --json` (for `--component`
//! and `--baseline`, what that component's own listing says). Rows "full" use a
//! client without resumption (a first visit); rows "resumed" a client that keeps the server's
//! session tickets (a returning visitor), and every one of their connections must resume.
//! nginx (TLS 1.3, the same certificate, the same bytes, one worker, tickets on) is skipped if not
//! installed; the native server is `guest/tls/examples/native.rs` (the pure-Rust provider, no
//! tickets, so full handshakes only), built here into `target/native`.
//!
//! ```text
//! cargo bench -p tls-site --bench connections -- [--smoke] [--seconds 5] [--threads 8]
//!     [--sequential 100] [--rate 200] [--rounds 3] [--no-nginx] [--no-native]
//!     [--component PATH] [--full-only] [--hybrid] [--command] [--two-cores]
//!     [--metrics] [--baseline TLS_SITE_BINARY [--baseline-component PATH]] [--idle N]
//! ```
//!
//! `--component` has tls-site serve that component (e.g. the portable build, which issues no
//! tickets: add `--full-only`) instead of its own; `--full-only` leaves out the resumed rows.
//! `--hybrid` has the client offer X25519MLKEM768 first, as browsers do (tls-site negotiates it;
//! nginx 1.22 and the native server lack it and would answer with a retry: add `--no-nginx
//! --no-native`).
//!
//! `--command` adds the command component (guest/command) under the real `wasmtime run` (the CLI
//! on PATH), pinned as the others: one instance serving every connection over wasi:sockets, with
//! pure-Rust crypto and no tickets, so full handshakes only.
//!
//! `--two-cores` pins nothing: each server may use both CPUs (nginx with two workers, tls-site with
//! its runtime's two), and shares them with the load generator; CPU per connection is still the
//! server's own.
//!
//! `--metrics` has tls-site serve `--metrics` on loopback and scrapes `/metrics` once a second
//! while it is measured (Prometheus scrapes every 15 to 60 s), as an operator would run it.
//!
//! `--baseline` adds a row for another `tls-site` binary (an older build, to compare a change
//! against), serving `--baseline-component` (default: its own built-in component, which is a path
//! into the target directory: copy it beside the binary when the build it came from is gone).
//! Its responses are checked against its own `inspect --json`, since the site may have changed.
//!
//! `--idle N` measures something else (connections/idle.rs): per server, `--sequential` paced
//! connections alone, then N clients that each sent half a ClientHello and wait, held open while
//! the paced ones run again; one table of memory per idle client and first-byte times. Both
//! servers get a 60 s handshake timeout (nginx's default; tls-site's is 3 s, which would close
//! the idle clients before they are counted) and room for N connections; the open-file limit is
//! raised here (`prlimit`), not by the caller.
//!
//! `--smoke` makes a few connections per server and host and checks them, nothing more.

#[path = "../../tests/client.rs"]
mod client;
#[path = "connections/idle.rs"]
mod idle;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use sha2::{Digest, Sha256};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SERVER_CPU: &str = "0";
const CLIENT_CPU: &str = "1";

struct Options {
    smoke: bool,
    seconds: f64,
    threads: usize,
    sequential: usize,
    /// Sequential connections a second (0: back to back).
    rate: f64,
    rounds: usize,
    nginx: bool,
    native: bool,
    component: Option<PathBuf>,
    full_only: bool,
    hybrid: bool,
    command: bool,
    /// Servers unpinned, on both CPUs (nginx with two workers).
    two_cores: bool,
    /// tls-site with `--metrics`, scraped every second.
    metrics: bool,
    /// Another tls-site binary, and the component it serves, for a row of its own.
    baseline: Option<PathBuf>,
    baseline_component: Option<PathBuf>,
    /// Idle clients to hold (`--idle`), instead of the usual rows.
    idle: Option<usize>,
}

/// What a host name must answer: `tls-site inspect --json`'s view of one resource.
#[derive(Clone)]
struct Expected {
    label: &'static str,
    host: String,
    content_type: String,
    bytes: usize,
    sha256: String,
}

struct Timings {
    handshake: Duration,
    first_byte: Duration,
    last_byte: Duration,
}

/// A server under test; stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    /// What it must answer: the page and the PDF of the site it serves.
    expected: Vec<Expected>,
}

/// One server, host and kind of handshake: totals over all rounds.
#[derive(Default)]
struct Row {
    server: &'static str,
    /// Index into the servers and the expected resources.
    server_index: usize,
    expected_index: usize,
    resumed: bool,
    host: String,
    /// Server CPU (µs), connections and seconds of the load phases.
    load: (f64, u64, f64),
    /// Server CPU (µs) and connections of the sequential phases.
    sequential: (f64, u64),
    latencies: [Vec<Duration>; 3],
}

impl Row {
    fn cpu_load_us(&self) -> f64 {
        self.load.0 / self.load.1 as f64
    }
}

fn main() {
    let options = parse_options();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let tls_site = PathBuf::from(env!("CARGO_BIN_EXE_tls-site"));
    let pinned =
        !options.two_cores && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    if pinned {
        // Threads spawned from here on inherit this CPU; the servers get the other one.
        run(Command::new("taskset")
            .args(["-p", "-c", CLIENT_CPU, &std::process::id().to_string()])
            .stdout(Stdio::null()));
    } else {
        eprintln!("one CPU only: servers and client share it");
    }
    let expected = expected_resources(&tls_site, options.component.as_deref());
    let client = Arc::new(client_config(
        &root.join("certs/dev-ca.pem"),
        options.hybrid,
    ));
    let mut resuming = client_config(&root.join("certs/dev-ca.pem"), options.hybrid);
    resuming.resumption = rustls::client::Resumption::in_memory_sessions(256);
    let resuming = Arc::new(resuming);
    let work = std::env::temp_dir().join(format!("tls-site-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();

    let addr = free_addr();
    let mut tls_site = Command::new(&tls_site);
    tls_site.arg("serve").args(&options.component);
    tls_site
        .args(["--no-http", "--certs"])
        .arg(root.join("certs"))
        .arg("--https")
        .arg(addr.to_string());
    if let Some(count) = options.idle {
        // Room for the idle clients, inherited by the servers for their side of them: up to the
        // hard limit, which only a privileged process could raise.
        let hard = open_files_hard_limit();
        if hard < (count + 1024) as u64 {
            die(&format!(
                "--idle {count} needs {} open files; the hard limit is {hard}",
                count + 1024
            ));
        }
        let files = hard.min((2 * count + 4096) as u64);
        run(Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={files}:")));
        tls_site
            .arg("--max-connections")
            .arg((count + 1024).to_string())
            .args(["--handshake-timeout", "60", "--timeout", "70"]);
    }
    let metrics_addr = options.metrics.then(free_addr);
    if let Some(metrics_addr) = metrics_addr {
        tls_site.arg("--metrics").arg(metrics_addr.to_string());
    }
    let mut servers = vec![start("tls-site", pinned, &tls_site, addr, &work, &expected)];
    let nginx_workers = if options.two_cores { 2 } else { 1 };
    wait_ready(&mut servers[0], &client);
    if options.nginx {
        match find_nginx() {
            Some(nginx) => servers.push(start_nginx(
                &nginx,
                &root,
                &work,
                pinned,
                nginx_workers,
                options.idle.unwrap_or(0) + 1024,
                &servers[0],
                &client,
                &expected,
            )),
            None => {
                eprintln!("nginx is not installed (apt-get install nginx): its row is left out")
            }
        }
    }
    if options.native {
        let (mut native, addr) = (Command::new(build_native(&root)), free_addr());
        native
            .args([
                root.join("certs/dev.chain.pem"),
                root.join("certs/dev.key.pem"),
            ])
            .arg(addr.to_string());
        servers.push(start("native", pinned, &native, addr, &work, &expected));
    }
    if let Some(baseline) = &options.baseline {
        // Checked against what its own component serves: the site's bytes may have changed since.
        let baseline_expected = expected_resources(baseline, options.baseline_component.as_deref());
        let (mut command, addr) = (Command::new(baseline), free_addr());
        command.arg("serve").args(&options.baseline_component);
        command
            .args(["--no-http", "--certs"])
            .arg(root.join("certs"))
            .arg("--https")
            .arg(addr.to_string());
        servers.push(start(
            "baseline",
            pinned,
            &command,
            addr,
            &work,
            &baseline_expected,
        ));
    }
    if options.command {
        // As docs/command.md runs it, with the certificate directory by its full path.
        let (mut command, addr) = (Command::new("wasmtime"), free_addr());
        command
            .args(["run", "-S", "inherit-network", "--dir"])
            .arg(format!("{}::certs", root.join("certs").display()));
        command
            .arg(env!("TLS_SITE_COMMAND_COMPONENT"))
            .arg(addr.to_string());
        servers.push(start("command", pinned, &command, addr, &work, &expected));
    }

    if let Some(count) = options.idle {
        let rows: Vec<_> = servers
            .iter_mut()
            .map(|server| {
                wait_ready(server, &client);
                idle::measure_idle(server, count, &client, &options)
            })
            .collect();
        drop(servers);
        let _ = std::fs::remove_dir_all(&work);
        idle::print_idle_table(&rows, count, &options);
        return;
    }
    let mut rows = Vec::new();
    for (server_index, server) in servers.iter_mut().enumerate() {
        wait_ready(server, &client);
        let probe = fetch_with(server.addr, &server.expected[0].host, &client)
            .map(|(tls, ..)| describe(&tls));
        eprintln!("{}: {}", server.name, probe.unwrap_or_else(|e| e));
        let kinds: &[bool] = if ["native", "command"].contains(&server.name) || options.full_only {
            &[false]
        } else {
            &[false, true]
        };
        for &resumed in kinds {
            for (expected_index, expect) in server.expected.iter().enumerate() {
                let host = format!(
                    "{} {}",
                    expect.label,
                    if resumed { "resumed" } else { "full" }
                );
                rows.push(Row {
                    server: server.name,
                    server_index,
                    expected_index,
                    resumed,
                    host,
                    ..Row::default()
                });
            }
        }
    }
    let scraper = metrics_addr.map(Scraper::start);
    // Rounds interleave the servers, so that a noisy neighbour on the machine is shared out
    // rather than landing on one of them.
    for round in 0..options.rounds {
        for row in &mut rows {
            eprint!("round {}/{}: ", round + 1, options.rounds);
            let server = &servers[row.server_index];
            let expect = &server.expected[row.expected_index];
            if row.resumed {
                // A ticket to start with; every connection then leaves a fresh one behind.
                fetch(server.addr, &resuming, expect)
                    .unwrap_or_else(|e| die(&format!("{}: {e}", server.name)));
                measure(server, &resuming, expect, &options, row);
            } else {
                measure(server, &client, expect, &options, row);
            }
        }
    }
    if let Some(scraper) = scraper {
        eprintln!("/metrics scraped {} times", scraper.stop());
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&work);
    if !options.smoke {
        print_table(&rows, &options);
    }
}

fn parse_options() -> Options {
    let mut options = Options {
        smoke: false,
        seconds: 5.0,
        threads: 8,
        sequential: 100,
        rate: 200.0,
        rounds: 3,
        nginx: true,
        native: true,
        component: None,
        full_only: false,
        hybrid: false,
        command: false,
        two_cores: false,
        metrics: false,
        baseline: None,
        baseline_component: None,
        idle: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| die(&format!("{name} needs a number")))
        };
        match arg.as_str() {
            "--smoke" => options.smoke = true,
            "--seconds" => options.seconds = value("--seconds"),
            "--two-cores" => options.two_cores = true,
            "--threads" => options.threads = value("--threads") as usize,
            "--sequential" => options.sequential = value("--sequential") as usize,
            "--rate" => options.rate = value("--rate"),
            "--rounds" => options.rounds = (value("--rounds") as usize).max(1),
            "--no-nginx" => options.nginx = false,
            "--no-native" => options.native = false,
            "--full-only" => options.full_only = true,
            "--hybrid" => options.hybrid = true,
            "--command" => options.command = true,
            "--idle" => options.idle = Some(value("--idle") as usize),
            "--metrics" => options.metrics = true,
            "--baseline" | "--baseline-component" => {
                let path = args
                    .next()
                    .unwrap_or_else(|| die(&format!("{arg} needs a path")));
                match arg.as_str() {
                    "--baseline" => options.baseline = Some(path.into()),
                    _ => options.baseline_component = Some(path.into()),
                }
            }
            "--component" => {
                options.component = Some(
                    args.next()
                        .unwrap_or_else(|| die("--component needs a path"))
                        .into(),
                )
            }
            "--bench" => {} // what `cargo bench` passes to every bench target
            other => die(&format!(
                "unknown option {other}; see the //! doc of host/benches/connections.rs"
            )),
        }
    }
    if options.smoke {
        (options.sequential, options.rounds) = (3, 1);
    }
    options
}

/// Servers started so far, stopped by `die` (an exit runs no destructors).
static STARTED: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn die(message: &str) -> ! {
    eprintln!("connections: {message}");
    for pid in STARTED.lock().map(|pids| pids.clone()).unwrap_or_default() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    std::process::exit(1);
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| die(&format!("{command:?}: {e}")));
    if !output.status.success() {
        die(&format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The page (the default resource) and the first PDF of `component` (default: the binary's own),
/// as `tls-site inspect --json` lists them.
fn expected_resources(tls_site: &Path, component: Option<&Path>) -> Vec<Expected> {
    let listing: Vec<serde_json::Value> = serde_json::from_str(&run(Command::new(tls_site)
        .arg("inspect")
        .args(component)
        .arg("--json")))
    .unwrap();
    let pick = |label, wanted: &dyn Fn(&serde_json::Value) -> bool| {
        let r = listing
            .iter()
            .find(|r| wanted(r))
            .unwrap_or_else(|| die(&format!("the site has no {label}")));
        Expected {
            label,
            host: r["hosts"][0].as_str().unwrap().to_owned(),
            content_type: r["content_type"].as_str().unwrap().to_owned(),
            bytes: r["bytes"].as_u64().unwrap() as usize,
            sha256: r["sha256"].as_str().unwrap().to_owned(),
        }
    };
    vec![
        pick("page", &|r| r["default"] == true),
        pick("PDF", &|r| r["content_type"] == "application/pdf"),
    ]
}

fn client_config(ca: &Path, hybrid: bool) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots
        .add(
            CertificateDer::from_pem_file(ca)
                .unwrap_or_else(|e| die(&format!("{}: {e}", ca.display()))),
        )
        .unwrap();
    let mut provider = rustls::crypto::ring::default_provider();
    if hybrid {
        provider.kx_groups.insert(0, client::X25519MLKEM768);
    }
    let provider = Arc::new(provider);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every connection pays the full handshake, as a first visit does.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Spawns `command`, which listens on `addr` and serves `expected`, on the server CPU, its stderr
/// in `work/NAME.log`.
fn start(
    name: &'static str,
    pinned: bool,
    command: &Command,
    addr: SocketAddr,
    work: &Path,
    expected: &[Expected],
) -> Server {
    let log = std::fs::File::create(work.join(format!("{name}.log"))).unwrap();
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
    let mut pinned_command = if pinned {
        Command::new("taskset")
    } else {
        Command::new(&program)
    };
    if pinned {
        pinned_command.args(["-c", SERVER_CPU]).arg(&program);
    }
    pinned_command.args(args).stdout(Stdio::null()).stderr(log);
    let child = pinned_command
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start {name}: {e}")));
    STARTED.lock().unwrap().push(child.id());
    Server {
        name,
        child,
        addr,
        expected: expected.to_vec(),
    }
}

fn wait_ready(server: &mut Server, client: &Arc<ClientConfig>) {
    let started = Instant::now();
    while let Err(error) = fetch(server.addr, client, &server.expected[0]) {
        if let Ok(Some(status)) = server.child.try_wait() {
            die(&format!(
                "{} exited ({status}) before serving; see its log",
                server.name
            ));
        }
        if started.elapsed() > Duration::from_secs(120) {
            die(&format!(
                "{} did not serve within 2 minutes: {error}",
                server.name
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fetches `/metrics` once a second on its own thread (the load generator's CPU), checking each
/// scrape is a 200 with the connection counter in it, until stopped.
struct Scraper {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Scraper {
    fn start(addr: SocketAddr) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut scrapes = 0;
            while !stopped.load(Ordering::Relaxed) {
                let mut stream = TcpStream::connect(addr)
                    .unwrap_or_else(|e| die(&format!("/metrics at {addr}: {e}")));
                stream
                    .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut text = String::new();
                stream.read_to_string(&mut text).unwrap();
                if !text.starts_with("HTTP/1.1 200") || !text.contains("tls_site_connections_total")
                {
                    die(&format!("a scrape of /metrics got: {text:.200}"));
                }
                scrapes += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            scrapes
        });
        Scraper { stop, thread }
    }

    /// Stops it; how many scrapes it made.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// This process's hard limit on open files (`/proc/self/limits`).
fn open_files_hard_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let hard = line.split_whitespace().nth(4).unwrap();
    hard.parse().unwrap_or(u64::MAX)
}

fn find_nginx() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// nginx with tls-site's certificate and TLS policy (its groups; its suite order, AES-128-GCM first
/// unless the client lists ChaCha20 first), serving the bytes tls-site serves (fetched
/// from it once), one `server` block per host name, one worker on the server CPU.
#[allow(clippy::too_many_arguments)] // nginx.conf's settings, each one a bench option
fn start_nginx(
    nginx: &Path,
    root: &Path,
    work: &Path,
    pinned: bool,
    workers: usize,
    connections: usize,
    tls_site: &Server,
    client: &Arc<ClientConfig>,
    expected: &[Expected],
) -> Server {
    let (prefix, addr) = (work.join("nginx"), free_addr());
    let mut servers = String::new();
    for (i, expect) in expected.iter().enumerate() {
        let dir = prefix.join(format!("site{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, body, _) = fetch(tls_site.addr, client, expect)
            .unwrap_or_else(|e| die(&format!("fetching {} from tls-site: {e}", expect.host)));
        std::fs::write(dir.join("body"), body).unwrap();
        let (mime, charset) = expect
            .content_type
            .split_once("; charset=")
            .unwrap_or((&expect.content_type, "off"));
        servers += &format!(
            "  server {{ listen {addr} ssl{default}; server_name {host}; root {dir};\n    types {{}} default_type {mime}; charset {charset};\n    add_header Strict-Transport-Security max-age=31536000; add_header X-Content-Type-Options nosniff;\n    location / {{ try_files /body =404; }} }}\n",
            default = if i == 0 { " default_server" } else { "" },
            host = expect.host,
            dir = dir.display(),
        );
    }
    let p = prefix.display();
    let certs = root.join("certs");
    let config = format!(
        "daemon off; master_process on; worker_processes {workers}; {affinity}\npid {p}/nginx.pid; error_log {p}/error.log warn;\nworker_rlimit_nofile {files};\nevents {{ worker_connections {connections}; }}\nhttp {{\n  access_log off; keepalive_timeout 0; server_tokens off;\n  client_body_temp_path {p}/tmp; proxy_temp_path {p}/tmp; fastcgi_temp_path {p}/tmp; uwsgi_temp_path {p}/tmp; scgi_temp_path {p}/tmp;\n  ssl_protocols TLSv1.3; ssl_ecdh_curve X25519:prime256v1:secp384r1;\n  ssl_prefer_server_ciphers on; ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256; ssl_conf_command Options PrioritizeChaCha;\n  ssl_session_cache off; ssl_session_tickets on;\n  ssl_certificate {chain}; ssl_certificate_key {key};\n{servers}}}\n",
        affinity = if pinned {
            "worker_cpu_affinity 01;"
        } else {
            ""
        },
        files = open_files_hard_limit().min(2 * connections as u64),
        chain = certs.join("dev.chain.pem").display(),
        key = certs.join("dev.key.pem").display(),
    );
    std::fs::write(prefix.join("nginx.conf"), config).unwrap();
    let mut command = Command::new(nginx);
    command
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .arg("-e")
        .arg(prefix.join("error.log"));
    start("nginx", pinned, &command, addr, work, expected)
}

/// Builds `guest/tls/examples/native.rs` for the host, in a target directory of its own.
fn build_native(root: &Path) -> PathBuf {
    let target = root.join("target").join("native");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()));
    cargo
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "tls-site-guest",
            "--features",
            "portable",
            "--example",
            "native",
            "--target-dir",
        ])
        .arg(&target);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CARGO_") && name != "CARGO_HOME" {
            cargo.env_remove(name);
        }
    }
    if !cargo.status().is_ok_and(|s| s.success()) {
        die("building the native server failed (see above); --no-native leaves it out");
    }
    target.join("release").join("examples").join("native")
}

/// One new connection and one GET; returns once the server's close_notify has come in.
fn fetch_with(
    addr: SocketAddr,
    host: &str,
    client: &Arc<ClientConfig>,
) -> Result<(ClientConnection, Vec<u8>, Timings), String> {
    let started = Instant::now();
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let mut tls = ClientConnection::new(client.clone(), name).map_err(|e| e.to_string())?;
    let mut socket = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    socket.set_nodelay(true).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Queued now, sent by rustls as soon as the handshake allows.
    tls.writer()
        .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .unwrap();
    let (mut handshake, mut first_byte) = (None, None);
    let mut response = Vec::new();
    loop {
        while tls.wants_write() {
            tls.write_tls(&mut socket)
                .map_err(|e| format!("write: {e}"))?;
        }
        if tls
            .read_tls(&mut socket)
            .map_err(|e| format!("read: {e}"))?
            == 0
        {
            return Err(format!(
                "closed without close_notify after {} bytes",
                response.len()
            ));
        }
        let state = tls.process_new_packets().map_err(|e| format!("tls: {e}"))?;
        if handshake.is_none() && !tls.is_handshaking() {
            handshake = Some(started.elapsed());
        }
        let ready = state.plaintext_bytes_to_read();
        if ready > 0 {
            first_byte.get_or_insert(started.elapsed());
            let old = response.len();
            response.resize(old + ready, 0);
            tls.reader()
                .read_exact(&mut response[old..])
                .map_err(|e| e.to_string())?;
        }
        if state.peer_has_closed() {
            break;
        }
    }
    let last_byte = started.elapsed();
    tls.send_close_notify();
    let _ = tls.write_tls(&mut socket);
    let timings = Timings {
        handshake: handshake.unwrap_or(last_byte),
        first_byte: first_byte.unwrap_or(last_byte),
        last_byte,
    };
    Ok((tls, response, timings))
}

/// A fetch whose response is checked against what the site serves; returns the body and whether
/// the session was resumed.
fn fetch(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    expect: &Expected,
) -> Result<(Timings, Vec<u8>, bool), String> {
    let (tls, response, timings) = fetch_with(addr, &expect.host, client)?;
    let resumed = tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of head")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let status = head.lines().next().unwrap_or_default();
    if status != "HTTP/1.1 200 OK" {
        return Err(format!("{}: status {status:?}", expect.host));
    }
    let length = head.lines().find_map(|l| {
        l.split_once(": ")
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    });
    if length.map(|(_, v)| v.trim()) != Some(expect.bytes.to_string().as_str()) {
        return Err(format!(
            "{}: Content-Length {length:?}, expected {}",
            expect.host, expect.bytes
        ));
    }
    let digest: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if body.len() != expect.bytes || digest != expect.sha256 {
        return Err(format!(
            "{}: body of {} bytes with sha256 {digest}, expected {}",
            expect.host,
            body.len(),
            expect.sha256
        ));
    }
    Ok((timings, body.to_vec(), resumed))
}

fn describe(tls: &ClientConnection) -> String {
    let suite = tls
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let group = tls
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_default();
    format!("{:?} {suite} {group}", tls.protocol_version().unwrap())
}

/// CPU time (ns) of a process's threads and its live children's, from the scheduler's own
/// accounting (proc(5), `/proc/PID/task/TID/schedstat`: time on the CPU first).
fn cpu_ns(pid: u32) -> u64 {
    let threads_ns = |pid: u32| -> u64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return 0;
        };
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
            .filter_map(|stat| stat.split(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
    };
    let children: u64 = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent(child) == Some(pid))
        .map(threads_ns)
        .sum();
    threads_ns(pid) + children
}

/// CPU time (clock ticks) of a process and its live children, plus the children it has reaped.
fn cpu_ticks(pid: u32) -> u64 {
    let fields = |pid: u32| -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // proc(5): after the command name come field 3 (state), 4 (ppid), ... 14 (utime), 15
        // (stime), 16 (cutime), 17 (cstime); `f[i]` here is field `i + 4`.
        Some(
            stat[stat.rfind(')')? + 2..]
                .split(' ')
                .skip(1)
                .map(|f| f.parse().unwrap_or(0))
                .collect(),
        )
    };
    let own = fields(pid).map_or(0, |f| f[10] + f[11] + f[12] + f[13]);
    let children: u64 = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(fields)
        .filter(|f| f[0] == pid as u64)
        .map(|f| f[10] + f[11])
        .sum();
    own + children
}

fn ticks_per_second() -> f64 {
    run(Command::new("getconf").arg("CLK_TCK"))
        .trim()
        .parse()
        .unwrap_or(100.0)
}

/// One round for one server and host: `--sequential` connections one after the other (paced), then
/// `--threads` clients for `--seconds`; adds what it measured to `row`.
fn measure(
    server: &Server,
    client: &Arc<ClientConfig>,
    expect: &Expected,
    options: &Options,
    row: &mut Row,
) {
    let pid = server.child.id();
    let fail = |error: String| -> ! { die(&format!("{} {}: {error}", server.name, expect.host)) };
    let tick_us = 1e6 / ticks_per_second();

    let (before, started) = (cpu_ns(pid), Instant::now());
    for i in 0..options.sequential {
        if options.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / options.rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let (timings, _, resumed) = fetch(server.addr, client, expect).unwrap_or_else(|e| fail(e));
        if resumed != row.resumed {
            fail(format!(
                "a connection {} resumed",
                if resumed { "was" } else { "was not" }
            ));
        }
        for (list, value) in
            row.latencies
                .iter_mut()
                .zip([timings.handshake, timings.first_byte, timings.last_byte])
        {
            list.push(value);
        }
    }
    row.sequential.0 += (cpu_ns(pid) - before) as f64 / 1e3;
    row.sequential.1 += options.sequential as u64;
    if options.smoke {
        eprintln!(
            "{} {}: {} connections checked",
            server.name, expect.host, options.sequential
        );
        return;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (before, started) = (cpu_ticks(pid), Instant::now());
    let clients: Vec<_> = (0..options.threads)
        .map(|_| {
            let (stop, client, expect, addr) =
                (stop.clone(), client.clone(), expect.clone(), server.addr);
            std::thread::spawn(move || {
                let (mut done, mut resumed) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    resumed += fetch(addr, &client, &expect)?.2 as u64;
                    done += 1;
                }
                Ok::<(u64, u64), String>((done, resumed))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(options.seconds));
    stop.store(true, Ordering::Relaxed);
    let counts: Vec<(u64, u64)> = clients
        .into_iter()
        .map(|c| c.join().unwrap().unwrap_or_else(|e| fail(e)))
        .collect();
    let (done, resumed): (u64, u64) = (
        counts.iter().map(|c| c.0).sum(),
        counts.iter().map(|c| c.1).sum(),
    );
    // Clients racing for the shared ticket store may now and then find it empty.
    if row.resumed && resumed * 100 < done * 95 {
        fail(format!("only {resumed} of {done} connections resumed"));
    }
    let (elapsed, cpu) = (
        started.elapsed().as_secs_f64(),
        (cpu_ticks(pid) - before) as f64 * tick_us,
    );
    row.load = (row.load.0 + cpu, row.load.1 + done, row.load.2 + elapsed);
    eprintln!(
        "{} {}: {done} connections in {elapsed:.1} s, server CPU {:.2} s",
        server.name,
        expect.host,
        cpu / 1e6
    );
}

fn print_table(rows: &[Row], options: &Options) {
    let paced = if options.rate > 0.0 {
        format!("{:.0}/s", options.rate)
    } else {
        "back to back".to_owned()
    };
    let ms = |list: &[Duration], q: f64| {
        let mut sorted = list.to_vec();
        sorted.sort();
        sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
    };
    println!(
        "\n| server | host | server CPU µs/conn | ÷ nginx | CPU µs/conn, {paced} | conn/s ({} clients) | handshake p50/p99 ms | first byte p50/p99 ms | last byte p50/p99 ms |",
        options.threads
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let nginx = rows
            .iter()
            .find(|r| r.server == "nginx" && r.host == row.host);
        let ratio = nginx.map_or("-".to_owned(), |n| {
            format!("{:.2}", row.cpu_load_us() / n.cpu_load_us())
        });
        let [handshake, first, last] = &row.latencies;
        println!(
            "| {} | {} | {:.0} | {ratio} | {:.0} | {:.0} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            row.server,
            row.host,
            row.cpu_load_us(),
            row.sequential.0 / row.sequential.1 as f64,
            row.load.1 as f64 / row.load.2,
            ms(handshake, 0.5),
            ms(handshake, 0.99),
            ms(first, 0.5),
            ms(first, 0.99),
            ms(last, 0.5),
            ms(last, 0.99),
        );
    }
    println!(
        "\n{} rounds, each of {} s per server and host at load and {} connections one at a time, {paced} (latency, paced CPU).",
        options.rounds, options.seconds, options.sequential
    );
}
