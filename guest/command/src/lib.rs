//! The command component: the site over HTTPS on a stock WASI 0.2 runtime (world
//! `tls-site-command` in wit/tls-site.wit), for whoever has `wasmtime run` or jco and not the
//! tls-site host.
//!
//! ```text
//! wasmtime run -S inherit-network --dir certs tls_site_command.wasm 127.0.0.1:8443
//! ```
//!
//! It reads the certificates at start-up (`certs.rs`), listens on the address it is given and
//! serves every connection in one instance, in one loop over `wasi:io/poll` (`server.rs`, wasm32
//! only), with the TLS code of the tls-site component (`tls_site_guest::connection::Connection`:
//! handshake, response by SNI, close_notify, bounded drain) and its pure-Rust crypto.
//!
//! What this gives up against the bundled host: every connection shares one instance (the host
//! gives each a fresh one, thrown away after), the private keys are inside the sandbox, the crypto
//! is wasm rather than the host's native code, and there is no resumption (no ticket keys to share).
//! No port 80 either: the 301 to https is the host's.

pub mod certs;
#[cfg(target_arch = "wasm32")]
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The deadlines, the tls-site host's defaults (host/src/options.rs).
pub mod deadlines {
    use std::time::Duration;
    /// From accept to the client's first bytes (`--hello-timeout`).
    pub const HELLO: Duration = Duration::from_secs(5);
    /// From the client's first bytes to its whole ClientHello (`--handshake-timeout`).
    pub const HANDSHAKE: Duration = Duration::from_secs(3);
    /// The longest the client may leave the response untaken (`--stall-timeout`).
    pub const STALL: Duration = Duration::from_secs(5);
    /// From accept to close, whatever the client does (`--timeout`).
    pub const CONNECTION: Duration = Duration::from_secs(10);
}

/// What the command is told: by its arguments, else its environment, else these defaults.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    /// `ADDR`, or `TLS_SITE_ADDR` [default: 127.0.0.1:8443].
    pub addr: SocketAddr,
    /// `--certs DIR`, or `TLS_SITE_CERTS` [default: certs]: the directory the runtime grants.
    pub certs: PathBuf,
    /// `--max-connections N` [default: 1024]: connections open at once; at the cap the listener is
    /// not waited on, and further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// `--allow-expired`: serve an expired certificate (with a warning) instead of refusing to start.
    pub allow_expired: bool,
}

pub const USAGE: &str = "usage: tls_site_command.wasm [ADDR] [--certs DIR] [--max-connections N] [--allow-expired]
  ADDR     where to listen (or TLS_SITE_ADDR) [default: 127.0.0.1:8443]
  --certs  the directory of NAME.chain.pem + NAME.key.pem pairs (or TLS_SITE_CERTS) [default: certs];
           the runtime must grant it: wasmtime run -S inherit-network --dir certs tls_site_command.wasm
  --allow-expired  serve an expired certificate (with a warning) instead of refusing to start";

impl Options {
    /// From the arguments (without the program's name) and the environment variable `env`.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Options, String> {
        let mut addr = env("TLS_SITE_ADDR");
        let mut certs = env("TLS_SITE_CERTS");
        let mut max_connections = None;
        let mut allow_expired = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--certs" => certs = Some(args.next().ok_or("--certs needs a directory")?),
                "--max-connections" => {
                    max_connections = Some(args.next().ok_or("--max-connections needs a number")?)
                }
                "--allow-expired" => allow_expired = true,
                "-h" | "--help" => return Err(USAGE.into()),
                flag if flag.starts_with('-') => {
                    return Err(format!("unknown option {flag}\n{USAGE}"));
                }
                _ => addr = Some(arg),
            }
        }
        let addr = addr.as_deref().unwrap_or("127.0.0.1:8443");
        let addr = addr.parse().map_err(|_| {
            format!("{addr}: not an address to listen on (IP:PORT, e.g. 127.0.0.1:8443)")
        })?;
        let max_connections = match max_connections {
            None => 1024,
            Some(n) => n
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(format!("--max-connections {n}: not a positive number"))?,
        };
        Ok(Options {
            addr,
            certs: certs.unwrap_or_else(|| "certs".into()).into(),
            max_connections,
            allow_expired,
        })
    }
}

/// Nanoseconds, as `wasi:clocks/monotonic-clock` counts.
pub fn nanos(duration: Duration) -> u64 {
    duration.as_nanos().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Options, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::parse(args.iter().map(|a| a.to_string()), |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn arguments_win_over_the_environment_which_wins_over_the_defaults() {
        let defaults = parse(&[], &[]).unwrap();
        assert_eq!(
            defaults,
            Options {
                addr: "127.0.0.1:8443".parse().unwrap(),
                certs: "certs".into(),
                max_connections: 1024,
                allow_expired: false,
            }
        );
        let env = [
            ("TLS_SITE_ADDR", "0.0.0.0:443"),
            ("TLS_SITE_CERTS", "/etc/certs"),
        ];
        let from_env = parse(&[], &env).unwrap();
        assert_eq!(
            (from_env.addr, from_env.certs),
            ("0.0.0.0:443".parse().unwrap(), "/etc/certs".into())
        );
        let from_args = parse(
            &[
                "[::1]:9443",
                "--certs",
                "c",
                "--max-connections",
                "8",
                "--allow-expired",
            ],
            &env,
        )
        .unwrap();
        assert_eq!(
            from_args,
            Options {
                addr: "[::1]:9443".parse().unwrap(),
                certs: "c".into(),
                max_connections: 8,
                allow_expired: true,
            }
        );
    }

    #[test]
    fn bad_arguments_are_explained() {
        assert!(
            parse(&["localhost:8443"], &[])
                .unwrap_err()
                .contains("localhost:8443: not an address")
        );
        assert!(
            parse(&["--max-connections", "0"], &[])
                .unwrap_err()
                .contains("not a positive number")
        );
        assert!(
            parse(&["--port", "1"], &[])
                .unwrap_err()
                .contains("unknown option --port")
        );
        assert!(
            parse(&["--certs"], &[])
                .unwrap_err()
                .contains("--certs needs")
        );
    }
}
