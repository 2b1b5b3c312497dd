//! The certificate directory, loaded and checked: the one loader of the host (host/src/certs.rs)
//! and the command component (guest/command/src/certs.rs).
//!
//! The directory holds pairs `NAME.chain.pem` (leaf first) and `NAME.key.pem`; other files are
//! ignored. A pair loads only if its leaf names a DNS host (subjectAltName: SNI selects by it),
//! its key signs a test message that the leaf's public key verifies (else every handshake would
//! fail at the client), and its leaf has not expired, unless the caller allows that; one that
//! expires within [`EXPIRY_WARNING`] loads with a [`Warning`]. Every error names the file.

use rustls::SignatureScheme;
use rustls::crypto::CryptoProvider;
use rustls::sign::SigningKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use x509_cert::der::Decode as _;

pub const CHAIN_SUFFIX: &str = ".chain.pem";
pub const KEY_SUFFIX: &str = ".key.pem";

/// A certificate with less than this left loads with a warning: enough time to renew by hand.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A certificate chain with its private key, checked to belong together.
pub struct Pair {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// `key`, loaded by the caller's provider: it made the test signature.
    pub signing_key: Arc<dyn SigningKey>,
    /// The leaf's DNS names, lower case (wildcards included).
    pub names: Vec<String>,
    pub validity: Validity,
    pub chain_file: PathBuf,
    pub key_file: PathBuf,
}

/// Never prints the key.
impl fmt::Debug for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pair")
            .field("names", &self.names)
            .field("validity", &self.validity)
            .field("chain_file", &self.chain_file)
            .finish_non_exhaustive()
    }
}

/// The leaf's validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// What loading checks beyond the files themselves.
#[derive(Clone, Copy)]
pub struct Checks<'a> {
    /// Loads the keys and signs the test message; verifies it with its verification algorithms.
    /// The provider that will sign the handshakes, so that a key it cannot use fails here.
    pub provider: &'a CryptoProvider,
    /// The time expiry is judged at.
    pub now: SystemTime,
    /// Load an expired certificate with a warning instead of refusing it (`--allow-expired`).
    pub allow_expired: bool,
}

impl<'a> Checks<'a> {
    /// Now, and an expired certificate refused.
    pub fn new(provider: &'a CryptoProvider) -> Checks<'a> {
        Checks {
            provider,
            now: SystemTime::now(),
            allow_expired: false,
        }
    }
}

/// Every pair of a directory, in name order, and what the operator should know about them.
#[derive(Debug)]
pub struct Loaded {
    pub pairs: Vec<Pair>,
    pub warnings: Vec<Warning>,
}

/// A pair that loads, about which the operator should hear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// Expires within [`EXPIRY_WARNING`].
    ExpiresSoon {
        chain: PathBuf,
        not_after: SystemTime,
    },
    /// Has expired, and `Checks::allow_expired` let it load.
    ServedExpired {
        chain: PathBuf,
        not_after: SystemTime,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::ExpiresSoon { chain, not_after } => write!(
                f,
                "{}: the certificate expires at {}, in less than {} days: renew it",
                chain.display(),
                Date(*not_after),
                EXPIRY_WARNING.as_secs() / (24 * 3600)
            ),
            Warning::ServedExpired { chain, not_after } => write!(
                f,
                "{}: the certificate expired at {}; served anyway (--allow-expired), clients that check dates will refuse it",
                chain.display(),
                Date(*not_after)
            ),
        }
    }
}

/// Why the directory cannot be served from; the message starts with the path it is about.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read the certificate directory: {why}", dir.display())]
    UnreadableDir { dir: PathBuf, why: String },
    #[error(
        "{}: no certificates (expected NAME{CHAIN_SUFFIX} with NAME{KEY_SUFFIX}); for development run `tls-site dev-certs`", dir.display()
    )]
    Empty { dir: PathBuf },
    #[error("{}: {why}", file.display())]
    BadFile { file: PathBuf, why: String },
    #[error("{}: has no private key beside it; expected {}", chain.display(), key.display())]
    MissingKey { chain: PathBuf, key: PathBuf },
    #[error("{}: the leaf names no DNS host (subjectAltName); SNI could never select it", file.display())]
    NoNames { file: PathBuf },
    #[error("{}: does not match the certificate in {} ({why}); put the key the certificate was issued for beside it", key.display(), chain.display())]
    KeyMismatch {
        key: PathBuf,
        chain: PathBuf,
        why: String,
    },
    #[error("{}: the certificate expired at {}; renew it (or start with --allow-expired to serve it anyway)", file.display(), Date(*not_after))]
    Expired {
        file: PathBuf,
        not_after: SystemTime,
    },
}

/// Loads every `NAME.chain.pem` + `NAME.key.pem` pair in `dir`, in name order.
pub fn load(dir: &Path, checks: &Checks<'_>) -> Result<Loaded, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|error| LoadError::UnreadableDir {
        dir: dir.to_owned(),
        why: error.to_string(),
    })?;
    let mut chains: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.to_string_lossy().ends_with(CHAIN_SUFFIX))
        .collect();
    chains.sort();
    if chains.is_empty() {
        return Err(LoadError::Empty {
            dir: dir.to_owned(),
        });
    }
    let mut loaded = Loaded {
        pairs: Vec::with_capacity(chains.len()),
        warnings: Vec::new(),
    };
    for chain in &chains {
        let (pair, warning) = load_pair(chain, checks)?;
        loaded.pairs.push(pair);
        loaded.warnings.extend(warning);
    }
    Ok(loaded)
}

/// The key file beside `chain_file`: `NAME.key.pem` for `NAME.chain.pem`.
pub fn key_file_for(chain_file: &Path) -> PathBuf {
    let name = chain_file.file_name().unwrap_or_default().to_string_lossy();
    let stem = name.strip_suffix(CHAIN_SUFFIX).unwrap_or(&name);
    chain_file.with_file_name(format!("{stem}{KEY_SUFFIX}"))
}

/// Loads and checks one pair: `chain_file` and the key beside it.
pub fn load_pair(
    chain_file: &Path,
    checks: &Checks<'_>,
) -> Result<(Pair, Option<Warning>), LoadError> {
    let bad = |file: &Path, why: String| LoadError::BadFile {
        file: file.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(chain_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| bad(chain_file, error.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(bad(chain_file, "no CERTIFICATE block".into()));
    };
    let not_usable =
        |why: String| bad(chain_file, format!("not a usable X.509 certificate: {why}"));
    let names = dns_names(leaf).map_err(not_usable)?;
    if names.is_empty() {
        return Err(LoadError::NoNames {
            file: chain_file.to_owned(),
        });
    }
    let validity = validity(leaf).map_err(|error| not_usable(error.to_string()))?;

    let key_file = key_file_for(chain_file);
    if !key_file.exists() {
        return Err(LoadError::MissingKey {
            chain: chain_file.to_owned(),
            key: key_file,
        });
    }
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|error| bad(&key_file, error.to_string()))?;
    let signing_key = checks
        .provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|error| {
            bad(
                &key_file,
                format!("not a private key this server can sign with: {error}"),
            )
        })?;
    check_key_matches(leaf, signing_key.as_ref(), checks.provider).map_err(|why| {
        LoadError::KeyMismatch {
            key: key_file.clone(),
            chain: chain_file.to_owned(),
            why,
        }
    })?;

    let warning = if checks.now >= validity.not_after {
        if !checks.allow_expired {
            return Err(LoadError::Expired {
                file: chain_file.to_owned(),
                not_after: validity.not_after,
            });
        }
        Some(Warning::ServedExpired {
            chain: chain_file.to_owned(),
            not_after: validity.not_after,
        })
    } else if validity.not_after < checks.now + EXPIRY_WARNING {
        Some(Warning::ExpiresSoon {
            chain: chain_file.to_owned(),
            not_after: validity.not_after,
        })
    } else {
        None
    };
    let pair = Pair {
        chain,
        key,
        signing_key,
        names,
        validity,
        chain_file: chain_file.to_owned(),
        key_file,
    };
    Ok((pair, warning))
}

/// The DNS names of the leaf's subjectAltName, lower case (wildcards included).
fn dns_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let certificate = webpki::EndEntityCert::try_from(leaf).map_err(|error| error.to_string())?;
    Ok(certificate
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect())
}

/// The validity period of a certificate (DER).
pub fn validity(leaf: &CertificateDer<'_>) -> Result<Validity, x509_cert::der::Error> {
    let certificate = x509_cert::Certificate::from_der(leaf.as_ref())?;
    let period = certificate.tbs_certificate.validity;
    let time = |time: x509_cert::time::Time| SystemTime::UNIX_EPOCH + time.to_unix_duration();
    Ok(Validity {
        not_before: time(period.not_before),
        not_after: time(period.not_after),
    })
}

/// Signs a message with `key` and verifies the signature with the leaf's public key. Not
/// rustls's `CertifiedKey::keys_match`, which compares the public key a provider derives from the
/// private key with the leaf's: a provider need not derive one (RustCrypto's keys do not), and a
/// signature is what a client checks.
fn check_key_matches(
    leaf: &CertificateDer<'_>,
    key: &dyn SigningKey,
    provider: &CryptoProvider,
) -> Result<(), String> {
    let algorithms = &provider.signature_verification_algorithms;
    let schemes: Vec<SignatureScheme> = algorithms
        .mapping
        .iter()
        .map(|(scheme, _)| *scheme)
        .collect();
    let signer = key
        .choose_scheme(&schemes)
        .ok_or("the key signs with no scheme this server verifies")?;
    let message = b"tls-site: does this key match its certificate?";
    let signature = signer
        .sign(message)
        .map_err(|error| format!("cannot sign: {error}"))?;
    let certificate = webpki::EndEntityCert::try_from(leaf).map_err(|error| error.to_string())?;
    let verifiers = algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == signer.scheme())
        .map_or(&[][..], |(_, verifiers)| verifiers);
    let verified = verifiers.iter().any(|&algorithm| {
        certificate
            .verify_signature(algorithm, message, &signature)
            .is_ok()
    });
    match verified {
        true => Ok(()),
        false => {
            Err("a signature by the key does not verify with the certificate's public key".into())
        }
    }
}

/// A time as RFC 3339 (UTC), for messages.
struct Date(SystemTime);

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since_epoch = self
            .0
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        match x509_cert::der::DateTime::from_unix_duration(since_epoch) {
            Ok(date) => write!(f, "{date}"),
            Err(_) => write!(f, "{} s after 1970", since_epoch.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, date_time_ymd};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tls-site-cert-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes `NAME.chain.pem` for `a.test`, valid through 2030-01-15, signed by `key`, and
    /// `NAME.key.pem` with `key`.
    fn write_pair(dir: &Path, name: &str, key: &KeyPair) -> PathBuf {
        let mut params = CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_before = date_time_ymd(2029, 1, 1);
        params.not_after = date_time_ymd(2030, 1, 15);
        let certificate = params.self_signed(key).unwrap();
        let chain = dir.join(format!("{name}{CHAIN_SUFFIX}"));
        std::fs::write(&chain, certificate.pem()).unwrap();
        std::fs::write(key_file_for(&chain), key.serialize_pem()).unwrap();
        chain
    }

    fn new_key() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    fn at(provider: &CryptoProvider, now: SystemTime) -> Checks<'_> {
        Checks {
            now,
            ..Checks::new(provider)
        }
    }

    /// 2030-01-15T00:00:00Z, when `write_pair`'s certificates expire.
    fn expiry() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_894_665_600)
    }

    #[test]
    fn a_pair_loads_with_its_names_and_validity() {
        let dir = scratch("ok");
        write_pair(&dir, "site", &new_key());
        std::fs::write(dir.join("dev-ca.pem"), "not a pair, ignored").unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let loaded = load(&dir, &at(&provider, expiry() - 30 * DAY)).unwrap();
        assert_eq!(loaded.pairs.len(), 1);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let pair = &loaded.pairs[0];
        assert_eq!(pair.names, ["a.test"]);
        assert_eq!(pair.validity.not_after, expiry());
        assert_eq!(pair.key_file, dir.join("site.key.pem"));
    }

    #[test]
    fn a_key_that_is_not_the_certificates_fails_and_names_both_files() {
        let dir = scratch("mismatch");
        let chain = write_pair(&dir, "site", &new_key());
        std::fs::write(key_file_for(&chain), new_key().serialize_pem()).unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let error = load(&dir, &at(&provider, expiry() - 30 * DAY)).unwrap_err();
        assert!(matches!(error, LoadError::KeyMismatch { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "{}: does not match",
                dir.join("site.key.pem").display()
            )) && message.contains("site.chain.pem"),
            "{message}"
        );
    }

    #[test]
    fn an_expired_certificate_fails_unless_allowed() {
        let dir = scratch("expired");
        write_pair(&dir, "site", &new_key());
        let provider = rustls::crypto::ring::default_provider();
        let mut checks = at(&provider, expiry() + DAY);
        let error = load(&dir, &checks).unwrap_err();
        assert!(matches!(error, LoadError::Expired { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("site.chain.pem: the certificate expired at 2030-01-15T00:00:00Z")
                && message.contains("--allow-expired"),
            "{message}"
        );

        checks.allow_expired = true;
        let loaded = load(&dir, &checks).unwrap();
        assert_eq!(loaded.pairs.len(), 1);
        assert!(
            matches!(loaded.warnings[..], [Warning::ServedExpired { .. }]),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn a_certificate_expiring_within_14_days_loads_with_a_warning() {
        let dir = scratch("soon");
        write_pair(&dir, "site", &new_key());
        let provider = rustls::crypto::ring::default_provider();
        let loaded = load(&dir, &at(&provider, expiry() - 13 * DAY)).unwrap();
        assert_eq!(loaded.pairs.len(), 1);
        let [warning] = &loaded.warnings[..] else {
            panic!("one warning expected: {:?}", loaded.warnings);
        };
        assert!(matches!(warning, Warning::ExpiresSoon { .. }));
        assert!(
            warning
                .to_string()
                .contains("site.chain.pem: the certificate expires at 2030-01-15T00:00:00Z"),
            "{warning}"
        );
        let later = load(&dir, &at(&provider, expiry() - 15 * DAY)).unwrap();
        assert!(later.warnings.is_empty(), "{:?}", later.warnings);
    }

    #[test]
    fn missing_and_unreadable_files_are_named() {
        let provider = rustls::crypto::ring::default_provider();
        let checks = at(&provider, expiry() - 30 * DAY);
        let dir = scratch("missing");
        let error = load(&dir, &checks).unwrap_err().to_string();
        assert!(
            error.contains("no certificates") && error.contains("tls-site dev-certs"),
            "{error}"
        );

        let chain = write_pair(&dir, "site", &new_key());
        std::fs::remove_file(key_file_for(&chain)).unwrap();
        let error = load(&dir, &checks).unwrap_err();
        assert!(matches!(error, LoadError::MissingKey { .. }), "{error}");
        assert!(error.to_string().contains("site.key.pem"), "{error}");

        std::fs::write(key_file_for(&chain), "not a key").unwrap();
        let error = load(&dir, &checks).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{}: ", dir.join("site.key.pem").display())),
            "{error}"
        );

        std::fs::write(&chain, "not pem").unwrap();
        let error = load(&dir, &checks).unwrap_err();
        assert!(matches!(error, LoadError::BadFile { .. }), "{error}");
        assert!(error.to_string().contains("site.chain.pem"), "{error}");
    }
}
