//! One connection: the TLS handshake over the host's streams, the response picked by SNI, close_notify,
//! and a bounded drain of what the client still sends.
//!
//! The bytes travel through a [`Transport`]: the component's is the pair of `wasi:io` streams the
//! host hands it ([`WasiStreams`]); `examples/native.rs` gives the same code a `std::net` socket, so
//! the cost of the sandbox can be measured against the same TLS code run natively.

use crate::bindings::exports::tls_site::site::handler::{Failure, Served};
use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::io::poll;
use crate::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};
use rustls::{ServerConfig, ServerConnection};
use site::{Response, Site};
use std::io::{IoSlice, Write as _};
use std::sync::Arc;

/// How much of the client's trailing bytes (its Finished, request, close_notify) are read and
/// thrown away before closing, and for how long at most. Enough for any sane request; a client
/// that sends more or stalls is cut off, at the cost of a possible reset on its side only.
pub const DRAIN_BYTES: usize = 64 * 1024;
pub const DRAIN_NANOS: u64 = 1_000_000_000;

/// The largest single read asked of the host.
pub const READ_CHUNK: u64 = 16 * 1024;

/// The connection's bytes, as the TLS code needs them.
pub trait Transport {
    /// Blocks for the client's next bytes (at most `READ_CHUNK`); `None` when it has closed.
    fn read(&mut self) -> Result<Option<Vec<u8>>, Failure>;
    /// Writes `bytes` whole and waits until they have left.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Failure>;
    /// Reads and hands to `each` what the client sends, until `each` returns false, the client
    /// closes or an error, `max_bytes` or `max_nanos` from now, whichever comes first.
    fn drain(&mut self, max_bytes: usize, max_nanos: u64, each: &mut dyn FnMut(&[u8]) -> bool);
}

/// The component's transport: the two streams of the connection the host accepted, and how long
/// the client may keep the guest waiting.
pub struct WasiStreams<'a> {
    pub input: &'a InputStream,
    pub output: &'a OutputStream,
    /// When `read` gives up on the client: the end of its time to send a handshake.
    pub read_until: monotonic_clock::Instant,
    /// How long `write_all` waits for the client to take more of the response.
    pub stall: monotonic_clock::Duration,
}

impl Transport for WasiStreams<'_> {
    fn read(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        let readable = self.input.subscribe();
        let timeout = monotonic_clock::subscribe_instant(self.read_until);
        loop {
            match self.input.read(READ_CHUNK) {
                Ok(bytes) if bytes.is_empty() => {}
                Ok(bytes) => return Ok(Some(bytes)),
                Err(StreamError::Closed) => return Ok(None),
                Err(StreamError::LastOperationFailed(error)) => return Err(Failure::Io(error.to_debug_string())),
            }
            if !poll::poll(&[&readable, &timeout]).contains(&0) {
                return Err(Failure::HandshakeTimeout);
            }
        }
    }

    fn write_all(&mut self, mut rest: &[u8]) -> Result<(), Failure> {
        while !rest.is_empty() {
            let room = self.output.check_write().map_err(stream_failure)?;
            if room == 0 {
                self.wait_until_writable()?;
                continue;
            }
            let (now, later) = rest.split_at(rest.len().min(room as usize));
            self.output.write(now).map_err(stream_failure)?;
            rest = later;
        }
        // As `blocking-flush`, with the stall bound: the stream is writable again once the bytes
        // have left.
        self.output.flush().map_err(stream_failure)?;
        self.wait_until_writable()?;
        self.output.check_write().map(|_| ()).map_err(stream_failure)
    }

    fn drain(&mut self, max_bytes: usize, max_nanos: u64, each: &mut dyn FnMut(&[u8]) -> bool) {
        let timeout = monotonic_clock::subscribe_duration(max_nanos);
        let readable = self.input.subscribe();
        let mut drained = 0;
        while drained < max_bytes {
            let ready = poll::poll(&[&readable, &timeout]);
            if !ready.contains(&0) {
                break;
            }
            match self.input.read(READ_CHUNK) {
                Ok(bytes) => {
                    drained += bytes.len();
                    if !each(&bytes) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
}

impl WasiStreams<'_> {
    /// Waits for the client to take bytes, at most `stall`.
    fn wait_until_writable(&self) -> Result<(), Failure> {
        let writable = self.output.subscribe();
        let timeout = monotonic_clock::subscribe_duration(self.stall);
        match poll::poll(&[&writable, &timeout]).contains(&0) {
            true => Ok(()),
            false => Err(Failure::Stalled),
        }
    }
}

pub fn serve(
    config: &Arc<ServerConfig>,
    site: &'static Site,
    transport: &mut dyn Transport,
) -> Result<Served, Failure> {
    let mut tls = ServerConnection::new(config.clone()).map_err(tls_failure)?;
    let mut wire = Wire { transport, outgoing: Vec::with_capacity(READ_CHUNK as usize) };
    let mut pending: Option<Pending> = None;

    loop {
        match &mut pending {
            Some(response) => response.queue(&mut tls),
            // The ClientHello has been read once rustls has something to say or knows the name.
            None if tls.wants_write() || tls.server_name().is_some() => {
                let response = site.response_for(tls.server_name());
                pending = Some(Pending { response, written: 0 });
                continue;
            }
            None => {}
        }
        if tls.wants_write() {
            wire.flush(&mut tls)?;
            continue;
        }
        if pending.as_ref().is_some_and(Pending::done) {
            break;
        }
        // rustls waits for the client: the rest of its handshake, or room to queue more.
        match wire.read()? {
            Some(bytes) => wire.feed(&mut tls, &bytes)?,
            None if pending.is_none() => return Err(Failure::Io("closed before a ClientHello".into())),
            None => return Err(Failure::Io("closed before the response was sent".into())),
        }
    }

    // The whole response has left. rustls issues session tickets once the client's Finished is
    // in, and they must precede close_notify, so wait for it (bounded, like the drain). A client
    // that hangs up as soon as it has the body (curl does) was served all the same; it just
    // misses its ticket or our close_notify.
    if config.send_tls13_tickets > 0 && config.ticketer.enabled() {
        wire.await_client_finished(&mut tls);
    }
    tls.send_close_notify();
    let client_finished = match wire.flush(&mut tls) {
        Ok(()) => wire.drain(&mut tls),
        Err(_) => !tls.is_handshaking(),
    };
    let response = pending.expect("the loop ends with a response").response;
    Ok(Served {
        server_name: tls.server_name().map(str::to_owned),
        resource: response.hosts()[0].to_owned(),
        bytes: (response.head().len() + response.body().len()) as u64,
        client_finished,
    })
}

/// The response being queued into rustls: head and body, from `written` on.
struct Pending {
    response: &'static Response,
    written: usize,
}

impl Pending {
    fn total(&self) -> usize {
        self.response.head().len() + self.response.body().len()
    }

    fn done(&self) -> bool {
        self.written == self.total()
    }

    /// Hands rustls as much as it will take. Its buffers are bounded, so a large file goes out in
    /// pieces as the client reads, not all at once in memory.
    fn queue(&mut self, tls: &mut ServerConnection) {
        while !self.done() {
            let (head, body) = (self.response.head(), self.response.body());
            let slices = if self.written < head.len() {
                [IoSlice::new(&head[self.written..]), IoSlice::new(body)]
            } else {
                [IoSlice::new(&[]), IoSlice::new(&body[self.written - head.len()..])]
            };
            match tls.writer().write_vectored(&slices) {
                Ok(0) | Err(_) => return,
                Ok(n) => self.written += n,
            }
        }
    }
}

/// The connection, and a buffer in which each TLS flight is gathered so that it reaches the host
/// (and the socket) as one write.
struct Wire<'a> {
    transport: &'a mut dyn Transport,
    outgoing: Vec<u8>,
}

impl Wire<'_> {
    /// Blocks for the client's next bytes; `None` when it has closed.
    fn read(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        self.transport.read()
    }

    /// Gives rustls the client's bytes. On a TLS error the alert rustls queued is still sent.
    fn feed(&mut self, tls: &mut ServerConnection, mut bytes: &[u8]) -> Result<(), Failure> {
        while !bytes.is_empty() {
            let fed = tls.read_tls(&mut bytes).map(|_| ()).map_err(|e| Failure::Io(e.to_string()));
            let processed = fed.and_then(|()| tls.process_new_packets().map(|_| ()).map_err(tls_failure));
            if let Err(failure) = processed {
                let _ = self.flush(tls);
                return Err(failure);
            }
        }
        Ok(())
    }

    /// Writes everything rustls has queued, as one buffer, and waits until it has left.
    fn flush(&mut self, tls: &mut ServerConnection) -> Result<(), Failure> {
        self.outgoing.clear();
        while tls.wants_write() {
            tls.write_tls(&mut self.outgoing).map_err(|e| Failure::Io(e.to_string()))?;
        }
        self.transport.write_all(&self.outgoing)
    }

    /// Reads and discards what the client sends after the response, until it closes or a bound is
    /// reached, so that its unread bytes do not turn our close into a reset that cuts off the end
    /// of the body on its side. Returns whether its handshake finished.
    fn drain(&mut self, tls: &mut ServerConnection) -> bool {
        // After an error rustls's state is spent: feeding it more is a misuse (found by the
        // fuzzer, host/fuzz), so a client whose trailing bytes are bad is just drained.
        let mut broken = false;
        self.transport.drain(DRAIN_BYTES, DRAIN_NANOS, &mut |bytes| {
            if tls.is_handshaking() && !broken {
                broken = !matches!(tls.read_tls(&mut &bytes[..]).map(|_| tls.process_new_packets()), Ok(Ok(_)));
            }
            true
        });
        !tls.is_handshaking()
    }

    /// Reads the client's bytes into rustls until its handshake is finished, it closes, or the
    /// drain's bounds are reached. A client that never finishes just gets no ticket.
    fn await_client_finished(&mut self, tls: &mut ServerConnection) {
        if !tls.is_handshaking() {
            return;
        }
        self.transport.drain(DRAIN_BYTES, DRAIN_NANOS, &mut |mut bytes| {
            while !bytes.is_empty() && tls.is_handshaking() {
                let fed = tls.read_tls(&mut bytes).map_err(|_| ());
                if fed.and_then(|_| tls.process_new_packets().map_err(|_| ())).is_err() {
                    return false;
                }
            }
            tls.is_handshaking()
        });
    }
}

fn tls_failure(error: rustls::Error) -> Failure {
    Failure::Tls(error.to_string())
}

fn stream_failure(error: StreamError) -> Failure {
    match error {
        StreamError::Closed => Failure::Io("the client closed the connection".into()),
        StreamError::LastOperationFailed(error) => Failure::Io(error.to_debug_string()),
    }
}
