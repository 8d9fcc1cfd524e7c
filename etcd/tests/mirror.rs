//! The mirror against a real etcd (see `common`): start and follow,
//! rejected values, etcd killed and restarted, compaction, three mirrors.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Etcd;
use common::proxy::Proxy;
use snapmap_etcd::etcd_client::{Client, GetOptions, Txn, TxnOp};
use snapmap_etcd::{DecodeError, Error, LoadReason, Mirror, MirrorEvent, MirrorView};

const PREFIX: &str = "/cfg/";
/// Long enough for a loaded 2-core machine; a hang fails instead of
/// blocking CI.
const WAIT: Duration = Duration::from_secs(60);

/// Values are UTF-8 strings; any value starting with "bad" is rejected.
fn decode(_key: &str, value: &[u8]) -> Result<String, DecodeError> {
    let value = std::str::from_utf8(value).map_err(DecodeError::from_error)?;
    if value.starts_with("bad") {
        return Err(DecodeError::new(format!("rejected value {value:?}")));
    }
    Ok(value.to_owned())
}

/// etcd's content of the prefix at `revision` (0: now), prefix stripped.
async fn etcd_content(client: &mut Client, revision: i64) -> BTreeMap<String, String> {
    let mut options = GetOptions::new().with_prefix();
    if revision != 0 {
        options = options.with_revision(revision);
    }
    let response = client.get(PREFIX, Some(options)).await.expect("range get");
    response
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap()[PREFIX.len()..].to_owned(),
                kv.value_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn mirror_content(view: &MirrorView<String>) -> (i64, BTreeMap<String, String>) {
    let snapshot = view.snapshot();
    let content = snapshot
        .snapshot()
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    (snapshot.revision(), content)
}

async fn put(client: &mut Client, key: &str, value: &str) -> i64 {
    let response = client
        .put(format!("{PREFIX}{key}"), value, None)
        .await
        .expect("put");
    response.header().unwrap().revision()
}

async fn txn(client: &mut Client, ops: Vec<TxnOp>) -> i64 {
    let response = client.txn(Txn::new().and_then(ops)).await.expect("txn");
    assert!(response.succeeded());
    response.header().unwrap().revision()
}

async fn wait(view: &MirrorView<String>, revision: i64) {
    tokio::time::timeout(WAIT, view.wait_for_revision(revision))
        .await
        .unwrap_or_else(|_| panic!("the mirror did not reach revision {revision}"))
        .expect("mirror running");
}

fn t_key(i: usize) -> String {
    format!("{PREFIX}t/{i:03}")
}

/// Issue 15, must-show 1: a put, a delete, and transactions of 100 puts
/// and deletes, each seen all or nothing by readers that take snapshots
/// while they are applied; every snapshot's etcd revision names exactly
/// its content (checked against etcd's range at that revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_follow_with_atomic_transactions() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "a", "1").await;
    client.put("/other/outside", "x", None).await.unwrap();
    for i in 0..100 {
        client.put(t_key(i), "g0", None).await.unwrap();
    }
    let start_revision = client
        .get(PREFIX, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();

    let mirror = Mirror::builder(PREFIX, decode)
        .endpoints([etcd.endpoint()])
        .start()
        .await
        .expect("start");
    let view = mirror.view();
    assert_eq!(view.revision(), start_revision);
    assert_eq!(mirror_content(&view).1, etcd_content(&mut client, 0).await);
    assert_eq!(view.get("t/007").as_deref(), Some("g0"));
    assert_eq!(view.get("/other/outside"), None);

    // A put, then a delete.
    let revision = put(&mut client, "b", "2").await;
    wait(&view, revision).await;
    assert_eq!(view.get("b").as_deref(), Some("2"));
    let revision = client
        .delete(format!("{PREFIX}a"), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    wait(&view, revision).await;
    assert_eq!(view.get("a"), None);
    assert_eq!(view.snapshot().revision(), revision);

    // Readers check every snapshot: all t/ keys hold one generation g,
    // with all 100 keys present for an even g and only the odd ones for an
    // odd g. They keep the content of each revision they see.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<HashMap<i64, BTreeMap<String, String>>>> = Arc::default();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (view, stop, seen) = (view.clone(), stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut checked = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = view.snapshot();
                    let t: Vec<(&snapmap_etcd::Key, &String)> = snapshot
                        .snapshot()
                        .iter()
                        .filter(|(k, _)| k.starts_with("t/"))
                        .collect();
                    let generation: u32 = t[0].1[1..].parse().unwrap();
                    assert!(
                        t.iter()
                            .all(|(_, v)| v[1..].parse::<u32>().unwrap() == generation),
                        "a snapshot at revision {} mixes generations",
                        snapshot.revision()
                    );
                    let expected = if generation % 2 == 0 { 100 } else { 50 };
                    assert_eq!(
                        t.len(),
                        expected,
                        "generation {generation}: half a transaction"
                    );
                    let mut seen = seen.lock().unwrap();
                    seen.entry(snapshot.revision()).or_insert_with(|| {
                        snapshot
                            .snapshot()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.clone()))
                            .collect()
                    });
                    checked += 1;
                }
                checked
            })
        })
        .collect();

    let mut last = 0;
    for generation in 1..=20u32 {
        let value = format!("g{generation}");
        let ops = (0..100)
            .map(|i| {
                if generation % 2 == 1 && i % 2 == 0 {
                    TxnOp::delete(t_key(i), None)
                } else {
                    TxnOp::put(t_key(i), value.clone(), None)
                }
            })
            .collect();
        last = txn(&mut client, ops).await;
    }
    wait(&view, last).await;
    stop.store(true, Ordering::Relaxed);
    let checked: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(checked > 0);

    // Every snapshot seen is etcd's content at its revision, exactly.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    for (revision, content) in &seen {
        assert_eq!(
            content,
            &etcd_content(&mut client, *revision).await,
            "revision {revision}"
        );
    }
    let (revision, content) = mirror_content(&view);
    assert_eq!(revision, last);
    assert_eq!(content, etcd_content(&mut client, 0).await);
    let stats = mirror.stats();
    assert_eq!(stats.applied_revisions, 2 + 20);
    assert_eq!((stats.rejected_revisions, stats.duplicates_ignored), (0, 0));
    eprintln!(
        "{checked} snapshots checked, {} distinct revisions",
        seen.len()
    );
    mirror.shutdown().await;
    assert!(matches!(
        view.wait_for_revision(last + 1).await,
        Err(Error::Stopped)
    ));
}

/// Issue 15, must-show 2: a value the decoder rejects fails its whole
/// revision (nothing of it applied), is reported (event and counter), and
/// the next good revision applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_value_skips_its_whole_revision() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let good = put(&mut client, "x", "1").await;
    let rejected: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let mirror = {
        let rejected = rejected.clone();
        Mirror::builder(PREFIX, decode)
            .endpoints([etcd.endpoint()])
            .on_event(move |event| {
                if let MirrorEvent::Rejected { revision, error } = event {
                    let Error::Decode { key, .. } = error else {
                        panic!("not a decode error: {error}")
                    };
                    let key = String::from_utf8(key.clone()).unwrap();
                    rejected.lock().unwrap().push((*revision, key));
                }
            })
            .start()
            .await
            .unwrap()
    };
    let view = mirror.view();
    assert_eq!(view.revision(), good);

    // One revision: a good put and a bad one.
    let bad = txn(
        &mut client,
        vec![
            TxnOp::put(format!("{PREFIX}x"), "2", None),
            TxnOp::put(format!("{PREFIX}y"), "bad value", None),
        ],
    )
    .await;
    wait(&view, bad).await;
    let snapshot = view.snapshot();
    assert_eq!(snapshot.revision(), bad);
    assert_eq!(
        snapshot.get("x").map(String::as_str),
        Some("1"),
        "half a revision"
    );
    assert_eq!(snapshot.get("y"), None);
    assert_eq!(snapshot.diverged_since(), Some(bad));
    assert_eq!(*rejected.lock().unwrap(), vec![(bad, format!("{PREFIX}y"))]);
    assert_eq!(mirror.stats().rejected_revisions, 1);

    // The next good revision applies.
    let next = put(&mut client, "z", "3").await;
    wait(&view, next).await;
    let snapshot = view.snapshot();
    assert_eq!(snapshot.get("z").map(String::as_str), Some("3"));
    assert_eq!(snapshot.get("x").map(String::as_str), Some("1"));
    assert_eq!(snapshot.diverged_since(), Some(bad));
    let stats = mirror.stats();
    assert_eq!((stats.applied_revisions, stats.rejected_revisions), (1, 1));
    mirror.shutdown().await;
}

/// A first load with a rejected value: `start` fails and leaves nothing
/// running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_value_at_start_fails_start() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "x", "bad").await;
    let error = Mirror::builder(PREFIX, decode)
        .endpoints([etcd.endpoint()])
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Decode { .. }), "{error}");
}

/// Records every applied revision, in order.
fn recorder() -> (
    Arc<Mutex<Vec<i64>>>,
    impl Fn(&MirrorEvent<'_>) + Send + Sync + 'static,
) {
    let applied: Arc<Mutex<Vec<i64>>> = Arc::default();
    let record = {
        let applied = applied.clone();
        move |event: &MirrorEvent<'_>| {
            if let MirrorEvent::Applied { revision, .. } = event {
                applied.lock().unwrap().push(*revision);
            }
        }
    };
    (applied, record)
}

/// Issue 15, must-show 3: etcd SIGKILLed and restarted while the mirror
/// follows a stream of writes: the mirror resumes from its last revision
/// and ends equal to etcd, every revision applied once, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted_mid_stream() {
    let mut etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "k/0", "0").await;
    let (applied, record) = recorder();
    let mirror = Mirror::builder(PREFIX, decode)
        .endpoints([etcd.endpoint()])
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
        .on_event(record)
        .start()
        .await
        .unwrap();
    let view = mirror.view();

    let mut written = Vec::new();
    for round in 0..3 {
        // A burst of writes, then SIGKILL at once: the mirror is still
        // receiving (or yet to receive) the burst.
        for i in 0..100 {
            let key = format!("{PREFIX}k/{}", i % 37);
            let ops = vec![
                TxnOp::put(key, format!("{round}-{i}"), None),
                TxnOp::put(format!("{PREFIX}last"), format!("{round}-{i}"), None),
            ];
            written.push(txn(&mut client, ops).await);
            if i % 10 == 9 {
                let gone = format!("{PREFIX}k/{}", (i * 7) % 37);
                let response = client.delete(gone, None).await.unwrap();
                if response.deleted() > 0 {
                    written.push(response.header().unwrap().revision());
                }
            }
        }
        etcd.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        etcd.restart().await;
        client = etcd.client().await;
    }
    let last = *written.last().unwrap();
    wait(&view, last).await;
    assert_eq!(
        *applied.lock().unwrap(),
        written,
        "each revision applied once, in order"
    );
    let (revision, content) = mirror_content(&view);
    assert_eq!(revision, last);
    assert_eq!(content, etcd_content(&mut client, 0).await);
    let stats = mirror.stats();
    assert!(stats.disconnects >= 3, "{stats:?}");
    assert_eq!(stats.duplicates_ignored, 0);
    mirror.shutdown().await;
}

/// Issue 15, must-show 4: the mirror cut off from etcd while etcd is
/// written and compacted past the mirror's revision: on reconnecting the
/// watch is cancelled for compaction, and the mirror loads the prefix again
/// as one batch (readers never see a mix of before and after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_past_the_mirror_resyncs_in_one_batch() {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.endpoint().trim_start_matches("http://").to_owned()).await;
    let mut client = etcd.client().await;
    for i in 0..20 {
        put(&mut client, &format!("k/{i:02}"), "0").await;
    }
    let loads: Arc<Mutex<Vec<(LoadReason, i64)>>> = Arc::default();
    let mirror = {
        let loads = loads.clone();
        Mirror::builder(PREFIX, decode)
            .endpoints([proxy.endpoint()])
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .on_event(move |event| {
                if let MirrorEvent::Loaded {
                    reason, revision, ..
                } = event
                {
                    loads.lock().unwrap().push((*reason, *revision));
                }
            })
            .start()
            .await
            .unwrap()
    };
    let view = mirror.view();
    let before = view.revision();

    // Every snapshot: all k/ keys of one generation (20 keys, or 10 for
    // an odd one, where the even keys are deleted).
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (view, stop) = (view.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let snapshot = view.snapshot();
                let values: Vec<&String> = snapshot.snapshot().iter().map(|(_, v)| v).collect();
                let generation: u32 = values[0].parse().unwrap();
                assert!(
                    values
                        .iter()
                        .all(|v| v.parse::<u32>().unwrap() == generation)
                );
                let expected = if generation % 2 == 0 { 20 } else { 10 };
                assert_eq!(values.len(), expected, "a resync seen half applied");
            }
        })
    };

    proxy.cut().await;
    let mut last = 0;
    for generation in 1..=9u32 {
        let ops = (0..20)
            .map(|i| {
                let key = format!("{PREFIX}k/{i:02}");
                if generation % 2 == 1 && i % 2 == 0 {
                    TxnOp::delete(key, None)
                } else {
                    TxnOp::put(key, generation.to_string(), None)
                }
            })
            .collect();
        last = txn(&mut client, ops).await;
    }
    client.compact(last, None).await.expect("compact");
    assert_eq!(view.revision(), before, "cut off: nothing new");
    proxy.restore();

    wait(&view, last).await;
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let (revision, content) = mirror_content(&view);
    assert_eq!(revision, last);
    assert_eq!(content, etcd_content(&mut client, 0).await);
    assert_eq!(content["k/01"], "9");
    let loads = loads.lock().unwrap().clone();
    assert_eq!(loads.len(), 2, "{loads:?}");
    assert!(matches!(loads[1], (LoadReason::Compacted(c), r) if c == last && r == last));
    let stats = mirror.stats();
    assert_eq!(stats.resyncs, 1);
    assert_eq!(stats.applied_revisions, 0, "no revision replayed: one load");
    mirror.shutdown().await;
}

/// Issue 15, must-show 5: three mirrors of one prefix converge to the same
/// content at the same revision after a burst of 1,000 transactions (from
/// four concurrent writers, so watch responses carry several revisions;
/// one mirror asks for previous values, the others do not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_mirrors_converge_after_1000_transactions() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let mut mirrors = Vec::new();
    let mut recorders = Vec::new();
    for i in 0..3 {
        let (applied, record) = recorder();
        let mirror = Mirror::builder(PREFIX, decode)
            .endpoints([etcd.endpoint()])
            // One of them with previous values (the option's path).
            .previous_values(i == 2)
            .on_event(record)
            .start()
            .await
            .unwrap();
        mirrors.push(mirror);
        recorders.push(applied);
    }
    let writers: Vec<_> = (0..4u64)
        .map(|writer| {
            let endpoint = etcd.endpoint();
            tokio::spawn(async move {
                let mut client = Client::connect([endpoint], None).await.unwrap();
                let mut state = writer.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut revisions = Vec::new();
                for i in 0..250u64 {
                    // A put in every transaction: each one is a new revision.
                    let mut ops = vec![TxnOp::put(
                        format!("{PREFIX}w/{writer}"),
                        i.to_string(),
                        None,
                    )];
                    let mut keys = std::collections::HashSet::new();
                    for _ in 0..3 {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let key = format!("{PREFIX}k/{:03}", state % 200);
                        if !keys.insert(key.clone()) {
                            continue; // etcd refuses a key twice in a txn
                        }
                        if state % 5 == 0 {
                            ops.push(TxnOp::delete(key, None));
                        } else {
                            ops.push(TxnOp::put(key, format!("{writer}-{i}"), None));
                        }
                    }
                    revisions.push(txn(&mut client, ops).await);
                }
                revisions
            })
        })
        .collect();
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    written.sort_unstable();
    assert_eq!(written.len(), 1000);
    let last = *written.last().unwrap();
    let expected = etcd_content(&mut client, last).await;
    for (mirror, applied) in mirrors.iter().zip(&recorders) {
        wait(&mirror.view(), last).await;
        let (revision, content) = mirror_content(&mirror.view());
        assert_eq!(revision, last);
        assert_eq!(content, expected);
        // Every transaction is one revision, applied once.
        assert_eq!(*applied.lock().unwrap(), written);
    }
    for mirror in mirrors {
        mirror.shutdown().await;
    }
}

/// The full load in pages (7 keys each here), every page at the first
/// page's revision, while another client writes: the mirror starts with
/// exactly etcd's content at its start revision, then follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paginated_start_is_one_revision() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let ops = (0..100)
        .map(|i| TxnOp::put(format!("{PREFIX}p/{i:03}"), "0", None))
        .collect();
    txn(&mut client, ops).await;
    let writer = {
        let endpoint = etcd.endpoint();
        tokio::spawn(async move {
            let mut client = Client::connect([endpoint], None).await.unwrap();
            let mut last = 0;
            for i in 1..=50 {
                last = put(
                    &mut client,
                    &format!("p/{:03}", (i * 37) % 100),
                    &i.to_string(),
                )
                .await;
            }
            last
        })
    };
    let mirror = Mirror::builder(PREFIX, decode)
        .endpoints([etcd.endpoint()])
        .page_size(7)
        .start()
        .await
        .unwrap();
    let view = mirror.view();
    let (start, content) = mirror_content(&view);
    assert_eq!(content, etcd_content(&mut client, start).await);
    let last = writer.await.unwrap();
    wait(&view, last).await;
    assert_eq!(mirror_content(&view).1, etcd_content(&mut client, 0).await);
    mirror.shutdown().await;
}

/// A prefix whose range response is larger than the client's 4 MiB
/// message limit: the full load asks again with smaller pages (a page of
/// all 12 values is 10.8 MB) and loads every key, each value whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_larger_than_the_message_limit_loads_in_smaller_pages() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let big = |i: usize| char::from(b'a' + i as u8).to_string().repeat(900_000);
    let mut last = 0;
    for i in 0..12 {
        last = put(&mut client, &format!("big/{i:02}"), &big(i)).await;
    }
    // The test's own client cannot read the whole prefix in one response
    // either: that is the point.
    let whole = client
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await;
    assert!(
        whole.is_err(),
        "one response of 10.8 MB fit the client's limit"
    );
    let mirror = Mirror::builder(PREFIX, decode)
        .endpoints([etcd.endpoint()])
        .start()
        .await
        .unwrap();
    let view = mirror.view();
    let (revision, content) = mirror_content(&view);
    assert_eq!(revision, last);
    assert_eq!(content.len(), 12);
    for i in 0..12 {
        assert!(content[&format!("big/{i:02}")] == big(i), "big/{i:02}");
    }
    mirror.shutdown().await;
}
