//! The certificates, read once at start-up from the directory the runtime grants, by the loader
//! the tls-site host uses too (`cert_dir`, guest/cert-dir): pairs `NAME.chain.pem` (leaf first)
//! and `NAME.key.pem`, each key checked against its certificate with a test signature, expired
//! certificates refused unless `--allow-expired`. The keys are the pure-Rust provider's.

use cert_dir::{Checks, LoadError, Warning};
use std::path::Path;
use tls_site_guest::{Identity, portable};

/// Why the certificate directory cannot be served from; the message starts with the path.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "{error}; grant it to the component (`wasmtime run --dir {}`) and name it with --certs", dir.display()
    )]
    NotGranted {
        error: LoadError,
        dir: std::path::PathBuf,
    },
    #[error(transparent)]
    Load(LoadError),
}

/// Every pair in `dir`, in name order, as the TLS configuration takes them, and the warnings
/// for the operator (a certificate about to expire, or an expired one that `allow_expired` lets
/// through).
pub fn load_dir(
    dir: &Path,
    allow_expired: bool,
) -> Result<(Vec<Identity>, Vec<Warning>), CertError> {
    let provider = portable::provider();
    let checks = Checks {
        allow_expired,
        ..Checks::new(&provider)
    };
    let loaded = cert_dir::load(dir, &checks).map_err(|error| match error {
        LoadError::UnreadableDir { .. } => CertError::NotGranted {
            error,
            dir: dir.to_owned(),
        },
        error => CertError::Load(error),
    })?;
    let identities = loaded
        .pairs
        .into_iter()
        .map(|pair| Identity {
            chain: pair.chain,
            names: pair.names,
            key: pair.signing_key,
        })
        .collect();
    Ok((identities, loaded.warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use site::SITE;
    use std::path::PathBuf;
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
        let identities = load_dir(&repo_certs(), false).unwrap().0;
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
        let error = load_dir(missing, false).err().unwrap().to_string();
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
        let error = load_dir(&dir, false).err().unwrap().to_string();
        assert!(
            error.contains("site.chain.pem: has no private key") && error.contains("site.key.pem"),
            "{error}"
        );

        std::fs::remove_file(dir.join("site.chain.pem")).unwrap();
        let error = load_dir(&dir, false).err().unwrap().to_string();
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
        let error = load_dir(&dir, false).err().unwrap().to_string();
        assert!(
            error.contains("site.key.pem: does not match the certificate in")
                && error.contains("site.chain.pem"),
            "{error}"
        );

        std::fs::write(dir.join("site.key.pem"), "not a key").unwrap();
        let error = load_dir(&dir, false).err().unwrap().to_string();
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
