//! A configuration cache, as a server holds one: snapmap's main job.
//!
//! ```text
//! cargo run --release --example config_cache
//! cargo run --release --example config_cache -- --seconds 30 --readers 4 --keys 100000
//! ```
//!
//! # What it simulates
//!
//! A server keeps its settings in a `SnapMap<String, Arc<ConfigValue>>`
//! that every request handler reads and one background task reloads.
//!
//! - **The cache** is prefilled with `--keys` settings (default 10 000).
//!   These keys are never removed.
//! - **Readers** (`--readers`, default one per core) play request handlers.
//!   Each does hot lookups in batches of 1 000 through one [`Pinned`]
//!   handle, and pins anew for every batch so that values replaced
//!   meanwhile can be freed. One lookup in 64 is for a short-lived key,
//!   which may or may not be there. Every 50 batches a reader walks the
//!   whole map once, as a handler that renders the full configuration
//!   would (the walk allocates nothing).
//! - **One writer** plays the reloader. About every millisecond it
//!   replaces 1% of the values (the common case), adds one short-lived key
//!   and removes the oldest one. A real server reloads far less often: the
//!   example packs many reloads into a few seconds.
//!
//! # What is checked
//!
//! A fast wrong answer must not pass, so every value read is checked. Each
//! value records the key it was stored under and a version from one
//! counter that only grows, sealed with a checksum. The example fails (exit
//! status 1) if any of these is ever seen:
//!
//! - a value under the wrong key, or one whose seal is broken (a value read
//!   after it was freed, or before it was fully written);
//! - a key that is never removed missing from a lookup or from a walk;
//! - a key's version going backwards, as seen by one reader (each reader
//!   remembers the newest version it saw for every key);
//! - a version newer than any the writer had issued when the reader looked;
//! - a key yielded twice by one walk;
//! - an `insert` or `remove` that returned anything but the value the
//!   writer stored last;
//! - at the end, with every thread stopped: any key whose value is not the
//!   last one written, or a length that does not match.
//!
//! # What the numbers mean
//!
//! - **reads**: lookups done by all readers (hits and misses), per second of
//!   wall time, in total and per reader. On a machine with fewer cores than
//!   threads, readers share cores with the writer.
//! - **passes**: full walks of the map, and the entries they visited.
//! - **writes**: reloads, values replaced, keys added and removed.
//! - **map stats** ([`snapmap::Stats`]), among them: read hits (lookups
//!   answered by a shard's read view without a lock; counted when a handle
//!   is dropped), slow-path lookups (lookups that took a shard lock),
//!   promotions (dirty tables that became read views), dirty rebuilds and
//!   the entries copied (the price of a new key after a promotion), splits
//!   and merges of shards, and retired bytes (memory unlinked from the map
//!   and not yet freed by the epoch).
//! - **checks** and **violations**: values the readers checked, and wrong
//!   answers found by anyone. Anything but 0 violations is a bug in the
//!   map, and the run ends with `result FAILED` and exit status 1.
//!
//! These numbers describe one run on one machine, not a benchmark: there
//! is no baseline to compare with, and a loaded machine changes them a lot.

use std::collections::VecDeque;
use std::env;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use snapmap::{DefaultHashBuilder, Pinned, SnapMap};

/// Lookups per pinned handle. Memory retired while a handle is pinned is
/// freed only after it drops, so readers re-pin after every batch.
const BATCH: u64 = 1_000;
/// A reader walks the whole map once every this many batches.
const BATCHES_PER_PASS: u64 = 50;
/// One lookup in this many is for a short-lived key.
const SHORT_LIVED_EVERY: u64 = 64;
/// The writer's pause between reloads.
const RELOAD_PAUSE: Duration = Duration::from_millis(1);
/// Distinct violations described per thread; all are counted.
const EXAMPLES_KEPT: usize = 5;

/// The map a server would hold (behind an `Arc`, or as here, borrowed by
/// scoped threads). Values are `Arc`s so that a handler that must keep a
/// value beyond its pinned batch can clone it cheaply.
type ConfigCache = SnapMap<String, Arc<ConfigValue>>;

/// A pinned handle on the cache: lookups through it return references.
type PinnedCache<'m> = Pinned<'m, String, Arc<ConfigValue>, DefaultHashBuilder>;

// ----- Options ----------------------------------------------------------------

/// The command line.
struct Options {
    seconds: u64,
    readers: usize,
    keys: usize,
}

enum Command {
    Run(Options),
    Help,
}

fn default_readers() -> usize {
    thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn usage() -> String {
    format!(
        "\
Simulates a server's configuration cache on a snapmap::SnapMap: reader threads
look settings up and walk the map while a writer reloads it. Every value read
is checked; any wrong one is reported and makes the run fail.

Usage: cargo run --release --example config_cache [-- OPTIONS]

Options:
  --seconds N   how long to run (default 10)
  --readers N   reader threads (default: available parallelism, here {})
  --keys N      settings prefilled and never removed (default 10000)
  -h, --help    print this help

Exit status: 0 if every check passed, 1 if any failed, 2 for bad options.
",
        default_readers()
    )
}

/// Parses the arguments after the program name (`--flag N` or
/// `--flag=N`) with `lexopt`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;

    let mut options = Options {
        seconds: 10,
        readers: default_readers(),
        keys: 10_000,
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Long("seconds") => options.seconds = number(&mut parser, "--seconds", 1, 86_400)?,
            Long("readers") => {
                options.readers = number(&mut parser, "--readers", 1, 1_024)? as usize
            }
            Long("keys") => options.keys = number(&mut parser, "--keys", 1, 10_000_000)? as usize,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Command::Run(options))
}

/// The value of `flag`: a whole number in `min..=max`.
fn number(
    parser: &mut lexopt::Parser,
    flag: &str,
    min: u64,
    max: u64,
) -> Result<u64, lexopt::Error> {
    let text = parser.value()?;
    let text = text.to_string_lossy();
    let number: u64 = text
        .parse()
        .map_err(|_| format!("`{flag}` expects a whole number, got `{text}`"))?;
    if (min..=max).contains(&number) {
        Ok(number)
    } else {
        Err(format!("`{flag}` must be between {min} and {max}, got {number}").into())
    }
}

// ----- The values and the keys ------------------------------------------------

/// One setting, as the cache stores it.
///
/// Besides the setting's text it records which key it belongs to and the
/// version the writer gave it, so that a reader can tell a right answer
/// from a wrong one.
#[derive(Debug)]
struct ConfigValue {
    /// The key this value was stored under, as an index into [`KeySpace`].
    key_id: usize,
    /// Every store takes the next number from one counter, so a key's
    /// versions only grow, even across a removal and a re-insertion.
    version: u64,
    /// `key_id` and `version` mixed with a constant.
    seal: u64,
    /// The setting itself, `"<key> = <version>"`: what a handler would use.
    text: String,
}

impl ConfigValue {
    fn new(keys: &KeySpace, key_id: usize, version: u64) -> Arc<Self> {
        Arc::new(ConfigValue {
            key_id,
            version,
            seal: seal(key_id, version),
            text: format!("{} = {version}", keys.name(key_id)),
        })
    }

    /// Whether the seal matches: a value read after being freed, or before
    /// being fully written, would almost surely fail this.
    fn is_sealed(&self) -> bool {
        self.seal == seal(self.key_id, self.version)
    }
}

fn seal(key_id: usize, version: u64) -> u64 {
    0x5EA1_ED0F_C0FF_EE00 ^ version ^ (key_id as u64).rotate_left(32)
}

/// The keys, by index: `0..stable` are prefilled and never removed; the
/// rest are short-lived keys that the writer adds and removes.
struct KeySpace {
    names: Vec<String>,
    stable: usize,
}

impl KeySpace {
    fn new(stable: usize) -> Self {
        let short_lived = (stable / 10).max(8);
        let names = (0..stable)
            .map(|i| format!("service.{:04}.option.{:02}", i / 100, i % 100))
            .chain((0..short_lived).map(|i| format!("feature-flag.{i:05}")))
            .collect();
        KeySpace { names, stable }
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    fn name(&self, id: usize) -> &str {
        &self.names[id]
    }

    fn is_stable(&self, id: usize) -> bool {
        id < self.stable
    }

    fn short_lived(&self) -> usize {
        self.len() - self.stable
    }

    fn random_stable(&self, rng: &mut Rng) -> usize {
        rng.below(self.stable)
    }

    fn random_short_lived(&self, rng: &mut Rng) -> usize {
        self.stable + rng.below(self.short_lived())
    }
}

/// `SplitMix64`: a small, fast generator to spread lookups over the keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

// ----- What the threads share -------------------------------------------------

/// A reader's progress, on its own cache line so that readers publishing
/// progress do not slow each other down.
#[derive(Default)]
#[repr(align(128))]
struct ReaderProgress {
    reads: AtomicU64,
    passes: AtomicU64,
}

/// The writer's progress, on its own cache line.
#[derive(Default)]
#[repr(align(128))]
struct WriterProgress {
    reloads: AtomicU64,
}

/// What the main thread, the readers and the writer share.
struct Shared {
    stop: AtomicBool,
    /// The newest version the writer has handed out.
    latest_version: AtomicU64,
    /// Violations seen so far by every thread (for the progress lines).
    violations: AtomicU64,
    readers: Vec<ReaderProgress>,
    writer: WriterProgress,
}

/// The wrong answers one thread saw: all counted, the first few distinct
/// ones described.
struct Violations<'a> {
    /// The count shared by every thread.
    total: &'a AtomicU64,
    examples: Vec<String>,
}

impl<'a> Violations<'a> {
    fn new(shared: &'a Shared) -> Self {
        Violations {
            total: &shared.violations,
            examples: Vec::new(),
        }
    }

    #[cold]
    fn record(&mut self, describe: impl FnOnce() -> String) {
        // Relaxed: a count for the progress lines; it orders nothing.
        self.total.fetch_add(1, Ordering::Relaxed);
        if self.examples.len() < EXAMPLES_KEPT {
            let description = describe();
            if !self.examples.contains(&description) {
                self.examples.push(description);
            }
        }
    }
}

// ----- Readers ----------------------------------------------------------------

struct Reader<'a> {
    map: &'a ConfigCache,
    keys: &'a KeySpace,
    shared: &'a Shared,
    progress: &'a ReaderProgress,
    rng: Rng,
    /// The newest version this reader has seen for each key (0: none yet;
    /// versions start at 1).
    newest_seen: Vec<u64>,
    /// The newest version seen for any key.
    newest_overall: u64,
    /// Which keys the current walk has yielded (reused: walks allocate
    /// nothing).
    seen_this_pass: Vec<bool>,
    report: ReaderReport<'a>,
}

struct ReaderReport<'a> {
    reads: u64,
    passes: u64,
    entries_visited: u64,
    values_checked: u64,
    violations: Violations<'a>,
}

impl<'a> Reader<'a> {
    fn new(map: &'a ConfigCache, keys: &'a KeySpace, shared: &'a Shared, index: usize) -> Self {
        Reader {
            map,
            keys,
            shared,
            progress: &shared.readers[index],
            rng: Rng(0xC0DE_0000 + index as u64),
            newest_seen: vec![0; keys.len()],
            newest_overall: 0,
            seen_this_pass: vec![false; keys.len()],
            report: ReaderReport {
                reads: 0,
                passes: 0,
                entries_visited: 0,
                values_checked: 0,
                violations: Violations::new(shared),
            },
        }
    }

    fn run(mut self) -> ReaderReport<'a> {
        let mut batches = 0u64;
        // Relaxed: a stop flag; nothing is read because of it.
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.lookup_batch();
            batches += 1;
            if batches % BATCHES_PER_PASS == 0 {
                self.full_pass();
            }
            self.check_nothing_from_the_future();
            // Relaxed: progress for the once-a-second report.
            self.progress
                .reads
                .store(self.report.reads, Ordering::Relaxed);
            self.progress
                .passes
                .store(self.report.passes, Ordering::Relaxed);
        }
        self.report
    }

    /// The hot path: `BATCH` lookups under one pin.
    fn lookup_batch(&mut self) {
        let map = self.map;
        let pinned = map.pin();
        for i in 0..BATCH {
            let id = if i % SHORT_LIVED_EVERY == 0 {
                self.keys.random_short_lived(&mut self.rng)
            } else {
                self.keys.random_stable(&mut self.rng)
            };
            match pinned.get(self.keys.name(id)) {
                Some(value) => self.check(id, value),
                None if self.keys.is_stable(id) => {
                    let name = self.keys.name(id);
                    self.report
                        .violations
                        .record(|| format!("lookup: `{name}` is never removed but was not found"));
                }
                None => {} // a short-lived key, currently absent
            }
        }
        self.report.reads += BATCH;
    }

    /// A full walk of the map, as a handler rendering the configuration.
    fn full_pass(&mut self) {
        let map = self.map;
        let pinned = map.pin();
        self.seen_this_pass.fill(false);
        for (key, value) in &pinned {
            self.report.entries_visited += 1;
            let id = value.key_id;
            let well_formed = id < self.keys.len()
                && self.keys.name(id) == key
                && value.text.starts_with(key.as_str());
            if !well_formed {
                self.report
                    .violations
                    .record(|| format!("walk: malformed entry `{key}` -> {value:?}"));
                continue;
            }
            if std::mem::replace(&mut self.seen_this_pass[id], true) {
                self.report
                    .violations
                    .record(|| format!("walk: `{key}` was yielded twice in one pass"));
            }
            self.check(id, value);
        }
        let missing = self.seen_this_pass[..self.keys.stable]
            .iter()
            .filter(|&&seen| !seen)
            .count();
        if missing > 0 {
            self.report
                .violations
                .record(|| format!("walk: keys that are never removed were missing: {missing}"));
        }
        self.report.passes += 1;
    }

    /// Checks a value read for key `id`.
    #[inline]
    fn check(&mut self, id: usize, value: &ConfigValue) {
        self.report.values_checked += 1;
        if value.key_id != id || !value.is_sealed() {
            let name = self.keys.name(id);
            self.report
                .violations
                .record(|| format!("read: `{name}` gave a value that is not its own: {value:?}"));
            return;
        }
        let newest = &mut self.newest_seen[id];
        if value.version < *newest {
            let (name, before) = (self.keys.name(id), *newest);
            self.report.violations.record(|| {
                format!(
                    "read: `{name}` went back from version {before} to {}",
                    value.version
                )
            });
            return;
        }
        *newest = value.version;
        self.newest_overall = self.newest_overall.max(value.version);
    }

    /// No value may be newer than the writer's latest version.
    fn check_nothing_from_the_future(&mut self) {
        // Relaxed is enough, and that is the point: the writer stores
        // `latest_version` before inserting a value with that version, and
        // the map's Release store of the value and our Acquire load of it
        // order that store before this load. If the map's orderings were
        // wrong, this load could return an older version than one we read.
        let latest = self.shared.latest_version.load(Ordering::Relaxed);
        if self.newest_overall > latest {
            let newest = self.newest_overall;
            self.report.violations.record(|| {
                format!("read version {newest}, but the writer had issued only up to {latest}")
            });
        }
    }
}

// ----- The writer -------------------------------------------------------------

struct Writer<'a> {
    map: &'a ConfigCache,
    keys: &'a KeySpace,
    shared: &'a Shared,
    rng: Rng,
    last_version: u64,
    /// What the writer stored last under each key (`None`: absent). As the
    /// only writer, it knows exactly what every operation must return.
    stored: Vec<Option<u64>>,
    /// Short-lived keys present, oldest first, and those absent.
    live_short_lived: VecDeque<usize>,
    absent_short_lived: Vec<usize>,
    report: WriterReport<'a>,
}

struct WriterReport<'a> {
    reloads: u64,
    updates: u64,
    added: u64,
    removed: u64,
    stored: Vec<Option<u64>>,
    violations: Violations<'a>,
}

impl<'a> Writer<'a> {
    fn new(map: &'a ConfigCache, keys: &'a KeySpace, shared: &'a Shared) -> Self {
        Writer {
            map,
            keys,
            shared,
            rng: Rng(0x0057_0BE5),
            last_version: 0,
            stored: vec![None; keys.len()],
            live_short_lived: VecDeque::new(),
            absent_short_lived: (keys.stable..keys.len()).collect(),
            report: WriterReport {
                reloads: 0,
                updates: 0,
                added: 0,
                removed: 0,
                stored: Vec::new(),
                violations: Violations::new(shared),
            },
        }
    }

    fn next_version(&mut self) -> u64 {
        self.last_version += 1;
        // Relaxed: the map's insert (a Release) publishes this store along
        // with the value; see `Reader::check_nothing_from_the_future`.
        self.shared
            .latest_version
            .store(self.last_version, Ordering::Relaxed);
        self.last_version
    }

    /// Stores every key that is never removed, before the readers start.
    fn prefill(&mut self) {
        let map = self.map;
        let pinned = map.pin();
        for id in 0..self.keys.stable {
            self.store(&pinned, id);
        }
        // New keys wait in each shard's dirty table until lookups promote
        // them. A walk promotes every shard first (as Go's `Range` does), so
        // one walk after loading, as a server logging its configuration
        // would do, lets the readers start lock-free.
        let walked = pinned.iter().count();
        assert_eq!(walked, self.keys.stable, "the prefilled map walks whole");
    }

    /// Stores a new version under `id` and checks what `insert` returned.
    fn store(&mut self, pinned: &PinnedCache<'_>, id: usize) {
        let version = self.next_version();
        let value = ConfigValue::new(self.keys, id, version);
        let previous = pinned.insert(self.keys.name(id).to_owned(), value);
        self.expect(id, "insert", previous.map(|v| &**v));
        self.stored[id] = Some(version);
    }

    /// One configuration reload.
    fn reload(&mut self) {
        let map = self.map;
        let pinned = map.pin();

        // The common case: new values for existing keys. Each is one
        // compare-and-swap on the entry; no lock.
        let updates = (self.keys.stable / 100).max(1);
        for _ in 0..updates {
            let id = self.keys.random_stable(&mut self.rng);
            self.store(&pinned, id);
        }
        self.report.updates += updates as u64;

        // Now and then a key appears: it takes its shard's lock.
        if !self.absent_short_lived.is_empty() {
            let pick = self.rng.below(self.absent_short_lived.len());
            let id = self.absent_short_lived.swap_remove(pick);
            let version = self.next_version();
            let value = ConfigValue::new(self.keys, id, version);
            if let Err(occupied) = pinned.try_insert(self.keys.name(id).to_owned(), value) {
                let name = self.keys.name(id);
                let current = occupied.current;
                self.report.violations.record(|| {
                    format!("try_insert: `{name}` should be absent but holds {current:?}")
                });
            }
            self.stored[id] = Some(version);
            self.live_short_lived.push_back(id);
            self.report.added += 1;
        }

        // ... and the oldest short-lived key goes once half of them are in.
        if self.live_short_lived.len() > self.keys.short_lived() / 2 {
            let id = self.live_short_lived.pop_front().expect("not empty");
            let removed = pinned.remove(self.keys.name(id));
            self.expect(id, "remove", removed.map(|v| &**v));
            self.stored[id] = None;
            self.absent_short_lived.push(id);
            self.report.removed += 1;
        }

        self.report.reloads += 1;
        // Relaxed: progress for the once-a-second report.
        self.shared
            .writer
            .reloads
            .store(self.report.reloads, Ordering::Relaxed);
    }

    /// Checks that `operation` on `id` returned the value stored last.
    fn expect(&mut self, id: usize, operation: &str, returned: Option<&ConfigValue>) {
        let expected = self.stored[id];
        let ok = match returned {
            None => expected.is_none(),
            Some(value) => {
                value.key_id == id && value.is_sealed() && Some(value.version) == expected
            }
        };
        if !ok {
            let name = self.keys.name(id);
            self.report.violations.record(|| {
                format!("{operation}: `{name}` returned {returned:?}, expected the value of version {expected:?}")
            });
        }
    }

    fn run(mut self) -> WriterReport<'a> {
        // Relaxed: a stop flag; nothing is read because of it.
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.reload();
            thread::sleep(RELOAD_PAUSE);
        }
        self.report.stored = self.stored;
        self.report
    }
}

// ----- The end-of-run check ---------------------------------------------------

/// With every thread stopped: each key holds exactly the value written last
/// (no lost or phantom update), and the length and a walk agree.
fn final_check(
    map: &ConfigCache,
    keys: &KeySpace,
    stored: &[Option<u64>],
    violations: &mut Violations<'_>,
) {
    let pinned = map.pin();
    for (id, expected) in stored.iter().enumerate() {
        let found = pinned.get(keys.name(id)).map(|v| (v.key_id, v.version));
        if found != expected.map(|version| (id, version)) {
            let name = keys.name(id);
            violations
                .record(|| format!("end: `{name}` holds {found:?}, expected version {expected:?}"));
        }
    }
    let expected_len = stored.iter().flatten().count();
    let walked = pinned.iter().count();
    if map.len() != expected_len || walked != expected_len {
        let len = map.len();
        violations.record(|| {
            format!("end: len() is {len} and a walk yields {walked}, expected {expected_len}")
        });
    }
}

// ----- Main -------------------------------------------------------------------

fn main() -> ExitCode {
    let options = match parse_args(env::args().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("config_cache: {message}");
            eprintln!("Run with --help to see the options.");
            return ExitCode::from(2);
        }
    };

    let keys = KeySpace::new(options.keys);
    let map = ConfigCache::new();
    let shared = Shared {
        stop: AtomicBool::new(false),
        latest_version: AtomicU64::new(0),
        violations: AtomicU64::new(0),
        readers: (0..options.readers)
            .map(|_| ReaderProgress::default())
            .collect(),
        writer: WriterProgress::default(),
    };
    println!(
        "config_cache: {} keys (+{} short-lived), {} readers, 1 writer, {} s",
        grouped(keys.stable as u64),
        grouped(keys.short_lived() as u64),
        options.readers,
        options.seconds
    );

    let outcome = run(&options, &map, &keys, &shared);

    // Every thread is joined and every handle dropped, so the stats are
    // exact. Take them before the final check, which reads the map too.
    let stats = map.stats();
    let mut end_violations = Violations::new(&shared);
    if let Some(writer) = &outcome.writer {
        final_check(&map, &keys, &writer.stored, &mut end_violations);
    }

    print_summary(&options, &outcome, &stats);
    verdict(&shared, &outcome, &end_violations)
}

/// What the threads handed back (`None`: the thread panicked).
struct Outcome<'a> {
    elapsed: Duration,
    readers: Vec<Option<ReaderReport<'a>>>,
    writer: Option<WriterReport<'a>>,
}

/// Prefills the map, runs the readers and the writer for the requested
/// time while printing progress once a second, and stops them.
fn run<'a>(
    options: &Options,
    map: &'a ConfigCache,
    keys: &'a KeySpace,
    shared: &'a Shared,
) -> Outcome<'a> {
    let mut writer = Writer::new(map, keys, shared);
    let prefill_started = Instant::now();
    writer.prefill();
    println!(
        "prefilled {} keys in {:.1?}",
        grouped(keys.stable as u64),
        prefill_started.elapsed()
    );

    thread::scope(|scope| {
        let start = Instant::now();
        let readers: Vec<_> = (0..options.readers)
            .map(|index| {
                let reader = Reader::new(map, keys, shared, index);
                thread::Builder::new()
                    .name(format!("reader-{index}"))
                    .spawn_scoped(scope, move || reader.run())
                    .expect("spawn a reader thread")
            })
            .collect();
        let writer = thread::Builder::new()
            .name("writer".into())
            .spawn_scoped(scope, move || writer.run())
            .expect("spawn the writer thread");

        for second in 1..=options.seconds {
            let tick = start + Duration::from_secs(second);
            thread::sleep(tick.saturating_duration_since(Instant::now()));
            print_progress(start.elapsed(), shared);
        }
        // Relaxed: a stop flag; the joins below order everything after it.
        shared.stop.store(true, Ordering::Relaxed);

        let readers = readers.into_iter().map(|h| h.join().ok()).collect();
        let writer = writer.join().ok();
        Outcome {
            elapsed: start.elapsed(),
            readers,
            writer,
        }
    })
}

fn print_summary(options: &Options, outcome: &Outcome<'_>, stats: &snapmap::Stats) {
    let secs = outcome.elapsed.as_secs_f64();
    let finished = || outcome.readers.iter().flatten();
    let reads: u64 = finished().map(|r| r.reads).sum();
    let passes: u64 = finished().map(|r| r.passes).sum();
    let visited: u64 = finished().map(|r| r.entries_visited).sum();
    let checked: u64 = finished().map(|r| r.values_checked).sum();

    println!();
    println!(
        "ran {secs:.2} s with {} readers and 1 writer",
        options.readers
    );
    println!(
        "reads      {} lookups: {}/s in total, {}/s per reader",
        grouped(reads),
        human(reads as f64 / secs),
        human(reads as f64 / secs / options.readers as f64)
    );
    println!(
        "passes     {} full walks ({} entries visited)",
        grouped(passes),
        grouped(visited)
    );
    if let Some(w) = &outcome.writer {
        println!(
            "writes     {} reloads: {} values replaced, {} keys added, {} removed",
            grouped(w.reloads),
            grouped(w.updates),
            grouped(w.added),
            grouped(w.removed)
        );
    }
    println!("map stats  {stats}");
    println!("checks     {} values checked by readers", grouped(checked));
}

/// Prints the violations, if any, and turns them into the exit status.
fn verdict(shared: &Shared, outcome: &Outcome<'_>, end_violations: &Violations<'_>) -> ExitCode {
    let mut failures: Vec<String> = Vec::new();
    for (index, report) in outcome.readers.iter().enumerate() {
        match report {
            Some(report) => failures.extend(report.violations.examples.iter().cloned()),
            None => failures.push(format!("reader-{index} panicked (see above)")),
        }
    }
    match &outcome.writer {
        Some(writer) => failures.extend(writer.violations.examples.iter().cloned()),
        None => failures.push("the writer panicked (see above)".into()),
    }
    failures.extend(end_violations.examples.iter().cloned());

    // Relaxed: every thread has been joined.
    let violations = shared.violations.load(Ordering::Relaxed);
    println!("violations {}", grouped(violations));
    if failures.is_empty() && violations == 0 {
        println!("result     OK");
        return ExitCode::SUCCESS;
    }
    println!("failures (the first distinct ones of each thread):");
    for failure in &failures {
        println!("  {failure}");
    }
    println!("result     FAILED");
    ExitCode::FAILURE
}

fn print_progress(elapsed: Duration, shared: &Shared) {
    // Relaxed: progress counters; a slightly stale sum is fine.
    let reads: u64 = shared
        .readers
        .iter()
        .map(|p| p.reads.load(Ordering::Relaxed))
        .sum();
    let passes: u64 = shared
        .readers
        .iter()
        .map(|p| p.passes.load(Ordering::Relaxed))
        .sum();
    let reloads = shared.writer.reloads.load(Ordering::Relaxed);
    let violations = shared.violations.load(Ordering::Relaxed);
    println!(
        "{:>5.1}s  reads {:>15}  passes {:>7}  reloads {:>7}  violations {}",
        elapsed.as_secs_f64(),
        grouped(reads),
        grouped(passes),
        grouped(reloads),
        violations
    );
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A rate with a unit prefix: `21.3 M`, `512.4 k`.
fn human(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2} G", x / 1e9),
        x if x >= 1e6 => format!("{:.1} M", x / 1e6),
        x if x >= 1e3 => format!("{:.1} k", x / 1e3),
        x => format!("{x:.0} "),
    }
}
