//! The unikernel's crypto, natively and keyless as in the host (host/src/crypto.rs, with ring and
//! aws-lc there): the private keys, held here and named to the guest by index, and the
//! signatures, key exchanges, record protection, hashes and HMACs the guest asks for. RustCrypto's
//! crates, as ring and aws-lc do not build without an OS. No WIT here: `sandbox.rs` answers the
//! guest's imports with it.

use crate::entropy::Rdrand;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use ml_kem::kem::Encapsulate;
use ml_kem::{EncodedSizeUser, KemCore, MlKem768};
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;
use sha2::{Digest, Sha256, Sha384};

/// ecdsa_secp256r1_sha256 (RFC 8446, 4.2.3): the one scheme of the keys the unikernel holds.
const ECDSA_P256_SHA256: u16 = 0x0403;

/// Why a key in the image cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("key {index}: {why}")]
pub struct UnusableKey {
    index: usize,
    why: String,
}

/// Why the host refused an operation; the guest turns it into a TLS alert.
#[derive(Debug, PartialEq, Eq)]
pub enum CryptoError {
    UnknownKey(u32),
    Unsupported(String),
    Rejected(String),
}

/// The private keys of the certificates in the image; a key's index is its `key-id`.
pub struct Keys {
    held: Vec<SigningKey>,
}

impl Keys {
    /// Parses each PEM key (PKCS#8 or SEC 1), in `key-id` order. P-256 keys only.
    pub fn load(pems: &[&[u8]]) -> Result<Keys, UnusableKey> {
        let held = pems
            .iter()
            .enumerate()
            .map(|(index, pem)| {
                let unusable = |why: String| UnusableKey { index, why };
                let (label, der) = pem_rfc7468::decode_vec(pem)
                    .map_err(|error| unusable(format!("not PEM: {error}")))?;
                match label {
                    "PRIVATE KEY" => SigningKey::from_pkcs8_der(&der)
                        .map_err(|error| unusable(format!("not a P-256 PKCS#8 key: {error}"))),
                    "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
                        .map(SigningKey::from)
                        .map_err(|error| unusable(format!("not a P-256 SEC 1 key: {error}"))),
                    other => Err(unusable(format!(
                        "a {other}: the unikernel signs with P-256 keys only"
                    ))),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Keys { held })
    }

    pub fn signature_schemes(&self, key: u32) -> Vec<u16> {
        match self.held.get(key as usize) {
            Some(_) => alloc::vec![ECDSA_P256_SHA256],
            None => Vec::new(),
        }
    }

    /// The signature of a TLS 1.3 server's CertificateVerify (RFC 8446, 4.4.3) over
    /// `transcript_hash`, and nothing else: the signed content is built here (64 spaces, the
    /// context string, a zero byte, the hash), hashed with SHA-256 and signed (ECDSA, RFC 6979
    /// nonces), DER-encoded.
    pub fn sign_certificate_verify(
        &self,
        key: u32,
        scheme: u16,
        transcript_hash: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let held = self
            .held
            .get(key as usize)
            .ok_or(CryptoError::UnknownKey(key))?;
        if scheme != ECDSA_P256_SHA256 {
            return Err(CryptoError::Unsupported(format!(
                "key {key} does not sign with scheme {scheme:#06x}"
            )));
        }
        if !matches!(transcript_hash.len(), 32 | 48) {
            return Err(CryptoError::Rejected(format!(
                "a transcript hash of {} bytes",
                transcript_hash.len()
            )));
        }
        let content = [
            &[0x20; 64][..],
            b"TLS 1.3, server CertificateVerify\0",
            transcript_hash,
        ]
        .concat();
        let signature: p256::ecdsa::Signature = held.sign(&content);
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

/// Key-exchange groups the unikernel does, preferred first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    X25519MlKem768,
    X25519,
    Secp256r1,
}

pub const GROUPS: [Group; 3] = [Group::X25519MlKem768, Group::X25519, Group::Secp256r1];

/// Our share and the shared secret.
pub struct Encapsulated {
    pub share: Vec<u8>,
    pub shared_secret: Vec<u8>,
}

/// Lengths in X25519MLKEM768 (draft-ietf-tls-ecdhe-mlkem, 4): ML-KEM-768 first, X25519 second.
const MLKEM768_ENCAPSULATION_KEY: usize = 1184;
const X25519_PUBLIC_KEY: usize = 32;

/// The server's side of a TLS 1.3 key exchange for `group`: every ephemeral secret is made,
/// used and dropped here.
pub fn encapsulate(group: Group, client_share: &[u8]) -> Result<Encapsulated, CryptoError> {
    let rejected = |what: &str| CryptoError::Rejected(format!("{group:?}: {what}"));
    match group {
        Group::X25519 => {
            let (share, shared_secret) = x25519(client_share).map_err(rejected)?;
            Ok(Encapsulated {
                share,
                shared_secret,
            })
        }
        Group::Secp256r1 => {
            // TLS 1.3 takes the uncompressed form only (RFC 8446, 4.2.8.2).
            if client_share.len() != 65 || client_share[0] != 4 {
                return Err(rejected("not an uncompressed P-256 point"));
            }
            let client = p256::PublicKey::from_sec1_bytes(client_share)
                .map_err(|_| rejected("the client's point is not on the curve"))?;
            let ours = p256::ecdh::EphemeralSecret::random(&mut Rdrand);
            let share = p256::EncodedPoint::from(ours.public_key())
                .as_bytes()
                .to_vec();
            let shared_secret = ours.diffie_hellman(&client).raw_secret_bytes().to_vec();
            Ok(Encapsulated {
                share,
                shared_secret,
            })
        }
        Group::X25519MlKem768 => {
            if client_share.len() != MLKEM768_ENCAPSULATION_KEY + X25519_PUBLIC_KEY {
                return Err(rejected(&format!(
                    "a share of {} bytes",
                    client_share.len()
                )));
            }
            let (mlkem, x25519_public) = client_share.split_at(MLKEM768_ENCAPSULATION_KEY);
            type EncapsulationKey = <MlKem768 as KemCore>::EncapsulationKey;
            let encoded = ml_kem::Encoded::<EncapsulationKey>::try_from(mlkem)
                .map_err(|_| rejected("the ML-KEM-768 key's length"))?;
            let key = EncapsulationKey::from_bytes(&encoded);
            // FIPS 203's modulus check: a key whose coefficients are not reduced re-encodes
            // differently, and is refused (as aws-lc refuses it in the host).
            if key.as_bytes() != encoded {
                return Err(rejected("the client's ML-KEM-768 key is malformed"));
            }
            let (ciphertext, mlkem_secret) = key
                .encapsulate(&mut Rdrand)
                .map_err(|_| rejected("ML-KEM-768 encapsulation failed"))?;
            let (our_public, x25519_secret) = x25519(x25519_public).map_err(rejected)?;
            Ok(Encapsulated {
                share: [&ciphertext[..], &our_public].concat(),
                shared_secret: [&mlkem_secret[..], &x25519_secret].concat(),
            })
        }
    }
}

/// An ephemeral X25519 key used once against the client's: our public key and the secret.
fn x25519(client_public: &[u8]) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
    let client: [u8; 32] = client_public
        .try_into()
        .map_err(|_| "an X25519 key of the wrong length")?;
    let ours = x25519_dalek::EphemeralSecret::random_from_rng(Rdrand);
    let our_public = x25519_dalek::PublicKey::from(&ours);
    let secret = ours.diffie_hellman(&x25519_dalek::PublicKey::from(client));
    // A low-order point gives the all-zero secret (RFC 7748, 6.1): refused.
    if !secret.was_contributory() {
        return Err("the client's X25519 key is of low order");
    }
    Ok((our_public.as_bytes().to_vec(), secret.as_bytes().to_vec()))
}

#[derive(Clone, Copy, Debug)]
pub enum AeadAlgorithm {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// One direction's record-protection key. Boxed: the AES key schedules are large, and a
/// connection has a few of these in its resource table.
pub enum RecordProtection {
    Aes128Gcm(Box<Aes128Gcm>),
    Aes256Gcm(Box<Aes256Gcm>),
    Chacha20Poly1305(Box<ChaCha20Poly1305>),
}

impl RecordProtection {
    pub fn new(algorithm: AeadAlgorithm, key: &[u8]) -> Result<RecordProtection, CryptoError> {
        let wrong =
            |_| CryptoError::Unsupported(format!("a {}-byte key for {algorithm:?}", key.len()));
        Ok(match algorithm {
            AeadAlgorithm::Aes128Gcm => RecordProtection::Aes128Gcm(Box::new(
                Aes128Gcm::new_from_slice(key).map_err(wrong)?,
            )),
            AeadAlgorithm::Aes256Gcm => RecordProtection::Aes256Gcm(Box::new(
                Aes256Gcm::new_from_slice(key).map_err(wrong)?,
            )),
            AeadAlgorithm::Chacha20Poly1305 => RecordProtection::Chacha20Poly1305(Box::new(
                ChaCha20Poly1305::new_from_slice(key).map_err(wrong)?,
            )),
        })
    }

    /// `plaintext` encrypted in place, with the tag appended.
    pub fn seal(
        &self,
        nonce: &[u8],
        aad: &[u8],
        mut plaintext: Vec<u8>,
    ) -> Result<Vec<u8>, CryptoError> {
        let nonce = record_nonce(nonce)?;
        let sealed = match self {
            RecordProtection::Aes128Gcm(key) => key.encrypt_in_place(nonce, aad, &mut plaintext),
            RecordProtection::Aes256Gcm(key) => key.encrypt_in_place(nonce, aad, &mut plaintext),
            RecordProtection::Chacha20Poly1305(key) => {
                key.encrypt_in_place(nonce, aad, &mut plaintext)
            }
        };
        sealed.map_err(|_| CryptoError::Rejected("the record is too long to seal".into()))?;
        Ok(plaintext)
    }

    /// `sealed` (ciphertext and tag) authenticated and decrypted in place.
    pub fn open(
        &self,
        nonce: &[u8],
        aad: &[u8],
        mut sealed: Vec<u8>,
    ) -> Result<Vec<u8>, CryptoError> {
        let nonce = record_nonce(nonce)?;
        let opened = match self {
            RecordProtection::Aes128Gcm(key) => key.decrypt_in_place(nonce, aad, &mut sealed),
            RecordProtection::Aes256Gcm(key) => key.decrypt_in_place(nonce, aad, &mut sealed),
            RecordProtection::Chacha20Poly1305(key) => {
                key.decrypt_in_place(nonce, aad, &mut sealed)
            }
        };
        opened.map_err(|_| CryptoError::Rejected("the record does not authenticate".into()))?;
        Ok(sealed)
    }
}

/// The guest makes each record's nonce (IV xor sequence number, RFC 8446 5.3): 12 bytes.
fn record_nonce(bytes: &[u8]) -> Result<&aes_gcm::Nonce<aes_gcm::aead::consts::U12>, CryptoError> {
    if bytes.len() != 12 {
        return Err(CryptoError::Rejected(format!(
            "a nonce of {} bytes",
            bytes.len()
        )));
    }
    Ok(aes_gcm::Nonce::from_slice(bytes))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha256,
    Sha384,
}

/// `data` hashed, in one step.
pub fn hash(algorithm: HashAlgorithm, data: &[u8]) -> Vec<u8> {
    match algorithm {
        HashAlgorithm::Sha256 => Sha256::digest(data).to_vec(),
        HashAlgorithm::Sha384 => Sha384::digest(data).to_vec(),
    }
}

/// HMAC of `message` under `key`: all of HKDF, as the guest's key schedule calls it.
pub fn hmac(algorithm: HashAlgorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
    fn with<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        HashAlgorithm::Sha256 => with::<Hmac<Sha256>>(key, message),
        HashAlgorithm::Sha384 => with::<Hmac<Sha384>>(key, message),
    }
}

/// A running hash (the guest's handshake transcript).
#[derive(Clone)]
pub enum HashContext {
    Sha256(Sha256),
    Sha384(Sha384),
}

impl HashContext {
    pub fn new(algorithm: HashAlgorithm) -> HashContext {
        match algorithm {
            HashAlgorithm::Sha256 => HashContext::Sha256(Sha256::new()),
            HashAlgorithm::Sha384 => HashContext::Sha384(Sha384::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            HashContext::Sha256(hash) => hash.update(data),
            HashContext::Sha384(hash) => hash.update(data),
        }
    }

    /// `data` appended, then the digest so far; the context goes on.
    pub fn digest(&mut self, data: &[u8]) -> Vec<u8> {
        self.update(data);
        self.clone().finish(&[])
    }

    /// `data` appended, then a copy that goes on on its own.
    pub fn fork(&mut self, data: &[u8]) -> HashContext {
        self.update(data);
        self.clone()
    }

    /// `data` appended, then the digest of everything.
    pub fn finish(mut self, data: &[u8]) -> Vec<u8> {
        self.update(data);
        match self {
            HashContext::Sha256(hash) => hash.finalize().to_vec(),
            HashContext::Sha384(hash) => hash.finalize().to_vec(),
        }
    }
}
