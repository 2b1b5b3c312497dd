//! The deadlines and the memory cap a connection lives under by default: `tls-site serve`'s flags'
//! defaults (host/src/options.rs checks its own against these) and the unikernel's, which has no
//! flags.

/// How long a client may stay silent before it costs an instance (`--hello-timeout`).
pub const HELLO_MS: u64 = 5_000;
/// How long the handshake may take once the ClientHello began (`--handshake-timeout`).
pub const HANDSHAKE_MS: u64 = 3_000;
/// How long a client may take none of the response (`--stall-timeout`).
pub const STALL_MS: u64 = 5_000;
/// The whole connection (`--timeout`).
pub const CONNECTION_MS: u64 = 10_000;
/// Linear memory one instance may grow to, with what it holds in the host (`--instance-memory`).
pub const INSTANCE_MEMORY: usize = 4 << 20;
