//! Links the unikernel with its own layout (link.ld): loaded at 1 MiB, with the PVH note. And
//! puts the site into the image: `TLS_SITE_UNIKERNEL_SITE` names a directory (host/vm/
//! build-unikernel makes it) holding `site.cwasm` (`tls-site compile --unikernel`) and the
//! private keys as `keys/NNN.key.pem` in `key-id` order. Without it the image has no site, and
//! says so when it boots.
//!
//! The file is checked here, on the build machine, against its own digest, and only wasmtime's
//! serialized component goes into the image: the image is one ELF, loaded whole, so checking it
//! again at every boot (110 ms of SHA-256 in qemu's emulated CPU) would find nothing new.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg=-T{dir}/link.ld");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-env-changed=TLS_SITE_UNIKERNEL_SITE");

    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let mut site = String::new();
    match std::env::var_os("TLS_SITE_UNIKERNEL_SITE") {
        None => site.push_str("pub static SITE: &[u8] = &[];\npub static KEYS: &[&[u8]] = &[];\n"),
        Some(bundle) => {
            let bundle = Path::new(&bundle);
            let cwasm = bundle.join("site.cwasm");
            println!("cargo:rerun-if-changed={}", cwasm.display());
            let code = Path::new(&out_dir).join("site.code");
            std::fs::write(&code, checked_code(&cwasm)).expect("writing site.code");
            writeln!(site, "pub static SITE: &[u8] = include_bytes!({code:?});").unwrap();
            let mut keys: Vec<_> = std::fs::read_dir(bundle.join("keys"))
                .expect("TLS_SITE_UNIKERNEL_SITE/keys")
                .map(|entry| entry.expect("a key file").path())
                .collect();
            keys.sort();
            site.push_str("pub static KEYS: &[&[u8]] = &[\n");
            for key in keys {
                println!("cargo:rerun-if-changed={}", key.display());
                writeln!(site, "    include_bytes!({key:?}),").unwrap();
            }
            site.push_str("];\n");
        }
    }
    std::fs::write(Path::new(&out_dir).join("site.rs"), site).expect("writing site.rs");
}

/// The serialized component in `tls-site compile`'s file at `path`, once its digest is checked.
fn checked_code(path: &Path) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    use tls_site_shared::precompiled;
    let file = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let parts = precompiled::body(&file)
        .and_then(precompiled::parts)
        .unwrap_or_else(|| {
            panic!(
                "{} is not a file of `tls-site compile --unikernel`",
                path.display()
            )
        });
    assert!(
        Sha256::digest(parts.code)[..] == parts.code_digest[..],
        "{} is damaged: its contents are not those it was written with",
        path.display()
    );
    parts.code.to_vec()
}
