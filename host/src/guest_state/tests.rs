//! Tests of `guest_state.rs`.

use super::*;
use crate::crypto::CERTIFICATE_VERIFY_PREFIX;
use crate::tickets::TICKET_KEY_ROTATION;
use rustls::SignatureScheme;
use tls_site_shared::crypto_bounds::OverBound;
use wit::Host as _;

/// A guest's state serving with one certificate whose leaf key is `key`, and the leaf.
fn serving_with(label: &str, key: rcgen::KeyPair) -> (GuestState, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("tls-site-sign-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    crate::certs::dev_certs_with_key(&dir, &["tls-site.localhost".into()], key).unwrap();
    let certificates = crate::certs::load_dir(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let keys = Arc::new(Keys::load(&certificates).unwrap());
    let tickets = Arc::new(TicketKeys::new(TICKET_KEY_ROTATION));
    let leaf = certificates[0].chain[0].clone();
    (GuestState::serving(4 << 20, keys, tickets), leaf)
}

/// Whether `signature` is `scheme`'s over `message` by the key of the certificate `leaf`, as a
/// client checks it: its public key, with rustls's ring verifiers for the scheme.
fn verifies(leaf: &[u8], scheme: SignatureScheme, message: &[u8], signature: &[u8]) -> bool {
    let leaf = rustls_pki_types::CertificateDer::from(leaf);
    let certificate = webpki::EndEntityCert::try_from(&leaf).unwrap();
    rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .mapping
        .iter()
        .filter(|(each, _)| *each == scheme)
        .flat_map(|(_, algorithms)| algorithms.iter())
        .any(|algorithm| {
            certificate
                .verify_signature(*algorithm, message, signature)
                .is_ok()
        })
}

/// A signature on a fresh connection of `guest`.
fn sign(guest: &mut GuestState, scheme: u16, asked: &[u8]) -> Result<Vec<u8>, wit::CryptoError> {
    guest.held.bounds.new_connection();
    guest
        .sign_certificate_verify(0, scheme, asked.to_vec())
        .unwrap()
}

/// Whatever a guest asks the host to sign, with a key of any kind and any scheme, the
/// signature it gets verifies only as a TLS 1.3 server CertificateVerify over the hash it
/// gave: not over the bytes it asked for, not as a client's CertificateVerify. What is not a
/// transcript hash is refused, and so is every scheme TLS 1.3 does not sign with.
#[test]
fn a_guest_gets_only_tls13_server_certificate_verify_signatures() {
    let client_prefix = [&[0x20; 64][..], b"TLS 1.3, client CertificateVerify\0"].concat();
    for (label, key) in client::every_kind_of_key() {
        let (mut guest, leaf) = serving_with(label, key);
        let schemes = guest.signature_schemes(0).unwrap();
        assert!(!schemes.is_empty(), "{label}");
        for &scheme in &schemes {
            let named = SignatureScheme::from(scheme);
            let hashes: [&[u8]; 2] = [&[0x5a; 32], &[0xa5; 48]];
            for hash in hashes {
                let signature = sign(&mut guest, scheme, hash).unwrap();
                let signed = [&CERTIFICATE_VERIFY_PREFIX[..], hash].concat();
                assert!(
                    verifies(&leaf, named, &signed, &signature),
                    "{label} {named:?}"
                );
                assert!(
                    !verifies(&leaf, named, hash, &signature),
                    "{label} {named:?}: verifies over the raw bytes asked"
                );
                let as_client = [&client_prefix[..], hash].concat();
                assert!(
                    !verifies(&leaf, named, &as_client, &signature),
                    "{label} {named:?}: verifies as a client's CertificateVerify"
                );
            }
            // Nothing, a hash of no TLS 1.3 suite, a whole CertificateVerify content (what
            // the host used to take), a TLS 1.2 ServerKeyExchange's signed bytes.
            let whole = [&CERTIFICATE_VERIFY_PREFIX[..], &[0x5a; 32]].concat();
            let not_hashes: [&[u8]; 7] = [
                &[],
                &[1; 20],
                &[1; 31],
                &[1; 33],
                &[1; 64],
                &whole,
                &[3; 133],
            ];
            for asked in not_hashes {
                assert!(
                    matches!(
                        sign(&mut guest, scheme, asked),
                        Err(wit::CryptoError::Rejected(_))
                    ),
                    "{label} {named:?}: {} bytes signed",
                    asked.len()
                );
            }
        }
        use SignatureScheme::*;
        for refused in [
            RSA_PKCS1_SHA256,
            RSA_PKCS1_SHA384,
            RSA_PKCS1_SHA512,
            RSA_PKCS1_SHA1,
            ECDSA_SHA1_Legacy,
            ECDSA_NISTP521_SHA512,
        ] {
            assert!(
                !schemes.contains(&u16::from(refused)),
                "{label} {refused:?}"
            );
            assert!(
                matches!(
                    sign(&mut guest, u16::from(refused), &[0x5a; 32]),
                    Err(wit::CryptoError::Unsupported(_))
                ),
                "{label} {refused:?}"
            );
        }
    }
}

/// A handshake signs once: a second signature on one connection traps the guest, and the
/// error says why.
#[test]
fn a_second_signature_on_one_connection_traps() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (mut guest, _) = serving_with("twice", key);
    let scheme = u16::from(SignatureScheme::ECDSA_NISTP256_SHA256);
    assert!(sign(&mut guest, scheme, &[0x5a; 32]).is_ok());
    let trap = guest
        .sign_certificate_verify(0, scheme, vec![0x5a; 32])
        .unwrap_err();
    assert!(
        matches!(
            trap.downcast_ref::<OverBound>(),
            Some(OverBound::Signatures)
        ),
        "{trap:#}"
    );
}
