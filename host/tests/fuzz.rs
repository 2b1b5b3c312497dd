//! The fuzz targets (host/fuzz) build, and survive a short run from their seed corpus. The long
//! runs are done by hand: `host/fuzz/run TARGET 600`.

use std::process::Command;

#[test]
#[ignore = "layer 2: slow, builds a second, instrumented workspace (minutes on two cores)"]
fn fuzz_targets_build_and_survive_a_smoke_run() {
    let run = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/run");
    let status = Command::new(run)
        .args(["all", "10"])
        .status()
        .expect("running host/fuzz/run");
    assert!(
        status.success(),
        "{run} all 10: {status} (a crash leaves its input in target/fuzz/artifacts/)"
    );
}
