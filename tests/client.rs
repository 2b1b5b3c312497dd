//! A real rustls client for the tests: one TLS connection, one GET, the whole response.

// Shared by two test targets; each uses a different part.
#![allow(dead_code)]

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct Fetched {
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The leaf certificate the server presented.
    pub leaf: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
    pub version: Option<rustls::ProtocolVersion>,
    /// Full, or resumed with a session ticket.
    pub handshake: Option<rustls::HandshakeKind>,
    pub key_exchange: Option<rustls::NamedGroup>,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Whom the client trusts: the development CA, or (to see what the server presents for a name
/// no certificate covers) anyone.
pub enum Trust<'a> {
    Ca(&'a Path),
    Anyone,
}

pub fn config(trust: Trust<'_>, alpn: &[&[u8]]) -> ClientConfig {
    config_for_versions(trust, alpn, rustls::DEFAULT_VERSIONS)
}

pub fn config_for_versions(
    trust: Trust<'_>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> ClientConfig {
    config_with_provider(
        trust,
        alpn,
        versions,
        rustls::crypto::ring::default_provider(),
    )
}

/// A client that offers only the key-exchange groups `groups`.
pub fn config_for_groups(
    trust: Trust<'_>,
    groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
) -> ClientConfig {
    let provider = rustls::crypto::CryptoProvider {
        kx_groups: groups,
        ..rustls::crypto::ring::default_provider()
    };
    config_with_provider(trust, &[], rustls::DEFAULT_VERSIONS, provider)
}

/// A client that offers only the TLS 1.3 suite `suite`: a handshake that succeeds used it.
pub fn config_for_suite(trust: Trust<'_>, suite: rustls::SupportedCipherSuite) -> ClientConfig {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite],
        ..rustls::crypto::ring::default_provider()
    };
    config_with_provider(trust, &[], &[&rustls::version::TLS13], provider)
}

/// A leaf key of each kind the host signs with, named: ECDSA P-256 and P-384, Ed25519, RSA (made
/// by `openssl genpkey`: rcgen with ring cannot make one).
pub fn every_kind_of_key() -> [(&'static str, rcgen::KeyPair); 4] {
    let rsa = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl makes the RSA key");
    let rsa = String::from_utf8(rsa.stdout).unwrap();
    [
        (
            "ecdsa-p256",
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        ),
        (
            "ecdsa-p384",
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
        ),
        (
            "ed25519",
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        ),
        (
            "rsa",
            rcgen::KeyPair::from_pem_and_sign_algo(&rsa, &rcgen::PKCS_RSA_SHA256).unwrap(),
        ),
    ]
}

fn config_with_provider(
    trust: Trust<'_>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
    provider: rustls::crypto::CryptoProvider,
) -> ClientConfig {
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap();
    let mut config = match trust {
        Trust::Ca(ca) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_file(ca).unwrap())
                .unwrap();
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Anyone => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Connects to `addr`, sends SNI `sni` (or none), asks for `/` and reads until the server closes.
pub fn fetch(
    addr: SocketAddr,
    name: &str,
    send_sni: bool,
    mut config: ClientConfig,
) -> Result<Fetched, String> {
    config.enable_sni = send_sni;
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let connection =
        rustls::ClientConnection::new(Arc::new(config), server_name).map_err(|e| e.to_string())?;
    let socket = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\nUser-Agent: tls-site-test\r\n\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // Ends cleanly only on close_notify: a reset or a bare close is an error here.
    tls.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of head")?;
    let head = String::from_utf8(response[..split].to_vec()).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Ok(Fetched {
        status_line,
        headers,
        body: response[split + 4..].to_vec(),
        leaf: tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default(),
        alpn: tls.conn.alpn_protocol().map(<[u8]>::to_vec),
        version: tls.conn.protocol_version(),
        handshake: tls.conn.handshake_kind(),
        key_exchange: tls
            .conn
            .negotiated_key_exchange_group()
            .map(|group| group.name()),
    })
}

#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The first flight of a real rustls client for `name` (with SNI and ALPN http/1.1): a
/// ClientHello record, to send by hand.
pub fn client_hello(name: &str) -> Vec<u8> {
    let config = config(Trust::Anyone, &[b"http/1.1"]);
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
    let mut hello = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut hello).unwrap();
    }
    hello
}

/// The first of two records a ClientHello for `name` is split into, the second never to come: a
/// whole record, so the host hands it to an instance, which then waits for the rest.
pub fn first_of_a_split_client_hello(name: &str) -> Vec<u8> {
    let hello = client_hello(name);
    let body = &hello[5..5 + usize::from(u16::from_be_bytes([hello[3], hello[4]]))];
    let half = &body[..body.len() / 2];
    let length = u16::try_from(half.len()).unwrap().to_be_bytes();
    [&[hello[0], hello[1], hello[2], length[0], length[1]], half].concat()
}

/// X25519MLKEM768 as a client does it (draft-ietf-tls-ecdhe-mlkem): an ML-KEM-768 key pair and an
/// X25519 one, the ciphertext decapsulated, ML-KEM's secret first. Over aws-lc-rs, which the host
/// uses for the server's side: rustls's own `aws_lc_rs` provider feature would leave rustls with
/// two providers and no process default, which instant-acme's client needs (host/Cargo.toml).
#[derive(Debug)]
pub struct X25519MlKem768;

pub static X25519MLKEM768: &dyn rustls::crypto::SupportedKxGroup = &X25519MlKem768;

impl rustls::crypto::SupportedKxGroup for X25519MlKem768 {
    fn start(&self) -> Result<Box<dyn rustls::crypto::ActiveKeyExchange>, rustls::Error> {
        use aws_lc_rs::{agreement, kem};
        let failed = |_| rustls::Error::General("aws-lc-rs: no key".into());
        let mlkem = kem::DecapsulationKey::generate(&kem::ML_KEM_768).map_err(failed)?;
        let x25519 = agreement::PrivateKey::generate(&agreement::X25519).map_err(failed)?;
        let encapsulation_key = mlkem
            .encapsulation_key()
            .map_err(failed)?
            .key_bytes()
            .map_err(failed)?;
        let share = [
            encapsulation_key.as_ref(),
            x25519.compute_public_key().map_err(failed)?.as_ref(),
        ]
        .concat();
        Ok(Box::new(HybridClientShare {
            mlkem,
            x25519,
            share,
        }))
    }

    fn name(&self) -> rustls::NamedGroup {
        rustls::NamedGroup::X25519MLKEM768
    }

    fn usable_for_version(&self, version: rustls::ProtocolVersion) -> bool {
        version == rustls::ProtocolVersion::TLSv1_3
    }
}

struct HybridClientShare {
    mlkem: aws_lc_rs::kem::DecapsulationKey<aws_lc_rs::kem::AlgorithmId>,
    x25519: aws_lc_rs::agreement::PrivateKey,
    share: Vec<u8>,
}

impl rustls::crypto::ActiveKeyExchange for HybridClientShare {
    fn complete(
        self: Box<Self>,
        server_share: &[u8],
    ) -> Result<rustls::crypto::SharedSecret, rustls::Error> {
        use aws_lc_rs::{agreement, kem};
        const CIPHERTEXT: usize = 1088;
        if server_share.len() != CIPHERTEXT + 32 {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        let (ciphertext, x25519) = server_share.split_at(CIPHERTEXT);
        let invalid = |_| rustls::Error::from(rustls::PeerMisbehaved::InvalidKeyShare);
        let mlkem = self
            .mlkem
            .decapsulate(kem::Ciphertext::from(ciphertext))
            .map_err(invalid)?;
        let x25519 = agreement::agree(
            &self.x25519,
            agreement::UnparsedPublicKey::new(&agreement::X25519, x25519),
            (),
            |secret| Ok(secret.to_vec()),
        )
        .map_err(|()| rustls::Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        Ok(rustls::crypto::SharedSecret::from(
            [mlkem.as_ref(), &x25519[..]].concat(),
        ))
    }

    fn pub_key(&self) -> &[u8] {
        &self.share
    }

    fn group(&self) -> rustls::NamedGroup {
        rustls::NamedGroup::X25519MLKEM768
    }
}
