//! `tls-site`: serve the site component over HTTPS, show what a component serves, or make
//! development certificates; and, as `/init` or `tls-site init`, be the whole userland of a microVM.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Instant;
use tls_site::engine::Limits;
use tls_site::inspect::{hosts_default_first, site_resources};
use tls_site::logging::LogFormat;
use tls_site::{BUILT_COMPONENT, ServeOptions, Server, certs, log};

#[derive(Parser)]
#[command(
    version,
    about = "A website served over HTTPS by a sandboxed WebAssembly component"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up: its size costs nothing
enum Command {
    /// Serve the site: HTTPS from the component, and a redirect to it on the HTTP port.
    Serve(ServeOptions),
    /// Serve the edge twin (a wasi:http proxy component) over plain HTTP, as `wasmtime serve` does.
    #[cfg(feature = "edge")]
    ServeHttp {
        /// The edge component [default: the one built from guest/edge]
        component: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 256)]
        max_connections: u32,
        /// Seconds one connection may take, from accept to close
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Print what a component (TLS or edge) serves, without serving it.
    Inspect {
        component: Option<PathBuf>,
        /// One JSON array: hosts, content_type, bytes, sha256, default
        #[arg(long)]
        json: bool,
    },
    /// Initialise the component with the certificates and compile it to machine code now, for
    /// `serve` to load in milliseconds (where compiling at start-up is slow: a small VM, a
    /// microVM in software emulation). Runs on any CPU of this architecture; the private keys
    /// are read to check them but are not in the file.
    #[cfg(feature = "compiler")]
    Compile {
        /// The site component [default: the one built from guest/tls]
        component: Option<PathBuf>,
        /// Directory of NAME.chain.pem + NAME.key.pem pairs: the certificates `serve` will use
        #[arg(long, default_value = "certs")]
        certs: PathBuf,
        /// Where to write it; `serve` takes it in place of the component
        #[arg(long, default_value = "site.cwasm")]
        out: PathBuf,
        /// Compile for the unikernel (host/unikernel, host/vm/build-unikernel) instead: its
        /// target and engine settings. `serve` cannot load that file.
        #[arg(long)]
        unikernel: bool,
    },
    /// Make a throwaway development CA and a certificate for every host name of the site.
    /// NOT for production: trust the CA only on a development machine.
    DevCerts {
        component: Option<PathBuf>,
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
    /// Be PID 1 of the microVM (host/vm/): mount, load modules, configure eth0, serve on 443 and
    /// 80, power off when done. The image runs this binary as `/init`, which means the same.
    #[cfg(target_os = "linux")]
    #[command(hide = true)]
    Init,
}

fn component_or_built(component: Option<PathBuf>) -> PathBuf {
    component.unwrap_or_else(|| PathBuf::from(BUILT_COMPONENT))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    if std::process::id() == 1 {
        // Whatever else runs in our PID namespace (`podman exec`) becomes our child when orphaned.
        tls_site::init::reap_children()?;
    }
    // The microVM's kernel starts this binary as /init; by name, so that no argument is needed.
    // Never by process id: `serve` is PID 1 in a container started without an init too.
    #[cfg(target_os = "linux")]
    if std::env::args_os()
        .next()
        .is_some_and(|arg0| std::path::Path::new(&arg0).file_name() == Some("init".as_ref()))
    {
        run_init().await;
    }
    let command = Cli::parse().command;
    tls_site::logging::init(match &command {
        Command::Serve(options) => options.log_format,
        _ => LogFormat::Text,
    })?;
    match command {
        #[cfg(target_os = "linux")]
        Command::Init => run_init().await,
        Command::Serve(options) => {
            #[cfg(feature = "acme")]
            let options = ServeOptions {
                acme: options.acme_args.options()?,
                ..options
            };
            // Installed before the slow start: PID 1 ignores a signal it has no handler for, so a
            // SIGTERM during start-up would otherwise be lost (`podman stop` would wait and kill).
            let stop = shutdown_signal()?;
            // SIGHUP's default is to end the process: caught from the start, it reloads once up.
            let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            serve(options, stop, Some(hangup)).await
        }
        #[cfg(feature = "edge")]
        Command::ServeHttp {
            component,
            addr,
            max_connections,
            timeout,
        } => {
            let component =
                component.unwrap_or_else(|| PathBuf::from(tls_site::BUILT_EDGE_COMPONENT));
            let deadline = std::time::Duration::try_from_secs_f64(timeout)
                .map_err(|error| anyhow::anyhow!("--timeout: {error}"))?;
            let stop = shutdown_signal()?;
            let server =
                tls_site::edge::EdgeServer::start(&component, addr, max_connections, deadline)
                    .await?;
            log(format_args!(
                "serving {} over HTTP on http://{} (edge twin; TLS is the platform's job)",
                component.display(),
                server.addr()
            ));
            stop.await;
            server.shutdown().await;
            log(format_args!("stopped"));
            Ok(())
        }
        Command::Inspect { component, json } => inspect(component_or_built(component), json).await,
        #[cfg(feature = "compiler")]
        Command::Compile {
            component,
            certs,
            out,
            unikernel,
        } => {
            use tls_site::sandbox::Sandbox;
            let started = Instant::now();
            let certificates = certs::load_dir(&certs)?;
            let component = component_or_built(component);
            let precompiled = if unikernel {
                Sandbox::precompile_for_unikernel(&component, &certificates).await?
            } else {
                Sandbox::precompile(&component, &certificates).await?
            };
            std::fs::write(&out, &precompiled)
                .map_err(|error| anyhow::anyhow!("writing {}: {error}", out.display()))?;
            log(format_args!(
                "wrote {} ({} bytes) in {} ms",
                out.display(),
                precompiled.len(),
                started.elapsed().as_millis()
            ));
            Ok(())
        }
        Command::DevCerts { component, out } => {
            let hosts = site_hosts(&component_or_built(component)).await?;
            for file in certs::dev_certs(&out, &hosts)? {
                println!("wrote {}", file.display());
            }
            println!(
                "Development certificates only: the CA's key was thrown away. To make curl trust them:"
            );
            println!(
                "  curl --cacert {} https://{}:8443/",
                out.join(certs::DEV_CA_FILE).display(),
                hosts[0]
            );
            Ok(())
        }
    }
}

/// Serves until `stop` resolves (it names what asked to stop), then finishes what is in flight;
/// reloads the site at each `hangup` (reload.rs).
async fn serve(
    options: ServeOptions,
    stop: impl Future<Output = &'static str>,
    hangup: Option<tokio::signal::unix::Signal>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let server = Server::start(&options).await?;
    for resource in server.resources() {
        let default = if resource.is_default {
            " (default)"
        } else {
            ""
        };
        log(format_args!(
            "serving {} {} bytes {}{default}",
            resource.hosts.join(","),
            resource.bytes,
            resource.content_type
        ));
    }
    let port = server.https_addr().port();
    let default_host = server
        .resources()
        .iter()
        .find(|r| r.is_default)
        .map(|r| r.hosts[0].as_str())
        .unwrap_or("localhost");
    log(format_args!(
        "listening on https://{} (open https://{default_host}:{port}/){}{} - ready in {} ms",
        server.https_addr(),
        server
            .http_addr()
            .map(|addr| format!(" and http://{addr}"))
            .unwrap_or_default(),
        server
            .metrics_addr()
            .map(|addr| format!(", metrics on http://{addr}/metrics"))
            .unwrap_or_default(),
        started.elapsed().as_millis(),
    ));
    let reloads = hangup.map(|mut hangup| {
        let site = server.site();
        tokio::spawn(async move {
            // A SIGHUP during a reload is kept (tokio coalesces them): one more reload after it.
            while hangup.recv().await.is_some() {
                let _ = site.reload("SIGHUP").await;
            }
        })
    });
    let why = stop.await;
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    log(format_args!(
        "shutting down ({why}): no new connections; finishing those in flight"
    ));
    let stats = server.shutdown().await;
    log(format_args!("stopped; connections: {stats}"));
    Ok(())
}

/// The microVM's PID 1: serve as init.rs prepares, then power off. Never returns: PID 1 must not
/// exit (the kernel would panic).
#[cfg(target_os = "linux")]
async fn run_init() -> ! {
    // Set up already if started as `tls-site init`; as /init, a bad TLS_SITE_LOG is only said.
    if let Err(error @ tls_site::logging::LogError::BadFilter { .. }) =
        tls_site::logging::init(LogFormat::Text)
    {
        eprintln!("log: {error}");
    }
    if std::process::id() != 1 {
        // It mounts filesystems and powers the machine off: never on a machine it does not own.
        log(format_args!(
            "error: `tls-site init` (or a binary named init) is the microVM's PID 1 and runs only as process 1; to serve, run `tls-site serve`"
        ));
        std::process::exit(2);
    }
    let served = match tls_site::init::prepare().await {
        Ok(options) => match tls_site::init::stop_requested() {
            Ok(stop) => serve(options, stop, None).await,
            Err(error) => Err(error.into()),
        },
        Err(error) => Err(error.into()),
    };
    if let Err(error) = served {
        log(format_args!("error: {error:#}"));
    }
    tls_site::init::power_off();
}

/// Installs the SIGINT and SIGTERM handlers now; the future resolves on either, naming it.
fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}

async fn site_hosts(component: &std::path::Path) -> anyhow::Result<Vec<String>> {
    Ok(hosts_default_first(
        &site_resources(component, Limits::one_off()).await?,
    ))
}

async fn inspect(component: PathBuf, json: bool) -> anyhow::Result<()> {
    let resources = site_resources(&component, Limits::one_off()).await?;
    if json {
        let listing: Vec<serde_json::Value> = resources
            .iter()
            .map(|r| {
                serde_json::json!({
                    "hosts": r.hosts, "content_type": r.content_type, "bytes": r.bytes,
                    "sha256": r.sha256, "default": r.is_default,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&listing)?);
    } else {
        for r in &resources {
            let default = if r.is_default { "  (default)" } else { "" };
            println!(
                "{:<40} {:>9} bytes  {:<26} sha256:{}{default}",
                r.hosts.join(","),
                r.bytes,
                r.content_type,
                r.sha256
            );
        }
    }
    Ok(())
}
