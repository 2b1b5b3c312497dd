//! Certificates: the directory the host loads them from, and the throwaway development CA.
//!
//! A certificate directory holds pairs `NAME.chain.pem` (leaf first) and `NAME.key.pem`, loaded
//! and checked by `cert_dir` (guest/cert-dir, the loader the command component uses too). The
//! names a certificate serves are the DNS names in its leaf; the one that covers the site's
//! default host also answers clients with no SNI or an unknown name. Other files are ignored.

use crate::logging::log;
pub(crate) use cert_dir::{CHAIN_SUFFIX, KEY_SUFFIX};
use cert_dir::{Checks, LoadError, Pair};
use rustls_pki_types::PrivateKeyDer;
use std::path::{Path, PathBuf};

/// A certificate chain, its private key and the names it covers, as handed to the guest.
#[derive(Clone)]
pub struct Certificate {
    pub chain: Vec<Vec<u8>>,
    pub private_key: Vec<u8>,
    pub key_format: KeyFormat,
    pub names: Vec<String>,
    /// Where it was loaded from, for messages.
    pub source: PathBuf,
}

/// Never prints the key.
impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("names", &self.names)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    Pkcs8,
    Sec1,
    Pkcs1,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0}: unknown private key format")]
    UnknownKeyFormat(PathBuf),
    #[error("cannot make the development certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{file}: cannot write: {source}")]
    Unwritable {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// What loading does with a certificate that has expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// Fails the start: clients that check dates would refuse every handshake.
    Refuse,
    /// Serves it, with a warning (`--allow-expired`).
    Serve,
    /// Loads it without a word: the caller replaces it (ACME orders a new one).
    Replace,
}

/// Loads every `NAME.chain.pem` + `NAME.key.pem` pair in `dir`, in name order, refusing an
/// expired certificate.
pub fn load_dir(dir: &Path) -> Result<Vec<Certificate>, CertError> {
    load_dir_with(dir, Expired::Refuse)
}

/// Loads every pair in `dir` with the one loader (`cert_dir`, shared with the command component):
/// each key checked against its certificate by a test signature with the provider the host signs
/// with (rustls's ring), expiry by `expired`. Logs the warnings (expires within 14 days, or
/// expired and served).
pub fn load_dir_with(dir: &Path, expired: Expired) -> Result<Vec<Certificate>, CertError> {
    let provider = rustls::crypto::ring::default_provider();
    let checks = Checks {
        allow_expired: expired != Expired::Refuse,
        ..Checks::new(&provider)
    };
    let loaded = cert_dir::load(dir, &checks)?;
    let quiet = |warning: &&cert_dir::Warning| {
        expired == Expired::Replace && matches!(warning, cert_dir::Warning::ServedExpired { .. })
    };
    for warning in loaded.warnings.iter().filter(|warning| !quiet(warning)) {
        log(format_args!("WARNING {warning}"));
    }
    loaded
        .pairs
        .into_iter()
        .map(Certificate::try_from)
        .collect()
}

impl TryFrom<Pair> for Certificate {
    type Error = CertError;

    fn try_from(pair: Pair) -> Result<Certificate, CertError> {
        let (key_format, private_key) = match &pair.key {
            PrivateKeyDer::Pkcs8(key) => (KeyFormat::Pkcs8, key.secret_pkcs8_der().to_vec()),
            PrivateKeyDer::Sec1(key) => (KeyFormat::Sec1, key.secret_sec1_der().to_vec()),
            PrivateKeyDer::Pkcs1(key) => (KeyFormat::Pkcs1, key.secret_pkcs1_der().to_vec()),
            _ => return Err(CertError::UnknownKeyFormat(pair.key_file)),
        };
        Ok(Certificate {
            chain: pair.chain.iter().map(|cert| cert.to_vec()).collect(),
            private_key,
            key_format,
            names: pair.names,
            source: pair.chain_file,
        })
    }
}

/// The host names that no certificate covers; they get the default certificate, and clients
/// will reject it.
pub fn uncovered<'a>(
    certificates: &[Certificate],
    hosts: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    hosts
        .into_iter()
        .filter(|host| {
            !certificates
                .iter()
                .any(|cert| cert.names.iter().any(|name| name == host))
        })
        .collect()
}

/// File names `dev_certs` writes into the certificate directory.
pub const DEV_CA_FILE: &str = "dev-ca.pem";
pub const DEV_CERT_NAME: &str = "dev";

/// Makes a throwaway CA and one ECDSA P-256 leaf for `hosts`, writes the CA certificate and the
/// leaf pair into `dir`, and forgets the CA's key: nothing more can ever be signed by it.
pub fn dev_certs(dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>, CertError> {
    dev_certs_with_key(
        dir,
        hosts,
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
    )
}

/// As `dev_certs`, with the leaf's key given: any kind rcgen signs with (ECDSA P-256 or P-384,
/// Ed25519, RSA), for tests of each signature scheme.
pub fn dev_certs_with_key(
    dir: &Path,
    hosts: &[String],
    leaf_key: rcgen::KeyPair,
) -> Result<Vec<PathBuf>, CertError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(
        DnType::CommonName,
        "tls-site development CA (NOT FOR PRODUCTION)",
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let mut leaf_params = CertificateParams::new(hosts.to_vec())?;
    leaf_params.distinguished_name.push(
        DnType::CommonName,
        "tls-site development (NOT FOR PRODUCTION)",
    );
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;

    std::fs::create_dir_all(dir).map_err(|source| CertError::Unwritable {
        file: dir.to_owned(),
        source,
    })?;
    let files = [
        (dir.join(DEV_CA_FILE), ca.pem()),
        (
            dir.join(format!("{DEV_CERT_NAME}{CHAIN_SUFFIX}")),
            leaf.pem(),
        ),
        (
            dir.join(format!("{DEV_CERT_NAME}{KEY_SUFFIX}")),
            leaf_key.serialize_pem(),
        ),
    ];
    for (file, pem) in &files {
        std::fs::write(file, pem).map_err(|source| CertError::Unwritable {
            file: file.clone(),
            source,
        })?;
    }
    // Loaded back as `serve` loads it: the key checked against the certificate it was written for.
    let provider = rustls::crypto::ring::default_provider();
    cert_dir::load_pair(&files[1].0, &Checks::new(&provider))?;
    Ok(files.into_iter().map(|(file, _)| file).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tls-site-certs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn dev_certs_load_back_with_their_names() {
        let dir = temp_dir("roundtrip");
        let hosts = vec!["a.test".to_owned(), "b.a.test".to_owned()];
        dev_certs(&dir, &hosts).unwrap();
        let loaded = load_dir(&dir).unwrap();
        assert_eq!(loaded.len(), 1, "dev-ca.pem is not a pair and is ignored");
        assert_eq!(loaded[0].names, hosts);
        assert_eq!(loaded[0].key_format, KeyFormat::Pkcs8);
        assert_eq!(uncovered(&loaded, ["a.test", "c.test"]), vec!["c.test"]);
    }

    #[test]
    fn a_chain_without_its_key_is_named() {
        let dir = temp_dir("nokey");
        dev_certs(&dir, &["a.test".to_owned()]).unwrap();
        std::fs::remove_file(dir.join("dev.key.pem")).unwrap();
        let error = load_dir(&dir).unwrap_err();
        assert!(
            matches!(error, CertError::Load(LoadError::MissingKey { .. })),
            "{error}"
        );
        assert!(error.to_string().contains("dev.key.pem"));
    }

    #[test]
    fn an_empty_directory_says_how_to_make_certificates() {
        let error = load_dir(&temp_dir("empty")).unwrap_err();
        assert!(error.to_string().contains("tls-site dev-certs"), "{error}");
    }

    #[test]
    fn a_garbage_chain_is_refused_with_its_file_name() {
        let dir = temp_dir("garbage");
        std::fs::write(dir.join("x.chain.pem"), "not pem").unwrap();
        let error = load_dir(&dir).unwrap_err();
        assert!(
            matches!(error, CertError::Load(LoadError::BadFile { .. })),
            "{error}"
        );
        assert!(error.to_string().contains("x.chain.pem"));
    }

    #[test]
    fn the_committed_development_certificates_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs");
        let loaded = load_dir(&dir).unwrap();
        assert!(
            loaded
                .iter()
                .any(|cert| cert.names.iter().any(|n| n == "tls-site.localhost"))
        );
    }
}
