//! The unikernel (host/unikernel): build the image with its documented command
//! (host/vm/build-unikernel, the development certificates), boot it with `host/vm/boot
//! --unikernel` on qemu's microvm (TCG), hold a half ClientHello, an idle connection and garbage
//! open against it, fetch every host name's bytes with curl and the dev CA through qemu's port
//! forward meanwhile, see the 301 on port 80, press the ACPI power button over QMP, and check
//! that the unikernel answered the request in flight at the button, counted it all and powered the
//! machine off. Before the clients come, it must sleep while idle, not poll.

#[path = "../../tests/nested_cargo.rs"]
mod nested_cargo;
// Shared with the other qemu test, which uses parts of it this one does not.
#[allow(dead_code)]
#[path = "support/qemu.rs"]
mod qemu;

use qemu::{Qemu, build_image_with, free_port, inspect, qmp, sha256_hex, workspace};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Failure bounds, not expectations (host/vm/boot-time measures).
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(30);

/// `host/vm/build-unikernel --out DIR`, with the development certificates.
fn build_unikernel(out: &Path) {
    build_image_with("build-unikernel", out, "the x86_64-unknown-none target");
}

/// qemu running the unikernel on microvm, TCG.
fn boot_unikernel(image: &Path, https: u16, http: u16, qmp: &Path) -> Qemu {
    let (https, http) = (https.to_string(), http.to_string());
    let mut args: Vec<&OsStr> = [
        "--unikernel",
        "--accel",
        "tcg",
        "--https",
        &https,
        "--http",
        &http,
        "--qmp",
    ]
    .into_iter()
    .map(OsStr::new)
    .collect();
    args.extend([qmp.as_os_str(), image.as_os_str()]);
    Qemu::boot(&args, "unikernel", "panic")
}

/// The CPU time `qemu` has taken so far, all its threads (the emulated CPU's among them).
fn cpu_seconds(qemu: &Qemu) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", qemu.pid())).unwrap();
    // After the command's name in parentheses: utime and stime are the 12th and 13th fields.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap()
        .stdout;
    ticks as f64
        / String::from_utf8_lossy(&per_second)
            .trim()
            .parse::<f64>()
            .unwrap()
}

/// Waits until qemu's user network (`info usernet`) shows the connection from the forwarded port
/// `forwarded` to the guest's `port` established, its bytes handed over: the guest has accepted it.
fn wait_until_the_guest_has(socket: &Path, forwarded: u16, port: u16) {
    let command =
        r#"{"execute": "human-monitor-command", "arguments": {"command-line": "info usernet"}}"#;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let table = qmp(socket, command);
        let accepted = table.split("\\r\\n").any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() == 8
                && fields[0] == "TCP[ESTABLISHED]"
                && fields[3] == forwarded.to_string()
                && fields[5] == port.to_string()
                && fields[7] == "0"
        });
        if accepted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "qemu never showed the connection to the guest's port {port} established: {table}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `https://host/` with curl, trusting only the dev CA, through the forwarded port: the body.
fn curl(host: &str, port: u16) -> Vec<u8> {
    let ca = workspace().join("certs/dev-ca.pem");
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "60"])
        .arg("--cacert")
        .arg(&ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}/"))
        .output()
        .expect("running curl");
    assert!(
        output.status.success(),
        "curl https://{host}/: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
#[ignore = "layer 2: needs the x86_64-unknown-none target, qemu-system-x86 and curl"]
fn the_unikernel_serves_every_host_past_stalled_clients_and_powers_off() {
    let image = Path::new(env!("TLS_SITE_TARGET_DIR")).join("vm/test-unikernel");
    build_unikernel(&image);
    let resources = inspect();
    let (https, http) = (free_port(), free_port());
    let qmp_socket =
        std::env::temp_dir().join(format!("tls-site-unikernel-{}.qmp", std::process::id()));
    let _ = std::fs::remove_file(&qmp_socket);

    let booted = Instant::now();
    let mut unikernel = boot_unikernel(&image, https, http, &qmp_socket);
    unikernel.wait_for("RDRAND draws", BOOT_TIMEOUT);
    unikernel.wait_for("listening on ports 443 and 80", BOOT_TIMEOUT);

    // Idle, it sleeps on its timer's tick instead of polling: qemu's emulated CPU, busy when the
    // loop polls, then takes a few percent of a host CPU. Half is a failure bound far above that.
    let idle_for = Duration::from_secs(2);
    let before = cpu_seconds(&unikernel);
    std::thread::sleep(idle_for);
    let idle_cpu = cpu_seconds(&unikernel) - before;
    assert!(
        idle_cpu < idle_for.as_secs_f64() / 2.0,
        "idle, qemu took {idle_cpu:.2} s of CPU in {idle_for:?}: the unikernel does not sleep"
    );

    // Clients that hold the unikernel's one loop if anything can: one silent, one that sent half
    // a ClientHello (a record header announcing 512 bytes, and 11 of them), one sending garbage.
    let idle = TcpStream::connect(("127.0.0.1", https)).unwrap();
    let mut half_hello = TcpStream::connect(("127.0.0.1", https)).unwrap();
    half_hello
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .unwrap();
    let mut garbage = TcpStream::connect(("127.0.0.1", https)).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();

    for resource in &resources {
        let host = resource["hosts"][0].as_str().unwrap();
        let body = curl(host, https);
        assert_eq!(
            sha256_hex(&body),
            resource["sha256"].as_str().unwrap(),
            "{host}: not the bytes `tls-site serve` serves"
        );
        unikernel.wait_for(&format!("sni={host} resource={host}"), BOOT_TIMEOUT);
    }
    eprintln!(
        "--- every host served {:.1} s after qemu started, past an idle client, half a \
        ClientHello and garbage",
        booted.elapsed().as_secs_f64()
    );
    unikernel.wait_for("failed tls:", BOOT_TIMEOUT);
    unikernel.wait_for("timed out: no whole ClientHello", BOOT_TIMEOUT);
    unikernel.wait_for("timed out: nothing sent within", BOOT_TIMEOUT);
    drop((idle, half_hello, garbage));

    let default_host = resources.iter().find(|r| r["default"] == true).unwrap()["hosts"][0]
        .as_str()
        .unwrap();
    let mut plain = TcpStream::connect(("127.0.0.1", http)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    plain
        .write_all(format!("GET / HTTP/1.1\r\nHost: {default_host}\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 301"), "{answer}");
    assert!(
        answer.contains(&format!("Location: https://{default_host}/\r\n")),
        "{answer}"
    );
    unikernel.wait_for(" 301 https://", BOOT_TIMEOUT);

    // A request in flight when the power button is pressed is still answered: half of it sent
    // before, the rest after.
    let mut in_flight = TcpStream::connect(("127.0.0.1", http)).unwrap();
    in_flight
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    in_flight.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    wait_until_the_guest_has(&qmp_socket, http, 80);
    let reply = qmp(&qmp_socket, r#"{"execute": "system_powerdown"}"#);
    assert!(reply.contains("return"), "{reply}");
    unikernel.wait_for("finishing those in flight", POWER_OFF_TIMEOUT);
    in_flight
        .write_all(format!("Host: {default_host}\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    in_flight.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 301"),
        "the request in flight at the power button: {answer:?}"
    );
    let stopped = unikernel.wait_for("stopped; connections:", POWER_OFF_TIMEOUT);
    assert!(
        stopped.contains(&format!("served={} ", resources.len())),
        "every curl was counted as served: {stopped}"
    );
    for counted in [
        "tls-failed=1",
        "handshake-timeout=1",
        "silent=1",
        "http-redirected=2",
    ] {
        assert!(stopped.contains(counted), "{counted}: {stopped}");
    }
    let status = unikernel.wait_for_exit(POWER_OFF_TIMEOUT);
    assert!(status.success(), "qemu exit status {status}");
    let _ = std::fs::remove_file(&qmp_socket);
}
