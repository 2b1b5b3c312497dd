//! Time: the TSC counts, calibrated once against the PIT (whose 1.193182 MHz rate is fixed), and
//! the wall clock read once from the CMOS RTC at boot. Deadlines use `Instant`; log lines and the
//! guest's `wasi:clocks/wall-clock` use `unix_time`.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

/// The PIT's input clock, in Hz.
const PIT_HZ: u64 = 1_193_182;
/// PIT ticks to calibrate over: 10 ms (the counter wraps after 55 ms).
const CALIBRATION_TICKS: u64 = 11_932;

static TSC_PER_MS: AtomicU64 = AtomicU64::new(0);
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
/// Unix time in ms at `BOOT_TSC`.
static BOOT_UNIX_MS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("the PIT never counted: there is none to calibrate the TSC against")]
    NoPit,
}

fn tsc() -> u64 {
    // SAFETY: RDTSC has no side effects; every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Calibrates the TSC and reads the wall clock. Call once, before any `Instant`.
pub fn init() -> Result<(), ClockError> {
    let per_ms = calibrate()?;
    TSC_PER_MS.store(per_ms, Ordering::Relaxed);
    BOOT_UNIX_MS.store(read_rtc() * 1000, Ordering::Relaxed);
    BOOT_TSC.store(tsc(), Ordering::Relaxed);
    Ok(())
}

/// TSC ticks per millisecond, measured over PIT channel 0 counting down from 0xffff.
fn calibrate() -> Result<u64, ClockError> {
    let (mut command, mut channel0) = (Port::<u8>::new(0x43), Port::<u8>::new(0x40));
    // SAFETY: the PIT's ports; channel 0 in mode 2 drives nothing here (its interrupt is masked:
    // interrupts stay off).
    let mut read = || unsafe {
        command.write(0x00); // latch channel 0
        let low = channel0.read() as u64;
        let high = channel0.read() as u64;
        (high << 8) | low
    };
    // SAFETY: as above.
    unsafe {
        Port::<u8>::new(0x43).write(0x34); // channel 0, low then high byte, mode 2
        Port::<u8>::new(0x40).write(0xff);
        Port::<u8>::new(0x40).write(0xff);
    }
    let start_count = read();
    let start_tsc = tsc();
    let mut spins = 0u64;
    loop {
        let count = read();
        if start_count.wrapping_sub(count) & 0xffff >= CALIBRATION_TICKS {
            let elapsed = start_count.wrapping_sub(count) & 0xffff;
            let tsc_ticks = tsc() - start_tsc;
            return Ok(tsc_ticks * PIT_HZ / elapsed / 1000);
        }
        spins += 1;
        if spins > 50_000_000 {
            return Err(ClockError::NoPit);
        }
    }
}

/// A point in time since boot, in TSC ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant(u64);

impl Instant {
    pub fn now() -> Instant {
        Instant(tsc())
    }

    /// Milliseconds since boot (smoltcp's clock).
    pub fn millis_since_boot(self) -> u64 {
        self.0.saturating_sub(BOOT_TSC.load(Ordering::Relaxed)) / tsc_per_ms()
    }

    pub fn plus_millis(self, millis: u64) -> Instant {
        Instant(self.0.saturating_add(millis.saturating_mul(tsc_per_ms())))
    }

    pub fn millis_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0) / tsc_per_ms()
    }

    pub fn micros_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0) * 1000 / tsc_per_ms()
    }
}

fn tsc_per_ms() -> u64 {
    TSC_PER_MS.load(Ordering::Relaxed).max(1)
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_millis() -> u64 {
    BOOT_UNIX_MS.load(Ordering::Relaxed) + Instant::now().millis_since_boot()
}

/// Seconds since the Unix epoch from the CMOS RTC (qemu sets it to the host's UTC time).
fn read_rtc() -> u64 {
    let (mut index, mut data) = (Port::<u8>::new(0x70), Port::<u8>::new(0x71));
    // SAFETY: the CMOS ports; reading registers changes nothing. NMI stays enabled (bit 7 clear).
    let mut register = |n: u8| unsafe {
        index.write(n);
        data.read()
    };
    // Wait out an update in progress, so that the fields agree with each other.
    while register(0x0a) & 0x80 != 0 {}
    let status_b = register(0x0b);
    let binary = status_b & 0x04 != 0;
    let decode = |value: u8| {
        if binary {
            value as u64
        } else {
            (value & 0x0f) as u64 + (value >> 4) as u64 * 10
        }
    };
    let seconds = decode(register(0x00));
    let minutes = decode(register(0x02));
    let hour_raw = register(0x04);
    let mut hours = decode(hour_raw & 0x7f);
    if status_b & 0x02 == 0 && hour_raw & 0x80 != 0 {
        hours = (hours + 12) % 24; // 12-hour clock, PM
    }
    let day = decode(register(0x07));
    let month = decode(register(0x08));
    let year = 2000 + decode(register(0x09));
    days_from_civil(year, month, day) * 86_400 + hours * 3600 + minutes * 60 + seconds
}

/// Days from 1970-01-01 to the given date (proleptic Gregorian; Howard Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01 (the inverse of `days_from_civil`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The time as the host's log writes it: `2026-12-04T15:35:02.123Z`.
pub struct Rfc3339Millis(u64);

impl Rfc3339Millis {
    pub fn now() -> Rfc3339Millis {
        Rfc3339Millis(unix_millis())
    }
}

impl core::fmt::Display for Rfc3339Millis {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (seconds, millis) = (self.0 / 1000, self.0 % 1000);
        let (year, month, day) = civil_from_days(seconds / 86_400);
        let of_day = seconds % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        )
    }
}
