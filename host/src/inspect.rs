//! What a component serves, without certificates or a snapshot: `site.resources` of the TLS
//! component (a `.wasm` or `tls-site compile`'s file) or of the edge twin, for `tls-site inspect`,
//! `dev-certs`, ACME's order and the tests.

use crate::bindings::{Resource, list_resources};
use crate::engine::{self, Limits};
use crate::guest_state::GuestState;
use crate::precompiled;
use crate::sandbox::{SandboxError, read_component};
use crate::tickets::{TICKET_KEY_ROTATION, TicketKeys};
use std::path::Path;
use std::sync::Arc;

/// What the component at `component_path` serves. Works for any component that exports
/// `tls-site:site/site`: the TLS component and the edge twin.
pub async fn site_resources(
    component_path: &Path,
    limits: Limits,
) -> Result<Vec<Resource>, SandboxError> {
    let not_a_site = |source| SandboxError::NotAComponent {
        path: component_path.to_owned(),
        source,
    };
    let file = read_component(component_path)?;
    let engine = engine::engine(&limits)?;
    let component = match precompiled::body(&file) {
        Some(body) => {
            precompiled::load(&engine, body, None).map_err(|source| SandboxError::Precompiled {
                path: component_path.to_owned(),
                source,
            })?
        }
        #[cfg(feature = "compiler")]
        None => wasmtime::component::Component::new(&engine, &file).map_err(not_a_site)?,
        #[cfg(not(feature = "compiler"))]
        None => {
            return Err(SandboxError::NeedsCompiling {
                path: component_path.to_owned(),
            });
        }
    };
    #[cfg(feature = "edge")]
    if component
        .component_type()
        .imports(&engine)
        .any(|(name, _)| name.starts_with("wasi:http/"))
    {
        let listed = list_resources(
            crate::edge::linker(&engine)?,
            &component,
            crate::edge::EdgeState::new(limits.memory_bytes),
        )
        .await;
        return listed.map_err(not_a_site);
    }
    let listed = {
        let state = GuestState::serving(
            limits.memory_bytes,
            Default::default(),
            Arc::new(TicketKeys::new(TICKET_KEY_ROTATION)),
        );
        list_resources(crate::sandbox::linker(&engine)?, &component, state).await
    };
    listed.map_err(not_a_site)
}

/// The site's host names, the default host's first: the order `dev-certs` certifies them in.
pub fn hosts_default_first(resources: &[Resource]) -> Vec<String> {
    let (default, others): (Vec<&Resource>, Vec<&Resource>) =
        resources.iter().partition(|r| r.is_default);
    default
        .into_iter()
        .chain(others)
        .flat_map(|r| r.hosts.clone())
        .collect()
}
