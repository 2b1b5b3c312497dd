//! `tls-site serve-http`: the edge twin (world `edge-site`) under the host's own `wasi:http`
//! server, as `wasmtime serve` would run it: plain HTTP/1.1, a fresh instance per request, the
//! Host header picks the response. TLS belongs to whatever stands in front (an edge platform).

use crate::bindings::{Resource, list_resources};
use crate::engine::{self, Limits};
use crate::guest_state::empty_wasi;
use crate::listener::{ListenError, accept_loop, bind};
use crate::sandbox::SandboxError;
use hyper::server::conn::http1;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

/// The proxy component, compiled and pre-linked.
pub struct EdgeSandbox {
    pre: ProxyPre<EdgeState>,
    limits: Limits,
    component: Component,
}

/// A request's store: empty WASI (as in `sandbox.rs`), the HTTP context, limits.
pub struct EdgeState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: StoreLimits,
    hooks: NoOutgoingRequests,
}

impl EdgeState {
    pub fn new(memory_bytes: usize) -> EdgeState {
        EdgeState {
            wasi: empty_wasi(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(memory_bytes).build(),
            hooks: NoOutgoingRequests,
        }
    }
}

/// WASI (granted empty) and `wasi:http` (incoming only: see `NoOutgoingRequests`).
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<EdgeState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

impl WasiView for EdgeState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for EdgeState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The sandbox's rule for `wasi:http/outgoing-handler`: no outbound connections, ever.
pub struct NoOutgoingRequests;

type OutgoingFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl WasiHttpHooks for NoOutgoingRequests {
    fn send_request(
        &mut self,
        _request: hyper::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _body: OutgoingFuture,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (hyper::Response<WasiBody>, OutgoingFuture),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl EdgeSandbox {
    pub fn new(component_path: &Path, limits: Limits) -> Result<EdgeSandbox, SandboxError> {
        let not_a_proxy = |source| SandboxError::NotAComponent {
            path: component_path.to_owned(),
            source,
        };
        let wasm = std::fs::read(component_path).map_err(|source| SandboxError::Unreadable {
            path: component_path.to_owned(),
            source,
        })?;
        let engine = engine::engine(&limits)?;
        let component = Component::new(&engine, &wasm).map_err(not_a_proxy)?;
        let pre = ProxyPre::new(
            linker(&engine)?
                .instantiate_pre(&component)
                .map_err(not_a_proxy)?,
        )
        .map_err(not_a_proxy)?;
        Ok(EdgeSandbox {
            pre,
            limits,
            component,
        })
    }

    /// Serves the requests of one HTTP/1.1 connection, each from a fresh instance, logging each;
    /// returns how many there were.
    pub async fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        deadline: Duration,
    ) -> Result<usize, String> {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().map_err(|error| error.to_string())?;
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let sandbox = self.clone();
                counted.fetch_add(1, Ordering::Relaxed);
                let line = format!(
                    "http {peer} {} {}",
                    request.method(),
                    request
                        .headers()
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("-")
                );
                async move {
                    let response = sandbox.handle(request, local, deadline).await;
                    match &response {
                        Ok(response) => {
                            crate::log(format_args!("{line} {}", response.status().as_u16()))
                        }
                        Err(error) => crate::log(format_args!("{line} failed: {error:#}")),
                    }
                    response
                }
            });
        let connection = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        match tokio::time::timeout(deadline, connection).await {
            Ok(Ok(())) => Ok(requests.load(Ordering::Relaxed)),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    async fn handle(
        &self,
        mut request: hyper::Request<hyper::body::Incoming>,
        local: SocketAddr,
        deadline: Duration,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        // wasi:http needs an authority; an HTTP/1.0 client may send none. Give it the address it
        // reached, which no site host matches: it gets the default page.
        if request.uri().authority().is_none()
            && !request.headers().contains_key(hyper::header::HOST)
        {
            let host = hyper::header::HeaderValue::from_str(&local.to_string())?;
            request.headers_mut().insert(hyper::header::HOST, host);
        }
        let mut store = Store::new(self.pre.engine(), EdgeState::new(self.limits.memory_bytes));
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(engine::ticks(deadline));
        store.epoch_deadline_trap();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let outparam = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        // The guest keeps writing the body after it has handed over the head: its own task.
        let task = tokio::task::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(store, incoming, outparam)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => match task.await {
                Ok(Ok(())) => wasmtime::bail!("the component never set a response"),
                Ok(Err(error)) => Err(error.context("the component failed before responding")),
                Err(error) => Err(error.into()),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeStartError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// A running `serve-http` server, until `shutdown`.
pub struct EdgeServer {
    addr: SocketAddr,
    resources: Vec<Resource>,
    stop: watch::Sender<bool>,
    listener: tokio::task::JoinHandle<()>,
}

impl EdgeServer {
    /// Compiles the component, binds `addr` and serves, with the same bounds as the TLS side.
    pub async fn start(
        component: &Path,
        addr: SocketAddr,
        max_connections: u32,
        deadline: Duration,
    ) -> Result<EdgeServer, EdgeStartError> {
        let limits = Limits {
            instances: max_connections + 1,
            ..Limits::default()
        };
        let sandbox = Arc::new(EdgeSandbox::new(component, limits)?);
        let resources = list_resources(
            linker(sandbox.pre.engine()).map_err(SandboxError::from)?,
            &sandbox.component,
            EdgeState::new(sandbox.limits.memory_bytes),
        )
        .await
        .map_err(|source| SandboxError::NotAComponent {
            path: component.to_owned(),
            source,
        })?;
        let listener = bind(addr).await?;
        let addr = listener
            .local_addr()
            .map_err(|source| ListenError { addr, source })?;
        let (stop, stopped) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(max_connections as usize));
        let listener = tokio::spawn(accept_loop(
            listener,
            permits,
            stopped,
            move |stream, peer, accepted| {
                let sandbox = sandbox.clone();
                async move {
                    let served = sandbox.serve_connection(stream, peer, deadline).await;
                    crate::access_log::edge(peer, served, accepted);
                }
            },
        ));
        Ok(EdgeServer {
            addr,
            resources,
            stop,
            listener,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// Stops accepting and waits for the connections in flight (each bounded by its deadline).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.listener.await;
    }
}
