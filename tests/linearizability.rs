//! Linearizability of single-key operations, checked on recorded
//! concurrent histories (issue 11).
//!
//! # What runs
//!
//! Each round, 2 to 4 worker threads run a random mix of `get`, `insert`,
//! `remove`, `compare_and_swap`, `compare_and_delete`, `try_insert` (as
//! `get_or_insert` through the map's methods) and `update` on 4 to 8 hot
//! keys, some through the map's methods and some through a pinned handle
//! held for a few operations. Every operation is recorded between two
//! ticks of a shared clock ([`lincheck::Clock`]). Beside them a background
//! thread
//!
//! - takes snapshots and records what each says about every hot key, as a
//!   `get` spanning the `snapshot()` call (a snapshot is the map at one
//!   instant inside the call);
//! - runs a `map.batch` that writes one hot key (recorded) among unrecorded
//!   removals of churn keys;
//! - inserts and removes *churn* keys, a range disjoint from the hot keys,
//!   plainly and through `apply(Batch)`, so that under the tiny shard
//!   capacities of `common::CONFIGS` shards split and merge while the
//!   workers run. The test asserts that they did: shards split in every
//!   round, and merge in nearly every round (a merge needs two sparse
//!   buddies, which the hot keys left in the map can prevent).
//!
//! When the round's threads have joined, the main thread reads every hot
//! key: that read ends the key's history for the round and gives the next
//! round its initial value. Each key's history is then checked by
//! `common::lincheck` (a map is linearizable if each key is; see that
//! module for the search). A violation fails the test with the checker's
//! explanation, the configuration, the round and the round's seed.
//!
//! Snapshots are checked here per key only (each snapshot read is a read
//! at one instant); that one snapshot holds every key at the *same*
//! instant is the business of `tests/snapshot.rs`.
//!
//! # Values
//!
//! Every write stores a fresh value, `round * 1_000_000 + (thread + 1) *
//! 10_000 + operation number`, so that a read names its writer in an
//! explanation and a compare-and-swap cannot meet an ABA.
//!
//! # Budget
//!
//! A fixed number of rounds per configuration (the work is the same on
//! every run; only the interleavings differ), sized so that the binary
//! runs in well under a minute in debug builds on two cores. The base seed
//! can be changed with `LINCHECK_SEED` (decimal or `0x` hex), the number
//! of rounds with `LINCHECK_ROUNDS` (CI's AddressSanitizer step runs 200
//! of the 600: it looks for memory errors, and the instrumented rounds
//! took a minute of its budget).
//!
//! # The checker is tested too
//!
//! Hand-written histories it must accept (overlapping operations that must
//! be reordered) and reject (a read of an overwritten value, a read after a
//! completed removal, two successful compare-and-swaps from one value);
//! and [`stale_reads_are_caught`], which runs the same rounds through an
//! adapter that sometimes answers a `get` with a value it read before, and
//! requires the checker to reject what it records.

mod common;

use std::collections::HashMap;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::lincheck::{self, Call, Clock, Operation, Response, State, Verdict};
use common::{CONFIGS, Config, Rng};
use snapmap::{Batch, DefaultHashBuilder, Pinned, SnapMap};

type Map = SnapMap<u64, u64>;

/// Rounds per configuration, unless `LINCHECK_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: u64 = 600;
/// Operations each worker runs per round.
const OPERATIONS_PER_WORKER: u64 = 150;
/// The most hot keys a round uses; keys `0..MAX_HOT_KEYS`. Every round
/// reads all of them (snapshots, the final read), so keys a round does not
/// write are checked to keep their value.
const MAX_HOT_KEYS: u64 = 8;
/// Churn keys inserted and removed per background cycle.
const CHURN_KEYS: u64 = 32;
/// The first churn key: far from the hot keys.
const CHURN_BASE: u64 = 1 << 40;
/// The background thread runs at least this many cycles per round (so
/// that every round churns), and at most `MAX_BACKGROUND_CYCLES` (it stops
/// early once the workers are done).
const MIN_BACKGROUND_CYCLES: u64 = 2;
const MAX_BACKGROUND_CYCLES: u64 = 64;
/// The base seed; `LINCHECK_SEED` replaces it.
const DEFAULT_SEED: u64 = 0x11_0C4E_C4ED;

// ----- the rounds -------------------------------------------------------------

/// What one round runs: derived from the base seed, the configuration and
/// the round number.
#[derive(Clone, Copy, Debug)]
struct RoundPlan {
    round: u64,
    seed: u64,
    workers: usize,
    hot_keys: u64,
}

impl RoundPlan {
    fn new(base_seed: u64, config_index: usize, round: u64) -> Self {
        let seed = base_seed ^ ((config_index as u64) << 48) ^ round.wrapping_mul(0x9E37_79B9);
        RoundPlan {
            round,
            seed,
            workers: 2 + (round % 3) as usize,
            hot_keys: 4 + round % (MAX_HOT_KEYS - 3),
        }
    }

    /// The thread label of the background thread (after the workers).
    fn background_thread(&self) -> usize {
        self.workers
    }

    /// The thread label of the main thread's read after the round.
    fn final_reader(&self) -> usize {
        self.workers + 1
    }

    /// The value `thread` stores in its `number`th operation: unique.
    fn fresh_value(&self, thread: usize, number: u64) -> u64 {
        assert!(number < 10_000, "operation numbers fit in four digits");
        self.round * 1_000_000 + (thread as u64 + 1) * 10_000 + number
    }

    fn describe(&self) -> String {
        format!(
            "round {} (seed {:#x}; threads 0..{} are workers, thread {} the background \
             thread: snapshot reads and batch writes, thread {} the read after the round)",
            self.round,
            self.seed,
            self.workers,
            self.background_thread(),
            self.final_reader()
        )
    }
}

/// The number in environment variable `name` (decimal or `0x` hex), or
/// `default` when it is not set.
fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => text.parse(),
        }
        .unwrap_or_else(|e| panic!("{name}={text}: {e}")),
        Err(_) => default,
    }
}

/// The base seed: `LINCHECK_SEED` if set, else [`DEFAULT_SEED`].
fn base_seed() -> u64 {
    env_number("LINCHECK_SEED", DEFAULT_SEED)
}

/// Rounds per configuration: `LINCHECK_ROUNDS` if set, else
/// [`DEFAULT_ROUNDS`]; at least 20, so that the split and merge counts
/// below mean something.
fn rounds() -> u64 {
    let rounds = env_number("LINCHECK_ROUNDS", DEFAULT_ROUNDS);
    assert!(rounds >= 20, "LINCHECK_ROUNDS={rounds}: at least 20");
    rounds
}

/// A worker's way to the map: the map itself ([`MapStore`]), or an adapter
/// that breaks it on purpose ([`StaleReads`]).
trait Store {
    /// Runs `call` on `key`.
    fn run(&mut self, key: u64, call: Call) -> Response;

    /// From now on, run calls through one pinned handle (`true`, a new one)
    /// or through the map's methods (`false`).
    fn hold_pin(&mut self, hold: bool);
}

/// The map, through its methods or a pinned handle.
struct MapStore<'m> {
    map: &'m Map,
    pinned: Option<Pinned<'m, u64, u64, DefaultHashBuilder>>,
}

impl<'m> MapStore<'m> {
    fn new(map: &'m Map) -> Self {
        MapStore { map, pinned: None }
    }
}

impl Store for MapStore<'_> {
    fn run(&mut self, key: u64, call: Call) -> Response {
        match &self.pinned {
            Some(pinned) => run_pinned(pinned, key, call),
            None => run_on_map(self.map, key, call),
        }
    }

    fn hold_pin(&mut self, hold: bool) {
        self.pinned = None;
        if hold {
            self.pinned = Some(self.map.pin());
        }
    }
}

/// Runs `call` through the map's clone-returning methods.
fn run_on_map(map: &Map, key: u64, call: Call) -> Response {
    match call {
        Call::Get => Response::Value(map.get(&key)),
        Call::Insert(value) => Response::Value(map.insert(key, value)),
        Call::Remove => Response::Value(map.remove(&key)),
        Call::CompareAndSwap { expected, new } => {
            Response::Succeeded(map.compare_and_swap(&key, &expected, new))
        }
        Call::CompareAndDelete { expected } => {
            Response::Succeeded(map.compare_and_delete(&key, &expected))
        }
        Call::TryInsert(value) => {
            // `SnapMap::try_insert` does not say what was there;
            // `get_or_insert` does, and the value is fresh: it returns
            // `value` exactly when it stored it.
            let present = map.get_or_insert(key, value);
            Response::Value((present != value).then_some(present))
        }
        Call::Update(value) => Response::Value(map.update(&key, |_| value)),
    }
}

/// Runs `call` through a pinned handle's reference-returning methods.
fn run_pinned(pinned: &Pinned<'_, u64, u64, DefaultHashBuilder>, key: u64, call: Call) -> Response {
    match call {
        Call::Get => Response::Value(pinned.get(&key).copied()),
        Call::Insert(value) => Response::Value(pinned.insert(key, value).copied()),
        Call::Remove => Response::Value(pinned.remove(&key).copied()),
        Call::CompareAndSwap { expected, new } => {
            Response::Succeeded(pinned.compare_and_swap(&key, &expected, new))
        }
        Call::CompareAndDelete { expected } => {
            Response::Succeeded(pinned.compare_and_delete(&key, &expected))
        }
        Call::TryInsert(value) => match pinned.try_insert(key, value) {
            Ok(_) => Response::Value(None),
            Err(occupied) => Response::Value(Some(*occupied.current)),
        },
        Call::Update(value) => Response::Value(pinned.update(&key, |_| value).copied()),
    }
}

/// A random call on a key believed to hold `believed` (the last value this
/// thread saw there), writing `fresh` if it writes.
fn random_call(rng: &mut Rng, believed: State, fresh: u64) -> Call {
    // Compare-and-* expect the believed value, so that they often succeed;
    // `fresh - 1` is this thread's previous write, likely long replaced.
    let expected = believed.unwrap_or(fresh - 1);
    match rng.below(100) {
        0..30 => Call::Get,
        30..45 => Call::Insert(fresh),
        45..55 => Call::Remove,
        55..75 => Call::CompareAndSwap {
            expected,
            new: fresh,
        },
        75..80 => Call::CompareAndDelete { expected },
        80..90 => Call::TryInsert(fresh),
        _ => Call::Update(fresh),
    }
}

/// The value a thread believes `key` holds after `call` returned
/// `response`, given that it believed `before`.
fn believed_after(before: State, call: Call, response: Response) -> State {
    match (call, response) {
        (Call::Get | Call::TryInsert(_), Response::Value(Some(present))) => Some(present),
        (Call::Get | Call::Remove | Call::Update(_), Response::Value(value)) => value,
        (Call::Insert(value) | Call::TryInsert(value), _) => Some(value),
        (Call::CompareAndSwap { new, .. }, Response::Succeeded(true)) => Some(new),
        (Call::CompareAndDelete { .. }, Response::Succeeded(true)) => None,
        _ => before,
    }
}

/// One worker's part of a round: its recorded `(key, operation)`s.
fn run_worker(
    store: &mut impl Store,
    plan: &RoundPlan,
    thread: usize,
    clock: &Clock,
) -> Vec<(u64, Operation)> {
    let mut rng = Rng::new(plan.seed ^ ((thread as u64 + 1) << 32));
    let mut believed: HashMap<u64, State> = HashMap::new();
    let mut recorded = Vec::with_capacity(OPERATIONS_PER_WORKER as usize);
    for number in 0..OPERATIONS_PER_WORKER {
        if number % 16 == 0 {
            store.hold_pin(rng.below(2) == 0);
        }
        let key = rng.below(plan.hot_keys);
        let before = believed.get(&key).copied().flatten();
        let call = random_call(&mut rng, before, plan.fresh_value(thread, number));
        let operation = clock.record(thread, call, || store.run(key, call));
        believed.insert(key, believed_after(before, call, operation.response));
        recorded.push((key, operation));
    }
    store.hold_pin(false);
    recorded
}

/// Records a snapshot's view of every hot key, each as a `get` spanning
/// the `snapshot()` call.
fn record_snapshot(
    map: &Map,
    thread: usize,
    clock: &Clock,
) -> (snapmap::Snapshot<u64, u64>, Vec<(u64, Operation)>) {
    let called_at = clock.tick();
    let snapshot = map.snapshot();
    let returned_at = clock.tick();
    let reads = (0..MAX_HOT_KEYS)
        .map(|key| {
            let read = Operation {
                thread,
                call: Call::Get,
                response: Response::Value(snapshot.get(&key).copied()),
                called_at,
                returned_at,
            };
            (key, read)
        })
        .collect();
    (snapshot, reads)
}

/// The background thread's part of a round: snapshots, a batch with one
/// recorded hot-key write, and churn that splits and merges shards under
/// tiny capacities. Runs until the workers are done, within
/// `MIN_BACKGROUND_CYCLES..=MAX_BACKGROUND_CYCLES` cycles.
fn run_background(
    map: &Map,
    plan: &RoundPlan,
    clock: &Clock,
    workers_done: &AtomicBool,
) -> Vec<(u64, Operation)> {
    let thread = plan.background_thread();
    let mut rng = Rng::new(plan.seed ^ 0xBAC6_0000);
    let mut recorded = Vec::new();
    for cycle in 0..MAX_BACKGROUND_CYCLES {
        // Relaxed: a stop signal; the scope's join orders everything else.
        if cycle >= MIN_BACKGROUND_CYCLES && workers_done.load(Ordering::Relaxed) {
            break;
        }
        let first = CHURN_BASE + (plan.round * MAX_BACKGROUND_CYCLES + cycle) * CHURN_KEYS;
        let churn: Vec<u64> = (first..first + CHURN_KEYS).collect();
        let (batched, plain) = churn.split_at(churn.len() / 2);

        recorded.extend(record_snapshot(map, thread, clock).1);
        let applied = map.apply(batched.iter().map(|&key| (key, key)).collect());
        assert_eq!(applied.inserted, batched.len(), "churn keys are fresh");
        for &key in plain {
            assert_eq!(map.insert(key, key), None, "churn keys are fresh");
        }

        let hot_key = rng.below(plan.hot_keys);
        let fresh = plan.fresh_value(thread, cycle);
        let call = match rng.below(3) {
            0 => Call::Insert(fresh),
            1 => Call::Remove,
            _ => Call::CompareAndSwap {
                expected: map.get(&hot_key).unwrap_or(0),
                new: fresh,
            },
        };
        map.batch(|pinned| {
            for key in &plain[..2] {
                assert_eq!(pinned.remove(key), Some(key));
            }
            let write = clock.record(thread, call, || run_pinned(pinned, hot_key, call));
            recorded.push((hot_key, write));
        });

        let (snapshot, reads) = record_snapshot(map, thread, clock);
        recorded.extend(reads);
        for key in &churn {
            let removed_in_batch = plain[..2].contains(key);
            assert_eq!(
                snapshot.get(key).is_some(),
                !removed_in_batch,
                "a snapshot after this thread's writes to churn key {key} shows them"
            );
        }

        let mut removals = Batch::new();
        for &key in batched {
            removals.remove(key);
        }
        assert_eq!(map.apply(removals).removed, batched.len());
        for key in &plain[2..] {
            assert_eq!(map.remove(key), Some(*key));
        }
    }
    recorded
}

/// What a round recorded: each hot key's history, and the value each hot
/// key had when the round ended (its last operation, the final read).
struct RoundRecord {
    histories: Vec<Vec<Operation>>,
    final_values: Vec<State>,
}

/// Runs one round on `map`, each worker going through the store
/// `make_store(thread)` makes.
fn run_round<S: Store>(
    map: &Map,
    plan: &RoundPlan,
    make_store: impl Fn(usize) -> S + Sync,
) -> RoundRecord {
    let clock = Clock::default();
    let workers_done = AtomicBool::new(false);
    let start = Barrier::new(plan.workers + 1);
    let mut recorded: Vec<(u64, Operation)> = thread::scope(|scope| {
        let (clock, start, make_store) = (&clock, &start, &make_store);
        let workers: Vec<_> = (0..plan.workers)
            .map(|thread| {
                scope.spawn(move || {
                    let mut store = make_store(thread);
                    start.wait();
                    run_worker(&mut store, plan, thread, clock)
                })
            })
            .collect();
        let background = scope.spawn(|| {
            start.wait();
            run_background(map, plan, clock, &workers_done)
        });
        let mut recorded: Vec<(u64, Operation)> = workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a worker panicked"))
            .collect();
        // Relaxed: a stop signal (see run_background).
        workers_done.store(true, Ordering::Relaxed);
        recorded.extend(background.join().expect("the background thread panicked"));
        recorded
    });
    let mut final_values = Vec::new();
    for key in 0..MAX_HOT_KEYS {
        let read = clock.record(plan.final_reader(), Call::Get, || {
            Response::Value(map.get(&key))
        });
        let Response::Value(value) = read.response else {
            unreachable!("a get returns a value")
        };
        final_values.push(value);
        recorded.push((key, read));
    }
    let mut histories = vec![Vec::new(); MAX_HOT_KEYS as usize];
    for (key, operation) in recorded {
        histories[key as usize].push(operation);
    }
    RoundRecord {
        histories,
        final_values,
    }
}

/// Totals over the histories checked, for the summary line.
#[derive(Debug, Default)]
struct CheckTotals {
    histories: usize,
    operations: usize,
    /// Operations that overlap another on the same key.
    overlapping: usize,
    longest_history: usize,
    most_steps: usize,
}

/// Checks every key's history of a round, from the `initial` values:
/// the first violation, as an explanation, or the totals.
fn check_round(
    initial: &[State],
    record: &RoundRecord,
    totals: &mut CheckTotals,
) -> Result<(), Box<lincheck::Violation>> {
    for (key, history) in record.histories.iter().enumerate() {
        match lincheck::check(key as u64, initial[key], history) {
            Verdict::Linearizable { steps } => {
                totals.histories += 1;
                totals.operations += history.len();
                totals.overlapping += lincheck::overlapping(history);
                totals.longest_history = totals.longest_history.max(history.len());
                totals.most_steps = totals.most_steps.max(steps);
            }
            Verdict::Violation(violation) => return Err(violation),
            Verdict::Undecided { steps } => panic!(
                "key {key}: the checker gave up after {steps} steps on {} operations; \
                 make the rounds smaller",
                history.len()
            ),
        }
    }
    Ok(())
}

/// Every configuration of `common::CONFIGS`: every round's every key
/// history is linearizable, and under tiny capacities shards split and
/// merge during the rounds.
#[test]
fn every_key_history_is_linearizable() {
    let base_seed = base_seed();
    for (config_index, config) in CONFIGS.iter().enumerate() {
        check_config(config, config_index, base_seed);
    }
}

fn check_config(config: &Config, config_index: usize, base_seed: u64) {
    let map: Map = config.build();
    let mut values: Vec<State> = vec![None; MAX_HOT_KEYS as usize];
    let mut totals = CheckTotals::default();
    let (mut rounds_with_splits, mut rounds_with_merges) = (0, 0);
    let rounds = rounds();
    for round in 0..rounds {
        let plan = RoundPlan::new(base_seed, config_index, round);
        let before = map.stats();
        let record = run_round(&map, &plan, |_| MapStore::new(&map));
        let after = map.stats();
        rounds_with_splits += u64::from(after.splits > before.splits);
        rounds_with_merges += u64::from(after.merges > before.merges);
        if let Err(violation) = check_round(&values, &record, &mut totals) {
            panic!(
                "not linearizable under {}: {} (base seed {base_seed:#x})\n{violation}",
                config.name,
                plan.describe()
            );
        }
        values = record.final_values;
    }
    let stats = map.stats();
    println!(
        "{}: {rounds} rounds, {} histories, {} operations ({} overlapping another, longest \
         history {}, most search steps {}); rounds with splits {rounds_with_splits}, with merges \
         {rounds_with_merges}; {stats}",
        config.name,
        totals.histories,
        totals.operations,
        totals.overlapping,
        totals.longest_history,
        totals.most_steps
    );
    if config.capacity.is_some() {
        assert!(
            rounds_with_splits == rounds && rounds_with_merges >= rounds * 19 / 20,
            "{}: shards should split in every round ({rounds_with_splits} of {rounds} did) and \
             merge in nearly every round ({rounds_with_merges} did): {stats}",
            config.name
        );
    }
}

// ----- an injected bug ------------------------------------------------------------

/// How rarely [`StaleReads`] serves a stale read: one `get` in this many
/// (of those on a key the thread has read before).
const STALE_ONE_IN: u64 = 20;

/// A store that sometimes answers a `get` with the value this thread read
/// for the key last time, instead of asking the map: a stale read.
struct StaleReads<S> {
    inner: S,
    last_read: HashMap<u64, State>,
    rng: Rng,
}

impl<S: Store> Store for StaleReads<S> {
    fn run(&mut self, key: u64, call: Call) -> Response {
        if call != Call::Get {
            return self.inner.run(key, call);
        }
        if let Some(&remembered) = self.last_read.get(&key) {
            if self.rng.below(STALE_ONE_IN) == 0 {
                return Response::Value(remembered);
            }
        }
        let response = self.inner.run(key, call);
        if let Response::Value(value) = response {
            self.last_read.insert(key, value);
        }
        response
    }

    fn hold_pin(&mut self, hold: bool) {
        self.inner.hold_pin(hold);
    }
}

/// The rounds of the main test, through [`StaleReads`]: the checker must
/// reject a history within a few rounds. Proves the harness (recording,
/// grouping, initial values, checking) can fail.
#[test]
fn stale_reads_are_caught() {
    const MOST_ROUNDS: u64 = 20;
    let config = &CONFIGS[4];
    let map: Map = config.build();
    let mut values: Vec<State> = vec![None; MAX_HOT_KEYS as usize];
    for round in 0..MOST_ROUNDS {
        let plan = RoundPlan::new(base_seed(), 4, round);
        let record = run_round(&map, &plan, |thread| StaleReads {
            inner: MapStore::new(&map),
            last_read: HashMap::new(),
            rng: Rng::new(plan.seed ^ thread as u64),
        });
        if let Err(violation) = check_round(&values, &record, &mut CheckTotals::default()) {
            println!(
                "stale read caught under {}, {}:\n{violation}",
                config.name,
                plan.describe()
            );
            assert!(
                !violation.rejected.is_empty(),
                "an explanation names the operations that could not go next"
            );
            return;
        }
        values = record.final_values;
    }
    panic!("{MOST_ROUNDS} rounds of stale reads and the checker accepted every history");
}

// ----- the checker on hand-written histories ------------------------------------------

/// An operation of a hand-written history.
fn operation(
    thread: usize,
    call: Call,
    response: Response,
    called_at: u64,
    returned_at: u64,
) -> Operation {
    Operation {
        thread,
        call,
        response,
        called_at,
        returned_at,
    }
}

fn value(value: Option<u64>) -> Response {
    Response::Value(value)
}

fn violation(verdict: Verdict) -> Box<lincheck::Violation> {
    match verdict {
        Verdict::Violation(violation) => violation,
        other => panic!("expected a violation, got {other:?}"),
    }
}

fn assert_linearizable(verdict: Verdict) {
    assert!(
        matches!(verdict, Verdict::Linearizable { .. }),
        "expected linearizable, got {verdict:?}"
    );
}

#[test]
fn checker_accepts_a_sequential_history_of_every_call() {
    let history = [
        operation(0, Call::Insert(1), value(None), 0, 1),
        operation(0, Call::Get, value(Some(1)), 2, 3),
        operation(
            0,
            Call::CompareAndSwap {
                expected: 1,
                new: 2,
            },
            Response::Succeeded(true),
            4,
            5,
        ),
        operation(
            0,
            Call::CompareAndSwap {
                expected: 1,
                new: 3,
            },
            Response::Succeeded(false),
            6,
            7,
        ),
        operation(0, Call::TryInsert(4), value(Some(2)), 8, 9),
        operation(0, Call::Update(5), value(Some(5)), 10, 11),
        operation(
            0,
            Call::CompareAndDelete { expected: 2 },
            Response::Succeeded(false),
            12,
            13,
        ),
        operation(
            0,
            Call::CompareAndDelete { expected: 5 },
            Response::Succeeded(true),
            14,
            15,
        ),
        operation(0, Call::Update(6), value(None), 16, 17),
        operation(0, Call::TryInsert(7), value(None), 18, 19),
        operation(0, Call::Remove, value(Some(7)), 20, 21),
        operation(0, Call::Get, value(None), 22, 23),
    ];
    assert_linearizable(lincheck::check(0, None, &history));
}

/// Thread 0's insert is called first but must take effect after thread 1's
/// insert (it returns its value) and after thread 2's read of that value.
#[test]
fn checker_reorders_overlapping_operations() {
    let history = [
        operation(0, Call::Insert(1), value(Some(2)), 0, 10),
        operation(1, Call::Insert(2), value(None), 1, 3),
        operation(2, Call::Get, value(Some(2)), 4, 5),
        operation(1, Call::Get, value(Some(1)), 11, 12),
    ];
    assert_linearizable(lincheck::check(0, None, &history));
}

/// A read that overlaps a write may return either value, and two
/// overlapping reads may disagree in either order.
#[test]
fn checker_accepts_reads_on_either_side_of_an_overlapping_write() {
    let history = [
        operation(0, Call::Insert(1), value(None), 0, 1),
        operation(0, Call::Insert(2), value(Some(1)), 2, 20),
        operation(1, Call::Get, value(Some(2)), 3, 4),
        operation(2, Call::Get, value(Some(1)), 5, 6),
    ];
    // Thread 1 read 2 *before* thread 2 read 1 in real time: not
    // linearizable (the write cannot be undone)...
    violation(lincheck::check(0, None, &history));
    // ...but if the reads overlap, 1 then 2 is an order.
    let mut overlapping = history;
    overlapping[2] = operation(1, Call::Get, value(Some(2)), 3, 7);
    assert_linearizable(lincheck::check(0, None, &overlapping));
}

#[test]
fn checker_rejects_a_read_of_a_value_overwritten_before_the_read_began() {
    let history = [
        operation(0, Call::Insert(1), value(None), 0, 1),
        operation(0, Call::Insert(2), value(Some(1)), 2, 3),
        operation(1, Call::Get, value(Some(1)), 4, 5),
    ];
    let violation = violation(lincheck::check(3, None, &history));
    assert_eq!(violation.longest_prefix, history[..2]);
    assert_eq!(violation.state_after_prefix, Some(2));
    assert_eq!(violation.rejected, [(history[2], value(Some(2)))]);
    let explanation = violation.to_string();
    for expected in [
        "key 3",
        "Longest linearizable prefix: 2 operations, leaving the value Some(2)",
        "thread 1 get -> Some(1) [called 4, returned 5]: the model returns Some(2)",
    ] {
        assert!(
            explanation.contains(expected),
            "{expected:?} missing from:\n{explanation}"
        );
    }
}

/// Thread 1's read during the removal may see the value; thread 2's, after
/// it, may not, and is the one blamed.
#[test]
fn checker_rejects_a_stale_read_after_a_completed_remove() {
    let history = [
        operation(0, Call::Insert(1), value(None), 0, 1),
        operation(0, Call::Remove, value(Some(1)), 2, 5),
        operation(1, Call::Get, value(Some(1)), 3, 4),
        operation(2, Call::Get, value(Some(1)), 6, 7),
    ];
    let violation = violation(lincheck::check(0, None, &history));
    assert_eq!(violation.longest_prefix.len(), 3);
    assert_eq!(violation.rejected, [(history[3], value(None))]);
}

#[test]
fn checker_rejects_two_successful_compare_and_swaps_from_one_value() {
    let history = [
        operation(0, Call::Insert(1), value(None), 0, 1),
        operation(
            1,
            Call::CompareAndSwap {
                expected: 1,
                new: 2,
            },
            Response::Succeeded(true),
            2,
            6,
        ),
        operation(
            2,
            Call::CompareAndSwap {
                expected: 1,
                new: 3,
            },
            Response::Succeeded(true),
            3,
            5,
        ),
    ];
    let violation = violation(lincheck::check(0, None, &history));
    assert_eq!(violation.longest_prefix.len(), 2);
    // Whichever swap went first, the other one finds its value, not 1.
    assert_eq!(violation.rejected.len(), 1);
    assert_eq!(violation.rejected[0].1, Response::Succeeded(false));
}

#[test]
fn checker_starts_from_the_initial_value() {
    let history = [operation(0, Call::Get, value(Some(7)), 0, 1)];
    assert_linearizable(lincheck::check(0, Some(7), &history));
    let violation = violation(lincheck::check(0, None, &history));
    assert!(violation.longest_prefix.is_empty());
}

#[test]
fn checker_gives_up_past_its_step_limit() {
    let history = [
        operation(0, Call::Insert(1), value(Some(2)), 0, 10),
        operation(1, Call::Insert(2), value(None), 1, 3),
        operation(2, Call::Get, value(Some(2)), 4, 5),
    ];
    assert!(matches!(
        lincheck::check_with_step_limit(0, None, &history, 2),
        Verdict::Undecided { steps: 3 }
    ));
}

/// Histories made around known linearization points (each operation's
/// interval contains its point; up to 4 threads overlap) are accepted,
/// in a few steps per operation.
#[test]
fn checker_accepts_histories_built_from_a_linearization() {
    const THREADS: usize = 4;
    for seed in 0..20 {
        let mut rng = Rng::new(seed);
        let mut state: State = None;
        let mut busy_until = [0u64; THREADS];
        let mut history = Vec::new();
        for number in 0..300u64 {
            let point = 10 * (number + 1);
            // Each operation spans less than 25 either side of its point,
            // points are 10 apart: at most 3 threads are busy at a point.
            let thread = (0..THREADS)
                .cycle()
                .skip(rng.below(THREADS as u64) as usize)
                .take(THREADS)
                .find(|&thread| busy_until[thread] < point)
                .expect("a thread is free");
            let called_at = point
                .saturating_sub(1 + rng.below(24))
                .max(busy_until[thread] + 1);
            let returned_at = point + 1 + rng.below(24);
            busy_until[thread] = returned_at;
            let call = random_call(&mut rng, state, 1_000 + number);
            let (response, after) = call.run(state);
            state = after;
            history.push(operation(thread, call, response, called_at, returned_at));
        }
        match lincheck::check(0, None, &history) {
            Verdict::Linearizable { steps } => {
                assert!(steps < 20 * history.len(), "seed {seed}: {steps} steps")
            }
            other => panic!("seed {seed}: {other:?}"),
        }
    }
}
