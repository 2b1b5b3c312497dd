//! The host's side of the contract (wit/tls-site.wit), generated once: world `tls-site`, and
//! `tls-site-portable` for its one import of its own. Its exports are those of `tls-site`, so one
//! `TlsSitePre` serves both kinds of component.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "tls-site",
    imports: { default: trappable },
    exports: { default: async },
    with: {
        "tls-site:site/crypto.record-key": crate::crypto::RecordProtection,
        "tls-site:site/crypto.hash-context": crate::crypto::HashContext,
    },
});

pub mod portable {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tls-site-portable",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "tls-site:site/identity": super::tls_site::site::identity,
        },
    });
}

pub use exports::tls_site::site::handler::{Ending, Event, Failure, Next, Request, Served};
pub use exports::tls_site::site::site::Resource;

/// Calls `site.resources` on a fresh instance of `component`: the one export every site component
/// has, the TLS component and the edge twin alike, each linked as it needs.
pub async fn list_resources<T: Send + 'static>(
    linker: wasmtime::component::Linker<T>,
    component: &wasmtime::component::Component,
    state: T,
) -> wasmtime::Result<Vec<Resource>> {
    let pre = linker.instantiate_pre(component)?;
    let indices = exports::tls_site::site::site::GuestIndices::new(&pre)?;
    let mut store = wasmtime::Store::new(component.engine(), state);
    store.set_epoch_deadline(crate::engine::ticks(crate::engine::START_UP_DEADLINE));
    store.epoch_deadline_trap();
    let instance = pre.instantiate_async(&mut store).await?;
    indices
        .load(&mut store, &instance)?
        .call_resources(&mut store)
        .await
}
