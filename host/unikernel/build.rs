//! Links the unikernel with its own layout (link.ld): loaded at 1 MiB, with the PVH note. And
//! puts the site into the image: `TLS_SITE_UNIKERNEL_SITE` names a directory (host/vm/
//! build-unikernel makes it) holding `site.cwasm` (`tls-site compile --unikernel`) and the
//! private keys as `keys/NNN.key.pem` in `key-id` order. Without it the image has no site, and
//! says so when it boots.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg=-T{dir}/link.ld");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-env-changed=TLS_SITE_UNIKERNEL_SITE");

    let mut site = String::new();
    match std::env::var_os("TLS_SITE_UNIKERNEL_SITE") {
        None => site.push_str("pub static SITE: &[u8] = &[];\npub static KEYS: &[&[u8]] = &[];\n"),
        Some(bundle) => {
            let bundle = Path::new(&bundle);
            let cwasm = bundle.join("site.cwasm");
            println!("cargo:rerun-if-changed={}", cwasm.display());
            writeln!(
                site,
                "pub static SITE: &[u8] = include_bytes!({:?});",
                cwasm
            )
            .unwrap();
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
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out).join("site.rs"), site).expect("writing site.rs");
}
