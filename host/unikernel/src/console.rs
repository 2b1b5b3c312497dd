//! The serial console (COM1, a 16550): the log, and the panic's last words.

use core::fmt::Write as _;
use spinning_top::Spinlock;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550Tty};

static CONSOLE: Spinlock<Option<Uart16550Tty<PioBackend>>> = Spinlock::new(None);

/// Sets up COM1. Without it the log goes nowhere, and the unikernel still serves.
pub fn init() {
    // SAFETY: 0x3f8 is COM1 on every PC machine qemu has (microvm's isa-serial); nothing else in
    // the unikernel touches those ports.
    let uart = unsafe { Uart16550Tty::new_port(0x3f8, Config::default()) }.ok();
    *CONSOLE.lock() = uart;
}

/// Writes `args` and a newline to the console.
pub fn write_line(args: core::fmt::Arguments<'_>) {
    if let Some(console) = CONSOLE.lock().as_mut() {
        let _ = console.write_fmt(args);
        let _ = console.write_str("\n");
    }
}

/// For the panic handler: the console even if the panic came while it was held.
pub fn write_line_forced(args: core::fmt::Arguments<'_>) {
    // SAFETY: only called on the way to power-off; nothing runs after it, so breaking the lock of
    // the (single-threaded) code that panicked while writing cannot interleave with it.
    unsafe { CONSOLE.force_unlock() };
    write_line(args);
}

/// One log line, stamped with the UTC time like the host's (`access_log::log`).
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::console::write_line(format_args!("{} {}", $crate::clock::Rfc3339Millis::now(), format_args!($($arg)*)))
    };
}
