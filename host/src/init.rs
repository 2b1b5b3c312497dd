//! The host as PID 1 of a microVM (see host/vm/): mount /proc, /sys and /dev, check that the
//! kernel's randomness is ready, configure the network from the kernel command line, and, once
//! serving is over, power the machine off. Runs only when asked (`tls-site init`, or the binary
//! named `/init`) and only as process 1. Also what any PID 1 owes, a container's too: reaping.

use crate::{ServeOptions, log};
use rustix::system::RebootCommand;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Where `host/vm/build-image` puts the component (precompiled: `tls-site compile`) and the
/// certificates. There are no kernel modules: every driver is built into the image's kernel.
pub const COMPONENT: &str = "/tls-site/site.cwasm";
pub const CERTS: &str = "/tls-site/certs";
/// The one network interface: virtio-net, named by the kernel (there is no udev to rename it).
const INTERFACE: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot mount {what} on {target}: {source}")]
    Mount {
        what: &'static str,
        target: &'static str,
        source: std::io::Error,
    },
    #[error("randomness: {0}")]
    Randomness(String),
    #[error("kernel command line: {0}")]
    CommandLine(String),
    #[error("network: {0}")]
    Network(String),
    #[error("memory: {0}")]
    Memory(String),
}

/// The address of eth0, as the kernel command line gives it (shared with the unikernel).
pub use tls_site_shared::command_line::NetworkConfig;

/// Everything between the kernel handing over and the first listener: returns how to serve.
pub async fn prepare() -> Result<ServeOptions, InitError> {
    mount_filesystems()?;
    // Ctrl-Alt-Del then sends us SIGINT, a clean shutdown, instead of an immediate reboot.
    let _ = rustix::system::reboot(RebootCommand::CadOff);
    log(format_args!("init: {}", randomness_ready()?));
    let command_line = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| InitError::CommandLine(e.to_string()))?;
    let network = NetworkConfig::from_command_line(&command_line)
        .map_err(|error| InitError::CommandLine(error.0))?;
    configure_network(&network).await?;
    let gateway = network.gateway.map_or("no gateway".to_owned(), |gateway| {
        format!("gateway {gateway}")
    });
    log(format_args!(
        "init: {INTERFACE} {}/{}, {gateway}",
        network.address, network.prefix
    ));

    let mut options = ServeOptions::new(COMPONENT.into(), CERTS.into());
    options.https = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 443));
    options.http = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 80));
    // A small VM has far less than the default 1 GiB for guest instances, and PID 1 is the one
    // process the kernel cannot kill when memory runs out: it would panic. Half of what is free
    // now goes to instances; the rest is the host's, the sockets' and the kernel's.
    let meminfo =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| InitError::Memory(e.to_string()))?;
    let available = memory_available(&meminfo)
        .ok_or_else(|| InitError::Memory("no MemAvailable in /proc/meminfo".into()))?;
    options.guest_memory = (available / 2).max(options.instance_memory);
    log(format_args!(
        "init: {} MiB free; guest instances may use {} MiB",
        available >> 20,
        options.guest_memory >> 20
    ));
    Ok(options)
}

/// Bytes the kernel says can be allocated without swapping (there is no swap): `MemAvailable`.
fn memory_available(meminfo: &str) -> Option<usize> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?;
    let kib: usize = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Resolves when the machine is asked to stop: SIGTERM, Ctrl-Alt-Del (SIGINT) or the ACPI power
/// button (qemu's `system_powerdown`, a cloud provider's "stop"). Says which. The handlers are
/// installed at the call, not at the first poll: PID 1 ignores signals it has no handler for.
pub fn stop_requested() -> std::io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut power_button = watch_power_button();
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "Ctrl-Alt-Del",
            Some(()) = power_button.recv() => "the ACPI power button",
        }
    })
}

/// Waits for every child that exits, in the background. Orphans in a PID namespace are handed to
/// its PID 1, and a zombie holds its process id until PID 1 waits for it. The host starts no
/// children of its own, so no one else waits for these.
pub fn reap_children() -> std::io::Result<()> {
    use rustix::process::{WaitOptions, waitpid};
    let mut exited = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    tokio::spawn(async move {
        while exited.recv().await.is_some() {
            // One SIGCHLD may stand for several children.
            while let Ok(Some(_)) = waitpid(None, WaitOptions::NOHANG) {}
        }
    });
    Ok(())
}

/// Flushes what the kernel holds and turns the machine off. PID 1 must never exit: the kernel
/// would panic.
pub fn power_off() -> ! {
    log(format_args!("init: powering off"));
    rustix::fs::sync();
    let error = rustix::system::reboot(RebootCommand::PowerOff)
        .expect_err("reboot(POWER_OFF) returns only on failure");
    log(format_args!("init: cannot power off ({error}); halting"));
    loop {
        std::thread::park();
    }
}

fn mount_filesystems() -> Result<(), InitError> {
    use rustix::mount::{MountFlags, mount};
    // The console is already open (build-image puts /dev/console in the initramfs); devtmpfs
    // brings the rest of /dev, including the input devices the power button speaks through.
    for (what, target) in [("devtmpfs", "/dev"), ("proc", "/proc"), ("sysfs", "/sys")] {
        let failed = |source: std::io::Error| InitError::Mount {
            what,
            target,
            source,
        };
        std::fs::create_dir_all(target).map_err(failed)?;
        let flags = MountFlags::NOSUID | MountFlags::NOEXEC;
        mount(what, target, what, flags, None::<&std::ffi::CStr>)
            .map_err(|errno| failed(errno.into()))?;
    }
    Ok(())
}

/// The first handshake needs random numbers at once: the kernel's generator must be seeded before
/// the first client, by virtio-rng or the CPU's RDRAND, never by waiting. Says which it was.
fn randomness_ready() -> Result<String, InitError> {
    match rustix::rand::getrandom(&mut [0u8; 16], rustix::rand::GetRandomFlags::NONBLOCK) {
        Ok(_) => {
            let source = std::fs::read_to_string("/sys/devices/virtual/misc/hw_random/rng_current").unwrap_or_default();
            Ok(format!("randomness ready (hardware RNG: {})", source.trim()))
        }
        Err(rustix::io::Errno::AGAIN) => Err(InitError::Randomness("the kernel's random generator is not seeded: give the VM a virtio-rng device (qemu -device virtio-rng-pci or virtio-rng-device) or a CPU with RDRAND".into())),
        Err(errno) => Err(InitError::Randomness(format!("getrandom: {errno}"))),
    }
}

async fn configure_network(config: &NetworkConfig) -> Result<(), InitError> {
    use futures_util::TryStreamExt as _;
    use rtnetlink::{LinkUnspec, RouteMessageBuilder};
    let failed =
        |doing: &str, error: rtnetlink::Error| InitError::Network(format!("{doing}: {error}"));
    let (connection, handle, _) = rtnetlink::new_connection()
        .map_err(|e| InitError::Network(format!("netlink socket: {e}")))?;
    tokio::spawn(connection);
    let mut eth0 = None;
    for name in ["lo", INTERFACE] {
        let mut links = std::pin::pin!(handle.link().get().match_name(name.to_owned()).execute());
        let link = links
            .try_next()
            .await
            .map_err(|e| failed(&format!("finding {name} (is virtio-net attached?)"), e))?;
        let index = link
            .ok_or_else(|| InitError::Network(format!("no interface {name}")))?
            .header
            .index;
        // Up, lo gets 127.0.0.1/8 from the kernel by itself.
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| failed(&format!("{name} up"), e))?;
        eth0 = Some(index);
    }
    let eth0 = eth0.expect("the loop ends with eth0");
    handle
        .address()
        .add(eth0, config.address.into(), config.prefix)
        .execute()
        .await
        .map_err(|e| failed("address", e))?;
    if let Some(gateway) = config.gateway {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(|e| failed("default route", e))?;
    }
    Ok(())
}

/// `struct input_event` on a 64-bit kernel (linux/input.h): a timeval, then type, code, value.
const INPUT_EVENT_BYTES: usize = 24;
const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;

/// Whether one input event is the power key going down. The ACPI button driver reports the
/// power button as this key; no daemon (acpid, logind) is there to turn it into a shutdown.
fn is_power_key_press(event: &[u8; INPUT_EVENT_BYTES]) -> bool {
    let kind = u16::from_ne_bytes([event[16], event[17]]);
    let code = u16::from_ne_bytes([event[18], event[19]]);
    let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

/// Reads every input device (the power button's among them) on a thread each; a power key
/// press arrives on the channel. With no device, the channel stays open and silent.
fn watch_power_button() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (pressed, receiver) = tokio::sync::mpsc::unbounded_channel();
    let devices: Vec<PathBuf> = std::fs::read_dir("/dev/input")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("event"))
        })
        .collect();
    if devices.is_empty() {
        log(format_args!(
            "init: warning: no input devices; the ACPI power button will not be heard"
        ));
    }
    for device in devices {
        let pressed = pressed.clone();
        std::thread::spawn(move || {
            let Ok(mut events) = std::fs::File::open(&device) else {
                return;
            };
            let mut event = [0u8; INPUT_EVENT_BYTES];
            while events.read_exact(&mut event).is_ok() {
                if is_power_key_press(&event) {
                    let _ = pressed.send(());
                }
            }
        });
    }
    // Kept alive so that `recv` waits rather than ending when no device exists.
    std::mem::forget(pressed);
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_memory_is_read_from_meminfo() {
        let meminfo = "MemTotal:         116488 kB\nMemFree:           60844 kB\nMemAvailable:      58344 kB\nBuffers:               0 kB\n";
        assert_eq!(memory_available(meminfo), Some(58344 * 1024));
        assert_eq!(memory_available("MemTotal: 1 kB\n"), None);
        assert_eq!(memory_available("MemAvailable: lots\n"), None);
    }

    #[test]
    fn only_the_power_key_going_down_is_a_press() {
        let event = |kind: u16, code: u16, value: i32| {
            let mut bytes = [0u8; INPUT_EVENT_BYTES];
            bytes[16..18].copy_from_slice(&kind.to_ne_bytes());
            bytes[18..20].copy_from_slice(&code.to_ne_bytes());
            bytes[20..24].copy_from_slice(&value.to_ne_bytes());
            bytes
        };
        assert!(is_power_key_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_key_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_key_press(&event(EV_KEY, 30, 1)), "another key");
        assert!(!is_power_key_press(&event(0, 0, 0)), "a sync event");
    }
}
