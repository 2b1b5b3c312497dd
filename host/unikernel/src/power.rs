//! Power: off through the ACPI generic event device of qemu's microvm (its hardware-reduced sleep
//! register), and the power button (qemu's `system_powerdown`) seen by polling that device's event
//! register, as no interrupt is taken. Addresses are microvm's (qemu's hw/i386/microvm.h).

/// The GED's event selector: reading it returns the pending events and clears them.
const GED_EVENTS: usize = 0xfea0_0000;
/// The GED's sleep control register.
const GED_SLEEP_CONTROL: usize = 0xfea0_0200;
/// The GED's power-down event (qemu's ACPI_GED_PWR_DOWN_EVT).
const POWER_DOWN_EVENT: u32 = 0x2;
/// SLP_TYP = 5 (S5, soft off) in bits 2-4, and SLP_EN (bit 5).
const SLEEP_S5: u8 = (5 << 2) | (1 << 5);

/// Whether the power button was pressed since the last look.
pub fn power_button_pressed() -> bool {
    // SAFETY: the GED's register page is MMIO mapped one to one (boot.rs); a 32-bit read of the
    // selector is what the ACPI tables tell an OS to do.
    let events = unsafe { core::ptr::read_volatile(GED_EVENTS as *const u32) };
    // Where there is no GED the read gives all ones or zero; all ones is not a press.
    events != u32::MAX && events & POWER_DOWN_EVENT != 0
}

/// Powers the machine off; halts forever if that did not work (no GED: not a microvm).
pub fn off() -> ! {
    // SAFETY: as above; writing S5 to the sleep register ends the machine.
    unsafe { core::ptr::write_volatile(GED_SLEEP_CONTROL as *mut u8, SLEEP_S5) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
