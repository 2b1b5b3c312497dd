//! The rustls `CryptoProvider` made of the host's `crypto` and `tickets` imports (world `tls-site`):
//! signatures with keys the host holds, key exchange (X25519MLKEM768 first), record protection and session
//! tickets all run natively in the host; the component keeps the TLS state machine, the
//! transcript hash and the key schedule (pure Rust, cheap).

use crate::component::bindings::tls_site::site::crypto::{self as host, Aead, CryptoError, RecordKey};
use crate::component::bindings::tls_site::site::identity::KeyId;
use crate::component::bindings::tls_site::site::tickets;
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter, Nonce,
    OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload, Tls13AeadAlgorithm, UnsupportedOperationError,
    make_tls13_aad,
};
use rustls::crypto::{ActiveKeyExchange, CompletedKeyExchange, CryptoProvider, KeyProvider, SharedSecret, SupportedKxGroup};
use rustls::ffdhe_groups::FfdheGroup;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::ProducesTickets;
use rustls::sign::{Signer, SigningKey};
use rustls::{
    CipherSuiteCommon, ConnectionTrafficSecrets, ContentType, Error, NamedGroup, ProtocolVersion, SignatureAlgorithm,
    SignatureScheme, SupportedCipherSuite, Tls13CipherSuite,
};
use std::sync::Arc;

/// Bytes an AEAD tag adds to a record (all three algorithms).
const TAG_LEN: usize = 16;

/// TLS 1.3 suites with the pure-Rust provider's hash and HKDF and the host's record protection,
/// and the host's key-exchange groups.
pub fn provider() -> CryptoProvider {
    let pure = rustls_rustcrypto::provider();
    let cipher_suites = [
        (rustls_rustcrypto::TLS13_AES_128_GCM_SHA256, &AES_128_GCM),
        (rustls_rustcrypto::TLS13_AES_256_GCM_SHA384, &AES_256_GCM),
        (rustls_rustcrypto::TLS13_CHACHA20_POLY1305_SHA256, &CHACHA20_POLY1305),
    ]
    .into_iter()
    .map(|(suite, aead)| sealed_by_host(suite, aead))
    .collect();
    let kx_groups = host::named_groups()
        .into_iter()
        .map(|group| match group {
            host::NamedGroup::X25519Mlkem768 => &X25519MLKEM768 as &'static dyn SupportedKxGroup,
            host::NamedGroup::X25519 => &X25519,
            host::NamedGroup::Secp256r1 => &SECP256R1,
            host::NamedGroup::Secp384r1 => &SECP384R1,
        })
        .collect();
    CryptoProvider {
        cipher_suites,
        kx_groups,
        // Client certificates are not asked for; nothing is verified with these.
        signature_verification_algorithms: pure.signature_verification_algorithms,
        // ServerHello randoms and ticket nonces: wasi:random, which the host provides.
        secure_random: pure.secure_random,
        key_provider: &KeysStayWithTheHost,
    }
}

/// The suite `pure` with its record protection done by the host. Made once, at initialisation,
/// and kept for the life of the instance (rustls wants `'static` suites).
fn sealed_by_host(pure: SupportedCipherSuite, aead: &'static HostAead) -> SupportedCipherSuite {
    let pure = pure.tls13().expect("the pure-Rust TLS 1.3 suites are TLS 1.3 suites");
    SupportedCipherSuite::Tls13(Box::leak(Box::new(Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: pure.common.suite,
            hash_provider: pure.common.hash_provider,
            confidentiality_limit: pure.common.confidentiality_limit,
        },
        hkdf_provider: pure.hkdf_provider,
        aead_alg: aead,
        quic: None,
    })))
}

/// The key the host holds under `key`, as rustls signs with it.
pub fn signing_key(key: KeyId) -> Result<Arc<dyn SigningKey>, String> {
    let schemes: Vec<SignatureScheme> = host::signature_schemes(key).into_iter().map(SignatureScheme::from).collect();
    let algorithm = schemes
        .first()
        .map(|&scheme| algorithm_of(scheme))
        .ok_or_else(|| format!("the host has no key {key} to sign with"))?;
    Ok(Arc::new(HostSigningKey { key, schemes, algorithm }))
}

/// Stateless session tickets sealed by the host.
pub fn ticketer() -> Option<Arc<dyn ProducesTickets>> {
    Some(Arc::new(HostTicketer))
}

fn algorithm_of(scheme: SignatureScheme) -> SignatureAlgorithm {
    use SignatureScheme::*;
    match scheme {
        ECDSA_NISTP256_SHA256 | ECDSA_NISTP384_SHA384 | ECDSA_NISTP521_SHA512 => SignatureAlgorithm::ECDSA,
        ED25519 => SignatureAlgorithm::ED25519,
        ED448 => SignatureAlgorithm::ED448,
        _ => SignatureAlgorithm::RSA,
    }
}

/// What a refused host operation becomes: an error rustls answers with an alert.
fn refused(error: &CryptoError) -> Error {
    Error::General(match error {
        CryptoError::UnknownKey(key) => format!("host crypto: no key {key}"),
        CryptoError::Unsupported(why) => format!("host crypto: unsupported: {why}"),
        CryptoError::Rejected(why) => format!("host crypto: rejected: {why}"),
    })
}

#[derive(Debug)]
struct KeysStayWithTheHost;

impl KeyProvider for KeysStayWithTheHost {
    fn load_private_key(&self, _: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, Error> {
        Err(Error::General("this component holds no private keys; the host signs (`crypto.sign`)".into()))
    }
}

#[derive(Debug)]
struct HostSigningKey {
    key: KeyId,
    /// The host's schemes for this key, its preferred first.
    schemes: Vec<SignatureScheme>,
    algorithm: SignatureAlgorithm,
}

impl SigningKey for HostSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = *self.schemes.iter().find(|scheme| offered.contains(scheme))?;
        Some(Box::new(HostSigner { key: self.key, scheme }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }
}

#[derive(Debug)]
struct HostSigner {
    key: KeyId,
    scheme: SignatureScheme,
}

impl Signer for HostSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        host::sign(self.key, u16::from(self.scheme), message).map_err(|error| refused(&error))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// A key-exchange group the host does. The server's side of TLS 1.3 is one step, the answer to
/// the client's share (`start_and_complete`), which is how the host does every group (a KEM
/// cannot be done otherwise): `start`, the two-step form that TLS 1.2 and clients use, is never
/// asked of a TLS 1.3 server.
#[derive(Debug)]
struct HostKxGroup {
    host: host::NamedGroup,
    name: NamedGroup,
}

static X25519MLKEM768: HostKxGroup = HostKxGroup { host: host::NamedGroup::X25519Mlkem768, name: NamedGroup::X25519MLKEM768 };
static X25519: HostKxGroup = HostKxGroup { host: host::NamedGroup::X25519, name: NamedGroup::X25519 };
static SECP256R1: HostKxGroup = HostKxGroup { host: host::NamedGroup::Secp256r1, name: NamedGroup::secp256r1 };
static SECP384R1: HostKxGroup = HostKxGroup { host: host::NamedGroup::Secp384r1, name: NamedGroup::secp384r1 };

impl SupportedKxGroup for HostKxGroup {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        Err(Error::General("the host answers a client's key share in one step (`crypto.encapsulate`); a TLS 1.3 server needs no more".into()))
    }

    fn start_and_complete(&self, client_share: &[u8]) -> Result<CompletedKeyExchange, Error> {
        match host::encapsulate(self.host, client_share) {
            Ok(done) => Ok(CompletedKeyExchange { group: self.name, pub_key: done.share, secret: SharedSecret::from(done.shared_secret) }),
            // A client share the host rejects is the client's fault: rustls answers illegal_parameter.
            Err(CryptoError::Rejected(_)) => Err(rustls::PeerMisbehaved::InvalidKeyShare.into()),
            Err(error) => Err(refused(&error)),
        }
    }

    fn ffdhe_group(&self) -> Option<FfdheGroup<'static>> {
        None
    }

    fn name(&self) -> NamedGroup {
        self.name
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_3
    }
}

struct HostAead(Aead);

static AES_128_GCM: HostAead = HostAead(Aead::Aes128Gcm);
static AES_256_GCM: HostAead = HostAead(Aead::Aes256Gcm);
static CHACHA20_POLY1305: HostAead = HostAead(Aead::Chacha20Poly1305);

impl Tls13AeadAlgorithm for HostAead {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(HostRecordKey { key: RecordKey::new(self.0, key.as_ref()), iv })
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(HostRecordKey { key: RecordKey::new(self.0, key.as_ref()), iv })
    }

    fn key_len(&self) -> usize {
        match self.0 {
            Aead::Aes128Gcm => 16,
            Aead::Aes256Gcm | Aead::Chacha20Poly1305 => 32,
        }
    }

    fn extract_keys(&self, key: AeadKey, iv: Iv) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(match self.0 {
            Aead::Aes128Gcm => ConnectionTrafficSecrets::Aes128Gcm { key, iv },
            Aead::Aes256Gcm => ConnectionTrafficSecrets::Aes256Gcm { key, iv },
            Aead::Chacha20Poly1305 => ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv },
        })
    }
}

/// One direction's record key, held by the host; the nonce (IV xor sequence number) and the
/// record header as additional data are made here, as RFC 8446 5.2-5.3 say.
struct HostRecordKey {
    /// The error, if the host refused the key, is reported by the first record.
    key: Result<RecordKey, CryptoError>,
    iv: Iv,
}

impl MessageEncrypter for HostRecordKey {
    fn encrypt(&mut self, message: OutboundPlainMessage<'_>, seq: u64) -> Result<OutboundOpaqueMessage, Error> {
        let key = self.key.as_ref().map_err(refused)?;
        let sealed_len = self.encrypted_payload_len(message.payload.len());
        // TLSInnerPlaintext: the content, then its real type.
        let mut inner = Vec::with_capacity(message.payload.len() + 1);
        message.payload.copy_to_vec(&mut inner);
        inner.push(u8::from(message.typ));
        let sealed = key
            .seal(&Nonce::new(&self.iv, seq).0, &make_tls13_aad(sealed_len), &inner)
            .map_err(|error| refused(&error))?;
        let mut payload = PrefixedPayload::with_capacity(sealed.len());
        payload.extend_from_slice(&sealed);
        Ok(OutboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, payload))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

impl MessageDecrypter for HostRecordKey {
    fn decrypt<'a>(&mut self, mut message: InboundOpaqueMessage<'a>, seq: u64) -> Result<InboundPlainMessage<'a>, Error> {
        let key = self.key.as_ref().map_err(refused)?;
        if message.payload.len() < TAG_LEN {
            return Err(Error::DecryptError);
        }
        let aad = make_tls13_aad(message.payload.len());
        let opened = match key.open(&Nonce::new(&self.iv, seq).0, &aad, &message.payload) {
            Ok(opened) => opened,
            Err(CryptoError::Rejected(_)) => return Err(Error::DecryptError),
            Err(error) => return Err(refused(&error)),
        };
        message.payload[..opened.len()].copy_from_slice(&opened);
        message.payload.truncate(opened.len());
        message.into_tls13_unpadded_message()
    }
}

#[derive(Debug)]
struct HostTicketer;

impl ProducesTickets for HostTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        tickets::lifetime_seconds()
    }

    fn encrypt(&self, state: &[u8]) -> Option<Vec<u8>> {
        tickets::seal(state)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        tickets::open(ticket)
    }
}
