//! Tests of `metrics.rs`.

use super::*;
use std::sync::Arc;

#[test]
fn a_histogram_counts_each_duration_in_its_bucket_and_sums_them() {
    let histogram = DurationHistogram::default();
    for millis in [0, 1, 3, 3, 20_000] {
        histogram.observe(Duration::from_millis(millis));
    }
    let (counts, sum_nanos) = histogram.counts();
    // 0 and 1 ms in the buckets up to 0.5 ms and 1 ms, 3 ms (twice) up to 5 ms, 20 s above all.
    assert_eq!(counts, [1, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(sum_nanos, 20_007_000_000);
}

#[test]
fn groups_become_their_label_and_nothing_else() {
    assert_eq!(kx_label(Some("X25519MLKEM768")), "X25519MLKEM768");
    assert_eq!(kx_label(Some("secp384r1")), "secp384r1");
    assert_eq!(kx_label(Some("made-up")), "other");
    assert_eq!(kx_label(None), "-");
}

#[test]
fn in_use_guards_count_up_and_down() {
    let metrics = Arc::new(Metrics::new());
    let first = metrics.connection_opened();
    let second = metrics.connection_opened();
    assert_eq!(metrics.open_connections.get(), 2);
    drop(first);
    drop(second);
    assert_eq!(metrics.open_connections.get(), 0);
}
