//! The site's TLS: rustls serving the site's prebuilt responses, each by the SNI name it is for.
//!
//! A library, with the tls-site component on top of it (`component.rs`, built for wasm32 only):
//!
//! - `config.rs`: the TLS policy, and the SNI table from host name to certificate and response,
//!   built once when the component initialises (the host snapshots the instance right after, so
//!   every connection starts from that state and pays for none of it);
//! - `connection.rs`: one connection, over any [`Transport`];
//! - `request.rs`: the client's request line and User-Agent, read after the response, for the log;
//! - `portable.rs`: the pure-Rust crypto provider; `host_crypto.rs`: the host's, for the component
//!   of world `tls-site` (keyless: the host signs, exchanges keys, protects records and seals
//!   tickets).
//!
//! The crypto provider is the caller's: the component passes the host's (or, with the cargo
//! feature `portable`, the pure-Rust one); natively the example, the fuzz target and the tests use
//! the pure-Rust one. The keyless component has no `portable` module and links no crypto of its
//! own. The tests run natively: `cargo test -p tls-site-guest`.

mod alerts;
pub mod config;
pub mod connection;
/// Natively always; in wasm only in the `portable` component (the keyless one links no crypto).
#[cfg(any(not(target_arch = "wasm32"), feature = "portable"))]
pub mod portable;
pub mod request;

#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component;
#[cfg(all(
    target_arch = "wasm32",
    feature = "component",
    not(feature = "portable")
))]
mod host_crypto;

pub use config::{ConfigError, Entry, Identity, SniTable, SuiteOrder, make_config};
pub use connection::{Drained, Ending, Failure, Served, Transport, serve};
pub use request::Request;
