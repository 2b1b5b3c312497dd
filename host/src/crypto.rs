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
mod tests {
    use super::*;
    // The client's side from ring, so each group is checked against another implementation.
    use rustls::crypto::ring::kx_group;

    /// A key beside another certificate's chain fails at load, naming the file, not at every
    /// handshake.
    #[test]
    fn a_key_beside_another_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("tls-site-crypto-{}", std::process::id()));
        let (one, other) = (dir.join("one"), dir.join("other"));
        for dir in [&one, &other] {
            crate::certs::dev_certs(dir, &["a.test".to_owned()]).unwrap();
        }
        let mut mixed = crate::certs::load_dir(&one).unwrap();
        assert!(Keys::load(&mixed).is_ok());
        mixed[0].private_key = crate::certs::load_dir(&other).unwrap()[0]
            .private_key
            .clone();
        let error = Keys::load(&mixed).err().expect("refused").to_string();
        assert!(
            error.contains("dev.chain.pem") && error.contains("not the key of the certificate"),
            "{error}"
        );
    }

    #[test]
    fn a_record_sealed_opens_once_and_not_with_another_nonce() {
        let key = RecordProtection::new(AeadAlgorithm::Aes128Gcm, &[7; 16]).unwrap();
        let sealed = key
            .seal(&[1; 12], b"aad".to_vec(), b"hello".to_vec())
            .unwrap();
        assert_eq!(
            key.open(&[1; 12], b"aad".to_vec(), sealed.clone()).unwrap(),
            b"hello"
        );
        assert!(matches!(
            key.open(&[2; 12], b"aad".to_vec(), sealed),
            Err(CryptoError::Rejected(_))
        ));
        assert!(matches!(
            RecordProtection::new(AeadAlgorithm::Aes256Gcm, &[7; 16]),
            Err(CryptoError::Unsupported(_))
        ));
    }

    #[test]
    fn every_group_answers_a_clients_share_with_the_secret_the_client_computes() {
        for (group, client) in [
            (Group::X25519, kx_group::X25519),
            (Group::Secp256r1, kx_group::SECP256R1),
            (Group::Secp384r1, kx_group::SECP384R1),
        ] {
            let client = client.start().unwrap();
            let ours = encapsulate(group, client.pub_key()).unwrap();
            assert_eq!(
                client.complete(&ours.share).unwrap().secret_bytes(),
                ours.shared_secret,
                "{group:?}"
            );
        }
        assert!(
            matches!(
                encapsulate(Group::Secp256r1, &[4; 65]),
                Err(CryptoError::Rejected(_))
            ),
            "off the curve"
        );
    }

    /// As a client does it (what rustls's aws-lc-rs provider does): decapsulate the ciphertext,
    /// X25519 with our public key, ML-KEM's secret first.
    #[test]
    fn the_hybrid_group_answers_a_clients_share_with_the_secret_the_client_computes() {
        use aws_lc_rs::kem::{Ciphertext, DecapsulationKey};
        let mlkem = DecapsulationKey::generate(&ML_KEM_768).unwrap();
        let x25519 = PrivateKey::generate(&agreement::X25519).unwrap();
        let share = [
            mlkem
                .encapsulation_key()
                .unwrap()
                .key_bytes()
                .unwrap()
                .as_ref(),
            x25519.compute_public_key().unwrap().as_ref(),
        ]
        .concat();
        assert_eq!(share.len(), 1216);

        let ours = encapsulate(Group::X25519MlKem768, &share).unwrap();

        assert_eq!(
            (ours.share.len(), ours.shared_secret.len()),
            (1088 + 32, 64)
        );
        let (ciphertext, their_x25519) = ours.share.split_at(1088);
        let mlkem_secret = mlkem.decapsulate(Ciphertext::from(ciphertext)).unwrap();
        let x25519_secret = agreement::agree(
            &x25519,
            UnparsedPublicKey::new(&agreement::X25519, their_x25519),
            (),
            |secret| Ok(secret.to_vec()),
        )
        .unwrap();
        assert_eq!(
            ours.shared_secret,
            [mlkem_secret.as_ref(), &x25519_secret].concat()
        );

        for bad in [&share[..1215], &[0xff; 1216][..]] {
            assert!(
                matches!(
                    encapsulate(Group::X25519MlKem768, bad),
                    Err(CryptoError::Rejected(_))
                ),
                "{} bytes",
                bad.len()
            );
        }
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
            .collect()
    }

    /// FIPS 180-2, appendix B.1 and D.1 ("abc"), B.2 (two blocks), and the empty message.
    #[test]
    fn hashes_match_the_standards_vectors() {
        assert_eq!(
            hash(HashAlgorithm::Sha256, b"abc"),
            hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(
            hash(HashAlgorithm::Sha384, b"abc"),
            hex(
                "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"
            )
        );
        assert_eq!(
            hash(HashAlgorithm::Sha256, b""),
            hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        let two_blocks = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            hash(HashAlgorithm::Sha256, two_blocks),
            hex("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        );
    }

    /// A running hash, fed in pieces, forked and finished, agrees with the one-step hash of the
    /// same bytes at every point: what the guest's transcript relies on.
    #[test]
    fn a_running_hash_digests_forks_and_finishes_as_the_one_step_hash() {
        let message = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        let (first, rest) = message.split_at(20);
        for algorithm in [HashAlgorithm::Sha256, HashAlgorithm::Sha384] {
            let mut running = HashContext::new(algorithm);
            assert_eq!(
                running.digest(first),
                hash(algorithm, first),
                "{algorithm:?}"
            );
            let fork = running.fork(b"");
            assert_eq!(
                running.digest(rest),
                hash(algorithm, message),
                "{algorithm:?}"
            );
            assert_eq!(
                fork.finish(b"xyz"),
                hash(algorithm, &[first, b"xyz"].concat()),
                "{algorithm:?}: the fork goes on on its own"
            );
            assert_eq!(
                running.finish(b""),
                hash(algorithm, message),
                "{algorithm:?}"
            );
        }
    }

    /// RFC 4231, test cases 1, 2 and 6 (a key longer than a block).
    #[test]
    fn hmacs_match_rfc_4231() {
        let cases: [(&[u8], &[u8], &str, &str); 3] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
            ),
        ];
        for (key, message, sha256, sha384) in cases {
            assert_eq!(hmac(HashAlgorithm::Sha256, key, message), hex(sha256));
            assert_eq!(hmac(HashAlgorithm::Sha384, key, message), hex(sha384));
        }
    }

    /// RFC 5869, test case 1: HKDF-SHA256 as the guest's key schedule does it, out of HMAC
    /// calls (Extract: one; Expand: one per hash-length block).
    #[test]
    fn hkdf_made_of_hmac_calls_matches_rfc_5869() {
        let (ikm, salt, info) = (
            [0x0b; 22],
            hex("000102030405060708090a0b0c"),
            hex("f0f1f2f3f4f5f6f7f8f9"),
        );
        let prk = hmac(HashAlgorithm::Sha256, &salt, &ikm);
        assert_eq!(
            prk,
            hex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let t1 = hmac(HashAlgorithm::Sha256, &prk, &[&info[..], &[1]].concat());
        let t2 = hmac(
            HashAlgorithm::Sha256,
            &prk,
            &[&t1[..], &info, &[2]].concat(),
        );
        let okm = [t1, t2].concat();
        assert_eq!(
            okm[..42],
            hex(
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
            )
        );
    }
}
