//! Accepting connections within a bound: a listener, and the loop that takes connections while
//! fewer than the limit are open, serves each in its own task and logs the line it returns. The
//! HTTPS side, port 80 and the edge twin's `serve-http` all accept this way.

use crate::log;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })
}

/// Accepts connections while fewer than `permits` are in flight (the rest wait in the kernel's
/// backlog, never in a queue of ours), serves each in its own task, logs the line it returns.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    permits: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = String> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut full = false;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                full = false;
                permit
            }
            Err(_) => {
                // Once per episode, not once per connection that waits.
                if !full {
                    log(format_args!(
                        "limit: the most connections allowed are open (--max-connections); new ones wait in the listen backlog"
                    ));
                    full = true;
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    _ = stopped.changed() => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break,
        };
        // Reap finished tasks so the set does not grow with the server's age.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let started = Instant::now();
                let served = serve(stream, peer);
                connections.spawn(async move {
                    let line = served.await;
                    log(format_args!(
                        "{line} ms={:.1}",
                        started.elapsed().as_secs_f64() * 1e3
                    ));
                    drop(permit);
                });
            }
            // Out of file descriptors and the like: the listener itself is fine; back off briefly.
            Err(error) => {
                log(format_args!("accept failed: {error}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
