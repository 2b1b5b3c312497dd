//! The tls-site host: a wasmtime embedding that accepts connections and hands each HTTPS one to a
//! fresh instance of the site component, answers port 80 with a redirect, holds the keys, logs.
//!
//! A connection's path: `listener.rs` accepts it on one of its threads, `admission.rs` admits it
//! to an instance, `sandbox.rs` reads and writes it for a fresh instance, whose
//! `handler.connection` (guest/tls/src/connection.rs) does the handshake and answers with the
//! response guest/site/src/lib.rs prebuilt; `access_log.rs` writes its line. `server.rs` wires
//! these together at start.

pub mod access_log;
#[cfg(feature = "acme")]
pub mod acme;
pub mod admission;
pub mod bindings;
pub mod certs;
pub mod crypto;
#[cfg(feature = "edge")]
pub mod edge;
pub mod engine;
pub mod guest_state;
#[cfg(target_os = "linux")]
pub mod init;
pub mod inspect;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod metrics_endpoint;
pub mod options;
pub mod precompiled;
pub mod redirect;
pub mod reload;
pub mod sandbox;
pub mod server;
#[cfg(feature = "compiler")]
pub mod snapshot;
pub mod tickets;
pub mod watcher;

pub use access_log::{Event, Stats};
pub use logging::log;
pub use options::ServeOptions;
pub use server::{Server, StartError};

/// The component `cargo build` made from guest/tls, the default for every command: keyless, with
/// crypto and tickets from the host.
pub const BUILT_COMPONENT: &str = env!("TLS_SITE_COMPONENT");
/// The same component with its own pure-Rust crypto (world `tls-site-portable`).
pub const BUILT_PORTABLE_COMPONENT: &str = env!("TLS_SITE_PORTABLE_COMPONENT");
/// The edge twin `cargo build` made from guest/edge, the default for `serve-http`.
pub const BUILT_EDGE_COMPONENT: &str = env!("TLS_SITE_EDGE_COMPONENT");
