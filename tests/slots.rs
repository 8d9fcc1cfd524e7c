//! The read view's probing, driven by an identity hasher (a key's hash is
//! the key itself), so that the test chooses where each key sits: keys
//! whose home is one of the last slots of a view (their group of four runs
//! into the padding, and those that wrapped around to the first slots are
//! found by the Robin Hood walk), the hash 0, runs of keys displaced past
//! their group, and absent keys whose hash equals the marker hash that an
//! empty slot carries (`(position + slots / 2) mod slots`, in
//! `src/shard/read_view.rs`), which must never be taken for an entry.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

use snapmap::SnapMap;

/// A hasher whose hash of a `u64` is the `u64`.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Clone, Copy, Default)]
struct Identity;

impl BuildHasher for Identity {
    type Hasher = IdentityHasher;

    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

/// One shard that never splits: every key below lands in one view, whose
/// slot count is the power of two the number of keys calls for.
fn one_view() -> SnapMap<u64, u64, Identity> {
    SnapMap::builder()
        .shards(1)
        .max_shards(1)
        .hasher(Identity)
        .build()
        .expect("valid options")
}

/// Promotes pending keys (a walk promotes an amended shard) and checks the
/// map against `model`, by lookup and by iteration, and that `absent` keys
/// are absent.
fn check(map: &SnapMap<u64, u64, Identity>, model: &BTreeMap<u64, u64>, absent: &[u64]) {
    let walked: BTreeMap<u64, u64> = map.pin().iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(&walked, model, "iteration disagrees with the model");
    let pinned = map.pin();
    for (k, v) in model {
        assert_eq!(pinned.get(k), Some(v), "key {k} (hash {k}) not found");
    }
    for k in absent {
        assert_eq!(pinned.get(k), None, "absent key {k} found");
    }
}

#[test]
fn keys_at_the_end_of_a_view_wrap_and_are_found() {
    // For each view size, fill the last home slots with more keys than
    // they hold, so the run wraps around to the first slots, plus a key of
    // hash 0 that the wrapped run displaces.
    // Under Miri (CI's Tree Borrows step) the small views only: the
    // wrap is the same at every size, and the 1,024-slot view was about a
    // third of that step's interpreted work.
    let sizes: &[u64] = if cfg!(miri) {
        &[8, 16, 64]
    } else {
        &[8, 16, 64, 1024]
    };
    for &slots in sizes {
        let map = one_view();
        let mut model = BTreeMap::new();
        // Enough keys for a view of `slots` slots (at most 80 % used).
        let count = slots * 3 / 5;
        let mut keys: Vec<u64> = Vec::new();
        // Five keys homed at the last slot (distinct hashes: a multiple of
        // `slots` added), three at the one before, then the hash 0, then
        // filler keys in the middle.
        for i in 0..5 {
            keys.push(slots - 1 + i * slots);
        }
        for i in 0..3 {
            keys.push(slots - 2 + i * slots);
        }
        keys.push(0);
        let mut filler = slots / 4;
        while (keys.len() as u64) < count {
            keys.push(filler);
            filler += 1;
        }
        for &k in &keys {
            map.insert(k, k ^ 0xABCD);
            model.insert(k, k ^ 0xABCD);
        }
        // Absent keys whose hashes are the empty slots' markers, for every
        // position of the view and its padding, and more keys homed at the
        // end (they probe the padding and the wrapped slots).
        let mut absent: Vec<u64> = (0..slots + 3)
            .map(|at| (at + slots / 2) % slots)
            .filter(|k| !model.contains_key(k))
            .collect();
        absent.extend((5..9).map(|i| slots - 1 + i * slots));
        check(&map, &model, &absent);
        // Remove every other key, then put some back: deleted, expunged and
        // revived entries in a view with wrapped runs.
        for (i, &k) in keys.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(map.remove(&k), Some(k ^ 0xABCD));
                model.remove(&k);
            }
        }
        check(&map, &model, &absent);
        for (i, &k) in keys.iter().enumerate() {
            if i % 4 == 0 {
                map.insert(k, k + 1);
                model.insert(k, k + 1);
            }
        }
        check(&map, &model, &absent);
    }
}

#[test]
fn long_runs_displaced_past_the_group_are_found() {
    // Forty keys with one home slot (hashes differing only above the slot
    // bits): all but four sit past their group.
    let map = one_view();
    let mut model = BTreeMap::new();
    for i in 0..40u64 {
        let k = 3 + (i << 20);
        map.insert(k, i);
        model.insert(k, i);
    }
    let absent: Vec<u64> = (40..60u64).map(|i| 3 + (i << 20)).collect();
    check(&map, &model, &absent);
}

/// Keys whose hashes agree in their low 32 bits and differ above them: the
/// hot path compares only the low 32 bits of a group's hashes (SSE2, on
/// x86-64), so its first match may be another key's slot, and the lookup
/// must then walk from home by the full hash and the key. Absent keys of
/// the same low bits, and absent keys whose low bits are an empty slot's
/// marker, are not found.
#[test]
fn hashes_equal_in_their_low_32_bits_are_told_apart() {
    for &slots in &[8u64, 64, 1024] {
        let map = one_view();
        let mut model = BTreeMap::new();
        let count = slots * 3 / 5;
        // Runs of four keys sharing their low 32 bits (one home each),
        // at a few homes (the last one's run wraps to the first slots);
        // the rest filler. Eight slots hold one run.
        let homes: Vec<u64> = if slots == 8 {
            vec![1]
        } else {
            vec![1, slots / 2, slots - 2]
        };
        let mut keys: Vec<u64> = Vec::new();
        for &h in &homes {
            for i in 1..=4 {
                keys.push(h | (i << 32));
            }
        }
        let mut filler = 2;
        while (keys.len() as u64) < count {
            if !homes.contains(&filler) {
                keys.push(filler);
            }
            filler += 1;
        }
        for &k in &keys {
            map.insert(k, k ^ 0x5A5A);
            model.insert(k, k ^ 0x5A5A);
        }
        let mut absent: Vec<u64> = Vec::new();
        for &h in &homes {
            // The home's own low bits with no high bits, and unused high
            // bits.
            absent.push(h);
            absent.extend((5..9).map(|i| h | (i << 32)));
        }
        absent.extend((0..slots + 3).map(|at| ((at + slots / 2) % slots) | (7 << 32)));
        absent.retain(|k| !model.contains_key(k));
        check(&map, &model, &absent);
    }
}
