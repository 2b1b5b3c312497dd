//! Certificates from an ACME CA (RFC 8555: Let's Encrypt, or pebble in the tests): obtained for
//! every host name of the site in one order, answered by HTTP-01 on the port-80 side, kept in a
//! state directory, and renewed in the background. A new certificate reaches clients as a new
//! sandbox snapshot swapped in for new connections; connections in flight finish on the old one.
//!
//! Until the first certificate arrives the site is served with a self-signed placeholder. A failed
//! order is logged loudly, retried with a doubling wait, and the old certificate keeps serving.
//!
//! This file is the renewal: what to serve at start, and the loop that orders when due and
//! swaps the new certificate in. `acme/schedule.rs` says when, `acme/order.rs` talks to the CA,
//! `acme/state.rs` keeps the files; the `--acme` flags are `options.rs`'s.

mod order;
mod schedule;
mod state;

pub use schedule::{Validity, retry_wait};
pub use state::certificate_dir;

use crate::access_log::{Event, Stats};
use crate::certs::{self, CertError, Certificate};
use crate::engine::Limits;
use crate::inspect::{hosts_default_first, site_resources};
use crate::log;
use crate::metrics::Metrics;
use crate::options::AcmeOptions;
use crate::redirect::Challenges;
use crate::reload::{ReloadError, SiteSwap};
use crate::sandbox::SandboxError;
use instant_acme::{Account, AuthorizationStatus, OrderStatus};
use schedule::jitter;
use state::StateDir;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, watch};

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("--acme needs --acme-agree-terms: read the terms of service of {0} first")]
    TermsNotAgreed(String),
    #[error(
        "ACME's HTTP-01 challenge is answered on the HTTP side: drop --no-http, and make port 80 reach it"
    )]
    NoHttpSide,
    #[error("{path}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadState { path: PathBuf, message: String },
    #[error("ACME account at {directory}")]
    Account {
        directory: String,
        source: instant_acme::Error,
    },
    #[error("ACME order for {names}")]
    Order {
        names: String,
        source: instant_acme::Error,
    },
    #[error("ACME order for {names} ended {status:?}: {detail}")]
    OrderFailed {
        names: String,
        status: OrderStatus,
        detail: String,
    },
    #[error("ACME authorization for {name} is {status:?}; the CA will not accept it")]
    AuthorizationFailed {
        name: String,
        status: AuthorizationStatus,
    },
    #[error("the CA offers no http-01 challenge for {0}")]
    NoHttp01(String),
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error("cannot make a key or a signing request")]
    Key(#[from] rcgen::Error),
    #[error("the new certificate cannot be served")]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Install(#[from] ReloadError),
}

/// Served until the first ACME certificate arrives: a self-signed certificate that says so.
pub fn placeholder(hosts: &[String]) -> Result<Certificate, AcmeError> {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        "tls-site placeholder (self-signed): waiting for an ACME certificate",
    );
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let certificate = params.self_signed(&key)?;
    Ok(Certificate {
        chain: vec![certificate.der().to_vec()],
        private_key: key.serialize_der(),
        key_format: certs::KeyFormat::Pkcs8,
        names: hosts.to_vec(),
        source: PathBuf::from("(ACME placeholder)"),
    })
}

/// The ACME side of a server between `prepare` (before the sandbox exists) and `run`.
pub(crate) struct Renewal {
    options: AcmeOptions,
    state: StateDir,
    /// Every host name of the site, the default first: one order covers them all.
    hosts: Vec<String>,
    challenges: Challenges,
    /// The certificate being served, if it is one from the CA.
    serving: Option<Validity>,
}

/// Checks the options, reads the state directory, and returns the certificates to start with:
/// the CA's from an earlier run if they cover every host name and have not expired, else the
/// placeholder.
pub(crate) async fn prepare(
    options: &AcmeOptions,
    component: &Path,
    limits: &Limits,
    has_http_side: bool,
) -> Result<(Vec<Certificate>, Renewal), AcmeError> {
    if !options.terms_agreed {
        return Err(AcmeError::TermsNotAgreed(options.directory.clone()));
    }
    if !has_http_side {
        return Err(AcmeError::NoHttpSide);
    }
    let hosts = hosts_default_first(&site_resources(component, limits.clone()).await?);
    let state = StateDir::open(&options.state_dir, &options.directory)?;
    // A pair that fails the loader's checks (its key is not its certificate's: a state directory
    // from before pairs were made live at once, or edited by hand) is replaced, not fatal.
    let on_disk = state.certificate().unwrap_or_else(|error| {
        log(format_args!("acme: {error}; ordering a new certificate"));
        None
    });
    let on_disk = on_disk
        .map(|certificate| Validity::of(&certificate).map(|validity| (certificate, validity)))
        .transpose()?;
    let usable = on_disk.filter(|(certificate, validity)| {
        let covers_all = certs::uncovered(
            std::slice::from_ref(certificate),
            hosts.iter().map(String::as_str),
        )
        .is_empty();
        covers_all && validity.not_after > SystemTime::now()
    });
    let (certificate, serving) = match usable {
        Some((certificate, validity)) => {
            log(format_args!(
                "acme: serving the certificate in {} (valid until {}); {} is asked for a new one only when it is due",
                state.dir.display(),
                humantime::format_rfc3339_seconds(validity.not_after),
                options.directory,
            ));
            (certificate, Some(validity))
        }
        None => {
            log(format_args!(
                "acme: no usable certificate for {} in {} (none yet, expired, not for every name, or not its key's); serving a self-signed placeholder while {} issues one (HTTP-01 on the HTTP side)",
                hosts.join(","),
                state.dir.display(),
                options.directory,
            ));
            (placeholder(&hosts)?, None)
        }
    };
    let renewal = Renewal {
        options: options.clone(),
        state,
        hosts,
        challenges: Challenges::default(),
        serving,
    };
    Ok((vec![certificate], renewal))
}

impl Renewal {
    /// The answers the port-80 side gives during an order.
    pub(crate) fn challenges(&self) -> Challenges {
        self.challenges.clone()
    }

    /// Until `stopped`: waits until the certificate is due (or `renew_now` is notified), orders a
    /// new one, and installs a sandbox made from it. A failure keeps what is served and retries
    /// after a doubling wait.
    pub(crate) async fn run(
        mut self,
        site: Arc<SiteSwap>,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
        renew_now: Arc<Notify>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut account = None;
        let mut failures = 0;
        loop {
            let wait = match (failures, self.serving) {
                (0, None) => Duration::ZERO,
                (0, Some(validity)) => {
                    let due = validity.renewal_time(jitter());
                    log(format_args!(
                        "acme: renewal due at {}",
                        humantime::format_rfc3339_seconds(due)
                    ));
                    due.duration_since(SystemTime::now()).unwrap_or_default()
                }
                (failures, _) => retry_wait(self.options.first_retry_wait, failures),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = renew_now.notified() => log(format_args!("acme: renewal asked for now")),
                _ = stopped.changed() => return,
            }
            let renewed = tokio::select! {
                renewed = self.renew(&mut account, &site) => renewed,
                _ = stopped.changed() => return,
            };
            match renewed {
                Ok(validity) => {
                    stats.count(Event::AcmeInstalled);
                    metrics.acme_renewal(true);
                    failures = 0;
                    self.serving = Some(validity);
                }
                Err(error) => {
                    stats.count(Event::AcmeFailed);
                    metrics.acme_renewal(false);
                    failures += 1;
                    let still = match self.serving {
                        Some(validity) => format!(
                            "the old certificate, valid until {}",
                            humantime::format_rfc3339_seconds(validity.not_after)
                        ),
                        None => "the self-signed placeholder".to_owned(),
                    };
                    let next = retry_wait(self.options.first_retry_wait, failures);
                    log(format_args!(
                        "ACME FAILED (attempt {failures}): {:#}; still serving {still}; next attempt in {}",
                        // anyhow's alternate form: the error and its causes on one line. HTTP
                        // client errors keep the useful part ("UnknownIssuer", "Connection
                        // refused") in their sources.
                        anyhow::Error::from(error),
                        humantime::format_duration(next),
                    ));
                }
            }
        }
    }

    /// One order for all the site's names; the result saved, snapshotted and swapped in.
    async fn renew(
        &self,
        account: &mut Option<Account>,
        site: &SiteSwap,
    ) -> Result<Validity, AcmeError> {
        let started = std::time::Instant::now();
        let account = match account {
            Some(account) => account,
            None => account.insert(order::account(&self.options, &self.state).await?),
        };
        let (chain_pem, key_pem) = order::order(account, &self.hosts, &self.challenges).await?;
        self.state.save_certificate(&chain_pem, &key_pem)?;
        let certificate = self
            .state
            .certificate()?
            .ok_or_else(|| AcmeError::BadState {
                path: self.state.chain_file(),
                message: "just written, now missing".into(),
            })?;
        let validity = Validity::of(&certificate)?;
        // Built away from the serving threads and swapped in as a reload is (reload.rs); the
        // session-ticket keys carry over, so returning clients still resume.
        site.install_certificates(vec![certificate]).await?;
        log(format_args!(
            "acme: new certificate for {} valid until {} now serving new connections ({} ms from order to swap)",
            self.hosts.join(","),
            humantime::format_rfc3339_seconds(validity.not_after),
            started.elapsed().as_millis(),
        ));
        Ok(validity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_covers_every_name_and_says_what_it_is() {
        let hosts = vec!["a.test".to_owned(), "b.a.test".to_owned()];
        let placeholder = placeholder(&hosts).unwrap();
        assert_eq!(placeholder.names, hosts);
        let validity = Validity::of(&placeholder).unwrap();
        assert!(validity.not_after > SystemTime::now());
        let text = String::from_utf8_lossy(&placeholder.chain[0]).into_owned();
        assert!(text.contains("waiting for an ACME certificate"));
    }
}
