//! One connection's socket I/O, stepped through its instance: what `handler.connection` says to
//! send is written, what it waits for is read, each wait within its deadline.

use super::{Accepted, Milestones, Timeouts};
use crate::bindings::{Event, Failure, Next, Served, TlsSite};
use crate::guest_state::GuestState;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wasmtime::Store;

/// The largest read handed to the guest at once: a TLS record of the largest size.
const READ_BYTES: usize = 16 * 1024 + 256;

/// How long the client may take, after the response, to send its Finished and then to close
/// (wit/tls-site.wit, `handler.next`: `drain`, `close`); each phase has this long.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// The connection's I/O, in this one task: reads the client's bytes and hands them to the guest's
/// `handler.connection`, writes what it answers, and waits as it says, each wait bounded by its
/// deadline (wit/tls-site.wit, `handler`); notes the `milestones` it passes.
pub(crate) async fn drive(
    site: &TlsSite,
    store: &mut Store<GuestState>,
    connection: Accepted,
    timeouts: Timeouts,
    milestones: &mut Milestones,
) -> wasmtime::Result<Result<Served, Failure>> {
    let Accepted {
        mut stream,
        first_bytes,
    } = connection;
    // Each TLS flight leaves as one write; without this, Nagle and delayed ACKs stall it.
    let _ = stream.set_nodelay(true);
    store.data_mut().held.bounds.new_connection();
    let handler = site.tls_site_site_handler().connection();
    let connection = match handler.call_open(&mut *store).await? {
        Ok(connection) => connection,
        Err(failure) => return Ok(Err(failure)),
    };
    let handshake_until = Instant::now() + timeouts.handshake;
    let (mut next, mut drain_until, mut write_closed) = (Next::Read, None, false);
    // An event for the guest instead of the next wait's: the bytes read before the instance,
    // then what went wrong while writing.
    let mut pending = (!first_bytes.is_empty()).then_some(Event::Received(first_bytes));
    loop {
        let event = match (pending.take(), next) {
            (Some(event), _) => event,
            (None, Next::Read) => read(&mut stream, handshake_until).await,
            (None, Next::Write) => Event::Sent,
            (None, Next::Drain | Next::Close) => {
                if next == Next::Close && !write_closed {
                    // The FIN after our last bytes: the client can close, while we still read.
                    let _ = stream.shutdown().await;
                    write_closed = true;
                }
                let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN_TIME);
                read(&mut stream, until).await
            }
            (None, Next::Done) => break,
        };
        let step = handler.call_step(&mut *store, connection, &event).await?;
        if step.next != next {
            drain_until = None;
            if step.next == Next::Close {
                milestones
                    .client_finished
                    .get_or_insert_with(std::time::Instant::now);
            }
        }
        next = step.next;
        pending = write(&mut stream, &step.send, timeouts.stall).await;
        // The first write after which the guest does not wait for more of the handshake: it
        // carries the response (a HelloRetryRequest is followed by a read).
        if next != Next::Read && !step.send.is_empty() && pending.is_none() {
            milestones
                .response_sent
                .get_or_insert_with(std::time::Instant::now);
        }
    }
    handler.call_outcome(&mut *store, connection).await
}

/// Writes `bytes` whole; if the client takes none of them for `stall`, or the connection breaks,
/// says so as the guest's event.
async fn write(stream: &mut TcpStream, mut bytes: &[u8], stall: Duration) -> Option<Event> {
    while !bytes.is_empty() {
        match tokio::time::timeout(stall, stream.write(bytes)).await {
            Ok(Ok(0)) => return Some(Event::Broken("the connection took no more bytes".into())),
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(error)) => return Some(Event::Broken(error.to_string())),
            Err(_elapsed) => return Some(Event::Stalled),
        }
    }
    None
}

/// The client's next bytes, as the guest's event: its bytes, its end of stream, or the deadline.
async fn read(stream: &mut TcpStream, until: Instant) -> Event {
    // Read into a buffer of its own, which becomes the event: no copy, no zeroing.
    let mut bytes = Vec::with_capacity(READ_BYTES);
    match tokio::time::timeout_at(until, stream.read_buf(&mut bytes)).await {
        Ok(Ok(0)) => Event::EndOfStream,
        Ok(Ok(_)) => Event::Received(bytes),
        Ok(Err(error)) => Event::Broken(error.to_string()),
        Err(_elapsed) => Event::TimedOut,
    }
}
