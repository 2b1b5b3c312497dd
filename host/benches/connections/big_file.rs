//! `--big-file MB`: a paper of MB megabytes (a site variant, variant.rs) fetched whole, over and
//! over: MB/s on one core, tls-site beside nginx (the same bytes, certificate and suite), and the
//! server's memory while `--downloaders` clients (1, 10 and 50) download it at once.

use super::idle::{TreeMemory, memory_tree};
use super::{
    Expected, Options, Server, check_body, check_head, die, fetch, fetch_into, ticks_per_second,
    under_load,
};
use rustls::ClientConfig;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// How often the server's memory is read while clients download.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// One server's figures.
pub struct BigFileRow {
    server: &'static str,
    /// Body bytes downloaded, seconds and server CPU seconds, over all rounds.
    load: (u64, f64, f64),
    memory: Vec<AtOnce>,
}

/// `clients` downloading the file at once: the server's memory before and at its peak.
struct AtOnce {
    clients: usize,
    before: TreeMemory,
    peak: TreeMemory,
    seconds: f64,
}

/// The rounds of downloads (interleaved, as the other rows'), then the downloads at once, for
/// every server; `expected[1]` of each is the big file.
pub fn measure(
    servers: &mut [Server],
    client: &Arc<ClientConfig>,
    options: &Options,
) -> Vec<BigFileRow> {
    for server in servers.iter_mut() {
        let expect = &mut server.expected[1];
        let (_, body, _) = fetch(server.addr, client, expect)
            .unwrap_or_else(|e| die(&format!("{}: {e}", server.name)));
        expect.body = Some(Arc::new(body));
    }
    let mut rows: Vec<BigFileRow> = servers
        .iter()
        .map(|server| BigFileRow {
            server: server.name,
            load: (0, 0.0, 0.0),
            memory: Vec::new(),
        })
        .collect();
    for round in 0..options.rounds {
        for (server, row) in servers.iter().zip(&mut rows) {
            let (bytes, seconds, cpu) = load(server, client, options);
            eprintln!(
                "round {}/{}: {}: {:.0} MB in {seconds:.1} s, server CPU {cpu:.2} s",
                round + 1,
                options.rounds,
                server.name,
                bytes as f64 / 1e6
            );
            row.load = (row.load.0 + bytes, row.load.1 + seconds, row.load.2 + cpu);
        }
    }
    for (server, row) in servers.iter().zip(&mut rows) {
        for &clients in &options.downloaders {
            let at_once = at_once(server, client, clients);
            eprintln!(
                "{}: {clients} at once in {:.1} s, resident {:.1} → {:.1} MiB, proportional {:.1} → {:.1} MiB",
                server.name,
                at_once.seconds,
                mib(at_once.before.resident),
                mib(at_once.peak.resident),
                mib(at_once.before.proportional),
                mib(at_once.peak.proportional),
            );
            row.memory.push(at_once);
        }
    }
    rows
}

/// `--threads` clients downloading the file one download after another for `--seconds`: body
/// bytes, seconds until the last download ended, and the server's CPU seconds meanwhile.
fn load(server: &Server, client: &Arc<ClientConfig>, options: &Options) -> (u64, f64, f64) {
    let ([bytes, _], seconds, ticks) =
        under_load(server, client, &server.expected[1], options, |a, c, e| {
            Ok([download(a, c, e)?, 0])
        });
    (bytes, seconds, ticks as f64 / ticks_per_second())
}

/// `clients` downloads started together, the server's memory read every `SAMPLE_EVERY` until
/// the last has ended.
fn at_once(server: &Server, client: &Arc<ClientConfig>, clients: usize) -> AtOnce {
    let (pid, expect) = (server.child.id(), &server.expected[1]);
    let before = memory_tree(pid);
    let start = Arc::new(Barrier::new(clients + 1));
    let downloads: Vec<_> = (0..clients)
        .map(|_| {
            let (start, client, expect, addr) =
                (start.clone(), client.clone(), expect.clone(), server.addr);
            std::thread::spawn(move || {
                start.wait();
                download(addr, &client, &expect)
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    let mut peak = before;
    while downloads.iter().any(|d| !d.is_finished()) {
        let now = memory_tree(pid);
        peak.resident = peak.resident.max(now.resident);
        peak.proportional = peak.proportional.max(now.proportional);
        peak.images = peak.images.max(now.images);
        std::thread::sleep(SAMPLE_EVERY);
    }
    let seconds = started.elapsed().as_secs_f64();
    for download in downloads {
        download
            .join()
            .unwrap()
            .unwrap_or_else(|e| die(&format!("{}, {clients} at once: {e}", server.name)));
    }
    AtOnce {
        clients,
        before,
        peak,
        seconds,
    }
}

/// One GET of `expect`, the body checked as it comes in rather than kept (it may be tens of
/// MB): against `expect.body` if it is known, else its digest. Returns the body's length once
/// the server's close_notify has come.
pub fn download(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    expect: &Expected,
) -> Result<u64, String> {
    let (mut head, mut body, mut digest) = (Vec::new(), None, Sha256::new());
    let mut take = |length: &mut usize, bytes: &[u8]| {
        match &expect.body {
            Some(known) if known.get(*length..*length + bytes.len()) != Some(bytes) => {
                return Err(format!("{}: body differs at {length}", expect.host));
            }
            Some(_) => {}
            None => digest.update(bytes),
        }
        *length += bytes.len();
        Ok(())
    };
    fetch_into(addr, &expect.host, client, &mut |bytes| {
        match &mut body {
            Some(length) => take(length, bytes)?,
            None => {
                head.extend_from_slice(bytes);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    let rest = head.split_off(end + 4);
                    check_head(&head[..end], expect)?;
                    let mut length = 0;
                    take(&mut length, &rest)?;
                    body = Some(length);
                }
            }
        }
        Ok(())
    })?;
    let length = body.ok_or("no end of head")?;
    match &expect.body {
        Some(known) if length != known.len() => {
            return Err(format!("{}: body of {length} bytes", expect.host));
        }
        Some(_) => {}
        None => check_body(length, digest.finalize().as_slice(), expect)?,
    }
    Ok(length as u64)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

pub fn print_tables(rows: &[BigFileRow], options: &Options, file_bytes: usize) {
    let nginx = rows.iter().find(|r| r.server == "nginx");
    let per_cpu = |row: &BigFileRow| row.load.0 as f64 / 1e6 / row.load.2;
    println!(
        "\n| server | MB/s | server CPU busy | MB per server CPU second | ÷ nginx |\n|---|---:|---:|---:|---:|"
    );
    for row in rows {
        let ratio = nginx.map_or("-".to_owned(), |n| {
            format!("{:.2}", per_cpu(row) / per_cpu(n))
        });
        println!(
            "| {} | {:.0} | {:.0} % | {:.0} | {ratio} |",
            row.server,
            row.load.0 as f64 / 1e6 / row.load.1,
            100.0 * row.load.2 / row.load.1,
            per_cpu(row),
        );
    }
    println!(
        "\n{} rounds of {} s per server, {} clients each downloading the {:.1} MB file again and again; the server on one core.",
        options.rounds,
        options.seconds,
        options.threads,
        file_bytes as f64 / 1e6
    );
    println!(
        "\n| server | downloading at once | seconds for all | resident before MiB | resident peak MiB | proportional (PSS) before MiB | PSS peak MiB | memory images MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        for at_once in &row.memory {
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                row.server,
                at_once.clients,
                at_once.seconds,
                mib(at_once.before.resident),
                mib(at_once.peak.resident),
                mib(at_once.before.proportional),
                mib(at_once.peak.proportional),
                mib(at_once.peak.images),
            );
        }
    }
    println!(
        "\nMemory of the server and its children, read every {} ms while the clients downloaded the file once each, started together.",
        SAMPLE_EVERY.as_millis()
    );
}
