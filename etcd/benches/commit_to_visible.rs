//! How fast etcd's changes reach a mirror's snapshots, against a real
//! etcd on loopback (spawned like the tests do; `etcd` must be on PATH).
//!
//! ```sh
//! cargo bench -p snapmap-etcd                       # 2,000 puts, 1M keys
//! SNAPMAP_BENCH_QUICK=1 cargo bench -p snapmap-etcd # 200 puts, 10K keys
//! ```
//!
//! 1. **Commit to visible:** a put of one key under a small prefix, then
//!    `wait_for_revision` of its revision: from before the put to the
//!    snapshot that shows it (etcd's commit, with its fsync, included),
//!    and the mirror's own part (watch response received -> snapshot
//!    published, from the `Applied` event).
//! 2. **A 1 %-changed revision of a 1M-key map:** the prefix filled with
//!    1M keys, the mirror started (its load timed), then revisions that
//!    each rewrite 1 % of the keys (10,000 puts in one transaction; etcd
//!    started with `--max-txn-ops=10000`): commit to visible, and the
//!    mirror's part (decoding, one `SnapMap::apply`, one snapshot).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Etcd;
use hdrhistogram::Histogram;
use snapmap_etcd::etcd_client::{Txn, TxnOp};
use snapmap_etcd::{DecodeError, Mirror, MirrorEvent};

fn decode(_key: &str, value: &[u8]) -> Result<u64, DecodeError> {
    std::str::from_utf8(value)
        .map_err(DecodeError::from_error)?
        .parse()
        .map_err(DecodeError::from_error)
}

/// The mirror's own latency of each applied revision.
type Latencies = Arc<Mutex<Vec<Duration>>>;

fn recorder() -> (Latencies, impl Fn(&MirrorEvent<'_>) + Send + Sync + 'static) {
    let latencies: Latencies = Arc::default();
    let record = {
        let latencies = latencies.clone();
        move |event: &MirrorEvent<'_>| {
            if let MirrorEvent::Applied { latency, .. } = event {
                latencies.lock().unwrap().push(*latency);
            }
        }
    };
    (latencies, record)
}

fn histogram(samples: impl IntoIterator<Item = Duration>) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for d in samples {
        h.record(d.as_micros().max(1) as u64).unwrap();
    }
    h
}

fn line(name: &str, h: &Histogram<u64>) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "{name:<58} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  (n = {})",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not run us.
    let quick = std::env::var_os("SNAPMAP_BENCH_QUICK").is_some();
    let (puts, keys) = if quick {
        (200, 10_000)
    } else {
        (2_000, 1_000_000)
    };
    let changed = keys / 100;
    let etcd = Etcd::start_with_args(&[
        "--max-txn-ops=10000",
        "--max-request-bytes=10485760",
        "--quota-backend-bytes=8589934592",
    ])
    .await;
    let mut client = etcd.client().await;

    // 1. Commit to visible, one put at a time.
    let (mirror_part, record) = recorder();
    let mirror = Mirror::builder("/small/", decode)
        .endpoints([etcd.endpoint()])
        .on_event(record)
        .start()
        .await
        .unwrap();
    let mut visible = Vec::with_capacity(puts);
    for i in 0..puts {
        let started = Instant::now();
        let response = client
            .put(format!("/small/k{}", i % 100), i.to_string(), None)
            .await
            .unwrap();
        let revision = response.header().unwrap().revision();
        mirror.wait_for_revision(revision).await.unwrap();
        visible.push(started.elapsed());
    }
    mirror.shutdown().await;
    println!("snapmap-etcd, etcd 3.4 on loopback");
    line(
        "put -> visible in the mirror's snapshot",
        &histogram(visible),
    );
    line(
        "  of which the mirror (response in -> snapshot published)",
        &histogram(mirror_part.lock().unwrap().drain(..)),
    );

    // 2. A 1 %-changed revision of a large map.
    let fill_started = Instant::now();
    let key = |i: usize| format!("/big/k{i:07}");
    for chunk in (0..keys).collect::<Vec<_>>().chunks(10_000) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|&i| TxnOp::put(key(i), "0", None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await.unwrap();
    }
    println!(
        "filled etcd with {keys} keys in {:.1?}",
        fill_started.elapsed()
    );
    let (mirror_part, record) = recorder();
    let load_started = Instant::now();
    let mirror = Mirror::builder("/big/", decode)
        .endpoints([etcd.endpoint()])
        .on_event(record)
        .start()
        .await
        .unwrap();
    println!(
        "start (range in pages of 10,000, replace_all, snapshot) of {keys} keys: {:.1?}",
        load_started.elapsed()
    );
    let (mut visible, mut committed) = (Vec::new(), Vec::new());
    let rounds = if quick { 5 } else { 10 };
    for round in 1..=rounds {
        // A different 1 % each round: every 100th key, shifted.
        let ops: Vec<TxnOp> = (0..changed)
            .map(|j| TxnOp::put(key(j * 100 + round), round.to_string(), None))
            .collect();
        let started = Instant::now();
        let response = client.txn(Txn::new().and_then(ops)).await.unwrap();
        committed.push(started.elapsed());
        let revision = response.header().unwrap().revision();
        let snapshot = mirror.wait_for_revision(revision).await.unwrap();
        visible.push(started.elapsed());
        assert_eq!(
            snapshot.get(&format!("k{:07}", 100 + round)),
            Some(&(round as u64))
        );
    }
    line(
        &format!("{changed}-put txn -> visible ({keys} keys)"),
        &histogram(visible),
    );
    line(
        "  of which etcd's commit (txn -> response)",
        &histogram(committed),
    );
    line(
        "  of which the mirror (decode, apply, snapshot)",
        &histogram(mirror_part.lock().unwrap().drain(..)),
    );
    mirror.shutdown().await;
}
