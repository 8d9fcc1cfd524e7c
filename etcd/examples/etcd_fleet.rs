//! Fleet configuration from etcd: a mirror of one prefix, with typed values.
//!
//! Start a local etcd (`etcd --data-dir /tmp/etcd-demo`, listening on
//! 127.0.0.1:2379), then:
//!
//! ```sh
//! cargo run -p snapmap-etcd --example etcd_fleet -- --demo 20
//! ```
//!
//! The example mirrors `/fleet/config/` and prints every applied revision
//! with its reload latency (watch response received -> snapshot
//! published). With `--demo N` it also writes N transactions itself (a few
//! settings changed per transaction, and one value the decoder rejects)
//! and prints, for each, the latency from etcd's commit to the change
//! being visible in the mirror's snapshot; without it, it follows until
//! `--seconds` pass, while you write with `etcdctl put /fleet/config/workers 8`.
//!
//! Values are typed: an integer, `true`/`false`, or text; an empty value
//! or one starting with `!` is rejected (its whole revision is skipped and
//! reported).

use std::time::{Duration, Instant};

use snapmap_etcd::etcd_client::{Client, Txn, TxnOp};
use snapmap_etcd::{DecodeError, Mirror, MirrorEvent};

/// One configuration value.
#[derive(Clone, Debug, PartialEq)]
enum Setting {
    Number(i64),
    Flag(bool),
    Text(String),
}

/// The decoder: bytes from etcd to a [`Setting`].
fn decode_setting(_key: &str, value: &[u8]) -> Result<Setting, DecodeError> {
    let text = std::str::from_utf8(value).map_err(DecodeError::from_error)?;
    if text.is_empty() || text.starts_with('!') {
        return Err(DecodeError::new(format!("not a setting: {text:?}")));
    }
    Ok(match text {
        "true" => Setting::Flag(true),
        "false" => Setting::Flag(false),
        _ => match text.parse() {
            Ok(number) => Setting::Number(number),
            Err(_) => Setting::Text(text.to_owned()),
        },
    })
}

struct Options {
    endpoint: String,
    prefix: String,
    demo: u64,
    seconds: u64,
}

const HELP: &str = "\
etcd_fleet: mirror an etcd prefix into a snapmap, printing each revision

  --endpoint URL   etcd client URL (default http://127.0.0.1:2379)
  --prefix P       the prefix to mirror (default /fleet/config/)
  --demo N         write N transactions under the prefix, then stop
  --seconds S      without --demo: follow for S seconds (default 60)";

fn parse_args() -> Result<Option<Options>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut options = Options {
        endpoint: "http://127.0.0.1:2379".into(),
        prefix: "/fleet/config/".into(),
        demo: 0,
        seconds: 60,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("endpoint") => options.endpoint = parser.value()?.string()?,
            Long("prefix") => options.prefix = parser.value()?.string()?,
            Long("demo") => options.demo = parser.value()?.parse()?,
            Long("seconds") => options.seconds = parser.value()?.parse()?,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(options))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(options) = parse_args()? else {
        println!("{HELP}");
        return Ok(());
    };
    let mirror = Mirror::builder(options.prefix.clone(), decode_setting)
        .endpoints([options.endpoint.clone()])
        .on_event(|event| match event {
            MirrorEvent::Loaded {
                revision,
                reason,
                keys,
                elapsed,
                ..
            } => {
                println!("loaded {keys} keys at revision {revision} ({reason:?}) in {elapsed:.1?}")
            }
            MirrorEvent::Applied {
                revision,
                events,
                applied,
                latency,
            } => println!(
                "revision {revision}: {events} events (+{} ~{} -{}), reload latency {latency:.1?}",
                applied.inserted, applied.replaced, applied.removed
            ),
            MirrorEvent::Rejected { error, .. } => {
                println!("REJECTED, not applied: {error}")
            }
            other => println!("{other:?}"),
        })
        .start()
        .await?;

    if options.demo == 0 {
        tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    } else {
        let mut client = Client::connect([options.endpoint.clone()], None).await?;
        let mut latencies = Vec::new();
        for i in 0..options.demo {
            let key = |name: &str| format!("{}{name}", options.prefix);
            let mut ops = vec![
                TxnOp::put(key("workers"), (4 + i % 8).to_string(), None),
                TxnOp::put(key("debug"), (i % 2 == 0).to_string(), None),
                TxnOp::put(key("region"), format!("eu-{}", i % 3), None),
            ];
            if i == options.demo / 2 {
                ops.push(TxnOp::put(key("broken"), "!oops", None)); // rejected
            }
            let started = Instant::now();
            let response = client.txn(Txn::new().and_then(ops)).await?;
            let revision = response.header().map_or(0, |h| h.revision());
            let snapshot = mirror.wait_for_revision(revision).await?;
            latencies.push(started.elapsed());
            assert_eq!(snapshot.revision(), revision);
        }
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        println!(
            "commit -> visible in the snapshot (incl. etcd's commit): p50 {:.1?}, p99 {:.1?}, max {:.1?}",
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    let config = mirror.snapshot();
    println!(
        "final: revision {}, {} settings, diverged since {:?}, {:?}",
        config.revision(),
        config.len(),
        config.diverged_since(),
        mirror.stats()
    );
    for (key, value) in config.snapshot().iter() {
        println!("  {key} = {value:?}");
    }
    mirror.shutdown().await;
    Ok(())
}
