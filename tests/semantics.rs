//! Every operation's semantics, as Go documents them for `sync.Map`
//! (`Load`, `Swap`, `LoadOrStore`, `LoadAndDelete`, `CompareAndSwap`,
//! `CompareAndDelete`, `Range`, `Clear`), plus the Rust trait impls.
//!
//! The single-key cases run under every builder configuration and with the
//! key in every protocol state before the operation: never stored, new (in
//! the dirty table only), promoted (in the read view), deleted while in the
//! view, expunged by a dirty rebuild, and cleared. Each state must behave
//! exactly as "present" or "absent" does.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;

use common::{CONFIGS, Config, for_each_config};
use snapmap::{BuildError, SnapMap};

/// The key every single-key case operates on, and its value when present.
const KEY: &str = "key";
const OLD: u64 = 1;
const NEW: u64 = 2;
const OTHER: u64 = 99;

/// Unrelated entries that share the map (and, with one shard, the shard)
/// with `KEY`; no operation on `KEY` may disturb them.
const FILLERS: [(&str, u64); 4] = [("f0", 100), ("f1", 101), ("f2", 102), ("f3", 103)];

/// The state `KEY` is put in before the operation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prior {
    /// Never stored.
    Never,
    /// Just stored: a new key, in the dirty table only (unless a small
    /// threshold promoted it).
    Fresh,
    /// Stored and promoted into the read view.
    Promoted,
    /// Promoted, then removed: a deleted entry in the view.
    Deleted,
    /// Promoted, removed, then a new key forced a dirty rebuild, which
    /// expunges it (with one shard; with more, the new key may land
    /// elsewhere and it stays deleted).
    Expunged,
    /// Promoted, then the whole map was cleared (fillers stored again).
    Cleared,
}

const PRIORS: [Prior; 6] = [
    Prior::Never,
    Prior::Fresh,
    Prior::Promoted,
    Prior::Deleted,
    Prior::Expunged,
    Prior::Cleared,
];

impl Prior {
    fn present(self) -> bool {
        matches!(self, Prior::Fresh | Prior::Promoted)
    }
}

type Map = SnapMap<String, u64>;

fn promote_all(map: &Map) {
    // Iteration promotes every amended shard before walking it.
    let _ = map.pin().iter().count();
}

fn insert_fillers(map: &Map) {
    for (k, v) in FILLERS {
        map.insert(k.to_string(), v);
    }
}

fn prepare(map: &Map, prior: Prior) {
    insert_fillers(map);
    promote_all(map);
    match prior {
        Prior::Never => {}
        Prior::Fresh => {
            map.insert(KEY.to_string(), OLD);
        }
        Prior::Promoted => {
            map.insert(KEY.to_string(), OLD);
            promote_all(map);
        }
        Prior::Deleted => {
            map.insert(KEY.to_string(), OLD);
            promote_all(map);
            assert_eq!(map.remove(KEY), Some(OLD));
        }
        Prior::Expunged => {
            map.insert(KEY.to_string(), OLD);
            promote_all(map);
            assert_eq!(map.remove(KEY), Some(OLD));
            // The first new key after a promotion rebuilds dirty from the
            // view, expunging the deleted entry.
            map.insert("rebuild-trigger".to_string(), 7);
            assert_eq!(map.remove("rebuild-trigger"), Some(7));
        }
        Prior::Cleared => {
            map.insert(KEY.to_string(), OLD);
            promote_all(map);
            map.clear();
            assert!(map.is_empty());
            insert_fillers(map);
        }
    }
    assert_eq!(map.len(), FILLERS.len() + usize::from(prior.present()));
}

/// The map's contents, through iteration.
fn contents(map: &Map) -> BTreeMap<String, u64> {
    let pinned = map.pin();
    let mut out = BTreeMap::new();
    for (k, v) in &pinned {
        assert!(
            out.insert(k.clone(), *v).is_none(),
            "key {k:?} yielded twice"
        );
    }
    out
}

/// Checks that the map holds exactly the fillers plus `KEY -> key_value`,
/// through `get`, `contains_key`, `len`, `is_empty` and iteration.
fn assert_contents(map: &Map, key_value: Option<u64>, ctx: &str) {
    let mut expected: BTreeMap<String, u64> =
        FILLERS.iter().map(|&(k, v)| (k.to_string(), v)).collect();
    if let Some(v) = key_value {
        expected.insert(KEY.to_string(), v);
    }
    assert_eq!(map.get(KEY), key_value, "{ctx}: get");
    assert_eq!(
        map.contains_key(KEY),
        key_value.is_some(),
        "{ctx}: contains_key"
    );
    assert_eq!(map.pin().get(KEY), key_value.as_ref(), "{ctx}: pinned get");
    for (k, v) in FILLERS {
        assert_eq!(map.get(k), Some(v), "{ctx}: filler {k}");
    }
    assert_eq!(map.len(), expected.len(), "{ctx}: len");
    assert!(!map.is_empty(), "{ctx}: is_empty");
    assert_eq!(contents(map), expected, "{ctx}: iteration");
    assert_eq!(map.stats().len, expected.len(), "{ctx}: stats().len");
}

/// Runs `case` for every configuration and every prior state of `KEY`.
/// `case` gets the map, whether `KEY` is present, and a context string.
fn each_state(mut case: impl FnMut(&Map, bool, &str)) {
    for config in CONFIGS {
        for prior in PRIORS {
            let map: Map = config.build();
            prepare(&map, prior);
            let ctx = format!("{} / {prior:?}", config.name);
            if prior == Prior::Expunged && config.single_shard() {
                // With one shard the rebuild trigger shares KEY's shard, so
                // the state really is "expunged".
                assert_eq!(map.stats().expunges, 1, "{ctx}: KEY not expunged");
            }
            case(&map, prior.present(), &ctx);
        }
    }
}

// ----- Load ------------------------------------------------------------------

#[test]
fn get_and_contains_key_follow_presence() {
    each_state(|map, present, ctx| {
        let expected = present.then_some(OLD);
        // Repeated lookups: the first ones of a new key take the slow path
        // and may promote; the answer must not change.
        for _ in 0..4 {
            assert_eq!(map.get(KEY), expected, "{ctx}");
            assert_eq!(map.contains_key(KEY), present, "{ctx}");
            assert_eq!(map.pin().get(KEY).copied(), expected, "{ctx}");
            assert_eq!(map.pin().contains_key(KEY), present, "{ctx}");
        }
        assert_eq!(map.get("never-stored"), None, "{ctx}");
        assert_contents(map, expected, ctx);
    });
}

// ----- Swap / Store ---------------------------------------------------------

#[test]
fn insert_returns_previous_value() {
    each_state(|map, present, ctx| {
        let previous = map.insert(KEY.to_string(), NEW);
        assert_eq!(previous, present.then_some(OLD), "{ctx}: first insert");
        assert_contents(map, Some(NEW), ctx);
        // Storing again returns the value just stored.
        assert_eq!(map.insert(KEY.to_string(), OTHER), Some(NEW), "{ctx}");
        assert_contents(map, Some(OTHER), ctx);
    });
}

#[test]
fn pinned_insert_returns_reference_to_previous_value() {
    each_state(|map, present, ctx| {
        let pinned = map.pin();
        let previous = pinned.insert(KEY.to_string(), NEW);
        assert_eq!(previous, present.then_some(&OLD), "{ctx}");
        assert_eq!(pinned.insert(KEY.to_string(), OTHER), Some(&NEW), "{ctx}");
        // The references stay valid for the handle's life.
        assert_eq!(previous, present.then_some(&OLD), "{ctx}");
        drop(pinned);
        assert_contents(map, Some(OTHER), ctx);
    });
}

// ----- LoadOrStore ----------------------------------------------------------

#[test]
fn try_insert_reports_loaded() {
    each_state(|map, present, ctx| {
        let outcome = map.try_insert(KEY.to_string(), NEW);
        if present {
            // Go: loaded == true, the existing value stays.
            assert_eq!(outcome, Err(NEW), "{ctx}: the value is handed back");
            assert_contents(map, Some(OLD), ctx);
        } else {
            assert_eq!(outcome, Ok(()), "{ctx}");
            assert_contents(map, Some(NEW), ctx);
        }
        // Now the key is present in every case.
        let stored = if present { OLD } else { NEW };
        assert_eq!(map.try_insert(KEY.to_string(), OTHER), Err(OTHER), "{ctx}");
        assert_contents(map, Some(stored), ctx);
    });
}

#[test]
fn pinned_try_insert_hands_back_current_and_rejected() {
    each_state(|map, present, ctx| {
        let pinned = map.pin();
        match pinned.try_insert(KEY.to_string(), NEW) {
            Ok(stored) => {
                assert!(!present, "{ctx}: stored over a present key");
                assert_eq!(*stored, NEW, "{ctx}");
            }
            Err(occupied) => {
                assert!(present, "{ctx}: refused for an absent key");
                assert_eq!(
                    (*occupied.current, occupied.not_inserted),
                    (OLD, NEW),
                    "{ctx}"
                );
                assert_eq!(
                    occupied.to_string(),
                    "key already present with value 1; 2 was not inserted",
                    "{ctx}"
                );
            }
        }
        drop(pinned);
        assert_contents(map, Some(if present { OLD } else { NEW }), ctx);
    });
}

#[test]
fn get_or_insert_returns_existing_or_stored() {
    each_state(|map, present, ctx| {
        let expected = if present { OLD } else { NEW };
        assert_eq!(map.get_or_insert(KEY.to_string(), NEW), expected, "{ctx}");
        assert_eq!(map.get_or_insert(KEY.to_string(), OTHER), expected, "{ctx}");
        assert_eq!(
            *map.pin().get_or_insert(KEY.to_string(), OTHER),
            expected,
            "{ctx}"
        );
        assert_contents(map, Some(expected), ctx);
    });
}

#[test]
fn get_or_insert_with_calls_make_only_when_absent() {
    each_state(|map, present, ctx| {
        let calls = Cell::new(0);
        let make = || {
            calls.set(calls.get() + 1);
            NEW
        };
        let pinned = map.pin();
        let expected = if present { OLD } else { NEW };
        assert_eq!(
            *pinned.get_or_insert_with(KEY.to_string(), make),
            expected,
            "{ctx}"
        );
        assert_eq!(calls.get(), usize::from(!present), "{ctx}: calls to make");
        // Present now: `make` must not run again.
        let value =
            pinned.get_or_insert_with(KEY.to_string(), || panic!("called for a present key"));
        assert_eq!(*value, expected, "{ctx}");
        drop(pinned);
        assert_contents(map, Some(expected), ctx);
    });
}

// ----- LoadAndDelete --------------------------------------------------------

#[test]
fn remove_returns_value_then_none() {
    each_state(|map, present, ctx| {
        assert_eq!(
            map.remove(KEY),
            present.then_some(OLD),
            "{ctx}: first remove"
        );
        assert_eq!(map.remove(KEY), None, "{ctx}: second remove");
        assert_contents(map, None, ctx);
        // Removal does not poison the key: it can be stored again.
        assert_eq!(map.insert(KEY.to_string(), NEW), None, "{ctx}");
        assert_contents(map, Some(NEW), ctx);
        assert_eq!(map.pin().remove(KEY), Some(&NEW), "{ctx}");
        assert_contents(map, None, ctx);
    });
}

// ----- CompareAndSwap -------------------------------------------------------

#[test]
fn compare_and_swap_absent_is_false_and_does_not_insert() {
    each_state(|map, present, ctx| {
        if present {
            return;
        }
        assert!(!map.compare_and_swap(KEY, &OLD, NEW), "{ctx}");
        assert!(!map.compare_and_swap(KEY, &NEW, NEW), "{ctx}");
        assert!(!map.pin().compare_and_swap(KEY, &0, NEW), "{ctx}");
        assert_contents(map, None, ctx);
    });
}

#[test]
fn compare_and_swap_present() {
    each_state(|map, present, ctx| {
        if !present {
            return;
        }
        assert!(
            !map.compare_and_swap(KEY, &NEW, OTHER),
            "{ctx}: wrong old value"
        );
        assert_contents(map, Some(OLD), ctx);
        assert!(
            map.compare_and_swap(KEY, &OLD, NEW),
            "{ctx}: matching old value"
        );
        assert_contents(map, Some(NEW), ctx);
        assert!(
            !map.compare_and_swap(KEY, &OLD, OTHER),
            "{ctx}: stale old value"
        );
        assert!(
            map.pin().compare_and_swap(KEY, &NEW, NEW),
            "{ctx}: swap to equal value"
        );
        assert_contents(map, Some(NEW), ctx);
    });
}

// ----- CompareAndDelete -----------------------------------------------------

#[test]
fn compare_and_delete_absent_is_false() {
    each_state(|map, present, ctx| {
        if present {
            return;
        }
        assert!(!map.compare_and_delete(KEY, &OLD), "{ctx}");
        assert!(!map.pin().compare_and_delete(KEY, &0), "{ctx}");
        assert_contents(map, None, ctx);
    });
}

#[test]
fn compare_and_delete_present() {
    each_state(|map, present, ctx| {
        if !present {
            return;
        }
        assert!(!map.compare_and_delete(KEY, &NEW), "{ctx}: wrong old value");
        assert_contents(map, Some(OLD), ctx);
        assert!(
            map.compare_and_delete(KEY, &OLD),
            "{ctx}: matching old value"
        );
        assert_contents(map, None, ctx);
        assert!(!map.compare_and_delete(KEY, &OLD), "{ctx}: already deleted");
        assert_contents(map, None, ctx);
    });
}

// ----- update ---------------------------------------------------------------

#[test]
fn update_absent_returns_none_without_calling_f() {
    each_state(|map, present, ctx| {
        if present {
            return;
        }
        assert_eq!(
            map.update(KEY, |_| panic!("f called for an absent key")),
            None,
            "{ctx}"
        );
        assert_eq!(
            map.pin()
                .update(KEY, |_| panic!("f called for an absent key")),
            None,
            "{ctx}"
        );
        assert_contents(map, None, ctx);
    });
}

#[test]
fn update_present_stores_and_returns_f_of_current() {
    each_state(|map, present, ctx| {
        if !present {
            return;
        }
        let mut seen = Vec::new();
        let updated = map.update(KEY, |v| {
            seen.push(*v);
            v + 10
        });
        assert_eq!(updated, Some(OLD + 10), "{ctx}");
        // Single-threaded: f runs exactly once, on the current value.
        assert_eq!(seen, [OLD], "{ctx}");
        assert_contents(map, Some(OLD + 10), ctx);
        assert_eq!(
            map.pin().update(KEY, |v| v * 2),
            Some(&((OLD + 10) * 2)),
            "{ctx}"
        );
        assert_contents(map, Some((OLD + 10) * 2), ctx);
    });
}

// ----- Clear ----------------------------------------------------------------

#[test]
fn clear_empties_and_map_is_reusable() {
    each_state(|map, _present, ctx| {
        map.clear();
        assert!(map.is_empty(), "{ctx}");
        assert_eq!(map.len(), 0, "{ctx}");
        assert_eq!(map.get(KEY), None, "{ctx}");
        for (k, _) in FILLERS {
            assert_eq!(map.get(k), None, "{ctx}");
            assert!(!map.contains_key(k), "{ctx}");
        }
        assert_eq!(map.pin().iter().count(), 0, "{ctx}");
        // Clearing an empty map is fine.
        map.clear();
        assert!(map.is_empty(), "{ctx}");

        // Reusable: every operation works afterwards, including on keys that
        // were cleared (their old entries are expunged).
        insert_fillers(map);
        assert_eq!(map.insert(KEY.to_string(), NEW), None, "{ctx}");
        assert_contents(map, Some(NEW), ctx);
        promote_all(map);
        assert_eq!(map.try_insert(KEY.to_string(), OTHER), Err(OTHER), "{ctx}");
        assert!(map.compare_and_swap(KEY, &NEW, OTHER), "{ctx}");
        assert_contents(map, Some(OTHER), ctx);
        map.clear();
        assert_eq!(map.try_insert(KEY.to_string(), OLD), Ok(()), "{ctx}");
        assert_eq!(map.len(), 1, "{ctx}");
        assert_eq!(map.get(KEY), Some(OLD), "{ctx}");
    });
}

#[test]
fn clear_through_pinned_handle() {
    for_each_config::<u32, u32>(|config, map| {
        for i in 0..50 {
            map.insert(i, i);
        }
        let pinned = map.pin();
        let before = pinned.get(&7).expect("stored");
        pinned.clear();
        assert!(pinned.is_empty(), "{}", config.name);
        assert_eq!(pinned.get(&7), None, "{}", config.name);
        // A reference taken before the clear stays readable.
        assert_eq!(*before, 7, "{}", config.name);
    });
}

// ----- len / is_empty -------------------------------------------------------

#[test]
fn len_tracks_every_kind_of_change() {
    for_each_config::<u32, u32>(|config, map| {
        let name = config.name;
        assert!(map.is_empty(), "{name}");
        assert_eq!(map.len(), 0, "{name}");
        for i in 0..100 {
            assert_eq!(map.insert(i, i), None, "{name}");
            assert_eq!(map.len(), i as usize + 1, "{name}");
        }
        // Overwrites do not change the length.
        for i in 0..100 {
            map.insert(i, i + 1);
        }
        assert_eq!(map.len(), 100, "{name}");
        for i in 0..100 {
            assert_eq!(map.try_insert(i, 0), Err(0), "{name}");
        }
        assert_eq!(map.len(), 100, "{name}");
        for i in (0..100).step_by(2) {
            assert_eq!(map.remove(&i), Some(i + 1), "{name}");
        }
        assert_eq!(map.len(), 50, "{name}");
        for i in (1..100).step_by(4) {
            assert!(map.compare_and_delete(&i, &(i + 1)), "{name}");
        }
        assert_eq!(map.len(), 25, "{name}");
        for i in (0..100).step_by(2) {
            assert_eq!(map.get_or_insert(i, i), i, "{name}");
        }
        assert_eq!(map.len(), 75, "{name}");
        assert_eq!(map.pin().len(), 75, "{name}");
        assert_eq!(map.pin().iter().count(), 75, "{name}");
        assert!(!map.is_empty(), "{name}");
        assert!(!map.pin().is_empty(), "{name}");
        map.clear();
        assert_eq!(map.len(), 0, "{name}");
        assert!(map.is_empty(), "{name}");
    });
}

// ----- Range (iteration) ----------------------------------------------------

#[test]
fn iter_keys_values_agree() {
    for_each_config::<u32, u64>(|config, map| {
        let name = config.name;
        for i in 0..200u32 {
            map.insert(i, u64::from(i) * 3);
        }
        for i in (0..200u32).step_by(3) {
            map.remove(&i);
        }
        let pinned = map.pin();
        let mut pairs: Vec<(u32, u64)> = pinned.iter().map(|(k, v)| (*k, *v)).collect();
        pairs.sort_unstable();
        let expected: Vec<(u32, u64)> = (0..200u32)
            .filter(|i| i % 3 != 0)
            .map(|i| (i, u64::from(i) * 3))
            .collect();
        assert_eq!(pairs, expected, "{name}");

        let mut keys: Vec<u32> = pinned.keys().copied().collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            expected.iter().map(|p| p.0).collect::<Vec<_>>(),
            "{name}"
        );
        let mut values: Vec<u64> = pinned.values().copied().collect();
        values.sort_unstable();
        assert_eq!(
            values,
            expected.iter().map(|p| p.1).collect::<Vec<_>>(),
            "{name}"
        );
        // `&Pinned` is iterable.
        assert_eq!((&pinned).into_iter().count(), expected.len(), "{name}");
        // Iterators are fused.
        let mut iter = pinned.iter();
        iter.by_ref().for_each(drop);
        assert!(iter.next().is_none(), "{name}");
        assert!(iter.next().is_none(), "{name}");
    });
}

// ----- trait impls ----------------------------------------------------------

#[test]
fn debug_formats_as_a_map() {
    let map: SnapMap<&str, u32> = SnapMap::new();
    assert_eq!(format!("{map:?}"), "{}");
    assert_eq!(format!("{:?}", map.pin()), "{}");
    map.insert("a", 1);
    assert_eq!(format!("{map:?}"), r#"{"a": 1}"#);
    assert_eq!(format!("{:?}", map.pin()), r#"{"a": 1}"#);
    map.insert("b", 2);
    let debug = format!("{map:?}");
    assert!(
        debug == r#"{"a": 1, "b": 2}"# || debug == r#"{"b": 2, "a": 1}"#,
        "unexpected Debug output {debug}"
    );
    map.remove("a");
    assert_eq!(format!("{map:?}"), r#"{"b": 2}"#);
}

#[test]
fn default_is_empty_with_default_shards() {
    let map: SnapMap<u32, u32> = SnapMap::default();
    assert!(map.is_empty());
    assert_eq!(map.stats().shards, snapmap::DEFAULT_SHARDS);
    assert_eq!(
        SnapMap::<u32, u32>::new().stats().shards,
        snapmap::DEFAULT_SHARDS
    );
    map.insert(1, 2);
    assert_eq!(map.get(&1), Some(2));

    // `Default` for a map with a custom hasher type.
    type Fixed = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;
    let map: SnapMap<u32, u32, Fixed> = SnapMap::default();
    map.insert(3, 4);
    assert_eq!(map.get(&3), Some(4));
}

#[test]
fn from_iterator_later_pair_wins() {
    let map: SnapMap<&str, u32> = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)]
        .into_iter()
        .collect();
    assert_eq!(map.len(), 3);
    assert_eq!(map.get("a"), Some(3));
    assert_eq!(map.get("b"), Some(5));
    assert_eq!(map.get("c"), Some(4));

    let empty: SnapMap<u8, u8> = std::iter::empty().collect();
    assert!(empty.is_empty());
}

#[test]
fn extend_owned_and_shared() {
    let mut map: SnapMap<u32, u32> = SnapMap::new();
    map.extend([(1, 10), (2, 20), (1, 11)]);
    assert_eq!(map.len(), 2);
    assert_eq!(map.get(&1), Some(11));
    assert_eq!(map.get(&2), Some(20));

    // Through a shared reference: no `mut` needed.
    let shared = &map;
    let mut handle = shared;
    handle.extend([(2, 21), (3, 30)]);
    assert_eq!(map.len(), 3);
    assert_eq!(map.get(&2), Some(21));
    assert_eq!(map.get(&3), Some(30));

    // Several threads can extend one map.
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let map = &map;
            s.spawn(move || {
                let mut handle = map;
                handle.extend((0..50).map(|i| (100 + t * 100 + i, i)));
            });
        }
    });
    assert_eq!(map.len(), 103);
}

#[test]
fn hasher_accessor_returns_the_given_hasher() {
    type Fixed = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;
    let map: SnapMap<u32, u32, Fixed> = SnapMap::with_hasher(Fixed::default());
    let _: &Fixed = map.hasher();
    map.insert(1, 1);
    assert_eq!(map.len(), 1);
    assert_eq!(map.stats().shards, snapmap::DEFAULT_SHARDS);
    let pinned = map.pin();
    assert!(std::ptr::eq(pinned.map(), &map));
}

// ----- builder ----------------------------------------------------------------

#[test]
fn builder_rejects_invalid_shard_counts() {
    let max = snapmap::DEFAULT_MAX_SHARDS;
    assert_eq!(max, 1 << 20);
    for requested in [0usize, 3, 6, 100, 65_535, max + 1, max * 2, usize::MAX] {
        let err = SnapMap::<u8, u8>::builder()
            .shards(requested)
            .build()
            .expect_err("invalid shard count accepted");
        assert_eq!(
            err,
            BuildError::ShardCount {
                requested,
                max_shards: max
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "shard count must be a power of two between 1 and max_shards (1048576), got {requested}"
            )
        );
    }
    // More initial shards than a smaller cap.
    let err = SnapMap::<u8, u8>::builder()
        .shards(64)
        .max_shards(16)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::ShardCount {
            requested: 64,
            max_shards: 16
        }
    );
    assert_eq!(
        err.to_string(),
        "shard count must be a power of two between 1 and max_shards (16), got 64"
    );
}

#[test]
fn builder_rejects_invalid_max_shards() {
    for requested in [0usize, 3, 1000, (1 << 26) + 1, 1 << 27, usize::MAX] {
        let err = SnapMap::<u8, u8>::builder()
            .shards(1)
            .max_shards(requested)
            .build()
            .expect_err("invalid max_shards accepted");
        assert_eq!(err, BuildError::MaxShards { requested });
        assert_eq!(
            err.to_string(),
            format!("max_shards must be a power of two between 1 and 67108864, got {requested}")
        );
    }
}

#[test]
fn builder_rejects_shard_capacities_outside_their_limits() {
    // Issue 11: `shard_capacity(n)` for n >= 2^63 was accepted, and the
    // first `remove` or `clear` then overflowed (`2 * capacity`).
    for requested in [0, snapmap::MAX_SHARD_CAPACITY + 1, 1 << 63, usize::MAX] {
        let err = SnapMap::<u8, u8>::builder()
            .shard_capacity(requested)
            .build()
            .expect_err("invalid capacity accepted");
        assert_eq!(err, BuildError::ShardCapacity { requested });
        assert_eq!(
            err.to_string(),
            format!("shard capacity must be between 1 and 1073741824 entries, got {requested}")
        );
    }
    // Every accepted capacity, the largest included, survives the
    // operations that do arithmetic with it: inserts, removes (merges) and
    // `clear`, on an empty map too.
    for capacity in [1, 2, 4, 1000, snapmap::MAX_SHARD_CAPACITY] {
        let map = SnapMap::<u32, u32>::builder()
            .shards(1)
            .shard_capacity(capacity)
            .build()
            .unwrap_or_else(|e| panic!("capacity {capacity} rejected: {e}"));
        map.clear();
        assert_eq!(map.remove(&0), None);
        for i in 0..20 {
            map.insert(i, i);
        }
        assert_eq!(map.len(), 20, "capacity {capacity}");
        assert_eq!(map.pin().iter().count(), 20, "capacity {capacity}");
        for i in 0..10 {
            assert_eq!(map.remove(&i), Some(i), "capacity {capacity}");
        }
        assert_eq!(map.len(), 10, "capacity {capacity}");
        map.clear();
        assert!(map.is_empty(), "capacity {capacity}");
    }
}

#[test]
fn builder_limits_initial_shards_to_what_memory_allows() {
    // Issue 11: `shards(2^26)` was accepted and then needed about 29 GiB.
    let err = SnapMap::<u8, u8>::builder()
        .max_shards(1 << 26)
        .shards(1 << 26)
        .build()
        .expect_err("2^26 initial shards accepted");
    assert_eq!(err, BuildError::TooManyInitialShards { requested: 1 << 26 });
    assert!(err.to_string().contains("at most 1048576"), "{err}");
    let err = SnapMap::<u8, u8>::builder()
        .max_shards(1 << 26)
        .shards(snapmap::MAX_INITIAL_SHARDS * 2)
        .build()
        .expect_err("2^21 initial shards accepted");
    assert_eq!(
        err,
        BuildError::TooManyInitialShards {
            requested: snapmap::MAX_INITIAL_SHARDS * 2
        }
    );
    // The largest directory is still accepted: its shards are allocated
    // only as the map grows.
    let map = SnapMap::<u8, u8>::builder()
        .max_shards(1 << 26)
        .build()
        .expect("max_shards 2^26 with the default initial shards");
    map.insert(1, 1);
    assert_eq!(map.get(&1), Some(1));
}

#[test]
fn builder_accepts_powers_of_two_up_to_the_cap() {
    for bits in 0..=12 {
        let shards = 1usize << bits;
        let map = SnapMap::<u32, u32>::builder()
            .shards(shards)
            .build()
            .unwrap_or_else(|e| panic!("{shards} shards rejected: {e}"));
        let stats = map.stats();
        assert_eq!(stats.shards, shards);
        assert_eq!(stats.directory_slots, shards);
        assert_eq!(stats.global_depth, bits);
        // Keys spread over shards still all work.
        for i in 0..64 {
            map.insert(i, i);
        }
        assert_eq!(map.len(), 64);
        assert_eq!(map.pin().iter().count(), 64);
        for i in 0..64 {
            assert_eq!(map.get(&i), Some(i), "{shards} shards");
        }
    }
    // The initial count may equal the cap, and the largest cap is accepted.
    let map = SnapMap::<u8, u8>::builder()
        .shards(8)
        .max_shards(8)
        .build()
        .unwrap();
    assert_eq!(map.stats().shards, 8);
    assert!(
        SnapMap::<u8, u8>::builder()
            .shards(1)
            .max_shards(1 << 26)
            .build()
            .is_ok()
    );
}

#[test]
fn builder_rejects_zero_promotion_threshold() {
    let err = SnapMap::<u8, u8>::builder()
        .promotion_threshold(0)
        .build()
        .expect_err("threshold 0 accepted");
    assert_eq!(err, BuildError::PromotionThreshold);
    assert_eq!(
        err.to_string(),
        "promotion threshold must be at least 1 slow-path lookup, got 0"
    );
    // The error is a std error that can be boxed and sent across threads.
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
    assert!(boxed.to_string().contains("got 0"));

    for threshold in [1, 2, 1000, usize::MAX] {
        assert!(
            SnapMap::<u8, u8>::builder()
                .promotion_threshold(threshold)
                .build()
                .is_ok(),
            "threshold {threshold} rejected"
        );
    }
}

#[test]
fn builder_reports_the_first_invalid_option() {
    // Checked in order: max_shards, shards, capacity, threshold.
    let all_bad = || {
        SnapMap::<u8, u8>::builder()
            .max_shards(3)
            .shards(5)
            .shard_capacity(0)
            .promotion_threshold(0)
    };
    assert_eq!(
        all_bad().build().unwrap_err(),
        BuildError::MaxShards { requested: 3 }
    );
    assert_eq!(
        all_bad().max_shards(16).build().unwrap_err(),
        BuildError::ShardCount {
            requested: 5,
            max_shards: 16
        }
    );
    assert_eq!(
        all_bad().max_shards(16).shards(4).build().unwrap_err(),
        BuildError::ShardCapacity { requested: 0 }
    );
    assert_eq!(
        all_bad()
            .max_shards(16)
            .shards(4)
            .shard_capacity(1)
            .build()
            .unwrap_err(),
        BuildError::PromotionThreshold
    );
}

#[test]
fn builder_with_custom_hasher() {
    let config = Config {
        name: "custom",
        shards: Some(4),
        threshold: Some(2),
        capacity: Some(8),
    };
    let map: SnapMap<String, u8, foldhash::fast::RandomState> =
        config.build_with_hasher(foldhash::fast::RandomState::default());
    map.insert("x".into(), 1);
    assert_eq!(map.get("x"), Some(1));
    assert_eq!(map.stats().shards, 4);
    // The hasher can be set before or after the other options.
    type Fixed = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;
    let map = SnapMap::<u8, u8>::builder()
        .hasher(Fixed::default())
        .shards(2)
        .build()
        .unwrap();
    assert_eq!(map.stats().shards, 2);
    let map = SnapMap::<u8, u8>::builder()
        .shards(2)
        .hasher(Fixed::default())
        .build()
        .unwrap();
    assert_eq!(map.stats().shards, 2);
}

// ----- borrowed lookups -------------------------------------------------------

#[test]
fn string_keys_are_looked_up_by_str() {
    for_each_config::<String, u32>(|config, map| {
        let name = config.name;
        map.insert(String::from("alpha"), 1);
        map.insert(String::from("beta"), 2);
        map.insert(String::from("gamma"), 3);
        map.insert(String::from("delta"), 4);
        assert_eq!(map.get("alpha"), Some(1), "{name}");
        assert!(map.contains_key("beta"), "{name}");
        assert!(!map.contains_key("omega"), "{name}");
        assert_eq!(map.pin().get("gamma"), Some(&3), "{name}");
        assert_eq!(map.update("alpha", |v| v + 10), Some(11), "{name}");
        assert!(map.compare_and_swap("beta", &2, 20), "{name}");
        assert!(map.compare_and_delete("gamma", &3), "{name}");
        assert_eq!(map.remove("delta"), Some(4), "{name}");
        assert_eq!(map.remove("delta"), None, "{name}");
        assert_eq!(map.pin().remove("beta"), Some(&20), "{name}");
        assert_eq!(map.len(), 1, "{name}");
        assert_eq!(map.get("alpha"), Some(11), "{name}");
        // A `&String` works too.
        assert_eq!(map.get(&String::from("alpha")), Some(11), "{name}");
    });
}

#[test]
fn values_are_cloned_not_moved() {
    for_each_config::<u8, Vec<u8>>(|config, map| {
        map.insert(1, vec![1, 2, 3]);
        let mut copy = map.get(&1).expect("present");
        copy.push(4);
        assert_eq!(map.get(&1), Some(vec![1, 2, 3]), "{}", config.name);
    });
}
