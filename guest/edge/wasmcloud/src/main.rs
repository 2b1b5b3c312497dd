//! `tls-site-wasmcloud --addr ADDR COMPONENT`: serves a wasi:http component as a wasmCloud workload
//! on wash-runtime's HTTP server (its Host-header routing, default route `*`), until SIGINT/SIGTERM.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use wash_runtime::engine::Engine;
use wash_runtime::host::{HostApi, HostBuilder};
use wash_runtime::plugin::wasi_http::HttpServer;
use wash_runtime::types::{Component, Workload, WorkloadStartRequest};
use wash_runtime::wit::WitInterface;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [flag, addr, component] = args.as_slice() else { bail!("usage: tls-site-wasmcloud --addr ADDR COMPONENT") };
    if flag != "--addr" {
        bail!("usage: tls-site-wasmcloud --addr ADDR COMPONENT");
    }
    let addr: SocketAddr = addr.parse().context("--addr")?;
    let bytes = std::fs::read(component).with_context(|| format!("reading {component}"))?;

    let host = HostBuilder::new()
        .with_engine(Engine::builder().build()?)
        .with_plugin(Arc::new(HttpServer::new(addr)))?
        .build()?
        .start()
        .await
        .context("starting the host")?;
    // The workload wadm.yaml describes: one component, its incoming-handler bound to the HTTP
    // server with no `host` config, so every Host header reaches it.
    let workload = Workload {
        namespace: "tls-site".to_owned(),
        name: "tls-site".to_owned(),
        annotations: HashMap::new(),
        service: None,
        components: vec![Component { bytes: bytes.into(), pool_size: 1, max_invocations: -1, ..Default::default() }],
        host_interfaces: vec![WitInterface {
            namespace: "wasi".to_owned(),
            package: "http".to_owned(),
            interfaces: ["incoming-handler".to_owned()].into_iter().collect(),
            // wash-runtime compares versions exactly when both sides name one: naming none binds
            // whichever wasi:http 0.2 the component exports (ours: 0.2.12).
            version: None,
            config: HashMap::new(),
        }],
        volumes: Vec::new(),
    };
    let started = host.workload_start(WorkloadStartRequest { workload }).await.context("starting the workload")?;
    eprintln!("tls-site-wasmcloud: {:?} on http://{addr}", started.workload_status.workload_state);

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}
