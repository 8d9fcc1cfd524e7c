//! A model test: random operation sequences applied to a `SnapMap` and to a
//! `Mutex<HashMap>` oracle, single-threaded, with identical results after
//! every operation.
//!
//! Keys come from a small space (`0..16`) and values from a smaller one
//! (`0..6`), so keys are stored, removed and stored again, compare-and-swaps
//! both succeed and fail, and entries go through every protocol state (new,
//! promoted, deleted, expunged, revived, cleared, moved by a shard split or
//! merge). The maps use the configurations of `common::CONFIGS` (one shard,
//! the default, promotion threshold 1, tiny shard capacities), with std's
//! fixed-seed hasher, the default random one, and a degenerate hasher that
//! sends every key to the same hash (so lookups depend on `Eq` alone, and
//! splits cannot separate keys).

mod common;

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hasher};
use std::sync::Mutex;

use common::{CONFIGS, Config};
use proptest::prelude::*;
use snapmap::SnapMap;

type Key = u8;
type Value = u32;

/// One operation, and which API performs it (the clone-returning methods on
/// `SnapMap` or the reference-returning ones on `Pinned`).
#[derive(Clone, Debug)]
enum Op {
    Insert(Key, Value, bool),
    Get(Key, bool),
    ContainsKey(Key, bool),
    Remove(Key, bool),
    TryInsert(Key, Value, bool),
    GetOrInsert(Key, Value, bool),
    GetOrInsertWith(Key, Value),
    CompareAndSwap(Key, Value, Value, bool),
    CompareAndDelete(Key, Value, bool),
    Update(Key, Value, bool),
    GetKeyValue(Key, bool),
    RemoveEntry(Key, bool),
    GetOrInsertWithMap(Key, Value),
    Compute(Key, Value, bool),
    UpdateOrInsert(Key, Value, Value, bool),
    UpdateOrInsertWith(Key, Value, Value, bool),
    /// Keep the entries whose value is not `.0`.
    Retain(Value, bool),
    Reserve(u16),
    /// Clone the map; compare the clone with the map and the model.
    CloneEq,
    /// Clone the map and consume the clone with `into_iter`.
    IntoIter,
    Clear,
    Len,
    Iter,
}

/// What an operation returned, comparable between the map and the model.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Value(Option<Value>),
    Bool(bool),
    TryInsert(Result<(), Value>),
    Len(usize, bool),
    Entries(Vec<(Key, Value)>),
    Entry(Option<(Key, Value)>),
    Compute(snapmap::Compute<Value, Value>),
    Unit,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let key = 0..16u8;
    let value = 0..6u32;
    prop_oneof![
        6 => (key.clone(), value.clone(), any::<bool>()).prop_map(|(k, v, p)| Op::Insert(k, v, p)),
        6 => (key.clone(), any::<bool>()).prop_map(|(k, p)| Op::Get(k, p)),
        2 => (key.clone(), any::<bool>()).prop_map(|(k, p)| Op::ContainsKey(k, p)),
        4 => (key.clone(), any::<bool>()).prop_map(|(k, p)| Op::Remove(k, p)),
        3 => (key.clone(), value.clone(), any::<bool>()).prop_map(|(k, v, p)| Op::TryInsert(k, v, p)),
        2 => (key.clone(), value.clone(), any::<bool>()).prop_map(|(k, v, p)| Op::GetOrInsert(k, v, p)),
        2 => (key.clone(), value.clone()).prop_map(|(k, v)| Op::GetOrInsertWith(k, v)),
        3 => (key.clone(), value.clone(), value.clone(), any::<bool>())
            .prop_map(|(k, o, n, p)| Op::CompareAndSwap(k, o, n, p)),
        3 => (key.clone(), value.clone(), any::<bool>()).prop_map(|(k, o, p)| Op::CompareAndDelete(k, o, p)),
        3 => (key.clone(), value.clone(), any::<bool>()).prop_map(|(k, d, p)| Op::Update(k, d, p)),
        2 => (key.clone(), any::<bool>()).prop_map(|(k, p)| Op::GetKeyValue(k, p)),
        2 => (key.clone(), any::<bool>()).prop_map(|(k, p)| Op::RemoveEntry(k, p)),
        1 => (key.clone(), value.clone()).prop_map(|(k, v)| Op::GetOrInsertWithMap(k, v)),
        4 => (key.clone(), value.clone(), any::<bool>()).prop_map(|(k, v, p)| Op::Compute(k, v, p)),
        3 => (key.clone(), value.clone(), value.clone(), any::<bool>())
            .prop_map(|(k, d, v, p)| Op::UpdateOrInsert(k, d, v, p)),
        2 => (key, value.clone(), value.clone(), any::<bool>())
            .prop_map(|(k, d, v, p)| Op::UpdateOrInsertWith(k, d, v, p)),
        1 => (value, any::<bool>()).prop_map(|(v, p)| Op::Retain(v, p)),
        1 => (0..64u16).prop_map(Op::Reserve),
        1 => Just(Op::CloneEq),
        1 => Just(Op::IntoIter),
        1 => Just(Op::Clear),
        2 => Just(Op::Len),
        2 => Just(Op::Iter),
    ]
}

/// The update function both sides apply: deterministic in its input.
fn bump(current: Value, delta: Value) -> Value {
    (current + delta) % 7
}

/// The `compute` decision both sides apply: every operation and outcome
/// (insert, update, remove, remove of an absent key, abort) is reachable.
fn decide(current: Option<Value>, v: Value) -> snapmap::Operation<Value, Value> {
    use snapmap::Operation::{Abort, Insert, Remove};
    match current {
        None if v % 3 == 0 => Abort(v),
        None if v % 3 == 1 => Remove,
        None => Insert(v),
        Some(c) if (c + v) % 3 == 0 => Remove,
        Some(c) if (c + v) % 3 == 1 => Abort(c + 100),
        Some(c) => Insert(bump(c, v)),
    }
}

fn sorted_model(m: &HashMap<Key, Value>) -> Vec<(Key, Value)> {
    let mut entries: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
    entries.sort_unstable();
    entries
}

fn apply_model(model: &Mutex<HashMap<Key, Value>>, op: &Op) -> Outcome {
    let mut m = model.lock().unwrap();
    match *op {
        Op::Insert(k, v, _) => Outcome::Value(m.insert(k, v)),
        Op::Get(k, _) => Outcome::Value(m.get(&k).copied()),
        Op::ContainsKey(k, _) => Outcome::Bool(m.contains_key(&k)),
        Op::Remove(k, _) => Outcome::Value(m.remove(&k)),
        Op::TryInsert(k, v, _) => Outcome::TryInsert(match m.get(&k) {
            Some(_) => Err(v),
            None => {
                m.insert(k, v);
                Ok(())
            }
        }),
        Op::GetOrInsert(k, v, _) | Op::GetOrInsertWith(k, v) => {
            Outcome::Value(Some(*m.entry(k).or_insert(v)))
        }
        Op::CompareAndSwap(k, old, new, _) => Outcome::Bool(match m.get_mut(&k) {
            Some(current) if *current == old => {
                *current = new;
                true
            }
            _ => false,
        }),
        Op::CompareAndDelete(k, old, _) => Outcome::Bool(if m.get(&k) == Some(&old) {
            m.remove(&k);
            true
        } else {
            false
        }),
        Op::Update(k, delta, _) => Outcome::Value(m.get_mut(&k).map(|current| {
            *current = bump(*current, delta);
            *current
        })),
        Op::GetKeyValue(k, _) => Outcome::Entry(m.get(&k).map(|v| (k, *v))),
        Op::RemoveEntry(k, _) => Outcome::Entry(m.remove(&k).map(|v| (k, v))),
        Op::GetOrInsertWithMap(k, v) => Outcome::Value(Some(*m.entry(k).or_insert(v))),
        Op::Compute(k, v, _) => {
            use snapmap::{Compute, Operation};
            let current = m.get(&k).copied();
            Outcome::Compute(match (current, decide(current, v)) {
                (_, Operation::Abort(t)) => Compute::Aborted(t),
                (None, Operation::Remove) => Compute::Absent,
                (Some(old), Operation::Remove) => {
                    m.remove(&k);
                    Compute::Removed(old)
                }
                (None, Operation::Insert(new)) => {
                    m.insert(k, new);
                    Compute::Inserted(new)
                }
                (Some(old), Operation::Insert(new)) => {
                    m.insert(k, new);
                    Compute::Updated { old, new }
                }
            })
        }
        Op::UpdateOrInsert(k, delta, v, _) | Op::UpdateOrInsertWith(k, delta, v, _) => {
            let new = match m.get(&k) {
                Some(c) => bump(*c, delta),
                None => v,
            };
            m.insert(k, new);
            Outcome::Value(Some(new))
        }
        Op::Retain(v, _) => {
            m.retain(|_, value| *value != v);
            Outcome::Unit
        }
        Op::Reserve(_) => Outcome::Unit,
        Op::CloneEq | Op::IntoIter => Outcome::Entries(sorted_model(&m)),
        Op::Clear => {
            m.clear();
            Outcome::Unit
        }
        Op::Len => Outcome::Len(m.len(), m.is_empty()),
        Op::Iter => {
            let mut entries: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
            entries.sort_unstable();
            Outcome::Entries(entries)
        }
    }
}

fn apply_map<S: BuildHasher + Clone>(map: &SnapMap<Key, Value, S>, op: &Op) -> Outcome {
    let pinned = map.pin();
    match *op {
        Op::Insert(k, v, false) => Outcome::Value(map.insert(k, v)),
        Op::Insert(k, v, true) => Outcome::Value(pinned.insert(k, v).copied()),
        Op::Get(k, false) => Outcome::Value(map.get(&k)),
        Op::Get(k, true) => Outcome::Value(pinned.get(&k).copied()),
        Op::ContainsKey(k, false) => Outcome::Bool(map.contains_key(&k)),
        Op::ContainsKey(k, true) => Outcome::Bool(pinned.contains_key(&k)),
        Op::Remove(k, false) => Outcome::Value(map.remove(&k)),
        Op::Remove(k, true) => Outcome::Value(pinned.remove(&k).copied()),
        Op::TryInsert(k, v, false) => Outcome::TryInsert(map.try_insert(k, v)),
        Op::TryInsert(k, v, true) => Outcome::TryInsert(match pinned.try_insert(k, v) {
            Ok(stored) => {
                assert_eq!(*stored, v, "try_insert returned a different stored value");
                Ok(())
            }
            Err(occupied) => {
                assert_ne!(pinned.get(&k), None);
                assert_eq!(Some(occupied.current), pinned.get(&k));
                Err(occupied.not_inserted)
            }
        }),
        Op::GetOrInsert(k, v, false) => Outcome::Value(Some(map.get_or_insert(k, v))),
        Op::GetOrInsert(k, v, true) => Outcome::Value(Some(*pinned.get_or_insert(k, v))),
        Op::GetOrInsertWith(k, v) => Outcome::Value(Some(*pinned.get_or_insert_with(k, || v))),
        Op::CompareAndSwap(k, old, new, false) => {
            Outcome::Bool(map.compare_and_swap(&k, &old, new))
        }
        Op::CompareAndSwap(k, old, new, true) => {
            Outcome::Bool(pinned.compare_and_swap(&k, &old, new))
        }
        Op::CompareAndDelete(k, old, false) => Outcome::Bool(map.compare_and_delete(&k, &old)),
        Op::CompareAndDelete(k, old, true) => Outcome::Bool(pinned.compare_and_delete(&k, &old)),
        Op::Update(k, delta, false) => Outcome::Value(map.update(&k, |v| bump(*v, delta))),
        Op::Update(k, delta, true) => {
            Outcome::Value(pinned.update(&k, |v| bump(*v, delta)).copied())
        }
        Op::GetKeyValue(k, false) => Outcome::Entry(map.get_key_value(&k)),
        Op::GetKeyValue(k, true) => Outcome::Entry(pinned.get_key_value(&k).map(|(k, v)| (*k, *v))),
        Op::RemoveEntry(k, false) => Outcome::Entry(map.remove_entry(&k)),
        Op::RemoveEntry(k, true) => Outcome::Entry(pinned.remove_entry(&k).map(|(k, v)| (*k, *v))),
        Op::GetOrInsertWithMap(k, v) => Outcome::Value(Some(map.get_or_insert_with(k, || v))),
        Op::Compute(k, v, false) => Outcome::Compute(map.compute(k, |c| decide(c.copied(), v))),
        Op::Compute(k, v, true) => {
            Outcome::Compute(pinned.compute(k, |c| decide(c.copied(), v)).map(|v| *v))
        }
        Op::UpdateOrInsert(k, delta, v, false) => {
            Outcome::Value(Some(map.update_or_insert(k, |c| bump(*c, delta), v)))
        }
        Op::UpdateOrInsert(k, delta, v, true) => {
            Outcome::Value(Some(*pinned.update_or_insert(k, |c| bump(*c, delta), v)))
        }
        Op::UpdateOrInsertWith(k, delta, v, false) => Outcome::Value(Some(
            map.update_or_insert_with(k, |c| bump(*c, delta), || v),
        )),
        Op::UpdateOrInsertWith(k, delta, v, true) => Outcome::Value(Some(
            *pinned.update_or_insert_with(k, |c| bump(*c, delta), || v),
        )),
        Op::Retain(v, false) => {
            map.retain(|_, value| *value != v);
            Outcome::Unit
        }
        Op::Retain(v, true) => {
            pinned.retain(|_, value| *value != v);
            Outcome::Unit
        }
        Op::Reserve(n) => {
            map.reserve(n.into());
            Outcome::Unit
        }
        Op::CloneEq => {
            let copy = map.clone();
            assert!(copy == *map, "a clone equals its map");
            assert!(
                map.snapshot() == copy.snapshot(),
                "and so do their snapshots"
            );
            assert_eq!(copy.len(), map.len());
            let mut entries: Vec<_> = copy.pin().iter().map(|(k, v)| (*k, *v)).collect();
            entries.sort_unstable();
            Outcome::Entries(entries)
        }
        Op::IntoIter => {
            let mut entries: Vec<_> = map.clone().into_iter().collect();
            entries.sort_unstable();
            Outcome::Entries(entries)
        }
        Op::Clear => {
            map.clear();
            Outcome::Unit
        }
        Op::Len => {
            assert_eq!(pinned.len(), map.len());
            assert_eq!(map.stats().len, map.len());
            Outcome::Len(map.len(), map.is_empty())
        }
        Op::Iter => {
            let mut entries: Vec<_> = pinned.iter().map(|(k, v)| (*k, *v)).collect();
            entries.sort_unstable();
            Outcome::Entries(entries)
        }
    }
}

/// Applies `ops` to a fresh map and to the model, comparing every outcome,
/// and the full contents at the end.
fn check<S: BuildHasher + Clone>(
    map: SnapMap<Key, Value, S>,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let model = Mutex::new(HashMap::new());
    for (i, op) in ops.iter().enumerate() {
        let expected = apply_model(&model, op);
        let actual = apply_map(&map, op);
        prop_assert_eq!(actual, expected, "op #{}: {:?}", i, op);
    }
    let expected = apply_model(&model, &Op::Iter);
    prop_assert_eq!(apply_map(&map, &Op::Iter), expected);
    prop_assert_eq!(map.len(), model.lock().unwrap().len());
    Ok(())
}

/// Every key hashes to the same value: all keys share one shard and one
/// probe sequence, and lookups depend on `Eq` alone.
#[derive(Clone, Default)]
struct Colliding;

impl BuildHasher for Colliding {
    type Hasher = CollidingHasher;
    fn build_hasher(&self) -> CollidingHasher {
        CollidingHasher
    }
}

struct CollidingHasher;

impl Hasher for CollidingHasher {
    fn finish(&self) -> u64 {
        0x9e37_79b9_7f4a_7c15
    }
    fn write(&mut self, _bytes: &[u8]) {}
}

type Fixed = BuildHasherDefault<DefaultHasher>;

/// A map whose directory is deep enough (4,096 slots) that read hits probe
/// speculatively, with promotion threshold 1 so that keys reach the views.
fn deep_directory<S: BuildHasher>(hasher: S) -> SnapMap<Key, Value, S> {
    let map = SnapMap::builder()
        .shards(4096)
        .promotion_threshold(1)
        .hasher(hasher)
        .build()
        .unwrap();
    assert!(map.stats().global_depth >= 11, "{:?}", map.stats());
    map
}

/// Cases per configuration: a few seconds in debug on two cores. Set
/// `SNAPMAP_MODEL_CASES` to hunt longer (for example in release).
fn cases() -> u32 {
    std::env::var("SNAPMAP_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48)
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(), 0..160)
}

/// The configuration named `name` in `common::CONFIGS`.
fn config(name: &str) -> Config {
    *CONFIGS
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no configuration {name:?}"))
}

const ONE_SHARD: &str = "1 shard";
const DEFAULT: &str = "default";
const THRESHOLD_ONE: &str = "promotion threshold 1";
const ONE_SHARD_THRESHOLD_ONE: &str = "1 shard + promotion threshold 1";
const TINY: &str = "1 shard + capacity 4 (splits and merges)";
const TINY_THRESHOLD_ONE: &str = "1 shard + capacity 2 + promotion threshold 1";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn one_shard_fixed_hasher(ops in ops()) {
        check(config(ONE_SHARD).build_with_hasher(Fixed::default()), &ops)?;
    }

    #[test]
    fn one_shard_random_hasher(ops in ops()) {
        check(config(ONE_SHARD).build::<Key, Value>(), &ops)?;
    }

    #[test]
    fn default_fixed_hasher(ops in ops()) {
        check(config(DEFAULT).build_with_hasher(Fixed::default()), &ops)?;
    }

    #[test]
    fn default_random_hasher(ops in ops()) {
        check(config(DEFAULT).build::<Key, Value>(), &ops)?;
    }

    #[test]
    fn threshold_one_fixed_hasher(ops in ops()) {
        check(config(THRESHOLD_ONE).build_with_hasher(Fixed::default()), &ops)?;
    }

    #[test]
    fn threshold_one_random_hasher(ops in ops()) {
        check(config(THRESHOLD_ONE).build::<Key, Value>(), &ops)?;
    }

    #[test]
    fn one_shard_threshold_one_fixed_hasher(ops in ops()) {
        check(config(ONE_SHARD_THRESHOLD_ONE).build_with_hasher(Fixed::default()), &ops)?;
    }

    #[test]
    fn one_shard_threshold_one_random_hasher(ops in ops()) {
        check(config(ONE_SHARD_THRESHOLD_ONE).build::<Key, Value>(), &ops)?;
    }

    #[test]
    fn tiny_capacity_fixed_hasher(ops in ops()) {
        check(config(TINY).build_with_hasher(Fixed::default()), &ops)?;
    }

    #[test]
    fn tiny_capacity_random_hasher(ops in ops()) {
        check(config(TINY).build::<Key, Value>(), &ops)?;
    }

    #[test]
    fn tiny_capacity_threshold_one_random_hasher(ops in ops()) {
        check(config(TINY_THRESHOLD_ONE).build::<Key, Value>(), &ops)?;
    }

    #[test]
    fn colliding_hasher(ops in ops()) {
        check(config(DEFAULT).build_with_hasher(Colliding), &ops)?;
    }

    #[test]
    fn colliding_hasher_threshold_one(ops in ops()) {
        check(config(ONE_SHARD_THRESHOLD_ONE).build_with_hasher(Colliding), &ops)?;
    }

    #[test]
    fn deep_directory_speculative_reads_fixed_hasher(ops in ops()) {
        // A directory of 4,096 slots: read hits take the speculative probe
        // (`src/shard/read_view.rs`, "Speculative probing").
        check(deep_directory(Fixed::default()), &ops)?;
    }

    #[test]
    fn deep_directory_speculative_reads_colliding_hasher(ops in ops()) {
        // Every key in one view with the same hash: the speculative probe
        // meets 64-bit hash collisions in its group.
        check(deep_directory(Colliding), &ops)?;
    }

    #[test]
    fn colliding_hasher_tiny_capacity_capped_directory(ops in ops()) {
        // Every key has the same hash: splits cannot separate them, so the
        // shard splits down to the `max_shards` cap and then grows past
        // its capacity.
        let map = SnapMap::builder()
            .shards(1)
            .shard_capacity(2)
            .max_shards(8)
            .hasher(Colliding)
            .build()
            .unwrap();
        check(map, &ops)?;
    }
}

/// The configurations above are the ones the other suites use.
#[test]
fn configurations_are_as_named() {
    assert_eq!(config(ONE_SHARD).build::<u8, u8>().stats().shards, 1);
    assert_eq!(
        config(DEFAULT).build::<u8, u8>().stats().shards,
        snapmap::DEFAULT_SHARDS
    );
    assert_eq!(config(THRESHOLD_ONE).threshold, Some(1));
    assert_eq!(
        config(ONE_SHARD_THRESHOLD_ONE)
            .build::<u8, u8>()
            .stats()
            .shards,
        1
    );
    assert_eq!(config(ONE_SHARD_THRESHOLD_ONE).threshold, Some(1));
    // A tiny capacity really splits and merges.
    let map: SnapMap<u32, u32> = config(TINY).build();
    for k in 0..64 {
        map.insert(k, k);
    }
    assert!(map.stats().splits > 0 && map.stats().shards > 1);
    for k in 0..64 {
        map.remove(&k);
    }
    assert!(map.stats().merges > 0);
}

/// A long deterministic sequence, checked against the model, that provably
/// walks the protocol through misses, promotions, rebuilds and expunges (so
/// the random cases above are not all stuck on one path).
#[test]
fn long_sequence_reaches_every_protocol_step() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let ops = prop::collection::vec(op_strategy(), 3000)
        .new_tree(&mut runner)
        .expect("strategy")
        .current();
    for config in CONFIGS {
        let map: SnapMap<Key, Value, Fixed> = config.build_with_hasher(Fixed::default());
        let model = Mutex::new(HashMap::new());
        for (i, op) in ops.iter().enumerate() {
            let expected = apply_model(&model, op);
            assert_eq!(
                apply_map(&map, op),
                expected,
                "{}: op #{i}: {op:?}",
                config.name
            );
        }
        let stats = map.stats();
        assert!(stats.slow_path_lookups > 0, "{}: {stats}", config.name);
        assert!(stats.promotions > 0, "{}: {stats}", config.name);
        assert!(stats.dirty_rebuilds > 0, "{}: {stats}", config.name);
        assert!(stats.entries_copied > 0, "{}: {stats}", config.name);
        assert!(stats.expunges > 0, "{}: {stats}", config.name);
        if config.capacity.is_some() {
            assert!(
                stats.splits > 0 && stats.merges > 0,
                "{}: {stats}",
                config.name
            );
        }
    }
}
