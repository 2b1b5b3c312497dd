//! Certificates from an ACME CA (RFC 8555: Let's Encrypt, or pebble in the tests): obtained for
//! every host name of the site in one order, answered by HTTP-01 on the port-80 side, kept in a
//! state directory, and renewed in the background. A new certificate reaches clients as a new
//! sandbox snapshot swapped in for new connections; connections in flight finish on the old one.
//!
//! Until the first certificate arrives the site is served with a self-signed placeholder. A failed
//! order is logged loudly, retried with a doubling wait, and the old certificate keeps serving.

use crate::access_log::{Event, Stats, log};
use crate::certs::{self, CertError, Certificate};
use crate::engine::Limits;
use crate::inspect::{hosts_default_first, site_resources};
use crate::redirect::Challenges;
use crate::reload::{ReloadError, SiteSwap};
use crate::sandbox::SandboxError;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder,
};
use instant_acme::{OrderStatus, RetryPolicy};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, watch};

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The pair `certs::load_dir` reads back: `site.chain.pem` and `site.key.pem`.
const CERTIFICATE_NAME: &str = "site";
const ACCOUNT_FILE: &str = "account.json";

/// Renewal starts when less than 1/RENEW_WHEN_LEFT of a certificate's lifetime is left, and up to
/// 1/JITTER of it earlier, so that servers started together do not all ask at once.
const RENEW_WHEN_LEFT: u32 = 3;
const JITTER: u32 = 9;
/// After a failure the wait doubles from `AcmeOptions::first_retry_wait` up to this; with the
/// default first wait of 5 minutes that is at most 4 orders in the first hour (Let's Encrypt
/// allows 5 failed validations per name per hour).
const LONGEST_RETRY_WAIT: Duration = Duration::from_secs(24 * 3600);

/// `tls-site serve --acme ...`
#[derive(clap::Args, Clone, Debug)]
pub struct AcmeArgs {
    /// Get the certificates from an ACME CA instead of --certs (HTTP-01: the CA must reach the HTTP side on port 80)
    #[arg(long)]
    pub acme: bool,
    /// The CA: `letsencrypt`, `letsencrypt-staging` (try this first), or a directory URL
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Contact e-mail for the account (repeatable); the CA writes about expiring certificates and incidents
    #[arg(long, value_name = "EMAIL")]
    pub acme_email: Vec<String>,
    /// Agree to the CA's terms of service (required; read them first)
    #[arg(long)]
    pub acme_agree_terms: bool,
    /// Where the account key and the certificates are kept (mode 0700, files 0600)
    #[arg(long, value_name = "DIR", default_value = "acme")]
    pub acme_state: PathBuf,
    /// Trust this PEM root for the directory's HTTPS instead of the system's (for a test CA such as pebble)
    #[arg(long, value_name = "PEM")]
    pub acme_directory_ca: Option<PathBuf>,
}

impl AcmeArgs {
    /// The options `--acme` asks for, or `None` without it.
    pub fn options(&self) -> Result<Option<AcmeOptions>, AcmeError> {
        if !self.acme {
            return Ok(None);
        }
        let directory = match self.acme_directory.as_deref() {
            None => return Err(AcmeError::NoDirectory),
            Some("letsencrypt") => LETS_ENCRYPT.to_owned(),
            Some("letsencrypt-staging") => LETS_ENCRYPT_STAGING.to_owned(),
            Some(url) if url.starts_with("https://") => url.to_owned(),
            Some(other) => return Err(AcmeError::BadDirectory(other.to_owned())),
        };
        let mut options = AcmeOptions::new(directory, self.acme_state.clone());
        options.contacts = self.acme_email.clone();
        options.terms_agreed = self.acme_agree_terms;
        options.directory_ca = self.acme_directory_ca.clone();
        Ok(Some(options))
    }
}

/// How the host gets its certificates from an ACME CA.
#[derive(Clone, Debug)]
pub struct AcmeOptions {
    /// The CA's directory URL.
    pub directory: String,
    /// E-mail addresses for the account.
    pub contacts: Vec<String>,
    /// The operator agreed to the CA's terms of service; no account is made without it.
    pub terms_agreed: bool,
    /// Account key and certificates, one subdirectory per CA.
    pub state_dir: PathBuf,
    /// A root for the directory's HTTPS (a test CA); `None` trusts the system's roots.
    pub directory_ca: Option<PathBuf>,
    /// The wait after a first failed order; it doubles with each further failure.
    pub first_retry_wait: Duration,
}

impl AcmeOptions {
    pub fn new(directory: String, state_dir: PathBuf) -> AcmeOptions {
        AcmeOptions {
            directory,
            contacts: Vec::new(),
            terms_agreed: false,
            state_dir,
            directory_ca: None,
            first_retry_wait: Duration::from_secs(5 * 60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error(
        "--acme needs --acme-directory: `letsencrypt-staging` to try, `letsencrypt` for real, or a directory URL"
    )]
    NoDirectory,
    #[error("--acme-directory {0}: not `letsencrypt`, `letsencrypt-staging` or an https:// URL")]
    BadDirectory(String),
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

/// The tokens of one order, withdrawn when the order ends however it ends.
struct OpenChallenges<'a> {
    challenges: &'a Challenges,
    tokens: Vec<String>,
}

impl OpenChallenges<'_> {
    fn open(&mut self, token: &str, key_authorization: &str) {
        self.challenges
            .tokens()
            .insert(token.to_owned(), key_authorization.to_owned());
        self.tokens.push(token.to_owned());
    }
}

impl Drop for OpenChallenges<'_> {
    fn drop(&mut self) {
        let mut open = self.challenges.tokens();
        for token in &self.tokens {
            open.remove(token);
        }
    }
}

/// One CA's part of the state directory: `account.json`, `site.chain.pem`, `site.key.pem`.
#[derive(Clone, Debug)]
struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Creates `certificate_dir` owner-only.
    fn open(state_dir: &Path, directory: &str) -> Result<StateDir, AcmeError> {
        let dir = certificate_dir(state_dir, directory);
        for path in [state_dir, &dir] {
            let failed = |source| AcmeError::State {
                path: path.to_owned(),
                source,
            };
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(failed)?;
            // An existing directory keeps its mode on create: make it owner-only too.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .map_err(failed)?;
        }
        Ok(StateDir { dir })
    }

    fn chain_file(&self) -> PathBuf {
        self.dir.join(format!("{CERTIFICATE_NAME}.chain.pem"))
    }

    fn key_file(&self) -> PathBuf {
        self.dir.join(format!("{CERTIFICATE_NAME}.key.pem"))
    }

    fn certificate(&self) -> Result<Option<Certificate>, AcmeError> {
        if !self.chain_file().exists() {
            return Ok(None);
        }
        Ok(certs::load_dir(&self.dir)?.into_iter().next())
    }

    /// The key is written before the chain, each replaced whole by a rename.
    fn save_certificate(&self, chain_pem: &str, key_pem: &str) -> Result<(), AcmeError> {
        write_owner_only(&self.key_file(), key_pem.as_bytes())?;
        write_owner_only(&self.chain_file(), chain_pem.as_bytes())
    }

    fn account(&self) -> Result<Option<AccountCredentials>, AcmeError> {
        let path = self.dir.join(ACCOUNT_FILE);
        match std::fs::read(&path) {
            Ok(json) => {
                serde_json::from_slice(&json)
                    .map(Some)
                    .map_err(|error| AcmeError::BadState {
                        path,
                        message: format!("{error}; move it away to register a new account"),
                    })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AcmeError::State { path, source }),
        }
    }

    fn save_account(&self, credentials: &AccountCredentials) -> Result<(), AcmeError> {
        let path = self.dir.join(ACCOUNT_FILE);
        let json = serde_json::to_vec_pretty(credentials).map_err(|error| AcmeError::BadState {
            path: path.clone(),
            message: error.to_string(),
        })?;
        write_owner_only(&path, &json)
    }
}

/// Where the account and certificate for the CA at `directory` are kept: `state_dir/<the CA's
/// host and path>`, so that switching CAs (staging to production) never mixes their state.
pub fn certificate_dir(state_dir: &Path, directory: &str) -> PathBuf {
    let ca: String = directory
        .trim_start_matches("https://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir.join(ca)
}

/// Writes `path` whole (a temporary file renamed over it), readable by the owner only.
fn write_owner_only(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    let temporary = path.with_extension("new");
    let failed = |source| AcmeError::State {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(failed)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(failed)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}

/// A certificate's validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    pub fn of(certificate: &Certificate) -> Result<Validity, AcmeError> {
        let bad = |message: String| AcmeError::BadState {
            path: certificate.source.clone(),
            message,
        };
        let leaf = certificate
            .chain
            .first()
            .ok_or_else(|| bad("no certificate".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|error| bad(format!("unreadable leaf: {error}")))?;
        let time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        Ok(Validity {
            not_before: time(parsed.validity().not_before),
            not_after: time(parsed.validity().not_after),
        })
    }

    /// When to renew: once less than a third of the lifetime is left, up to a ninth of the
    /// lifetime earlier by `jitter` (0 to 1). A 90-day certificate: between day 50 and day 60.
    pub fn renewal_time(&self, jitter: f64) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let early = (lifetime / JITTER).mul_f64(jitter.clamp(0.0, 1.0));
        self.not_after - lifetime / RENEW_WHEN_LEFT - early
    }
}

/// The wait before retry number `failures` (1 after the first failure): doubling, bounded.
pub fn retry_wait(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    first.saturating_mul(1 << doublings).min(LONGEST_RETRY_WAIT)
}

/// A number in [0, 1) for jitter. std's hasher keys are seeded from the OS's randomness, which
/// is all jitter needs (nothing secret rests on it).
fn jitter() -> f64 {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (random >> 11) as f64 / (1u64 << 53) as f64
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

/// Whether the private key belongs to the leaf: a crash between writing the key and the chain
/// would leave a new key beside the old chain, and serving that pair fails every handshake.
fn key_matches(certificate: &Certificate) -> bool {
    let (Ok(key), Some(leaf)) = (
        rcgen::KeyPair::try_from(certificate.private_key.as_slice()),
        certificate.chain.first(),
    ) else {
        return false;
    };
    let public_key = rcgen::PublicKeyData::der_bytes(&key);
    x509_parser::parse_x509_certificate(leaf)
        .is_ok_and(|(_, parsed)| parsed.public_key().subject_public_key.data.as_ref() == public_key)
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
    let on_disk = state
        .certificate()?
        .map(|certificate| Validity::of(&certificate).map(|validity| (certificate, validity)))
        .transpose()?;
    let usable = on_disk.filter(|(certificate, validity)| {
        let covers_all = certs::uncovered(
            std::slice::from_ref(certificate),
            hosts.iter().map(String::as_str),
        )
        .is_empty();
        covers_all && validity.not_after > SystemTime::now() && key_matches(certificate)
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
                    failures = 0;
                    self.serving = Some(validity);
                }
                Err(error) => {
                    stats.count(Event::AcmeFailed);
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
            None => account.insert(self.account().await?),
        };
        let (chain_pem, key_pem) = self.order(account).await?;
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

    /// The account from the state directory, or a new one registered and saved there.
    async fn account(&self) -> Result<Account, AcmeError> {
        let directory = &self.options.directory;
        let failed = |source| AcmeError::Account {
            directory: directory.clone(),
            source,
        };
        let builder = match &self.options.directory_ca {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        }
        .map_err(failed)?;
        if let Some(credentials) = self.state.account()? {
            return builder.from_credentials(credentials).await.map_err(failed);
        }
        let contacts: Vec<String> = self
            .options
            .contacts
            .iter()
            .map(|email| {
                if email.starts_with("mailto:") {
                    email.clone()
                } else {
                    format!("mailto:{email}")
                }
            })
            .collect();
        let contact: Vec<&str> = contacts.iter().map(String::as_str).collect();
        let new_account = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = builder
            .create(&new_account, directory.clone(), None)
            .await
            .map_err(failed)?;
        self.state.save_account(&credentials)?;
        log(format_args!(
            "acme: registered account {} at {directory}",
            account.id()
        ));
        Ok(account)
    }

    /// Orders one ECDSA P-256 certificate for every host name, answering HTTP-01 for each.
    /// Returns the chain and the private key, in PEM.
    async fn order(&self, account: &Account) -> Result<(String, String), AcmeError> {
        let names = self.hosts.join(",");
        let failed = |source| AcmeError::Order {
            names: names.clone(),
            source,
        };
        let identifiers: Vec<Identifier> = self
            .hosts
            .iter()
            .map(|host| Identifier::Dns(host.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(failed)?;
        log(format_args!(
            "acme: ordered a certificate for {names} at {}",
            order.url()
        ));

        let mut open = OpenChallenges {
            challenges: &self.challenges,
            tokens: Vec::new(),
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(failed)?;
            let name = authorization.identifier().to_string();
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => return Err(AcmeError::AuthorizationFailed { name, status }),
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or(AcmeError::NoHttp01(name))?;
            open.open(&challenge.token, challenge.key_authorization().as_str());
            challenge.set_ready().await.map_err(failed)?;
        }
        let patient = RetryPolicy::new().timeout(Duration::from_secs(120));
        let status = order.poll_ready(&patient).await.map_err(failed)?;
        drop(open);
        if status != OrderStatus::Ready {
            let detail = order
                .state()
                .error
                .as_ref()
                .map_or_else(|| "no reason given".to_owned(), ToString::to_string);
            return Err(AcmeError::OrderFailed {
                names,
                status,
                detail,
            });
        }

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let request = rcgen::CertificateParams::new(self.hosts.clone())?.serialize_request(&key)?;
        order.finalize_csr(request.der()).await.map_err(failed)?;
        let chain = order.poll_certificate(&patient).await.map_err(failed)?;
        Ok((chain, key.serialize_pem()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 24 * 3600)
    }

    #[test]
    fn a_90_day_certificate_is_renewed_between_day_50_and_day_60() {
        let not_before = SystemTime::UNIX_EPOCH + days(1000);
        let validity = Validity {
            not_before,
            not_after: not_before + days(90),
        };
        assert_eq!(validity.renewal_time(0.0), not_before + days(60));
        assert_eq!(validity.renewal_time(1.0), not_before + days(50));
        let middle = validity.renewal_time(0.5);
        assert!(middle > not_before + days(50) && middle < not_before + days(60));
    }

    #[test]
    fn jitter_stays_in_its_range_and_varies() {
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(
            draws.iter().any(|j| *j != draws[0]),
            "64 equal draws: {draws:?}"
        );
    }

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_a_day() {
        let first = Duration::from_secs(300);
        let waits: Vec<u64> = (1..=4).map(|n| retry_wait(first, n).as_secs()).collect();
        assert_eq!(waits, [300, 600, 1200, 2400]);
        assert_eq!(retry_wait(first, 20), LONGEST_RETRY_WAIT);
        assert_eq!(retry_wait(first, u32::MAX), LONGEST_RETRY_WAIT);
    }

    #[test]
    fn only_open_tokens_under_the_challenge_path_are_answered() {
        let challenges = Challenges::default();
        {
            let mut open = OpenChallenges {
                challenges: &challenges,
                tokens: Vec::new(),
            };
            open.open("tok3n", "tok3n.thumbprint");
            assert_eq!(
                challenges
                    .response("/.well-known/acme-challenge/tok3n")
                    .as_deref(),
                Some("tok3n.thumbprint")
            );
            assert_eq!(
                challenges.response("/.well-known/acme-challenge/other"),
                None
            );
            assert_eq!(challenges.response("/tok3n"), None);
        }
        assert_eq!(
            challenges.response("/.well-known/acme-challenge/tok3n"),
            None,
            "withdrawn when the order ends"
        );
    }

    #[test]
    fn the_port_80_side_answers_open_tokens_and_redirects_the_rest() {
        use crate::redirect::{RedirectOutcome, RedirectTable, answer};
        let challenges = Challenges::default();
        let table = RedirectTable::new(vec!["a.test".into()], "a.test".into(), 443)
            .answering_challenges(challenges.clone());
        let mut open = OpenChallenges {
            challenges: &challenges,
            tokens: Vec::new(),
        };
        open.open("tok3n", "tok3n.thumbprint");
        let (response, outcome) = answer(
            &table,
            b"GET /.well-known/acme-challenge/tok3n HTTP/1.1\r\nHost: a.test\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            outcome,
            RedirectOutcome::AcmeChallenge("/.well-known/acme-challenge/tok3n".into())
        );
        assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(response.ends_with(b"\r\n\r\ntok3n.thumbprint"));
        let (_, other) = answer(
            &table,
            b"GET /.well-known/acme-challenge/guess HTTP/1.1\r\nHost: a.test\r\n\r\n",
        )
        .unwrap();
        assert_eq!(other, RedirectOutcome::Redirected("https://a.test/".into()));
    }

    #[test]
    fn state_files_are_the_owners_alone_and_each_ca_has_its_own() {
        let root = std::env::temp_dir().join(format!("tls-site-acme-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let staging = StateDir::open(&root, LETS_ENCRYPT_STAGING).unwrap();
        let production = StateDir::open(&root, LETS_ENCRYPT).unwrap();
        assert_ne!(staging.dir, production.dir);
        staging.save_certificate("chain", "key").unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&staging.dir), 0o700);
        assert_eq!(mode(&staging.key_file()), 0o600);
        assert_eq!(mode(&staging.chain_file()), 0o600);
        assert!(production.certificate().unwrap().is_none());
    }

    #[test]
    fn the_placeholder_covers_every_name_and_says_what_it_is() {
        let hosts = vec!["a.test".to_owned(), "b.a.test".to_owned()];
        let placeholder = placeholder(&hosts).unwrap();
        assert_eq!(placeholder.names, hosts);
        let validity = Validity::of(&placeholder).unwrap();
        assert!(validity.not_after > SystemTime::now());
        let text = String::from_utf8_lossy(&placeholder.chain[0]).into_owned();
        assert!(text.contains("waiting for an ACME certificate"));
        assert!(key_matches(&placeholder));
        let other = super::placeholder(&hosts).unwrap();
        assert!(
            !key_matches(&Certificate {
                private_key: other.private_key,
                ..placeholder
            }),
            "another key"
        );
    }

    #[test]
    fn the_cli_needs_a_directory_and_the_terms() {
        let args = |directory: Option<&str>| AcmeArgs {
            acme: true,
            acme_directory: directory.map(str::to_owned),
            acme_email: vec!["ops@example.org".into()],
            acme_agree_terms: false,
            acme_state: "acme".into(),
            acme_directory_ca: None,
        };
        assert!(matches!(args(None).options(), Err(AcmeError::NoDirectory)));
        assert!(matches!(
            args(Some("http://ca.test/dir")).options(),
            Err(AcmeError::BadDirectory(_))
        ));
        let options = args(Some("letsencrypt")).options().unwrap().unwrap();
        assert_eq!(options.directory, LETS_ENCRYPT);
        assert!(
            !options.terms_agreed,
            "checked when the server starts, with the CA named"
        );
        let off = AcmeArgs {
            acme: false,
            ..args(None)
        };
        assert!(off.options().unwrap().is_none());
    }
}
