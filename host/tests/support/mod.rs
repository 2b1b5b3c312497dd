//! What the host's test suites share: a fresh scratch directory, and the host names of the
//! built component, default first, as `tls-site dev-certs` certifies them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tls_site::BUILT_COMPONENT;

/// An empty directory under the system's temporary one, named for the test and this process.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tls-site-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The built component's host names, default first: read from it once per test binary.
pub fn site_hosts() -> Vec<String> {
    static HOSTS: OnceLock<Vec<String>> = OnceLock::new();
    HOSTS
        .get_or_init(|| {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let resources = runtime
                .block_on(tls_site::inspect::site_resources(
                    Path::new(BUILT_COMPONENT),
                    Default::default(),
                ))
                .unwrap();
            tls_site::inspect::hosts_default_first(&resources)
        })
        .clone()
}
