//! The HTTPS side's threads, nginx's model: one per CPU, each with its own single-threaded runtime
//! and its own listener on the same address (`SO_REUSEPORT`), so the kernel spreads connections
//! among them and a connection lives on one thread from accept to close, never stolen or woken
//! across CPUs.

use crate::listener::{ListenError, accept_loop};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};

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
    F: Fn(TcpStream, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    let failed = |source| ListenError { addr, source };
    let first = reuse_port_listener(addr).map_err(failed)?;
    let bound = first.local_addr().map_err(failed)?;
    let mut listeners = vec![first];
    for _ in 1..threads.max(1) {
        listeners.push(reuse_port_listener(bound).map_err(failed)?);
    }
    let mut finished = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(failed)?;
        let (done, thread_finished) = oneshot::channel();
        let (permits, stopped, serve) = (permits.clone(), stopped.clone(), serve.clone());
        std::thread::Builder::new()
            .name(format!("https-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => accept_loop(listener, permits, stopped, serve).await,
                        Err(error) => crate::access_log::log(format_args!("https thread {index}: its listener is unusable: {error}")),
                    }
                });
                let _ = done.send(());
            })
            .map_err(failed)?;
        finished.push(thread_finished);
    }
    Ok((bound, finished))
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
        let serve = |mut stream: TcpStream, _peer| async move {
            use tokio::io::AsyncWriteExt as _;
            let name = std::thread::current().name().unwrap_or_default().to_owned();
            let _ = stream.write_all(name.as_bytes()).await;
            String::new()
        };
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (bound, finished) = serve_on_threads(addr, 2, Arc::new(Semaphore::new(64)), stopped, serve).unwrap();
        assert_ne!(bound.port(), 0);
        let mut threads_seen = std::collections::BTreeSet::new();
        // Clients from different ports hash to either listener; 64 all landing on one would be
        // a broken SO_REUSEPORT (chance 2^-63).
        for _ in 0..64 {
            let mut name = String::new();
            std::net::TcpStream::connect(bound).unwrap().read_to_string(&mut name).unwrap();
            threads_seen.insert(name);
        }
        assert_eq!(threads_seen.into_iter().collect::<Vec<_>>(), ["https-0", "https-1"]);
        stop.send(true).unwrap();
        for thread in finished {
            thread.blocking_recv().expect("the thread ends and says so");
        }
    }
}
