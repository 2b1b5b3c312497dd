//! The server's lifecycle: start (certificates, sandbox, listeners; everything that can fail fails
//! here, before the first client), wiring each listener (`listener.rs`) to what serves its
//! connections, and a shutdown that lets connections in flight finish.

use crate::access_log::{self, Stats};
#[cfg(feature = "acme")]
use crate::acme;
use crate::admission::{Admission, WAIT_WARNING_INTERVAL};
use crate::bindings::Resource;
use crate::engine::Limits;
use crate::listener::{self, ListenError, accept_loop, bind, serve_on_threads};
use crate::log;
use crate::logging::Throttled;
use crate::metrics::Metrics;
use crate::metrics_endpoint::MetricsEndpoint;
use crate::redirect::{self, RedirectTable};
use crate::reload::{CertificateSource, ReloadError, Reloaded, SiteSwap};
use crate::sandbox::{Sandbox, SandboxError};
use crate::tickets::{TicketKeyError, TicketKeys};
use crate::watcher::{Watched, watch_for_changes};
use crate::{ServeOptions, certs};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[cfg(feature = "acme")]
    #[error(transparent)]
    Acme(#[from] acme::AcmeError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    TicketKeys(#[from] TicketKeyError),
    #[error(
        "{0}: a precompiled component holds the certificates it was made with, so ACME cannot renew them; serve the .wasm"
    )]
    PrecompiledWithAcme(PathBuf),
}

/// A running server: both listeners, until `shutdown`.
pub struct Server {
    https_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    resources: Vec<Resource>,
    site: Arc<SiteSwap>,
    stats: Arc<Stats>,
    /// One per connection open (`--max-connections`).
    permits: Arc<Semaphore>,
    max_connections: u32,
    stop: watch::Sender<bool>,
    /// With ACME: wakes the renewal before its certificate is due (`renew_certificate_now`).
    renew_now: Option<Arc<Notify>>,
    listeners: JoinSet<()>,
    metrics: Arc<Metrics>,
    /// `--metrics`: where /metrics, /healthz and /readyz answer, until the very end of `shutdown`.
    metrics_addr: Option<SocketAddr>,
    metrics_stop: watch::Sender<bool>,
    metrics_endpoint: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Loads the certificates, initialises and snapshots the component, binds the ports and
    /// starts accepting.
    pub async fn start(options: &ServeOptions) -> Result<Server, StartError> {
        // First, so that /healthz answers (and /readyz says not yet) while the rest starts.
        let metrics = Arc::new(Metrics::new());
        let (metrics_stop, metrics_stopped) = watch::channel(false);
        let (metrics_addr, metrics_endpoint) = match options.metrics {
            None => (None, None),
            Some(addr) => {
                let endpoint = MetricsEndpoint::bind(addr, metrics.clone()).await?;
                let bound = endpoint.local_addr();
                (bound, Some(tokio::spawn(endpoint.run(metrics_stopped))))
            }
        };
        let max_instances = options.instances();
        if max_instances < options.max_instances {
            log(format_args!(
                "limit: {max_instances} instances at work at once, not {} (--max-instances): {} MiB of guest memory (--guest-memory) at {} MiB each (--instance-memory)",
                options.max_instances,
                options.guest_memory >> 20,
                options.instance_memory >> 20,
            ));
        }
        let limits = Limits {
            instances: max_instances + 1,
            memory_bytes: options.instance_memory,
        };
        #[cfg(not(feature = "acme"))]
        let acme_options = None::<()>;
        #[cfg(feature = "acme")]
        let acme_options = options.acme.as_ref();
        let watched = Watched {
            certs: acme_options.is_none().then(|| options.certs.clone()),
            ticket_keys: options.ticket_keys.clone(),
        };
        // Before the files are read: a change while the server starts is seen at the first look.
        let seen_at_start = watched.look();
        #[cfg(not(feature = "acme"))]
        let (certificates, renewal) = (
            certs::load_dir_with(&options.certs, options.expired())?,
            None::<Renewal>,
        );
        #[cfg(feature = "acme")]
        let (certificates, renewal) = match &options.acme {
            None => (
                certs::load_dir_with(&options.certs, options.expired())?,
                None,
            ),
            Some(_) if is_precompiled(&options.component)? => {
                return Err(StartError::PrecompiledWithAcme(options.component.clone()));
            }
            Some(acme) => {
                let (certificates, renewal) = acme::prepare(
                    acme,
                    &options.component,
                    &limits,
                    options.http_side().is_some(),
                )
                .await?;
                (certificates, Some(renewal))
            }
        };
        let tickets = match &options.ticket_keys {
            Some(file) => TicketKeys::from_file(file, options.ticket_key_rotation * 2)?,
            None => TicketKeys::new(options.ticket_key_rotation),
        };
        let sandbox = Sandbox::new(&options.component, &certificates, limits)
            .await?
            .with_ticket_keys(Arc::new(tickets));
        let resources = sandbox.resources().await?;

        let (stop, stopped) = watch::channel(false);
        let mut listeners = JoinSet::new();
        let stats = Arc::new(Stats::default());
        let permits = Arc::new(Semaphore::new(options.max_connections as usize));
        let source = match acme_options {
            None => CertificateSource::Directory(options.certs.clone(), options.expired()),
            Some(_) => CertificateSource::Acme,
        };
        let site = Arc::new(SiteSwap::new(
            sandbox,
            options.component.clone(),
            source,
            certificates,
            stats.clone(),
            metrics.clone(),
        ));
        listeners.spawn(watch_for_changes(
            site.clone(),
            watched,
            seen_at_start,
            options.watch,
            stopped.clone(),
        ));
        listeners.spawn(follow_installs(
            site.subscribe(),
            metrics.clone(),
            stopped.clone(),
        ));
        let admission = Arc::new(Admission {
            sandbox: site.subscribe(),
            instances: Arc::new(Semaphore::new(max_instances as usize)),
            max_instances,
            hello_timeout: options.hello_timeout,
            send_buffer: options.send_buffer,
            timeouts: options.timeouts(),
            stats: stats.clone(),
            metrics: metrics.clone(),
            waits: Throttled::new(WAIT_WARNING_INTERVAL),
        });
        let threads = options.threads.unwrap_or_else(listener::per_cpu);
        let (https_addr, https_threads) = serve_on_threads(
            options.https,
            threads,
            permits.clone(),
            stopped.clone(),
            move |stream, peer, accepted| {
                let admission = admission.clone();
                async move { admission.serve(stream, peer, accepted).await }
            },
        )?;
        for finished in https_threads {
            listeners.spawn(async move {
                let _ = finished.await;
            });
        }

        let http_addr = match options.http_side() {
            None => None,
            Some(addr) => {
                let http = bind(addr).await?;
                let http_addr = http
                    .local_addr()
                    .map_err(|source| ListenError { addr, source })?;
                let mut table = redirect_table(
                    &resources,
                    options.public_https_port.unwrap_or(https_addr.port()),
                );
                if let Some(renewal) = &renewal {
                    table = table.answering_challenges(renewal.challenges());
                }
                let (table, stats, metrics, deadline) = (
                    Arc::new(table),
                    stats.clone(),
                    metrics.clone(),
                    options.connection_deadline,
                );
                listeners.spawn(accept_loop(
                    http,
                    permits.clone(),
                    stopped.clone(),
                    move |stream, peer, accepted| {
                        let (table, stats, metrics) =
                            (table.clone(), stats.clone(), metrics.clone());
                        async move {
                            let outcome =
                                redirect::serve_connection(&table, stream, deadline).await;
                            access_log::http(&stats, &metrics, peer, outcome, accepted);
                        }
                    },
                ));
                Some(http_addr)
            }
        };
        if let Some(every) = options.stats_interval {
            listeners.spawn(print_stats(
                stats.clone(),
                every,
                permits.clone(),
                options.max_connections,
                stopped.clone(),
            ));
        }
        let renew_now = renewal.map(|renewal| {
            let renew_now = Arc::new(Notify::new());
            listeners.spawn(renewal.run(
                site.clone(),
                stats.clone(),
                metrics.clone(),
                renew_now.clone(),
                stopped,
            ));
            renew_now
        });
        metrics.set_ready(true);
        Ok(Server {
            https_addr,
            http_addr,
            resources,
            site,
            stats,
            permits,
            max_connections: options.max_connections,
            stop,
            renew_now,
            listeners,
            metrics,
            metrics_addr,
            metrics_stop,
            metrics_endpoint,
        })
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
        self.site.current()
    }

    /// The site served, and the way to replace it (`reload`); SIGHUP's handler holds it.
    pub fn site(&self) -> Arc<SiteSwap> {
        self.site.clone()
    }

    /// Reads the certificates and the component again and swaps the site they make in for new
    /// connections, as SIGHUP does; a failure keeps the site served (reload.rs).
    pub async fn reload(&self, why: &str) -> Result<Reloaded, ReloadError> {
        self.site.reload(why).await
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The server's metrics: what /metrics shows, and where other parts record theirs.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Where /metrics, /healthz and /readyz answer (`--metrics`), if they do.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Connections accepted and not yet ended, on either side.
    pub fn open_connections(&self) -> usize {
        open_connections(&self.permits, self.max_connections)
    }

    /// With ACME: orders a new certificate now instead of when the one served is due, as if its
    /// time had come (a request made while an order runs is kept for after it). The tests use it
    /// so as not to wait for a certificate to age. False without ACME.
    pub fn renew_certificate_now(&self) -> bool {
        self.renew_now
            .as_ref()
            .inspect(|renew_now| renew_now.notify_one())
            .is_some()
    }

    /// Stops accepting, lets connections in flight finish (each is bounded by its deadline),
    /// and returns, when all are done, how they all ended.
    pub async fn shutdown(mut self) -> Arc<Stats> {
        // Not ready from now on, so that a load balancer stops sending; /metrics still answers
        // while connections in flight finish.
        self.metrics.set_ready(false);
        let _ = self.stop.send(true);
        while self.listeners.join_next().await.is_some() {}
        let _ = self.metrics_stop.send(true);
        if let Some(endpoint) = self.metrics_endpoint.take() {
            let _ = endpoint.await;
        }
        self.stats
    }
}

/// Without ACME there is nothing to renew: no value of this type exists.
#[cfg(not(feature = "acme"))]
enum Renewal {}

#[cfg(not(feature = "acme"))]
impl Renewal {
    fn challenges(&self) -> redirect::Challenges {
        match *self {}
    }

    async fn run(
        self,
        _: Arc<SiteSwap>,
        _: Arc<Stats>,
        _: Arc<Metrics>,
        _: Arc<Notify>,
        _: watch::Receiver<bool>,
    ) {
        match self {}
    }
}

#[cfg(feature = "acme")]
fn is_precompiled(component: &std::path::Path) -> Result<bool, SandboxError> {
    crate::precompiled::is_precompiled(component).map_err(|source| SandboxError::Unreadable {
        path: component.to_owned(),
        source,
    })
}

fn redirect_table(resources: &[Resource], https_port: u16) -> RedirectTable {
    let hosts = resources.iter().flat_map(|r| r.hosts.clone()).collect();
    let default_host = resources
        .iter()
        .find(|r| r.is_default)
        .map(|r| r.hosts[0].clone())
        .unwrap_or_default();
    RedirectTable::new(hosts, default_host, https_port)
}

/// Keeps the metrics saying what is served (component, certificates) as sandboxes are installed,
/// by ACME or by a reload, until the last sender is gone.
async fn follow_installs(
    mut installed: watch::Receiver<Arc<Sandbox>>,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let sandbox = installed.borrow_and_update().clone();
        metrics.serving(sandbox.component_sha256(), sandbox.certificates());
        tokio::select! {
            changed = installed.changed() => if changed.is_err() { return },
            _ = stopped.changed() => return,
        }
    }
}

fn open_connections(permits: &Semaphore, max_connections: u32) -> usize {
    max_connections as usize - permits.available_permits()
}

/// Every `every`, one line: how connections ended so far, how many are open, the host's memory.
async fn print_stats(
    stats: Arc<Stats>,
    every: Duration,
    permits: Arc<Semaphore>,
    max_connections: u32,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => return,
        }
        let open = open_connections(&permits, max_connections);
        let rss = crate::metrics::resident_memory()
            .map(|bytes| format!(" host-rss={:.1}MiB", bytes as f64 / (1 << 20) as f64))
            .unwrap_or_default();
        log(format_args!("stats: open={open}{rss} {stats}"));
    }
}
