//! Crypto as a host capability (WIT interfaces `crypto` and `tickets`): the private keys, held
//! here and named to the guest by index; signatures, ephemeral key exchange and record
//! protection done natively with rustls's ring provider and ring; and the session-ticket keys that
//! every instance shares, made and rotated here. For the portable world, `private-keys` hands a
//! key over while the component initialises, and never during a connection.

use crate::certs::{Certificate, KeyFormat};
use crate::sandbox::GuestState;
use crate::sandbox::portable::tls_site::site::private_keys;
use crate::sandbox::tls_site::site::crypto::{self as wit, Aead, CryptoError, KeyId, NamedGroup};
use crate::sandbox::tls_site::site::tickets;
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::SignatureScheme;
use rustls::crypto::ActiveKeyExchange;
use rustls::crypto::ring::{kx_group, sign::any_supported_type};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use rustls::sign::SigningKey;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use wasmtime::component::Resource;

/// Every scheme rustls can sign with, in the order the host prefers them.
const SCHEMES: [SignatureScheme; 10] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
];

/// How often the ticket keys are replaced (as rustls's own ticketer does); the previous key
/// still opens tickets, so a ticket lives between one and two of these.
pub const TICKET_KEY_ROTATION: Duration = Duration::from_secs(6 * 60 * 60);

#[derive(Debug, thiserror::Error)]
#[error("{file}: the private key cannot be used to sign: {why}")]
pub struct UnusableKey {
    file: PathBuf,
    why: String,
}

/// The private keys of a certificate set; a key's index is its `key-id`.
#[derive(Default)]
pub struct Keys {
    held: Vec<HeldKey>,
}

struct HeldKey {
    signing: Arc<dyn SigningKey>,
    /// What `signing` can sign with, the host's preferred first.
    schemes: Vec<SignatureScheme>,
    /// For the portable world only.
    der: Vec<u8>,
    format: KeyFormat,
}

impl Keys {
    /// Parses every certificate's key; the i-th certificate's key is `key-id` i.
    pub fn load(certificates: &[Certificate]) -> Result<Keys, UnusableKey> {
        let held = certificates.iter().map(HeldKey::load).collect::<Result<_, _>>()?;
        Ok(Keys { held })
    }

    fn get(&self, key: KeyId) -> Option<&HeldKey> {
        self.held.get(key as usize)
    }
}

impl HeldKey {
    fn load(certificate: &Certificate) -> Result<HeldKey, UnusableKey> {
        let der = certificate.private_key.clone();
        let parsed = match certificate.key_format {
            KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(&der[..])),
            KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(&der[..])),
            KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(&der[..])),
        };
        let unusable = |why: String| UnusableKey { file: certificate.source.clone(), why };
        let signing = any_supported_type(&parsed).map_err(|error| unusable(error.to_string()))?;
        let mut offered = SCHEMES.to_vec();
        let mut schemes = Vec::new();
        while let Some(signer) = signing.choose_scheme(&offered) {
            schemes.push(signer.scheme());
            offered.retain(|scheme| *scheme != signer.scheme());
        }
        if schemes.is_empty() {
            return Err(unusable("no TLS signature scheme fits it".into()));
        }
        Ok(HeldKey { signing, schemes, der, format: certificate.key_format })
    }
}

/// An ephemeral key exchange in progress: the private half stays here until `complete` uses it up.
pub struct EphemeralKeyExchange(Option<Box<dyn ActiveKeyExchange>>);

/// One direction's record-protection key.
pub struct RecordProtection(LessSafeKey);

/// The session-ticket keys: the current one seals, it and the previous one open.
pub struct TicketKeys {
    ring: RwLock<TicketKeyRing>,
    rotate_every: Duration,
    random: SystemRandom,
}

struct TicketKeyRing {
    current: TicketKey,
    previous: Option<TicketKey>,
}

struct TicketKey {
    /// Random, sent in clear at the start of each ticket, so `open` knows which key to try.
    name: [u8; 16],
    key: LessSafeKey,
    made: Instant,
}

impl TicketKeys {
    pub fn new(rotate_every: Duration) -> TicketKeys {
        let random = SystemRandom::new();
        let current = TicketKey::new(&random);
        TicketKeys { ring: RwLock::new(TicketKeyRing { current, previous: None }), rotate_every, random }
    }

    /// A new current key; the current one becomes the previous, and the previous is forgotten
    /// (tickets sealed with it no longer open: those clients get a full handshake).
    pub fn rotate(&self) {
        let fresh = TicketKey::new(&self.random);
        let mut ring = self.ring.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = std::mem::replace(&mut ring.current, fresh);
        ring.previous = Some(old);
    }

    fn seal(&self, state: &[u8]) -> Option<Vec<u8>> {
        if self.read().current.made.elapsed() >= self.rotate_every {
            self.rotate();
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let ring = self.read();
        let key = &ring.current;
        let mut sealed = state.to_vec();
        key.key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key.name), &mut sealed).ok()?;
        Some([&key.name[..], &nonce, &sealed].concat())
    }

    fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let (name, rest) = ticket.split_first_chunk::<16>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let ring = self.read();
        let key = [Some(&ring.current), ring.previous.as_ref()].into_iter().flatten().find(|key| key.name == *name)?;
        let mut opened = sealed.to_vec();
        let len = key.key.open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(name), &mut opened).ok()?.len();
        opened.truncate(len);
        Some(opened)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TicketKeyRing> {
        self.ring.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl TicketKey {
    fn new(random: &SystemRandom) -> TicketKey {
        let mut name = [0u8; 16];
        let mut secret = [0u8; 32];
        // The system's randomness failing leaves nothing to seal with: there is no sane fallback.
        random.fill(&mut name).and_then(|()| random.fill(&mut secret)).expect("the system random generator failed");
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &secret).expect("a 32-byte key"));
        TicketKey { name, key, made: Instant::now() }
    }
}

impl wit::Host for GuestState {
    fn signature_schemes(&mut self, key: KeyId) -> wasmtime::Result<Vec<u16>> {
        let schemes = self.keys.get(key).map(|held| held.schemes.iter().map(|&s| u16::from(s)).collect());
        Ok(schemes.unwrap_or_default())
    }

    fn sign(&mut self, key: KeyId, scheme: u16, message: Vec<u8>) -> wasmtime::Result<Result<Vec<u8>, CryptoError>> {
        let Some(held) = self.keys.get(key) else {
            return Ok(Err(CryptoError::UnknownKey(key)));
        };
        let scheme = SignatureScheme::from(scheme);
        let Some(signer) = held.signing.choose_scheme(&[scheme]) else {
            return Ok(Err(CryptoError::Unsupported(format!("key {key} does not sign with {scheme:?}"))));
        };
        Ok(signer.sign(&message).map_err(|error| CryptoError::Rejected(error.to_string())))
    }

    fn named_groups(&mut self) -> wasmtime::Result<Vec<NamedGroup>> {
        Ok(vec![NamedGroup::X25519, NamedGroup::Secp256r1, NamedGroup::Secp384r1])
    }
}

impl wit::HostKeyExchange for GuestState {
    fn start(&mut self, group: NamedGroup) -> wasmtime::Result<Result<Resource<EphemeralKeyExchange>, CryptoError>> {
        let group = match group {
            NamedGroup::X25519 => kx_group::X25519,
            NamedGroup::Secp256r1 => kx_group::SECP256R1,
            NamedGroup::Secp384r1 => kx_group::SECP384R1,
        };
        match group.start() {
            Ok(active) => Ok(Ok(self.table.push(EphemeralKeyExchange(Some(active)))?)),
            Err(error) => Ok(Err(CryptoError::Unsupported(error.to_string()))),
        }
    }

    fn public_key(&mut self, exchange: Resource<EphemeralKeyExchange>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&exchange)?.0.as_ref().map(|active| active.pub_key().to_vec()).unwrap_or_default())
    }

    fn complete(
        &mut self,
        exchange: Resource<EphemeralKeyExchange>,
        peer_public_key: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, CryptoError>> {
        let Some(active) = self.table.get_mut(&exchange)?.0.take() else {
            return Ok(Err(CryptoError::Unsupported("this key exchange has already been completed".into())));
        };
        Ok(active
            .complete(&peer_public_key)
            .map(|secret| secret.secret_bytes().to_vec())
            .map_err(|error| CryptoError::Rejected(error.to_string())))
    }

    fn drop(&mut self, exchange: Resource<EphemeralKeyExchange>) -> wasmtime::Result<()> {
        self.table.delete(exchange)?;
        Ok(())
    }
}

impl wit::HostRecordKey for GuestState {
    fn new(&mut self, algorithm: Aead, key: Vec<u8>) -> wasmtime::Result<Result<Resource<RecordProtection>, CryptoError>> {
        let algorithm = match algorithm {
            Aead::Aes128Gcm => &AES_128_GCM,
            Aead::Aes256Gcm => &AES_256_GCM,
            Aead::Chacha20Poly1305 => &CHACHA20_POLY1305,
        };
        match UnboundKey::new(algorithm, &key) {
            Ok(unbound) => Ok(Ok(self.table.push(RecordProtection(LessSafeKey::new(unbound)))?)),
            Err(_) => Ok(Err(CryptoError::Unsupported(format!("a {}-byte key for {algorithm:?}", key.len())))),
        }
    }

    fn seal(
        &mut self,
        key: Resource<RecordProtection>,
        nonce: Vec<u8>,
        aad: Vec<u8>,
        plaintext: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, CryptoError>> {
        let key = &self.table.get(&key)?.0;
        let nonce = match record_nonce(&nonce) {
            Ok(nonce) => nonce,
            Err(error) => return Ok(Err(error)),
        };
        let mut sealed = plaintext;
        Ok(match key.seal_in_place_append_tag(nonce, Aad::from(aad), &mut sealed) {
            Ok(()) => Ok(sealed),
            Err(_) => Err(CryptoError::Rejected("the record is too long to seal".into())),
        })
    }

    fn open(
        &mut self,
        key: Resource<RecordProtection>,
        nonce: Vec<u8>,
        aad: Vec<u8>,
        sealed: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, CryptoError>> {
        let key = &self.table.get(&key)?.0;
        let nonce = match record_nonce(&nonce) {
            Ok(nonce) => nonce,
            Err(error) => return Ok(Err(error)),
        };
        let mut opened = sealed;
        Ok(match key.open_in_place(nonce, Aad::from(aad), &mut opened) {
            Ok(plaintext) => {
                let len = plaintext.len();
                opened.truncate(len);
                Ok(opened)
            }
            Err(_) => Err(CryptoError::Rejected("the record does not authenticate".into())),
        })
    }

    fn drop(&mut self, key: Resource<RecordProtection>) -> wasmtime::Result<()> {
        self.table.delete(key)?;
        Ok(())
    }
}

/// The guest makes each record's nonce (IV xor sequence number, RFC 8446 5.3), so it is unique.
fn record_nonce(bytes: &[u8]) -> Result<Nonce, CryptoError> {
    Nonce::try_assume_unique_for_key(bytes).map_err(|_| CryptoError::Rejected(format!("a nonce of {} bytes", bytes.len())))
}

impl tickets::Host for GuestState {
    fn seal(&mut self, state: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.tickets.seal(&state))
    }

    fn open(&mut self, ticket: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.tickets.open(&ticket))
    }

    fn lifetime_seconds(&mut self) -> wasmtime::Result<u32> {
        Ok(self.tickets.rotate_every.as_secs().try_into().unwrap_or(u32::MAX))
    }
}

impl private_keys::Host for GuestState {
    fn private_key(&mut self, key: KeyId) -> wasmtime::Result<Option<private_keys::KeyDer>> {
        if !self.initialising {
            return Ok(None);
        }
        Ok(self.keys.get(key).map(|held| private_keys::KeyDer {
            der: held.der.clone(),
            format: match held.format {
                KeyFormat::Pkcs8 => private_keys::KeyFormat::Pkcs8,
                KeyFormat::Sec1 => private_keys::KeyFormat::Sec1,
                KeyFormat::Pkcs1 => private_keys::KeyFormat::Pkcs1,
            },
        }))
    }
}
