//! How `tls-site serve` is set up: every option, its flag and its default, defined once (clap).
//! Tests and the microVM's init start from the same defaults with `ServeOptions::new`.

#[cfg(feature = "acme")]
use crate::acme::{AcmeArgs, AcmeOptions};
use crate::logging::LogFormat;
use crate::sandbox::Timeouts;
use clap::Parser as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Clone, Debug)]
pub struct ServeOptions {
    /// The site component, or a file `tls-site compile` made [default: the one built from guest/tls]
    #[arg(default_value = crate::BUILT_COMPONENT, hide_default_value = true)]
    pub component: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub https: SocketAddr,
    /// The port-80 side, answering 301 to https
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Serve HTTPS only
    #[arg(long, conflicts_with = "http")]
    pub no_http: bool,
    /// Directory of NAME.chain.pem + NAME.key.pem pairs
    #[arg(long, default_value = "certs")]
    pub certs: PathBuf,
    /// The HTTPS port clients see, if not the one listened on (a port forward, a load balancer), for redirects
    #[arg(long)]
    pub public_https_port: Option<u16>,
    /// Connections open at once, idle ones included; further ones wait in the listen backlog
    #[arg(long, default_value_t = 4096)]
    pub max_connections: u32,
    /// Threads serving HTTPS, each with its own listener on the address (SO_REUSEPORT) [default: one per CPU]
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub threads: Option<usize>,
    /// Connections served by a guest instance at once; the rest wait holding only a socket and a small task
    #[arg(long, default_value_t = 256)]
    pub max_instances: u32,
    /// Seconds a client may take to send its first bytes (the ClientHello); until then it holds no instance
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = seconds)]
    pub hello_timeout: Duration,
    /// Seconds a client may take, from its first bytes, to send its whole ClientHello
    #[arg(long, value_name = "SECONDS", default_value = "3", value_parser = seconds)]
    pub handshake_timeout: Duration,
    /// Seconds a client may leave the response untaken before it is cut off
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = seconds)]
    pub stall_timeout: Duration,
    /// Seconds one connection may take, from its first bytes to close
    #[arg(long = "timeout", value_name = "SECONDS", default_value = "10", value_parser = seconds)]
    pub connection_deadline: Duration,
    /// MiB of linear memory one guest instance may use
    #[arg(long, value_name = "MIB", default_value = "4", value_parser = mebibytes)]
    pub instance_memory: usize,
    /// MiB of linear memory all guest instances together may use (caps --max-instances)
    #[arg(long, value_name = "MIB", default_value = "1024", value_parser = mebibytes)]
    pub guest_memory: usize,
    /// Print a line of connection counts every SECONDS (and always at shutdown)
    #[arg(long = "stats", value_name = "SECONDS", value_parser = seconds)]
    pub stats_interval: Option<Duration>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on ADDR [default: off]; keep it on
    /// loopback or a private network (127.0.0.1:9090)
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// The log's format: `text` (a line per event, as always) or `json` (an object per line);
    /// what it shows: TLS_SITE_LOG or RUST_LOG (e.g. `warn,tls_site=info`, the default)
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Cap the kernel's send buffer per connection (SO_SNDBUF) [default: the kernel's autotuning]
    #[arg(long, value_name = "BYTES")]
    pub send_buffer: Option<usize>,
    /// Seconds between session-ticket key rotations; a ticket opens for two of them
    #[arg(long, value_name = "SECONDS", default_value = "21600", value_parser = seconds, hide = true)]
    pub ticket_key_rotation: Duration,
    #[cfg(feature = "acme")]
    #[command(flatten)]
    pub acme_args: AcmeArgs,
    /// Certificates from an ACME CA instead of `certs` (see acme.rs); `acme_args` as the CLI gave them.
    #[cfg(feature = "acme")]
    #[arg(skip)]
    pub acme: Option<AcmeOptions>,
}

/// The defaults alone, as `tls-site serve` with no arguments has them.
#[derive(clap::Parser)]
struct Defaults {
    #[command(flatten)]
    options: ServeOptions,
}

impl ServeOptions {
    /// The defaults of `tls-site serve`, for `component` with the certificates in `certs`.
    pub fn new(component: PathBuf, certs: PathBuf) -> ServeOptions {
        let defaults = Defaults::parse_from(["tls-site"]).options;
        ServeOptions {
            component,
            certs,
            ..defaults
        }
    }

    /// The port-80 side, unless HTTPS only.
    pub fn http_side(&self) -> Option<SocketAddr> {
        (!self.no_http).then_some(self.http)
    }

    /// Instances at work at once: `max_instances`, unless the total guest memory allows fewer.
    pub fn instances(&self) -> u32 {
        let affordable = self.guest_memory / self.instance_memory.max(1);
        self.max_instances
            .min(affordable.try_into().unwrap_or(u32::MAX))
            .max(1)
    }

    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            handshake: self.handshake_timeout,
            stall: self.stall_timeout,
            connection: self.connection_deadline,
        }
    }
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(0) => Err("at least 1".into()),
        Ok(n) => Ok(n),
        Err(error) => Err(format!("{error}")),
    }
}

fn seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text}: not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|error| format!("{text}: {error}"))
}

/// MiB on the command line, bytes in the options.
fn mebibytes(text: &str) -> Result<usize, String> {
    let mib: usize = text
        .parse()
        .map_err(|_| format!("{text}: not a whole number of MiB"))?;
    mib.checked_mul(1 << 20)
        .ok_or_else(|| format!("{text} MiB: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_those_the_cli_documents() {
        let options = ServeOptions::new("site.wasm".into(), "certs".into());
        assert_eq!(options.component, PathBuf::from("site.wasm"));
        assert_eq!(options.https, SocketAddr::from(([127, 0, 0, 1], 8443)));
        assert_eq!(
            options.http_side(),
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert_eq!(
            (options.hello_timeout, options.connection_deadline),
            (Duration::from_secs(5), Duration::from_secs(10))
        );
        assert_eq!(
            (options.instance_memory, options.guest_memory),
            (crate::engine::DEFAULT_INSTANCE_MEMORY, 1 << 30)
        );
        assert_eq!(
            options.instances(),
            256,
            "the instance and memory caps agree by default"
        );
        assert!(options.stats_interval.is_none());
        assert_eq!(options.threads, None, "one per CPU");
        assert_eq!(options.metrics, None, "no metrics unless asked");
        assert_eq!(options.log_format, LogFormat::Text);
    }

    #[test]
    fn seconds_and_mebibytes_parse_and_say_what_is_wrong() {
        let parsed = Defaults::try_parse_from([
            "tls-site",
            "--timeout",
            "0.5",
            "--instance-memory",
            "8",
            "--no-http",
        ])
        .unwrap()
        .options;
        assert_eq!(
            (
                parsed.connection_deadline,
                parsed.instance_memory,
                parsed.http_side()
            ),
            (Duration::from_millis(500), 8 << 20, None)
        );
        let error = Defaults::try_parse_from(["tls-site", "--hello-timeout", "soon"])
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("soon: not a number of seconds"),
            "{error}"
        );
        assert!(Defaults::try_parse_from(["tls-site", "--stall-timeout", "-1"]).is_err());
        assert_eq!(
            Defaults::try_parse_from(["tls-site", "--threads", "3"])
                .unwrap()
                .options
                .threads,
            Some(3)
        );
        let error = Defaults::try_parse_from(["tls-site", "--threads", "0"])
            .err()
            .unwrap();
        assert!(error.to_string().contains("at least 1"), "{error}");
    }
}
