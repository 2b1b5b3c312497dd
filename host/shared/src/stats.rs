//! The counts of how connections ended, as the access log prints them (`served=3
//! http-redirected=1 guest-memory-peak=1400KiB`), for the host and the unikernel alike.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What the stats count: how each connection ended, and a few events besides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Served,
    TlsFailed,
    IoFailed,
    NotInitialised,
    HandshakeTimeout,
    Stalled,
    Trapped,
    TimedOut,
    NoInstance,
    /// Closed, or said nothing within `--hello-timeout`: it never got an instance.
    Silent,
    /// Not an ending: a connection waited for an instance to be free.
    WaitedForInstance,
    HttpRedirected,
    HttpAcmeChallenge,
    HttpBadRequest,
    HttpTimedOut,
    HttpClosed,
    /// A certificate from the ACME CA is now served.
    AcmeInstalled,
    AcmeFailed,
    /// A reload (SIGHUP, or a change seen in `--certs` or `--ticket-keys`) swapped in a new site.
    ReloadInstalled,
    /// A reload failed; the site it would have replaced is still served.
    ReloadFailed,
}

impl Event {
    const ALL: [Event; 20] = [
        Event::Served,
        Event::TlsFailed,
        Event::IoFailed,
        Event::NotInitialised,
        Event::HandshakeTimeout,
        Event::Stalled,
        Event::Trapped,
        Event::TimedOut,
        Event::NoInstance,
        Event::Silent,
        Event::WaitedForInstance,
        Event::HttpRedirected,
        Event::HttpAcmeChallenge,
        Event::HttpBadRequest,
        Event::HttpTimedOut,
        Event::HttpClosed,
        Event::AcmeInstalled,
        Event::AcmeFailed,
        Event::ReloadInstalled,
        Event::ReloadFailed,
    ];

    /// Its name in the stats line.
    pub fn name(self) -> &'static str {
        match self {
            Event::Served => "served",
            Event::TlsFailed => "tls-failed",
            Event::IoFailed => "io-failed",
            Event::NotInitialised => "not-initialised",
            Event::HandshakeTimeout => "handshake-timeout",
            Event::Stalled => "stalled",
            Event::Trapped => "trapped",
            Event::TimedOut => "timed-out",
            Event::NoInstance => "no-instance",
            Event::Silent => "silent",
            Event::WaitedForInstance => "waited-for-instance",
            Event::HttpRedirected => "http-redirected",
            Event::HttpAcmeChallenge => "http-acme-challenge",
            Event::HttpBadRequest => "http-bad-request",
            Event::HttpTimedOut => "http-timed-out",
            Event::HttpClosed => "http-closed",
            Event::AcmeInstalled => "acme-installed",
            Event::AcmeFailed => "acme-failed",
            Event::ReloadInstalled => "reloaded",
            Event::ReloadFailed => "reload-failed",
        }
    }
}

impl core::fmt::Display for Event {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Connections by how they ended, and the most memory one guest instance used.
#[derive(Debug, Default)]
pub struct Stats {
    counts: [AtomicU64; Event::ALL.len()],
    memory_peak: AtomicUsize,
}

impl Stats {
    pub fn count(&self, event: Event) {
        self.counts[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, event: Event) -> u64 {
        self.counts[event as usize].load(Ordering::Relaxed)
    }

    pub fn note_memory_peak(&self, bytes: usize) {
        self.memory_peak.fetch_max(bytes, Ordering::Relaxed);
    }

    /// The most linear memory any one guest instance has used.
    pub fn memory_peak(&self) -> usize {
        self.memory_peak.load(Ordering::Relaxed)
    }
}

impl core::fmt::Display for Stats {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let counted: Vec<String> = Event::ALL
            .iter()
            .filter(|&&event| self.get(event) > 0)
            .map(|&event| format!("{}={}", event.name(), self.get(event)))
            .collect();
        if counted.is_empty() {
            return write!(f, "no connections");
        }
        write!(
            f,
            "{} guest-memory-peak={}KiB",
            counted.join(" "),
            self.memory_peak() >> 10
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString as _;

    #[test]
    fn every_event_has_its_own_counter_and_name() {
        let stats = Stats::default();
        for (n, &event) in Event::ALL.iter().enumerate() {
            assert_eq!(event as usize, n, "ALL is in declaration order");
            for _ in 0..=n {
                stats.count(event);
            }
        }
        for (n, &event) in Event::ALL.iter().enumerate() {
            assert_eq!(stats.get(event), n as u64 + 1, "{}", event.name());
        }
        let names: std::collections::HashSet<_> =
            Event::ALL.iter().map(|event| event.name()).collect();
        assert_eq!(names.len(), Event::ALL.len());
        assert!(
            stats.to_string().starts_with("served=1 tls-failed=2 "),
            "{stats}"
        );
        assert_eq!(Stats::default().to_string(), "no connections");
    }
}
