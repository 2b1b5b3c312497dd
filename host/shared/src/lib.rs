//! What the tls-site host (host/src) and the unikernel (host/unikernel) both do, written once
//! without std: the port-80 redirect's answer, the network settings of the kernel command line,
//! the access log's counts, the default deadlines, the precompiled site's file layout, and (feature `wasmtime`) an
//! instance's memory cap, the bounds on what it holds in the host, and the unikernel's engine
//! settings.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod command_line;
#[cfg(feature = "wasmtime")]
pub mod crypto_bounds;
pub mod defaults;
#[cfg(feature = "wasmtime")]
pub mod held;
#[cfg(feature = "wasmtime")]
pub mod memory_cap;
pub mod precompiled;
pub mod redirect;
pub mod stats;
#[cfg(feature = "wasmtime")]
pub mod unikernel_engine;
