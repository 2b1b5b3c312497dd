//! Admission of an HTTPS connection to a guest instance: a client costs no instance until its
//! first TLS record (the ClientHello) is whole in the socket (`--hello-timeout` for its first
//! bytes, `--handshake-timeout` for the rest), and no more than `--max-instances` (or what
//! `--guest-memory` affords) are at work at once; the rest wait holding only their socket.

use crate::access_log::{self, Event, Stats};
use crate::logging::Throttled;
use crate::metrics::Metrics;
use crate::options::Timeouts;
use crate::sandbox::Sandbox;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
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
        if let Err(refused) = first_record.await {
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
        let report = sandbox.serve_connection(stream, self.timeouts).await;
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

/// Waits, reading nothing (the bytes are peeked, and stay for the instance), until the client's
/// first record is whole in the socket: a connection that stays silent, or sends part of a
/// ClientHello and waits, never costs a guest instance, only its socket and this task. Anything
/// that is not the start of a handshake record, and a client that closes its side, is handed on
/// at once: the instance answers it as before.
async fn first_record(
    stream: &TcpStream,
    hello_timeout: Duration,
    handshake_timeout: Duration,
) -> Result<(), NotAdmitted> {
    match tokio::time::timeout(hello_timeout, stream.peek(&mut [0u8; 1])).await {
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
        loop {
            let ready = stream.ready(Interest::READABLE).await?;
            if ready.is_read_closed() {
                return Ok(());
            }
            // Too little yet: WouldBlock makes tokio wait for the socket's next bytes, where the
            // peeked bytes, still queued, would have it poll again at once.
            match stream.try_io(Interest::READABLE, || record_whole(stream)) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                done => return done,
            }
        }
    };
    match tokio::time::timeout(handshake_timeout, whole).await {
        Ok(Ok(())) => Ok(()),
        // The instance meets the same error on its first read, and says so.
        Ok(Err(_)) => Ok(()),
        Err(_) => Err(NotAdmitted::HandshakeTimeout(format!(
            "timed out: no whole ClientHello within {} s (--handshake-timeout), with no instance",
            handshake_timeout.as_secs_f64()
        ))),
    }
}

/// Whether the first record is in the socket whole, or is no handshake record at all (both: go
/// on); WouldBlock while part of it is yet to come.
fn record_whole(stream: &TcpStream) -> std::io::Result<()> {
    let mut peeked = [0u8; RECORD_HEADER + MAX_RECORD];
    let got = rustix::net::recv(stream, &mut peeked, rustix::net::RecvFlags::PEEK)?.0;
    match peeked[..got] {
        [content_type, ..] if content_type != HANDSHAKE => Ok(()),
        [_, _, _, high, low, ..] => {
            let length = usize::from(u16::from_be_bytes([high, low]));
            match length > MAX_RECORD || got >= RECORD_HEADER + length {
                true => Ok(()),
                false => Err(std::io::ErrorKind::WouldBlock.into()),
            }
        }
        _ => Err(std::io::ErrorKind::WouldBlock.into()),
    }
}
