//! The host's log: one line to stderr per call, stamped with the UTC time. The access log, the
//! limits, ACME and start-up all write through it.

use std::io::Write as _;
use std::time::SystemTime;

/// One line to stderr, stamped with the UTC time.
pub fn log(line: std::fmt::Arguments<'_>) {
    // Formatted first, then written whole: stderr is unbuffered, and `eprintln!` would write each
    // piece of the format with a system call of its own (ten per connection, measured).
    let line = format!(
        "{} {line}\n",
        humantime::format_rfc3339_millis(SystemTime::now())
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}
