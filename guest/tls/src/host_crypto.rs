//! The rustls `CryptoProvider` made of the host's `crypto` and `tickets` imports (world `tls-site`):
//! signatures with keys the host holds, key exchange (X25519MLKEM768 first), record protection,
//! the transcript hash and the key schedule's HMACs, and session tickets all run natively in the
//! host; the component keeps the TLS state machine and the secrets of its key schedule. No crypto
//! of its own is linked in: randomness is wasi:random.

use crate::component::bindings::tls_site::site::crypto::{
    self as host, Aead, CryptoError, HashContext, RecordKey,
};
use crate::component::bindings::tls_site::site::identity::KeyId;
use crate::component::bindings::tls_site::site::tickets;
use crate::component::bindings::wasi::random::random;
use crate::config::tls13_suite;
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter,
    Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload, Tls13AeadAlgorithm,
    UnsupportedOperationError, make_tls13_aad,
};
use rustls::crypto::hash::HashAlgorithm;
use rustls::crypto::tls13::HkdfUsingHmac;
use rustls::crypto::{
    ActiveKeyExchange, CompletedKeyExchange, CryptoProvider, GetRandomFailed, KeyProvider,
    SecureRandom, SharedSecret, SupportedKxGroup, WebPkiSupportedAlgorithms, hash, hmac,
};
use rustls::ffdhe_groups::FfdheGroup;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::ProducesTickets;
use rustls::sign::{Signer, SigningKey};
use rustls::{
    CipherSuite, ConnectionTrafficSecrets, ContentType, Error, NamedGroup, ProtocolVersion,
    SignatureAlgorithm, SignatureScheme, SupportedCipherSuite, Tls13CipherSuite,
};
use std::sync::{Arc, Mutex};

/// Bytes an AEAD tag adds to a record (all three algorithms).
const TAG_LEN: usize = 16;

/// The TLS 1.3 suites and the host's key-exchange groups, all done by the host.
pub fn provider() -> CryptoProvider {
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
        cipher_suites: vec![
            SupportedCipherSuite::Tls13(&TLS13_AES_128_GCM_SHA256),
            SupportedCipherSuite::Tls13(&TLS13_AES_256_GCM_SHA384),
            SupportedCipherSuite::Tls13(&TLS13_CHACHA20_POLY1305_SHA256),
        ],
        kx_groups,
        // Client certificates are not asked for (`with_no_client_auth`), so nothing is verified.
        signature_verification_algorithms: WebPkiSupportedAlgorithms {
            all: &[],
            mapping: &[],
        },
        secure_random: &WasiRandom,
        key_provider: &KeysStayWithTheHost,
    }
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

/// The key the host holds under `key`, as rustls signs with it.
pub fn signing_key(key: KeyId) -> Result<Arc<dyn SigningKey>, String> {
    let schemes: Vec<SignatureScheme> = host::signature_schemes(key)
        .into_iter()
        .map(SignatureScheme::from)
        .collect();
    let algorithm = schemes
        .first()
        .map(|&scheme| algorithm_of(scheme))
        .ok_or_else(|| format!("the host has no key {key} to sign with"))?;
    Ok(Arc::new(HostSigningKey {
        key,
        schemes,
        algorithm,
    }))
}

/// Stateless session tickets sealed by the host.
pub fn ticketer() -> Option<Arc<dyn ProducesTickets>> {
    Some(Arc::new(HostTicketer))
}

fn algorithm_of(scheme: SignatureScheme) -> SignatureAlgorithm {
    use SignatureScheme::*;
    match scheme {
        ECDSA_NISTP256_SHA256 | ECDSA_NISTP384_SHA384 | ECDSA_NISTP521_SHA512 => {
            SignatureAlgorithm::ECDSA
        }
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
        Err(Error::General(
            "this component holds no private keys; the host signs (`crypto.sign-certificate-verify`)".into(),
        ))
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
        let scheme = *self
            .schemes
            .iter()
            .find(|scheme| offered.contains(scheme))?;
        Some(Box::new(HostSigner {
            key: self.key,
            scheme,
        }))
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

/// A TLS 1.3 server CertificateVerify signs 64 spaces, this context string and zero byte, then the
/// transcript hash (RFC 8446, 4.4.3).
const SERVER_CONTEXT: &[u8; 34] = b"TLS 1.3, server CertificateVerify\0";

/// The transcript hash in what rustls asks to sign, if it is a server CertificateVerify.
fn transcript_hash(message: &[u8]) -> Option<&[u8]> {
    let (spaces, rest) = message.split_at_checked(64)?;
    let hash = rest.strip_prefix(SERVER_CONTEXT)?;
    spaces.iter().all(|&byte| byte == b' ').then_some(hash)
}

impl Signer for HostSigner {
    /// rustls gives the whole content to sign; the host takes only its transcript hash, and adds
    /// the rest itself (`sign-certificate-verify`): it signs nothing but a CertificateVerify.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let hash = transcript_hash(message).ok_or_else(|| {
            Error::General("the host signs only a TLS 1.3 server CertificateVerify".into())
        })?;
        host::sign_certificate_verify(self.key, u16::from(self.scheme), hash)
            .map_err(|error| refused(&error))
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

static X25519MLKEM768: HostKxGroup = HostKxGroup {
    host: host::NamedGroup::X25519Mlkem768,
    name: NamedGroup::X25519MLKEM768,
};
static X25519: HostKxGroup = HostKxGroup {
    host: host::NamedGroup::X25519,
    name: NamedGroup::X25519,
};
static SECP256R1: HostKxGroup = HostKxGroup {
    host: host::NamedGroup::Secp256r1,
    name: NamedGroup::secp256r1,
};
static SECP384R1: HostKxGroup = HostKxGroup {
    host: host::NamedGroup::Secp384r1,
    name: NamedGroup::secp384r1,
};

impl SupportedKxGroup for HostKxGroup {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        Err(Error::General("the host answers a client's key share in one step (`crypto.encapsulate`); a TLS 1.3 server needs no more".into()))
    }

    fn start_and_complete(&self, client_share: &[u8]) -> Result<CompletedKeyExchange, Error> {
        match host::encapsulate(self.host, client_share) {
            Ok(done) => Ok(CompletedKeyExchange {
                group: self.name,
                pub_key: done.share,
                secret: SharedSecret::from(done.shared_secret),
            }),
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
        Box::new(HostRecordKey {
            key: RecordKey::new(self.0, key.as_ref()),
            iv,
        })
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(HostRecordKey {
            key: RecordKey::new(self.0, key.as_ref()),
            iv,
        })
    }

    fn key_len(&self) -> usize {
        match self.0 {
            Aead::Aes128Gcm => 16,
            Aead::Aes256Gcm | Aead::Chacha20Poly1305 => 32,
        }
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
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
    fn encrypt(
        &mut self,
        message: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let key = self.key.as_ref().map_err(refused)?;
        let sealed_len = self.encrypted_payload_len(message.payload.len());
        // TLSInnerPlaintext: the content, then its real type.
        let mut inner = Vec::with_capacity(message.payload.len() + 1);
        message.payload.copy_to_vec(&mut inner);
        inner.push(u8::from(message.typ));
        let sealed = key
            .seal(
                &Nonce::new(&self.iv, seq).0,
                &make_tls13_aad(sealed_len),
                &inner,
            )
            .map_err(|error| refused(&error))?;
        let mut payload = PrefixedPayload::with_capacity(sealed.len());
        payload.extend_from_slice(&sealed);
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

impl MessageDecrypter for HostRecordKey {
    fn decrypt<'a>(
        &mut self,
        mut message: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
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

/// ServerHello randoms and ticket nonces, from the host's wasi:random.
#[derive(Debug)]
struct WasiRandom;

impl SecureRandom for WasiRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        let bytes = random::get_random_bytes(buf.len() as u64);
        buf.copy_from_slice(bytes.get(..buf.len()).ok_or(GetRandomFailed)?);
        Ok(())
    }
}

/// A TLS 1.3 suite's hash, done by the host.
struct HostHash {
    host: host::HashAlgorithm,
    algorithm: HashAlgorithm,
    len: usize,
}

static SHA256: HostHash = HostHash {
    host: host::HashAlgorithm::Sha256,
    algorithm: HashAlgorithm::SHA256,
    len: 32,
};
static SHA384: HostHash = HostHash {
    host: host::HashAlgorithm::Sha384,
    algorithm: HashAlgorithm::SHA384,
    len: 48,
};

impl hash::Hash for HostHash {
    fn start(&self) -> Box<dyn hash::Context> {
        Box::new(Transcript {
            algorithm: self.host,
            state: Mutex::new(TranscriptState {
                pending: Vec::new(),
                host: None,
            }),
        })
    }

    fn hash(&self, data: &[u8]) -> hash::Output {
        hash::Output::new(&host::hash(self.host, data))
    }

    fn output_len(&self) -> usize {
        self.len
    }

    fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }
}

/// A running hash (rustls's handshake transcript): updates are gathered here and handed to the
/// host with the next call that needs a digest, so a handshake makes a host call per digest, not
/// per message. The host's context is made at the first digest; a hash finished before that is
/// one `hash` call.
struct Transcript {
    algorithm: host::HashAlgorithm,
    /// rustls asks for a digest through `&self`.
    state: Mutex<TranscriptState>,
}

struct TranscriptState {
    /// Bytes added since the host last saw this transcript.
    pending: Vec<u8>,
    host: Option<HashContext>,
}

impl Transcript {
    fn state(&self) -> std::sync::MutexGuard<'_, TranscriptState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl hash::Context for Transcript {
    fn fork_finish(&self) -> hash::Output {
        let mut state = self.state();
        let pending = std::mem::take(&mut state.pending);
        let context = state
            .host
            .get_or_insert_with(|| HashContext::new(self.algorithm));
        hash::Output::new(&context.digest(&pending))
    }

    fn fork(&self) -> Box<dyn hash::Context> {
        let mut state = self.state();
        let state = &mut *state;
        let forked = match &state.host {
            None => TranscriptState {
                pending: state.pending.clone(),
                host: None,
            },
            Some(context) => TranscriptState {
                pending: Vec::new(),
                host: Some(context.fork(&std::mem::take(&mut state.pending))),
            },
        };
        Box::new(Transcript {
            algorithm: self.algorithm,
            state: Mutex::new(forked),
        })
    }

    fn finish(self: Box<Self>) -> hash::Output {
        let TranscriptState { pending, host } = self
            .state
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        hash::Output::new(&match host {
            None => host::hash(self.algorithm, &pending),
            Some(context) => HashContext::finish(context, &pending),
        })
    }

    fn update(&mut self, data: &[u8]) {
        self.state
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pending
            .extend_from_slice(data);
    }
}

/// HMAC with a TLS 1.3 suite's hash, done by the host: what rustls's HKDF (`HkdfUsingHmac`) is
/// made of, so the key schedule costs one host call per Extract or Expand.
struct HostHmac(host::HashAlgorithm, usize);

static HMAC_SHA256: HostHmac = HostHmac(host::HashAlgorithm::Sha256, 32);
static HMAC_SHA384: HostHmac = HostHmac(host::HashAlgorithm::Sha384, 48);

impl hmac::Hmac for HostHmac {
    fn with_key(&self, key: &[u8]) -> Box<dyn hmac::Key> {
        Box::new(HmacKey {
            algorithm: self.0,
            key: key.to_vec(),
            len: self.1,
        })
    }

    fn hash_output_len(&self) -> usize {
        self.1
    }
}

/// An HMAC key of the key schedule: a secret the component derives and holds, so it stays here
/// and goes with each call.
struct HmacKey {
    algorithm: host::HashAlgorithm,
    key: Vec<u8>,
    len: usize,
}

impl hmac::Key for HmacKey {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> hmac::Tag {
        let mut message = Vec::with_capacity(
            first.len() + middle.iter().map(|part| part.len()).sum::<usize>() + last.len(),
        );
        message.extend_from_slice(first);
        middle
            .iter()
            .for_each(|part| message.extend_from_slice(part));
        message.extend_from_slice(last);
        hmac::Tag::new(&host::hmac(self.algorithm, &self.key, &message))
    }

    fn tag_len(&self) -> usize {
        self.len
    }
}
