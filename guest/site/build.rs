//! Builds the whole site at compile time: checks `assets/site.toml`, renders the page with maud,
//! lays out every response's status line and headers, digests every body, and writes it all out
//! as Rust statics whose bodies are embedded with `include_bytes_aligned!`. A mistake in the
//! manifest stops the build with a message naming the file. `TLS_SITE_MANIFEST`, if set, names
//! another manifest (the benches' big-file and big-site variants); `host/build.rs` never sets it.

#[path = "src/manifest.rs"]
mod manifest;
#[path = "src/page.rs"]
mod page;

use manifest::{Manifest, ResourceEntry};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let crate_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    println!("cargo::rerun-if-env-changed=TLS_SITE_MANIFEST");
    let path = std::env::var_os("TLS_SITE_MANIFEST")
        .map_or_else(|| crate_dir.join("../../assets/site.toml"), PathBuf::from);
    println!("cargo::rerun-if-changed={}", path.display());
    let manifest = match Manifest::load(&path) {
        Ok(manifest) => manifest,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    };
    let code = generate(&manifest, Manifest::assets_dir(&path), &out_dir);
    std::fs::write(out_dir.join("site.rs"), code).unwrap();
}

fn https_url(host: &str, port: u16) -> String {
    match port {
        443 => format!("https://{host}/"),
        port => format!("https://{host}:{port}/"),
    }
}

/// Where each resource's body comes from: a rendered page written to OUT_DIR, or an asset.
fn body_file(
    resource: &ResourceEntry,
    index: usize,
    papers: &[page::Paper],
    assets: &Path,
    out_dir: &Path,
) -> PathBuf {
    match (&resource.page, &resource.file) {
        (Some(name), _) => {
            let file = out_dir.join(format!("page-{index}-{name}.html"));
            std::fs::write(&file, page::render(name, papers)).unwrap();
            file
        }
        (_, Some(file)) => {
            let file = assets.join(file).canonicalize().unwrap();
            println!("cargo::rerun-if-changed={}", file.display());
            file
        }
        (None, None) => unreachable!("checked by Manifest::load"),
    }
}

fn generate(manifest: &Manifest, assets: &Path, out_dir: &Path) -> String {
    let papers: Vec<page::Paper> = manifest
        .resources
        .iter()
        .filter_map(|r| {
            Some(page::Paper {
                title: r.title.clone()?,
                url: https_url(&r.hosts[0], manifest.https_port),
            })
        })
        .collect();
    let mut code = String::from("static RESPONSES: &[Response] = &[\n");
    for (index, resource) in manifest.resources.iter().enumerate() {
        let file = body_file(resource, index, &papers, assets, out_dir);
        let body = std::fs::read(&file).unwrap();
        let content_type = match &resource.page {
            Some(_) => "text/html; charset=utf-8",
            None => resource.content_type.as_deref().unwrap(),
        };
        let headers = headers(content_type, body.len(), resource.page.is_some());
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        for (name, value) in headers.iter().chain([&("connection", "close".to_owned())]) {
            write!(head, "{}: {value}\r\n", header_case(name)).unwrap();
        }
        head.push_str("\r\n");
        let sha256: String = Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        writeln!(
            code,
            "    Response {{ hosts: &{:?}, content_type: {content_type:?}, headers: &{headers:?}, head: {head:?}, \
             body: include_bytes_aligned::include_bytes_aligned!(16, {:?}), sha256: {sha256:?}, is_default: {} }},",
            resource.hosts,
            file.display().to_string(),
            resource.default,
        )
        .unwrap();
    }
    code.push_str("];\n");
    code
}

/// The headers every response carries, lower-case as HTTP layers compare them.
fn headers(content_type: &str, length: usize, is_page: bool) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("content-type", content_type.to_owned()),
        ("content-length", length.to_string()),
        ("strict-transport-security", "max-age=31536000".to_owned()),
        ("x-content-type-options", "nosniff".to_owned()),
    ];
    if is_page {
        // The page needs nothing from anywhere: its style and icon are inline.
        let policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";
        headers.push(("content-security-policy", policy.to_owned()));
    }
    headers
}

/// `content-type` -> `Content-Type`: the spelling people expect to read on the wire.
fn header_case(name: &str) -> String {
    name.split('-')
        .map(|word| word[..1].to_ascii_uppercase() + &word[1..])
        .collect::<Vec<_>>()
        .join("-")
}
