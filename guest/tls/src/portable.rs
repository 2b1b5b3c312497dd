//! The pure-Rust crypto provider (RustCrypto): what the `portable` component signs and encrypts
//! with, and what the example, the fuzz target and the tests use natively.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;
use std::sync::Arc;

/// RustCrypto's pure-Rust provider, cut down to what the site offers: TLS 1.3 suites only.
pub fn provider() -> CryptoProvider {
    let mut provider = rustls_rustcrypto::provider();
    provider
        .cipher_suites
        .retain(|suite| suite.tls13().is_some());
    provider
}

/// A private key (PKCS#8, SEC1 or PKCS#1), ready to sign with the pure-Rust provider.
pub fn load_private_key(key: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, rustls::Error> {
    provider().key_provider.load_private_key(key)
}
