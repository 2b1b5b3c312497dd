//! How `tls-site serve` is set up: every option, its flag and its default, defined once (clap).
//! Tests and the microVM's init start from the same defaults with `ServeOptions::new`.

use crate::logging::LogFormat;
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
    /// Serve a certificate that has expired (with a warning) instead of refusing to start
    #[arg(long)]
    pub allow_expired: bool,
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
    /// Seconds a client may take, from its first bytes, to send its whole ClientHello; until its first record is whole it holds no instance
    #[arg(long, value_name = "SECONDS", default_value = "3", value_parser = seconds)]
    pub handshake_timeout: Duration,
    /// Seconds a client may leave the response untaken before it is cut off
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = seconds)]
    pub stall_timeout: Duration,
    /// Seconds one connection may take, from its first bytes to close
    #[arg(long = "timeout", value_name = "SECONDS", default_value = "10", value_parser = seconds)]
    pub connection_deadline: Duration,
    /// MiB of linear memory one guest instance may use, the site's files included (a site of
    /// S MiB of files needs S + 4)
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
    /// Session-ticket keys from FILE (80-byte keys back to back, the first seals; see
    /// docs/operations.md), shared by replicas and rotated from outside; read again on reload
    /// [default: the host's own keys, rotated every 6 hours]
    #[arg(long, value_name = "FILE")]
    pub ticket_keys: Option<PathBuf>,
    /// Seconds between looks at --certs and --ticket-keys for changes, which reload the site as
    /// SIGHUP does (a Kubernetes Secret volume's update); 0: only on SIGHUP
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = seconds)]
    pub watch: Duration,
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

/// How long a connection may take: in all, and by step.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From the first bytes to the whole ClientHello.
    pub handshake: Duration,
    /// The longest the client may leave the response untaken.
    pub stall: Duration,
    /// The whole connection, from the first bytes to close (enforced by the host, in wall-clock
    /// time for the client and as an epoch deadline for the guest's CPU).
    pub connection: Duration,
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

    /// What loading `certs` does with an expired certificate.
    pub fn expired(&self) -> crate::certs::Expired {
        match self.allow_expired {
            true => crate::certs::Expired::Serve,
            false => crate::certs::Expired::Refuse,
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

#[cfg(feature = "acme")]
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
#[cfg(feature = "acme")]
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// `tls-site serve --acme ...`
#[cfg(feature = "acme")]
#[derive(clap::Args, Clone, Debug)]
pub struct AcmeArgs {
    /// Get the certificates from an ACME CA instead of --certs (HTTP-01: the CA must reach the HTTP side on port 80)
    #[arg(long)]
    pub acme: bool,
    /// The CA: `letsencrypt`, `letsencrypt-staging` (try this first), or a directory URL
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Contact e-mail for the account (repeatable); the CA writes about expiring certificates and incidents
    #[arg(long, value_name = "EMAIL")]
    pub acme_email: Vec<String>,
    /// Agree to the CA's terms of service (required; read them first)
    #[arg(long)]
    pub acme_agree_terms: bool,
    /// Where the account key and the certificates are kept (mode 0700, files 0600)
    #[arg(long, value_name = "DIR", default_value = "acme")]
    pub acme_state: PathBuf,
    /// Trust this PEM root for the directory's HTTPS instead of the system's (for a test CA such as pebble)
    #[arg(long, value_name = "PEM")]
    pub acme_directory_ca: Option<PathBuf>,
}

#[cfg(feature = "acme")]
impl AcmeArgs {
    /// The options `--acme` asks for, or `None` without it.
    pub fn options(&self) -> Result<Option<AcmeOptions>, AcmeArgsError> {
        if !self.acme {
            return Ok(None);
        }
        let directory = match self.acme_directory.as_deref() {
            None => return Err(AcmeArgsError::NoDirectory),
            Some("letsencrypt") => LETS_ENCRYPT.to_owned(),
            Some("letsencrypt-staging") => LETS_ENCRYPT_STAGING.to_owned(),
            Some(url) if url.starts_with("https://") => url.to_owned(),
            Some(other) => return Err(AcmeArgsError::BadDirectory(other.to_owned())),
        };
        let mut options = AcmeOptions::new(directory, self.acme_state.clone());
        options.contacts = self.acme_email.clone();
        options.terms_agreed = self.acme_agree_terms;
        options.directory_ca = self.acme_directory_ca.clone();
        Ok(Some(options))
    }
}

/// How the host gets its certificates from an ACME CA.
#[cfg(feature = "acme")]
#[derive(Clone, Debug)]
pub struct AcmeOptions {
    /// The CA's directory URL.
    pub directory: String,
    /// E-mail addresses for the account.
    pub contacts: Vec<String>,
    /// The operator agreed to the CA's terms of service; no account is made without it.
    pub terms_agreed: bool,
    /// Account key and certificates, one subdirectory per CA.
    pub state_dir: PathBuf,
    /// A root for the directory's HTTPS (a test CA); `None` trusts the system's roots.
    pub directory_ca: Option<PathBuf>,
    /// The wait after a first failed order; it doubles with each further failure.
    pub first_retry_wait: Duration,
}

#[cfg(feature = "acme")]
impl AcmeOptions {
    pub fn new(directory: String, state_dir: PathBuf) -> AcmeOptions {
        AcmeOptions {
            directory,
            contacts: Vec::new(),
            terms_agreed: false,
            state_dir,
            directory_ca: None,
            first_retry_wait: Duration::from_secs(5 * 60),
        }
    }
}

/// `--acme` given with a CA that cannot be used.
#[cfg(feature = "acme")]
#[derive(Debug, thiserror::Error)]
pub enum AcmeArgsError {
    #[error(
        "--acme needs --acme-directory: `letsencrypt-staging` to try, `letsencrypt` for real, or a directory URL"
    )]
    NoDirectory,
    #[error("--acme-directory {0}: not `letsencrypt`, `letsencrypt-staging` or an https:// URL")]
    BadDirectory(String),
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
        assert_eq!(
            (options.ticket_keys, options.watch),
            (None, Duration::from_secs(5)),
            "the host's own ticket keys; certificates looked at every 5 s"
        );
        assert_eq!(options.metrics, None, "no metrics unless asked");
        assert_eq!(options.log_format, LogFormat::Text);
    }

    /// The command component (guest/command) cannot take its deadlines from this crate (it is
    /// built for wasm32, without clap); its constants must be these defaults, so a change to one
    /// side fails here until the other follows.
    #[test]
    fn the_command_components_deadlines_are_these_defaults() {
        let command = include_str!("../../guest/command/src/lib.rs");
        let constant = |name: &str| -> Duration {
            let line = command
                .lines()
                .find(|line| line.contains(&format!("pub const {name}: Duration")))
                .unwrap_or_else(|| panic!("guest/command has no deadline {name}"));
            let seconds = line.split("from_secs(").nth(1).unwrap();
            Duration::from_secs(seconds.split(')').next().unwrap().parse().unwrap())
        };
        let options = Defaults::try_parse_from(["tls-site"]).unwrap().options;
        assert_eq!(
            [
                constant("HELLO"),
                constant("HANDSHAKE"),
                constant("STALL"),
                constant("CONNECTION")
            ],
            [
                options.hello_timeout,
                options.handshake_timeout,
                options.stall_timeout,
                options.connection_deadline
            ]
        );
    }

    /// The unikernel has no flags: it runs with host/shared's defaults, which must be these.
    #[test]
    fn the_unikernels_deadlines_and_memory_are_these_defaults() {
        use tls_site_shared::defaults;
        let options = Defaults::try_parse_from(["tls-site"]).unwrap().options;
        assert_eq!(
            [
                options.hello_timeout,
                options.handshake_timeout,
                options.stall_timeout,
                options.connection_deadline
            ],
            [
                defaults::HELLO_MS,
                defaults::HANDSHAKE_MS,
                defaults::STALL_MS,
                defaults::CONNECTION_MS
            ]
            .map(Duration::from_millis)
        );
        assert_eq!(options.instance_memory, defaults::INSTANCE_MEMORY);
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

    #[cfg(feature = "acme")]
    #[test]
    fn the_cli_needs_a_directory_and_the_terms() {
        let args = |directory: Option<&str>| AcmeArgs {
            acme: true,
            acme_directory: directory.map(str::to_owned),
            acme_email: vec!["ops@example.org".into()],
            acme_agree_terms: false,
            acme_state: "acme".into(),
            acme_directory_ca: None,
        };
        assert!(matches!(
            args(None).options(),
            Err(AcmeArgsError::NoDirectory)
        ));
        assert!(matches!(
            args(Some("http://ca.test/dir")).options(),
            Err(AcmeArgsError::BadDirectory(_))
        ));
        let options = args(Some("letsencrypt")).options().unwrap().unwrap();
        assert_eq!(options.directory, LETS_ENCRYPT);
        assert!(
            !options.terms_agreed,
            "checked when the server starts, with the CA named"
        );
        let off = AcmeArgs {
            acme: false,
            ..args(None)
        };
        assert!(off.options().unwrap().is_none());
    }
}
