//! Legitimate clients under attack: what a stream of garbage connections and a crowd of idle ones
//! cost the clients that came for the site, and the host's memory meanwhile.
//!
//! Starts the `tls-site` binary on loopback with fresh development certificates, then measures,
//! for `--seconds` each, the page fetched by `--clients` real rustls clients (every connection new,
//! every body checked against `tls-site inspect --json`):
//! 1. with nothing else going on;
//! 2. with `--idle` connections open that never send a byte, and `--garbage` threads each
//!    opening connection after connection that sends 2 KiB of noise instead of a ClientHello.
//!
//! It prints the clients' connections per second and failures, the garbage connections per
//! second, and the host's resident memory (now and peak, from /proc).
//!
//!     cargo bench -p tls-site --bench hostile -- [--seconds 10] [--clients 2] [--idle 1000] [--garbage 2]

#[path = "../../tests/client.rs"]
mod client;

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_tls-site");

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let option = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect(name))
    };
    let (seconds, clients, idle, garbage) = (
        option("--seconds", 10),
        option("--clients", 2),
        option("--idle", 1000),
        option("--garbage", 2),
    );
    let seconds = Duration::from_secs(seconds);

    let certs = std::env::temp_dir().join(format!("tls-site-bench-hostile-{}", std::process::id()));
    let made = Command::new(BINARY)
        .arg("dev-certs")
        .arg("--out")
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut server = Command::new(BINARY)
        .args([
            "serve",
            "--https",
            "127.0.0.1:0",
            "--no-http",
            "--hello-timeout",
            "3600",
            "--certs",
        ])
        .arg(&certs)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(server.stderr.take().unwrap()).lines();
    let ready = log
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("listening on https://"))
        .expect("the server started");
    // The access log is not the bench's business, but must be read for the server not to block.
    std::thread::spawn(move || log.for_each(drop));
    let https: SocketAddr = ready
        .split("listening on https://")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let page = page_of_site();
    let ca = certs.join("dev-ca.pem");

    println!(
        "{:<44} {:>10} {:>9} {:>12} {:>10} {:>10}",
        "", "conn/s", "failed", "garbage/s", "rss MiB", "peak MiB"
    );
    let quiet = legitimate_load(https, &ca, &page, clients, seconds);
    report("real clients alone", &quiet, 0.0, server.id());

    let idle: Vec<TcpStream> = (0..idle)
        .map(|_| TcpStream::connect(https).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    report(
        &format!("{} idle connections, no load", idle.len()),
        &Load::default(),
        0.0,
        server.id(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..garbage)
        .map(|seed| spawn_garbage(https, seed as u8, stop.clone(), sent.clone()))
        .collect();
    let started = Instant::now();
    let attacked = legitimate_load(https, &ca, &page, clients, seconds);
    let garbage_rate = sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    attackers
        .into_iter()
        .for_each(|attacker| attacker.join().unwrap());
    report(
        &format!(
            "real clients, {} idle, {garbage} garbage streams",
            idle.len()
        ),
        &attacked,
        garbage_rate,
        server.id(),
    );
    drop(idle);
    let _ = server.kill();
    let _ = server.wait();
}

/// The default resource: host name and digest, from `tls-site inspect --json`.
fn page_of_site() -> (String, String) {
    let listing = Command::new(BINARY)
        .args(["inspect", "--json"])
        .output()
        .unwrap();
    let listing: Vec<serde_json::Value> = serde_json::from_slice(&listing.stdout).unwrap();
    let page = listing.iter().find(|r| r["default"] == true).unwrap();
    (
        page["hosts"][0].as_str().unwrap().to_owned(),
        page["sha256"].as_str().unwrap().to_owned(),
    )
}

#[derive(Default)]
struct Load {
    served: u64,
    failed: u64,
    seconds: f64,
}

fn legitimate_load(
    https: SocketAddr,
    ca: &std::path::Path,
    page: &(String, String),
    clients: u64,
    seconds: Duration,
) -> Load {
    let config = client::config(client::Trust::Ca(ca), &[]);
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (config, (host, digest)) = (config.clone(), page.clone());
            std::thread::spawn(move || {
                let (mut served, mut failed) = (0, 0);
                while started.elapsed() < seconds {
                    match client::fetch(https, &host, true, config.clone()) {
                        Ok(fetched) if format!("{:x}", Sha256::digest(&fetched.body)) == digest => {
                            served += 1
                        }
                        _ => failed += 1,
                    }
                }
                (served, failed)
            })
        })
        .collect();
    let mut load = Load::default();
    for thread in threads {
        let (served, failed) = thread.join().unwrap();
        load.served += served;
        load.failed += failed;
    }
    load.seconds = started.elapsed().as_secs_f64();
    load
}

fn spawn_garbage(
    https: SocketAddr,
    seed: u8,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let noise: Vec<u8> = (0..2048u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
            .collect();
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut socket) = TcpStream::connect(https) else {
                continue;
            };
            let _ = socket.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = socket.write_all(&noise);
            let _ = socket.read_to_end(&mut Vec::new());
            sent.fetch_add(1, Ordering::Relaxed);
        }
    })
}

fn report(label: &str, load: &Load, garbage_rate: f64, pid: u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mib = |name: &str| -> f64 {
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    };
    let rate = if load.seconds > 0.0 {
        load.served as f64 / load.seconds
    } else {
        0.0
    };
    println!(
        "{label:<44} {rate:>10.1} {:>9} {garbage_rate:>12.1} {:>10.1} {:>10.1}",
        load.failed,
        mib("VmRSS:"),
        mib("VmHWM:")
    );
}
