//! The one loop: smoltcp polled, listeners replaced as they are taken, each connection moved on
//! by what its socket allows, the power button looked at. Nothing runs but this loop.

use crate::clock::Instant;
use crate::log;
use crate::sandbox::{Connection, Sandbox, Timeouts, https_line};
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::iface::{Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::IpEndpoint;
use tls_site_shared::redirect::{self, RedirectOutcome, RedirectTable};
use tls_site_shared::stats::{Event, Stats};

/// Sockets listening on each port at once: a client's SYN finds one even while others are taken.
const LISTENERS_PER_PORT: usize = 4;
/// Port 80's socket buffers: a request head arrives in pieces; the answer is one small write.
const HTTP_RECEIVE_BUFFER: usize = 4096;
const HTTP_SEND_BUFFER: usize = 1024;
/// Port 443's: a ClientHello or a record at once in; a response flight out without waiting on
/// each segment's acknowledgement.
const HTTPS_RECEIVE_BUFFER: usize = 17 * 1024;
const HTTPS_SEND_BUFFER: usize = 64 * 1024;
/// How long a finished connection's socket may take to close (our FIN acknowledged, the peer's
/// received) before it is reset: a peer that never closes must not keep its buffers.
const CLOSING_MS: u64 = 2_000;
/// How long an HTTPS client may stay silent before it costs an instance (`--hello-timeout`).
const HELLO_TIMEOUT_MS: u64 = tls_site_shared::defaults::HELLO_MS;
/// After the power button, how long the connections in flight have to finish: as the host's
/// SIGTERM, `--hello-timeout` + `--timeout`.
const STOP_GRACE_MS: u64 = HELLO_TIMEOUT_MS + tls_site_shared::defaults::CONNECTION_MS;

/// The deadlines, as the host's defaults (`tls-site serve --help`).
#[derive(Clone, Copy)]
pub struct Deadlines {
    /// The whole connection, on either port (`--timeout`).
    pub connection_ms: u64,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            connection_ms: tls_site_shared::defaults::CONNECTION_MS,
        }
    }
}

/// A connection on port 80: its request head as it arrives, until answered.
struct HttpConnection {
    socket: SocketHandle,
    accepted: Instant,
    peer: Option<IpEndpoint>,
    head: Vec<u8>,
    until: Instant,
    /// Since when it has been over, its socket closing.
    finished: Option<Instant>,
}

/// A connection on port 443: waiting for its first bytes, then for an instance, then served.
struct HttpsConnection {
    socket: SocketHandle,
    accepted: Instant,
    peer: Option<IpEndpoint>,
    /// Until when it may stay silent before it is given up.
    hello_until: Instant,
    served: Option<Connection>,
    /// Whether it has had to wait for an instance (counted once).
    waited: bool,
    /// Since when it has been over, its socket closing.
    finished: Option<Instant>,
}

pub struct Server {
    interface: Interface,
    sockets: SocketSet<'static>,
    http_listeners: Vec<SocketHandle>,
    http: Vec<HttpConnection>,
    https_listeners: Vec<SocketHandle>,
    https: Vec<HttpsConnection>,
    table: RedirectTable,
    deadlines: Deadlines,
    sandbox: Sandbox,
    timeouts: Timeouts,
    /// Instances alive at once, at most: what the memory affords.
    max_instances: usize,
    stats: Stats,
    /// Whether the loop may sleep until the timer's next tick (timer.rs) when it has nothing to do.
    sleeps: bool,
}

fn socket(receive: usize, send: usize) -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; receive]),
        tcp::SocketBuffer::new(vec![0; send]),
    );
    // Each TLS flight and each answer leaves as one write: no Nagle.
    socket.set_nagle_enabled(false);
    socket
}

/// Listeners on `port` that took a connection: taken out of `listeners`, and replaced.
fn accept(
    sockets: &mut SocketSet<'static>,
    listeners: &mut Vec<SocketHandle>,
    port: u16,
    buffers: (usize, usize),
) -> Vec<(SocketHandle, Option<IpEndpoint>)> {
    let mut taken = Vec::new();
    listeners.retain(|&handle| {
        let socket = sockets.get::<tcp::Socket>(handle);
        if socket.is_listening() {
            return true;
        }
        taken.push((handle, socket.remote_endpoint()));
        false
    });
    while listeners.len() < LISTENERS_PER_PORT {
        let mut listener = socket(buffers.0, buffers.1);
        listener.listen(port).expect("a fresh socket listens");
        listeners.push(sockets.add(listener));
    }
    taken
}

impl Server {
    pub fn new(
        interface: Interface,
        table: RedirectTable,
        sandbox: Sandbox,
        max_instances: usize,
        sleeps: bool,
    ) -> Server {
        Server {
            interface,
            sockets: SocketSet::new(Vec::new()),
            http_listeners: Vec::new(),
            http: Vec::new(),
            https_listeners: Vec::new(),
            https: Vec::new(),
            table,
            deadlines: Deadlines::default(),
            sandbox,
            timeouts: Timeouts::default(),
            max_instances,
            stats: Stats::default(),
            sleeps,
        }
    }

    /// Runs until the power button is pressed and the connections then in flight are done.
    pub fn run(&mut self, device: &mut crate::net::Nic) {
        let mut stopping: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let timestamp = smoltcp::time::Instant::from_millis(now.millis_since_boot() as i64);
            let polled = self.interface.poll(timestamp, device, &mut self.sockets);
            if stopping.is_none() {
                self.accept_http(now);
                self.accept_https(now);
            }
            self.serve_http(now);
            self.serve_https(now);
            if stopping.is_none() && crate::power::power_button_pressed() {
                // As the host on SIGTERM: no new connections, those in flight finished within
                // their deadlines.
                log!(
                    "unikernel: stopping (the ACPI power button): no new connections; finishing those in flight"
                );
                self.close_listeners();
                stopping = Some(now);
            }
            if let Some(since) = stopping {
                let drained = self.https.is_empty() && self.http.is_empty();
                if drained || now.millis_since(since) >= STOP_GRACE_MS {
                    log!("stopped; connections: {}", self.stats);
                    return;
                }
            }
            // Nothing came in and no connection is open: sleep until the next tick (1 ms) rather
            // than poll again at once. While any connection is open the loop keeps polling, so a
            // client is never made to wait on the tick.
            let idle = polled == PollResult::None && self.https.is_empty() && self.http.is_empty();
            if self.sleeps && idle {
                crate::timer::sleep();
            }
        }
    }

    /// Stops listening on both ports: a client that comes now is refused (a reset).
    fn close_listeners(&mut self) {
        for handle in self
            .http_listeners
            .drain(..)
            .chain(self.https_listeners.drain(..))
        {
            self.sockets.get_mut::<tcp::Socket>(handle).abort();
            self.sockets.remove(handle);
        }
    }

    /// Listeners that took a connection become connections; new listeners take their place.
    fn accept_http(&mut self, now: Instant) {
        let buffers = (HTTP_RECEIVE_BUFFER, HTTP_SEND_BUFFER);
        for (socket, peer) in accept(&mut self.sockets, &mut self.http_listeners, 80, buffers) {
            self.http.push(HttpConnection {
                socket,
                accepted: now,
                peer,
                head: Vec::new(),
                until: now.plus_millis(self.deadlines.connection_ms),
                finished: None,
            });
        }
    }

    fn accept_https(&mut self, now: Instant) {
        let buffers = (HTTPS_RECEIVE_BUFFER, HTTPS_SEND_BUFFER);
        for (socket, peer) in accept(&mut self.sockets, &mut self.https_listeners, 443, buffers) {
            self.https.push(HttpsConnection {
                socket,
                accepted: now,
                peer,
                hello_until: now.plus_millis(HELLO_TIMEOUT_MS),
                served: None,
                waited: false,
                finished: None,
            });
        }
    }

    /// Each HTTPS connection moved on: silent ones given up, those that spoke given an instance
    /// while the memory affords one, those with one driven.
    fn serve_https(&mut self, now: Instant) {
        let mut instances = self.https.iter().filter(|c| c.served.is_some()).count();
        for connection in &mut self.https {
            if connection.finished.is_some() {
                continue;
            }
            let socket = self.sockets.get_mut::<tcp::Socket>(connection.socket);
            let peer = connection.peer.map(Peer);
            let peer = peer.as_ref().unwrap_or(&Peer::UNKNOWN);
            if connection.served.is_none() {
                let silent = if socket.can_recv() {
                    None
                } else if !socket.may_recv() && socket.state() != tcp::State::SynReceived {
                    Some(alloc::string::String::from(
                        "closed before sending anything",
                    ))
                } else if now >= connection.hello_until {
                    Some(alloc::format!(
                        "timed out: nothing sent within {} s (--hello-timeout)",
                        HELLO_TIMEOUT_MS as f64 / 1000.0
                    ))
                } else {
                    continue;
                };
                if let Some(why) = silent {
                    self.stats.count(Event::Silent);
                    log!("https {peer} {why} ms={}", Millis(now, connection.accepted));
                    socket.abort();
                    connection.finished = Some(now);
                    continue;
                }
                if instances >= self.max_instances {
                    if !connection.waited {
                        connection.waited = true;
                        self.stats.count(Event::WaitedForInstance);
                        log!(
                            "limit: all {} instances busy (the memory); {peer} waits",
                            self.max_instances
                        );
                    }
                    continue; // it waits, holding only its socket
                }
                instances += 1;
                connection.served = Some(self.sandbox.connection(now, self.timeouts));
            }
            let served = connection.served.as_mut().expect("given above");
            if let Some(outcome) = served.advance(socket, now) {
                self.stats.count(outcome.event());
                self.stats.note_memory_peak(served.memory_peak());
                log!(
                    "{} ms={}",
                    https_line(peer, &self.timeouts, &outcome, served.memory_peak()),
                    Millis(now, connection.accepted)
                );
                connection.finished = Some(now);
                // The instance goes now; the socket once it has closed.
                connection.served = None;
            }
        }
        let sockets = &mut self.sockets;
        self.https
            .retain(|connection| !closed(sockets, connection.socket, connection.finished, now));
    }

    fn serve_http(&mut self, now: Instant) {
        let (sockets, table, stats) = (&mut self.sockets, &self.table, &self.stats);
        self.http.retain_mut(|connection| {
            let socket = sockets.get_mut::<tcp::Socket>(connection.socket);
            if connection.finished.is_none()
                && let Some(outcome) = step_http(connection, socket, table, now)
            {
                let peer = connection.peer.map(Peer);
                stats.count(match outcome {
                    RedirectOutcome::Redirected(_) => Event::HttpRedirected,
                    RedirectOutcome::AcmeChallenge(_) => Event::HttpAcmeChallenge,
                    RedirectOutcome::BadRequest(_) => Event::HttpBadRequest,
                    RedirectOutcome::TimedOut => Event::HttpTimedOut,
                    RedirectOutcome::Closed => Event::HttpClosed,
                });
                log!(
                    "{} ms={}",
                    outcome.log_line(peer.as_ref().unwrap_or(&Peer::UNKNOWN)),
                    Millis(now, connection.accepted)
                );
                connection.finished = Some(now);
            }
            !closed(sockets, connection.socket, connection.finished, now)
        });
    }
}

/// Whether a finished connection's socket is done with, and so removed: closed, or in TIME-WAIT
/// (both sides' FINs are through), or reset after `CLOSING_MS` of waiting for that.
fn closed(
    sockets: &mut SocketSet<'static>,
    handle: SocketHandle,
    finished: Option<Instant>,
    now: Instant,
) -> bool {
    let Some(finished) = finished else {
        return false;
    };
    let socket = sockets.get_mut::<tcp::Socket>(handle);
    let done = matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait);
    if !done {
        if now.millis_since(finished) < CLOSING_MS {
            return false;
        }
        socket.abort();
    }
    sockets.remove(handle);
    true
}

/// One connection on port 80 moved on: its outcome once it has one.
fn step_http(
    connection: &mut HttpConnection,
    socket: &mut tcp::Socket<'_>,
    table: &RedirectTable,
    now: Instant,
) -> Option<RedirectOutcome> {
    if now >= connection.until {
        socket.abort();
        return Some(RedirectOutcome::TimedOut);
    }
    if socket.can_recv() {
        let room = redirect::MAX_REQUEST_HEAD - connection.head.len();
        let mut chunk = [0u8; 2048];
        let read = socket.recv_slice(&mut chunk[..room.min(2048)]).unwrap_or(0);
        connection.head.extend_from_slice(&chunk[..read]);
        // No ACME on the unikernel: no token to answer.
        let (response, outcome) = redirect::answer(table, &connection.head, |_| None)?;
        let _ = socket.send_slice(&response);
        socket.close();
        return Some(outcome);
    }
    if !socket.may_recv() && socket.state() != tcp::State::SynReceived {
        socket.close();
        return Some(RedirectOutcome::Closed);
    }
    None
}

/// How long a connection took since it was accepted, as the host's log ends its lines
/// (`ms=12.3`).
struct Millis(Instant, Instant);

impl core::fmt::Display for Millis {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:.1}", self.0.micros_since(self.1) as f64 / 1000.0)
    }
}

/// A peer's address as the log writes it.
struct Peer(IpEndpoint);

impl Peer {
    const UNKNOWN: Peer = Peer(IpEndpoint {
        addr: smoltcp::wire::IpAddress::Ipv4(smoltcp::wire::Ipv4Address::UNSPECIFIED),
        port: 0,
    });
}

impl core::fmt::Display for Peer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}:{}", self.0.addr, self.0.port)
    }
}
