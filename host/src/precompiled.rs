//! The file `tls-site compile` writes, and the host's only `unsafe`: loading machine code. The
//! file is a magic line, the SHA-256 of the certificates baked into it, the SHA-256 of the rest,
//! and the rest: wasmtime's serialized component, checked whole before it is mapped executable.

use crate::certs::Certificate;
use ring::digest::{Context, SHA256, digest};
use std::io::Read as _;
use std::path::Path;
use wasmtime::Engine;
use wasmtime::component::Component;

use tls_site_shared::precompiled::{DIGEST_BYTES, MAGIC, Parts};

#[derive(Debug, thiserror::Error)]
pub enum PrecompiledError {
    #[error(
        "precompiled by another build of tls-site or for another kind of machine; make it again with this binary's `tls-site compile`: {0:#}"
    )]
    Elsewhere(wasmtime::Error),
    #[error(
        "precompiled with other certificates than these; make it again with `tls-site compile --certs` and the certificates to serve"
    )]
    OtherCertificates,
    #[error(
        "damaged, its contents are not those it was written with: a partial copy, or (in a VM) an initramfs the kernel could not unpack whole for lack of memory"
    )]
    Damaged,
}

/// Whether the file at `path` is one `tls-site compile` made.
pub fn is_precompiled(path: &Path) -> std::io::Result<bool> {
    let mut start = [0; MAGIC.len()];
    let read = std::fs::File::open(path)?.read(&mut start)?;
    Ok(start[..read] == *MAGIC)
}

/// The file's contents after its magic, if it is one.
pub use tls_site_shared::precompiled::body;

/// The whole file for `code` (wasmtime's serialized component) made with `certificates`.
pub fn file(certificates: &[Certificate], code: &[u8]) -> Vec<u8> {
    [
        MAGIC,
        &certificates_digest(certificates),
        digest(&SHA256, code).as_ref(),
        code,
    ]
    .concat()
}

/// The component in `body`, if it is whole and (when given) made with `certificates`.
pub fn load(
    engine: &Engine,
    body: &[u8],
    certificates: Option<&[Certificate]>,
) -> Result<Component, PrecompiledError> {
    let Parts {
        certificates_digest: certificates_seen,
        code_digest,
        code,
    } = tls_site_shared::precompiled::parts(body).ok_or(PrecompiledError::Damaged)?;
    if digest(&SHA256, code).as_ref() != code_digest {
        return Err(PrecompiledError::Damaged);
    }
    if certificates
        .is_some_and(|certificates| certificates_digest(certificates) != *certificates_seen)
    {
        return Err(PrecompiledError::OtherCertificates);
    }
    // SAFETY: wasmtime runs the bytes as machine code. They come from the operator's own file,
    // as trusted as this binary, written by `file` (magic and checksum checked above); wasmtime
    // itself checks its version, the target and the settings before loading.
    unsafe { Component::deserialize(engine, code) }.map_err(PrecompiledError::Elsewhere)
}

/// SHA-256 over the certificates as the guest gets them: their names and chains, in order.
fn certificates_digest(certificates: &[Certificate]) -> [u8; DIGEST_BYTES] {
    let mut digest = Context::new(&SHA256);
    // Every list and every item length-prefixed: no two different inputs give the same bytes.
    let mut update = |parts: &mut dyn ExactSizeIterator<Item = &[u8]>| {
        digest.update(&(parts.len() as u64).to_be_bytes());
        for part in parts {
            digest.update(&(part.len() as u64).to_be_bytes());
            digest.update(part);
        }
    };
    for certificate in certificates {
        update(&mut certificate.names.iter().map(String::as_bytes));
        update(&mut certificate.chain.iter().map(Vec::as_slice));
    }
    digest
        .finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest that ties a precompiled file to its certificates: what the guest sees counts
    /// (names, chains, their order), the private key does not (it never enters the file).
    #[test]
    fn the_certificates_digest_covers_what_the_guest_sees_and_only_that() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs");
        let certificates = crate::certs::load_dir(&dir).unwrap();
        let digest = certificates_digest(&certificates);
        let mut other_key = certificates.clone();
        other_key[0].private_key = b"another key".to_vec();
        assert_eq!(certificates_digest(&other_key), digest);

        let mut name_moved = certificates.clone();
        let name = name_moved[0].names.pop().unwrap();
        name_moved[0].chain.insert(0, name.into_bytes());
        assert_ne!(certificates_digest(&name_moved), digest);
        let (first, mut second) = (certificates[0].clone(), certificates[0].clone());
        second.names.truncate(1);
        let in_order = certificates_digest(&[first.clone(), second.clone()]);
        assert_ne!(in_order, digest, "one more certificate");
        assert_ne!(
            certificates_digest(&[second, first]),
            in_order,
            "the order is the guest's key ids"
        );
    }

    #[test]
    fn a_cut_or_flipped_file_is_damaged() {
        let engine = Engine::default();
        let whole = file(&[], b"code");
        let body = body(&whole).unwrap();
        assert!(matches!(
            load(&engine, &body[..body.len() - 1], None),
            Err(PrecompiledError::Damaged)
        ));
        let mut flipped = body.to_vec();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            load(&engine, &flipped, None),
            Err(PrecompiledError::Damaged)
        ));
        assert!(
            matches!(
                load(&engine, body, None),
                Err(PrecompiledError::Elsewhere(_))
            ),
            "whole, but not wasmtime's"
        );
    }
}
