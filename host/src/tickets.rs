//! The session-ticket keys every guest instance shares, held here in the host so that a
//! returning client resumes on whichever instance it lands and the keys never enter the sandbox:
//! made and rotated by rustls's own `TicketRotator`, or read from `--ticket-keys FILE`, which
//! replicas share and something outside rotates (as nginx's `ssl_session_ticket_key`).

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom as _, SystemRandom};
use rustls::TicketRotator;
use rustls::crypto::GetRandomFailed;
use rustls::crypto::ring::Ticketer;
use rustls::server::ProducesTickets;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often the ticket key is replaced, as rustls's own ticketer does; the previous key still
/// opens tickets, so a ticket lives between one and two of these.
pub const TICKET_KEY_ROTATION: Duration = Duration::from_secs(6 * 60 * 60);

/// Bytes of one key in a `--ticket-keys` file: as nginx's `openssl rand 80`, a 16-byte name
/// (sent in the clear in each ticket, to find its key) and 64 bytes of secret.
pub const FILE_KEY_BYTES: usize = 80;
const KEY_NAME_BYTES: usize = 16;

/// More keys than anyone rotates through: a file this long is a mistake (the wrong file).
const MAX_FILE_KEYS: usize = 64;

/// The HKDF label that turns a file key's 64 secret bytes into its ChaCha20-Poly1305 key.
const KEY_LABEL: &[u8] = b"tls-site session-ticket key";

/// Ticket keys replaced in this process: the host's own rotations, and files re-read with other
/// keys (`rotations`).
static ROTATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set while `TicketKeys::new` makes a rotator, whose first key is no rotation.
    static MAKING_FIRST_KEY: Cell<bool> = const { Cell::new(false) };
}

/// How many times ticket keys have been replaced in this process: the host's own rotations and
/// files re-read with other keys. What a metrics exporter counts as ticket-key rotations.
pub fn rotations() -> u64 {
    ROTATIONS.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum TicketKeyError {
    #[error("{path}: cannot read the session-ticket keys: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: {bytes} bytes is not a whole number of {FILE_KEY_BYTES}-byte keys; make a key with `openssl rand {FILE_KEY_BYTES}` and put the one to seal with first (no newlines: the file is binary)"
    )]
    BadLength { path: PathBuf, bytes: usize },
    #[error(
        "{path}: {keys} keys; at most {MAX_FILE_KEYS} (the newest first, then those still to open)"
    )]
    TooMany { path: PathBuf, keys: usize },
    #[error(
        "{path}: keys {first} and {second} have the same name (their first 16 bytes); every key must be random"
    )]
    SameName {
        path: PathBuf,
        first: usize,
        second: usize,
    },
}

/// Seals and opens session tickets.
#[derive(Debug)]
pub struct TicketKeys {
    source: Source,
    lifetime_seconds: u32,
}

#[derive(Debug)]
enum Source {
    /// Made here, rotated every `TicketKeys::new`'s rotation.
    Rotating(TicketRotator),
    /// From a file; `reread` replaces them whole.
    File {
        path: PathBuf,
        keys: RwLock<Arc<KeyRing>>,
    },
}

/// What `reread` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reread {
    /// Other keys than before, now in use.
    Rotated {
        keys: usize,
    },
    Unchanged,
    /// The keys are the host's own: there is no file.
    NotFromFile,
}

impl TicketKeys {
    /// The host's own keys: a new one every `rotation`, and the previous one still opens tickets.
    pub fn new(rotation: Duration) -> TicketKeys {
        let seconds = rotation.as_secs().clamp(1, u32::MAX as u64 / 2) as u32;
        // The system's randomness failing leaves nothing to seal with: there is no sane fallback.
        // The rotator makes its first key now, on this thread; later ones are rotations.
        MAKING_FIRST_KEY.set(true);
        let rotator = TicketRotator::new(seconds, one_key);
        MAKING_FIRST_KEY.set(false);
        let rotator = rotator.expect("the system random generator failed");
        TicketKeys {
            lifetime_seconds: rotator.lifetime(),
            source: Source::Rotating(rotator),
        }
    }

    /// The keys in the file at `path` (format: `KeyRing::parse`); tickets are offered to clients
    /// for `lifetime`, as the host's own keys would be for the same rotation.
    pub fn from_file(path: &Path, lifetime: Duration) -> Result<TicketKeys, TicketKeyError> {
        let keys = KeyRing::read(path)?;
        Ok(TicketKeys {
            source: Source::File {
                path: path.to_owned(),
                keys: RwLock::new(Arc::new(keys)),
            },
            lifetime_seconds: lifetime.as_secs().clamp(1, u32::MAX as u64) as u32,
        })
    }

    /// The file the keys come from, if they do.
    pub fn file(&self) -> Option<&Path> {
        match &self.source {
            Source::File { path, .. } => Some(path),
            Source::Rotating(_) => None,
        }
    }

    /// Reads the file again and, if its keys are others, uses them from now on; a file that does
    /// not parse leaves the keys as they were.
    pub fn reread(&self) -> Result<Reread, TicketKeyError> {
        Ok(match self.read_file()? {
            Some(keys) => self.use_keys(keys),
            None => Reread::NotFromFile,
        })
    }

    /// `reread`'s first half, for a reload that swaps them only if all else it reads is sound:
    /// the file's keys, read and checked; none if the keys are the host's own.
    pub fn read_file(&self) -> Result<Option<FileKeys>, TicketKeyError> {
        match &self.source {
            Source::File { path, .. } => KeyRing::read(path).map(|ring| Some(FileKeys(ring))),
            Source::Rotating(_) => Ok(None),
        }
    }

    /// `reread`'s second half: `keys` from now on, if they are others.
    pub fn use_keys(&self, keys: FileKeys) -> Reread {
        let Source::File { keys: current, .. } = &self.source else {
            return Reread::NotFromFile;
        };
        let mut current = current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if keys.0.digest == current.digest {
            return Reread::Unchanged;
        }
        let count = keys.0.keys.len();
        *current = Arc::new(keys.0);
        ROTATIONS.fetch_add(1, Ordering::Relaxed);
        Reread::Rotated { keys: count }
    }

    pub fn seal(&self, state: &[u8]) -> Option<Vec<u8>> {
        match &self.source {
            Source::Rotating(rotator) => rotator.encrypt(state),
            Source::File { keys, .. } => in_use(keys).seal(state),
        }
    }

    pub fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        match &self.source {
            Source::Rotating(rotator) => rotator.decrypt(ticket),
            Source::File { keys, .. } => in_use(keys).open(ticket),
        }
    }

    /// How long a client may keep a ticket: two rotations.
    pub fn lifetime_seconds(&self) -> u32 {
        self.lifetime_seconds
    }
}

/// The file's keys in use now; a reader that takes them is never held up by a re-read.
fn in_use(keys: &RwLock<Arc<KeyRing>>) -> Arc<KeyRing> {
    keys.read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// A `--ticket-keys` file's keys, read and checked, not yet in use.
#[derive(Debug)]
pub struct FileKeys(KeyRing);

/// The keys of a `--ticket-keys` file: the first seals, every one opens.
///
/// The file is binary: one or more keys of 80 bytes each, back to back, as `openssl rand 80`
/// makes them (nginx's `ssl_session_ticket_key` format and size). Of a key, the first 16 bytes
/// are its name, written in the clear at the start of each ticket it seals; the other 64 are
/// its secret, from which HKDF-SHA256 derives the ChaCha20-Poly1305 key that seals the ticket
/// (with a random nonce; the name is the associated data). To rotate: put a new key in front
/// and drop the oldest, `{ openssl rand 80; head -c 160 ticket.keys; } > new && mv new
/// ticket.keys`.
struct KeyRing {
    keys: Vec<FileKey>,
    /// The file's SHA-256, to tell whether a file read again holds other keys.
    digest: [u8; 32],
}

struct FileKey {
    name: [u8; KEY_NAME_BYTES],
    key: LessSafeKey,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the secrets stay out of any log.
        f.debug_struct("KeyRing")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    fn read(path: &Path) -> Result<KeyRing, TicketKeyError> {
        let bytes = std::fs::read(path).map_err(|source| TicketKeyError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        KeyRing::parse(path, &bytes)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<KeyRing, TicketKeyError> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(FILE_KEY_BYTES) {
            return Err(TicketKeyError::BadLength {
                path: path.to_owned(),
                bytes: bytes.len(),
            });
        }
        if bytes.len() / FILE_KEY_BYTES > MAX_FILE_KEYS {
            return Err(TicketKeyError::TooMany {
                path: path.to_owned(),
                keys: bytes.len() / FILE_KEY_BYTES,
            });
        }
        let keys: Vec<FileKey> = bytes
            .chunks_exact(FILE_KEY_BYTES)
            .map(FileKey::derive)
            .collect();
        for (first, key) in keys.iter().enumerate() {
            if let Some(second) = keys[first + 1..].iter().position(|k| k.name == key.name) {
                return Err(TicketKeyError::SameName {
                    path: path.to_owned(),
                    first: first + 1,
                    second: first + second + 2,
                });
            }
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes)
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        Ok(KeyRing { keys, digest })
    }

    /// name, nonce, then the state encrypted and its tag.
    fn seal(&self, state: &[u8]) -> Option<Vec<u8>> {
        let key = self.keys.first()?;
        let mut nonce = [0; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut sealed = state.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.name),
                &mut sealed,
            )
            .ok()?;
        Some([&key.name[..], &nonce, &sealed].concat())
    }

    fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let (name, rest) = ticket.split_first_chunk::<KEY_NAME_BYTES>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let key = self.keys.iter().find(|key| key.name == *name)?;
        let mut opened = sealed.to_vec();
        let len = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(*name),
                &mut opened,
            )
            .ok()?
            .len();
        opened.truncate(len);
        Some(opened)
    }
}

impl FileKey {
    fn derive(bytes: &[u8]) -> FileKey {
        let (name, secret) = bytes
            .split_first_chunk::<KEY_NAME_BYTES>()
            .expect("a whole key");
        let pseudo_random_key = Salt::new(HKDF_SHA256, &[]).extract(secret);
        let key = pseudo_random_key
            .expand(&[KEY_LABEL], &CHACHA20_POLY1305)
            .expect("32 bytes is within HKDF-SHA256's output");
        FileKey {
            name: *name,
            key: LessSafeKey::new(UnboundKey::from(key)),
        }
    }
}

/// One ticket key: rustls's ring ticketer (ChaCha20-Poly1305, a random key and key name). It
/// rotates too, but every 6 hours, so within one `TicketKeys` rotation it is a single key.
fn one_key() -> Result<Box<dyn ProducesTickets>, GetRandomFailed> {
    let ticketer = Ticketer::new().map_err(|_| GetRandomFailed)?;
    if !MAKING_FIRST_KEY.get() {
        ROTATIONS.fetch_add(1, Ordering::Relaxed);
    }
    Ok(Box::new(Shared(ticketer)) as Box<dyn ProducesTickets>)
}

#[derive(Debug)]
struct Shared(Arc<dyn ProducesTickets>);

impl ProducesTickets for Shared {
    fn enabled(&self) -> bool {
        self.0.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.0.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.0.encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt(cipher)
    }
}

#[cfg(test)]
mod tests;
