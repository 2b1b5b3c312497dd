//! The tls-site host: listens on the HTTPS and HTTP ports and hands each HTTPS connection to a
//! fresh instance of the site component; answers port 80 with a redirect; writes the access log.
//!
//! The request path: `Server::start` (here) -> `sandbox::Sandbox::serve_connection` -> the guest's
//! `handle` (guest/tls/src/connection.rs) -> `site::Site::response_for` (guest/site/src/lib.rs).

pub mod acme;
pub mod certs;
pub mod crypto;
pub mod edge;
#[cfg(target_os = "linux")]
pub mod init;
pub mod redirect;
pub mod sandbox;

use redirect::{RedirectOutcome, RedirectTable};
use sandbox::{Limits, Outcome, Report, Resource, Sandbox, Timeouts};
use std::future::Future;
use std::net::SocketAddr;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// The component `cargo build` made from guest/tls, the default for every command: keyless, with
/// crypto and tickets from the host.
pub const BUILT_COMPONENT: &str = env!("TLS_SITE_COMPONENT");
/// The same component with its own pure-Rust crypto (world `tls-site-portable`).
pub const BUILT_PORTABLE_COMPONENT: &str = env!("TLS_SITE_PORTABLE_COMPONENT");
/// The edge twin `cargo build` made from guest/edge, the default for `serve-http`.
pub const BUILT_EDGE_COMPONENT: &str = env!("TLS_SITE_EDGE_COMPONENT");

/// How `tls-site serve` is set up.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub component: PathBuf,
    pub https: SocketAddr,
    /// The port-80 side; `None` serves HTTPS only.
    pub http: Option<SocketAddr>,
    pub certs: PathBuf,
    /// The HTTPS port clients use, for redirects, when it is not the one listened on (a port
    /// forward, a load balancer).
    pub public_https_port: Option<u16>,
    /// Connections open at once, idle ones included; more wait in the listen backlog.
    pub max_connections: u32,
    /// Connections being served by a guest instance at once; the rest wait, holding only a
    /// socket and a small task.
    pub max_instances: u32,
    /// How long a client may take to send its first bytes (the ClientHello) before it is closed.
    /// Until then it costs no instance.
    pub hello_timeout: Duration,
    /// From its first bytes, how long a client may take to send its whole ClientHello.
    pub handshake_timeout: Duration,
    /// How long a client may leave the response untaken before it is cut off.
    pub stall_timeout: Duration,
    /// Bound on serving one connection, from its first bytes to close.
    pub connection_deadline: Duration,
    /// Linear memory one guest instance may grow to.
    pub instance_memory: usize,
    /// Linear memory all guest instances together may reach: caps the instances at work to
    /// `guest_memory / instance_memory` if that is below `max_instances`.
    pub guest_memory: usize,
    /// Print the counts of how connections ended every this often (and always at shutdown).
    pub stats_interval: Option<Duration>,
    /// The kernel's send buffer per HTTPS connection (SO_SNDBUF), if not its own autotuning. A
    /// small one bounds the kernel memory a client that stops reading can hold, and is what
    /// makes a stalled client visible to the stall timeout.
    pub send_buffer: Option<usize>,
    /// Certificates from an ACME CA instead of `certs` (see acme.rs).
    pub acme: Option<acme::AcmeOptions>,
}

impl ServeOptions {
    pub fn new(component: PathBuf, certs: PathBuf) -> ServeOptions {
        ServeOptions {
            component,
            https: ([127, 0, 0, 1], 8443).into(),
            http: Some(([127, 0, 0, 1], 8080).into()),
            certs,
            public_https_port: None,
            max_connections: 4096,
            max_instances: 256,
            hello_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(3),
            stall_timeout: Duration::from_secs(5),
            connection_deadline: Duration::from_secs(10),
            instance_memory: sandbox::DEFAULT_INSTANCE_MEMORY,
            // 256 instances at their cap: the two limits agree by default.
            guest_memory: 1 << 30,
            stats_interval: None,
            send_buffer: None,
            acme: None,
        }
    }

    /// Instances at work at once: `max_instances`, unless the total guest memory allows fewer.
    pub fn instances(&self) -> u32 {
        let affordable = self.guest_memory / self.instance_memory.max(1);
        self.max_instances.min(affordable.try_into().unwrap_or(u32::MAX)).max(1)
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts { handshake: self.handshake_timeout, stall: self.stall_timeout, connection: self.connection_deadline }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error(transparent)]
    Acme(#[from] acme::AcmeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}: a precompiled component holds the certificates it was made with, so ACME cannot renew them; serve the .wasm")]
    PrecompiledWithAcme(PathBuf),
}

/// A running server: both listeners, until `shutdown`.
pub struct Server {
    https_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    resources: Vec<Resource>,
    /// The sandbox new connections are served from; ACME renewal swaps in a new one.
    sandbox: watch::Receiver<Arc<Sandbox>>,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    listeners: JoinSet<()>,
}

impl Server {
    /// Loads the certificates, initialises and snapshots the component, binds the ports and
    /// starts accepting. Everything that can fail does so here, before the first client.
    pub async fn start(options: &ServeOptions) -> Result<Server, StartError> {
        let max_instances = options.instances();
        if max_instances < options.max_instances {
            log(format_args!(
                "limit: {max_instances} instances at work at once, not {} (--max-instances): {} MiB of guest memory (--guest-memory) at {} MiB each (--instance-memory)",
                options.max_instances, options.guest_memory >> 20, options.instance_memory >> 20,
            ));
        }
        let limits = Limits { instances: max_instances + 1, memory_bytes: options.instance_memory };
        let (certificates, renewal) = match &options.acme {
            None => (certs::load_dir(&options.certs)?, None),
            Some(_) if sandbox::is_precompiled(&options.component)? => return Err(StartError::PrecompiledWithAcme(options.component.clone())),
            Some(acme) => {
                let (certificates, renewal) = acme::prepare(acme, &options.component, &limits, options.http.is_some()).await?;
                (certificates, Some(renewal))
            }
        };
        let sandbox = Arc::new(Sandbox::new(&options.component, &certificates, limits).await?);
        let resources = sandbox.resources().await?;
        let hosts = resources.iter().flat_map(|r| r.hosts.iter().map(String::as_str));
        for host in certs::uncovered(&certificates, hosts) {
            log(format_args!("warning: no certificate in {} names {host}; it gets the default certificate", options.certs.display()));
        }

        let (stop, stopped) = watch::channel(false);
        let mut listeners = JoinSet::new();
        let stats = Arc::new(Stats::default());
        let https = bind(options.https).await?;
        let https_addr = https.local_addr().map_err(|source| StartError::Bind { addr: options.https, source })?;
        let permits = Arc::new(Semaphore::new(options.max_connections as usize));
        let (timeouts, hello_timeout, deadline) = (options.timeouts(), options.hello_timeout, options.connection_deadline);
        let send_buffer = options.send_buffer;
        let instances = Arc::new(Semaphore::new(max_instances as usize));
        let (install, sandbox) = watch::channel(sandbox);
        let (serving, counting) = (sandbox.clone(), stats.clone());
        listeners.spawn(accept_loop(https, permits.clone(), stopped.clone(), move |stream, peer| {
            let (sandbox, instances, stats) = (serving.clone(), instances.clone(), counting.clone());
            async move {
                if let Some(bytes) = send_buffer {
                    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
                }
                if let Err(why) = first_bytes(&stream, hello_timeout).await {
                    stats.count("silent");
                    return format!("https {peer} {why}");
                }
                let _instance = match instances.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        stats.count("waited-for-instance");
                        log(format_args!("limit: all {max_instances} instances busy (--max-instances, --guest-memory); {peer} waits"));
                        instances.acquire_owned().await.expect("the semaphore is never closed")
                    }
                };
                // The sandbox current now serves this connection to its end, even if a renewal
                // swaps in another meanwhile.
                let sandbox = sandbox.borrow().clone();
                https_log_line(&stats, peer, &timeouts, sandbox.serve_connection(stream, timeouts).await)
            }
        }));

        let http_addr = match options.http {
            None => None,
            Some(addr) => {
                let http = bind(addr).await?;
                let http_addr = http.local_addr().map_err(|source| StartError::Bind { addr, source })?;
                let mut table = redirect_table(&resources, options.public_https_port.unwrap_or(https_addr.port()));
                if let Some(renewal) = &renewal {
                    table = table.answering_challenges(renewal.challenges());
                }
                let table = Arc::new(table);
                let counting = stats.clone();
                listeners.spawn(accept_loop(http, permits.clone(), stopped.clone(), move |stream, peer| {
                    let (table, stats) = (table.clone(), counting.clone());
                    async move { http_log_line(&stats, peer, redirect::serve_connection(&table, stream, deadline).await) }
                }));
                Some(http_addr)
            }
        };
        if let Some(every) = options.stats_interval {
            listeners.spawn(print_stats(stats.clone(), every, permits, options.max_connections, stopped.clone()));
        }
        if let Some(renewal) = renewal {
            listeners.spawn(renewal.run(install, stats.clone(), stopped));
        }
        Ok(Server { https_addr, http_addr, resources, sandbox, stats, stop, listeners })
    }

    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// The sandbox new connections are served from now.
    pub fn sandbox(&self) -> Arc<Sandbox> {
        self.sandbox.borrow().clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops accepting, lets connections in flight finish (each is bounded by its deadline),
    /// and returns, when all are done, how they all ended.
    pub async fn shutdown(mut self) -> Arc<Stats> {
        let _ = self.stop.send(true);
        while self.listeners.join_next().await.is_some() {}
        self.stats
    }
}

/// The site's host names, the default host's first: the order `dev-certs` certifies them in.
pub fn hosts_default_first(resources: &[Resource]) -> Vec<String> {
    let (default, others): (Vec<&Resource>, Vec<&Resource>) = resources.iter().partition(|r| r.is_default);
    default.into_iter().chain(others).flat_map(|r| r.hosts.clone()).collect()
}

/// Waits until the client has sent something, so that a connection that stays silent never
/// costs a guest instance.
async fn first_bytes(stream: &TcpStream, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, stream.peek(&mut [0u8; 1])).await {
        Ok(Ok(0)) => Err("closed before sending anything".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("failed io: {error}")),
        Err(_) => Err(format!("timed out: nothing sent within {} s (--hello-timeout)", timeout.as_secs_f64())),
    }
}

fn redirect_table(resources: &[Resource], https_port: u16) -> RedirectTable {
    let hosts = resources.iter().flat_map(|r| r.hosts.clone()).collect();
    let default_host = resources.iter().find(|r| r.is_default).map(|r| r.hosts[0].clone()).unwrap_or_default();
    RedirectTable::new(hosts, default_host, https_port)
}

pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

/// Accepts connections while fewer than `permits` are in flight (the rest wait in the kernel's
/// backlog, never in a queue of ours), serves each in its own task, logs the line it returns.
pub(crate) async fn accept_loop<F, Fut>(listener: TcpListener, permits: Arc<Semaphore>, mut stopped: watch::Receiver<bool>, serve: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = String> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut full = false;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                full = false;
                permit
            }
            Err(_) => {
                // Once per episode, not once per connection that waits.
                if !full {
                    log(format_args!("limit: the most connections allowed are open (--max-connections); new ones wait in the listen backlog"));
                    full = true;
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    _ = stopped.changed() => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break,
        };
        // Reap finished tasks so the set does not grow with the server's age.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let started = Instant::now();
                let served = serve(stream, peer);
                connections.spawn(async move {
                    let line = served.await;
                    log(format_args!("{line} ms={:.1}", started.elapsed().as_secs_f64() * 1e3));
                    drop(permit);
                });
            }
            // Out of file descriptors and the like: the listener itself is fine; back off briefly.
            Err(error) => {
                log(format_args!("accept failed: {error}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Every `every`, one line: how connections ended so far, how many are open, the host's memory.
async fn print_stats(stats: Arc<Stats>, every: Duration, permits: Arc<Semaphore>, max_connections: u32, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => return,
        }
        let open = max_connections as usize - permits.available_permits();
        let rss = resident_memory().map(|bytes| format!(" host-rss={:.1}MiB", bytes as f64 / (1 << 20) as f64)).unwrap_or_default();
        log(format_args!("stats: open={open}{rss} {stats}"));
    }
}

/// The host process's resident memory, from /proc (Linux).
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The log line for a served (or not) HTTPS connection, counted in `stats` by how it ended.
fn https_log_line(stats: &Stats, peer: SocketAddr, timeouts: &Timeouts, report: Report) -> String {
    let Report { outcome, memory_peak } = report;
    stats.count(match &outcome {
        Outcome::Served(_) => "served",
        Outcome::Failed(sandbox::Failure::Tls(_)) => "tls-failed",
        Outcome::Failed(sandbox::Failure::Io(_)) => "io-failed",
        Outcome::Failed(sandbox::Failure::NotInitialised) => "not-initialised",
        Outcome::Failed(sandbox::Failure::HandshakeTimeout) => "handshake-timeout",
        Outcome::Failed(sandbox::Failure::Stalled) => "stalled",
        Outcome::Trapped(_) => "trapped",
        Outcome::TimedOut => "timed-out",
        Outcome::NoInstance(_) => "no-instance",
    });
    stats.note_memory_peak(memory_peak);
    let line = match outcome {
        Outcome::Served(served) => format!(
            "https {peer} sni={} resource={} bytes={} ok{}",
            served.server_name.as_deref().unwrap_or("-"),
            served.resource,
            served.bytes,
            if served.client_finished { "" } else { " (client did not finish its handshake)" },
        ),
        Outcome::Failed(sandbox::Failure::Tls(why)) => format!("https {peer} failed tls: {why}"),
        Outcome::Failed(sandbox::Failure::Io(why)) => format!("https {peer} failed io: {why}"),
        Outcome::Failed(sandbox::Failure::NotInitialised) => format!("https {peer} failed: component not initialised"),
        Outcome::Failed(sandbox::Failure::HandshakeTimeout) => format!(
            "https {peer} timed out: no whole ClientHello within {} s (--handshake-timeout)",
            timeouts.handshake.as_secs_f64()
        ),
        Outcome::Failed(sandbox::Failure::Stalled) => format!(
            "https {peer} stalled: the client took none of the response for {} s (--stall-timeout)",
            timeouts.stall.as_secs_f64()
        ),
        Outcome::Trapped(why) => format!("https {peer} trapped: {}", why.replace('\n', " | ")),
        Outcome::TimedOut => format!("https {peer} timed out: connection not done within {} s (--timeout)", timeouts.connection.as_secs_f64()),
        Outcome::NoInstance(why) => format!("https {peer} refused: no instance: {why}"),
    };
    format!("{line} mem={}KiB", memory_peak >> 10)
}

fn http_log_line(stats: &Stats, peer: SocketAddr, outcome: RedirectOutcome) -> String {
    stats.count(match &outcome {
        RedirectOutcome::Redirected(_) => "http-redirected",
        RedirectOutcome::AcmeChallenge(_) => "http-acme-challenge",
        RedirectOutcome::BadRequest(_) => "http-bad-request",
        RedirectOutcome::TimedOut => "http-timed-out",
        RedirectOutcome::Closed => "http-closed",
    });
    match outcome {
        RedirectOutcome::Redirected(location) => format!("http {peer} 301 {location}"),
        RedirectOutcome::AcmeChallenge(token) => format!("http {peer} 200 acme-challenge {token}"),
        RedirectOutcome::BadRequest(why) => format!("http {peer} 400 {why}"),
        RedirectOutcome::TimedOut => format!("http {peer} timed out"),
        RedirectOutcome::Closed => format!("http {peer} closed without a request"),
    }
}

/// Connections by how they ended: printed at shutdown, read by tests.
#[derive(Debug, Default)]
pub struct Stats {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    memory_peak: std::sync::atomic::AtomicUsize,
}

impl Stats {
    fn note_memory_peak(&self, bytes: usize) {
        self.memory_peak.fetch_max(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// The most linear memory any one guest instance has used.
    pub fn memory_peak(&self) -> usize {
        self.memory_peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, kind: &'static str) {
        *self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).entry(kind).or_default() += 1;
    }

    /// How many connections ended as `kind` (`served`, `tls-failed`, `silent`, `trapped`, ...).
    pub fn get(&self, kind: &str) -> u64 {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(kind).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if counts.is_empty() {
            return write!(f, "no connections");
        }
        let parts: Vec<String> = counts.iter().map(|(kind, n)| format!("{kind}={n}")).collect();
        write!(f, "{} guest-memory-peak={}KiB", parts.join(" "), self.memory_peak() >> 10)
    }
}

/// One line to stderr, stamped with the UTC time.
pub fn log(line: std::fmt::Arguments<'_>) {
    eprintln!("{} {line}", humantime::format_rfc3339_millis(SystemTime::now()));
}
