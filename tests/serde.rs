//! serde round trips (the `serde` feature): maps, snapshots and batches
//! through JSON, removals in batches, and bad documents.
#![cfg(feature = "serde")]

use std::collections::HashMap;

use snapmap::{Batch, SnapMap};

fn content<S: std::hash::BuildHasher>(map: &SnapMap<String, u64, S>) -> HashMap<String, u64> {
    map.pin().iter().map(|(k, v)| (k.clone(), *v)).collect()
}

fn sample() -> SnapMap<String, u64> {
    // Small shards: the map spans many of them.
    let map = SnapMap::builder().shard_capacity(8).build().unwrap();
    for i in 0..200u64 {
        map.insert(format!("key{i}"), i * 3);
    }
    map
}

#[test]
fn a_map_round_trips_through_json() {
    let map = sample();
    let json = serde_json::to_string(&map).unwrap();
    let back: SnapMap<String, u64> = serde_json::from_str(&json).unwrap();
    assert_eq!(back.len(), 200);
    assert_eq!(content(&back), content(&map));
    // As a plain JSON map.
    let plain: HashMap<String, u64> = serde_json::from_str(&json).unwrap();
    assert_eq!(plain, content(&map));
}

#[test]
fn a_snapshot_deserialises_into_an_equal_map() {
    let map = sample();
    let snapshot = map.snapshot();
    map.insert("after".into(), 1); // not in the snapshot
    let json = serde_json::to_string(&snapshot).unwrap();
    let back: SnapMap<String, u64, std::hash::RandomState> = serde_json::from_str(&json).unwrap();
    let expected: HashMap<String, u64> = snapshot.iter().map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(content(&back), expected);
    assert_eq!(back.get("after"), None);
}

#[test]
fn a_map_with_a_repeated_key_keeps_the_last_value() {
    let map: SnapMap<String, u64> = serde_json::from_str(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
    assert_eq!(map.len(), 2);
    assert_eq!((map.get("a"), map.get("b")), (Some(3), Some(2)));
}

#[test]
fn a_batch_from_json_applies_inserts_and_removals() {
    let map = sample();
    let reload: Batch<String, u64> = serde_json::from_str(
        r#"{
            "remove": ["key0", "key1", "absent"],
            "insert": {"key2": 1000, "new": 7}
        }"#,
    )
    .unwrap();
    assert_eq!(reload.len(), 5);
    let applied = map.apply(reload);
    assert_eq!(
        (applied.inserted, applied.replaced, applied.removed),
        (1, 1, 2)
    );
    let mut expected = content(&sample());
    expected.remove("key0");
    expected.remove("key1");
    expected.insert("key2".into(), 1000);
    expected.insert("new".into(), 7);
    assert_eq!(content(&map), expected);
}

#[test]
fn a_batch_removes_first_then_inserts() {
    let map: SnapMap<String, u64> = SnapMap::new();
    map.insert("k".into(), 1);
    // The insert field first in the document; the removal still goes first.
    let batch: Batch<String, u64> =
        serde_json::from_str(r#"{"insert": {"k": 2, "j": 1, "j": 5}, "remove": ["k"]}"#).unwrap();
    map.apply(batch);
    assert_eq!((map.get("k"), map.get("j")), (Some(2), Some(5)));
}

#[test]
fn a_batch_may_have_one_part_or_none() {
    let only_removes: Batch<String, u64> = serde_json::from_str(r#"{"remove": ["a"]}"#).unwrap();
    assert_eq!(only_removes.len(), 1);
    let only_inserts: Batch<String, u64> = serde_json::from_str(r#"{"insert": {"a": 1}}"#).unwrap();
    assert_eq!(only_inserts.len(), 1);
    let empty: Batch<String, u64> = serde_json::from_str("{}").unwrap();
    assert!(empty.is_empty());
}

#[test]
fn bad_documents_are_errors() {
    // A map with a value of the wrong type, part way through.
    let err = serde_json::from_str::<SnapMap<String, u64>>(r#"{"a": 1, "b": "two", "c": 3}"#)
        .unwrap_err();
    assert!(err.to_string().contains("invalid type"), "{err}");
    // Not a map at all.
    assert!(serde_json::from_str::<SnapMap<String, u64>>("[1, 2]").is_err());
    // Truncated.
    assert!(serde_json::from_str::<SnapMap<String, u64>>(r#"{"a": 1, "b": "#).is_err());

    // A plain map is not a batch: its keys are unknown fields.
    let err = serde_json::from_str::<Batch<String, u64>>(r#"{"a": 1}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `a`"), "{err}");
    // A field given twice.
    let err = serde_json::from_str::<Batch<String, u64>>(r#"{"remove": ["a"], "remove": ["b"]}"#)
        .unwrap_err();
    assert!(
        err.to_string().contains("duplicate field `remove`"),
        "{err}"
    );
    // Removals that are not a sequence, inserts that are not a map.
    assert!(serde_json::from_str::<Batch<String, u64>>(r#"{"remove": "a"}"#).is_err());
    assert!(serde_json::from_str::<Batch<String, u64>>(r#"{"insert": ["a"]}"#).is_err());
}

/// A value that counts its live instances: a failed document must drop
/// every value it had already read (nothing half-built leaks).
mod counted {
    use std::sync::atomic::{AtomicIsize, Ordering};

    pub static LIVE: AtomicIsize = AtomicIsize::new(0);

    #[derive(Debug)]
    pub struct Counted(#[allow(dead_code)] pub u64);

    impl<'de> serde::Deserialize<'de> for Counted {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let value = <u64 as serde::Deserialize>::deserialize(d)?;
            LIVE.fetch_add(1, Ordering::SeqCst);
            Ok(Counted(value))
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn a_failed_document_drops_what_it_had_read() {
    use counted::{Counted, LIVE};
    use std::sync::atomic::Ordering;

    let doc = r#"{"a": 1, "b": 2, "c": 3, "d": "four"}"#;
    assert!(serde_json::from_str::<SnapMap<String, Counted>>(doc).is_err());
    let doc = r#"{"insert": {"a": 1, "b": 2, "c": "three"}}"#;
    assert!(serde_json::from_str::<Batch<String, Counted>>(doc).is_err());
    // The map frees its entries when dropped (not through the epoch), and
    // the batch's are plain values: none may be alive now.
    assert_eq!(
        LIVE.load(Ordering::SeqCst),
        0,
        "values of a failed document leaked"
    );

    // And a good one holds exactly its values until dropped.
    let map: SnapMap<String, Counted> = serde_json::from_str(r#"{"a": 1, "b": 2}"#).unwrap();
    assert_eq!(LIVE.load(Ordering::SeqCst), 2);
    drop(map);
    assert_eq!(LIVE.load(Ordering::SeqCst), 0);
}
