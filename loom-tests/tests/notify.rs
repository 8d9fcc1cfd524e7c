//! # Model: change notification (`SnapMap::wait_for_change`)
//!
//! **Protocol.** A waiter takes the current snapshot; if its revision is
//! not past the one asked for, the waiter registers (a listener on the
//! gate's event, then `waiters += 1`), then checks the change word with a
//! read-modify-write that changes nothing (Release), and sleeps only if the
//! word still equals the snapshot's stamp. A writer marks the word dirty on
//! entering the gate (the first writer after a cut with an Acquire
//! `fetch_or`) and, once it has left, notifies the event if `waiters` is
//! not zero (a plain load). Both sides RMW the change word, so one RMW
//! reads the other: either the waiter sees the mark or the marking writer
//! sees the registration (`src/gate.rs`, "Change notification"). The event
//! here is the loom stand-in (`crate::sync::Event`: a generation under a
//! loom mutex and a condvar), with event-listener's register-then-wait
//! shape.
//!
//! **Interleaving.** A one-shard map holds `a = 0` and `b = 0`, promoted,
//! and a snapshot of it (revision `r`) is cached. `W` applies the batch
//! `{a = 1, b = 1}`. `S` waits for a change past `r`. Unbounded.
//!
//! **Invariant.** The waiter never sleeps through the write (loom reports
//! a deadlock if every thread is blocked), and the snapshot it returns is
//! past `r` and holds the whole batch (`a = 1` and `b = 1`, never one
//! without the other).
//!
//! **Twins.** `CheckBeforeRegister`: the waiter checks the word, then
//! registers; `W` marks and leaves between the two, finds no waiter, and
//! the waiter sleeps forever: loom reports a *deadlock*. `WaiterPlainLoad`:
//! the waiter checks with a plain load, which may read the word from before
//! `W`'s mark while `W`, with no edge from the registration, reads
//! `waiters == 0`: a *deadlock* too.
#![cfg(all(snapmap_loom, not(crossbeam_loom)))]

mod common;

use common::{Bug, assert_twin_caught, check, run_twin, spawn};
use loom::sync::Arc;
use snapmap::{Batch, SnapMap};

fn wakeup() {
    let map = SnapMap::<u64, u64>::builder().shards(1).build().unwrap();
    map.insert(0, 0);
    map.insert(1, 0);
    assert_eq!(map.get(&0), Some(0)); // promotes: the stores below are lock-free
    let revision = map.snapshot().revision(); // cached; the change word is clean
    let map = Arc::new(map);
    let writer = {
        let map = map.clone();
        spawn(move || {
            let mut batch = Batch::new();
            batch.insert(0, 1).insert(1, 1);
            map.apply(batch);
        })
    };
    let waiter = {
        let map = map.clone();
        spawn(move || {
            let changed = map.wait_for_change(revision);
            assert!(changed.revision() > revision, "a snapshot not past r");
            assert_eq!(
                (changed.get(&0), changed.get(&1)),
                (Some(&1), Some(&1)),
                "the waiter's snapshot lacks (part of) the write that woke it"
            );
        })
    };
    writer.join().unwrap();
    waiter.join().unwrap();
}

#[test]
fn notify_wakeup() {
    check("notify_wakeup", None, wakeup);
}

#[test]
fn notify_wakeup_twin_check_before_register_is_caught() {
    assert_twin_caught("twin_check_before_register", "deadlock; threads");
}

#[test]
#[ignore = "broken twin: run by notify_wakeup_twin_check_before_register_is_caught"]
fn twin_check_before_register() {
    run_twin(Bug::CheckBeforeRegister, || {
        check("twin_check_before_register", None, wakeup)
    });
}

#[test]
fn notify_wakeup_twin_waiter_plain_load_is_caught() {
    assert_twin_caught("twin_waiter_plain_load", "deadlock; threads");
}

#[test]
#[ignore = "broken twin: run by notify_wakeup_twin_waiter_plain_load_is_caught"]
fn twin_waiter_plain_load() {
    run_twin(Bug::WaiterPlainLoad, || {
        check("twin_waiter_plain_load", None, wakeup)
    });
}
