//! `--idle N`: what N clients that sent part of a ClientHello and wait cost each server, in
//! memory per client, and in time to first byte for the paced clients served meanwhile.

use super::{Expected, Options, Server, die, fetch};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One server's figures.
pub struct IdleRow {
    server: &'static str,
    held: usize,
    rss_before: u64,
    rss_idle: u64,
    /// First-byte p50 and p99 of the paced clients, without and with the idle ones.
    unloaded: (Duration, Duration),
    loaded: (Duration, Duration),
}

/// How long the idle clients are left before the memory is read: the servers' timers and lazy
/// allocations settle (a tenth of either server's handshake timeout for the bench, 60 s).
const SETTLE: Duration = Duration::from_secs(3);

/// The first half of a real ClientHello (rustls's, for `host`): enough to be read and held as a
/// handshake in progress by both servers, never enough to answer.
fn half_client_hello(client: &Arc<ClientConfig>, host: &str) -> Vec<u8> {
    let name = ServerName::try_from(host.to_owned()).unwrap();
    let mut tls = rustls::ClientConnection::new(client.clone(), name).unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    hello.truncate(hello.len() / 2);
    hello
}

/// The resident memory of `pid` and its children (nginx's workers), bytes.
fn resident_tree(pid: u32) -> u64 {
    memory_tree(pid).resident
}

/// The memory of a server: bytes, its process and its children (nginx's workers) together.
#[derive(Clone, Copy, Default)]
pub struct TreeMemory {
    /// Resident (`statm`): a page counts once for every mapping of it, so an image mapped by
    /// several pool slots counts several times.
    pub resident: u64,
    /// Proportional (`smaps_rollup`'s Pss): a page shared by k mappings counts 1/k in each.
    pub proportional: u64,
    /// The memory files (memfd) it holds open, whole: wasmtime's copy-on-write images of the
    /// guest's memory, which count in neither figure above until an instance maps them.
    pub images: u64,
}

pub fn memory_tree(pid: u32) -> TreeMemory {
    let resident = |pid: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * 4096)
    };
    let proportional = |pid: &str| -> u64 {
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        rollup
            .lines()
            .find_map(|line| line.strip_prefix("Pss:")?.trim().strip_suffix(" kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let tree: Vec<&str> = children.split_whitespace().collect();
    let pid = pid.to_string();
    let all = || std::iter::once(pid.as_str()).chain(tree.iter().copied());
    let images = |pid: &str| -> u64 {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return 0;
        };
        fds.filter_map(|fd| {
            let path = fd.ok()?.path();
            let target = std::fs::read_link(&path).ok()?;
            target.to_str()?.starts_with("/memfd:").then_some(())?;
            Some(std::fs::metadata(&path).ok()?.len())
        })
        .sum()
    };
    TreeMemory {
        resident: all().map(resident).sum(),
        proportional: all().map(proportional).sum(),
        images: all().map(images).sum(),
    }
}

/// Paced connections, as `measure`'s sequential phase makes them: first-byte p50 and p99.
fn paced_first_byte(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    expect: &Expected,
    options: &Options,
) -> (Duration, Duration) {
    let started = Instant::now();
    let mut first_bytes: Vec<Duration> = (0..options.sequential)
        .map(|i| {
            if options.rate > 0.0 {
                let due = started + Duration::from_secs_f64(i as f64 / options.rate);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            let (timings, ..) = fetch(addr, client, expect)
                .unwrap_or_else(|e| die(&format!("a paced client beside the idle ones: {e}")));
            timings.first_byte
        })
        .collect();
    first_bytes.sort();
    let at =
        |quantile: f64| first_bytes[((first_bytes.len() - 1) as f64 * quantile).round() as usize];
    (at(0.5), at(0.99))
}

/// For one server: paced clients alone, then `count` idle ones held open beside them.
pub fn measure_idle(
    server: &Server,
    count: usize,
    client: &Arc<ClientConfig>,
    options: &Options,
) -> IdleRow {
    let (pid, expect) = (server.child.id(), &server.expected[0]);
    let unloaded = paced_first_byte(server.addr, client, expect, options);
    let rss_before = resident_tree(pid);
    let hello = half_client_hello(client, &expect.host);
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        let mut socket = TcpStream::connect(server.addr)
            .unwrap_or_else(|e| die(&format!("{}: idle client: {e}", server.name)));
        socket.write_all(&hello).unwrap();
        idle.push(socket);
    }
    std::thread::sleep(SETTLE);
    let rss_idle = resident_tree(pid);
    let loaded = paced_first_byte(server.addr, client, expect, options);
    // Still open: a read would block (nothing came, no FIN).
    let held = idle
        .iter_mut()
        .map(|socket| {
            socket.set_nonblocking(true).unwrap();
            matches!(socket.read(&mut [0; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock)
        })
        .filter(|open| *open)
        .count();
    eprintln!(
        "{}: {held} of {count} idle clients held; resident {:.1} → {:.1} MiB",
        server.name,
        rss_before as f64 / 1048576.0,
        rss_idle as f64 / 1048576.0
    );
    IdleRow {
        server: server.name,
        held,
        rss_before,
        rss_idle,
        unloaded,
        loaded,
    }
}

pub fn print_idle_table(rows: &[IdleRow], count: usize, options: &Options) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "\n| server | idle clients held | resident before MiB | with idle MiB | KiB per idle client | first byte p50/p99 ms alone | with idle | p99 ÷ alone |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let per_client = row.rss_idle.saturating_sub(row.rss_before) as f64 / 1024.0 / count as f64;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} |",
            row.server,
            row.held,
            row.rss_before as f64 / 1048576.0,
            row.rss_idle as f64 / 1048576.0,
            per_client,
            ms(row.unloaded.0),
            ms(row.unloaded.1),
            ms(row.loaded.0),
            ms(row.loaded.1),
            ms(row.loaded.1) / ms(row.unloaded.1),
        );
    }
    println!(
        "\n{count} clients each sent half a ClientHello and waited; {} paced connections at {}/s before and beside them.",
        options.sequential, options.rate
    );
}
