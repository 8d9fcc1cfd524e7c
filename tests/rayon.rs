//! Parallel iteration (feature `rayon`): every key exactly once, in every
//! configuration, while shards split under the walk.
#![cfg(feature = "rayon")]

mod common;

use std::sync::Mutex;

use common::for_each_config;
use rayon::iter::ParallelIterator;

#[test]
fn par_for_each_and_snapshot_par_iter_yield_every_key_once() {
    for_each_config::<u64, u64>(|config, map| {
        const N: u64 = 5_000;
        for k in 0..N {
            map.insert(k, k * 2);
        }
        let seen = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            // Keys above N arrive (and split shards) during the walk; the
            // keys present throughout must each be seen exactly once.
            s.spawn(|| {
                for k in N..2 * N {
                    map.insert(k, k * 2);
                }
            });
            map.par_for_each(|k, v| {
                assert_eq!(*v, k * 2);
                seen.lock().unwrap().push(*k);
            });
        });
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        let before = seen.partition_point(|k| *k < N);
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "{}: a key twice",
            config.name
        );
        assert_eq!(before as u64, N, "{}: a key missed", config.name);

        let snapshot = map.snapshot();
        let mut keys: Vec<u64> = snapshot.par_iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        assert_eq!(keys, (0..2 * N).collect::<Vec<_>>(), "{}", config.name);
    });
}
