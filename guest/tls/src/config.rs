//! TLS policy, all in one function: `make_config`. And the certificate table that SNI selects from.

use crate::bindings::InitError;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::ServerConfig;
use std::sync::Arc;

/// A certificate chain (DER, leaf first), the names it covers and the key that signs for it.
pub struct Identity {
    pub chain: Vec<Vec<u8>>,
    pub names: Vec<String>,
    pub key: Arc<dyn SigningKey>,
}

/// Builds the server configuration from the host's certificates. `default_host` is the site's
/// default name: the certificate that covers it is also served for no SNI and unknown names.
pub fn make_config(identities: Vec<Identity>, default_host: &str) -> Result<Arc<ServerConfig>, InitError> {
    let provider = Arc::new(crate::crypto::provider());
    let mut by_name = Vec::new();
    for identity in identities {
        let chain = identity.chain.into_iter().map(CertificateDer::from).collect();
        let certified = Arc::new(CertifiedKey::new(chain, identity.key));
        for name in identity.names {
            by_name.push((name.to_ascii_lowercase(), certified.clone()));
        }
    }
    let default = CertificateTable::find(&by_name, default_host)
        .ok_or_else(|| InitError::NoDefaultCertificate(default_host.to_owned()))?;
    let table = CertificateTable { by_name, default };

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the provider has TLS 1.3 suites")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(table));
    // Never h2: the prebuilt responses are HTTP/1.1 bytes.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The response goes out in the server's first flight, right after its Finished: the
    // content is public, so there is nothing to wait for, and the client saves a round trip.
    config.send_half_rtt_data = true;
    // Every connection gets a fresh instance, so a session cache would never be found again:
    // resumption is by stateless tickets only, sealed with keys the host shares between instances.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    match crate::crypto::ticketer() {
        // One ticket: a browser opens a few connections, each gets its own.
        Some(ticketer) => {
            config.ticketer = ticketer;
            config.send_tls13_tickets = 1;
        }
        None => config.send_tls13_tickets = 0,
    }
    Ok(Arc::new(config))
}

/// Certificates by DNS name, with the one that answers everything else.
#[derive(Debug)]
struct CertificateTable {
    by_name: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl CertificateTable {
    fn find(by_name: &[(String, Arc<CertifiedKey>)], name: &str) -> Option<Arc<CertifiedKey>> {
        by_name
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, key)| key.clone())
    }
}

impl ResolvesServerCert for CertificateTable {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello.server_name().and_then(|name| Self::find(&self.by_name, name));
        Some(named.unwrap_or_else(|| self.default.clone()))
    }
}
