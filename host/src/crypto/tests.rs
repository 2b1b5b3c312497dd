//! Tests of `crypto.rs`.

use super::*;
// The client's side from ring, so each group is checked against another implementation.
use rustls::crypto::ring::kx_group;

/// A key beside another certificate's chain fails at load, naming the file, not at every
/// handshake.
#[test]
fn a_key_beside_another_certificate_is_refused() {
    let dir = std::env::temp_dir().join(format!("tls-site-crypto-{}", std::process::id()));
    let (one, other) = (dir.join("one"), dir.join("other"));
    for dir in [&one, &other] {
        crate::certs::dev_certs(dir, &["a.test".to_owned()]).unwrap();
    }
    let mut mixed = crate::certs::load_dir(&one).unwrap();
    assert!(Keys::load(&mixed).is_ok());
    mixed[0].private_key = crate::certs::load_dir(&other).unwrap()[0]
        .private_key
        .clone();
    let error = Keys::load(&mixed).err().expect("refused").to_string();
    assert!(
        error.contains("dev.chain.pem") && error.contains("not the key of the certificate"),
        "{error}"
    );
}

#[test]
fn a_record_sealed_opens_once_and_not_with_another_nonce() {
    let key = RecordProtection::new(AeadAlgorithm::Aes128Gcm, &[7; 16]).unwrap();
    let sealed = key
        .seal(&[1; 12], b"aad".to_vec(), b"hello".to_vec())
        .unwrap();
    assert_eq!(
        key.open(&[1; 12], b"aad".to_vec(), sealed.clone()).unwrap(),
        b"hello"
    );
    assert!(matches!(
        key.open(&[2; 12], b"aad".to_vec(), sealed),
        Err(CryptoError::Rejected(_))
    ));
    assert!(matches!(
        RecordProtection::new(AeadAlgorithm::Aes256Gcm, &[7; 16]),
        Err(CryptoError::Unsupported(_))
    ));
}

#[test]
fn every_group_answers_a_clients_share_with_the_secret_the_client_computes() {
    for (group, client) in [
        (Group::X25519, kx_group::X25519),
        (Group::Secp256r1, kx_group::SECP256R1),
        (Group::Secp384r1, kx_group::SECP384R1),
    ] {
        let client = client.start().unwrap();
        let ours = encapsulate(group, client.pub_key()).unwrap();
        assert_eq!(
            client.complete(&ours.share).unwrap().secret_bytes(),
            ours.shared_secret,
            "{group:?}"
        );
    }
    assert!(
        matches!(
            encapsulate(Group::Secp256r1, &[4; 65]),
            Err(CryptoError::Rejected(_))
        ),
        "off the curve"
    );
}

/// As a client does it (what rustls's aws-lc-rs provider does): decapsulate the ciphertext,
/// X25519 with our public key, ML-KEM's secret first.
#[test]
fn the_hybrid_group_answers_a_clients_share_with_the_secret_the_client_computes() {
    use aws_lc_rs::kem::{Ciphertext, DecapsulationKey};
    let mlkem = DecapsulationKey::generate(&ML_KEM_768).unwrap();
    let x25519 = PrivateKey::generate(&agreement::X25519).unwrap();
    let share = [
        mlkem
            .encapsulation_key()
            .unwrap()
            .key_bytes()
            .unwrap()
            .as_ref(),
        x25519.compute_public_key().unwrap().as_ref(),
    ]
    .concat();
    assert_eq!(share.len(), 1216);

    let ours = encapsulate(Group::X25519MlKem768, &share).unwrap();

    assert_eq!(
        (ours.share.len(), ours.shared_secret.len()),
        (1088 + 32, 64)
    );
    let (ciphertext, their_x25519) = ours.share.split_at(1088);
    let mlkem_secret = mlkem.decapsulate(Ciphertext::from(ciphertext)).unwrap();
    let x25519_secret = agreement::agree(
        &x25519,
        UnparsedPublicKey::new(&agreement::X25519, their_x25519),
        (),
        |secret| Ok(secret.to_vec()),
    )
    .unwrap();
    assert_eq!(
        ours.shared_secret,
        [mlkem_secret.as_ref(), &x25519_secret].concat()
    );

    for bad in [&share[..1215], &[0xff; 1216][..]] {
        assert!(
            matches!(
                encapsulate(Group::X25519MlKem768, bad),
                Err(CryptoError::Rejected(_))
            ),
            "{} bytes",
            bad.len()
        );
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

/// FIPS 180-2, appendix B.1 and D.1 ("abc"), B.2 (two blocks), and the empty message.
#[test]
fn hashes_match_the_standards_vectors() {
    assert_eq!(
        hash(HashAlgorithm::Sha256, b"abc"),
        hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    assert_eq!(
        hash(HashAlgorithm::Sha384, b"abc"),
        hex(
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"
        )
    );
    assert_eq!(
        hash(HashAlgorithm::Sha256, b""),
        hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    let two_blocks = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_eq!(
        hash(HashAlgorithm::Sha256, two_blocks),
        hex("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    );
}

/// A running hash, fed in pieces, forked and finished, agrees with the one-step hash of the
/// same bytes at every point: what the guest's transcript relies on.
#[test]
fn a_running_hash_digests_forks_and_finishes_as_the_one_step_hash() {
    let message = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    let (first, rest) = message.split_at(20);
    for algorithm in [HashAlgorithm::Sha256, HashAlgorithm::Sha384] {
        let mut running = HashContext::new(algorithm);
        assert_eq!(
            running.digest(first),
            hash(algorithm, first),
            "{algorithm:?}"
        );
        let fork = running.fork(b"");
        assert_eq!(
            running.digest(rest),
            hash(algorithm, message),
            "{algorithm:?}"
        );
        assert_eq!(
            fork.finish(b"xyz"),
            hash(algorithm, &[first, b"xyz"].concat()),
            "{algorithm:?}: the fork goes on on its own"
        );
        assert_eq!(
            running.finish(b""),
            hash(algorithm, message),
            "{algorithm:?}"
        );
    }
}

/// RFC 4231, test cases 1, 2 and 6 (a key longer than a block).
#[test]
fn hmacs_match_rfc_4231() {
    let cases: [(&[u8], &[u8], &str, &str); 3] = [
        (
            &[0x0b; 20],
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
        ),
        (
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
        ),
        (
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
        ),
    ];
    for (key, message, sha256, sha384) in cases {
        assert_eq!(hmac(HashAlgorithm::Sha256, key, message), hex(sha256));
        assert_eq!(hmac(HashAlgorithm::Sha384, key, message), hex(sha384));
    }
}

/// RFC 5869, test case 1: HKDF-SHA256 as the guest's key schedule does it, out of HMAC
/// calls (Extract: one; Expand: one per hash-length block).
#[test]
fn hkdf_made_of_hmac_calls_matches_rfc_5869() {
    let (ikm, salt, info) = (
        [0x0b; 22],
        hex("000102030405060708090a0b0c"),
        hex("f0f1f2f3f4f5f6f7f8f9"),
    );
    let prk = hmac(HashAlgorithm::Sha256, &salt, &ikm);
    assert_eq!(
        prk,
        hex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
    );
    let t1 = hmac(HashAlgorithm::Sha256, &prk, &[&info[..], &[1]].concat());
    let t2 = hmac(
        HashAlgorithm::Sha256,
        &prk,
        &[&t1[..], &info, &[2]].concat(),
    );
    let okm = [t1, t2].concat();
    assert_eq!(
        okm[..42],
        hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    );
}
