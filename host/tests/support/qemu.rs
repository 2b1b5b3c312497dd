//! What the tests that boot an image in qemu share (vm.rs, the Linux microVM; unikernel.rs, the
//! unikernel): the image's nested build, `host/vm/boot` run with its console read line by line,
//! QMP, and what the booted site must serve.

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_tls-site");

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs the image's build script `script` (under host/vm/) with `--out out`; `needs` says what
/// it needs if it fails.
pub fn build_image_with(script: &str, out: &Path, needs: &str) {
    let mut build = Command::new(workspace().join("host/vm").join(script));
    build.arg("--out").arg(out);
    // What cargo set for this test must not steer the nested builds...
    crate::nested_cargo::scrub(&mut build);
    // ... but they build beside this one (CI keeps that outside the checkout, warm).
    build.env("CARGO_TARGET_DIR", env!("TLS_SITE_TARGET_DIR"));
    let status = build
        .status()
        .unwrap_or_else(|error| panic!("running host/vm/{script}: {error}"));
    assert!(
        status.success(),
        "host/vm/{script} failed (see above); it needs {needs}, which .ci/run installs"
    );
}

/// `tls-site inspect --json`: every resource's hosts and digest, from the component itself.
pub fn inspect() -> Vec<serde_json::Value> {
    let output = Command::new(BINARY)
        .args(["inspect", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// qemu running an image (`host/vm/boot` with its arguments), its console read line by line.
pub struct Qemu {
    qemu: Child,
    console: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// A console line containing this is the guest's own panic: the test fails at once.
    panic: &'static str,
}

impl Qemu {
    /// Runs `host/vm/boot` with `args`; its console lines are echoed to stderr after `label`.
    pub fn boot(args: &[&std::ffi::OsStr], label: &'static str, panic: &'static str) -> Qemu {
        let mut qemu = Command::new(workspace().join("host/vm/boot"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running host/vm/boot (it needs qemu-system-x86_64: apt-get install qemu-system-x86)");
        let (sender, console) = mpsc::channel();
        let output = BufReader::new(qemu.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in output.split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                eprintln!("[{label}] {line}");
                let _ = sender.send(line);
            }
        });
        Qemu {
            qemu,
            console,
            seen: Vec::new(),
            panic,
        }
    }

    /// The console lines read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    pub fn pid(&self) -> u32 {
        self.qemu.id()
    }

    /// The first console line containing `needle`, waiting at most `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|line| line.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.console.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    assert!(!line.contains(self.panic), "the guest panicked: {line}");
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no console line with {needle:?} within {timeout:?}"),
            }
        }
    }

    pub fn wait_for_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.qemu.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "qemu still running {timeout:?} after the power button"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// QMP: the handshake, then one command (its JSON object); returns qemu's answer.
pub fn qmp(socket: &Path, command: &str) -> String {
    let stream = UnixStream::connect(socket).expect("connecting to qemu's QMP socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut replies = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut read_reply = || loop {
        let mut line = String::new();
        replies.read_line(&mut line).expect("reading QMP");
        assert!(!line.is_empty(), "qemu closed the QMP socket");
        // Events may come between a command and its answer.
        if !line.contains("\"event\"") {
            return line;
        }
    };
    let greeting = read_reply();
    assert!(greeting.contains("QMP"), "{greeting}");
    writer
        .write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
        .unwrap();
    let ready = read_reply();
    assert!(ready.contains("return"), "{ready}");
    writer.write_all(format!("{command}\n").as_bytes()).unwrap();
    read_reply()
}
