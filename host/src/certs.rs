//! Certificates: the directory the host loads them from, and the throwaway development CA.
//!
//! A certificate directory holds pairs `NAME.chain.pem` (leaf first) and `NAME.key.pem`. The names
//! a certificate serves are the DNS names in its leaf; the one that covers the site's default
//! host also answers clients with no SNI or an unknown name. Other files are ignored.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

pub(crate) const CHAIN_SUFFIX: &str = ".chain.pem";
pub(crate) const KEY_SUFFIX: &str = ".key.pem";

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
    #[error("{dir}: cannot read the certificate directory: {source}")]
    UnreadableDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{dir}: no certificates (expected NAME{CHAIN_SUFFIX} with NAME{KEY_SUFFIX}); for development run `tls-site dev-certs`"
    )]
    Empty { dir: PathBuf },
    #[error("{file}: {message}")]
    BadFile { file: PathBuf, message: String },
    #[error("{chain}: has no private key beside it; expected {key}")]
    MissingKey { chain: PathBuf, key: PathBuf },
    #[error("{file}: the leaf names no DNS host (subjectAltName); SNI could never select it")]
    NoNames { file: PathBuf },
    #[error("cannot make the development certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{file}: cannot write: {source}")]
    Unwritable {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// Loads every `NAME.chain.pem` + `NAME.key.pem` pair in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Certificate>, CertError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CertError::UnreadableDir {
        dir: dir.to_owned(),
        source,
    })?;
    let mut chains: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.to_string_lossy().ends_with(CHAIN_SUFFIX))
        .collect();
    chains.sort();
    if chains.is_empty() {
        return Err(CertError::Empty {
            dir: dir.to_owned(),
        });
    }
    chains.iter().map(|chain| load_pair(chain)).collect()
}

fn load_pair(chain_path: &Path) -> Result<Certificate, CertError> {
    let bad = |file: &Path, message: String| CertError::BadFile {
        file: file.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(chain_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| bad(chain_path, error.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(bad(chain_path, "no CERTIFICATE block".into()));
    };
    let names = dns_names(leaf).map_err(|error| {
        bad(
            chain_path,
            format!("not a usable X.509 certificate: {error}"),
        )
    })?;
    if names.is_empty() {
        return Err(CertError::NoNames {
            file: chain_path.to_owned(),
        });
    }

    let file_name = chain_path.file_name().unwrap().to_string_lossy();
    let key_path = chain_path.with_file_name(file_name.replace(CHAIN_SUFFIX, KEY_SUFFIX));
    if !key_path.exists() {
        return Err(CertError::MissingKey {
            chain: chain_path.to_owned(),
            key: key_path,
        });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|error| bad(&key_path, error.to_string()))?;
    let (key_format, private_key) = match key {
        PrivateKeyDer::Pkcs8(key) => (KeyFormat::Pkcs8, key.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Sec1(key) => (KeyFormat::Sec1, key.secret_sec1_der().to_vec()),
        PrivateKeyDer::Pkcs1(key) => (KeyFormat::Pkcs1, key.secret_pkcs1_der().to_vec()),
        _ => return Err(bad(&key_path, "unknown private key format".into())),
    };
    Ok(Certificate {
        chain: chain.iter().map(|cert| cert.to_vec()).collect(),
        private_key,
        key_format,
        names,
        source: chain_path.to_owned(),
    })
}

/// The DNS names in a certificate's subjectAltName, lower case.
fn dns_names(
    der: &[u8],
) -> Result<Vec<String>, x509_parser::nom::Err<x509_parser::error::X509Error>> {
    use x509_parser::extensions::GeneralName;
    let (_, certificate) = x509_parser::parse_x509_certificate(der)?;
    let names = certificate
        .subject_alternative_name()
        .map_err(x509_parser::nom::Err::Error)?;
    Ok(names
        .into_iter()
        .flat_map(|extension| extension.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
            _ => None,
        })
        .collect())
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
        assert!(matches!(error, CertError::MissingKey { .. }), "{error}");
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
        assert!(matches!(error, CertError::BadFile { .. }), "{error}");
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
