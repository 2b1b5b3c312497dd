//! The state directory: per CA, the account's credentials and the certificate with its key, each
//! file the owner's alone and replaced whole.

use super::AcmeError;
use crate::certs::{self, Certificate};
use instant_acme::AccountCredentials;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The pair `certs::load_dir` reads back: `site.chain.pem` and `site.key.pem`.
const CERTIFICATE_NAME: &str = "site";
const ACCOUNT_FILE: &str = "account.json";

/// One CA's part of the state directory: `account.json`, `site.chain.pem`, `site.key.pem`.
#[derive(Clone, Debug)]
pub(super) struct StateDir {
    pub(super) dir: PathBuf,
}

impl StateDir {
    /// Creates `certificate_dir` owner-only.
    pub(super) fn open(state_dir: &Path, directory: &str) -> Result<StateDir, AcmeError> {
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

    pub(super) fn chain_file(&self) -> PathBuf {
        self.dir.join(format!("{CERTIFICATE_NAME}.chain.pem"))
    }

    pub(super) fn key_file(&self) -> PathBuf {
        self.dir.join(format!("{CERTIFICATE_NAME}.key.pem"))
    }

    pub(super) fn certificate(&self) -> Result<Option<Certificate>, AcmeError> {
        if !self.chain_file().exists() {
            return Ok(None);
        }
        Ok(certs::load_dir(&self.dir)?.into_iter().next())
    }

    /// The key is written before the chain, each replaced whole by a rename.
    pub(super) fn save_certificate(&self, chain_pem: &str, key_pem: &str) -> Result<(), AcmeError> {
        write_owner_only(&self.key_file(), key_pem.as_bytes())?;
        write_owner_only(&self.chain_file(), chain_pem.as_bytes())
    }

    pub(super) fn account(&self) -> Result<Option<AccountCredentials>, AcmeError> {
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

    pub(super) fn save_account(&self, credentials: &AccountCredentials) -> Result<(), AcmeError> {
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

/// Whether the private key belongs to the leaf: a crash between writing the key and the chain
/// would leave a new key beside the old chain, and serving that pair fails every handshake.
pub(super) fn key_matches(certificate: &Certificate) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{LETS_ENCRYPT, LETS_ENCRYPT_STAGING};

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
}
