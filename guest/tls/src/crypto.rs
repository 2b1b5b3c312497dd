//! The rustls `CryptoProvider`, in one place so that another one (host-side crypto) can replace it.

use rustls::crypto::CryptoProvider;

/// RustCrypto's pure-Rust provider, cut down to what the site offers: TLS 1.3 suites only.
pub fn provider() -> CryptoProvider {
    let mut provider = rustls_rustcrypto::provider();
    provider.cipher_suites.retain(|suite| suite.tls13().is_some());
    provider
}
