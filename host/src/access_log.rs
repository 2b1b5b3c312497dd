//! The access log: one line per connection to stderr (time, peer, what was served or why not,
//! the guest memory it used, how long it took since it was accepted), made and written here, and
//! the counts of how connections ended, printed every `--stats` seconds and at shutdown, and read
//! by the tests.

use crate::bindings::{Ending, Failure};
use crate::log;
use crate::options::Timeouts;
use crate::redirect::RedirectOutcome;
use crate::sandbox::{Outcome, Report};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the stats count, and the counts (shared with the unikernel).
pub use tls_site_shared::stats::{Event, Stats};

/// Writes `line` with how long its connection took since it was `accepted`, which ends it.
fn write(line: std::fmt::Arguments<'_>, accepted: Instant) {
    let ms = accepted.elapsed().as_secs_f64() * 1e3;
    log(format_args!("{line} ms={ms:.1}"));
}

/// Logs an HTTPS connection that never reached an instance, and counts it.
pub fn silent(stats: &Stats, peer: SocketAddr, why: &str, accepted: Instant) {
    stats.count(Event::Silent);
    write(format_args!("https {peer} {why}"), accepted);
}

/// Logs a served (or not) HTTPS connection, and counts it by how it ended.
pub fn https(
    stats: &Stats,
    peer: SocketAddr,
    timeouts: &Timeouts,
    report: Report,
    accepted: Instant,
) {
    write(
        format_args!("{}", https_line(stats, peer, timeouts, report)),
        accepted,
    );
}

/// Logs a port-80 connection, and counts it.
pub fn http(stats: &Stats, peer: SocketAddr, outcome: RedirectOutcome, accepted: Instant) {
    write(
        format_args!("{}", http_line(stats, peer, outcome)),
        accepted,
    );
}

/// Logs a connection of the edge twin's `serve-http`: how many requests it carried, or why it
/// failed (each request has a line of its own, from edge.rs).
pub fn edge(peer: SocketAddr, served: Result<usize, String>, accepted: Instant) {
    match served {
        Ok(requests) => write(
            format_args!("http {peer} closed after {requests} requests"),
            accepted,
        ),
        Err(why) => write(format_args!("http {peer} failed: {why}"), accepted),
    }
}

/// The line for a served (or not) HTTPS connection, all but its time, counted in `stats` by how
/// it ended.
fn https_line(stats: &Stats, peer: SocketAddr, timeouts: &Timeouts, report: Report) -> String {
    let Report {
        outcome,
        memory_peak,
    } = report;
    stats.count(match &outcome {
        Outcome::Served(_) => Event::Served,
        Outcome::Failed(Failure::Tls(_)) => Event::TlsFailed,
        Outcome::Failed(Failure::Io(_)) => Event::IoFailed,
        Outcome::Failed(Failure::NotInitialised) => Event::NotInitialised,
        Outcome::Failed(Failure::HandshakeTimeout) => Event::HandshakeTimeout,
        Outcome::Failed(Failure::Stalled) => Event::Stalled,
        Outcome::Trapped(_) => Event::Trapped,
        Outcome::TimedOut => Event::TimedOut,
        Outcome::NoInstance(_) => Event::NoInstance,
    });
    stats.note_memory_peak(memory_peak);
    let seconds = |duration: Duration| duration.as_secs_f64();
    let line = match outcome {
        Outcome::Served(served) => format!(
            "https {peer} sni={} resource={} bytes={} kx={} ok{}{}",
            served.server_name.as_deref().unwrap_or("-"),
            served.resource,
            served.bytes,
            served.key_exchange.as_deref().unwrap_or("-"),
            if served.client_finished {
                ""
            } else {
                " (client did not finish its handshake)"
            },
            match served.ending {
                Ending::Clean => "",
                Ending::TimedOut => " (client did not close within the drain's second)",
                Ending::CutOff =>
                    " (client cut off: it sent more than the drain's 256 KiB after the response, and got a reset)",
            },
        ),
        Outcome::Failed(Failure::Tls(why)) => format!("https {peer} failed tls: {why}"),
        Outcome::Failed(Failure::Io(why)) => format!("https {peer} failed io: {why}"),
        Outcome::Failed(Failure::NotInitialised) => {
            format!("https {peer} failed: component not initialised")
        }
        Outcome::Failed(Failure::HandshakeTimeout) => {
            format!(
                "https {peer} timed out: no whole ClientHello within {} s (--handshake-timeout)",
                seconds(timeouts.handshake)
            )
        }
        Outcome::Failed(Failure::Stalled) => {
            format!(
                "https {peer} stalled: the client took none of the response for {} s (--stall-timeout)",
                seconds(timeouts.stall)
            )
        }
        Outcome::Trapped(why) => format!("https {peer} trapped: {}", why.replace('\n', " | ")),
        Outcome::TimedOut => format!(
            "https {peer} timed out: connection not done within {} s (--timeout)",
            seconds(timeouts.connection)
        ),
        Outcome::NoInstance(why) => format!("https {peer} refused: no instance: {why}"),
    };
    format!("{line} mem={}KiB", memory_peak >> 10)
}

/// The line for a port-80 connection, all but its time, counted in `stats`.
fn http_line(stats: &Stats, peer: SocketAddr, outcome: RedirectOutcome) -> String {
    stats.count(match &outcome {
        RedirectOutcome::Redirected(_) => Event::HttpRedirected,
        RedirectOutcome::AcmeChallenge(_) => Event::HttpAcmeChallenge,
        RedirectOutcome::BadRequest(_) => Event::HttpBadRequest,
        RedirectOutcome::TimedOut => Event::HttpTimedOut,
        RedirectOutcome::Closed => Event::HttpClosed,
    });
    outcome.log_line(peer)
}

/// The host process's resident memory, from /proc (Linux).
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Served;

    #[test]
    fn a_served_line_names_the_key_exchange_and_a_client_that_was_cut_off() {
        let served = |ending| {
            let served = Served {
                server_name: Some("tls-site.localhost".into()),
                resource: "tls-site.localhost".into(),
                bytes: 3119,
                client_finished: true,
                key_exchange: Some("X25519MLKEM768".into()),
                ending,
            };
            Report {
                outcome: Outcome::Served(served),
                memory_peak: 1 << 20,
            }
        };
        let (stats, peer) = (Stats::default(), SocketAddr::from(([127, 0, 0, 1], 5000)));
        let timeouts = Timeouts {
            handshake: Duration::from_secs(3),
            stall: Duration::from_secs(5),
            connection: Duration::from_secs(10),
        };
        let clean = https_line(&stats, peer, &timeouts, served(Ending::Clean));
        assert_eq!(
            clean,
            "https 127.0.0.1:5000 sni=tls-site.localhost resource=tls-site.localhost bytes=3119 kx=X25519MLKEM768 ok mem=1024KiB"
        );
        let cut_off = https_line(&stats, peer, &timeouts, served(Ending::CutOff));
        assert!(cut_off.contains(" ok (client cut off: "), "{cut_off}");
        assert_eq!(stats.get(Event::Served), 2);
    }
}
