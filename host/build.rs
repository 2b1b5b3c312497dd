//! Builds the site components for wasm32-wasip2 — the TLS component (guest/tls) in both its worlds,
//! its edge twin (guest/edge) and the command component (guest/command) — so that `cargo run` and
//! `cargo test` always serve the site as it is in the tree, into `<target>/guest`. Their paths are
//! `TLS_SITE_COMPONENT` (keyless, host crypto), `TLS_SITE_PORTABLE_COMPONENT` (pure-Rust crypto),
//! `TLS_SITE_EDGE_COMPONENT` and `TLS_SITE_COMMAND_COMPONENT` (for a stock runtime's `wasmtime run`);
//! and a hostile test component, `TLS_SITE_HOSTILE_COMPONENT` (host/tests/hostile_guest).

use std::path::Path;
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    // Read when the script runs, not baked in when it was compiled: one target directory serves
    // checkouts at different paths (CI's clones), and cargo reuses the compiled script across them.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let workspace = Path::new(&manifest_dir).parent().unwrap().to_owned();
    // The guest packages, not all of guest/: guest/edge/cloudflare holds npm's install and
    // wrangler's output, which each Cloudflare test rewrites (a rebuild of the host each time).
    let guests = [
        "guest/site",
        "guest/tls",
        "guest/edge/src",
        "guest/edge/Cargo.toml",
        "guest/command",
        "guest/cert-dir",
        "host/tests/hostile_guest",
    ];
    // Relative to host/, which cargo resolves against the checkout it builds: with absolute paths,
    // a target directory shared by two checkouts (CI's clones, worktrees) would watch the files
    // of whichever checkout ran this script last and miss changes to the other's.
    for input in guests
        .into_iter()
        .chain(["wit", "assets", "Cargo.toml", "Cargo.lock"])
    {
        println!(
            "cargo::rerun-if-changed={}",
            Path::new("..").join(input).display()
        );
    }
    // Where cargo builds: CARGO_TARGET_DIR if set (CI keeps it outside the checkout, as a cache
    // that outlives the clone; a relative one is taken from the workspace), else target/. Exported
    // as TLS_SITE_TARGET_DIR for the tests that build beside it (the microVM, the container).
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), |dir| workspace.join(dir));
    println!("cargo::rustc-env=TLS_SITE_TARGET_DIR={}", target.display());
    // A target directory of its own: the outer cargo holds the lock on the main one.
    let target_dir = target.join("guest");
    // One cargo run each: the edge twin builds wit-bindgen without `std`, the TLS component with;
    // the two TLS variants differ by a feature and land on the same file name, so each is copied
    // to a name of its own once built. The command component comes last: it builds guest/tls as a
    // library, and cargo then writes that build's (empty) cdylib over tls_site_guest.wasm too.
    let release = target_dir.join(TARGET).join("release");
    for (package, features, file, variable) in [
        (
            "tls-site-guest",
            "portable",
            "tls_site_guest_portable.wasm",
            "TLS_SITE_PORTABLE_COMPONENT",
        ),
        (
            "tls-site-guest",
            "",
            "tls_site_guest_keyless.wasm",
            "TLS_SITE_COMPONENT",
        ),
        (
            "tls-site-edge",
            "",
            "tls_site_edge.wasm",
            "TLS_SITE_EDGE_COMPONENT",
        ),
        (
            "tls-site-command",
            "",
            "tls_site_command.wasm",
            "TLS_SITE_COMMAND_COMPONENT",
        ),
        (
            "tls-site-hostile-guest",
            "",
            "tls_site_hostile_guest.wasm",
            "TLS_SITE_HOSTILE_COMPONENT",
        ),
    ] {
        build(&workspace, &target_dir, package, features);
        let built = release.join(format!("{}.wasm", package.replace('-', "_")));
        let component = release.join(file);
        if built != component {
            std::fs::copy(&built, &component)
                .unwrap_or_else(|error| panic!("copying {}: {error}", built.display()));
        }
        println!("cargo::rustc-env={variable}={}", component.display());
    }
}

fn build(workspace: &Path, target_dir: &Path, package: &str, features: &str) {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()));
    cargo
        .current_dir(workspace)
        .args(["build", "--release", "-p", package, "--target", TARGET]);
    if !features.is_empty() {
        cargo.args(["--features", features]);
    }
    cargo.arg("--target-dir").arg(target_dir);
    // What cargo set for this build script must not leak into the nested build.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let inherited = (name.starts_with("CARGO_") && name != "CARGO_HOME")
            || [
                "TARGET",
                "HOST",
                "OUT_DIR",
                "OPT_LEVEL",
                "PROFILE",
                "DEBUG",
                "NUM_JOBS",
                "RUSTC",
                "RUSTDOC",
                "RUSTC_LINKER",
                "RUSTFLAGS",
                // Under `cargo clippy` the components would be built by clippy-driver, with
                // clippy's lint flags, and then again by the test build: they are built, not linted.
                "RUSTC_WORKSPACE_WRAPPER",
                "RUSTC_WRAPPER",
                "CLIPPY_ARGS",
                "CLIPPY_CONF_DIR",
                // The site built from another manifest is the benches' (guest/site/build.rs):
                // the host's components are always the site in the tree.
                "TLS_SITE_MANIFEST",
            ]
            .contains(&name.as_ref());
        if inherited {
            cargo.env_remove(name.as_ref());
        }
    }
    let status = cargo
        .status()
        .expect("cannot run cargo to build the guest components");
    if !status.success() {
        eprintln!(
            "error: building {package} failed (see above). If the target is missing: `rustup target add {TARGET}`"
        );
        std::process::exit(1);
    }
}
