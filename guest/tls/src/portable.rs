//! Our rustls `CryptoProvider` in pure Rust, over RustCrypto's primitives: what the `portable`
//! component and the command component sign, exchange keys and protect records with, and what the
//! example, the fuzz target and the tests serve with natively.
//!
//! Only what a TLS 1.3 server of ours uses (the configuration is `config::make_config`: TLS 1.3
//! only, no client certificates): the three TLS 1.3 suites, the server's one-step side of
//! X25519MLKEM768, X25519, P-256 and P-384, signatures with ECDSA P-256 and P-384 keys, and the
//! verification of such signatures (webpki's, for the command component's check that a key
//! matches its certificate). No RSA (the `rsa` crate has RUSTSEC-2023-0071 and no fix), no TLS
//! 1.2, no client side. The keyless component's provider over the host's imports,
//! `host_crypto.rs`, has the same shape.
#![forbid(unsafe_code)]

use crate::config::tls13_suite;
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{self, AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use chacha20poly1305::ChaCha20Poly1305;
use getrandom::SysRng;
use getrandom::rand_core::UnwrapErr;
use hmac::digest::OutputSizeUser;
use ml_kem::kem::{Encapsulate as _, TryKeyInit as _};
use p256::elliptic_curve::sec1::{FromSec1Point, ModulusSize, ToSec1Point};
use p256::elliptic_curve::{
    AffinePoint, CurveArithmetic, FieldBytesSize, Generate as _, PublicKey,
};
use p256::pkcs8::DecodePrivateKey as _;
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter,
    Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload, Tls13AeadAlgorithm,
    UnsupportedOperationError, make_tls13_aad,
};
use rustls::crypto::hash::HashAlgorithm;
use rustls::crypto::tls13::HkdfUsingHmac;
use rustls::crypto::{
    ActiveKeyExchange, CompletedKeyExchange, CryptoProvider, GetRandomFailed, KeyProvider,
    SecureRandom, SharedSecret, SupportedKxGroup, WebPkiSupportedAlgorithms, hash, hmac as mac,
};
use rustls::pki_types::{
    AlgorithmIdentifier, InvalidSignature, PrivateKeyDer, SignatureVerificationAlgorithm,
    SubjectPublicKeyInfoDer, alg_id,
};
use rustls::sign::{Signer, SigningKey, public_key_to_spki};
use rustls::{
    CipherSuite, ConnectionTrafficSecrets, ContentType, Error, NamedGroup, PeerMisbehaved,
    ProtocolVersion, SignatureAlgorithm, SignatureScheme, SupportedCipherSuite, Tls13CipherSuite,
};
use sha2::{Digest, Sha256, Sha384};
use std::marker::PhantomData;
use std::sync::Arc;

/// The TLS 1.3 suites, and the key-exchange groups in our order of preference: the hybrid
/// post-quantum group first, as the host has them (host/src/crypto.rs).
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            SupportedCipherSuite::Tls13(&TLS13_AES_128_GCM_SHA256),
            SupportedCipherSuite::Tls13(&TLS13_AES_256_GCM_SHA384),
            SupportedCipherSuite::Tls13(&TLS13_CHACHA20_POLY1305_SHA256),
        ],
        kx_groups: vec![&X25519MLKEM768, &X25519, &SECP256R1, &SECP384R1],
        signature_verification_algorithms: ECDSA_VERIFICATION,
        secure_random: &Getrandom,
        key_provider: &EcdsaKeys,
    }
}

/// The signatures webpki checks: those our keys make.
static ECDSA_VERIFICATION: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[&ECDSA_P256_SHA256, &ECDSA_P384_SHA384],
    mapping: &[
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[&ECDSA_P256_SHA256],
        ),
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[&ECDSA_P384_SHA384],
        ),
    ],
};

/// A private key (PKCS#8 or SEC1, ECDSA P-256 or P-384), ready to sign with.
pub fn load_private_key(key: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, Error> {
    EcdsaKeys.load_private_key(key)
}

/// The three TLS 1.3 suites (RFC 8446, B.4).
static TLS13_AES_128_GCM_SHA256: Tls13CipherSuite = tls13_suite(
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    &SHA256,
    &HkdfUsingHmac(&HMAC_SHA256),
    &AES_128_GCM,
);
static TLS13_AES_256_GCM_SHA384: Tls13CipherSuite = tls13_suite(
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    &SHA384,
    &HkdfUsingHmac(&HMAC_SHA384),
    &AES_256_GCM,
);
static TLS13_CHACHA20_POLY1305_SHA256: Tls13CipherSuite = tls13_suite(
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    &SHA256,
    &HkdfUsingHmac(&HMAC_SHA256),
    &CHACHA20_POLY1305,
);

/// The generator that ephemeral keys and ML-KEM's message come from: getrandom's, which is
/// wasi:random's `get-random-u64` in a component (it cannot fail) and the OS's natively. Should the
/// OS's ever fail, the connection panics rather than make a predictable key.
fn rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}

/// ServerHello randoms and ticket nonces.
#[derive(Debug)]
struct Getrandom;

impl SecureRandom for Getrandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        getrandom::fill(buf).map_err(|_| GetRandomFailed)
    }
}

/// A SHA-2 hash for the transcript.
struct Sha2<D> {
    algorithm: HashAlgorithm,
    digest: PhantomData<fn() -> D>,
}

static SHA256: Sha2<Sha256> = Sha2 {
    algorithm: HashAlgorithm::SHA256,
    digest: PhantomData,
};
static SHA384: Sha2<Sha384> = Sha2 {
    algorithm: HashAlgorithm::SHA384,
    digest: PhantomData,
};

impl<D: Digest + Clone + Send + Sync + 'static> hash::Hash for Sha2<D> {
    fn start(&self) -> Box<dyn hash::Context> {
        Box::new(RunningHash(D::new()))
    }

    fn hash(&self, data: &[u8]) -> hash::Output {
        hash::Output::new(&D::digest(data))
    }

    fn output_len(&self) -> usize {
        <D as Digest>::output_size()
    }

    fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }
}

struct RunningHash<D>(D);

impl<D: Digest + Clone + Send + Sync + 'static> hash::Context for RunningHash<D> {
    fn fork_finish(&self) -> hash::Output {
        hash::Output::new(&self.0.clone().finalize())
    }

    fn fork(&self) -> Box<dyn hash::Context> {
        Box::new(RunningHash(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> hash::Output {
        hash::Output::new(&self.0.finalize())
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

/// HMAC with a SHA-2 hash: what the key schedule's HKDF is made of (`HkdfUsingHmac`).
struct Hmac<D>(PhantomData<fn() -> D>);

static HMAC_SHA256: Hmac<Sha256> = Hmac(PhantomData);
static HMAC_SHA384: Hmac<Sha384> = Hmac(PhantomData);

impl<D> mac::Hmac for Hmac<D>
where
    D: hmac::EagerHash + 'static,
    hmac::Hmac<D>: hmac::Mac + OutputSizeUser + KeyInit + Clone + Send + Sync,
{
    fn with_key(&self, key: &[u8]) -> Box<dyn mac::Key> {
        // HMAC takes a key of any length (a long one is hashed first): this cannot fail.
        let keyed = <hmac::Hmac<D> as KeyInit>::new_from_slice(key).expect("any HMAC key length");
        Box::new(HmacKey(keyed))
    }

    fn hash_output_len(&self) -> usize {
        <hmac::Hmac<D> as OutputSizeUser>::output_size()
    }
}

/// A keyed HMAC, cloned for each tag.
struct HmacKey<M>(M);

impl<M: hmac::Mac + Clone + Send + Sync> mac::Key for HmacKey<M> {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> mac::Tag {
        let mut running = self.0.clone();
        running.update(first);
        middle.iter().for_each(|part| running.update(part));
        running.update(last);
        mac::Tag::new(&running.finalize().into_bytes())
    }

    fn tag_len(&self) -> usize {
        M::output_size()
    }
}

/// An AEAD of the TLS 1.3 suites (all three take a 12-byte nonce and make a 16-byte tag).
struct Aead<A> {
    key_len: usize,
    /// The key and IV as rustls hands them out (`extract_keys`, for kTLS and the like).
    secrets: fn(AeadKey, Iv) -> ConnectionTrafficSecrets,
    cipher: PhantomData<fn() -> A>,
}

static AES_128_GCM: Aead<Aes128Gcm> = Aead {
    key_len: 16,
    secrets: |key, iv| ConnectionTrafficSecrets::Aes128Gcm { key, iv },
    cipher: PhantomData,
};
static AES_256_GCM: Aead<Aes256Gcm> = Aead {
    key_len: 32,
    secrets: |key, iv| ConnectionTrafficSecrets::Aes256Gcm { key, iv },
    cipher: PhantomData,
};
static CHACHA20_POLY1305: Aead<ChaCha20Poly1305> = Aead {
    key_len: 32,
    secrets: |key, iv| ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv },
    cipher: PhantomData,
};

/// Bytes an AEAD tag adds to a record.
const TAG_LEN: usize = 16;

impl<A> Aead<A>
where
    A: AeadInOut<NonceSize = U12, TagSize = U16> + KeyInit + Send + Sync + 'static,
{
    fn record_key(&self, key: AeadKey, iv: Iv) -> RecordKey<A> {
        // rustls derives the key with `key_len` bytes: the length always fits.
        let cipher = A::new_from_slice(key.as_ref()).expect("a key of the suite's length");
        RecordKey { cipher, iv }
    }
}

impl<A> Tls13AeadAlgorithm for Aead<A>
where
    A: AeadInOut<NonceSize = U12, TagSize = U16> + KeyInit + Send + Sync + 'static,
{
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(self.record_key(key, iv))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(self.record_key(key, iv))
    }

    fn key_len(&self) -> usize {
        self.key_len
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok((self.secrets)(key, iv))
    }
}

/// One direction's record key; the nonce (IV xor sequence number) and the record header as
/// additional data are made as RFC 8446 5.2-5.3 say.
struct RecordKey<A> {
    cipher: A,
    iv: Iv,
}

impl<A: AeadInOut<NonceSize = U12, TagSize = U16> + Send + Sync> MessageEncrypter for RecordKey<A> {
    fn encrypt(
        &mut self,
        message: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let sealed_len = self.encrypted_payload_len(message.payload.len());
        // TLSInnerPlaintext: the content, then its real type; sealed in place.
        let mut payload = PrefixedPayload::with_capacity(sealed_len);
        payload.extend_from_chunks(&message.payload);
        payload.extend_from_slice(&message.typ.to_array());
        let nonce = aead::Nonce::<A>::from(Nonce::new(&self.iv, seq).0);
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, &make_tls13_aad(sealed_len), payload.as_mut().into())
            .map_err(|_| Error::EncryptError)?;
        payload.extend_from_slice(&tag);
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

impl<A: AeadInOut<NonceSize = U12, TagSize = U16> + Send + Sync> MessageDecrypter for RecordKey<A> {
    fn decrypt<'a>(
        &mut self,
        mut message: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut message.payload;
        let Some(plain_len) = payload.len().checked_sub(TAG_LEN) else {
            return Err(Error::DecryptError);
        };
        let aad = make_tls13_aad(payload.len());
        let nonce = aead::Nonce::<A>::from(Nonce::new(&self.iv, seq).0);
        let (sealed, tag) = payload.split_at_mut(plain_len);
        let tag = aead::Tag::<A>::try_from(&*tag).map_err(|_| Error::DecryptError)?;
        self.cipher
            .decrypt_inout_detached(&nonce, &aad, sealed.into(), &tag)
            .map_err(|_| Error::DecryptError)?;
        payload.truncate(plain_len);
        message.into_tls13_unpadded_message()
    }
}

/// A key-exchange group, as a TLS 1.3 server does it: one step, the answer to the client's share
/// (`start_and_complete`), which is how a KEM has to be done. `start`, the two-step form that
/// TLS 1.2 and clients use, is never asked of a TLS 1.3 server.
#[derive(Debug)]
struct KeyExchange {
    name: NamedGroup,
    /// The answer to the client's share; `InvalidKeyShare` for a bad one.
    answer: fn(&[u8]) -> Result<Answer, Error>,
}

/// Our share, and the shared secret.
struct Answer {
    share: Vec<u8>,
    secret: Vec<u8>,
}

static X25519MLKEM768: KeyExchange = KeyExchange {
    name: NamedGroup::X25519MLKEM768,
    answer: x25519_mlkem768,
};
static X25519: KeyExchange = KeyExchange {
    name: NamedGroup::X25519,
    answer: x25519,
};
static SECP256R1: KeyExchange = KeyExchange {
    name: NamedGroup::secp256r1,
    answer: ecdh::<p256::NistP256>,
};
static SECP384R1: KeyExchange = KeyExchange {
    name: NamedGroup::secp384r1,
    answer: ecdh::<p384::NistP384>,
};

impl SupportedKxGroup for KeyExchange {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        Err(Error::General(
            "this provider answers a client's key share in one step; a TLS 1.3 server needs no more"
                .into(),
        ))
    }

    fn start_and_complete(&self, client_share: &[u8]) -> Result<CompletedKeyExchange, Error> {
        let Answer { share, secret } = (self.answer)(client_share)?;
        Ok(CompletedKeyExchange {
            group: self.name,
            pub_key: share,
            secret: SharedSecret::from(secret),
        })
    }

    fn name(&self) -> NamedGroup {
        self.name
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_3
    }
}

/// A client share we cannot use: rustls answers illegal_parameter.
fn invalid_share() -> Error {
    PeerMisbehaved::InvalidKeyShare.into()
}

/// X25519 (RFC 7748) with an ephemeral key of ours.
fn x25519(client_share: &[u8]) -> Result<Answer, Error> {
    let client: [u8; 32] = client_share.try_into().map_err(|_| invalid_share())?;
    let ours = x25519_dalek::EphemeralSecret::random_from_rng(&mut rng());
    let our_share = x25519_dalek::PublicKey::from(&ours);
    let secret = ours.diffie_hellman(&client.into());
    // RFC 8446 7.4.2: an all-zero secret (the client sent a point of small order) is refused.
    if secret.as_bytes().iter().all(|&byte| byte == 0) {
        return Err(invalid_share());
    }
    Ok(Answer {
        share: our_share.as_bytes().to_vec(),
        secret: secret.as_bytes().to_vec(),
    })
}

/// ECDH on a NIST curve with an ephemeral key of ours; the secret is the x coordinate (RFC 8446
/// 7.4.2).
fn ecdh<C>(client_share: &[u8]) -> Result<Answer, Error>
where
    C: CurveArithmetic,
    FieldBytesSize<C>: ModulusSize,
    AffinePoint<C>: FromSec1Point<C> + ToSec1Point<C>,
{
    // TLS 1.3 shares are uncompressed points only (RFC 8446 4.2.8.2); `from_sec1_bytes` checks
    // the length, that the point is on the curve and that it is not the identity.
    if client_share.first() != Some(&4) {
        return Err(invalid_share());
    }
    let client = PublicKey::<C>::from_sec1_bytes(client_share).map_err(|_| invalid_share())?;
    let ours = p256::elliptic_curve::ecdh::EphemeralSecret::<C>::generate_from_rng(&mut rng());
    let our_share = ours.public_key().to_sec1_point(false);
    let secret = ours.diffie_hellman(&client);
    Ok(Answer {
        share: our_share.as_bytes().to_vec(),
        secret: secret.raw_secret_bytes().to_vec(),
    })
}

/// Lengths in X25519MLKEM768 (draft-ietf-tls-ecdhe-mlkem, 4): ML-KEM-768 comes first in the
/// shares and in the secret, X25519 second.
const MLKEM768_ENCAPSULATION_KEY: usize = 1184;

/// X25519MLKEM768: the client's share is an ML-KEM-768 encapsulation key and an X25519 public
/// key; ours the ML-KEM ciphertext (an encapsulation to the client's key) and our X25519 public
/// key; the secret ML-KEM's then X25519's. As the host does it, with aws-lc (host/src/crypto.rs).
fn x25519_mlkem768(client_share: &[u8]) -> Result<Answer, Error> {
    if client_share.len() != MLKEM768_ENCAPSULATION_KEY + 32 {
        return Err(invalid_share());
    }
    let (mlkem, x25519_share) = client_share.split_at(MLKEM768_ENCAPSULATION_KEY);
    // `new_from_slice` checks the key as FIPS 203 7.2 asks (its coefficients are reduced).
    let client_key =
        ml_kem::EncapsulationKey768::new_from_slice(mlkem).map_err(|_| invalid_share())?;
    let (ciphertext, mlkem_secret) = client_key.encapsulate_with_rng(&mut rng());
    let x25519 = x25519(x25519_share)?;
    Ok(Answer {
        share: [&ciphertext[..], &x25519.share].concat(),
        secret: [&mlkem_secret[..], &x25519.secret].concat(),
    })
}

/// Parses the private keys: ECDSA P-256 or P-384, in PKCS#8 or SEC1.
#[derive(Debug)]
struct EcdsaKeys;

impl KeyProvider for EcdsaKeys {
    fn load_private_key(&self, key: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, Error> {
        let parsed = match &key {
            PrivateKeyDer::Pkcs8(der) => {
                let der = der.secret_pkcs8_der();
                p256::ecdsa::SigningKey::from_pkcs8_der(der)
                    .map(EcdsaKey::P256)
                    .or_else(|_| p384::ecdsa::SigningKey::from_pkcs8_der(der).map(EcdsaKey::P384))
                    .ok()
            }
            PrivateKeyDer::Sec1(der) => {
                let der = der.secret_sec1_der();
                p256::SecretKey::from_sec1_der(der)
                    .map(|key| EcdsaKey::P256(key.into()))
                    .or_else(|_| {
                        p384::SecretKey::from_sec1_der(der).map(|key| EcdsaKey::P384(key.into()))
                    })
                    .ok()
            }
            _ => None,
        };
        match parsed {
            Some(key) => Ok(Arc::new(key)),
            None => Err(Error::General(
                "not an ECDSA P-256 or P-384 key (PKCS#8 or SEC1): the pure-Rust provider signs with those only, no RSA".into(),
            )),
        }
    }
}

/// An ECDSA private key; signatures are deterministic (RFC 6979), so signing needs no randomness.
#[derive(Clone, Debug)]
enum EcdsaKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

impl SigningKey for EcdsaKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&self.scheme())
            .then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    /// What rustls compares with the certificate's key (`CertifiedKey::keys_match`).
    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(match self {
            EcdsaKey::P256(key) => public_key_to_spki(
                &alg_id::ECDSA_P256,
                key.verifying_key().to_sec1_point(false),
            ),
            EcdsaKey::P384(key) => public_key_to_spki(
                &alg_id::ECDSA_P384,
                key.verifying_key().to_sec1_point(false),
            ),
        })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

impl Signer for EcdsaKey {
    /// An ASN.1 DER signature over `message` hashed with the curve's SHA-2, as TLS sends it.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        use p256::ecdsa::signature::Signer as _;
        let failed = |error| Error::General(format!("ECDSA signing failed: {error}"));
        Ok(match self {
            EcdsaKey::P256(key) => {
                let signature: p256::ecdsa::DerSignature = key.try_sign(message).map_err(failed)?;
                signature.as_bytes().to_vec()
            }
            EcdsaKey::P384(key) => {
                let signature: p384::ecdsa::DerSignature = key.try_sign(message).map_err(failed)?;
                signature.as_bytes().to_vec()
            }
        })
    }

    fn scheme(&self) -> SignatureScheme {
        match self {
            EcdsaKey::P256(_) => SignatureScheme::ECDSA_NISTP256_SHA256,
            EcdsaKey::P384(_) => SignatureScheme::ECDSA_NISTP384_SHA384,
        }
    }
}

/// An ECDSA signature check for webpki: a curve with its hash.
#[derive(Debug)]
struct EcdsaVerification {
    public_key: AlgorithmIdentifier,
    signature: AlgorithmIdentifier,
    /// Whether the DER `signature` over `message` verifies with the SEC1 point `public_key`.
    verifies: fn(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool,
}

static ECDSA_P256_SHA256: EcdsaVerification = EcdsaVerification {
    public_key: alg_id::ECDSA_P256,
    signature: alg_id::ECDSA_SHA256,
    verifies: |public_key, message, signature| {
        use p256::ecdsa::signature::Verifier as _;
        let (Ok(key), Ok(signature)) = (
            p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key),
            p256::ecdsa::DerSignature::from_bytes(signature),
        ) else {
            return false;
        };
        key.verify(message, &signature).is_ok()
    },
};

static ECDSA_P384_SHA384: EcdsaVerification = EcdsaVerification {
    public_key: alg_id::ECDSA_P384,
    signature: alg_id::ECDSA_SHA384,
    verifies: |public_key, message, signature| {
        use p384::ecdsa::signature::Verifier as _;
        let (Ok(key), Ok(signature)) = (
            p384::ecdsa::VerifyingKey::from_sec1_bytes(public_key),
            p384::ecdsa::DerSignature::from_bytes(signature),
        ) else {
            return false;
        };
        key.verify(message, &signature).is_ok()
    },
};

impl SignatureVerificationAlgorithm for EcdsaVerification {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        match (self.verifies)(public_key, message, signature) {
            true => Ok(()),
            false => Err(InvalidSignature),
        }
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        self.public_key
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.signature
    }
}
