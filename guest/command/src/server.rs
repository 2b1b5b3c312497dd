//! The command's server: `wasi:cli/run` reads the options and the certificates, listens with
//! `wasi:sockets/tcp`, and serves every connection in one loop.
//!
//! The loop waits with one `wasi:io/poll.poll` on the listener (while under the cap of open
//! connections), on each open connection's input or output stream (whichever it waits for) and on
//! a clock for the nearest deadline. Each connection is a [`Connection`] (the tls-site
//! component's TLS, without I/O) with its socket and streams; a ready one is advanced as far as it
//! goes without waiting, and a bounded amount of it, so that none holds up the others. A
//! connection that fails, stalls or runs out of time is dropped, with its log line; nothing a
//! client sends ends the loop.

use crate::{Options, certs, deadlines, nanos};
use bindings::wasi::clocks::monotonic_clock;
use bindings::wasi::io::poll::{self, Pollable};
use bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};
use bindings::wasi::sockets::instance_network::instance_network;
use bindings::wasi::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};
use bindings::wasi::sockets::tcp::{ShutdownType, TcpSocket};
use bindings::wasi::sockets::tcp_create_socket::create_tcp_socket;
use site::SITE;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tls_site_guest::connection::{Connection, DRAIN_NANOS, Event, Next, READ_CHUNK};
use tls_site_guest::{Ending, Failure, SniTable, portable, request};

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "tls-site-command",
        generate_all,
    });
}

struct Command;

impl bindings::exports::wasi::cli::run::Guest for Command {
    /// Serves until the runtime stops it; returns (an error: exit status 1) only if it cannot start.
    fn run() -> Result<(), ()> {
        let error = match start() {
            Ok(never) => match never {},
            Err(error) => error,
        };
        eprintln!("tls-site command: {error}");
        Err(())
    }
}

bindings::export!(Command with_types_in bindings);

enum Never {}

fn start() -> Result<Never, String> {
    let options = Options::parse(std::env::args().skip(1), |name| std::env::var(name).ok())?;
    let (identities, warnings) = certs::load_dir(&options.certs, options.allow_expired)
        .map_err(|error| error.to_string())?;
    for warning in warnings {
        eprintln!("tls-site command: WARNING {warning}");
    }
    let certificates = identities.len();
    let table = SniTable::new(&SITE, identities, Arc::new(portable::provider()), None)
        .map_err(|error| format!("{}: {error}", options.certs.display()))?;
    // Every connection borrows it, for as long as the command runs.
    let table: &'static SniTable = Box::leak(Box::new(table));
    let listener = listen(options.addr)?;
    eprintln!(
        "tls-site command: listening on https://{} ({certificates} certificate(s) from {}, at most {} connections at once)",
        options.addr,
        options.certs.display(),
        options.max_connections,
    );
    serve(table, &listener, options.max_connections)
}

/// A socket listening on `addr`, in the network the runtime grants.
fn listen(addr: SocketAddr) -> Result<TcpSocket, String> {
    let failed = |what: &str, error: ErrorCode| {
        let hint = match error {
            ErrorCode::AccessDenied => {
                "; the runtime must grant the network (wasmtime run -S inherit-network)"
            }
            ErrorCode::AddressInUse => "; another server listens there",
            _ => "",
        };
        format!("{addr}: cannot {what}: {}{hint}", error.name())
    };
    let family = if addr.is_ipv4() {
        IpAddressFamily::Ipv4
    } else {
        IpAddressFamily::Ipv6
    };
    let socket = create_tcp_socket(family).map_err(|error| failed("make a socket", error))?;
    let network = instance_network();
    socket
        .start_bind(&network, wasi_address(addr))
        .map_err(|error| failed("bind", error))?;
    finish(&socket, TcpSocket::finish_bind).map_err(|error| failed("bind", error))?;
    // As many as a burst of clients needs; the kernel caps it (somaxconn).
    let _ = socket.set_listen_backlog_size(4096);
    socket
        .start_listen()
        .map_err(|error| failed("listen", error))?;
    finish(&socket, TcpSocket::finish_listen).map_err(|error| failed("listen", error))?;
    Ok(socket)
}

/// Waits for a socket's `start-*` to finish.
fn finish(
    socket: &TcpSocket,
    finish: fn(&TcpSocket) -> Result<(), ErrorCode>,
) -> Result<(), ErrorCode> {
    loop {
        match finish(socket) {
            Err(ErrorCode::WouldBlock) => socket.subscribe().block(),
            done => return done,
        }
    }
}

fn wasi_address(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(addr) => {
            let [a, b, c, d] = addr.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port: addr.port(),
                address: (a, b, c, d),
            })
        }
        SocketAddr::V6(addr) => {
            let [a, b, c, d, e, f, g, h] = addr.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: addr.port(),
                flow_info: addr.flowinfo(),
                address: (a, b, c, d, e, f, g, h),
                scope_id: addr.scope_id(),
            })
        }
    }
}

fn std_address(addr: IpSocketAddress) -> SocketAddr {
    match addr {
        IpSocketAddress::Ipv4(Ipv4SocketAddress {
            port,
            address: (a, b, c, d),
        }) => SocketAddr::new(IpAddr::from([a, b, c, d]), port),
        IpSocketAddress::Ipv6(Ipv6SocketAddress {
            port,
            address: (a, b, c, d, e, f, g, h),
            ..
        }) => SocketAddr::new(IpAddr::from([a, b, c, d, e, f, g, h]), port),
    }
}

/// After an accept fails for want of resources (file descriptors, memory), how long the listener
/// is left alone, rather than spinning on it.
const ACCEPT_BACKOFF: u64 = 100_000_000;

/// The loop: never returns.
fn serve(
    table: &'static SniTable,
    listener: &TcpSocket,
    max_connections: usize,
) -> Result<Never, String> {
    let incoming = listener.subscribe();
    let mut open: Vec<Open> = Vec::new();
    let mut accept_after = 0;
    loop {
        let now = monotonic_clock::now();
        let accepting = open.len() < max_connections && now >= accept_after;
        let nearest = open.iter().filter_map(Open::deadline).min();
        let nearest = if accepting {
            nearest
        } else {
            nearest
                .into_iter()
                .chain(Some(accept_after).filter(|&t| t > now))
                .min()
        };
        let ready = {
            let timer = nearest.map(monotonic_clock::subscribe_instant);
            let mut waiting: Vec<&Pollable> = Vec::with_capacity(open.len() + 2);
            waiting.extend(open.iter().map(Open::pollable));
            if accepting {
                waiting.push(&incoming);
            }
            waiting.extend(timer.as_ref());
            poll::poll(&waiting)
        };
        let now = monotonic_clock::now();
        let waited_on = open.len();
        for index in ready
            .iter()
            .map(|&index| index as usize)
            .filter(|&index| index < waited_on)
        {
            open[index].advance(now);
        }
        if accepting && ready.contains(&(waited_on as u32)) {
            while open.len() < max_connections {
                match listener.accept() {
                    Ok((socket, input, output)) => {
                        let mut connection = Open::new(table, socket, input, output, now);
                        connection.advance(now);
                        open.push(connection);
                    }
                    Err(ErrorCode::WouldBlock) => break,
                    // The client gave up before it was accepted.
                    Err(ErrorCode::ConnectionAborted | ErrorCode::ConnectionReset) => continue,
                    Err(error) => {
                        eprintln!(
                            "tls-site command: accept failed: {}; not accepting for {} ms",
                            error.name(),
                            ACCEPT_BACKOFF / 1_000_000
                        );
                        accept_after = now + ACCEPT_BACKOFF;
                        break;
                    }
                }
            }
        }
        for connection in open.iter_mut().filter(|connection| {
            connection
                .deadline()
                .is_some_and(|deadline| deadline <= now)
        }) {
            connection.expire(now);
        }
        open.retain_mut(|connection| connection.next != Next::Done || !connection.release(now));
    }
}

/// Reads a ready connection makes before the loop moves on to the others (16 KiB each).
const READS_PER_TURN: usize = 8;

/// One open connection: its TLS and its socket. Fields drop in order: the pollables before their
/// streams, the streams before their socket.
struct Open {
    readable: Pollable,
    writable: Pollable,
    input: InputStream,
    output: OutputStream,
    socket: TcpSocket,
    tls: Connection<'static>,
    peer: String,
    /// What the connection waits for once `outgoing` has left.
    next: Next,
    /// Bytes for the client, from `Connection::take_outgoing`, and how many of them are written.
    outgoing: Vec<u8>,
    written: usize,
    /// All of `outgoing` is written and flushed; waiting until it has left.
    flushed: bool,
    write_closed: bool,
    /// Its log line is written: it is done, and waits to be released.
    logged: bool,
    accepted: u64,
    first_bytes: Option<u64>,
    /// When the last bytes were taken by the client: the stall deadline counts from then.
    last_progress: u64,
    /// When `next` last changed: a drain's time bound counts from then.
    phase_started: u64,
}

impl Open {
    fn new(
        table: &'static SniTable,
        socket: TcpSocket,
        input: InputStream,
        output: OutputStream,
        now: u64,
    ) -> Open {
        let peer = socket.remote_address().map_or_else(
            |error| error.name().to_owned(),
            |addr| std_address(addr).to_string(),
        );
        Open {
            readable: input.subscribe(),
            writable: output.subscribe(),
            input,
            output,
            socket,
            tls: Connection::new(table),
            peer,
            next: Next::Read,
            outgoing: Vec::new(),
            written: 0,
            flushed: false,
            write_closed: false,
            logged: false,
            accepted: now,
            first_bytes: None,
            last_progress: now,
            phase_started: now,
        }
    }

    fn sending(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// What it waits on: the client taking bytes (or, done, a last write to finish), or sending them.
    fn pollable(&self) -> &Pollable {
        if self.sending() || self.next == Next::Done {
            &self.writable
        } else {
            &self.readable
        }
    }

    /// When the wait it is in runs out: the stall deadline while sending; the hello and
    /// handshake deadlines while reading the handshake; the drain's bound after the response;
    /// and in any case the connection's own deadline. None once it is done.
    fn deadline(&self) -> Option<u64> {
        let wait = if self.next == Next::Done {
            return None;
        } else if self.sending() {
            self.last_progress + nanos(deadlines::STALL)
        } else {
            match (self.next, self.first_bytes) {
                (Next::Read, None) => self.accepted + nanos(deadlines::HELLO),
                (Next::Read, Some(first)) => first + nanos(deadlines::HANDSHAKE),
                (Next::Drain | Next::Close, _) => self.phase_started + DRAIN_NANOS,
                (Next::Write | Next::Done, _) => self.phase_started,
            }
        };
        Some(wait.min(self.accepted + nanos(deadlines::CONNECTION)))
    }

    /// Once done: logs it, ends its write side, and says whether it can be dropped now. Not while
    /// the runtime still has bytes of a write in flight: wasmtime's drop of the output stream
    /// waits for them, which would stop the loop until a client that reads nothing goes away. Such
    /// a connection stays open (counted against the cap) until that write ends.
    fn release(&mut self, now: u64) -> bool {
        if !self.logged {
            self.log(now);
            self.logged = true;
        }
        // With no write in flight, the stream is closed at once; with one, once it has finished.
        let _ = self.socket.shutdown(ShutdownType::Send);
        !matches!(self.output.check_write(), Ok(0))
    }

    /// Its deadline has passed: the client stalled, or did not send in time.
    fn expire(&mut self, now: u64) {
        let event = match self.sending() {
            true => {
                self.outgoing = Vec::new();
                Event::Broken(Failure::Stalled)
            }
            false => Event::TimedOut,
        };
        self.step(event, now);
        self.advance(now);
    }

    fn step(&mut self, event: Event<'_>, now: u64) {
        let next = self.tls.step(event);
        if next != self.next {
            self.phase_started = now;
        }
        self.next = next;
        let outgoing = self.tls.take_outgoing();
        if !outgoing.is_empty() {
            (
                self.outgoing,
                self.written,
                self.flushed,
                self.last_progress,
            ) = (outgoing, 0, false, now);
        }
    }

    /// Does what the connection can without waiting: sends what it has, then reads what the
    /// client sent, a few times at most.
    fn advance(&mut self, now: u64) {
        let mut reads = 0;
        loop {
            if self.sending() {
                match self.send(now) {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(failure) => {
                        self.outgoing = Vec::new();
                        self.step(Event::Broken(failure), now);
                        continue;
                    }
                }
            }
            match self.next {
                Next::Done => return,
                Next::Write => self.step(Event::Sent, now),
                Next::Read | Next::Drain | Next::Close => {
                    if self.next == Next::Close && !self.write_closed {
                        // After the bytes written: the client sees the end of the stream (a FIN).
                        let _ = self.socket.shutdown(ShutdownType::Send);
                        self.write_closed = true;
                    }
                    if reads == READS_PER_TURN {
                        return;
                    }
                    reads += 1;
                    match self.input.read(READ_CHUNK) {
                        Ok(bytes) if bytes.is_empty() => return,
                        Ok(bytes) => {
                            self.first_bytes.get_or_insert(now);
                            self.step(Event::Received(&bytes), now);
                        }
                        Err(StreamError::Closed) => self.step(Event::EndOfStream, now),
                        Err(StreamError::LastOperationFailed(error)) => {
                            self.step(Event::Broken(Failure::Io(error.to_debug_string())), now)
                        }
                    }
                }
            }
        }
    }

    /// Writes `outgoing` as far as the stream takes it; true once it has all left.
    fn send(&mut self, now: u64) -> Result<bool, Failure> {
        while self.written < self.outgoing.len() {
            let room = self.output.check_write().map_err(stream_failure)?;
            if room == 0 {
                return Ok(false);
            }
            let end = self
                .outgoing
                .len()
                .min(self.written.saturating_add(room as usize));
            self.output
                .write(&self.outgoing[self.written..end])
                .map_err(stream_failure)?;
            (self.written, self.last_progress) = (end, now);
        }
        if !self.flushed {
            self.output.flush().map_err(stream_failure)?;
            self.flushed = true;
        }
        // Writable again once the bytes have left.
        if self.output.check_write().map_err(stream_failure)? == 0 {
            return Ok(false);
        }
        self.outgoing = Vec::new();
        Ok(true)
    }

    /// Its access-log line, to stderr.
    fn log(&self, now: u64) {
        let peer = &self.peer;
        let line = match self.tls.outcome() {
            Ok(served) => format!(
                "https {peer} sni={} resource={} bytes={} kx={} {} ok{}{}",
                served.server_name.as_deref().unwrap_or("-"),
                served.resource,
                served.bytes,
                served
                    .key_exchange
                    .map_or("-".to_owned(), |group| format!("{group:?}")),
                request::log_fields(served.request.as_ref()),
                if served.client_finished {
                    ""
                } else {
                    " (client did not finish its handshake)"
                },
                match served.ending {
                    Ending::Clean => "",
                    Ending::TimedOut => " (client did not close within the drain's second)",
                    Ending::CutOff => " (client cut off after the drain's 256 KiB)",
                },
            ),
            Err(Failure::Tls(why)) => format!("https {peer} failed tls: {why}"),
            Err(Failure::Io(why)) => format!("https {peer} failed io: {why}"),
            Err(Failure::HandshakeTimeout) => {
                format!("https {peer} timed out: no whole ClientHello in time")
            }
            Err(Failure::Stalled) => format!(
                "https {peer} stalled: the client took none of the response for {} s",
                deadlines::STALL.as_secs()
            ),
        };
        eprintln!("{line} {:.1}ms", (now - self.accepted) as f64 / 1e6);
    }
}

fn stream_failure(error: StreamError) -> Failure {
    match error {
        StreamError::Closed => Failure::Io("the client closed the connection".into()),
        StreamError::LastOperationFailed(error) => Failure::Io(error.to_debug_string()),
    }
}
