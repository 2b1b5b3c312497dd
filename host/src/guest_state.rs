//! What one guest instance is granted, and nothing more: an empty WASI context, its resource
//! table and memory cap, the certificates (at initialisation), and the host's answers to its
//! `identity`, `crypto`, `tickets` and `private-keys` imports, within host/shared's `crypto_bounds`.
//! Keys are used here, never handed over (but to the portable world, while it initialises).

use crate::bindings::portable::tls_site::site::private_keys;
use crate::bindings::tls_site::site::crypto::{
    self as wit, Aead, HashAlgorithm, KeyId, NamedGroup,
};
use crate::bindings::tls_site::site::{identity, tickets};
use crate::certs::{Certificate, KeyFormat};
use crate::crypto::{
    self as native, AeadAlgorithm, CryptoError, Group, HashContext, Keys, RecordProtection,
};
use crate::tickets::TicketKeys;
use std::sync::Arc;
use tls_site_shared::crypto_bounds::HostObject;
use tls_site_shared::held::Held;
use wasmtime::Store;
use wasmtime::component::Resource;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// A guest instance's store.
pub struct GuestState {
    wasi: WasiCtx,
    /// Its host objects, memory cap and counts against the crypto bounds.
    pub(crate) held: Held<HashContext, RecordProtection>,
    certificates: Vec<identity::Certificate>,
    keys: Arc<Keys>,
    tickets: Arc<TicketKeys>,
    /// Only while the component initialises may the portable world read a private key.
    initialising: bool,
}

impl GuestState {
    /// The state of an instance that serves a connection (or lists the site).
    pub fn serving(memory_bytes: usize, keys: Arc<Keys>, tickets: Arc<TicketKeys>) -> GuestState {
        GuestState {
            wasi: empty_wasi(),
            held: Held::new(memory_bytes),
            certificates: Vec::new(),
            keys,
            tickets,
            initialising: false,
        }
    }

    /// The state of the one instance that initialises, and is then snapshotted: it gets the
    /// certificates (as the i-th names its key by `key-id` i, `Keys::load`).
    pub fn initialising(
        memory_bytes: usize,
        certificates: &[Certificate],
        keys: Arc<Keys>,
        tickets: Arc<TicketKeys>,
    ) -> GuestState {
        let certificates = (0..)
            .zip(certificates)
            .map(|(key, certificate)| identity::Certificate {
                chain: certificate.chain.clone(),
                names: certificate.names.clone(),
                key,
            })
            .collect();
        GuestState {
            certificates,
            initialising: true,
            ..GuestState::serving(memory_bytes, keys, tickets)
        }
    }
}

/// A store for one instance, its memory capped, with the start-up CPU deadline; connections set
/// their own.
pub fn new_store(engine: &wasmtime::Engine, state: GuestState) -> Store<GuestState> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.held.memory);
    store.set_epoch_deadline(crate::engine::ticks(crate::engine::START_UP_DEADLINE));
    store.epoch_deadline_trap();
    store
}

/// WASI as the guest gets it: no preopened directories, no environment, no arguments, no
/// network (sockets exist in the interface, every use is refused), stdio empty. What remains
/// is clocks and randomness, which TLS needs.
pub fn empty_wasi() -> WasiCtx {
    WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.held.table,
        }
    }
}

impl identity::Host for GuestState {
    fn certificates(&mut self) -> wasmtime::Result<Vec<identity::Certificate>> {
        Ok(std::mem::take(&mut self.certificates))
    }
}

impl From<CryptoError> for wit::CryptoError {
    fn from(error: CryptoError) -> wit::CryptoError {
        match error {
            CryptoError::UnknownKey(key) => wit::CryptoError::UnknownKey(key),
            CryptoError::Unsupported(why) => wit::CryptoError::Unsupported(why),
            CryptoError::Rejected(why) => wit::CryptoError::Rejected(why),
        }
    }
}

impl wit::Host for GuestState {
    fn signature_schemes(&mut self, key: KeyId) -> wasmtime::Result<Vec<u16>> {
        self.held.call()?;
        Ok(self
            .keys
            .signature_schemes(key)
            .into_iter()
            .map(u16::from)
            .collect())
    }

    fn sign_certificate_verify(
        &mut self,
        key: KeyId,
        scheme: u16,
        transcript_hash: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::CryptoError>> {
        self.held.bounds.sign()?;
        Ok(self
            .keys
            .sign_certificate_verify(key, scheme.into(), &transcript_hash)
            .map_err(Into::into))
    }

    fn named_groups(&mut self) -> wasmtime::Result<Vec<NamedGroup>> {
        self.held.call()?;
        Ok(crate::crypto::GROUPS
            .iter()
            .map(|group| match group {
                Group::X25519MlKem768 => NamedGroup::X25519Mlkem768,
                Group::X25519 => NamedGroup::X25519,
                Group::Secp256r1 => NamedGroup::Secp256r1,
                Group::Secp384r1 => NamedGroup::Secp384r1,
            })
            .collect())
    }

    fn encapsulate(
        &mut self,
        group: NamedGroup,
        client_share: Vec<u8>,
    ) -> wasmtime::Result<Result<wit::Encapsulated, wit::CryptoError>> {
        self.held.call()?;
        let group = match group {
            NamedGroup::X25519Mlkem768 => Group::X25519MlKem768,
            NamedGroup::X25519 => Group::X25519,
            NamedGroup::Secp256r1 => Group::Secp256r1,
            NamedGroup::Secp384r1 => Group::Secp384r1,
        };
        Ok(crate::crypto::encapsulate(group, &client_share)
            .map(|done| wit::Encapsulated {
                share: done.share,
                shared_secret: done.shared_secret,
            })
            .map_err(Into::into))
    }

    fn hash(&mut self, algorithm: HashAlgorithm, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        self.held.call()?;
        Ok(native::hash(algorithm.into(), &data))
    }

    fn hmac(
        &mut self,
        algorithm: HashAlgorithm,
        key: Vec<u8>,
        message: Vec<u8>,
    ) -> wasmtime::Result<Vec<u8>> {
        self.held.call()?;
        Ok(native::hmac(algorithm.into(), &key, &message))
    }
}

impl From<HashAlgorithm> for native::HashAlgorithm {
    fn from(algorithm: HashAlgorithm) -> native::HashAlgorithm {
        match algorithm {
            HashAlgorithm::Sha256 => native::HashAlgorithm::Sha256,
            HashAlgorithm::Sha384 => native::HashAlgorithm::Sha384,
        }
    }
}

impl wit::HostHashContext for GuestState {
    fn new(&mut self, algorithm: HashAlgorithm) -> wasmtime::Result<Resource<HashContext>> {
        self.held.call()?;
        self.held
            .hold(HostObject::HashContext, HashContext::new(algorithm.into()))
    }

    fn digest(
        &mut self,
        context: Resource<HashContext>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Vec<u8>> {
        self.held.call()?;
        Ok(self.held.table.get_mut(&context)?.digest(&data))
    }

    fn fork(
        &mut self,
        context: Resource<HashContext>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<HashContext>> {
        self.held.call()?;
        let fork = self.held.table.get_mut(&context)?.fork(&data);
        self.held.hold(HostObject::HashContext, fork)
    }

    fn finish(
        &mut self,
        context: Resource<HashContext>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Vec<u8>> {
        self.held.call()?;
        Ok(self
            .held
            .release(HostObject::HashContext, context)?
            .finish(&data))
    }

    fn drop(&mut self, context: Resource<HashContext>) -> wasmtime::Result<()> {
        self.held.release(HostObject::HashContext, context)?;
        Ok(())
    }
}

impl wit::HostRecordKey for GuestState {
    fn new(
        &mut self,
        algorithm: Aead,
        key: Vec<u8>,
    ) -> wasmtime::Result<Result<Resource<RecordProtection>, wit::CryptoError>> {
        self.held.call()?;
        let algorithm = match algorithm {
            Aead::Aes128Gcm => AeadAlgorithm::Aes128Gcm,
            Aead::Aes256Gcm => AeadAlgorithm::Aes256Gcm,
            Aead::Chacha20Poly1305 => AeadAlgorithm::Chacha20Poly1305,
        };
        match RecordProtection::new(algorithm, &key) {
            Ok(protection) => Ok(Ok(self.held.hold(HostObject::RecordKey, protection)?)),
            Err(error) => Ok(Err(error.into())),
        }
    }

    fn seal(
        &mut self,
        key: Resource<RecordProtection>,
        nonce: Vec<u8>,
        aad: Vec<u8>,
        plaintext: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::CryptoError>> {
        self.held.call()?;
        Ok(self
            .held
            .table
            .get(&key)?
            .seal(&nonce, aad, plaintext)
            .map_err(Into::into))
    }

    fn open(
        &mut self,
        key: Resource<RecordProtection>,
        nonce: Vec<u8>,
        aad: Vec<u8>,
        sealed: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::CryptoError>> {
        self.held.call()?;
        Ok(self
            .held
            .table
            .get(&key)?
            .open(&nonce, aad, sealed)
            .map_err(Into::into))
    }

    fn drop(&mut self, key: Resource<RecordProtection>) -> wasmtime::Result<()> {
        self.held.release(HostObject::RecordKey, key)?;
        Ok(())
    }
}

impl tickets::Host for GuestState {
    fn seal(&mut self, state: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.held.call()?;
        Ok(self.tickets.seal(&state))
    }

    fn open(&mut self, ticket: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.held.call()?;
        Ok(self.tickets.open(&ticket))
    }

    fn lifetime_seconds(&mut self) -> wasmtime::Result<u32> {
        Ok(self.tickets.lifetime_seconds())
    }
}

impl private_keys::Host for GuestState {
    fn private_key(&mut self, key: KeyId) -> wasmtime::Result<Option<private_keys::KeyDer>> {
        if !self.initialising {
            return Ok(None);
        }
        Ok(self
            .keys
            .der(key)
            .map(|(der, format)| private_keys::KeyDer {
                der: der.to_vec(),
                format: match format {
                    KeyFormat::Pkcs8 => private_keys::KeyFormat::Pkcs8,
                    KeyFormat::Sec1 => private_keys::KeyFormat::Sec1,
                    KeyFormat::Pkcs1 => private_keys::KeyFormat::Pkcs1,
                },
            }))
    }
}

#[cfg(test)]
use crate::sandbox::client;

#[cfg(test)]
mod tests;
