//! The state directory: per CA, the account's credentials and the certificate with its key, each
//! file the owner's alone and replaced whole; the certificate and its key as a pair, replaced at
//! once (a directory of their own, made live by one rename of a symbolic link).

use super::AcmeError;
use crate::certs::{self, CertError, Certificate, Expired};
use instant_acme::AccountCredentials;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The pair `certs::load_dir` reads back: `site.chain.pem` and `site.key.pem`.
const CERTIFICATE_NAME: &str = "site";
const ACCOUNT_FILE: &str = "account.json";
/// The symbolic link to the pair being served, `pair-<time>/`.
const LIVE: &str = "live";
const PAIR_PREFIX: &str = "pair-";

/// One CA's part of the state directory: `account.json`, and `live`, a symbolic link to the
/// directory of the pair being served (`pair-<time>/site.chain.pem`, `site.key.pem`).
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

    /// The directory of the pair being served: `live`, or in a state directory written before
    /// pairs had directories of their own, the state directory itself.
    fn pair_dir(&self) -> PathBuf {
        let live = self.dir.join(LIVE);
        match live.exists() {
            true => live,
            false => self.dir.clone(),
        }
    }

    pub(super) fn chain_file(&self) -> PathBuf {
        self.pair_dir()
            .join(format!("{CERTIFICATE_NAME}{}", cert_dir::CHAIN_SUFFIX))
    }

    pub(super) fn key_file(&self) -> PathBuf {
        self.pair_dir()
            .join(format!("{CERTIFICATE_NAME}{}", cert_dir::KEY_SUFFIX))
    }

    /// The pair being served, checked as every certificate directory is (its key against its
    /// certificate); an expired one too, which the caller replaces.
    pub(super) fn certificate(&self) -> Result<Option<Certificate>, CertError> {
        if !self.chain_file().exists() {
            return Ok(None);
        }
        Ok(certs::load_dir_with(&self.pair_dir(), Expired::Replace)?
            .into_iter()
            .next())
    }

    /// Writes the pair into a directory of its own, then makes it live with one rename: a crash
    /// at any moment leaves the old pair or the new one live, never a key beside another key's
    /// chain.
    pub(super) fn save_certificate(&self, chain_pem: &str, key_pem: &str) -> Result<(), AcmeError> {
        let pair = self.write_pair(chain_pem, key_pem)?;
        self.make_live(&pair)
    }

    /// The pair in a new directory `pair-<time>` (owner-only), not yet served.
    fn write_pair(&self, chain_pem: &str, key_pem: &str) -> Result<PathBuf, AcmeError> {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let pair = self
            .dir
            .join(format!("{PAIR_PREFIX}{}", since_epoch.as_nanos()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&pair)
            .map_err(|source| AcmeError::State {
                path: pair.clone(),
                source,
            })?;
        let file = |suffix: &str| pair.join(format!("{CERTIFICATE_NAME}{suffix}"));
        write_owner_only(&file(cert_dir::KEY_SUFFIX), key_pem.as_bytes())?;
        write_owner_only(&file(cert_dir::CHAIN_SUFFIX), chain_pem.as_bytes())?;
        sync_dir(&pair)?;
        Ok(pair)
    }

    /// Points `live` at `pair` (a link made beside it, renamed over it), then removes the pairs no
    /// longer served: older ones, one a crash left unfinished, and the flat pair of old.
    fn make_live(&self, pair: &Path) -> Result<(), AcmeError> {
        let live = self.dir.join(LIVE);
        let failed = |source| AcmeError::State {
            path: live.clone(),
            source,
        };
        let link = self.dir.join(format!("{LIVE}.new"));
        let _ = std::fs::remove_file(&link);
        // Relative: the state directory can move.
        std::os::unix::fs::symlink(pair.file_name().unwrap_or_default(), &link).map_err(failed)?;
        std::fs::rename(&link, &live).map_err(failed)?;
        sync_dir(&self.dir)?;
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(PAIR_PREFIX) && path != pair {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        for suffix in [cert_dir::CHAIN_SUFFIX, cert_dir::KEY_SUFFIX] {
            let _ = std::fs::remove_file(self.dir.join(format!("{CERTIFICATE_NAME}{suffix}")));
        }
        Ok(())
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

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), AcmeError> {
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| AcmeError::State {
            path: dir.to_owned(),
            source,
        })
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
        assert_eq!(mode(&staging.pair_dir()), 0o700);
        assert!(production.certificate().unwrap().is_none());
    }

    /// A pair for `a.test`, as PEM: its chain and its key.
    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn leaf_of(chain_pem: &str) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject as _;
        rustls_pki_types::CertificateDer::from_pem_slice(chain_pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_crash_before_a_new_pair_is_live_leaves_the_old_pair_whole() {
        let root = std::env::temp_dir().join(format!("tls-site-acme-pair-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let state = StateDir::open(&root, LETS_ENCRYPT_STAGING).unwrap();
        let (old_chain, old_key) = pair();
        state.save_certificate(&old_chain, &old_key).unwrap();

        // The crash: the new pair written, not made live.
        let (new_chain, new_key) = pair();
        let written = state.write_pair(&new_chain, &new_key).unwrap();
        // Loaded as at start-up: the old chain, with its own key (the loader checks).
        let served = state.certificate().unwrap().unwrap();
        assert_eq!(served.chain[0], leaf_of(&old_chain));

        state.make_live(&written).unwrap();
        let served = state.certificate().unwrap().unwrap();
        assert_eq!(served.chain[0], leaf_of(&new_chain));
        let pairs = std::fs::read_dir(&state.dir)
            .unwrap()
            .filter(|entry| {
                let name = entry.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with(PAIR_PREFIX)
            })
            .count();
        assert_eq!(pairs, 1, "the old pair is removed once the new one is live");
    }
}
