//! The tls-site host: listens on the HTTPS and HTTP ports and hands each HTTPS connection to a
//! fresh instance of the site component; answers port 80 with a redirect; writes the access log.
//!
//! The request path: `Server::start` (here) -> `sandbox::Sandbox::serve_connection` -> the guest's
//! `handle` (guest/tls/src/connection.rs) -> `site::Site::response_for` (guest/site/src/lib.rs).

pub mod certs;
pub mod edge;
#[cfg(target_os = "linux")]
pub mod init;
pub mod redirect;
pub mod sandbox;

use redirect::{RedirectOutcome, RedirectTable};
use sandbox::{Limits, Outcome, Resource, Sandbox};
use std::future::Future;
use std::net::SocketAddr;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// The component `cargo build` made from guest/tls, the default for every command.
pub const BUILT_COMPONENT: &str = env!("TLS_SITE_COMPONENT");
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
    /// Bound on serving one connection, from its first bytes to close.
    pub connection_deadline: Duration,
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
            connection_deadline: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A running server: both listeners, until `shutdown`.
pub struct Server {
    https_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    resources: Vec<Resource>,
    sandbox: Arc<Sandbox>,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    listeners: JoinSet<()>,
}

impl Server {
    /// Loads the certificates, initialises and snapshots the component, binds the ports and
    /// starts accepting. Everything that can fail does so here, before the first client.
    pub async fn start(options: &ServeOptions) -> Result<Server, StartError> {
        let certificates = certs::load_dir(&options.certs)?;
        let limits = Limits { instances: options.max_instances + 1, ..Limits::default() };
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
        let (deadline, hello_timeout, max_instances) = (options.connection_deadline, options.hello_timeout, options.max_instances);
        let instances = Arc::new(Semaphore::new(options.max_instances as usize));
        let (serving, counting) = (sandbox.clone(), stats.clone());
        listeners.spawn(accept_loop(https, permits.clone(), stopped.clone(), move |stream, peer| {
            let (sandbox, instances, stats) = (serving.clone(), instances.clone(), counting.clone());
            async move {
                if let Err(why) = first_bytes(&stream, hello_timeout).await {
                    stats.count("silent");
                    return format!("https {peer} {why}");
                }
                let _instance = match instances.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        log(format_args!("limit: all {max_instances} instances busy (--max-instances); {peer} waits"));
                        instances.acquire_owned().await.expect("the semaphore is never closed")
                    }
                };
                https_log_line(&stats, peer, sandbox.serve_connection(stream, deadline).await)
            }
        }));

        let http_addr = match options.http {
            None => None,
            Some(addr) => {
                let http = bind(addr).await?;
                let http_addr = http.local_addr().map_err(|source| StartError::Bind { addr, source })?;
                let table = Arc::new(redirect_table(&resources, options.public_https_port.unwrap_or(https_addr.port())));
                let counting = stats.clone();
                listeners.spawn(accept_loop(http, permits, stopped, move |stream, peer| {
                    let (table, stats) = (table.clone(), counting.clone());
                    async move { http_log_line(&stats, peer, redirect::serve_connection(&table, stream, deadline).await) }
                }));
                Some(http_addr)
            }
        };
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

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
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
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stopped.changed() => break,
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

/// The log line for a served (or not) HTTPS connection, counted in `stats` by how it ended.
fn https_log_line(stats: &Stats, peer: SocketAddr, outcome: Outcome) -> String {
    stats.count(match &outcome {
        Outcome::Served(_) => "served",
        Outcome::Failed(sandbox::Failure::Tls(_)) => "tls-failed",
        Outcome::Failed(sandbox::Failure::Io(_)) => "io-failed",
        Outcome::Failed(sandbox::Failure::NotInitialised) => "not-initialised",
        Outcome::Trapped(_) => "trapped",
        Outcome::TimedOut => "timed-out",
        Outcome::NoInstance(_) => "no-instance",
    });
    match outcome {
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
        Outcome::Trapped(why) => format!("https {peer} trapped: {}", why.replace('\n', " | ")),
        Outcome::TimedOut => format!("https {peer} timed out"),
        Outcome::NoInstance(why) => format!("https {peer} refused: no instance: {why}"),
    }
}

fn http_log_line(stats: &Stats, peer: SocketAddr, outcome: RedirectOutcome) -> String {
    stats.count(match &outcome {
        RedirectOutcome::Redirected(_) => "http-redirected",
        RedirectOutcome::BadRequest(_) => "http-bad-request",
        RedirectOutcome::TimedOut => "http-timed-out",
        RedirectOutcome::Closed => "http-closed",
    });
    match outcome {
        RedirectOutcome::Redirected(location) => format!("http {peer} 301 {location}"),
        RedirectOutcome::BadRequest(why) => format!("http {peer} 400 {why}"),
        RedirectOutcome::TimedOut => format!("http {peer} timed out"),
        RedirectOutcome::Closed => format!("http {peer} closed without a request"),
    }
}

/// Connections by how they ended: printed at shutdown, read by tests.
#[derive(Debug, Default)]
pub struct Stats {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
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
        write!(f, "{}", parts.join(" "))
    }
}

/// One line to stderr, stamped with the UTC time.
pub fn log(line: std::fmt::Arguments<'_>) {
    eprintln!("{} {line}", humantime::format_rfc3339_millis(SystemTime::now()));
}
