//! The host's crypto, natively: the private keys (held here, named to the guest by index), and
//! the signatures, ephemeral key exchanges and record protection the guest asks for, done with
//! rustls's ring provider and ring. No WIT here: `guest_state.rs` answers the guest's imports with it.

use crate::certs::{Certificate, KeyFormat};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use rustls::SignatureScheme;
use rustls::crypto::ActiveKeyExchange;
use rustls::crypto::ring::{kx_group, sign::any_supported_type};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use rustls::sign::SigningKey;
use std::path::PathBuf;
use std::sync::Arc;

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

#[derive(Debug, thiserror::Error)]
#[error("{file}: the private key cannot be used to sign: {why}")]
pub struct UnusableKey {
    file: PathBuf,
    why: String,
}

/// Why the host refused an operation; the guest turns it into a TLS alert.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("no key {0}")]
    UnknownKey(u32),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("rejected: {0}")]
    Rejected(String),
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

    /// The schemes `key` signs with, preferred first; none for an unknown key.
    pub fn signature_schemes(&self, key: u32) -> Vec<SignatureScheme> {
        self.get(key).map(|held| held.schemes.clone()).unwrap_or_default()
    }

    pub fn sign(&self, key: u32, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let held = self.get(key).ok_or(CryptoError::UnknownKey(key))?;
        let signer = held
            .signing
            .choose_scheme(&[scheme])
            .ok_or_else(|| CryptoError::Unsupported(format!("key {key} does not sign with {scheme:?}")))?;
        signer.sign(message).map_err(|error| CryptoError::Rejected(error.to_string()))
    }

    /// The key itself (DER), for the portable world while it initialises.
    pub fn der(&self, key: u32) -> Option<(&[u8], KeyFormat)> {
        self.get(key).map(|held| (&held.der[..], held.format))
    }

    fn get(&self, key: u32) -> Option<&HeldKey> {
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

/// Key-exchange groups the host does, preferred first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    X25519,
    Secp256r1,
    Secp384r1,
}

pub const GROUPS: [Group; 3] = [Group::X25519, Group::Secp256r1, Group::Secp384r1];

/// An ephemeral key exchange in progress: the private half stays here until `complete` uses it up.
pub struct KeyExchange(Option<Box<dyn ActiveKeyExchange>>);

impl KeyExchange {
    pub fn start(group: Group) -> Result<KeyExchange, CryptoError> {
        let group = match group {
            Group::X25519 => kx_group::X25519,
            Group::Secp256r1 => kx_group::SECP256R1,
            Group::Secp384r1 => kx_group::SECP384R1,
        };
        let active = group.start().map_err(|error| CryptoError::Unsupported(error.to_string()))?;
        Ok(KeyExchange(Some(active)))
    }

    /// The public key to send the peer; empty once completed.
    pub fn public_key(&self) -> Vec<u8> {
        self.0.as_ref().map(|active| active.pub_key().to_vec()).unwrap_or_default()
    }

    /// The shared secret with `peer_public_key`; a second call fails.
    pub fn complete(&mut self, peer_public_key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let active = self.0.take().ok_or_else(|| CryptoError::Unsupported("this key exchange has already been completed".into()))?;
        active
            .complete(peer_public_key)
            .map(|secret| secret.secret_bytes().to_vec())
            .map_err(|error| CryptoError::Rejected(error.to_string()))
    }
}

#[derive(Clone, Copy, Debug)]
pub enum AeadAlgorithm {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// One direction's record-protection key.
pub struct RecordProtection(LessSafeKey);

impl RecordProtection {
    pub fn new(algorithm: AeadAlgorithm, key: &[u8]) -> Result<RecordProtection, CryptoError> {
        let algorithm = match algorithm {
            AeadAlgorithm::Aes128Gcm => &AES_128_GCM,
            AeadAlgorithm::Aes256Gcm => &AES_256_GCM,
            AeadAlgorithm::Chacha20Poly1305 => &CHACHA20_POLY1305,
        };
        let unbound = UnboundKey::new(algorithm, key)
            .map_err(|_| CryptoError::Unsupported(format!("a {}-byte key for {algorithm:?}", key.len())))?;
        Ok(RecordProtection(LessSafeKey::new(unbound)))
    }

    /// `plaintext` encrypted in place, with the tag appended.
    pub fn seal(&self, nonce: &[u8], aad: Vec<u8>, mut plaintext: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
        self.0
            .seal_in_place_append_tag(record_nonce(nonce)?, Aad::from(aad), &mut plaintext)
            .map_err(|_| CryptoError::Rejected("the record is too long to seal".into()))?;
        Ok(plaintext)
    }

    /// `sealed` (ciphertext and tag) authenticated and decrypted in place.
    pub fn open(&self, nonce: &[u8], aad: Vec<u8>, mut sealed: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
        let len = self
            .0
            .open_in_place(record_nonce(nonce)?, Aad::from(aad), &mut sealed)
            .map_err(|_| CryptoError::Rejected("the record does not authenticate".into()))?
            .len();
        sealed.truncate(len);
        Ok(sealed)
    }
}

/// The guest makes each record's nonce (IV xor sequence number, RFC 8446 5.3), so it is unique.
fn record_nonce(bytes: &[u8]) -> Result<Nonce, CryptoError> {
    Nonce::try_assume_unique_for_key(bytes).map_err(|_| CryptoError::Rejected(format!("a nonce of {} bytes", bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_sealed_opens_once_and_not_with_another_nonce() {
        let key = RecordProtection::new(AeadAlgorithm::Aes128Gcm, &[7; 16]).unwrap();
        let sealed = key.seal(&[1; 12], b"aad".to_vec(), b"hello".to_vec()).unwrap();
        assert_eq!(key.open(&[1; 12], b"aad".to_vec(), sealed.clone()).unwrap(), b"hello");
        assert!(matches!(key.open(&[2; 12], b"aad".to_vec(), sealed), Err(CryptoError::Rejected(_))));
        assert!(matches!(RecordProtection::new(AeadAlgorithm::Aes256Gcm, &[7; 16]), Err(CryptoError::Unsupported(_))));
    }

    #[test]
    fn a_key_exchange_completes_once() {
        let (mut ours, theirs) = (KeyExchange::start(Group::X25519).unwrap(), KeyExchange::start(Group::X25519).unwrap());
        assert_eq!(ours.complete(&theirs.public_key()).unwrap().len(), 32);
        assert!(ours.complete(&theirs.public_key()).is_err(), "the private half is used up");
        assert!(KeyExchange::start(Group::Secp256r1).unwrap().complete(&[4; 65]).is_err(), "off the curve");
    }
}
