//! What a test or bench that runs cargo itself takes out of the environment cargo gave it.

use std::process::Command;

/// Removes from `command`'s environment what `cargo test` or `cargo bench` set for this process
/// (`CARGO_*` but `CARGO_HOME`, and `OUT_DIR`), so that the nested cargo builds as one run from a
/// shell would. Build scripts such as ring's declare `rerun-if-env-changed` on these: a nested
/// build that kept them would build those crates again, and the next plain build once more.
pub fn scrub(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if (name.starts_with("CARGO_") && name != "CARGO_HOME") || name == "OUT_DIR" {
            command.env_remove(name.as_ref());
        }
    }
}
