//! `--big-site MB`: the site with MB megabytes of papers (two generated ones, variant.rs) beside
//! the shipped one, each precompiled (`tls-site compile`) and served from that file: the time from
//! exec to the first response, the file's size, the server's memory, and the page's CPU per
//! connection, full and resumed, in interleaved rounds.

use super::big_file::download;
use super::idle::{TreeMemory, memory_tree};
use super::{
    Options, Row, die, expected_resources, free_addr, inspect, measure_rounds, run, start,
    wait_ready,
};
use rustls::ClientConfig;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// Instances at work at once on the big site: the bench's clients and room to spare.
const INSTANCES: usize = 64;

/// One site's figures, besides its rows.
struct Site {
    name: &'static str,
    /// The bytes of all its resources.
    bytes: u64,
    file_bytes: u64,
    compile_seconds: f64,
    ready_ms: f64,
    started: TreeMemory,
    loaded: TreeMemory,
}

pub fn run_big_site(
    root: &Path,
    tls_site: &Path,
    pinned: bool,
    [client, resuming]: [&Arc<ClientConfig>; 2],
    options: &Options,
    work: &Path,
) {
    let megabytes = options.big_site.unwrap();
    let bytes = (megabytes * 1e6) as usize;
    let big = super::variant::build(root, "big-site", &[bytes / 2, bytes - bytes / 2]);
    let small = PathBuf::from(env!("TLS_SITE_COMPONENT"));
    let mut servers = Vec::new();
    let mut sites = Vec::new();
    for (name, component) in [("small site", small), ("big site", big)] {
        let precompiled = work.join(format!("{}.cwasm", name.replace(' ', "-")));
        let compiling = Instant::now();
        run(Command::new(tls_site)
            .arg("compile")
            .arg(&component)
            .arg("--certs")
            .arg(root.join("certs"))
            .arg("--out")
            .arg(&precompiled));
        let compile_seconds = compiling.elapsed().as_secs_f64();
        let expected = expected_resources(tls_site, Some(&precompiled));
        let listing = inspect(tls_site, Some(&precompiled));
        let site_bytes = listing.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
        let addr = free_addr();
        let mut command = Command::new(tls_site);
        command
            .arg("serve")
            .arg(&precompiled)
            .args(["--no-http", "--certs"])
            .arg(root.join("certs"))
            .arg("--https")
            .arg(addr.to_string());
        if site_bytes > 4 << 20 {
            command.args(super::variant::serve_flags(site_bytes as usize, INSTANCES));
        }
        let exec = Instant::now();
        let mut server = start(name, pinned, &command, addr, work, &expected);
        wait_ready(&mut server, client);
        let ready_ms = exec.elapsed().as_secs_f64() * 1e3;
        let started = memory_tree(server.child.id());
        // Its paper, whole and checked: the site is all there.
        download(server.addr, client, &server.expected[1])
            .unwrap_or_else(|e| die(&format!("{name}: {e}")));
        eprintln!(
            "{name}: {} bytes precompiled in {compile_seconds:.1} s, first response {ready_ms:.0} ms after exec",
            std::fs::metadata(&precompiled).unwrap().len()
        );
        sites.push(Site {
            name,
            bytes: site_bytes,
            file_bytes: std::fs::metadata(&precompiled).unwrap().len(),
            compile_seconds,
            ready_ms,
            started,
            loaded: TreeMemory::default(),
        });
        servers.push(server);
    }
    let mut rows: Vec<Row> = (0..servers.len())
        .flat_map(|server_index| {
            [false, true].map(|resumed| Row {
                server: servers[server_index].name,
                server_index,
                expected_index: 0,
                resumed,
                host: format!("page {}", if resumed { "resumed" } else { "full" }),
                ..Row::default()
            })
        })
        .collect();
    measure_rounds(&mut rows, &servers, [client, resuming], options);
    for (site, server) in sites.iter_mut().zip(&servers) {
        site.loaded = memory_tree(server.child.id());
    }
    drop(servers);
    print_table(&sites, &rows, options);
}

fn print_table(sites: &[Site], rows: &[Row], options: &Options) {
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    let cpu = |site: &Site, resumed: bool| {
        rows.iter()
            .find(|r| r.server == site.name && r.resumed == resumed)
            .map_or(f64::NAN, Row::cpu_load_us)
    };
    println!(
        "\n| site | resources MB | .cwasm bytes | compile s | exec to first response ms | resident / PSS after start MiB | memory images MiB | after the load MiB | page full µs/conn | page resumed µs/conn |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for site in sites {
        println!(
            "| {} | {:.1} | {} | {:.1} | {:.0} | {:.1} / {:.1} | {:.1} | {:.1} / {:.1} | {:.0} | {:.0} |",
            site.name,
            site.bytes as f64 / 1e6,
            site.file_bytes,
            site.compile_seconds,
            site.ready_ms,
            mib(site.started.resident),
            mib(site.started.proportional),
            mib(site.started.images),
            mib(site.loaded.resident),
            mib(site.loaded.proportional),
            cpu(site, false),
            cpu(site, true),
        );
    }
    if let [small, big] = sites {
        println!(
            "\nPage CPU per connection, big ÷ small site: {:.3} full, {:.3} resumed; {} rounds of {} s per site and kind, {} clients.",
            cpu(big, false) / cpu(small, false),
            cpu(big, true) / cpu(small, true),
            options.rounds,
            options.seconds,
            options.threads,
        );
    }
}
