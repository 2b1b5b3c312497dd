//! The operator's listener, `serve --metrics ADDR`: `/metrics` (the Prometheus text format),
//! `/healthz` (the process is up) and `/readyz` (the snapshot is built and the listeners are open;
//! not while starting or stopping), over HTTP/1.1 with hyper. It tells anyone who reaches it how
//! busy the server is and which component it serves: bind it to loopback, or to a network only
//! the scraper reaches.

use crate::listener::{ListenError, bind};
use crate::metrics::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// What Prometheus asks for and prometheus-client writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapers and probes open a connection or two each; more than this at once wait in the backlog.
const MAX_CONNECTIONS: usize = 64;

/// A scraper's connection is kept open between scrapes at most this long.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(60);

/// The listener, bound: it answers once `run` runs.
pub struct MetricsEndpoint {
    listener: TcpListener,
    metrics: Arc<Metrics>,
}

impl MetricsEndpoint {
    pub async fn bind(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Self, ListenError> {
        let listener = bind(addr).await?;
        Ok(MetricsEndpoint { listener, metrics })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Answers until `stopped`; connections still open then are dropped.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = JoinSet::new();
        loop {
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                _ = stopped.changed() => break,
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = stopped.changed() => break,
            };
            while connections.try_join_next().is_some() {}
            let Ok((stream, _peer)) = accepted else {
                // Out of file descriptors and the like: the HTTPS side says so; back off.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let metrics = self.metrics.clone();
            connections.spawn(async move {
                let service = service_fn(move |request| {
                    let answer = answer(&metrics, &request);
                    async move { Ok::<_, Infallible>(answer) }
                });
                let connection =
                    http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_DEADLINE, connection).await;
                drop(permit);
            });
        }
    }
}

/// The answer to one request.
fn answer(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    const TEXT: &str = "text/plain; charset=utf-8";
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET or HEAD\n".into());
    }
    match request.uri().path() {
        "/metrics" => respond(StatusCode::OK, OPENMETRICS, metrics.encode()),
        "/healthz" => respond(StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" if metrics.is_ready() => respond(StatusCode::OK, TEXT, "ready\n".into()),
        "/readyz" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "not ready: starting or stopping\n".into(),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            TEXT,
            "/metrics, /healthz or /readyz\n".into(),
        ),
    }
}
