//! The tls-site unikernel: boots on bare x86_64 (qemu's microvm, PVH), and serves the site.

#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod clock;
mod console;
mod entropy;
mod power;

use talc::TalcLock;
use talc::source::Manual;

/// The heap: talc over the RAM the loader reported free, claimed at boot.
#[global_allocator]
static HEAP: TalcLock<spinning_top::RawSpinlock, Manual> =
    TalcLock::new(Manual);

#[unsafe(no_mangle)]
extern "C" fn kernel_main(start_info: u32) -> ! {
    console::init();
    // SAFETY: `start_info` is what the PVH entry (boot.rs) was handed in ebx, untouched since.
    let handover = unsafe { boot::Handover::read(start_info) };
    let mut heap_bytes = 0;
    for &(start, length) in handover.free_memory.iter().filter(|(_, length)| *length > 0) {
        // SAFETY: RAM the loader reported usable, past our image, mapped, and handed to no one
        // else: the heap owns it from now on.
        unsafe { HEAP.lock().claim(start as *mut u8, length) };
        heap_bytes += length;
    }
    if let Err(error) = clock::init() {
        panic!("no clock: {error:?}");
    }
    log!("unikernel: {} MiB of heap; command line: {}", heap_bytes >> 20, handover.command_line);
    match entropy::check() {
        Ok(entropy::Rdseed(rdseed)) => log!("unikernel: RDRAND draws; RDSEED {}", if rdseed { "present" } else { "absent" }),
        Err(error) => panic!("refusing to serve without the CPU's randomness: {error:?} (qemu: -cpu max)"),
    }
    loop {
        if power::power_button_pressed() {
            log!("unikernel: powering off (the ACPI power button)");
            power::off();
        }
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::write_line_forced(format_args!("unikernel: panic: {info}; powering off"));
    power::off()
}
