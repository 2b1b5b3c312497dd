//! The access log: one event per connection (time, peer, what was served or why not, the
//! client's request, the guest memory it used, how long it took since it was accepted), made and
//! written here through `logging.rs` (a text line, or a JSON object with the same facts as
//! fields), and the counts of how connections ended: the stats, printed every `--stats` seconds
//! and at shutdown and read by the tests, and the metrics (`metrics.rs`), counted here too.

use crate::bindings::{Ending, Failure, Request, Served};
use crate::logging::ACCESS;
use crate::metrics::Metrics;
use crate::options::Timeouts;
use crate::redirect::RedirectOutcome;
use crate::sandbox::{Outcome, Report};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the stats count, and the counts (shared with the unikernel).
pub use tls_site_shared::stats::{Event, Stats};

/// What an access-log event says besides its line: the fields of its JSON object.
struct Fields<'a> {
    scheme: &'static str,
    peer: SocketAddr,
    outcome: Option<Event>,
    served: Option<&'a Served>,
    guest_memory: usize,
}

impl Fields<'_> {
    fn of(scheme: &'static str, peer: SocketAddr, outcome: Option<Event>) -> Fields<'static> {
        Fields {
            scheme,
            peer,
            outcome,
            served: None,
            guest_memory: 0,
        }
    }
}

/// Writes a connection's access-log event: `line` with how long the connection took, and its
/// `fields` (wit/tls-site.wit's `served` and `request`, `-` where there is none).
fn write(line: std::fmt::Arguments<'_>, fields: Fields<'_>, took: Duration) {
    let ms = took.as_secs_f64() * 1e3;
    let served = fields.served;
    let request = served.and_then(|served| served.request.as_ref());
    tracing::info!(
        target: ACCESS,
        scheme = fields.scheme,
        peer = %fields.peer,
        outcome = fields.outcome.map_or("-", Event::name),
        sni = served.and_then(|served| served.server_name.as_deref()).unwrap_or("-"),
        resource = served.map_or("-", |served| served.resource.as_str()),
        bytes = served.map_or(0, |served| served.bytes),
        kx = served.and_then(|served| served.key_exchange.as_deref()).unwrap_or("-"),
        method = request.map_or("-", |request| request.method.as_str()),
        uri = request.map_or("-", |request| request.target.as_str()),
        version = request.map_or("-", |request| request.version.as_str()),
        user_agent = request.and_then(|request| request.user_agent.as_deref()).unwrap_or("-"),
        guest_memory = fields.guest_memory as u64,
        duration_ms = ms,
        "{} ms={:.1}",
        line,
        ms
    );
}

/// Logs an HTTPS connection that never reached an instance (`Silent`, `HandshakeTimeout`), and
/// counts it.
pub fn not_admitted(
    stats: &Stats,
    metrics: &Metrics,
    peer: SocketAddr,
    event: Event,
    why: &str,
    accepted: Instant,
) {
    stats.count(event);
    metrics.connection_ended(event.name(), None);
    let took = accepted.elapsed();
    metrics.observe_times(took, None, None);
    let fields = Fields::of("https", peer, Some(event));
    write(format_args!("https {peer} {why}"), fields, took);
}

/// Logs a served (or not) HTTPS connection, and counts it by how it ended, in `stats` and the
/// `metrics`, before its line is written (a test that has seen the line finds it counted).
pub fn https(
    stats: &Stats,
    metrics: &Metrics,
    peer: SocketAddr,
    timeouts: &Timeouts,
    report: Report,
    accepted: Instant,
) {
    let Report {
        outcome,
        memory_peak,
        milestones,
    } = report;
    let event = ending(&outcome);
    stats.count(event);
    stats.note_memory_peak(memory_peak);
    metrics.guest_memory_used(memory_peak);
    let took = accepted.elapsed();
    let served = match &outcome {
        Outcome::Served(served) => Some(served),
        _ => None,
    };
    let since_accepted = |at: Option<Instant>| at.map(|at| at.saturating_duration_since(accepted));
    let first_byte = served.and(since_accepted(milestones.response_sent));
    let handshake = served
        .filter(|served| served.client_finished)
        .and(since_accepted(milestones.client_finished));
    metrics.observe_times(took, first_byte, handshake);
    if let Some(served) = served {
        metrics.sent(served.bytes);
    }
    metrics.connection_ended(
        event.name(),
        served.map(|served| (served.resource.clone(), served.key_exchange.as_deref())),
    );
    let fields = Fields {
        served,
        guest_memory: memory_peak,
        ..Fields::of("https", peer, Some(event))
    };
    write(
        format_args!(
            "{} mem={}KiB",
            https_line(peer, timeouts, &outcome),
            memory_peak >> 10
        ),
        fields,
        took,
    );
}

/// Logs a port-80 connection, and counts it.
pub fn http(
    stats: &Stats,
    metrics: &Metrics,
    peer: SocketAddr,
    outcome: RedirectOutcome,
    accepted: Instant,
) {
    let event = http_ending(&outcome);
    stats.count(event);
    metrics.connection_ended(event.name(), None);
    let fields = Fields::of("http", peer, Some(event));
    write(
        format_args!("{}", outcome.log_line(peer)),
        fields,
        accepted.elapsed(),
    );
}

/// Logs a connection of the edge twin's `serve-http`: how many requests it carried, or why it
/// failed (each request has a line of its own, from edge.rs).
pub fn edge(peer: SocketAddr, served: Result<usize, String>, accepted: Instant) {
    let (fields, took) = (Fields::of("http", peer, None), accepted.elapsed());
    match served {
        Ok(requests) => write(
            format_args!("http {peer} closed after {requests} requests"),
            fields,
            took,
        ),
        Err(why) => write(format_args!("http {peer} failed: {why}"), fields, took),
    }
}

/// How an HTTPS connection ended, as the stats and the metrics count it.
fn ending(outcome: &Outcome) -> Event {
    match outcome {
        Outcome::Served(_) => Event::Served,
        Outcome::Failed(Failure::Tls(_)) => Event::TlsFailed,
        Outcome::Failed(Failure::Io(_)) => Event::IoFailed,
        Outcome::Failed(Failure::NotInitialised) => Event::NotInitialised,
        Outcome::Failed(Failure::HandshakeTimeout) => Event::HandshakeTimeout,
        Outcome::Failed(Failure::Stalled) => Event::Stalled,
        Outcome::Trapped(_) => Event::Trapped,
        Outcome::TimedOut => Event::TimedOut,
        Outcome::NoInstance(_) => Event::NoInstance,
    }
}

/// A request as the text line has it: `request="GET / HTTP/1.1" ua="curl/8.5.0"`, `-` for what
/// the client did not send. The guest has escaped `"` in them.
struct RequestFields<'a>(Option<&'a Request>);

impl std::fmt::Display for RequestFields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(request) = self.0 else {
            return f.write_str("request=- ua=-");
        };
        write!(
            f,
            "request=\"{} {} {}\" ",
            request.method, request.target, request.version
        )?;
        match &request.user_agent {
            Some(agent) => write!(f, "ua=\"{agent}\""),
            None => f.write_str("ua=-"),
        }
    }
}

/// The line for a served (or not) HTTPS connection, all but its time, memory and duration.
fn https_line(peer: SocketAddr, timeouts: &Timeouts, outcome: &Outcome) -> String {
    let seconds = |duration: Duration| duration.as_secs_f64();
    match outcome {
        Outcome::Served(served) => format!(
            "https {peer} sni={} resource={} bytes={} kx={} {} ok{}{}",
            served.server_name.as_deref().unwrap_or("-"),
            served.resource,
            served.bytes,
            served.key_exchange.as_deref().unwrap_or("-"),
            RequestFields(served.request.as_ref()),
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
    }
}

/// How a port-80 connection ended.
fn http_ending(outcome: &RedirectOutcome) -> Event {
    match outcome {
        RedirectOutcome::Redirected(_) => Event::HttpRedirected,
        RedirectOutcome::AcmeChallenge(_) => Event::HttpAcmeChallenge,
        RedirectOutcome::BadRequest(_) => Event::HttpBadRequest,
        RedirectOutcome::TimedOut => Event::HttpTimedOut,
        RedirectOutcome::Closed => Event::HttpClosed,
    }
}

#[cfg(test)]
mod tests;
