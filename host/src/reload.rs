//! Replacing the site without dropping a connection: the certificates and the component read
//! again, the new sandbox built away from the serving threads, then swapped in for new
//! connections, while each connection in flight finishes on the sandbox it was accepted with.
//! SIGHUP, a change `watcher.rs` sees and an ACME renewal all swap this way.

use crate::access_log::{Event, Stats};
use crate::certs::{self, CertError, Certificate};
use crate::log;
use crate::metrics::Metrics;
use crate::sandbox::{Sandbox, SandboxError};
use crate::tickets::{Reread, TicketKeyError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    TicketKeys(#[from] TicketKeyError),
    #[error("building the new site panicked: {0}")]
    Panicked(String),
}

/// Where a reload's certificates come from.
#[derive(Clone, Debug)]
pub enum CertificateSource {
    /// `--certs DIR`, read again at each reload.
    Directory(PathBuf, certs::Expired),
    /// ACME: the certificate it installed last; a reload keeps it and reads the component again.
    Acme,
}

/// What a reload swapped in.
#[derive(Debug)]
pub struct Reloaded {
    /// Certificates the new site serves.
    pub certificates: usize,
    /// Whether the session-ticket keys changed with it.
    pub ticket_keys: Reread,
    /// From the first file read to the swap.
    pub took: Duration,
}

/// The site new connections are served from, and the one way to replace it.
pub struct SiteSwap {
    /// Each connection takes the sandbox current when it is accepted, and keeps it (an `Arc`)
    /// to its end; a swap only changes what the next connection takes.
    install: watch::Sender<Arc<Sandbox>>,
    component: PathBuf,
    source: CertificateSource,
    /// The certificates of the sandbox served, locked by every build: reloads and renewals take
    /// turns, as each build instantiates the component in the one pool slot kept for start-up
    /// work (`Limits::instances`).
    serving: Mutex<Vec<Certificate>>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
}

impl SiteSwap {
    /// `sandbox`, made from `component` and `certificates`, served until a swap.
    pub fn new(
        sandbox: Sandbox,
        component: PathBuf,
        source: CertificateSource,
        certificates: Vec<Certificate>,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
    ) -> SiteSwap {
        SiteSwap {
            install: watch::Sender::new(Arc::new(sandbox)),
            component,
            source,
            serving: Mutex::new(certificates),
            stats,
            metrics,
        }
    }

    /// The sandbox new connections are served from now.
    pub fn current(&self) -> Arc<Sandbox> {
        self.install.borrow().clone()
    }

    /// Follows the sandbox served: what admits connections holds one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Sandbox>> {
        self.install.subscribe()
    }

    pub fn source(&self) -> &CertificateSource {
        &self.source
    }

    /// Reads the certificates (unless ACME's), the component and the ticket-key file again,
    /// builds the new site and swaps it in. A failure (a key not its certificate's, a broken
    /// component, a host name no certificate covers, a bad ticket-key file) changes nothing:
    /// the site served stays. Either way it is logged, with `why` (what asked), and counted.
    pub async fn reload(&self, why: &str) -> Result<Reloaded, ReloadError> {
        let reloaded = self.rebuild().await;
        match &reloaded {
            Ok(reloaded) => {
                self.count(true);
                let tickets = match reloaded.ticket_keys {
                    Reread::Rotated { keys } => format!(", {keys} session-ticket keys"),
                    Reread::Unchanged | Reread::NotFromFile => String::new(),
                };
                log(format_args!(
                    "reload ({why}): {} with {} certificates{tickets} now serves new connections ({} ms); those in flight finish on the old one",
                    self.component.display(),
                    reloaded.certificates,
                    reloaded.took.as_millis(),
                ));
            }
            Err(error) => self.failed(why, error),
        }
        reloaded
    }

    /// Reads the ticket-key file again (the certificates and the component are left as they
    /// are): for a change to that file alone. Logged and counted as a reload.
    pub async fn reload_ticket_keys(&self, why: &str) -> Result<Reread, ReloadError> {
        let _building = self.serving.lock().await;
        let reread = self
            .current()
            .ticket_keys()
            .reread()
            .map_err(ReloadError::from);
        match &reread {
            Ok(reread) => {
                self.count(true);
                if let Reread::Rotated { keys } = reread {
                    log(format_args!(
                        "reload ({why}): {keys} session-ticket keys now seal and open tickets"
                    ));
                }
            }
            Err(error) => self.failed(why, error),
        }
        reread
    }

    /// ACME's renewal: `certificates` built into a new site with the component, swapped in.
    pub async fn install_certificates(
        &self,
        certificates: Vec<Certificate>,
    ) -> Result<(), ReloadError> {
        let mut serving = self.serving.lock().await;
        let sandbox = self.build(certificates.clone()).await?;
        self.install.send_replace(Arc::new(sandbox));
        *serving = certificates;
        Ok(())
    }

    async fn rebuild(&self) -> Result<Reloaded, ReloadError> {
        let started = Instant::now();
        let mut serving = self.serving.lock().await;
        let tickets = self.current().ticket_keys().clone();
        // Everything read and built before anything is swapped: a failure leaves all as it was.
        let new_keys = tickets.read_file()?;
        let certificates = match &self.source {
            CertificateSource::Directory(dir, expired) => certs::load_dir_with(dir, *expired)?,
            CertificateSource::Acme => serving.clone(),
        };
        let sandbox = self.build(certificates.clone()).await?;
        self.install.send_replace(Arc::new(sandbox));
        let ticket_keys = match new_keys {
            Some(keys) => tickets.use_keys(keys),
            None => Reread::NotFromFile,
        };
        let reloaded = Reloaded {
            certificates: certificates.len(),
            ticket_keys,
            took: started.elapsed(),
        };
        *serving = certificates;
        Ok(reloaded)
    }

    /// The new sandbox, on the current one's engine (`Sandbox::successor`). Initialising and
    /// compiling the component is seconds of CPU: it runs on a blocking thread, off the threads
    /// that accept and serve connections.
    async fn build(&self, certificates: Vec<Certificate>) -> Result<Sandbox, ReloadError> {
        let (current, component, runtime) = (
            self.current(),
            self.component.clone(),
            tokio::runtime::Handle::current(),
        );
        tokio::task::spawn_blocking(move || {
            runtime.block_on(current.successor(&component, &certificates))
        })
        .await
        .map_err(|join| ReloadError::Panicked(join.to_string()))?
        .map_err(ReloadError::from)
    }

    /// Every reload's result is counted here, and only here.
    fn count(&self, installed: bool) {
        self.metrics.reload(installed);
        self.stats.count(match installed {
            true => Event::ReloadInstalled,
            false => Event::ReloadFailed,
        });
    }

    fn failed(&self, why: &str, error: &ReloadError) {
        self.count(false);
        log(format_args!(
            "RELOAD FAILED ({why}): {error}; still serving the site as it was"
        ));
    }
}
