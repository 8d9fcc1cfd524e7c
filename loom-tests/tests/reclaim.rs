//! # Model: a pinned reader while the value and the view it reads are replaced
//!
//! **Protocol.** A reader pins the epoch and loads a value through the
//! shard's read view. A writer then replaces that value (the old value node
//! is *retired*: freed only once every guard pinned before the retirement is
//! gone), adds a new key and promotes, which replaces the read view itself
//! (the old view is retired the same way). A value or view is freed exactly
//! once, and never while a guard that could reach it is alive.
//!
//! **Tiers.** This model runs in both tiers. In tier 1 (`--cfg snapmap_loom`)
//! the epoch is a stand-in that frees at the end of the execution, so the
//! model checks this crate's retirement discipline. In tier 2 (`--cfg
//! snapmap_loom --cfg crossbeam_loom`) it runs on the real crossbeam-epoch,
//! built on loom's primitives, at preemption bound 2 (see the README for
//! the cost): loom then explores the collector's own interleavings too.
//!
//! **Interleaving.** A reader pins and loads key 0; a writer replaces
//! key 0, stores the new key 1 and looks it up (promoting, which replaces the
//! view).
//!
//! **Invariant.** While the reader is pinned, the value it loaded has not
//! been dropped. No value is dropped twice (checked in `Drop`), and every
//! value is dropped by the end of the execution (loom's leak check fails on
//! the `Arc` each value holds if one is never freed).
//!
//! **Twin.** `FreeWithoutEpoch`: `retire` destroys at once (keeping the
//! memory, so that the model reports instead of crashing). Loom finds the
//! schedule where the writer replaces the value between the reader's load
//! and its check.
//!
//! # Model: a pinned reader while the entry it reads leaves the map
//!
//! **Protocol.** No reference count: an entry lives in a read view's slot
//! (or, for a key only in dirty, on the heap), and leaves the map with the
//! table that owns it. Here that is a promotion: a removed key is expunged
//! by the dirty rebuild that the next new key causes, and the promotion
//! that replaces the view retires the view, with the expunged entry (its
//! key with it) in one of its slots.
//!
//! Its values are `u64`, which need no drop, so every entry here is an
//! *inline* entry (`src/shard/entry.rs`, "Inline values"): the value the
//! reader holds lives in the slot itself, and the view's retirement
//! through the epoch is what keeps it readable. Tier 2 runs this on the
//! real collector.
//!
//! **Interleaving.** A reader pins and walks the map (one shard), holding
//! the key and the (inline) value of entry 0; a writer removes key 0, inserts key 1 (rebuild:
//! entry 0 expunged) and looks key 1 up (promotion: entry 0 retired).
//!
//! **Invariant.** While the reader is pinned, the key it holds has not been
//! dropped; every key is dropped exactly once, and key 1, still in the map,
//! when the map drops.
//!
//! Entries live in the read view's slots: the promotion *seals* each entry
//! of the old view that the new one takes (key 2 here) and moves its key
//! into the new view; the old view, when the epoch frees it, drops the keys
//! of its slots that are not sealed (key 0) and leaves the sealed ones to
//! their new owner.
//!
//! **Twin.** `FreeEntryWithoutEpoch`: the old view's entries are destroyed
//! when it is replaced instead of after the epoch (views and shards are
//! still retired properly, so the reader reaches the destroyed entry, not a
//! freed table). Loom finds the schedule where the promotion runs between
//! the reader finding key 0 and checking it.
//!
//! **Twin.** `DropSealedKey`: a view's drop also drops the keys of its
//! sealed slots, which the newer view owns: key 2 is dropped twice.
#![cfg(snapmap_loom)]

mod common;

use common::{Bug, assert_twin_caught, check, run_twin, spawn};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use snapmap::SnapMap;

/// Which values have been dropped.
#[derive(Default)]
struct DropLog([AtomicBool; 3]);

/// A value that records its drop.
struct Tracked {
    id: usize,
    log: Arc<DropLog>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // SeqCst: a test log; the strongest ordering keeps it simple.
        let already = self.log.0[self.id].swap(true, Ordering::SeqCst);
        assert!(!already, "value {} was dropped twice", self.id);
    }
}

/// The preemption bound: unbounded on the tier-1 stand-in, 2 on the real
/// collector (whose own atomics multiply the interleavings).
const BOUND: Option<usize> = if cfg!(crossbeam_loom) { Some(2) } else { None };

fn model() {
    let log = Arc::new(DropLog::default());
    let tracked = |id| Tracked {
        id,
        log: log.clone(),
    };
    let map = SnapMap::<u64, Tracked>::builder()
        .shards(1)
        .build()
        .unwrap();
    map.pin().insert(0, tracked(0));
    assert!(map.pin().get(&0).is_some()); // promotes: key 0 is in the view
    let first_value = map.pin().get(&0).map(|v| v as *const Tracked as usize);
    let map = Arc::new(map);

    let writer = {
        let (map, replacement, new_key) = (map.clone(), tracked(1), tracked(2));
        spawn(move || {
            map.pin().insert(0, replacement); // retires value 0
            map.pin().insert(1, new_key); // amends the view
            assert!(map.pin().get(&1).is_some()); // promotes: retires the old view
        })
    };

    let reader = {
        let (map, log) = (map.clone(), log.clone());
        spawn(move || {
            let pinned = map.pin();
            let loaded = pinned.get(&0);
            if loaded.map(|v| v as *const Tracked as usize) == first_value {
                assert!(
                    !log.0[0].load(Ordering::SeqCst),
                    "a value was freed while a pinned reader could still read it"
                );
            }
            if let Some(value) = loaded {
                assert!(value.id <= 1, "a value read with a wrong id");
            }
        })
    };

    reader.join().unwrap();
    writer.join().unwrap();
    drop(map);
    // Values 1 and 2 were in the map when it dropped: freed now.
    assert!(log.0[1].load(Ordering::SeqCst) && log.0[2].load(Ordering::SeqCst));
}

/// A key that records its drop; it hashes and compares as its `u64` id, so
/// the map can be queried with a plain `u64`.
struct Key {
    id: u64,
    log: Arc<DropLog>,
}

impl Drop for Key {
    fn drop(&mut self) {
        // SeqCst: a test log; the strongest ordering keeps it simple.
        let already = self.log.0[self.id as usize].swap(true, Ordering::SeqCst);
        assert!(!already, "key {} was dropped twice", self.id);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl std::borrow::Borrow<u64> for Key {
    fn borrow(&self) -> &u64 {
        &self.id
    }
}

fn entry_model() {
    let log = Arc::new(DropLog::default());
    let key = |id| Key {
        id,
        log: log.clone(),
    };
    let map = SnapMap::<Key, u64>::builder()
        .shards(1)
        .promotion_threshold(1)
        .build()
        .unwrap();
    map.pin().insert(key(0), 0);
    map.pin().insert(key(2), 2);
    assert!(map.pin().get(&0).is_some()); // promotes: entries 0 and 2 are in the view
    let map = Arc::new(map);

    let writer = {
        let (map, new_key) = (map.clone(), key(1));
        spawn(move || {
            map.pin().remove(&0); // entry 0 deleted
            map.pin().insert(new_key, 1); // rebuild: entry 0 expunged
            // Promotion: the old view, retired, holds entry 0 (expunged)
            // and entry 2 (sealed: its key moved into the new view).
            assert!(map.pin().get(&1).is_some());
        })
    };

    let reader = {
        let (map, log) = (map.clone(), log.clone());
        spawn(move || {
            let pinned = map.pin();
            let held = pinned.iter().find(|(k, _)| k.id == 0);
            if let Some((k, v)) = held {
                assert_eq!(*v, 0, "a value read with a wrong key");
                assert!(
                    !log.0[k.id as usize].load(Ordering::SeqCst),
                    "an entry was freed while a pinned reader could still read its key"
                );
            }
        })
    };

    reader.join().unwrap();
    writer.join().unwrap();
    drop(map);
    // Keys 1 and 2 were in the map when it dropped: freed now (once each:
    // `Key`'s drop checks).
    assert!(
        log.0[1].load(Ordering::SeqCst) && log.0[2].load(Ordering::SeqCst),
        "a key was not dropped with the map"
    );
}

#[test]
fn reclaim_entry() {
    check("reclaim_entry", BOUND, entry_model);
}

#[test]
fn reclaim_entry_twin_free_without_epoch_is_caught() {
    assert_twin_caught(
        "twin_entry_free_without_epoch",
        "an entry was freed while a pinned reader could still read its key",
    );
}

#[test]
#[ignore = "broken twin: run by reclaim_entry_twin_free_without_epoch_is_caught"]
fn twin_entry_free_without_epoch() {
    run_twin(Bug::FreeEntryWithoutEpoch, || {
        check("twin_entry_free_without_epoch", BOUND, entry_model)
    });
}

#[test]
fn reclaim_entry_twin_drop_sealed_key_is_caught() {
    assert_twin_caught("twin_entry_drop_sealed_key", "key 2 was dropped twice");
}

#[test]
#[ignore = "broken twin: run by reclaim_entry_twin_drop_sealed_key_is_caught"]
fn twin_entry_drop_sealed_key() {
    run_twin(Bug::DropSealedKey, || {
        check("twin_entry_drop_sealed_key", BOUND, entry_model)
    });
}

#[test]
fn reclaim() {
    check("reclaim", BOUND, model);
}

#[test]
fn reclaim_twin_free_without_epoch_is_caught() {
    assert_twin_caught(
        "twin_free_without_epoch",
        "a value was freed while a pinned reader could still read it",
    );
}

#[test]
#[ignore = "broken twin: run by reclaim_twin_free_without_epoch_is_caught"]
fn twin_free_without_epoch() {
    run_twin(Bug::FreeWithoutEpoch, || {
        check("twin_free_without_epoch", BOUND, model)
    });
}
