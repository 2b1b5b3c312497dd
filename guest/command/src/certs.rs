//! The certificates, read once at start-up from the directory the runtime grants, in the layout
//! the tls-site host reads (host/src/certs.rs): pairs `NAME.chain.pem` (leaf first) and
//! `NAME.key.pem`; other files are ignored. The names a certificate serves are the DNS names of
//! its leaf's subjectAltName. Every error names the file it is about.

use rustls::SignatureScheme;
use rustls::crypto::CryptoProvider;
use rustls::sign::SigningKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use tls_site_guest::{Identity, portable};

const CHAIN_SUFFIX: &str = ".chain.pem";
const KEY_SUFFIX: &str = ".key.pem";

/// Why the certificate directory cannot be served from; the message starts with the path.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "{dir}: cannot read the certificate directory: {why}; grant it to the component (`wasmtime run --dir {dir}`) and name it with --certs"
    )]
    UnreadableDir { dir: PathBuf, why: String },
    #[error(
        "{dir}: no certificates (expected NAME{CHAIN_SUFFIX} with NAME{KEY_SUFFIX}); for development run `tls-site dev-certs`"
    )]
    Empty { dir: PathBuf },
    #[error("{file}: {why}")]
    BadFile { file: PathBuf, why: String },
    #[error("{chain}: has no private key beside it; expected {key}")]
    MissingKey { chain: PathBuf, key: PathBuf },
    #[error("{file}: the leaf names no DNS host (subjectAltName); SNI could never select it")]
    NoNames { file: PathBuf },
    #[error("{key}: does not match the certificate in {chain} ({why})")]
    KeyMismatch {
        key: PathBuf,
        chain: PathBuf,
        why: String,
    },
}

/// Every `NAME.chain.pem` + `NAME.key.pem` pair in `dir`, in name order, with its key loaded
/// for the pure-Rust provider and checked against the certificate.
pub fn load_dir(dir: &Path) -> Result<Vec<Identity>, CertError> {
    let entries = std::fs::read_dir(dir).map_err(|error| CertError::UnreadableDir {
        dir: dir.to_owned(),
        why: error.to_string(),
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

fn load_pair(chain_path: &Path) -> Result<Identity, CertError> {
    let bad = |file: &Path, why: String| CertError::BadFile {
        file: file.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(chain_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| bad(chain_path, error.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(bad(chain_path, "no CERTIFICATE block".into()));
    };
    let names = dns_names(leaf)
        .map_err(|why| bad(chain_path, format!("not a usable X.509 certificate: {why}")))?;
    if names.is_empty() {
        return Err(CertError::NoNames {
            file: chain_path.to_owned(),
        });
    }

    let file_name = chain_path.file_name().unwrap_or_default().to_string_lossy();
    let key_path = chain_path.with_file_name(file_name.replace(CHAIN_SUFFIX, KEY_SUFFIX));
    if !key_path.exists() {
        return Err(CertError::MissingKey {
            chain: chain_path.to_owned(),
            key: key_path,
        });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|error| bad(&key_path, error.to_string()))?;
    let key = portable::load_private_key(key).map_err(|error| {
        bad(
            &key_path,
            format!("not a private key the pure-Rust provider can use: {error}"),
        )
    })?;
    let provider = portable::provider();
    check_key_matches(leaf, key.as_ref(), &provider).map_err(|why| CertError::KeyMismatch {
        key: key_path.clone(),
        chain: chain_path.to_owned(),
        why,
    })?;
    Ok(Identity { chain, names, key })
}

/// The DNS names of the leaf's subjectAltName, lower case (wildcards included).
fn dns_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let certificate = webpki::EndEntityCert::try_from(leaf).map_err(|error| error.to_string())?;
    Ok(certificate
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect())
}

/// Signs a message with `key` and checks the signature with the leaf's public key: the key is the
/// certificate's, or every handshake would fail at the client.
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
        .ok_or("the key signs with no scheme the provider verifies")?;
    let message = b"tls-site command: does this key match its certificate?";
    let signature = signer
        .sign(message)
        .map_err(|error| format!("cannot sign: {error}"))?;
    let certificate = webpki::EndEntityCert::try_from(leaf).map_err(|error| error.to_string())?;
    let verifiers = algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == signer.scheme())
        .map_or(&[][..], |(_, v)| v);
    match verifiers.iter().any(|&algorithm| {
        certificate
            .verify_signature(algorithm, message, &signature)
            .is_ok()
    }) {
        true => Ok(()),
        false => {
            Err("a signature by the key does not verify with the certificate's public key".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use site::SITE;
    use std::sync::Arc;

    fn repo_certs() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../certs")
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tls-site-command-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_dev_certificates_cover_every_host_of_the_site() {
        let identities = load_dir(&repo_certs()).unwrap();
        assert_eq!(identities.len(), 1);
        for response in SITE.responses() {
            for host in response.hosts() {
                assert!(
                    identities[0].names.iter().any(|name| name == host),
                    "{host} not in {:?}",
                    identities[0].names
                );
            }
        }
        let table =
            tls_site_guest::SniTable::new(&SITE, identities, Arc::new(portable::provider()), None);
        assert!(table.is_ok());
    }

    #[test]
    fn a_missing_directory_or_key_is_named() {
        let missing = Path::new("/nonexistent/tls-site-certs");
        let error = load_dir(missing).err().unwrap().to_string();
        assert!(
            error.starts_with("/nonexistent/tls-site-certs: cannot read"),
            "{error}"
        );

        let dir = scratch("no-key");
        std::fs::copy(
            repo_certs().join("dev.chain.pem"),
            dir.join("site.chain.pem"),
        )
        .unwrap();
        let error = load_dir(&dir).err().unwrap().to_string();
        assert!(
            error.contains("site.chain.pem: has no private key") && error.contains("site.key.pem"),
            "{error}"
        );

        std::fs::remove_file(dir.join("site.chain.pem")).unwrap();
        let error = load_dir(&dir).err().unwrap().to_string();
        assert!(error.contains("no certificates"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_named() {
        let dir = scratch("mismatch");
        std::fs::copy(
            repo_certs().join("dev.chain.pem"),
            dir.join("site.chain.pem"),
        )
        .unwrap();
        // Another P-256 key, in SEC1 form.
        std::fs::write(dir.join("site.key.pem"), OTHER_KEY).unwrap();
        let error = load_dir(&dir).err().unwrap().to_string();
        assert!(
            error.contains("site.key.pem: does not match the certificate in")
                && error.contains("site.chain.pem"),
            "{error}"
        );

        std::fs::write(dir.join("site.key.pem"), "not a key").unwrap();
        let error = load_dir(&dir).err().unwrap().to_string();
        assert!(error.contains("site.key.pem: "), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    const OTHER_KEY: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEII0wjYxFS3ruY6wM+iWpDtE7H5g57ICNVviQCzqhOq8PoAoGCCqGSM49
AwEHoUQDQgAEi/Wy296LXmtkESfckVdmxYIZVD4ZUf7J1PrXdVDakS2En2jSHKOx
HTfPRQz2tzalFBbI4D5PdpRuU/GWPOQlTQ==
-----END EC PRIVATE KEY-----
";
}
