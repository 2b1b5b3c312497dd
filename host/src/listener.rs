//! Accepting connections, in one place: the HTTPS side's threads, nginx's model (one per CPU,
//! each with its own single-threaded runtime and its own listener on the same address,
//! `SO_REUSEPORT`, so the kernel spreads connections among them and a connection lives on one
//! thread from accept to close, never stolen or woken across CPUs), and the loop every listener
//! runs (the HTTPS side's, port 80's and the edge twin's `serve-http`): it takes connections while
//! fewer than the limit are open and serves each in its own task.

use crate::log;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
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
/// backlog, never in a queue of ours) and serves each in its own task: `serve` gets the stream,
/// the peer and the moment it was accepted (its access-log line says how long it took since).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    permits: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
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
                let served = serve(stream, peer, Instant::now());
                connections.spawn(async move {
                    served.await;
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

/// As tokio's `TcpListener::bind` has it.
const BACKLOG: i32 = 1024;

/// Threads for the host's CPUs: as many as it may run on (its affinity mask, its cgroup's quota).
pub fn per_cpu() -> usize {
    std::thread::available_parallelism().map_or(1, |cpus| cpus.get())
}

/// Binds `threads` listeners on `addr` (the first picks the port if `addr`'s is 0) and serves each
/// on a thread of its own as `accept_loop` does, until `stopped`. Returns the address bound and
/// a receiver per thread that completes when the thread has finished its connections.
pub fn serve_on_threads<F, Fut>(
    addr: SocketAddr,
    threads: usize,
    permits: Arc<Semaphore>,
    stopped: watch::Receiver<bool>,
    serve: F,
) -> Result<(SocketAddr, Vec<oneshot::Receiver<()>>), ListenError>
where
    F: Fn(TcpStream, SocketAddr, Instant) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let failed = |source| ListenError { addr, source };
    let bound = claim(addr).map_err(failed)?;
    let listeners = (0..threads.max(1))
        .map(|_| reuse_port_listener(bound))
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    let mut finished = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let (done, thread_finished) = oneshot::channel();
        let (permits, stopped, serve) = (permits.clone(), stopped.clone(), serve.clone());
        std::thread::Builder::new()
            .name(format!("https-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => accept_loop(listener, permits, stopped, serve).await,
                        Err(error) => log(format_args!(
                            "https thread {index}: its listener is unusable: {error}"
                        )),
                    }
                });
                let _ = done.send(());
            })
            .map_err(failed)?;
        finished.push(thread_finished);
    }
    Ok((bound, finished))
}

/// `addr`, with the port the kernel picks if its port is 0; fails as a plain listener would if
/// something listens there already. `SO_REUSEPORT` alone would let a second server (ours left
/// running, or another program of this user) share the address and take some of its
/// connections unseen.
fn claim(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As tokio's listeners: connections of a previous run left in TIME_WAIT do not count.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    let bound = socket.local_addr()?;
    bound
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP address"))
}

/// A non-blocking listener on `addr` that others of this process (and user) may share.
fn reuse_port_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    /// Every thread's listener takes connections: the kernel spreads many clients over all of
    /// them, each is served on one thread, and the threads end when told to stop.
    #[test]
    fn every_thread_serves_and_all_end_on_stop() {
        let (stop, stopped) = watch::channel(false);
        let serve = |mut stream: TcpStream, _peer, _accepted| async move {
            use tokio::io::AsyncWriteExt as _;
            let name = std::thread::current().name().unwrap_or_default().to_owned();
            let _ = stream.write_all(name.as_bytes()).await;
        };
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (bound, finished) =
            serve_on_threads(addr, 2, Arc::new(Semaphore::new(64)), stopped, serve).unwrap();
        assert_ne!(bound.port(), 0);
        let mut threads_seen = std::collections::BTreeSet::new();
        // Clients from different ports hash to either listener; 64 all landing on one would be
        // a broken SO_REUSEPORT (chance 2^-63).
        for _ in 0..64 {
            let mut name = String::new();
            std::net::TcpStream::connect(bound)
                .unwrap()
                .read_to_string(&mut name)
                .unwrap();
            threads_seen.insert(name);
        }
        assert_eq!(
            threads_seen.into_iter().collect::<Vec<_>>(),
            ["https-0", "https-1"]
        );
        stop.send(true).unwrap();
        for thread in finished {
            thread.blocking_recv().expect("the thread ends and says so");
        }
    }

    /// An address in use fails as with a plain listener, whether a plain listener or another
    /// group of ours has it.
    #[test]
    fn an_address_in_use_is_refused() {
        let (_stop, stopped) = watch::channel(false);
        let serve = |_: TcpStream, _, _| async {};
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = plain.local_addr().unwrap();
        let Err(error) = serve_on_threads(
            taken,
            2,
            Arc::new(Semaphore::new(1)),
            stopped.clone(),
            serve,
        ) else {
            panic!("an address in use is refused")
        };
        assert_eq!(
            (error.addr, error.source.kind()),
            (taken, std::io::ErrorKind::AddrInUse)
        );

        let (ours, _threads) = serve_on_threads(
            "127.0.0.1:0".parse().unwrap(),
            2,
            Arc::new(Semaphore::new(1)),
            stopped.clone(),
            serve,
        )
        .unwrap();
        let Err(error) = serve_on_threads(ours, 2, Arc::new(Semaphore::new(1)), stopped, serve)
        else {
            panic!("our own address is refused to a second server")
        };
        assert_eq!(error.source.kind(), std::io::ErrorKind::AddrInUse);
    }
}
