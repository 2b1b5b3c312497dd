//! The layout of the file `tls-site compile` writes: a magic line, the SHA-256 of the certificates
//! baked into it, the SHA-256 of the rest, and the rest (wasmtime's serialized component). The
//! host reads it at start; the unikernel's build reads it once, to put the rest into the image.

/// The file's first bytes.
pub const MAGIC: &[u8] = b"tls-site precompiled v1\n";
/// Each digest's length (SHA-256).
pub const DIGEST_BYTES: usize = 32;

/// A file's parts, not yet checked against its digests.
pub struct Parts<'a> {
    pub certificates_digest: &'a [u8; DIGEST_BYTES],
    pub code_digest: &'a [u8; DIGEST_BYTES],
    pub code: &'a [u8],
}

/// Whether `file` starts as `tls-site compile`'s files do; its contents after the magic if so.
pub fn body(file: &[u8]) -> Option<&[u8]> {
    file.strip_prefix(MAGIC)
}

/// The parts of `body` (the file after its magic); none if it is too short to hold them.
pub fn parts(body: &[u8]) -> Option<Parts<'_>> {
    let (certificates_digest, rest) = body.split_first_chunk::<DIGEST_BYTES>()?;
    let (code_digest, code) = rest.split_first_chunk::<DIGEST_BYTES>()?;
    Some(Parts {
        certificates_digest,
        code_digest,
        code,
    })
}
