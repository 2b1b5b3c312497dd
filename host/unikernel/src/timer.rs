//! The local APIC's timer: a 1 kHz tick that wakes the CPU from `hlt`, so that an idle unikernel
//! sleeps instead of polling (under qemu, a polling guest keeps one host CPU busy). The network is
//! still polled, not interrupt-driven: a sleeping unikernel sees a new packet at the next tick.

use crate::clock::Instant;
use core::ptr;
use x86_64::registers::model_specific::Msr;

/// Where the local APIC's registers are (the architectural default, mapped one to one by boot.rs).
const APIC_BASE: usize = 0xfee0_0000;
const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_APIC_BASE's global enable bit.
const APIC_GLOBAL_ENABLE: u64 = 1 << 11;
const SPURIOUS_VECTOR_REGISTER: usize = 0xf0;
const LVT_TIMER: usize = 0x320;
const INITIAL_COUNT: usize = 0x380;
const CURRENT_COUNT: usize = 0x390;
const DIVIDE_CONFIGURATION: usize = 0x3e0;
/// Software-enables the APIC (in the spurious-interrupt vector register).
const APIC_SOFTWARE_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
/// The timer counts at the APIC's bus clock, undivided.
const DIVIDE_BY_1: u32 = 0b1011;
/// How long the timer is calibrated against the TSC.
const CALIBRATION_MS: u64 = 10;

/// The interrupt vectors the APIC is given (interrupts.rs installs their handlers).
pub const TICK_VECTOR: u8 = 32;
pub const SPURIOUS_VECTOR: u8 = 0xff;

#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    #[error("the CPU has no local APIC")]
    NoApic,
    #[error("the local APIC's timer never counted")]
    NeverCounted,
}

fn write(register: usize, value: u32) {
    // SAFETY: a register of the local APIC, memory-mapped at APIC_BASE (enabled by `start`), which
    // boot.rs maps one to one; nothing else uses it.
    unsafe { ptr::write_volatile((APIC_BASE + register) as *mut u32, value) }
}

fn read(register: usize) -> u32 {
    // SAFETY: as in `write`.
    unsafe { ptr::read_volatile((APIC_BASE + register) as *const u32) }
}

/// Masks the legacy 8259 PICs, whose interrupts would arrive on the exception vectors, then
/// starts the APIC's timer at 1 kHz, calibrated against the TSC (clock.rs). Interrupts stay
/// disabled but while `sleep` waits.
pub fn start() -> Result<(), TimerError> {
    let has_apic = core::arch::x86_64::__cpuid(1).edx & (1 << 9) != 0;
    if !has_apic {
        return Err(TimerError::NoApic);
    }
    // SAFETY: the PICs' data ports; all their lines masked, they deliver nothing (microvm may
    // have none: the writes then go nowhere).
    unsafe {
        x86_64::instructions::port::Port::<u8>::new(0x21).write(0xff);
        x86_64::instructions::port::Port::<u8>::new(0xa1).write(0xff);
    }
    let mut base = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (checked above); its base is left as
    // it is and the APIC enabled.
    unsafe {
        let value = base.read();
        base.write((value & !0xfff_ffff_f000) | APIC_BASE as u64 | APIC_GLOBAL_ENABLE);
    }
    write(
        SPURIOUS_VECTOR_REGISTER,
        APIC_SOFTWARE_ENABLE | u32::from(SPURIOUS_VECTOR),
    );
    write(DIVIDE_CONFIGURATION, DIVIDE_BY_1);
    write(LVT_TIMER, LVT_MASKED | u32::from(TICK_VECTOR));
    write(INITIAL_COUNT, u32::MAX);
    let started = Instant::now();
    while Instant::now().millis_since(started) < CALIBRATION_MS {
        core::hint::spin_loop();
    }
    let per_ms = (u32::MAX - read(CURRENT_COUNT)) / CALIBRATION_MS as u32;
    if per_ms == 0 {
        return Err(TimerError::NeverCounted);
    }
    write(LVT_TIMER, LVT_PERIODIC | u32::from(TICK_VECTOR));
    write(INITIAL_COUNT, per_ms);
    Ok(())
}

/// Sleeps until the next interrupt: the timer's tick at the latest.
pub fn sleep() {
    x86_64::instructions::interrupts::enable_and_hlt();
    x86_64::instructions::interrupts::disable();
}
