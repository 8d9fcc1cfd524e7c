//! Change notification: `SnapMap::wait_for_change`, its timeout form, the
//! `changed` future and the reader's forms. Waiters must stay asleep until
//! a write completes after their revision, then all wake, each with a
//! snapshot that holds the write (a batch: all of it, at once).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use snapmap::{Batch, SnapMap, Snapshot};

/// A tiny executor: polls every future on the calling thread, parking it
/// between wake-ups, until all are done.
fn run_all<'a>(mut futures: Vec<Pin<Box<dyn Future<Output = ()> + Send + 'a>>>) {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    while !futures.is_empty() {
        futures.retain_mut(|future| future.as_mut().poll(&mut cx).is_pending());
        if !futures.is_empty() {
            thread::park();
        }
    }
}

fn block_on<F: Future<Output = ()> + Send>(future: F) {
    run_all(vec![Box::pin(future)]);
}

const THREADS: usize = 8;
const FUTURES: usize = 4;

#[test]
fn a_write_wakes_every_waiter_and_none_before() {
    let map = SnapMap::new();
    map.insert("a", 0);
    let seen = map.snapshot();
    let revision = seen.revision();
    let woken = AtomicUsize::new(0);
    let results: Mutex<Vec<Snapshot<&str, i32>>> = Mutex::new(Vec::new());
    let (map, woken, results) = (&map, &woken, &results);
    thread::scope(|scope| {
        for thread in 0..THREADS {
            scope.spawn(move || {
                let changed = if thread % 2 == 0 {
                    map.wait_for_change(revision)
                } else {
                    map.wait_for_change_timeout(revision, Duration::from_secs(60))
                        .expect("woken by the write")
                };
                woken.fetch_add(1, Ordering::SeqCst);
                results.lock().unwrap().push(changed);
            });
        }
        scope.spawn(|| {
            let futures = (0..FUTURES)
                .map(|_| {
                    Box::pin(async {
                        let changed = map.changed(revision).await;
                        woken.fetch_add(1, Ordering::SeqCst);
                        results.lock().unwrap().push(changed);
                    }) as Pin<Box<dyn Future<Output = ()> + Send>>
                })
                .collect();
            run_all(futures);
        });

        // Nobody wakes before the write: not the blocked threads, not the
        // futures, not a short timed wait, and reads and snapshots (which
        // do not write) wake nobody either.
        thread::sleep(Duration::from_millis(150));
        assert_eq!(map.get("a"), Some(0));
        assert!(Snapshot::ptr_eq(&map.snapshot(), &seen));
        assert!(
            map.wait_for_change_timeout(revision, Duration::from_millis(50))
                .is_none()
        );
        thread::sleep(Duration::from_millis(50));
        assert_eq!(
            woken.load(Ordering::SeqCst),
            0,
            "a waiter woke before any write"
        );

        map.insert("a", 1);
    });
    assert_eq!(woken.load(Ordering::SeqCst), THREADS + FUTURES);
    let results = std::mem::take(&mut *results.lock().unwrap());
    assert_eq!(results.len(), THREADS + FUTURES);
    for changed in &results {
        assert!(changed.revision() > revision);
        assert_eq!(
            changed.get("a"),
            Some(&1),
            "a woken waiter's snapshot lacks the write"
        );
    }
}

#[test]
fn timeout_returns_none_after_the_timeout() {
    let map: SnapMap<u64, u64> = SnapMap::new();
    map.insert(1, 1);
    let revision = map.snapshot().revision();
    let start = Instant::now();
    assert!(
        map.wait_for_change_timeout(revision, Duration::from_millis(100))
            .is_none()
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    // The map is still usable and a later write still wakes.
    map.insert(1, 2);
    let changed = map
        .wait_for_change_timeout(revision, Duration::from_secs(10))
        .expect("the write since the revision");
    assert_eq!(changed.get(&1), Some(&2));
}

#[test]
fn an_old_revision_returns_at_once() {
    let map = SnapMap::new();
    map.insert(1, "a");
    let old = map.snapshot();
    map.insert(1, "b");
    let newer = map.snapshot();
    assert!(newer.revision() > old.revision());

    let start = Instant::now();
    let changed = map.wait_for_change(old.revision());
    assert!(
        Snapshot::ptr_eq(&changed, &newer),
        "the current snapshot, not a new build"
    );
    let changed = map
        .wait_for_change_timeout(old.revision(), Duration::ZERO)
        .expect("already past");
    assert!(Snapshot::ptr_eq(&changed, &newer));
    let mut done = false;
    block_on(async {
        let changed = map.changed(old.revision()).await;
        assert!(Snapshot::ptr_eq(&changed, &newer));
        done = true;
    });
    assert!(done);
    assert!(start.elapsed() < Duration::from_secs(5));

    // Written since the latest snapshot, but not yet snapshotted: also at
    // once, with a new build that holds the write.
    map.insert(1, "c");
    let changed = map
        .wait_for_change_timeout(newer.revision(), Duration::ZERO)
        .expect("written since");
    assert!(changed.revision() > newer.revision());
    assert_eq!(changed.get(&1), Some(&"c"));
}

#[test]
fn a_batch_wakes_once_with_all_of_it() {
    const KEYS: u64 = 500;
    // Small shards: the batch spans many of them.
    let map = SnapMap::<u64, u64>::builder()
        .shard_capacity(16)
        .build()
        .unwrap();
    for key in 0..KEYS {
        map.insert(key, 0);
    }
    let revision = map.snapshot().revision();
    let woken = AtomicUsize::new(0);
    thread::scope(|scope| {
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let changed = map.wait_for_change(revision);
                    woken.fetch_add(1, Ordering::SeqCst);
                    for key in 0..KEYS {
                        assert_eq!(changed.get(&key), Some(&1), "a batch seen in part");
                    }
                    // The batch was one change: nothing more comes.
                    assert!(
                        map.wait_for_change_timeout(changed.revision(), Duration::from_millis(200))
                            .is_none(),
                        "a second change from one batch"
                    );
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(50));
        map.batch(|m| {
            for key in 0..KEYS / 2 {
                m.insert(key, 1);
            }
            // Half the batch has landed: nobody may wake yet.
            thread::sleep(Duration::from_millis(100));
            assert_eq!(woken.load(Ordering::SeqCst), 0, "woken inside a batch");
            for key in KEYS / 2..KEYS {
                m.insert(key, 1);
            }
        });
        for waiter in waiters {
            waiter.join().unwrap();
        }
    });
}

#[test]
fn a_revision_from_the_future_waits_until_builds_pass_it() {
    let map: SnapMap<u64, u64> = SnapMap::new();
    map.insert(0, 0);
    let now = map.snapshot().revision();
    let target = now + 2;
    thread::scope(|scope| {
        let waiter = scope.spawn(|| map.wait_for_change_timeout(target, Duration::from_secs(10)));
        for round in 1..=3 {
            thread::sleep(Duration::from_millis(30));
            map.insert(0, round);
            // Each write makes the next snapshot a new build (the waiter's
            // own, or this one).
            map.snapshot();
        }
        let changed = waiter.join().unwrap().expect("revisions passed the target");
        assert!(changed.revision() > target);
        // One build per written round: the first past the target is the
        // third round's.
        assert_eq!(changed.get(&0), Some(&3));
    });
    assert!(map.snapshot().revision() > target);
}

#[test]
fn apply_wakes_with_the_whole_batch() {
    let map = SnapMap::new();
    map.insert("cert", 1);
    map.insert("key", 1);
    let revision = map.snapshot().revision();
    thread::scope(|scope| {
        let waiter = scope.spawn(|| map.wait_for_change(revision));
        thread::sleep(Duration::from_millis(30));
        let mut reload = Batch::new();
        reload.insert("cert", 2).insert("key", 2).remove("old");
        map.apply(reload);
        let changed = waiter.join().unwrap();
        assert_eq!(
            (changed.get("cert"), changed.get("key")),
            (Some(&2), Some(&2))
        );
    });
}

#[test]
fn a_reader_waits_for_the_map_to_pass_its_snapshot() {
    let map = SnapMap::new();
    map.insert("limit", 10);
    let mut reader = map.reader();
    assert!(!reader.wait_for_change_timeout(Duration::from_millis(20)));
    assert_eq!(reader.cached().get("limit"), Some(&10));
    thread::scope(|scope| {
        scope.spawn(|| {
            thread::sleep(Duration::from_millis(50));
            map.insert("limit", 20);
        });
        assert!(reader.wait_for_change_timeout(Duration::from_secs(10)));
        assert_eq!(reader.cached().get("limit"), Some(&20));
    });
    thread::scope(|scope| {
        scope.spawn(|| {
            thread::sleep(Duration::from_millis(50));
            map.insert("limit", 30);
        });
        block_on(async {
            let snapshot = reader.changed().await;
            assert_eq!(snapshot.get("limit"), Some(&30));
        });
    });
    assert!(reader.is_current());
}

/// Waiters chase a writer that writes in bursts: each wait for the next
/// revision must end (a lost wakeup would run into the long timeout), and
/// each snapshot must hold at least the value written before the wait.
#[test]
fn waiters_chasing_a_writer_are_never_left_asleep() {
    const ROUNDS: u64 = 300;
    let map: SnapMap<u64, u64> = SnapMap::new();
    map.insert(0, 0);
    let done = AtomicUsize::new(0);
    thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                let mut last = map.snapshot();
                while done.load(Ordering::SeqCst) == 0 {
                    let revision = last.revision();
                    let Some(changed) =
                        map.wait_for_change_timeout(revision, Duration::from_millis(500))
                    else {
                        continue; // the writer may be done
                    };
                    assert!(changed.revision() > revision);
                    assert!(changed.get(&0) >= last.get(&0), "went back in time");
                    last = changed;
                }
            });
        }
        let waiter = scope.spawn(|| {
            let mut revision = map.snapshot().revision();
            for _ in 0..ROUNDS {
                let changed = map
                    .wait_for_change_timeout(revision, Duration::from_secs(20))
                    .expect("a waiter slept through a completed write");
                revision = changed.revision();
            }
        });
        for value in 1.. {
            if waiter.is_finished() {
                break;
            }
            map.insert(0, value);
            if value % 64 == 0 {
                thread::yield_now();
            }
        }
        waiter.join().unwrap();
        done.store(1, Ordering::SeqCst);
    });
}
