//! The `metrics` feature: what `Stats::publish` sets is what a recorder
//! (any exporter) sees, under the names the docs give.
#![cfg(feature = "metrics")]

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn publish_sets_every_counter_and_gauge_a_recorder_sees() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let map = snapmap::SnapMap::new();
    for i in 0..1_000u64 {
        map.insert(i, i);
    }
    // The first pass promotes the dirty tables (its lookups take the slow
    // path), the second hits the read views.
    for _ in 0..2 {
        for i in 0..1_000u64 {
            assert_eq!(map.get(&i), Some(i));
        }
    }
    map.insert(1, 2);
    drop(map.snapshot());
    let stats = map.stats();
    metrics::with_local_recorder(&recorder, || stats.publish("cfg"));

    let mut seen: HashMap<String, Vec<DebugValue>> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        seen.entry(key.key().name().to_string())
            .or_default()
            .push(value);
    }
    let one = |name: &str| -> &DebugValue {
        let values = seen
            .get(name)
            .unwrap_or_else(|| panic!("{name} was not published"));
        assert_eq!(values.len(), 1, "{name}");
        &values[0]
    };
    let gauge = |v: usize| DebugValue::Gauge((v as f64).into());
    assert_eq!(one("cfg_len"), &gauge(stats.len));
    assert_eq!(one("cfg_shards"), &gauge(stats.shards));
    assert_eq!(one("cfg_snapshot_bytes"), &gauge(stats.snapshot_bytes));
    assert_eq!(one("cfg_read_hits"), &DebugValue::Counter(stats.read_hits));
    assert_eq!(
        one("cfg_snapshot_builds"),
        &DebugValue::Counter(stats.snapshot_builds)
    );
    assert_eq!(one("cfg_splits"), &DebugValue::Counter(stats.splits));
    assert!(
        stats.read_hits > 0 && stats.snapshot_builds == 1 && stats.len == 1_000,
        "{stats:?}"
    );
    // The retired bytes: one gauge per kind, under one name.
    assert_eq!(seen["cfg_retired_bytes"].len(), 5);
}
