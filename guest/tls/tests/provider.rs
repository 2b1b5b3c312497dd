//! Our pure-Rust provider (src/portable.rs) against independent crypto, in memory: a rustls client
//! with ring's provider handshakes with a server of ours (`make_config`, our provider, the
//! development certificate) for every suite and every group, X25519MLKEM768 with a client over
//! aws-lc-rs; and our ECDSA signatures verify with ring, ring's with ours.

#[path = "../../../tests/client.rs"]
mod client;

use ring::signature::{self as ring_signature, KeyPair as _};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, SharedSecret, SupportedKxGroup, ring as ring_provider,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{
    CipherSuite, ClientConfig, ClientConnection, ConnectionCommon, NamedGroup, RootCertStore,
    ServerConnection, SignatureScheme,
};
use std::io::{Read as _, Write as _};
use std::sync::Arc;
use tls_site_guest::{SuiteOrder, make_config, portable};

/// The development certificate names this host (certs/README.md).
const HOST: &str = "tls-site.localhost";

/// A server of ours: the site's configuration with our provider and the development key.
fn server() -> ServerConnection {
    let chain = CertificateDer::pem_slice_iter(include_bytes!("../../../certs/dev.chain.pem"))
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("../../../certs/dev.key.pem")).unwrap();
    let key = portable::load_private_key(key).unwrap();
    let certificate = Arc::new(CertifiedKey::new(chain, key));
    certificate
        .keys_match()
        .expect("our key's public key is the certificate's");
    let config = make_config(
        certificate,
        Arc::new(portable::provider()),
        None,
        SuiteOrder::Ours,
    );
    ServerConnection::new(config).unwrap()
}

/// A client with ring's crypto that offers only `suite` and `group` and trusts the development CA.
fn client(suite: CipherSuite, group: &'static dyn SupportedKxGroup) -> ClientConnection {
    let ring = ring_provider::default_provider();
    let provider = CryptoProvider {
        cipher_suites: ring
            .cipher_suites
            .iter()
            .copied()
            .filter(|offered| offered.suite() == suite)
            .collect(),
        kx_groups: vec![group],
        ..ring
    };
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(include_bytes!("../../../certs/dev-ca.pem")) {
        roots.add(ca.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ClientConnection::new(Arc::new(config), ServerName::try_from(HOST).unwrap()).unwrap()
}

/// Moves what `from` has to send to `to`, which processes it; how many bytes moved, or what
/// `to` made of them.
fn pass<From, To>(
    from: &mut ConnectionCommon<From>,
    to: &mut ConnectionCommon<To>,
) -> Result<usize, rustls::Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    let mut unread = &bytes[..];
    while !unread.is_empty() {
        to.read_tls(&mut unread).unwrap();
        to.process_new_packets()?;
    }
    Ok(bytes.len())
}

/// The handshake, through memory; the first error either side meets.
fn handshake(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
) -> Result<(), rustls::Error> {
    while client.is_handshaking() || server.is_handshaking() {
        let moved = pass(client, server)? + pass(server, client)?;
        assert!(moved > 0, "neither side has anything to send");
    }
    Ok(())
}

/// `bytes` from one side to the other, through its record protection.
fn send<From, To>(
    bytes: &[u8],
    from: &mut ConnectionCommon<From>,
    to: &mut ConnectionCommon<To>,
) -> Vec<u8> {
    from.writer().write_all(bytes).unwrap();
    pass(from, to).unwrap();
    let mut received = vec![0; bytes.len() + 1];
    let len = to.reader().read(&mut received).unwrap();
    received.truncate(len);
    received
}

/// Every suite with every group: the handshake (our key schedule, transcript hash, key exchange,
/// ECDSA signature and record protection, checked by ring's client and its Finished) and a
/// record each way.
#[test]
fn a_ring_client_and_our_server_agree_on_every_suite_and_group() {
    let groups = [
        client::X25519MLKEM768,
        ring_provider::kx_group::X25519,
        ring_provider::kx_group::SECP256R1,
        ring_provider::kx_group::SECP384R1,
    ];
    for suite in [
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ] {
        for group in groups {
            let (mut client, mut server) = (client(suite, group), server());
            handshake(&mut client, &mut server)
                .unwrap_or_else(|error| panic!("{suite:?} {:?}: {error}", group.name()));
            for side in [
                client.negotiated_cipher_suite(),
                server.negotiated_cipher_suite(),
            ] {
                assert_eq!(side.map(|s| s.suite()), Some(suite));
            }
            for side in [
                client.negotiated_key_exchange_group(),
                server.negotiated_key_exchange_group(),
            ] {
                assert_eq!(side.map(|g| g.name()), Some(group.name()), "{suite:?}");
            }
            let request = b"GET / HTTP/1.1\r\nHost: tls-site.localhost\r\n\r\n";
            assert_eq!(send(request, &mut client, &mut server), request);
            let response = vec![0x5a; 20_000];
            assert!(
                send(&response, &mut server, &mut client) == response,
                "{suite:?} {:?}",
                group.name()
            );
        }
    }
}

/// A client's key share that is not a usable key: the handshake fails with illegal_parameter
/// (rustls's answer to `InvalidKeyShare`), and the server stays sound for the next client.
#[test]
fn a_bad_key_share_is_refused_with_illegal_parameter() {
    let x25519_low_order = [0; 32];
    let mut p256_off_the_curve = [4; 65];
    p256_off_the_curve[64] = 5;
    // An ML-KEM-768 key whose coefficients are not reduced (FIPS 203 7.2's check), with a good
    // X25519 key: ring's client's.
    let ring_x25519 = ring_provider::kx_group::X25519.start().unwrap();
    let mlkem_unreduced = [&[0xff; 1184][..], ring_x25519.pub_key()].concat();
    for (group, share) in [
        (NamedGroup::X25519, &x25519_low_order[..]),
        (NamedGroup::X25519, &[9; 31][..]),
        (NamedGroup::secp256r1, &p256_off_the_curve[..]),
        // A compressed point: TLS 1.3 takes uncompressed ones only.
        (NamedGroup::secp256r1, &[2; 33][..]),
        (NamedGroup::secp384r1, &[4; 97][..]),
        (NamedGroup::X25519MLKEM768, &mlkem_unreduced[..]),
        (NamedGroup::X25519MLKEM768, &mlkem_unreduced[..1215]),
    ] {
        let bad: &'static BadShare = Box::leak(Box::new(BadShare {
            group,
            share: share.to_vec(),
        }));
        let (mut client, mut server) =
            (client(CipherSuite::TLS13_AES_128_GCM_SHA256, bad), server());
        let error = handshake(&mut client, &mut server).expect_err("a bad share is refused");
        assert_eq!(
            error,
            rustls::PeerMisbehaved::InvalidKeyShare.into(),
            "{group:?}"
        );
        let _ = pass(&mut server, &mut client);
        assert!(
            client.process_new_packets().is_err_and(|error| error
                == rustls::Error::AlertReceived(rustls::AlertDescription::IllegalParameter)),
            "{group:?}: the client gets illegal_parameter"
        );
    }
    let (mut client, mut server) = (
        client(
            CipherSuite::TLS13_AES_128_GCM_SHA256,
            ring_provider::kx_group::X25519,
        ),
        server(),
    );
    handshake(&mut client, &mut server).unwrap();
}

/// A client key share of given bytes for `group`.
#[derive(Debug)]
struct BadShare {
    group: NamedGroup,
    share: Vec<u8>,
}

impl SupportedKxGroup for BadShare {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        Ok(Box::new(BadShare {
            group: self.group,
            share: self.share.clone(),
        }))
    }

    fn name(&self) -> NamedGroup {
        self.group
    }
}

impl ActiveKeyExchange for BadShare {
    fn complete(self: Box<Self>, _: &[u8]) -> Result<SharedSecret, rustls::Error> {
        unreachable!("the server refuses the share before it answers")
    }

    fn pub_key(&self) -> &[u8] {
        &self.share
    }

    fn group(&self) -> NamedGroup {
        self.group
    }
}

/// Our ECDSA P-256 and P-384 signatures verify with ring, and our verification (webpki's, for
/// the command component's key check) takes ring's signatures and refuses one over other bytes.
#[test]
fn our_ecdsa_signatures_verify_with_ring_and_rings_with_ours() {
    let rng = ring::rand::SystemRandom::new();
    let message = b"TLS 1.3, server CertificateVerify";
    for (signing, verifying, scheme) in [
        (
            &ring_signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &ring_signature::ECDSA_P256_SHA256_ASN1,
            SignatureScheme::ECDSA_NISTP256_SHA256,
        ),
        (
            &ring_signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            &ring_signature::ECDSA_P384_SHA384_ASN1,
            SignatureScheme::ECDSA_NISTP384_SHA384,
        ),
    ] {
        let pkcs8 = ring_signature::EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
        let ring_key =
            ring_signature::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap();
        let public = ring_key.public_key().as_ref();
        let ours = portable::load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            pkcs8.as_ref().to_vec(),
        )))
        .unwrap();

        assert!(
            ours.choose_scheme(&[SignatureScheme::RSA_PSS_SHA256, SignatureScheme::ED25519])
                .is_none(),
            "{scheme:?}: a key signs with its own scheme only"
        );
        let signer = ours
            .choose_scheme(&[SignatureScheme::RSA_PSS_SHA256, scheme])
            .unwrap();
        assert_eq!(signer.scheme(), scheme);
        let signature = signer.sign(message).unwrap();
        ring_signature::UnparsedPublicKey::new(verifying, public)
            .verify(message, &signature)
            .unwrap_or_else(|_| panic!("{scheme:?}: ring refuses our signature"));

        let provider = portable::provider();
        let (_, [ours_verifies]) = provider
            .signature_verification_algorithms
            .mapping
            .iter()
            .find(|(mapped, _)| *mapped == scheme)
            .unwrap()
        else {
            panic!("{scheme:?}: one algorithm")
        };
        let ring_signature = ring_key.sign(&rng, message).unwrap();
        ours_verifies
            .verify_signature(public, message, ring_signature.as_ref())
            .unwrap_or_else(|_| panic!("{scheme:?}: we refuse ring's signature"));
        ours_verifies
            .verify_signature(public, message, &signature)
            .unwrap();
        assert!(
            ours_verifies
                .verify_signature(public, b"other bytes", ring_signature.as_ref())
                .is_err(),
            "{scheme:?}"
        );
    }
}

/// An RSA key is refused, saying what the provider takes.
#[test]
fn an_rsa_key_is_refused_naming_what_we_sign_with() {
    let rsa = PrivateKeyDer::Pkcs1(vec![0x30, 0x00].into());
    let error = portable::load_private_key(rsa).err().unwrap().to_string();
    assert!(
        error.contains("ECDSA P-256 or P-384") && error.contains("no RSA"),
        "{error}"
    );
}
