//! The snapshot: the component instantiated once, its `initialise` called with the certificates
//! (rustls's configuration is built then: key parsing costs milliseconds in wasm), and the
//! initialised instance saved by wizer as a component that starts in that state.

use crate::guest_state::GuestState;
use wasmtime::Store;
use wasmtime::component::{Component, Linker, Val};

/// The wasm export that `initialise`s the component, as wizer calls it.
const INIT_CALL: &str = "initialise()";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a tls-site component: {0:#}")]
    NotAComponent(wasmtime::Error),
    #[error("the component refused the certificates: {0}")]
    Refused(String),
    #[error("the component trapped while initialising: {0:#}")]
    Trapped(wasmtime::Error),
}

/// Instantiates `wasm` with `state`, calls its `initialise` and returns the initialised instance
/// as a component.
pub async fn snapshot(
    linker: &Linker<GuestState>,
    wasm: &[u8],
    state: GuestState,
) -> Result<Vec<u8>, SnapshotError> {
    let mut store = crate::guest_state::new_store(linker.engine(), state);
    let instantiate = async |store: &mut Store<GuestState>, component: &Component| {
        linker.instantiate_async(store, component).await
    };
    let (snapshot, returned) = wasmtime_wizer::Wizer::new()
        .init_func(INIT_CALL)
        .run_component(&mut store, wasm, instantiate)
        .await
        .map_err(classify)?;
    if let [Val::Result(Err(error))] = &returned[..] {
        return Err(SnapshotError::Refused(describe(error.as_deref())));
    }
    Ok(snapshot)
}

/// Wizer compiles and instantiates the component: its errors are those of a bad file, a
/// component of another world, or a trap in `initialise`.
fn classify(error: wasmtime::Error) -> SnapshotError {
    if error.chain().any(|cause| {
        cause
            .to_string()
            .contains("initialization function trapped")
    }) {
        SnapshotError::Trapped(error)
    } else {
        SnapshotError::NotAComponent(error)
    }
}

/// `init-error` as wizer hands it back: a variant case and its payload, as text.
fn describe(error: Option<&Val>) -> String {
    let text = |value: &Val| match value {
        Val::String(text) => text.clone(),
        Val::List(items) => items
            .iter()
            .map(|item| {
                if let Val::String(text) = item {
                    text.clone()
                } else {
                    format!("{item:?}")
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => format!("{other:?}"),
    };
    match error {
        Some(Val::Variant(case, Some(payload))) => format!("{case}: {}", text(payload)),
        other => format!("{other:?}"),
    }
}
