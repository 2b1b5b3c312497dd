//! Admission of an HTTPS connection to a guest instance: a client costs no instance until its
//! first TLS record (the ClientHello) is whole (`--hello-timeout` for its first bytes,
//! `--handshake-timeout` for the rest), and no more than `--max-instances` (or what
//! `--guest-memory` affords) are at work at once; the rest wait holding only their socket and
//! the bytes they sent.

use crate::access_log::{self, Event, Stats};
use crate::logging::Throttled;
use crate::metrics::Metrics;
use crate::options::Timeouts;
use crate::sandbox::Sandbox;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

/// What every HTTPS connection is admitted by.
pub struct Admission {
    /// The sandbox new connections are served from; a reload or an ACME renewal swaps in a new
    /// one.
    pub sandbox: watch::Receiver<Arc<Sandbox>>,
    pub instances: Arc<Semaphore>,
    pub max_instances: u32,
    pub hello_timeout: Duration,
    pub send_buffer: Option<usize>,
    pub timeouts: Timeouts,
    pub stats: Arc<Stats>,
    pub metrics: Arc<Metrics>,
    /// Connections that waited for an instance: counted each, logged once per interval.
    pub waits: Throttled,
}

/// At most one line in this long says that connections wait for an instance.
pub const WAIT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

impl Admission {
    /// Serves one connection, `accepted` when, once admitted; logs it.
    pub async fn serve(&self, stream: TcpStream, peer: SocketAddr, accepted: Instant) {
        // The site current when the connection is accepted serves it to its end, even if a
        // reload or a renewal swaps in another meanwhile (reload.rs).
        let sandbox = self.sandbox.borrow().clone();
        let _open = self.metrics.connection_opened();
        if let Some(bytes) = self.send_buffer {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
        }
        let first_record = first_record(&stream, self.hello_timeout, self.timeouts.handshake);
        let first_bytes = match first_record.await {
            Ok(bytes) => bytes,
            Err(refused) => {
                let (event, why) = match refused {
                    NotAdmitted::Silent(why) => (Event::Silent, why),
                    NotAdmitted::HandshakeTimeout(why) => (Event::HandshakeTimeout, why),
                };
                return access_log::not_admitted(
                    &self.stats,
                    &self.metrics,
                    peer,
                    event,
                    &why,
                    accepted,
                );
            }
        };
        let _instance = match self.instances.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.stats.count(Event::WaitedForInstance);
                self.metrics.waited_for_instance();
                if let Some(waited) = self.waits.happened() {
                    tracing::warn!(
                        waited,
                        "limit: all {} instances busy (--max-instances, --guest-memory); {waited} connection(s) waited for one since the last such line (at most one per {} s; all counted in tls_site_instance_waits_total)",
                        self.max_instances,
                        self.waits.every().as_secs()
                    );
                }
                self.instances
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        let _in_use = self.metrics.instance_taken();
        let report = sandbox
            .serve_connection_read(stream, first_bytes, self.timeouts)
            .await;
        access_log::https(
            &self.stats,
            &self.metrics,
            peer,
            &self.timeouts,
            report,
            accepted,
        );
    }
}

/// Why a connection got no instance.
enum NotAdmitted {
    /// It sent nothing within `--hello-timeout`, or closed first.
    Silent(String),
    /// Its first record was not whole within `--handshake-timeout` of its first bytes.
    HandshakeTimeout(String),
}

/// The TLS record header: content type, version, length.
const RECORD_HEADER: usize = 5;
/// Content type of a handshake record, which a ClientHello is.
const HANDSHAKE: u8 = 22;
/// The largest record a client may send (RFC 8446, 5.1).
const MAX_RECORD: usize = 1 << 14;

/// Reads the client's bytes until its first record is whole, and returns them for the instance:
/// a connection that stays silent, or sends part of a ClientHello and waits, never costs a guest
/// instance, only its socket, this task and the bytes it sent (held at their size while it waits).
/// Anything that is not the start of a handshake record, and a client that closes its side or
/// breaks the connection after its first bytes, is handed on at once: the instance answers it
/// as before, and meets the end of the stream on its own read.
async fn first_record(
    stream: &TcpStream,
    hello_timeout: Duration,
    handshake_timeout: Duration,
) -> Result<Vec<u8>, NotAdmitted> {
    let mut bytes = Vec::new();
    match tokio::time::timeout(hello_timeout, read_more(stream, &mut bytes)).await {
        Ok(Ok(0)) => return Err(NotAdmitted::Silent("closed before sending anything".into())),
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(NotAdmitted::Silent(format!("failed io: {error}"))),
        Err(_) => {
            return Err(NotAdmitted::Silent(format!(
                "timed out: nothing sent within {} s (--hello-timeout)",
                hello_timeout.as_secs_f64()
            )));
        }
    }
    let whole = async {
        while !record_whole(&bytes) {
            // What a client that waits holds here is what it sent, not a record's worth.
            bytes.shrink_to_fit();
            if !matches!(read_more(stream, &mut bytes).await, Ok(1..)) {
                break;
            }
        }
    };
    match tokio::time::timeout(handshake_timeout, whole).await {
        Ok(()) => Ok(bytes),
        Err(_) => Err(NotAdmitted::HandshakeTimeout(format!(
            "timed out: no whole ClientHello within {} s (--handshake-timeout), with no instance",
            handshake_timeout.as_secs_f64()
        ))),
    }
}

/// Appends what the client sent next to `bytes`, with room for a whole record while it reads
/// (none while it waits).
async fn read_more(stream: &TcpStream, bytes: &mut Vec<u8>) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        bytes.reserve((RECORD_HEADER + MAX_RECORD).saturating_sub(bytes.len()));
        match stream.try_read_buf(bytes) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => bytes.shrink_to_fit(),
            read => return read,
        }
    }
}

/// Whether `bytes` hold the first record whole, or are no handshake record at all (both: go on).
fn record_whole(bytes: &[u8]) -> bool {
    match *bytes {
        [content_type, ..] if content_type != HANDSHAKE => true,
        [_, _, _, high, low, ..] => {
            let length = usize::from(u16::from_be_bytes([high, low]));
            length > MAX_RECORD || bytes.len() >= RECORD_HEADER + length
        }
        _ => false,
    }
}
