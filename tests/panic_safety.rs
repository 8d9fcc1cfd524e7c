//! Panics in user code leave the map unchanged, consistent and leak-free.
//!
//! User code that can panic inside an operation: the key's `Hash` (before
//! anything is touched), the key's `Eq` (during a lookup, under the shard
//! lock on the slow path), a value's `PartialEq` (compare-and-swap and
//! compare-and-delete), and the closures of `update` and
//! `get_or_insert_with`, `compute`, `update_or_insert(_with)` and `retain`.
//! Each case injects one panic, catches it, and then
//! checks that
//!
//! - the map still holds exactly what it held before (values intact, `len`
//!   equal to the iteration count),
//! - the shard lock was released (another thread inserts a new key into
//!   the same, single shard, within a generous watchdog bound),
//! - new operations work, and
//! - after the map is dropped and the epoch flushed, every key and value
//!   ever created has been dropped exactly once.
//!
//! Maps have one shard so that every key shares the lock. Keys `0..4` are
//! in the read view (operations on them run on the fast path), keys
//! `10..14` only in the dirty table (operations take the lock). Both Go's
//! promotion rule and threshold 1 are used.
//!
//! Panics are armed per thread (thread-locals), so tests running in
//! parallel do not trip each other's.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Once};
use std::thread;

use common::{Counts, Tracked, wait_for_drops, without_deadlock};
use snapmap::{Operation, SnapMap};

// ----- injected panics -------------------------------------------------------

const INJECTED: &str = "injected panic";

thread_local! {
    /// Countdown to a panic in `PanicKey::hash` (0: disarmed).
    static HASH_COUNTDOWN: Cell<u32> = const { Cell::new(0) };
    /// Countdown to a panic in `PanicKey::eq`.
    static EQ_COUNTDOWN: Cell<u32> = const { Cell::new(0) };
    /// Countdown to a panic in `PanicValue::eq`.
    static VALUE_EQ_COUNTDOWN: Cell<u32> = const { Cell::new(0) };
    /// Countdown to a panic in `PanicValue::clone`.
    static VALUE_CLONE_COUNTDOWN: Cell<u32> = const { Cell::new(0) };
    /// Countdown to running `ON_CLONE` in `PanicValue::clone`.
    static HOOK_COUNTDOWN: Cell<u32> = const { Cell::new(0) };
    /// Code to run inside a `PanicValue::clone` (see `HOOK_COUNTDOWN`).
    static ON_CLONE: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::RefCell::new(None) };
}

type Countdown = std::thread::LocalKey<Cell<u32>>;

/// Makes the `nth` call (1-based) of the guarded function on this thread
/// panic.
fn arm(countdown: &'static Countdown, nth: u32) {
    countdown.with(|c| c.set(nth));
}

fn disarm_all() {
    for countdown in [
        &HASH_COUNTDOWN,
        &EQ_COUNTDOWN,
        &VALUE_EQ_COUNTDOWN,
        &VALUE_CLONE_COUNTDOWN,
        &HOOK_COUNTDOWN,
    ] {
        countdown.with(|c| c.set(0));
    }
    ON_CLONE.with(|hook| hook.borrow_mut().take());
}

fn maybe_panic(countdown: &'static Countdown, what: &str) {
    if countdown_fires(countdown) {
        panic!("{INJECTED} in {what}");
    }
}

/// Counts one call down; true on the armed call.
fn countdown_fires(countdown: &'static Countdown) -> bool {
    countdown.with(|c| match c.get() {
        0 => false,
        1 => {
            c.set(0);
            true
        }
        n => {
            c.set(n - 1);
            false
        }
    })
}

/// Keeps the test output readable: injected panics are expected, so the
/// hook stays quiet for them and defers to the default hook otherwise.
fn quiet_injected_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.starts_with(INJECTED) {
                default(info);
            }
        }));
    });
}

/// Runs `f`, which must panic with an injected panic; disarms everything.
fn expect_injected_panic(ctx: &str, f: impl FnOnce()) {
    quiet_injected_panics();
    let result = catch_unwind(AssertUnwindSafe(f));
    disarm_all();
    let payload = result.expect_err(&format!("{ctx}: no panic"));
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| format!("{:?}", payload.downcast_ref::<&str>()));
    assert!(
        message.starts_with(INJECTED),
        "{ctx}: a different panic: {message}"
    );
}

// ----- key and value types -------------------------------------------------------

/// A key whose `Hash` and `Eq` panic when armed, and which counts drops.
#[derive(Clone, Debug)]
struct PanicKey(Tracked<u32>);

impl Hash for PanicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        maybe_panic(&HASH_COUNTDOWN, "Hash");
        self.0.inner.hash(state);
    }
}

impl PartialEq for PanicKey {
    fn eq(&self, other: &Self) -> bool {
        maybe_panic(&EQ_COUNTDOWN, "Eq");
        self.0.inner == other.0.inner
    }
}

impl Eq for PanicKey {}

/// A value whose `PartialEq` and `Clone` panic when armed (`Clone` can
/// also run a hook), and which counts drops.
#[derive(Debug)]
struct PanicValue(Tracked<u32>);

impl Clone for PanicValue {
    fn clone(&self) -> Self {
        if countdown_fires(&HOOK_COUNTDOWN) {
            if let Some(hook) = ON_CLONE.with(|hook| hook.borrow_mut().take()) {
                hook();
            }
        }
        maybe_panic(&VALUE_CLONE_COUNTDOWN, "Clone");
        PanicValue(self.0.clone())
    }
}

impl PartialEq for PanicValue {
    fn eq(&self, other: &Self) -> bool {
        maybe_panic(&VALUE_EQ_COUNTDOWN, "PartialEq");
        self.0.inner == other.0.inner
    }
}

type Map = SnapMap<PanicKey, PanicValue>;

// ----- fixture ------------------------------------------------------------------

/// Keys in the read view.
const VIEW_KEYS: [u32; 4] = [0, 1, 2, 3];
/// Keys only in the dirty table.
const DIRTY_KEYS: [u32; 4] = [10, 11, 12, 13];
/// A key never stored.
const ABSENT: u32 = 77;
/// A key stored only after the panics.
const NEW_KEY: u32 = 4000;
/// The value offered by operations that store.
const OFFERED: u32 = 999;

fn original_value(k: u32) -> u32 {
    k * 10 + 5
}

struct Fixture {
    map: Arc<Map>,
    keys: Arc<Counts>,
    values: Arc<Counts>,
    /// What the map must hold.
    model: BTreeMap<u32, u32>,
    name: String,
}

impl Fixture {
    fn new(threshold: Option<usize>, name: &str) -> Self {
        let mut builder = SnapMap::builder().shards(1);
        if let Some(threshold) = threshold {
            builder = builder.promotion_threshold(threshold);
        }
        let fixture = Fixture {
            map: Arc::new(builder.build().unwrap()),
            keys: Counts::new(),
            values: Counts::new(),
            model: VIEW_KEYS
                .iter()
                .chain(&DIRTY_KEYS)
                .map(|&k| (k, original_value(k)))
                .collect(),
            name: format!("{name} (threshold {threshold:?})"),
        };
        for k in VIEW_KEYS {
            fixture
                .map
                .insert(fixture.key(k), fixture.value(original_value(k)));
        }
        let _ = fixture.map.pin().iter().count(); // promote
        for k in DIRTY_KEYS {
            fixture
                .map
                .insert(fixture.key(k), fixture.value(original_value(k)));
        }
        let stats = fixture.map.stats();
        assert_eq!((stats.promotions, stats.dirty_rebuilds), (1, 2));
        fixture
    }

    fn key(&self, k: u32) -> PanicKey {
        PanicKey(self.keys.track(k))
    }

    fn value(&self, v: u32) -> PanicValue {
        PanicValue(self.values.track(v))
    }

    /// The map holds exactly `model`, and `len` agrees with iteration.
    fn assert_consistent(&self, ctx: &str) {
        let pinned = self.map.pin();
        let mut walked = BTreeMap::new();
        for (k, v) in &pinned {
            assert!(
                walked.insert(k.0.inner, v.0.inner).is_none(),
                "{ctx}: key yielded twice"
            );
        }
        assert_eq!(walked, self.model, "{ctx}: contents changed");
        assert_eq!(self.map.len(), walked.len(), "{ctx}: len vs iteration");
        for (&k, &v) in &self.model {
            assert_eq!(
                pinned.get(&self.key(k)).map(|v| v.0.inner),
                Some(v),
                "{ctx}: key {k}"
            );
        }
        assert!(
            pinned.get(&self.key(ABSENT)).is_none(),
            "{ctx}: absent key found"
        );
        drop(pinned);
        // A snapshot agrees (and can be built at all: no write is still
        // counted as inside the write gate on this thread).
        let snapshot = self.map.snapshot();
        let frozen: BTreeMap<u32, u32> = snapshot
            .iter()
            .map(|(k, v)| (k.0.inner, v.0.inner))
            .collect();
        assert_eq!(frozen, self.model, "{ctx}: snapshot contents");
    }

    /// Another thread inserts and removes a new key in the (only) shard:
    /// this needs the shard lock, so it proves the lock was released.
    fn assert_lock_released(&self, ctx: &str) {
        let map = Arc::clone(&self.map);
        let (keys, values) = (Arc::clone(&self.keys), Arc::clone(&self.values));
        without_deadlock(&format!("{ctx}: insert from another thread"), move || {
            let k = 5000;
            let key = || PanicKey(keys.track(k));
            assert!(map.insert(key(), PanicValue(values.track(1))).is_none());
            assert_eq!(map.get(&key()).map(|v| v.0.inner), Some(1));
            assert_eq!(map.remove(&key()).map(|v| v.0.inner), Some(1));
            // The write gate is open too: another thread builds a snapshot.
            drop(map.snapshot());
        });
    }

    /// Everything works afterwards: the lock is free, new keys and updates
    /// go through, and after the map is dropped nothing is left.
    fn finish(mut self, ctx: &str) {
        self.assert_consistent(ctx);
        self.assert_lock_released(ctx);
        self.assert_consistent(ctx);

        // New operations on every kind of key.
        let map = &self.map;
        assert!(
            map.insert(self.key(NEW_KEY), self.value(1)).is_none(),
            "{ctx}"
        );
        assert!(
            map.update(&self.key(0), |v| self.value(v.0.inner + 1))
                .is_some(),
            "{ctx}"
        );
        assert!(map.remove(&self.key(DIRTY_KEYS[0])).is_some(), "{ctx}");
        self.model.insert(NEW_KEY, 1);
        *self.model.get_mut(&0).unwrap() += 1;
        self.model.remove(&DIRTY_KEYS[0]);
        self.assert_consistent(ctx);
        self.drop_map();
    }

    /// Drops the map (this must be its last owner) and waits until every
    /// key and value has been dropped.
    fn drop_map(self) {
        let Fixture {
            map, keys, values, ..
        } = self;
        Arc::into_inner(map).expect("the map has one owner left");
        wait_for_drops(&values);
        wait_for_drops(&keys);
    }
}

/// Runs `case` on a fresh fixture for each promotion configuration; the
/// case injects exactly one panic. Then checks everything.
fn each_fixture(mut case: impl FnMut(&mut Fixture)) {
    for threshold in [None, Some(1)] {
        let mut fixture = Fixture::new(threshold, "1 shard");
        case(&mut fixture);
        let ctx = fixture.name.clone();
        fixture.finish(&ctx);
    }
}

// ----- the operations panics are injected into -------------------------------------

#[derive(Clone, Copy, Debug)]
enum Op {
    Get,
    PinnedGet,
    ContainsKey,
    Insert,
    TryInsert,
    GetOrInsert,
    GetOrInsertWith,
    Remove,
    PinnedRemove,
    CompareAndSwap,
    CompareAndDelete,
    Update,
}

const OPS: [Op; 12] = [
    Op::Get,
    Op::PinnedGet,
    Op::ContainsKey,
    Op::Insert,
    Op::TryInsert,
    Op::GetOrInsert,
    Op::GetOrInsertWith,
    Op::Remove,
    Op::PinnedRemove,
    Op::CompareAndSwap,
    Op::CompareAndDelete,
    Op::Update,
];

/// Performs `op` on key `k`. Comparisons use the key's current value as
/// `old`, so they would succeed if nothing panicked.
fn perform(f: &Fixture, op: Op, k: u32) {
    let map = &f.map;
    let current = f.value(original_value(k));
    match op {
        Op::Get => drop(map.get(&f.key(k))),
        Op::PinnedGet => drop(map.pin().get(&f.key(k)).cloned()),
        Op::ContainsKey => _ = map.contains_key(&f.key(k)),
        Op::Insert => drop(map.insert(f.key(k), f.value(OFFERED))),
        Op::TryInsert => drop(map.try_insert(f.key(k), f.value(OFFERED))),
        Op::GetOrInsert => drop(map.get_or_insert(f.key(k), f.value(OFFERED))),
        Op::GetOrInsertWith => {
            drop(
                map.pin()
                    .get_or_insert_with(f.key(k), || f.value(OFFERED))
                    .clone(),
            );
        }
        Op::Remove => drop(map.remove(&f.key(k))),
        Op::PinnedRemove => drop(map.pin().remove(&f.key(k)).cloned()),
        Op::CompareAndSwap => _ = map.compare_and_swap(&f.key(k), &current, f.value(OFFERED)),
        Op::CompareAndDelete => _ = map.compare_and_delete(&f.key(k), &current),
        Op::Update => drop(map.update(&f.key(k), |_| f.value(OFFERED))),
    }
}

/// Every counter of the map's own protocol and migrations (not the
/// process-wide retired bytes, which other tests move).
fn protocol_counters(map: &Map) -> [u64; 11] {
    let s = map.stats();
    [
        s.len as u64,
        s.shards as u64,
        s.read_hits,
        s.slow_path_lookups,
        s.promotions,
        s.dirty_rebuilds,
        s.entries_copied,
        s.expunges,
        s.splits,
        s.merges,
        s.directory_resizes,
    ]
}

// ----- Hash ---------------------------------------------------------------------

#[test]
fn panicking_hash_changes_nothing() {
    for op in OPS {
        for k in [VIEW_KEYS[1], DIRTY_KEYS[1], ABSENT] {
            each_fixture(|f| {
                let ctx = format!("{}: {op:?} on key {k}", f.name);
                let before = protocol_counters(&f.map);
                expect_injected_panic(&ctx, || {
                    // The key is built first (building does not hash), so
                    // the first hash is the operation's.
                    arm(&HASH_COUNTDOWN, 1);
                    perform(f, op, k);
                });
                let after = protocol_counters(&f.map);
                assert_eq!(before, after, "{ctx}: the protocol moved before the hash");
                f.assert_consistent(&ctx);
            });
        }
    }
}

#[test]
fn panicking_hash_midway_through_extend_and_collect() {
    each_fixture(|f| {
        let ctx = format!("{}: extend", f.name);
        let pairs: Vec<_> = (100..105).map(|k| (f.key(k), f.value(k))).collect();
        expect_injected_panic(&ctx, || {
            arm(&HASH_COUNTDOWN, 3);
            let mut handle = &*f.map;
            handle.extend(pairs);
        });
        // The first two pairs were inserted; the rest were dropped.
        f.model.insert(100, 100);
        f.model.insert(101, 101);
        f.assert_consistent(&ctx);
    });

    // A map being collected is dropped during unwinding: nothing leaks.
    let keys = Counts::new();
    let values = Counts::new();
    let pairs: Vec<_> = (0..6)
        .map(|k| (PanicKey(keys.track(k)), PanicValue(values.track(k))))
        .collect();
    expect_injected_panic("collect", || {
        arm(&HASH_COUNTDOWN, 4);
        let _map: Map = pairs.into_iter().collect();
    });
    wait_for_drops(&values);
    wait_for_drops(&keys);
}

// ----- Eq -----------------------------------------------------------------------

#[test]
fn panicking_eq_on_the_fast_path_changes_nothing() {
    // `Eq` runs only when the full hashes match, that is on a present key.
    for op in OPS {
        each_fixture(|f| {
            let ctx = format!("{}: {op:?} on view key", f.name);
            let before = f.map.stats();
            expect_injected_panic(&ctx, || {
                arm(&EQ_COUNTDOWN, 1);
                perform(f, op, VIEW_KEYS[2]);
            });
            f.assert_consistent(&ctx);
            assert_eq!(
                f.map.stats().slow_path_lookups,
                before.slow_path_lookups,
                "{ctx}: a view key went to the slow path"
            );
        });
    }
}

#[test]
fn panicking_eq_under_the_shard_lock_changes_nothing() {
    for op in OPS {
        each_fixture(|f| {
            let ctx = format!("{}: {op:?} on dirty key", f.name);
            let before = f.map.stats();
            expect_injected_panic(&ctx, || {
                arm(&EQ_COUNTDOWN, 1);
                perform(f, op, DIRTY_KEYS[2]);
            });
            // The panic came from the dirty-table lookup, under the lock,
            // before the miss was counted.
            let after = f.map.stats();
            assert_eq!(after.slow_path_lookups, before.slow_path_lookups, "{ctx}");
            assert_eq!(after.promotions, before.promotions, "{ctx}");
            f.assert_lock_released(&ctx);
            f.assert_consistent(&ctx);
        });
    }
}

#[test]
fn panicking_eq_after_clear_changes_nothing() {
    // After clear, expunged entries must not be found, and a panicking Eq
    // on a re-inserted key still leaves things consistent.
    each_fixture(|f| {
        let ctx = format!("{}: after clear", f.name);
        f.map.clear();
        f.model.clear();
        f.assert_consistent(&ctx);
        f.map.insert(f.key(3), f.value(original_value(3)));
        f.model.insert(3, original_value(3));
        expect_injected_panic(&ctx, || {
            arm(&EQ_COUNTDOWN, 1);
            perform(f, Op::Insert, 3);
        });
        f.assert_lock_released(&ctx);
        f.assert_consistent(&ctx);
        // `finish` expects these keys.
        f.map.insert(f.key(0), f.value(original_value(0)));
        f.map
            .insert(f.key(DIRTY_KEYS[0]), f.value(original_value(DIRTY_KEYS[0])));
        f.model.insert(0, original_value(0));
        f.model.insert(DIRTY_KEYS[0], original_value(DIRTY_KEYS[0]));
    });
}

// ----- value PartialEq ------------------------------------------------------------

#[test]
fn panicking_value_eq_in_compare_and_swap_and_delete() {
    for op in [Op::CompareAndSwap, Op::CompareAndDelete] {
        for k in [VIEW_KEYS[3], DIRTY_KEYS[3]] {
            each_fixture(|f| {
                let ctx = format!("{}: {op:?} on key {k}", f.name);
                expect_injected_panic(&ctx, || {
                    arm(&VALUE_EQ_COUNTDOWN, 1);
                    perform(f, op, k);
                });
                f.assert_lock_released(&ctx);
                f.assert_consistent(&ctx);
                // With the comparison working again, the same call succeeds.
                let old = f.value(original_value(k));
                match op {
                    Op::CompareAndSwap => {
                        assert!(f.map.compare_and_swap(&f.key(k), &old, f.value(7)), "{ctx}");
                        f.model.insert(k, 7);
                    }
                    _ => {
                        assert!(f.map.compare_and_delete(&f.key(k), &old), "{ctx}");
                        f.model.remove(&k);
                    }
                }
                f.assert_consistent(&ctx);
            });
        }
    }
}

// ----- reloads --------------------------------------------------------------------

/// A panic in the key's `Hash` or `Eq` or the value's `PartialEq` while
/// `replace_all` or `restore` compares the new content with the map (the
/// diff, before any write): the map keeps its content, the content's items
/// are dropped, and a reload without the panic then applies in full.
#[test]
fn panicking_hash_or_eq_midway_through_a_reload_changes_nothing() {
    let cases: [(&str, &'static Countdown, u32); 4] = [
        ("Hash", &HASH_COUNTDOWN, 3),
        ("Eq", &EQ_COUNTDOWN, 2),
        ("PartialEq", &VALUE_EQ_COUNTDOWN, 2),
        ("PartialEq, restore", &VALUE_EQ_COUNTDOWN, 3),
    ];
    for (what, countdown, nth) in cases {
        each_fixture(|f| {
            let ctx = format!("{}: {what} panics in a reload", f.name);
            // Every key but the last dirty one, half of them changed, and
            // a new key: a reload that writes, keeps, inserts and removes.
            let mut next = f.model.clone();
            next.remove(&DIRTY_KEYS[3]);
            for (i, value) in next.values_mut().enumerate() {
                if i % 2 == 0 {
                    *value += 1;
                }
            }
            next.insert(NEW_KEY + 1, 3);
            let content = |f: &Fixture| {
                next.iter()
                    .map(|(&k, &v)| (f.key(k), f.value(v)))
                    .collect::<Vec<_>>()
            };
            if what.ends_with("restore") {
                // The snapshot to restore: `next`, built in a second map.
                let other: Map = SnapMap::new();
                other.replace_all(content(f));
                let snapshot = other.snapshot();
                expect_injected_panic(&ctx, || {
                    arm(countdown, nth);
                    f.map.restore(&snapshot);
                });
                f.assert_lock_released(&ctx);
                f.assert_consistent(&ctx);
                f.map.restore(&snapshot);
            } else {
                let items = content(f);
                expect_injected_panic(&ctx, || {
                    arm(countdown, nth);
                    f.map.replace_all(items);
                });
                f.assert_lock_released(&ctx);
                f.assert_consistent(&ctx);
                f.map.replace_all(content(f));
            }
            f.model = next.clone();
            f.assert_consistent(&ctx);
        });
    }
}

// ----- closures -----------------------------------------------------------------

#[test]
fn panicking_update_closure_changes_nothing() {
    for k in [VIEW_KEYS[0], DIRTY_KEYS[1]] {
        each_fixture(|f| {
            let ctx = format!("{}: update of key {k}", f.name);
            expect_injected_panic(&ctx, || {
                f.map.update(&f.key(k), |v| {
                    assert_eq!(v.0.inner, original_value(k));
                    panic!("{INJECTED} in the update closure");
                });
            });
            f.assert_lock_released(&ctx);
            f.assert_consistent(&ctx);
            // The closure made a value before panicking? Not here; but a
            // pinned update that panics after building one must drop it.
            expect_injected_panic(&ctx, || {
                let pinned = f.map.pin();
                pinned.update(&f.key(k), |_| {
                    let _made = f.value(OFFERED);
                    panic!("{INJECTED} in the update closure");
                });
            });
            f.assert_consistent(&ctx);
        });
    }
}

#[test]
fn panicking_get_or_insert_with_closure_changes_nothing() {
    each_fixture(|f| {
        let ctx = format!("{}: get_or_insert_with", f.name);
        let before = f.map.stats();
        expect_injected_panic(&ctx, || {
            let pinned = f.map.pin();
            pinned.get_or_insert_with(f.key(ABSENT), || panic!("{INJECTED} in make"));
        });
        // The key looked absent (a slow-path lookup on the amended shard);
        // nothing was stored.
        assert!(
            f.map.stats().slow_path_lookups > before.slow_path_lookups,
            "{ctx}"
        );
        f.assert_lock_released(&ctx);
        f.assert_consistent(&ctx);

        // Same on an un-amended shard (promote first), lock-free.
        let _ = f.map.pin().iter().count();
        expect_injected_panic(&ctx, || {
            let pinned = f.map.pin();
            pinned.get_or_insert_with(f.key(ABSENT + 1), || {
                let _made = f.value(OFFERED);
                panic!("{INJECTED} in make")
            });
        });
        f.assert_consistent(&ctx);
        // For a present key `make` is not called, so it cannot panic.
        let pinned = f.map.pin();
        let value = pinned.get_or_insert_with(f.key(1), || panic!("make called for a present key"));
        assert_eq!(value.0.inner, original_value(1), "{ctx}");
    });
}

#[test]
fn panicking_compute_and_upsert_closures_change_nothing() {
    // A key in the read view, one only in dirty, and an absent one (the
    // insert path, under the lock).
    for k in [VIEW_KEYS[0], DIRTY_KEYS[1], ABSENT] {
        each_fixture(|f| {
            let ctx = format!("{}: compute of key {k}", f.name);
            expect_injected_panic(&ctx, || {
                f.map
                    .compute(f.key(k), |current| -> Operation<PanicValue, ()> {
                        let _made = f.value(OFFERED);
                        assert_eq!(current.map(|v| v.0.inner), f.model.get(&k).copied());
                        panic!("{INJECTED} in the compute closure");
                    });
            });
            f.assert_lock_released(&ctx);
            f.assert_consistent(&ctx);

            // `assert_consistent` checks that ABSENT stays absent: the
            // insert path takes another absent key.
            let k = if k == ABSENT { ABSENT + 2 } else { k };
            let ctx = format!("{}: update_or_insert of key {k}", f.name);
            expect_injected_panic(&ctx, || {
                // The offered value is owned by the call and dropped by the
                // unwinding (counted by `finish`).
                f.map.pin().update_or_insert(
                    f.key(k),
                    |_| panic!("{INJECTED} in update"),
                    f.value(OFFERED),
                );
                // An absent key inserts without calling `update`: no panic
                // to catch, so make one (and undo the insert in the model).
                panic!("{INJECTED}: inserted");
            });
            if k == ABSENT + 2 {
                f.model.insert(k, OFFERED);
            }
            f.assert_lock_released(&ctx);
            f.assert_consistent(&ctx);

            let ctx = format!("{}: update_or_insert_with of key {k}", f.name);
            let absent = f.map.get(&f.key(ABSENT + 1)).is_none();
            assert!(absent, "{ctx}");
            expect_injected_panic(&ctx, || {
                f.map.update_or_insert_with(
                    f.key(ABSENT + 1),
                    |_| unreachable!("absent: update is not called"),
                    || {
                        let _made = f.value(OFFERED);
                        panic!("{INJECTED} in make")
                    },
                );
            });
            f.assert_lock_released(&ctx);
            f.assert_consistent(&ctx);
        });
    }
}

#[test]
fn panicking_retain_predicate_keeps_what_it_did_not_reach() {
    each_fixture(|f| {
        let ctx = format!("{}: retain", f.name);
        let rejected = std::cell::Cell::new(None);
        expect_injected_panic(&ctx, || {
            f.map.retain(|key, _| {
                if rejected.get().is_some() {
                    panic!("{INJECTED} in the retain predicate");
                }
                rejected.set(Some(key.0.inner));
                false
            });
        });
        let rejected = rejected.get().expect("the first entry was rejected");
        f.model.remove(&rejected);
        f.assert_lock_released(&ctx);
        f.assert_consistent(&ctx);
        // Put it back: `finish` works on every original key.
        f.map
            .insert(f.key(rejected), f.value(original_value(rejected)));
        f.model.insert(rejected, original_value(rejected));
    });
}

#[test]
fn into_iter_moves_every_key_and_value_out_once() {
    each_fixture(|f| {
        let owned: Map = SnapMap::clone(&f.map);
        let mut entries: Vec<(u32, u32)> = owned
            .into_iter()
            .map(|(k, v)| (k.0.inner, v.0.inner))
            .collect();
        entries.sort_unstable();
        let expected: Vec<(u32, u32)> = f.model.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(entries, expected, "{}", f.name);
        // `finish` checks that every key and value (the clone's too) was
        // dropped exactly once.
    });
}

#[test]
fn many_panics_in_a_row_then_normal_use() {
    // Every kind of panic, one after another on the same map.
    each_fixture(|f| {
        let ctx = format!("{}: a sequence of panics", f.name);
        for (i, op) in OPS.iter().enumerate() {
            let k = if i % 2 == 0 {
                VIEW_KEYS[i % 4]
            } else {
                DIRTY_KEYS[i % 4]
            };
            let countdown = match i % 3 {
                0 => &HASH_COUNTDOWN,
                1 => &EQ_COUNTDOWN,
                _ => &HASH_COUNTDOWN,
            };
            expect_injected_panic(&ctx, || {
                arm(countdown, 1);
                perform(f, *op, k);
            });
            f.assert_consistent(&ctx);
        }
        f.assert_lock_released(&ctx);
    });
}

// ----- Clone (snapshots) ----------------------------------------------------------

/// Keys that the map's hasher puts in shard 0 and in shard 1 of a 2-shard
/// map (the top hash bit picks the shard).
fn keys_in_halves(f: &Fixture, count: usize) -> (Vec<u32>, Vec<u32>) {
    use std::hash::BuildHasher;
    let (mut low, mut high) = (Vec::new(), Vec::new());
    for k in 20_000.. {
        let top_bit = f.map.hasher().hash_one(f.key(k)) >> 63;
        let half = if top_bit == 0 { &mut low } else { &mut high };
        if half.len() < count {
            half.push(k);
        }
        if low.len() == count && high.len() == count {
            break;
        }
    }
    (low, high)
}

/// A 2-shard map holding `low[0] = 1` in shard 0 and `high[0] = 2` in
/// shard 1, with two keys of each shard.
fn two_shard_fixture() -> (Fixture, Vec<u32>, Vec<u32>) {
    let map = SnapMap::builder().shards(2).build().unwrap();
    let mut f = Fixture {
        map: Arc::new(map),
        keys: Counts::new(),
        values: Counts::new(),
        model: BTreeMap::new(),
        name: "2 shards".to_string(),
    };
    let (low, high) = keys_in_halves(&f, 2);
    f.map.insert(f.key(low[0]), f.value(1));
    f.map.insert(f.key(high[0]), f.value(2));
    f.model.insert(low[0], 1);
    f.model.insert(high[0], 2);
    (f, low, high)
}

#[test]
fn panicking_clone_while_copying_a_snapshot_changes_nothing() {
    each_fixture(|f| {
        let ctx = format!("{}: snapshot copy", f.name);
        let before = protocol_counters(&f.map);
        expect_injected_panic(&ctx, || {
            arm(&VALUE_CLONE_COUNTDOWN, 3);
            drop(f.map.snapshot());
        });
        assert_eq!(protocol_counters(&f.map), before, "{ctx}");
        f.assert_lock_released(&ctx);
        f.assert_consistent(&ctx);
    });
}

/// A promoted shard of a few hundred entries is copied into its piece in
/// the order of its view's slots (no sort: `Piece::from_refs`), a path
/// the small fixtures above do not take. A `Clone` that panics part way
/// through leaves the map as it was, and every key and value cloned before
/// the panic is dropped once (`drop_map` counts them).
#[test]
fn panicking_clone_while_copying_a_large_promoted_shard() {
    let mut f = Fixture {
        map: Arc::new(SnapMap::builder().shards(1).build().unwrap()),
        keys: Counts::new(),
        values: Counts::new(),
        model: BTreeMap::new(),
        name: "1 shard of 300".to_string(),
    };
    for k in 1_000..1_300 {
        f.map.insert(f.key(k), f.value(k));
        f.model.insert(k, k);
    }
    let _ = f.map.pin().iter().count(); // promote: the view holds all 300
    assert!(f.map.stats().promotions >= 1);
    let before = protocol_counters(&f.map);
    expect_injected_panic("a large shard's copy", || {
        arm(&VALUE_CLONE_COUNTDOWN, 150);
        drop(f.map.snapshot());
    });
    assert_eq!(protocol_counters(&f.map), before);
    f.assert_lock_released("after the failed copy");
    let snapshot = f.map.snapshot();
    assert_eq!(snapshot.len(), 300);
    for k in 1_000..1_300 {
        assert_eq!(
            snapshot.get(&f.key(k)).map(|v| v.0.inner),
            Some(k),
            "key {k}"
        );
    }
    drop(snapshot);
    f.assert_consistent("a large promoted shard");
    f.drop_map();
}

/// A build that fails after its cut (a panicking `Clone`) took the list of
/// changed shards with it. The next build must not copy only the shards
/// changed since that failed cut: the cached snapshot it builds on is
/// older, and the shard changed before the failed cut would be reused
/// stale. It copies every shard whose version moved instead. (Regression
/// test for the changed-shard list: trusting the list here lost the write
/// to the low shard.)
#[test]
fn a_failed_build_does_not_lose_the_changes_it_listed() {
    let (mut f, low, high) = two_shard_fixture();
    drop(f.map.snapshot());
    f.map.insert(f.key(low[0]), f.value(10));
    f.model.insert(low[0], 10);
    expect_injected_panic("a build that fails", || {
        arm(&VALUE_CLONE_COUNTDOWN, 1);
        drop(f.map.snapshot());
    });
    f.map.insert(f.key(high[0]), f.value(20));
    f.model.insert(high[0], 20);
    f.assert_consistent("after a failed build and one more write");
}

/// A snapshot build captures shards by pointer and clones afterwards,
/// while writers run. A writer that replaces a captured value meanwhile
/// retires the old one, which the build must still be able to clone (the
/// epoch keeps it: the build is pinned since before its cut), and the
/// writer itself never runs `Clone` (every `Clone` on its thread is armed
/// to panic). The snapshot is the map as of its cut.
#[test]
fn writes_while_a_snapshot_clones_its_capture() {
    let (mut f, _, high) = two_shard_fixture();

    // The build captures both shards, then clones shard 0's value (clone
    // #1): meanwhile another thread replaces shard 1's value, whose old
    // value the build clones next, and inserts a new key.
    let (map, keys, values) = (
        Arc::clone(&f.map),
        Arc::clone(&f.keys),
        Arc::clone(&f.values),
    );
    let (replaced, late_key) = (high[0], high[1]);
    ON_CLONE.with(|hook| {
        *hook.borrow_mut() = Some(Box::new(move || {
            thread::spawn(move || {
                // Through a pinned handle: `SnapMap::insert` clones the old
                // value to return it.
                let pinned = map.pin();
                let dropped_before = values.dropped();
                arm(&VALUE_CLONE_COUNTDOWN, 1);
                let old =
                    pinned.insert(PanicKey(keys.track(replaced)), PanicValue(values.track(20)));
                assert_eq!(old.map(|v| v.0.inner), Some(2));
                let new =
                    pinned.insert(PanicKey(keys.track(late_key)), PanicValue(values.track(3)));
                assert!(new.is_none());
                disarm_all();
                drop(pinned);
                // Push the retired old value towards the collector: only
                // the build's pin may keep it alive until it is cloned.
                for _ in 0..256 {
                    crossbeam_epoch::pin().flush();
                }
                assert_eq!(
                    values.dropped(),
                    dropped_before,
                    "a value captured for the build was freed before the build cloned it"
                );
            })
            .join()
            .expect("a writer ran Clone during a snapshot build");
        }))
    });
    arm(&HOOK_COUNTDOWN, 1);
    let snapshot = f.map.snapshot();
    disarm_all();
    let frozen: BTreeMap<u32, u32> = snapshot
        .iter()
        .map(|(k, v)| (k.0.inner, v.0.inner))
        .collect();
    assert_eq!(
        frozen, f.model,
        "the snapshot is not the map as of its cut (the writes are after it)"
    );
    drop(snapshot);
    f.model.insert(replaced, 20);
    f.model.insert(late_key, 3);
    let ctx = "after writes during a snapshot build";
    f.assert_lock_released(ctx);
    f.assert_consistent(ctx);
    f.drop_map();
}

/// If a `Clone` panics while the build clones what it captured,
/// `snapshot()` panics, the build ends (writers stop capturing for it, its
/// pieces are freed), and the next snapshot is built from scratch and
/// correct.
#[test]
fn panicking_clone_during_a_build_ends_the_build() {
    let (mut f, low, _) = two_shard_fixture();
    // The build clones shard 0's value, then shard 1's: the second panics.
    arm(&VALUE_CLONE_COUNTDOWN, 2);
    expect_injected_panic("the build's clone", || drop(f.map.snapshot()));
    assert_eq!(
        f.map.stats().snapshot_bytes,
        0,
        "the failed build's captured pieces were not freed"
    );

    // Writers on other threads run (and capture nothing for the dead
    // build); the next snapshot sees their writes.
    let (map, keys, values) = (
        Arc::clone(&f.map),
        Arc::clone(&f.keys),
        Arc::clone(&f.values),
    );
    let late_key = low[1];
    without_deadlock("a write after the failed build", move || {
        map.insert(PanicKey(keys.track(late_key)), PanicValue(values.track(3)));
    });
    f.model.insert(late_key, 3);
    let ctx = "after a Clone panic in the build's clone";
    f.assert_lock_released(ctx);
    f.assert_consistent(ctx);
    f.drop_map();
}
