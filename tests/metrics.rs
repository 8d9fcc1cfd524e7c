//! The `metrics` feature: what `Stats::publish` sets is what a recorder
//! (any exporter) sees, under the names the docs give.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

/// What a recorder saw: the last value set under each name (with its
/// labels), as a gauge or a counter.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Gauge(f64),
    Counter(u64),
}

/// A recorder that keeps every value it is given (a real exporter would
/// send them on). Written here rather than taken from `metrics-util`, to
/// keep that crate and its dependencies out of every build of the tests
/// and the example.
#[derive(Default, Clone)]
struct Keeping(Arc<Mutex<HashMap<String, Seen>>>);

/// One metric's handle: its name (with labels) and the shared store.
struct Handle(String, Arc<Mutex<HashMap<String, Seen>>>);

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        let mut seen = self.1.lock().unwrap();
        let now = match seen.get(&self.0) {
            Some(Seen::Counter(c)) => c + value,
            _ => value,
        };
        seen.insert(self.0.clone(), Seen::Counter(now));
    }
    fn absolute(&self, value: u64) {
        self.1
            .lock()
            .unwrap()
            .insert(self.0.clone(), Seen::Counter(value));
    }
}

impl GaugeFn for Handle {
    fn increment(&self, _: f64) {
        unimplemented!("Stats::publish sets gauges")
    }
    fn decrement(&self, _: f64) {
        unimplemented!("Stats::publish sets gauges")
    }
    fn set(&self, value: f64) {
        self.1
            .lock()
            .unwrap()
            .insert(self.0.clone(), Seen::Gauge(value));
    }
}

impl Keeping {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        let mut name = key.name().to_string();
        for label in key.labels() {
            name += &format!("{{{}={}}}", label.key(), label.value());
        }
        Arc::new(Handle(name, self.0.clone()))
    }
}

impl Recorder for Keeping {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        unimplemented!("Stats::publish records no histogram")
    }
}

#[test]
fn publish_sets_every_counter_and_gauge_a_recorder_sees() {
    let recorder = Keeping::default();
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
    assert!(
        stats.read_hits > 0 && stats.snapshot_builds == 1 && stats.len == 1_000,
        "{stats:?}"
    );
    metrics::with_local_recorder(&recorder, || stats.publish("cfg"));

    let seen = recorder.0.lock().unwrap().clone();
    let gauge = |v: usize| Seen::Gauge(v as f64);
    assert_eq!(seen["cfg_len"], gauge(stats.len));
    assert_eq!(seen["cfg_shards"], gauge(stats.shards));
    assert_eq!(seen["cfg_snapshot_bytes"], gauge(stats.snapshot_bytes));
    assert_eq!(seen["cfg_read_hits"], Seen::Counter(stats.read_hits));
    assert_eq!(
        seen["cfg_snapshot_builds"],
        Seen::Counter(stats.snapshot_builds)
    );
    assert_eq!(seen["cfg_splits"], Seen::Counter(stats.splits));
    // The retired bytes: one gauge per kind, under one name.
    for kind in ["views", "shards", "directories", "values", "entries"] {
        assert!(
            matches!(
                seen[&format!("cfg_retired_bytes{{kind={kind}}}")],
                Seen::Gauge(_)
            ),
            "{kind}"
        );
    }
}
