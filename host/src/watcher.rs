//! Noticing new certificates and ticket keys without a signal: the `--certs` directory and the
//! `--ticket-keys` file looked at every `--watch` seconds, and a reload (`reload.rs`) when what
//! they hold has changed. This is how a Kubernetes Secret volume updated by cert-manager (kubelet
//! writes a new directory, then flips the `..data` symlink to it) gets served.
//!
//! Polling, not inotify: it needs no dependency, works on every filesystem (network and overlay
//! ones included, where inotify misses changes), and sees through symlinks, where a watch on a
//! file follows the file it pointed at when it was set. What is compared is what the files hold
//! (a digest), so any way of replacing them counts (a symlink flip, `mv`, an editor) and a
//! `touch` does not. A few seconds of delay is nothing beside kubelet's own (up to a minute).

use crate::certs::{CHAIN_SUFFIX, KEY_SUFFIX};
use crate::reload::SiteSwap;
use ring::digest::{Context, SHA256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What is watched: the certificate directory (none with ACME) and the ticket-key file (if any).
#[derive(Clone, Debug)]
pub struct Watched {
    pub certs: Option<PathBuf>,
    pub ticket_keys: Option<PathBuf>,
}

/// What the watched files held at one look: a digest of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    certs: Option<Vec<u8>>,
    ticket_keys: Option<Vec<u8>>,
}

impl Watched {
    /// Looks now. Taken before the server reads the files at start, so that a change during the
    /// start is seen at the first look after it.
    pub fn look(&self) -> Seen {
        Seen {
            certs: self.certs.as_deref().map(directory_digest),
            ticket_keys: self.ticket_keys.as_deref().map(file_digest),
        }
    }

    fn is_empty(&self) -> bool {
        self.certs.is_none() && self.ticket_keys.is_none()
    }
}

/// Until `stopped`: looks every `every` and reloads what changed since `acted_on`. A change is
/// acted on once two looks in a row agree, so that files replaced one after the other (a chain,
/// then its key) are read when both are in place. A reload that fails is not tried again until
/// the files change again.
pub async fn watch_for_changes(
    swap: Arc<SiteSwap>,
    watched: Watched,
    mut acted_on: Seen,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    if watched.is_empty() || every.is_zero() {
        return;
    }
    let mut previous = acted_on.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.changed() => return,
        }
        let seen = {
            let watched = watched.clone();
            // Reading files blocks; a few KiB, but not on the runtime's own threads.
            match tokio::task::spawn_blocking(move || watched.look()).await {
                Ok(seen) => seen,
                Err(_) => continue,
            }
        };
        if seen != previous {
            previous = seen;
            continue;
        }
        // A build takes seconds of CPU: a stop does not wait for it.
        if seen.certs != acted_on.certs {
            tokio::select! {
                _ = swap.reload("--certs changed") => {}
                _ = stopped.changed() => return,
            }
        } else if seen.ticket_keys != acted_on.ticket_keys {
            let _ = swap.reload_ticket_keys("--ticket-keys changed").await;
        }
        acted_on = seen;
    }
}

/// A digest of the certificate pairs in `dir` (their names and contents, through any symlink);
/// a directory that cannot be read gives a digest of why, so that its coming back is a change.
fn directory_digest(dir: &Path) -> Vec<u8> {
    let mut digest = Context::new(&SHA256);
    let mut add = |part: &[u8]| {
        digest.update(&(part.len() as u64).to_be_bytes());
        digest.update(part);
    };
    match std::fs::read_dir(dir) {
        Err(error) => add(error.to_string().as_bytes()),
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(CHAIN_SUFFIX) || name.ends_with(KEY_SUFFIX))
                .collect();
            names.sort();
            for name in names {
                add(name.as_bytes());
                match std::fs::read(dir.join(&name)) {
                    Ok(bytes) => add(&bytes),
                    Err(error) => add(error.to_string().as_bytes()),
                }
            }
        }
    }
    digest.finish().as_ref().to_vec()
}

fn file_digest(file: &Path) -> Vec<u8> {
    match std::fs::read(file) {
        Ok(bytes) => ring::digest::digest(&SHA256, &bytes).as_ref().to_vec(),
        Err(error) => ring::digest::digest(&SHA256, error.to_string().as_bytes())
            .as_ref()
            .to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tls-site-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A Secret volume's update, as kubelet makes it: the files are symlinks through `..data`,
    /// which is flipped to a new directory. The look changes with the flip, not with a touch or
    /// a file of another kind.
    #[test]
    fn a_symlink_flip_is_a_change_and_a_touch_is_not() {
        use std::os::unix::fs::symlink;
        let dir = temp_dir("flip");
        for (version, key) in [("..v1", "one"), ("..v2", "two")] {
            std::fs::create_dir(dir.join(version)).unwrap();
            std::fs::write(dir.join(version).join("site.chain.pem"), "chain").unwrap();
            std::fs::write(dir.join(version).join("site.key.pem"), key).unwrap();
        }
        symlink("..v1", dir.join("..data")).unwrap();
        for file in ["site.chain.pem", "site.key.pem"] {
            symlink(format!("..data/{file}"), dir.join(file)).unwrap();
        }
        let watched = Watched {
            certs: Some(dir.clone()),
            ticket_keys: None,
        };
        let before = watched.look();
        std::fs::write(dir.join("notes.txt"), "not a certificate").unwrap();
        let touched = std::fs::File::options()
            .append(true)
            .open(dir.join("..v1/site.key.pem"))
            .unwrap();
        touched.set_modified(std::time::SystemTime::now()).unwrap();
        assert_eq!(watched.look(), before, "nothing a reload reads changed");

        symlink("..v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert_ne!(watched.look(), before, "the flip");

        std::fs::remove_dir_all(&dir).unwrap();
        let gone = watched.look();
        assert_ne!(gone, before);
        assert_eq!(
            watched.look(),
            gone,
            "a missing directory looks the same each time"
        );
    }
}
