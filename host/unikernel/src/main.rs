//! The tls-site unikernel: boots on bare x86_64 (qemu's microvm, PVH), and serves the site.

#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod clock;
mod console;
mod crypto;
mod entropy;
mod interrupts;
mod net;
mod platform;
mod power;
mod sandbox;
mod serve;
mod tickets;
mod timer;

/// The site and its keys, put into the image at build time (build.rs).
mod site {
    include!(concat!(env!("OUT_DIR"), "/site.rs"));
}

/// Linear memory one instance may grow to: the host's default (`--instance-memory`).
const INSTANCE_MEMORY: usize = tls_site_shared::defaults::INSTANCE_MEMORY;
/// What one connection in flight costs besides its instance: its socket buffers and the
/// instance's own bookkeeping, with room.
const CONNECTION_OVERHEAD: usize = 512 << 10;
/// Heap kept for the unikernel itself, whatever the connections take.
const RESERVED_HEAP: usize = 2 << 20;

use talc::TalcLock;
use talc::source::Manual;

/// The heap: talc over the RAM the loader reported free, claimed at boot.
#[global_allocator]
static HEAP: TalcLock<spinning_top::RawSpinlock, Manual> = TalcLock::new(Manual);

#[unsafe(no_mangle)]
extern "C" fn kernel_main(start_info: u32) -> ! {
    console::init();
    // SAFETY: `start_info` is what the PVH entry (boot.rs) was handed in ebx, untouched since.
    let handover = unsafe { boot::Handover::read(start_info) };
    let mut heap_bytes = 0;
    for &(start, length) in handover
        .free_memory
        .iter()
        .filter(|(_, length)| *length > 0)
    {
        // SAFETY: RAM the loader reported usable, past our image, mapped, and handed to no one
        // else: the heap owns it from now on.
        unsafe { HEAP.lock().claim(start as *mut u8, length) };
        heap_bytes += length;
    }
    if let Err(error) = clock::init() {
        panic!("no clock: {error}");
    }
    interrupts::init();
    let sleeps = match timer::start() {
        Ok(()) => true,
        Err(error) => {
            log!("unikernel: {error}; the loop polls without sleeping");
            false
        }
    };
    log!(
        "unikernel: {} MiB of heap; command line: {}",
        heap_bytes >> 20,
        handover.command_line
    );
    match entropy::check() {
        Ok(entropy::Rdseed(rdseed)) => log!(
            "unikernel: RDRAND draws; RDSEED {}",
            if rdseed { "present" } else { "absent" }
        ),
        Err(error) => {
            panic!("refusing to serve without the CPU's randomness: {error}")
        }
    }
    let network = match tls_site_shared::command_line::NetworkConfig::from_command_line(
        handover.command_line,
    ) {
        Ok(network) => network,
        Err(error) => panic!("kernel command line: {error}"),
    };
    let mut nic = match net::find_device() {
        Ok(device) => net::Nic { device },
        Err(error) => panic!("no network: {error}"),
    };
    let now = smoltcp::time::Instant::from_millis(clock::Instant::now().millis_since_boot() as i64);
    let interface = net::interface(&mut nic, &network, now);
    log!(
        "unikernel: {}/{}, gateway {:?}",
        network.address,
        network.prefix,
        network.gateway
    );
    let keys = match crypto::Keys::load(site::KEYS) {
        Ok(keys) => keys,
        Err(error) => panic!("the image's private keys: {error}"),
    };
    let sandbox = match sandbox::Sandbox::new(site::SITE, keys, INSTANCE_MEMORY) {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("the site: {error}"),
    };
    let resources = match sandbox.resources() {
        Ok(resources) => resources,
        Err(error) => panic!("the site's resources: {error}"),
    };
    for resource in &resources {
        let default = if resource.is_default {
            " (default)"
        } else {
            ""
        };
        log!(
            "serving {} {} bytes {}{default}",
            resource.hosts.join(","),
            resource.bytes,
            resource.content_type
        );
    }
    let hosts = resources.iter().flat_map(|r| r.hosts.clone()).collect();
    let default_host = resources
        .iter()
        .find(|r| r.is_default)
        .map(|r| r.hosts[0].clone())
        .unwrap_or_default();
    let table = tls_site_shared::redirect::RedirectTable::new(hosts, default_host, 443);
    let free = heap_bytes.saturating_sub(HEAP.lock().counters().allocated_bytes + RESERVED_HEAP);
    let max_instances = (free / (INSTANCE_MEMORY + CONNECTION_OVERHEAD)).max(1);
    let mut server = serve::Server::new(interface, table, sandbox, max_instances, sleeps);
    log!(
        "unikernel: listening on ports 443 and 80; {max_instances} instances at once - ready in {} ms",
        clock::Instant::now().millis_since_boot()
    );
    server.run(&mut nic);
    power::off()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::write_line_forced(format_args!("unikernel: panic: {info}; powering off"));
    power::off()
}
