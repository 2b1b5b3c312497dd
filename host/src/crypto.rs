//! The host's crypto, natively: the private keys (held here, named to the guest by index), and
//! the handshake signatures (a TLS 1.3 server CertificateVerify, nothing else), ephemeral key
//! exchanges, record protection, hashes and HMACs the guest asks for: signatures with rustls's
//! ring provider, records, hashes and HMACs with ring, key exchanges (the hybrid post-quantum
//! group and the (EC)DH ones) with aws-lc-rs. No WIT here: `guest_state.rs` answers the guest's
//! imports with it.

use crate::certs::{Certificate, KeyFormat};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::kem::{EncapsulationKey, ML_KEM_768};
use ring::aead::{
    AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey,
};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use rustls::sign::CertifiedKey;
use rustls::sign::SigningKey;
use rustls::{InconsistentKeys, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// The TLS 1.3 schemes (RFC 8446, 4.2.3) the host signs a CertificateVerify with, in the order it
/// prefers them. No RSA PKCS#1: TLS 1.3 does not sign handshakes with it, so the host does not.
const SCHEMES: [SignatureScheme; 6] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
];

/// What a TLS 1.3 server's CertificateVerify signs before the transcript hash (RFC 8446, 4.4.3):
/// 64 spaces, the context string, a zero byte.
pub const CERTIFICATE_VERIFY_PREFIX: [u8; 98] = {
    const CONTEXT: &[u8; 33] = b"TLS 1.3, server CertificateVerify";
    let mut prefix = [0x20; 98];
    let mut at = 0;
    while at < CONTEXT.len() {
        prefix[64 + at] = CONTEXT[at];
        at += 1;
    }
    prefix[97] = 0;
    prefix
};

/// The transcript hashes of the TLS 1.3 suites: SHA-256's and SHA-384's.
const TRANSCRIPT_HASH_LENGTHS: [usize; 2] = [32, 48];

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
        let held = certificates
            .iter()
            .map(HeldKey::load)
            .collect::<Result<_, _>>()?;
        Ok(Keys { held })
    }

    /// The schemes `key` signs with, preferred first; none for an unknown key.
    pub fn signature_schemes(&self, key: u32) -> Vec<SignatureScheme> {
        self.get(key)
            .map(|held| held.schemes.clone())
            .unwrap_or_default()
    }

    /// A TLS 1.3 server CertificateVerify signature over `transcript_hash` with `key`: the host
    /// builds the signed content (wit/tls-site.wit, `sign-certificate-verify`), so the key signs
    /// nothing else.
    pub fn sign_certificate_verify(
        &self,
        key: u32,
        scheme: SignatureScheme,
        transcript_hash: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let held = self.get(key).ok_or(CryptoError::UnknownKey(key))?;
        if !held.schemes.contains(&scheme) {
            return Err(CryptoError::Unsupported(format!(
                "key {key} does not sign a TLS 1.3 CertificateVerify with {scheme:?}"
            )));
        }
        if !TRANSCRIPT_HASH_LENGTHS.contains(&transcript_hash.len()) {
            return Err(CryptoError::Rejected(format!(
                "a transcript hash of {} bytes; a TLS 1.3 suite's is 32 or 48",
                transcript_hash.len()
            )));
        }
        let signer = held.signing.choose_scheme(&[scheme]).ok_or_else(|| {
            CryptoError::Unsupported(format!("key {key} does not sign with {scheme:?}"))
        })?;
        signer
            .sign(&[&CERTIFICATE_VERIFY_PREFIX[..], transcript_hash].concat())
            .map_err(|error| CryptoError::Rejected(error.to_string()))
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
        let unusable = |why: String| UnusableKey {
            file: certificate.source.clone(),
            why,
        };
        let signing = any_supported_type(&parsed).map_err(|error| unusable(error.to_string()))?;
        // A key beside the wrong chain (a half-done copy, a mix-up) would fail every handshake:
        // refuse it now, at start or reload, while the site served stays up.
        let chain = certificate.chain.iter().cloned().map(CertificateDer::from);
        match CertifiedKey::new(chain.collect(), signing.clone()).keys_match() {
            // A kind of key whose public half rustls cannot tell: the handshake will say.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(error) => {
                return Err(unusable(format!(
                    "it is not the key of the certificate beside it ({error}); the chain and the key must be replaced together"
                )));
            }
        }
        let mut offered = SCHEMES.to_vec();
        let mut schemes = Vec::new();
        while let Some(signer) = signing.choose_scheme(&offered) {
            schemes.push(signer.scheme());
            offered.retain(|scheme| *scheme != signer.scheme());
        }
        if schemes.is_empty() {
            return Err(unusable("no TLS 1.3 signature scheme fits it".into()));
        }
        Ok(HeldKey {
            signing,
            schemes,
            der,
            format: certificate.key_format,
        })
    }
}

/// Key-exchange groups the host does, preferred first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// ML-KEM-768 with X25519 (draft-ietf-tls-ecdhe-mlkem): what current browsers offer first.
    X25519MlKem768,
    X25519,
    Secp256r1,
    Secp384r1,
}

pub const GROUPS: [Group; 4] = [
    Group::X25519MlKem768,
    Group::X25519,
    Group::Secp256r1,
    Group::Secp384r1,
];

/// A server's answer to a client's key share: our share, and the shared secret.
#[derive(Debug)]
pub struct Encapsulated {
    pub share: Vec<u8>,
    pub shared_secret: Vec<u8>,
}

/// The server's side of a TLS 1.3 key exchange for `group`, in one step: every ephemeral private
/// key is made, used and dropped here.
pub fn encapsulate(group: Group, client_share: &[u8]) -> Result<Encapsulated, CryptoError> {
    let algorithm = match group {
        Group::X25519MlKem768 => return x25519_mlkem768(client_share),
        Group::X25519 => &agreement::X25519,
        Group::Secp256r1 => &agreement::ECDH_P256,
        Group::Secp384r1 => &agreement::ECDH_P384,
    };
    let (share, shared_secret) = diffie_hellman(algorithm, client_share)
        .map_err(|what| CryptoError::Rejected(format!("{group:?}: {what}")))?;
    Ok(Encapsulated {
        share,
        shared_secret,
    })
}

/// An ephemeral key pair of `algorithm`, used once against the client's public key: our public
/// key (in the TLS encoding) and the shared secret. aws-lc's, where ring's X25519 takes twice as
/// long (59 against 32 µs a handshake on the bench machine, docs/performance.md).
fn diffie_hellman(
    algorithm: &'static agreement::Algorithm,
    client_public: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
    let ours = PrivateKey::generate(algorithm).map_err(|_| "no key pair")?;
    let our_public = ours.compute_public_key().map_err(|_| "no public key")?;
    let secret = agreement::agree(
        &ours,
        UnparsedPublicKey::new(algorithm, client_public),
        "the client's public key is rejected",
        |secret| Ok(secret.to_vec()),
    )?;
    Ok((our_public.as_ref().to_vec(), secret))
}

/// Lengths in X25519MLKEM768 (draft-ietf-tls-ecdhe-mlkem, 4): ML-KEM-768 comes first in the
/// shares and in the secret, X25519 second.
const MLKEM768_ENCAPSULATION_KEY: usize = 1184;
const X25519_PUBLIC_KEY: usize = 32;

/// X25519MLKEM768: the client's share is an ML-KEM-768 encapsulation key and an X25519 public
/// key; ours the ML-KEM ciphertext and our X25519 public key; the secret ML-KEM's then X25519's.
fn x25519_mlkem768(client_share: &[u8]) -> Result<Encapsulated, CryptoError> {
    if client_share.len() != MLKEM768_ENCAPSULATION_KEY + X25519_PUBLIC_KEY {
        return Err(CryptoError::Rejected(format!(
            "an X25519MLKEM768 share of {} bytes",
            client_share.len()
        )));
    }
    let (mlkem, x25519) = client_share.split_at(MLKEM768_ENCAPSULATION_KEY);
    let failed = |what: &str| CryptoError::Rejected(format!("X25519MLKEM768: {what}"));
    let (ciphertext, mlkem_secret) = EncapsulationKey::new(&ML_KEM_768, mlkem)
        .map_err(|_| failed("the client's ML-KEM-768 key is malformed"))?
        .encapsulate()
        .map_err(|_| failed("ML-KEM-768 encapsulation failed"))?;
    let (our_public, x25519_secret) = diffie_hellman(&agreement::X25519, x25519)
        .map_err(|what| failed(&format!("X25519: {what}")))?;
    Ok(Encapsulated {
        share: [ciphertext.as_ref(), &our_public].concat(),
        shared_secret: [mlkem_secret.as_ref(), &x25519_secret].concat(),
    })
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
        let unbound = UnboundKey::new(algorithm, key).map_err(|_| {
            CryptoError::Unsupported(format!("a {}-byte key for {algorithm:?}", key.len()))
        })?;
        Ok(RecordProtection(LessSafeKey::new(unbound)))
    }

    /// `plaintext` encrypted in place, with the tag appended.
    pub fn seal(
        &self,
        nonce: &[u8],
        aad: Vec<u8>,
        mut plaintext: Vec<u8>,
    ) -> Result<Vec<u8>, CryptoError> {
        self.0
            .seal_in_place_append_tag(record_nonce(nonce)?, Aad::from(aad), &mut plaintext)
            .map_err(|_| CryptoError::Rejected("the record is too long to seal".into()))?;
        Ok(plaintext)
    }

    /// `sealed` (ciphertext and tag) authenticated and decrypted in place.
    pub fn open(
        &self,
        nonce: &[u8],
        aad: Vec<u8>,
        mut sealed: Vec<u8>,
    ) -> Result<Vec<u8>, CryptoError> {
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
    Nonce::try_assume_unique_for_key(bytes)
        .map_err(|_| CryptoError::Rejected(format!("a nonce of {} bytes", bytes.len())))
}

/// The hashes of the TLS 1.3 suites: the transcript hash, and the HMAC under HKDF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha256,
    Sha384,
}

impl HashAlgorithm {
    fn digest(self) -> &'static ring::digest::Algorithm {
        match self {
            HashAlgorithm::Sha256 => &ring::digest::SHA256,
            HashAlgorithm::Sha384 => &ring::digest::SHA384,
        }
    }

    fn hmac(self) -> ring::hmac::Algorithm {
        match self {
            HashAlgorithm::Sha256 => ring::hmac::HMAC_SHA256,
            HashAlgorithm::Sha384 => ring::hmac::HMAC_SHA384,
        }
    }
}

/// `data` hashed, in one step.
pub fn hash(algorithm: HashAlgorithm, data: &[u8]) -> Vec<u8> {
    ring::digest::digest(algorithm.digest(), data)
        .as_ref()
        .to_vec()
}

/// HMAC of `message` under `key`: all of HKDF, as the guest's key schedule calls it.
pub fn hmac(algorithm: HashAlgorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(algorithm.hmac(), key), message)
        .as_ref()
        .to_vec()
}

/// A running hash (the guest's handshake transcript): each call appends what the guest has
/// gathered since the last, then answers.
#[derive(Clone)]
pub struct HashContext(ring::digest::Context);

impl HashContext {
    pub fn new(algorithm: HashAlgorithm) -> HashContext {
        HashContext(ring::digest::Context::new(algorithm.digest()))
    }

    /// `data` appended, then the digest so far; the context goes on.
    pub fn digest(&mut self, data: &[u8]) -> Vec<u8> {
        self.0.update(data);
        self.0.clone().finish().as_ref().to_vec()
    }

    /// `data` appended, then a copy that goes on on its own.
    pub fn fork(&mut self, data: &[u8]) -> HashContext {
        self.0.update(data);
        self.clone()
    }

    /// `data` appended, then the digest of everything.
    pub fn finish(mut self, data: &[u8]) -> Vec<u8> {
        self.0.update(data);
        self.0.finish().as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests;
