//! # Model: a reader holding an inline value while its key is removed and stored again
//!
//! **Protocol.** When the value type needs no drop (`u64` here), a new
//! key's first value lives *inline*, in its entry's own allocation, so a
//! read hit does not follow a pointer to a separate value node. A value
//! that replaces it, or that is stored into the entry after a removal,
//! always gets a node of its own: the inline bytes are never written again,
//! because a pinned reader may still hold a reference into them. They are
//! freed with the entry, through the epoch (the entry model of `reclaim.rs`
//! covers that: its values are `u64`, so its entries are inline entries).
//!
//! **Interleaving.** One shard whose view holds key 0 with the inline value
//! 100. `R` pins, reads key 0 and reads the value again through the same
//! reference; `W` removes key 0 and stores it again with 200 (a lock-free
//! store into the deleted entry, found in the view). Unbounded.
//!
//! **Invariant.** A reference a pinned reader holds keeps its value: both
//! reads see the same number. The map ends with key 0 = 200.
//!
//! **Twin.** `ReuseInlineSlot`: the store into the deleted entry writes
//! the new value over the inline bytes instead of allocating a node. Loom
//! reports the write racing `R`'s read of the inline value (the value sits
//! in a loom-tracked cell: "Causality violation: Concurrent read and write
//! accesses") before `R`'s second read could even see 200.
#![cfg(all(snapmap_loom, not(crossbeam_loom)))]

mod common;

use common::{Bug, assert_twin_caught, check, one_shard_promoted, run_twin, spawn};
use loom::sync::Arc;

fn model() {
    let map = Arc::new(one_shard_promoted(0, 100));

    let writer = {
        let map = map.clone();
        spawn(move || {
            assert_eq!(map.remove(&0), Some(100));
            map.insert(0, 200);
        })
    };
    let reader = {
        let map = map.clone();
        spawn(move || {
            let pinned = map.pin();
            if let Some(value) = pinned.get(&0) {
                let first = *value;
                loom::thread::yield_now();
                // Volatile: the compiler may not assume the bytes behind a
                // shared reference are unchanged; the twin changes them.
                // SAFETY: `value` is a valid reference for the pin's life.
                let again = unsafe { core::ptr::read_volatile(value) };
                assert_eq!(first, again, "a reader's value changed under it");
            }
        })
    };
    reader.join().unwrap();
    writer.join().unwrap();
    assert_eq!(map.get(&0), Some(200));
}

#[test]
fn inline_value() {
    check("inline_value", None, model);
}

#[test]
fn inline_value_twin_reuse_inline_slot_is_caught() {
    assert_twin_caught(
        "twin_reuse_inline_slot",
        "Concurrent read and write accesses",
    );
}

#[test]
#[ignore = "broken twin: run by inline_value_twin_reuse_inline_slot_is_caught"]
fn twin_reuse_inline_slot() {
    run_twin(Bug::ReuseInlineSlot, || {
        check("twin_reuse_inline_slot", None, model)
    });
}
