//! The component's bindings (src/bindings/*.rs) are generated from wit/ ahead of time and checked
//! in, so that the component does not build the `wit_bindgen::generate!` macro's toolchain (a WIT
//! parser, a component encoder, syn...: 32 crates of the dependency tree). This test regenerates
//! them, as the macro would with `generate_all`, and fails if the checked-in ones differ. Refresh:
//!
//!     TLS_SITE_BLESS=1 cargo test -p tls-site-guest bindings

use std::path::Path;
use wit_bindgen_core::WorldGenerator;
use wit_bindgen_core::wit_parser::Resolve;

/// The worlds, and the files their bindings are checked in as (src/component.rs includes them).
const WORLDS: [(&str, &str); 2] = [
    ("tls-site", "src/bindings/tls_site.rs"),
    ("tls-site-portable", "src/bindings/tls_site_portable.rs"),
];

const REFRESH: &str = "TLS_SITE_BLESS=1 cargo test -p tls-site-guest bindings";

/// The bindings of `world`, as `wit_bindgen::generate!({ path: "../../wit", world, generate_all })`
/// expands to, formatted, after a header saying where they come from.
fn generate(world: &str) -> String {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(manifest.join("../../wit"))
        .expect("wit/ parses");
    let world = resolve
        .select_world(&[package], Some(world))
        .expect("the world is in wit/");
    let opts = wit_bindgen_rust::Opts {
        generate_all: true,
        format: true,
        ..Default::default()
    };
    let mut files = Default::default();
    opts.build()
        .generate(&mut resolve, world, &mut files)
        .expect("bindings generate");
    let (_, source) = files.iter().next().expect("one file");
    let source = std::str::from_utf8(source).expect("UTF-8");
    format!(
        "// @generated from wit/ (world `{name}`) by guest/tls/tests/bindings.rs, with\n\
         // wit-bindgen-rust's options for `wit_bindgen::generate!({{ path: \"../../wit\", world: \"{name}\",\n\
         // generate_all }})`. Do not edit: change the WIT and run `{REFRESH}`.\n{source}",
        name = resolve.worlds[world].name,
    )
}

#[test]
fn bindings_are_generated_from_the_wit() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("TLS_SITE_BLESS").is_some();
    let mut stale = Vec::new();
    for (world, file) in WORLDS {
        let path = manifest.join(file);
        let generated = generate(world);
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        if generated == checked_in {
            continue;
        }
        if bless {
            std::fs::write(&path, generated).expect("bindings written");
        } else {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "bindings out of date with wit/: {stale:?}; refresh them with `{REFRESH}`"
    );
}
