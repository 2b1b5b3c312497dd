//! Admission of an HTTPS connection to a guest instance: a client costs no instance until it has
//! sent something (`--hello-timeout`), and no more than `--max-instances` (or what
//! `--guest-memory` affords) are at work at once; the rest wait holding only their socket.

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
        if let Err(why) = first_bytes(&stream, self.hello_timeout).await {
            return access_log::silent(&self.stats, &self.metrics, peer, &why, accepted);
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

/// Waits until the client has sent something, so that a connection that stays silent never
/// costs a guest instance.
async fn first_bytes(stream: &TcpStream, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, stream.peek(&mut [0u8; 1])).await {
        Ok(Ok(0)) => Err("closed before sending anything".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("failed io: {error}")),
        Err(_) => Err(format!(
            "timed out: nothing sent within {} s (--hello-timeout)",
            timeout.as_secs_f64()
        )),
    }
}
