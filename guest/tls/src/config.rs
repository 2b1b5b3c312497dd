//! TLS policy, all in one function: `make_config`. And the certificate table that SNI selects from.

use crate::bindings::tls_site::site::identity::{Certificate, KeyFormat};
use crate::bindings::InitError;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::sync::Arc;

/// Builds the server configuration from the host's certificates. `default_host` is the site's
/// default name: the certificate that covers it is also served for no SNI and unknown names.
pub fn make_config(
    certificates: Vec<Certificate>,
    default_host: &str,
) -> Result<Arc<ServerConfig>, InitError> {
    let provider = Arc::new(crate::crypto::provider());
    let mut by_name = Vec::new();
    for certificate in certificates {
        let key = match certificate.key_format {
            KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certificate.private_key)),
            KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(certificate.private_key)),
            KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(certificate.private_key)),
        };
        let names = certificate.names.join(", ");
        let key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|error| InitError::BadKey(format!("certificate for {names}: {error}")))?;
        let chain = certificate.chain.into_iter().map(CertificateDer::from).collect();
        let certified = Arc::new(CertifiedKey::new(chain, key));
        for name in certificate.names {
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
    // Every connection gets a fresh instance: a session cache or a ticket would never be found
    // again. Resumption comes with host-held ticket keys (see DESIGN.md).
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
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
