//! Shared harness for the models: running a model with a default
//! preemption bound, and proving that a broken twin is caught.
//!
//! A twin is run in a child process (this same test binary, filtered to one
//! `#[ignore]`d test, with `SNAPMAP_TWIN_CHILD=1`): a failing loom model may
//! abort instead of unwinding (see `loom-tests/README.md`, "How the switch
//! works"), and a child's exit status and output can be checked either way.

#![allow(dead_code)] // each test binary uses part of the harness

use std::process::Command;
use std::time::Instant;

pub use snapmap::loom_hooks::Bug;

/// The environment variable that marks a twin's child process.
const CHILD: &str = "SNAPMAP_TWIN_CHILD";

/// Stack size of model threads, in machine words (loom's threads are
/// generators with a 32 KiB default stack, without a guard page: the real
/// crossbeam-epoch's collection, run when a thread flushes its garbage,
/// overflowed it and crashed with SIGSEGV).
const STACK_WORDS: usize = 1 << 16;

/// Spawns a model thread with a stack large enough for the real epoch.
pub fn spawn<T, F>(f: F) -> loom::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    loom::thread::Builder::new()
        .stack_size(STACK_WORDS)
        .spawn(f)
        .expect("a model thread starts")
}

/// Runs `model` under loom, exploring every interleaving up to
/// `default_bound` preemptions (`LOOM_MAX_PREEMPTIONS` overrides it;
/// `None` is unbounded), and prints how long it took.
pub fn check<F>(name: &str, default_bound: Option<usize>, model: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = default_bound;
    }
    let bound = builder.preemption_bound;
    // A std counter (invisible to loom) of the executions loom ran.
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = executions.clone();
    let start = Instant::now();
    let model = std::sync::Arc::new(model);
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The model's own thread gets the large stack too.
        let model = model.clone();
        spawn(move || model()).join().expect("the model thread");
    });
    eprintln!(
        "model {name}: {} interleavings in {:.2?} (preemption bound {})",
        executions.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed(),
        bound.map_or("none".to_string(), |b| b.to_string())
    );
}

/// The body of a twin's `#[ignore]`d child test: switches `bug` on and runs
/// the model. Refuses to run outside a child process, where it would
/// (correctly) fail.
pub fn run_twin(bug: Bug, model: impl FnOnce()) {
    assert!(
        std::env::var_os(CHILD).is_some(),
        "this is a broken twin: it is run (and expected to fail) by its parent test"
    );
    snapmap::loom_hooks::inject(Some(bug));
    model();
}

/// Runs the ignored test `child` of this binary in a child process and
/// asserts that loom caught the bug: the child failed, and its output
/// contains `expected`.
pub fn assert_twin_caught(child: &str, expected: &str) {
    let start = Instant::now();
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new(exe)
        .args([
            child,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("the child test process starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !text.contains("running 0 tests"),
        "twin `{child}` does not exist in this binary:\n{text}"
    );
    assert!(
        !output.status.success(),
        "twin `{child}` was NOT caught: loom explored its interleavings and found no failure\n{text}"
    );
    assert!(
        text.contains(expected),
        "twin `{child}` failed, but not with `{expected}`:\n{text}"
    );
    eprintln!(
        "twin {child}: caught in {:.2?} ({expected:?})",
        start.elapsed()
    );
}

/// The check shared by the models in which `T1` removes key 1 (which held
/// 100) while `T2` stores 111 under it (`expunge.rs`, `compact.rs`): the
/// outcome must be one of the two linearizable orders, and the map's length
/// must agree with its entries. `lost` names where a store could be lost
/// (the twins' expected failure message is "a stored key was lost at
/// {lost}").
pub fn assert_remove_or_store_first(
    map: &snapmap::SnapMap<u64, u64>,
    removed: Option<u64>,
    previous: Option<u64>,
    lost: &str,
) {
    match removed {
        // The store came first and the remove took its value.
        Some(111) => {
            assert_eq!(previous, Some(100));
            assert_eq!(map.get(&1), None, "a removed key came back");
        }
        // The remove came first; the store must survive.
        Some(100) => {
            assert_eq!(previous, None);
            assert_eq!(map.get(&1), Some(111), "a stored key was lost at {lost}");
        }
        other => panic!("impossible remove result {other:?}"),
    }
    assert_eq!(
        map.len(),
        map.pin().iter().count(),
        "len disagrees with the entries"
    );
}

/// A one-shard map holding `key -> value` in its read view (inserted, then
/// looked up once: one miss `>= len(dirty)` promotes the dirty table), so
/// that the model's operations on `key` take the lock-free paths.
#[allow(dead_code)] // not every model binary uses it
pub fn one_shard_promoted(key: u64, value: u64) -> snapmap::SnapMap<u64, u64> {
    let map = snapmap::SnapMap::<u64, u64>::builder()
        .shards(1)
        .build()
        .unwrap();
    map.insert(key, value);
    assert_eq!(map.get(&key), Some(value)); // promotes: the key is in the view
    map
}
