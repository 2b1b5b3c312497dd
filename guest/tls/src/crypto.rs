//! The rustls `CryptoProvider`, in one place: by default the host's (`host_crypto.rs`, world
//! `tls-site`: keyless, native speed, session tickets); with the cargo feature `portable`,
//! RustCrypto's pure-Rust provider with the private keys read at initialisation (world
//! `tls-site-portable`, which any component host can run).

#[cfg(not(feature = "portable"))]
pub use crate::host_crypto::{provider, signing_key, ticketer};
#[cfg(feature = "portable")]
#[allow(unused_imports)] // `load_private_key` is for examples/native.rs, which reads its key from a file.
pub use portable::{load_private_key, provider, signing_key, ticketer};

#[cfg(feature = "portable")]
mod portable {
    use crate::bindings::tls_site::site::identity::KeyId;
    use crate::bindings::tls_site::site::private_keys::{self, KeyFormat};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
    use rustls::server::ProducesTickets;
    use rustls::sign::SigningKey;
    use std::sync::Arc;

    /// RustCrypto's pure-Rust provider, cut down to what the site offers: TLS 1.3 suites only.
    pub fn provider() -> CryptoProvider {
        let mut provider = rustls_rustcrypto::provider();
        provider.cipher_suites.retain(|suite| suite.tls13().is_some());
        provider
    }

    /// The private key the host names `key`, read from the host and parsed here.
    pub fn signing_key(key: KeyId) -> Result<Arc<dyn SigningKey>, String> {
        let private = private_keys::private_key(key).ok_or_else(|| format!("the host gave no private key {key}"))?;
        load_private_key(match private.format {
            KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(private.der)),
            KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(private.der)),
            KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(private.der)),
        })
    }

    pub fn load_private_key(key: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, String> {
        provider().key_provider.load_private_key(key).map_err(|error| error.to_string())
    }

    /// No resumption: ticket keys made inside the component would be frozen into the snapshot,
    /// never rotated.
    pub fn ticketer() -> Option<Arc<dyn ProducesTickets>> {
        None
    }
}
