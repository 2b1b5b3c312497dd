//! TLS policy, all in one function (`make_config`), and the SNI table: for every host name of the
//! site, the certificate that covers it and the response, built once at initialisation.

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{NoServerSessionStorage, ProducesTickets};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{CipherSuite, NamedGroup};
use site::{Response, Site};
use std::sync::Arc;

/// A certificate chain (leaf first), the DNS names it covers and the key that signs for it.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    /// From the leaf's subjectAltName; `*.example` covers exactly one label under `example`.
    pub names: Vec<String>,
    pub key: Arc<dyn SigningKey>,
}

/// Why the site cannot be served with the certificates given.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the private key of the certificate for {} cannot be used: {why}; give a key that matches the chain (the portable and command components sign with ECDSA P-256 or P-384 keys only)", names.join(", "))]
    BadKey { names: Vec<String>, why: String },
    #[error(
        "no certificate names the site's default host {0}, which also answers clients without SNI; add one that does (for development: `tls-site dev-certs`)"
    )]
    NoDefaultCertificate(String),
    #[error("no certificate covers {}: clients would reject the default one; add certificates that name them (for development: `tls-site dev-certs` again)", .0.join(", "))]
    UncoveredHosts(Vec<String>),
}

/// What one SNI name gets: its certificate (as configurations that serve it) and its response.
#[derive(Clone)]
pub struct Entry {
    pub certificate: Arc<CertifiedKey>,
    /// In our order of cipher suites: for most clients.
    ours: Configs,
    /// In the client's order: for a client that lists ChaCha20-Poly1305 first.
    clients: Configs,
    pub response: &'static Response,
}

impl Entry {
    /// The configuration for a client that offers `suites` and sent key shares for `shares`.
    ///
    /// Its cipher suite: ours first (`SuiteOrder`), unless the client's first TLS 1.3 suite is
    /// ChaCha20-Poly1305, which says it has no AES in hardware; then the client's order.
    ///
    /// Its group: the first of ours the client sent a share for, alone, so that rustls takes that
    /// group. rustls itself takes the first group of the client's `supported_groups` that it has,
    /// and asks for a retry if the client sent no share for that one; so a client that lists
    /// X25519MLKEM768 first but sends only an X25519 share would pay a round trip, and one that
    /// sends both would get whichever it listed first, not the hybrid group we prefer. With no
    /// usable share, the configuration with every group: it asks for a retry.
    pub fn config_for(&self, suites: &[CipherSuite], shares: &[NamedGroup]) -> &Arc<ServerConfig> {
        let configs = if prefers_chacha20(suites) {
            &self.clients
        } else {
            &self.ours
        };
        let usable = configs
            .by_group
            .iter()
            .find(|(group, _)| shares.contains(group));
        usable.map_or(&configs.every_group, |(_, config)| config)
    }
}

/// One certificate's configurations in one order of cipher suites.
#[derive(Clone)]
struct Configs {
    /// With every key-exchange group: for a client that sent no key share we can use.
    every_group: Arc<ServerConfig>,
    /// The same with one group each, ours in order of preference (see `Entry::config_for`).
    by_group: Arc<[(NamedGroup, Arc<ServerConfig>)]>,
}

impl Configs {
    fn new(
        certificate: &Arc<CertifiedKey>,
        provider: &CryptoProvider,
        ticketer: &Option<Arc<dyn ProducesTickets>>,
        order: SuiteOrder,
    ) -> Configs {
        let mut provider = provider.clone();
        if order == SuiteOrder::Ours {
            provider.cipher_suites.sort_by_key(|suite| {
                OUR_SUITES
                    .iter()
                    .position(|&ours| ours == suite.suite())
                    .unwrap_or(OUR_SUITES.len())
            });
        }
        let by_group = provider
            .kx_groups
            .iter()
            .map(|&group| {
                let alone = Arc::new(CryptoProvider {
                    kx_groups: vec![group],
                    ..provider.clone()
                });
                (
                    group.name(),
                    make_config(certificate.clone(), alone, ticketer.clone(), order),
                )
            })
            .collect();
        Configs {
            every_group: make_config(
                certificate.clone(),
                Arc::new(provider),
                ticketer.clone(),
                order,
            ),
            by_group,
        }
    }
}

/// Whose order of cipher suites a connection goes by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuiteOrder {
    /// `OUR_SUITES`, whatever the client prefers.
    Ours,
    /// The client's.
    Clients,
}

/// Our order of TLS 1.3 suites. AES-128-GCM first: its key schedule's SHA-256 is in hardware on
/// current x86 and ARM CPUs, where SHA-384 is not on many (a handshake costs the host about 20 µs
/// less, docs/performance.md), and 128-bit security is what X25519 and P-256 give the connection
/// anyway. Go's crypto/tls orders them the same way.
const OUR_SUITES: [CipherSuite; 3] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
];

/// A TLS 1.3 suite (RFC 8446, B.4) of a provider's hash, HKDF and AEAD, for both of this crate's
/// providers. Confidentiality limits as rustls's own providers set them (RFC 8446, 5.5; AES-GCM
/// after RFC 9001's analysis; none for ChaCha20-Poly1305).
pub(crate) const fn tls13_suite(
    suite: CipherSuite,
    hash_provider: &'static dyn rustls::crypto::hash::Hash,
    hkdf_provider: &'static dyn rustls::crypto::tls13::Hkdf,
    aead_alg: &'static dyn rustls::crypto::cipher::Tls13AeadAlgorithm,
) -> rustls::Tls13CipherSuite {
    let confidentiality_limit = match suite {
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => u64::MAX,
        _ => 1 << 24,
    };
    rustls::Tls13CipherSuite {
        common: rustls::CipherSuiteCommon {
            suite,
            hash_provider,
            confidentiality_limit,
        },
        hkdf_provider,
        aead_alg,
        quic: None,
    }
}

/// Whether the first TLS 1.3 suite a client offers is ChaCha20-Poly1305: clients list it first
/// when they lack AES instructions, and software AES is slow and hard to make constant-time, so
/// they get it (as from Go's crypto/tls, and OpenSSL's `PrioritizeChaCha`).
fn prefers_chacha20(suites: &[CipherSuite]) -> bool {
    suites.iter().find(|suite| OUR_SUITES.contains(suite))
        == Some(&CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
}

/// Every host name of the site with its [`Entry`]; no SNI and unknown names get the default
/// host's. The one lookup a connection makes decides both its certificate and its response.
pub struct SniTable {
    by_host: Vec<(&'static str, Entry)>,
    /// Index into `by_host` of the site's default host.
    default: usize,
}

impl SniTable {
    /// Matches every host name of `site` with the certificate that covers it (an exact name before
    /// a wildcard), and makes one configuration per certificate with `provider` and `ticketer`.
    pub fn new(
        site: &'static Site,
        identities: Vec<Identity>,
        provider: Arc<CryptoProvider>,
        ticketer: Option<Arc<dyn ProducesTickets>>,
    ) -> Result<SniTable, ConfigError> {
        let covering = |host: &str| {
            let exact = identities
                .iter()
                .position(|id| id.names.iter().any(|name| name.eq_ignore_ascii_case(host)));
            exact.or_else(|| {
                identities
                    .iter()
                    .position(|id| id.names.iter().any(|name| wildcard_covers(name, host)))
            })
        };
        let default_host = site.default_response().hosts()[0];
        if covering(default_host).is_none() {
            return Err(ConfigError::NoDefaultCertificate(default_host.to_owned()));
        }
        let (mut covered, mut uncovered) = (Vec::new(), Vec::new());
        for response in site.responses() {
            for &host in response.hosts() {
                match covering(host) {
                    Some(index) => covered.push((host, index, response)),
                    None => uncovered.push(host.to_owned()),
                }
            }
        }
        if !uncovered.is_empty() {
            return Err(ConfigError::UncoveredHosts(uncovered));
        }

        // Record protection that can send the alerts rustls 0.23 leaves unsent (alerts.rs).
        let provider = crate::alerts::sends_unsent_alerts(Arc::unwrap_or_clone(provider));
        let served: Vec<(Arc<CertifiedKey>, Configs, Configs)> = identities
            .into_iter()
            .map(|identity| {
                let certificate = Arc::new(CertifiedKey::new(identity.chain, identity.key));
                let ours = Configs::new(&certificate, &provider, &ticketer, SuiteOrder::Ours);
                let clients = Configs::new(&certificate, &provider, &ticketer, SuiteOrder::Clients);
                (certificate, ours, clients)
            })
            .collect();
        let by_host: Vec<_> = covered
            .into_iter()
            .map(|(host, index, response)| {
                let (certificate, ours, clients) = served[index].clone();
                (
                    host,
                    Entry {
                        certificate,
                        ours,
                        clients,
                        response,
                    },
                )
            })
            .collect();
        let default = by_host
            .iter()
            .position(|(host, _)| *host == default_host)
            .expect("the default host is a host");
        Ok(SniTable { by_host, default })
    }

    /// The entry for the SNI name a client sent (case-insensitive, a trailing dot ignored).
    pub fn lookup(&self, server_name: Option<&str>) -> &Entry {
        let name = server_name.map(|name| name.strip_suffix('.').unwrap_or(name));
        let named = name.and_then(|name| {
            self.by_host
                .iter()
                .find(|(host, _)| host.eq_ignore_ascii_case(name))
        });
        &named.unwrap_or(&self.by_host[self.default]).1
    }
}

/// Whether the certificate name `*.parent` covers `host`: one label, then `parent`.
fn wildcard_covers(name: &str, host: &str) -> bool {
    let Some(parent) = name.strip_prefix("*.") else {
        return false;
    };
    host.split_once('.')
        .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent))
}

/// The server configuration for one certificate, taking cipher suites in `order` (ours are
/// `provider`'s). Panics if `provider` has no TLS 1.3 suite: both of this crate's providers have.
pub fn make_config(
    certificate: Arc<CertifiedKey>,
    provider: Arc<CryptoProvider>,
    ticketer: Option<Arc<dyn ProducesTickets>>,
    order: SuiteOrder,
) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the provider has TLS 1.3 suites")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certificate)));
    // Never h2: the prebuilt responses are HTTP/1.1 bytes.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = order == SuiteOrder::Ours;
    // The response goes out in the server's first flight, right after its Finished: the
    // content is public, so there is nothing to wait for, and the client saves a round trip.
    config.send_half_rtt_data = true;
    // Every connection gets a fresh instance, so a session cache would never be found again:
    // resumption is by stateless tickets only, sealed with keys the host shares between instances.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    match ticketer {
        // One ticket: a browser opens a few connections, each gets its own.
        Some(ticketer) => {
            config.ticketer = ticketer;
            config.send_tls13_tickets = 1;
        }
        None => config.send_tls13_tickets = 0,
    }
    Arc::new(config)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;
    use site::SITE;

    /// Every host name of the site, the default host first.
    pub(crate) fn site_hosts() -> Vec<&'static str> {
        let default = SITE.default_response().hosts()[0];
        let others = SITE
            .responses()
            .iter()
            .flat_map(|response| response.hosts().iter().copied());
        std::iter::once(default)
            .chain(others.filter(|&host| host != default))
            .collect()
    }

    fn dev_key() -> Arc<dyn SigningKey> {
        let key =
            PrivateKeyDer::from_pem_slice(include_bytes!("../../../certs/dev.key.pem")).unwrap();
        crate::portable::load_private_key(key).unwrap()
    }

    /// The development certificate (certs/dev.chain.pem), which names every host of the site.
    pub(crate) fn dev_identity() -> Identity {
        let chain = CertificateDer::pem_slice_iter(include_bytes!("../../../certs/dev.chain.pem"));
        let names = site_hosts().into_iter().map(str::to_owned).collect();
        Identity {
            chain: chain.map(Result::unwrap).collect(),
            names,
            key: dev_key(),
        }
    }

    pub(crate) fn dev_table() -> SniTable {
        table(vec![dev_identity()]).unwrap()
    }

    fn table(identities: Vec<Identity>) -> Result<SniTable, ConfigError> {
        SniTable::new(
            &SITE,
            identities,
            Arc::new(crate::portable::provider()),
            None,
        )
    }

    /// A certificate that is recognisable by its (not well-formed) chain, for `names`.
    fn fake(label: u8, names: &[&str]) -> Identity {
        let names = names.iter().map(|name| name.to_string()).collect();
        Identity {
            chain: vec![CertificateDer::from(vec![label])],
            names,
            key: dev_key(),
        }
    }

    fn chain_of(entry: &Entry) -> u8 {
        entry.certificate.cert[0].as_ref()[0]
    }

    #[test]
    fn each_host_gets_the_certificate_that_names_it_and_its_response() {
        let [default, others @ ..] = &site_hosts()[..] else {
            panic!("the site has hosts")
        };
        let table = table(vec![fake(1, &[default]), fake(2, others)]).unwrap();

        assert_eq!(chain_of(table.lookup(Some(default))), 1);
        for host in others {
            let entry = table.lookup(Some(host));
            assert_eq!(chain_of(entry), 2, "{host}");
            assert!(
                std::ptr::eq(entry.response, SITE.lookup(host).unwrap()),
                "{host}"
            );
        }
        // One configuration per certificate, shared by every name it covers.
        let (first, second) = (table.lookup(Some(others[0])), table.lookup(Some(others[1])));
        assert!(Arc::ptr_eq(
            &first.ours.every_group,
            &second.ours.every_group
        ));
        assert!(!Arc::ptr_eq(
            &first.ours.every_group,
            &table.lookup(Some(default)).ours.every_group
        ));
    }

    #[test]
    fn no_sni_and_unknown_names_get_the_default_hosts_entry() {
        let table = dev_table();
        let default = table.lookup(Some(SITE.default_response().hosts()[0]));
        for name in [None, Some("unknown.example"), Some("")] {
            let entry = table.lookup(name);
            assert!(
                std::ptr::eq(entry.response, SITE.default_response()),
                "{name:?}"
            );
            assert!(
                Arc::ptr_eq(&entry.ours.every_group, &default.ours.every_group),
                "{name:?}"
            );
        }
    }

    #[test]
    fn lookup_ignores_case_and_a_trailing_dot() {
        let table = table(vec![dev_identity(), fake(9, &[])]).unwrap();
        let paper = SITE
            .responses()
            .iter()
            .find(|response| !response.is_default())
            .unwrap();
        let host = paper.hosts()[0];
        for spelling in [host.to_uppercase(), format!("{host}.")] {
            assert!(
                std::ptr::eq(table.lookup(Some(&spelling)).response, paper),
                "{spelling}"
            );
        }
    }

    #[test]
    fn an_exact_name_wins_over_a_wildcard_which_covers_one_label() {
        let default = site_hosts()[0];
        let wildcard = format!("*.{default}");
        let below: Vec<&str> = site_hosts()
            .into_iter()
            .filter(|host| wildcard_covers(&wildcard, host))
            .collect();
        assert!(
            !below.is_empty(),
            "the site has hosts one label below {default}"
        );
        let table = table(vec![fake(1, &[&wildcard]), fake(2, &site_hosts())]).unwrap();
        for host in &below {
            assert_eq!(chain_of(table.lookup(Some(host))), 2, "{host}");
        }
        let table = self::table(vec![fake(1, &[&wildcard]), fake(2, &[default])]).unwrap();
        for host in &below {
            assert_eq!(chain_of(table.lookup(Some(host))), 1, "{host}");
        }

        assert!(wildcard_covers("*.example", "a.example"));
        assert!(wildcard_covers("*.example", "A.EXAMPLE"));
        assert!(!wildcard_covers("*.example", "example"));
        assert!(!wildcard_covers("*.example", "a.b.example"));
        assert!(!wildcard_covers("*.example", ".example"));
        assert!(!wildcard_covers("a.example", "a.example"), "not a wildcard");
    }

    #[test]
    fn hosts_no_certificate_covers_fail_naming_them() {
        let [default, others @ .., last] = &site_hosts()[..] else {
            panic!("the site has three hosts or more")
        };
        let covered: Vec<&str> = std::iter::once(*default)
            .chain(others.iter().copied())
            .collect();
        match table(vec![fake(1, &covered)]) {
            Err(ConfigError::UncoveredHosts(hosts)) => assert_eq!(hosts, [last.to_string()]),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn a_client_gets_our_first_group_it_sent_a_share_for_or_else_every_group() {
        let table = dev_table();
        let entry = table.lookup(None);
        let groups = |config: &ServerConfig| {
            config
                .crypto_provider()
                .kx_groups
                .iter()
                .map(|group| group.name())
                .collect::<Vec<_>>()
        };
        let ours = groups(&entry.ours.every_group);
        assert_eq!(
            ours,
            [
                NamedGroup::X25519MLKEM768,
                NamedGroup::X25519,
                NamedGroup::secp256r1,
                NamedGroup::secp384r1
            ],
            "ours, preferred first"
        );
        for (shares, expected) in [
            (&[NamedGroup::X25519][..], vec![NamedGroup::X25519]),
            (
                &[NamedGroup::secp384r1, NamedGroup::X25519],
                vec![NamedGroup::X25519],
            ),
            (
                &[NamedGroup::Unknown(0xfe00), NamedGroup::secp256r1],
                vec![NamedGroup::secp256r1],
            ),
            (&[NamedGroup::Unknown(0xfe00)], ours.clone()),
            (&[], ours.clone()),
        ] {
            assert_eq!(
                groups(entry.config_for(&[], shares)),
                expected,
                "shares {shares:?}"
            );
        }
    }

    #[test]
    fn a_client_gets_our_suite_order_unless_it_lists_chacha20_first() {
        use CipherSuite::*;
        let table = dev_table();
        let entry = table.lookup(None);
        let suites = |config: &ServerConfig| {
            config
                .crypto_provider()
                .cipher_suites
                .iter()
                .map(|suite| suite.suite())
                .collect::<Vec<_>>()
        };
        for (offered, ours) in [
            (
                &[
                    TLS13_AES_256_GCM_SHA384,
                    TLS13_AES_128_GCM_SHA256,
                    TLS13_CHACHA20_POLY1305_SHA256,
                ][..],
                true,
            ),
            (
                &[TLS13_AES_128_GCM_SHA256, TLS13_CHACHA20_POLY1305_SHA256],
                true,
            ),
            (
                &[
                    TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                    TLS13_AES_256_GCM_SHA384,
                    TLS13_CHACHA20_POLY1305_SHA256,
                ],
                true,
            ),
            (&[], true),
            (
                &[TLS13_CHACHA20_POLY1305_SHA256, TLS13_AES_128_GCM_SHA256],
                false,
            ),
            (
                &[
                    TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                    TLS13_CHACHA20_POLY1305_SHA256,
                    TLS13_AES_256_GCM_SHA384,
                ],
                false,
            ),
        ] {
            let config = entry.config_for(offered, &[NamedGroup::X25519]);
            assert_eq!(config.ignore_client_order, ours, "{offered:?}");
            if ours {
                assert_eq!(suites(config), OUR_SUITES, "{offered:?}");
            }
        }
    }

    #[test]
    fn no_certificate_for_the_default_host_fails_naming_it() {
        let [default, others @ ..] = &site_hosts()[..] else {
            panic!("the site has hosts")
        };
        let error = table(vec![fake(1, others), fake(2, &["other.example"])])
            .err()
            .unwrap();
        assert!(
            matches!(&error, ConfigError::NoDefaultCertificate(host) if host == default),
            "{error:?}"
        );
        assert!(error.to_string().contains(default), "{error}");
    }
}
