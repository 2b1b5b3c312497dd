//! Turns `assets/site.toml` into Rust: a table of entries whose files are embedded with
//! `include_bytes_aligned!`. A mistake in the manifest stops the build with a message naming the file.

#[path = "src/manifest.rs"]
mod manifest;

use manifest::Manifest;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let crate_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let path = crate_dir.join("../../assets/site.toml");
    println!("cargo::rerun-if-changed={}", path.display());
    let manifest = match Manifest::load(&path) {
        Ok(manifest) => manifest,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("manifest.rs");
    std::fs::write(&out, generate(&manifest, Manifest::assets_dir(&path))).unwrap();
}

fn generate(manifest: &Manifest, assets: &Path) -> String {
    let mut code = format!("pub(crate) const HTTPS_PORT: u16 = {};\n", manifest.https_port);
    code.push_str("pub(crate) static ENTRIES: &[Entry] = &[\n");
    for resource in &manifest.resources {
        let content = match (&resource.page, &resource.file) {
            (Some(page), _) => format!("Content::Page({page:?})"),
            (_, Some(file)) => {
                let file = assets.join(file).canonicalize().unwrap();
                println!("cargo::rerun-if-changed={}", file.display());
                format!(
                    "Content::File {{ content_type: {:?}, bytes: include_bytes_aligned::include_bytes_aligned!(16, {:?}) }}",
                    resource.content_type.as_deref().unwrap(),
                    file.display().to_string(),
                )
            }
            (None, None) => unreachable!("checked by Manifest::load"),
        };
        writeln!(
            code,
            "    Entry {{ hosts: &{:?}, default: {}, title: {:?}, content: {content} }},",
            resource.hosts, resource.default, resource.title,
        )
        .unwrap();
    }
    code.push_str("];\n");
    code
}
