//! A configuration cache reloaded from a file while request handlers read
//! it: snapmap's main job, run on snapmap and on its peers.
//!
//! ```text
//! cargo run --release --example config_cache
//! cargo run --release --example config_cache -- --map snapmap --seconds 10 --keys 1000000
//! cargo run --release --example config_cache -- --help
//! ```
//!
//! # What it simulates
//!
//! A server keeps a table of settings (per-tenant limits and routes, and
//! TLS certificate/key pairs) that every request handler reads and one
//! background task reloads from a configuration file.
//!
//! - **The table** holds `--keys` entries (default 20 000): nine limits in
//!   ten are always present, one in ten is a route that reloads remove and
//!   add back, and 16 certificate/key pairs. Keys and values are `u64`
//!   (a server would intern setting names; the file names them).
//! - **The reloader** (one thread), every `--reload-every` milliseconds
//!   (default 20), changes `--changed-percent` of the settings (default 1 %:
//!   a limit gets a new value, a route is removed or added back), rotates
//!   every certificate pair (a new certificate and its key, written in the
//!   same reload), writes the whole file to a temporary directory, reads
//!   it back, parses it, checks every line's seal, and makes the parsed
//!   content the map's content. The file is removed at the end. A real
//!   server reloads far less often: the example packs many reloads into a
//!   few seconds.
//! - **Readers** (`--readers`, default one per core) play request
//!   handlers: batches of 1 024 lookups of random settings through the
//!   map's read handle, and in each batch 32 certificate checks, each made
//!   twice (see below).
//!
//! Each map (`--map`, default all of them, `--seconds` each, default 2)
//! runs the same scenario through the adapters of the `snapmap-peers`
//! crate (`peers/`, shared with the benchmarks); only the read handle and
//! the reload differ:
//!
//! | `--map` | Read handle (re-taken every 1 024 lookups) | Reload |
//! |---|---|---|
//! | `snapmap` | a reader handle, `map.reader()` (a snapshot, refreshed when the map changed) | `replace_all(parsed content)`: one batch, diffed inside the map |
//! | `arcswap` | `ArcSwap<HashMap>`: the map loaded once per batch | a new `HashMap` built from the parsed content, then `store` |
//! | `rwlock` | `RwLock<HashMap>`: the read lock, per lookup | the diff against the previous content, applied under one write lock |
//! | `dashmap` | the map (shard read locks, per lookup) | the diff, written key by key |
//! | `papaya` | a guard per batch | the diff, written key by key |
//!
//! Every map uses the same hasher (foldhash, fixed seed), so the hasher is
//! not what is compared. The diff of the last three (computed by the
//! reloader against the content it loaded last) is part of their reload
//! time, as `replace_all`'s own diff is part of snapmap's.
//!
//! # What is checked
//!
//! A fast wrong answer must not pass. Every value is sealed: it holds the
//! version (the number of the reload that wrote it) and a checksum of the
//! version and the key it belongs to, so a value read under the wrong key,
//! half written or freed fails the seal. The run fails (`result FAILED`,
//! exit status 1) on any of:
//!
//! - a broken seal, in the map or in the file read back;
//! - a limit (never removed) missing from a lookup;
//! - a setting's version going backwards, as one reader sees it through
//!   its read handle;
//! - a version newer than the newest reload started when the reader looked;
//! - **a torn certificate pair through a consistent view**: the certificate
//!   and its key, read from one view (a snapmap reader handle's snapshot,
//!   one `ArcSwap` load, one read-lock hold), with different versions;
//! - at the end, with every thread stopped: the map's content (every key,
//!   its length, and a walk) not equal to the last reload's.
//!
//! The same certificate check through two **plain lookups** (`map.get`,
//! one `ArcSwap` load or read lock each, dashmap's `get`, papaya's
//! `pin().get`) is counted, not failed: a reload can land between the two
//! lookups (every map), or half of it can be visible (dashmap and papaya
//! write key by key), and the handler then pairs a new certificate with an
//! old key. That count is what the consistent path is for.
//!
//! # What the numbers mean
//!
//! The table at the end has one row per map:
//!
//! - **reads/s**: lookups by all readers (hot lookups and the certificate
//!   checks' lookups) per second of wall time, and per reader. On a machine
//!   with fewer cores than threads, readers share cores with the reloader.
//! - **reload p50/p99/max**: the time to apply one reload to the map (after
//!   the file was read and parsed; that part is the same for every map and
//!   is reported beside), from an HDR histogram of every reload of the run.
//! - **heap**: live heap bytes the map holds (counted by the
//!   `snapmap-counting-alloc` global allocator): after the first load, and
//!   at the end of the run once the threads are gone (the map and, for
//!   snapmap, its cached snapshot and any memory retired and not yet
//!   freed).
//! - **torn pairs**: certificate checks that saw a new certificate with an
//!   old key (or the reverse), out of all checks, through the consistent
//!   view (always 0, or the run fails; `-` where the map has none) and
//!   through plain lookups (may be above 0).
//!
//! These numbers describe one run on one machine, not a benchmark (see
//! `BENCHMARKS.md` for those): a loaded machine changes them a lot.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use hdrhistogram::Histogram;
use snapmap_counting_alloc::{CountingAlloc, counting, totals};
use snapmap_peers::{BATCH, BenchMap, Cow, Dash, Fast, Locked, Ops, Papaya, SnapReader, fold};

/// Heap bytes are counted by this allocator (it forwards to `System`).
#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Certificate/key pairs in the table, all rotated by every reload.
const PAIRS: usize = 16;
/// One lookup in this many is a certificate check (four lookups).
const PAIR_CHECK_EVERY: usize = 32;
/// One setting in this many is a route (may be absent); the rest are
/// limits (always present).
const ROUTE_EVERY: usize = 10;
/// Distinct violations described per thread; all are counted.
const EXAMPLES_KEPT: usize = 5;

/// The content of one reload: key -> sealed value.
type Content = HashMap<u64, u64, Fast>;

// ----- Options ----------------------------------------------------------------

/// The maps `--map` accepts, in the order a default run takes them.
const MAP_NAMES: [&str; 5] = ["snapmap", "arcswap", "rwlock", "dashmap", "papaya"];

/// The command line.
struct Options {
    maps: Vec<&'static str>,
    keys: usize,
    readers: usize,
    seconds: f64,
    reload_every: Duration,
    changed_percent: f64,
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
Simulates a server's configuration table, reloaded from a file while reader
threads look it up, on snapmap and on its peers, and compares them. Every
value read is checked; a wrong one, or a certificate/key pair torn through a
consistent view, makes the run fail.

Usage: cargo run --release --example config_cache [-- OPTIONS]

Options:
  --map LIST            maps to run, comma-separated, or `all` (default):
                        {}
  --keys N              entries in the table (default 20000)
  --readers N           reader threads (default: available parallelism, here {})
  --seconds S           how long to run each map (default 2; decimals allowed)
  --reload-every MS     milliseconds between reload starts (default 20)
  --changed-percent P   settings each reload changes (default 1; decimals allowed)
  -h, --help            print this help

Exit status: 0 if every check passed, 1 if any failed, 2 for bad options.
",
        MAP_NAMES.join(", "),
        default_readers()
    )
}

/// Parses the arguments after the program name (`--flag N` or
/// `--flag=N`) with `lexopt`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;

    let mut options = Options {
        maps: MAP_NAMES.to_vec(),
        keys: 20_000,
        readers: default_readers(),
        seconds: 2.0,
        reload_every: Duration::from_millis(20),
        changed_percent: 1.0,
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Long("map") => options.maps = map_list(&mut parser)?,
            Long("keys") => {
                options.keys = whole(&mut parser, "--keys", 1_000, 10_000_000)? as usize
            }
            Long("readers") => {
                options.readers = whole(&mut parser, "--readers", 1, 1_024)? as usize
            }
            Long("seconds") => options.seconds = decimal(&mut parser, "--seconds", 0.1, 86_400.0)?,
            Long("reload-every") => {
                let ms = whole(&mut parser, "--reload-every", 1, 60_000)?;
                options.reload_every = Duration::from_millis(ms);
            }
            Long("changed-percent") => {
                options.changed_percent = decimal(&mut parser, "--changed-percent", 0.001, 100.0)?
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Command::Run(options))
}

/// The value of `--map`: `all`, or names from [`MAP_NAMES`] separated by
/// commas (each run once, in the order given).
fn map_list(parser: &mut lexopt::Parser) -> Result<Vec<&'static str>, lexopt::Error> {
    let text = parser.value()?;
    let text = text.to_string_lossy();
    if text == "all" {
        return Ok(MAP_NAMES.to_vec());
    }
    let mut maps = Vec::new();
    for name in text.split(',').map(str::trim) {
        let Some(&known) = MAP_NAMES.iter().find(|&&known| known == name) else {
            return Err(format!(
                "`--map` expects `all` or some of {} (comma-separated), got `{name}`",
                MAP_NAMES.join(", ")
            )
            .into());
        };
        if !maps.contains(&known) {
            maps.push(known);
        }
    }
    Ok(maps)
}

/// The value of `flag`: a whole number in `min..=max`.
fn whole(
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

/// The value of `flag`: a number (decimals allowed) in `min..=max`.
fn decimal(
    parser: &mut lexopt::Parser,
    flag: &str,
    min: f64,
    max: f64,
) -> Result<f64, lexopt::Error> {
    let text = parser.value()?;
    let text = text.to_string_lossy();
    let number: f64 = text
        .parse()
        .map_err(|_| format!("`{flag}` expects a number, got `{text}`"))?;
    if (min..=max).contains(&number) {
        Ok(number)
    } else {
        Err(format!("`{flag}` must be between {min} and {max}, got {text}").into())
    }
}

// ----- Keys, sealed values and the file -----------------------------------------

/// What an entry of the table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A per-tenant limit: always present.
    Limit,
    /// A route: reloads remove it and add it back.
    Route,
    /// A certificate (of pair `index`).
    Cert,
    /// The private key of certificate `index`.
    CertKey,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Limit, Kind::Route, Kind::Cert, Kind::CertKey];

    /// How the file names it.
    fn word(self) -> &'static str {
        match self {
            Kind::Limit => "limit",
            Kind::Route => "route",
            Kind::Cert => "cert",
            Kind::CertKey => "key",
        }
    }
}

/// The map key of entry `index` of `kind`: distinct for every (kind,
/// index), spread over the `u64`s (SplitMix64's finaliser is a bijection).
fn key_of(kind: Kind, index: usize) -> u64 {
    mix(((kind as u64) << 40) | index as u64)
}

/// The kind of setting `index` (settings are the entries that are not
/// certificate pairs).
fn setting_kind(index: usize) -> Kind {
    if index % ROUTE_EVERY == ROUTE_EVERY - 1 {
        Kind::Route
    } else {
        Kind::Limit
    }
}

/// SplitMix64's finaliser.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The checksum binding a version to its key.
fn seal(key: u64, version: u32) -> u32 {
    (mix(key ^ u64::from(version).rotate_left(17) ^ 0x5EA1_ED0F_C0FF_EE00) >> 32) as u32
}

/// The value stored under `key` by reload `version`: the version in the
/// high half, the seal in the low half.
fn sealed(key: u64, version: u32) -> u64 {
    (u64::from(version) << 32) | u64::from(seal(key, version))
}

/// The version in `value` if its seal matches `key`, else `None`.
fn unseal(key: u64, value: u64) -> Option<u32> {
    let version = (value >> 32) as u32;
    (value as u32 == seal(key, version)).then_some(version)
}

/// `SplitMix64`: a small, fast generator for the readers and the reloader.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// The reloader's source of truth, from which it writes the file: the
/// version of every setting (`None`: a route that is absent) and of every
/// certificate pair.
struct Source {
    settings: Vec<Option<u32>>,
    pairs: Vec<u32>,
    rng: Rng,
}

impl Source {
    /// The first configuration: every entry present, at version 1.
    fn new(keys: usize) -> Self {
        Source {
            settings: vec![Some(1); keys - 2 * PAIRS],
            pairs: vec![1; PAIRS],
            rng: Rng(0xC0F1_6000),
        }
    }

    /// Reload `version`'s edit: `changed` random settings change (a limit
    /// gets a new value, a route is removed or added back) and every
    /// certificate pair is rotated.
    fn edit(&mut self, version: u32, changed: usize) {
        for _ in 0..changed {
            let index = self.rng.below(self.settings.len());
            let setting = &mut self.settings[index];
            *setting = match (setting_kind(index), *setting) {
                (Kind::Route, Some(_)) => None,
                _ => Some(version),
            };
        }
        self.pairs.fill(version);
    }

    /// Writes the whole configuration to `path`, one entry per line:
    /// `<kind>.<index> <version> <seal in hex>`.
    fn write_file(&self, path: &Path) -> std::io::Result<()> {
        let mut file = BufWriter::new(fs::File::create(path)?);
        let settings = self.settings.iter().enumerate();
        for (index, version) in settings.filter_map(|(i, v)| Some((i, (*v)?))) {
            let kind = setting_kind(index);
            let seal = seal(key_of(kind, index), version);
            writeln!(file, "{}.{index} {version} {seal:08x}", kind.word())?;
        }
        for (index, &version) in self.pairs.iter().enumerate() {
            for kind in [Kind::Cert, Kind::CertKey] {
                let seal = seal(key_of(kind, index), version);
                writeln!(file, "{}.{index} {version} {seal:08x}", kind.word())?;
            }
        }
        file.into_inner().map_err(|e| e.into_error())?.sync_data()
    }
}

/// Reads and parses a configuration file: the content a reload makes the
/// map's. Any malformed line, or a line whose seal does not match, is an
/// error.
fn read_file(path: &Path) -> Result<Content, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut content = Content::with_capacity_and_hasher(text.len() / 16, Fast::default());
    for (number, line) in text.lines().enumerate() {
        let bad = |what: &str| format!("{} line {}: {what}: `{line}`", path.display(), number + 1);
        let mut fields = line.split(' ');
        let (Some(name), Some(version), Some(seal_text), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected `<kind>.<index> <version> <seal>`"));
        };
        let (word, index) = name.split_once('.').ok_or_else(|| bad("no index"))?;
        let kind = Kind::ALL
            .into_iter()
            .find(|kind| kind.word() == word)
            .ok_or_else(|| bad("unknown kind"))?;
        let index: usize = index.parse().map_err(|_| bad("bad index"))?;
        let version: u32 = version.parse().map_err(|_| bad("bad version"))?;
        let file_seal = u32::from_str_radix(seal_text, 16).map_err(|_| bad("bad seal"))?;
        let key = key_of(kind, index);
        if file_seal != seal(key, version) {
            return Err(bad("broken seal"));
        }
        if content.insert(key, sealed(key, version)).is_some() {
            return Err(bad("entry given twice"));
        }
    }
    Ok(content)
}

/// The temporary configuration file, removed when dropped (on every path
/// out of the run).
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("snapmap-config-cache-{}-{nanos}.conf", std::process::id());
        ConfigFile(env::temp_dir().join(name))
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

// ----- The maps -------------------------------------------------------------------

/// What the scenario needs of a map beyond its adapter ([`BenchMap`] builds
/// it and gives the per-batch read handle; [`Ops`] reads through it).
trait ConfigMap: BenchMap {
    /// Its `--map` name.
    const FLAG: &'static str;

    /// Makes `next` the map's content; it holds `previous` (the content of
    /// the last reload) and only the reloader writes it.
    fn reload(&self, next: &Content, previous: &Content);

    /// Two keys read from one consistent view held by `handle`, or `None`
    /// if the map has no such view.
    fn consistent_pair(
        handle: &Self::Handle<'_>,
        a: u64,
        b: u64,
    ) -> Option<(Option<u64>, Option<u64>)>;

    /// One lookup on its own, sharing no view with any other lookup.
    fn plain_get(&self, key: u64) -> Option<u64>;

    /// The number of entries.
    fn len(&self) -> usize;

    /// The map's own counters, if it has any (snapmap's `stats()`).
    fn map_stats(&self) -> Option<String> {
        None
    }
}

/// The changes that make `previous` into `next`: `(key, Some(value))` to
/// write, `(key, None)` to remove.
fn diff(previous: &Content, next: &Content) -> Vec<(u64, Option<u64>)> {
    let written = next
        .iter()
        .filter(|&(key, value)| previous.get(key) != Some(value))
        .map(|(&key, &value)| (key, Some(value)));
    let removed = previous
        .keys()
        .filter(|key| !next.contains_key(key))
        .map(|&key| (key, None));
    written.chain(removed).collect()
}

/// Writes `changes` one by one through `map`'s handle (re-taken every
/// [`BATCH`] writes, as its readers do).
fn write_one_by_one<M: BenchMap>(map: &M, changes: &[(u64, Option<u64>)]) {
    for chunk in changes.chunks(BATCH) {
        let handle = map.handle();
        for &(key, value) in chunk {
            match value {
                Some(value) => handle.insert(key, value),
                None => {
                    handle.remove(key);
                }
            }
        }
    }
}

impl ConfigMap for SnapReader<Fast> {
    const FLAG: &'static str = "snapmap";

    fn reload(&self, next: &Content, _previous: &Content) {
        self.0
            .replace_all(next.iter().map(|(&key, &value)| (key, value)));
    }

    fn consistent_pair(
        handle: &Self::Handle<'_>,
        a: u64,
        b: u64,
    ) -> Option<(Option<u64>, Option<u64>)> {
        Some(handle.get_pair(a, b))
    }

    fn plain_get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn map_stats(&self) -> Option<String> {
        Some(self.0.stats().to_string())
    }
}

impl ConfigMap for Cow<Fast> {
    const FLAG: &'static str = "arcswap";

    fn reload(&self, next: &Content, _previous: &Content) {
        let map = next.iter().map(|(&key, &value)| (key, value)).collect();
        self.0.store(Arc::new(map));
    }

    fn consistent_pair(
        handle: &Self::Handle<'_>,
        a: u64,
        b: u64,
    ) -> Option<(Option<u64>, Option<u64>)> {
        Some((handle.map.get(&a).copied(), handle.map.get(&b).copied()))
    }

    fn plain_get(&self, key: u64) -> Option<u64> {
        self.0.load().get(&key).copied()
    }

    fn len(&self) -> usize {
        self.0.load().len()
    }
}

impl ConfigMap for Locked<Fast> {
    const FLAG: &'static str = "rwlock";

    fn reload(&self, next: &Content, previous: &Content) {
        let changes = diff(previous, next);
        let mut map = self.0.write();
        for (key, value) in changes {
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
    }

    fn consistent_pair(
        handle: &Self::Handle<'_>,
        a: u64,
        b: u64,
    ) -> Option<(Option<u64>, Option<u64>)> {
        let map = handle.read();
        Some((map.get(&a).copied(), map.get(&b).copied()))
    }

    fn plain_get(&self, key: u64) -> Option<u64> {
        self.0.read().get(&key).copied()
    }

    fn len(&self) -> usize {
        self.0.read().len()
    }
}

impl ConfigMap for Dash<Fast> {
    const FLAG: &'static str = "dashmap";

    fn reload(&self, next: &Content, previous: &Content) {
        write_one_by_one(self, &diff(previous, next));
    }

    fn consistent_pair(_: &Self::Handle<'_>, _: u64, _: u64) -> Option<(Option<u64>, Option<u64>)> {
        None
    }

    fn plain_get(&self, key: u64) -> Option<u64> {
        self.0.get(&key).map(|value| *value)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

impl ConfigMap for Papaya<Fast> {
    const FLAG: &'static str = "papaya";

    fn reload(&self, next: &Content, previous: &Content) {
        write_one_by_one(self, &diff(previous, next));
    }

    fn consistent_pair(_: &Self::Handle<'_>, _: u64, _: u64) -> Option<(Option<u64>, Option<u64>)> {
        None
    }

    fn plain_get(&self, key: u64) -> Option<u64> {
        self.0.pin().get(&key).copied()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

// ----- What the threads share -------------------------------------------------

struct Shared {
    stop: AtomicBool,
    /// The number of the newest reload the reloader has started.
    issued: AtomicU64,
    /// Violations seen so far by every thread.
    violations: AtomicU64,
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
        // Relaxed: a count read after the threads are joined; it orders
        // nothing.
        self.total.fetch_add(1, Ordering::Relaxed);
        if self.examples.len() < EXAMPLES_KEPT {
            let description = describe();
            if !self.examples.contains(&description) {
                self.examples.push(description);
            }
        }
    }
}

/// Certificate checks made one way, and how many saw a torn pair.
#[derive(Clone, Copy, Default)]
struct PairChecks {
    checks: u64,
    torn: u64,
}

impl PairChecks {
    fn add(&mut self, other: PairChecks) {
        self.checks += other.checks;
        self.torn += other.torn;
    }
}

// ----- Readers ----------------------------------------------------------------

struct Reader<'a, M> {
    map: &'a M,
    shared: &'a Shared,
    settings: usize,
    rng: Rng,
    /// The newest version this reader has seen for each setting through
    /// its read handle (0: none yet; versions start at 1).
    newest_seen: Vec<u32>,
    /// The newest version seen in the current batch.
    newest_in_batch: u32,
    report: ReaderReport<'a>,
}

struct ReaderReport<'a> {
    reads: u64,
    consistent: PairChecks,
    plain: PairChecks,
    violations: Violations<'a>,
}

impl<'a, M: ConfigMap> Reader<'a, M> {
    fn new(map: &'a M, shared: &'a Shared, settings: usize, index: usize) -> Self {
        Reader {
            map,
            shared,
            settings,
            rng: Rng(0xC0DE_0000 + index as u64),
            newest_seen: vec![0; settings],
            newest_in_batch: 0,
            report: ReaderReport {
                reads: 0,
                consistent: PairChecks::default(),
                plain: PairChecks::default(),
                violations: Violations::new(shared),
            },
        }
    }

    fn run(mut self) -> ReaderReport<'a> {
        // Relaxed: a stop flag; nothing is read because of it.
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.batch();
        }
        self.report
    }

    /// `BATCH` lookups through one read handle, every
    /// `PAIR_CHECK_EVERY`-th of them a certificate check.
    fn batch(&mut self) {
        let map = self.map;
        let handle = map.handle();
        self.newest_in_batch = 0;
        for i in 0..BATCH {
            if i % PAIR_CHECK_EVERY == 0 {
                self.check_pair(&handle);
            } else {
                self.lookup(&handle);
            }
        }
        drop(handle);
        // Relaxed: `issued` is stored before the reload writes the map, and
        // each map's own publication (Release on write, Acquire on read)
        // makes that store happen before the lookups that saw the reload's
        // values; coherence then forbids an older value here.
        let issued = self.shared.issued.load(Ordering::Relaxed);
        if u64::from(self.newest_in_batch) > issued {
            let newest = self.newest_in_batch;
            self.report.violations.record(|| {
                format!(
                    "{}: read version {newest}, newer than reload {issued}",
                    M::FLAG
                )
            });
        }
    }

    /// One lookup of a random setting through the read handle.
    fn lookup(&mut self, handle: &M::Handle<'_>) {
        let index = self.rng.below(self.settings);
        let kind = setting_kind(index);
        let key = key_of(kind, index);
        self.report.reads += 1;
        match handle.get(key) {
            Some(value) => {
                let Some(version) = self.unseal(key, value) else {
                    return;
                };
                let newest = &mut self.newest_seen[index];
                if version < *newest {
                    let newest = *newest;
                    self.report.violations.record(|| {
                        format!(
                            "{}: {} {index} went back from version {newest} to {version}",
                            M::FLAG,
                            kind.word()
                        )
                    });
                } else {
                    *newest = version;
                }
            }
            None if kind == Kind::Limit => {
                self.report
                    .violations
                    .record(|| format!("{}: limit {index} missing", M::FLAG));
            }
            None => {}
        }
    }

    /// The certificate check, twice: through one consistent view (if the
    /// map has one; a torn pair is a violation), then through two plain
    /// lookups (a torn pair is counted).
    fn check_pair(&mut self, handle: &M::Handle<'_>) {
        let pair = self.rng.below(PAIRS);
        let (cert, key) = (key_of(Kind::Cert, pair), key_of(Kind::CertKey, pair));
        if let Some(values) = M::consistent_pair(handle, cert, key) {
            self.report.reads += 2;
            self.report.consistent.checks += 1;
            if self.pair_is_torn(pair, cert, key, values) {
                self.report.consistent.torn += 1;
                self.report.violations.record(|| {
                    format!(
                        "{}: certificate pair {pair} torn through a consistent view: {values:x?}",
                        M::FLAG
                    )
                });
            }
        }
        let values = (self.map.plain_get(cert), self.map.plain_get(key));
        self.report.reads += 2;
        self.report.plain.checks += 1;
        if self.pair_is_torn(pair, cert, key, values) {
            self.report.plain.torn += 1;
        }
    }

    /// Whether a certificate and its key have different versions. Both
    /// must be present and sealed (a violation otherwise).
    fn pair_is_torn(
        &mut self,
        pair: usize,
        cert: u64,
        key: u64,
        values: (Option<u64>, Option<u64>),
    ) -> bool {
        let (Some(cert_value), Some(key_value)) = values else {
            self.report
                .violations
                .record(|| format!("{}: certificate pair {pair} missing: {values:x?}", M::FLAG));
            return false;
        };
        match (self.unseal(cert, cert_value), self.unseal(key, key_value)) {
            (Some(cert_version), Some(key_version)) => cert_version != key_version,
            _ => false,
        }
    }

    /// The version in `value`, or `None` (and a violation) if its seal does
    /// not match `key`.
    fn unseal(&mut self, key: u64, value: u64) -> Option<u32> {
        match unseal(key, value) {
            Some(version) => {
                self.newest_in_batch = self.newest_in_batch.max(version);
                Some(version)
            }
            None => {
                self.report.violations.record(|| {
                    format!(
                        "{}: broken seal: key {key:#018x} holds {value:#018x}",
                        M::FLAG
                    )
                });
                None
            }
        }
    }
}

// ----- The reloader -----------------------------------------------------------

struct ReloaderReport<'a> {
    reloads: u64,
    /// Microseconds to apply a reload to the map.
    apply: Histogram<u64>,
    /// Microseconds to write, read and parse the file.
    file: Histogram<u64>,
    /// The content of the last reload applied.
    last: Content,
    violations: Violations<'a>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Reloads `map` from `file` every `options.reload_every` until told to
/// stop; `source` and `first` are the configuration the map holds.
fn reloader<'a, M: ConfigMap>(
    map: &M,
    shared: &'a Shared,
    options: &Options,
    file: &ConfigFile,
    mut source: Source,
    first: Content,
) -> ReloaderReport<'a> {
    let changed =
        ((source.settings.len() as f64 * options.changed_percent / 100.0).round() as usize).max(1);
    let mut report = ReloaderReport {
        reloads: 0,
        apply: histogram(),
        file: histogram(),
        last: first,
        violations: Violations::new(shared),
    };
    let mut next_start = Instant::now();
    // Version 1 is the first load.
    for version in 2u32.. {
        next_start += options.reload_every;
        // Relaxed: a stop flag; nothing is read because of it.
        while !shared.stop.load(Ordering::Relaxed) && Instant::now() < next_start {
            thread::sleep(
                next_start
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(5)),
            );
        }
        // Relaxed: as above.
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        // A reload that overran its slot: the next one starts now, not in
        // a burst to catch up.
        next_start = next_start.max(Instant::now());

        source.edit(version, changed);
        let started = Instant::now();
        if let Err(error) = source.write_file(&file.0) {
            report
                .violations
                .record(|| format!("writing {}: {error}", file.0.display()));
            break;
        }
        let next = match read_file(&file.0) {
            Ok(next) => next,
            Err(error) => {
                report.violations.record(|| error);
                break;
            }
        };
        report.file.saturating_record(micros(started.elapsed()));

        // Relaxed: the readers' check needs this store to be before the
        // map's writes, which it is in program order; the map's publication
        // carries it to them (see `Reader::batch`).
        shared.issued.store(u64::from(version), Ordering::Relaxed);
        let started = Instant::now();
        map.reload(&next, &report.last);
        report.apply.saturating_record(micros(started.elapsed()));
        report.last = next;
        report.reloads += 1;
    }
    report
}

// ----- One map's run ------------------------------------------------------------

/// What one map's run gave.
struct MapReport {
    flag: &'static str,
    seconds: f64,
    reads: u64,
    reloads: u64,
    apply: Latency,
    file: Latency,
    heap_loaded: i64,
    heap_end: i64,
    consistent: Option<PairChecks>,
    plain: PairChecks,
    stats: Option<String>,
    failures: Vec<String>,
}

/// A latency histogram's summary, in microseconds.
#[derive(Clone, Copy, Default)]
struct Latency {
    p50: u64,
    p99: u64,
    max: u64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        Latency {
            p50: histogram.value_at_quantile(0.5),
            p99: histogram.value_at_quantile(0.99),
            max: histogram.max(),
        }
    }
}

/// Live heap bytes counted since counting was turned on (compare two
/// readings).
fn live() -> i64 {
    totals().live_delta()
}

/// Runs the epoch garbage left behind now (for snapmap, whose replaced
/// views and values are freed through crossbeam's epoch), so that the heap
/// readings count what the map holds.
fn settle_epoch() {
    for i in 0..10_000 {
        crossbeam_epoch::pin().flush();
        if i >= 64 && snapmap::retired_bytes().total() == 0 {
            break;
        }
    }
}

fn run_map<M: ConfigMap>(options: &Options, file: &ConfigFile) -> MapReport {
    let base = live();
    let source = Source::new(options.keys);
    let mut failures = Vec::new();
    let first = match source
        .write_file(&file.0)
        .map_err(|e| e.to_string())
        .and_then(|()| read_file(&file.0))
    {
        Ok(first) => first,
        Err(error) => {
            failures.push(format!("{}: the first load: {error}", M::FLAG));
            Content::default()
        }
    };
    let content_bytes = live() - base;

    let map = M::new();
    map.reload(&first, &Content::default());
    settle_epoch();
    let heap_loaded = live() - base - content_bytes;

    let shared = Shared {
        stop: AtomicBool::new(false),
        issued: AtomicU64::new(1),
        violations: AtomicU64::new(0),
    };
    let settings = source.settings.len();
    let started = Instant::now();
    let (readers, reloader) = thread::scope(|scope| {
        let (map, shared) = (&map, &shared);
        let readers: Vec<_> = (0..options.readers)
            .map(|index| {
                thread::Builder::new()
                    .name(format!("reader-{index}"))
                    .spawn_scoped(scope, move || {
                        Reader::new(map, shared, settings, index).run()
                    })
                    .expect("spawn a reader")
            })
            .collect();
        let reloader = thread::Builder::new()
            .name("reloader".into())
            .spawn_scoped(scope, move || {
                reloader(map, shared, options, file, source, first)
            })
            .expect("spawn the reloader");
        thread::sleep(Duration::from_secs_f64(options.seconds));
        // Relaxed: a stop flag; the joins order everything after it.
        shared.stop.store(true, Ordering::Relaxed);
        let readers: Vec<_> = readers.into_iter().map(|h| h.join().ok()).collect();
        (readers, reloader.join().ok())
    });
    let seconds = started.elapsed().as_secs_f64();

    let mut reads = 0;
    let mut consistent = PairChecks::default();
    let mut plain = PairChecks::default();
    for (index, reader) in readers.into_iter().enumerate() {
        match reader {
            Some(reader) => {
                reads += reader.reads;
                consistent.add(reader.consistent);
                plain.add(reader.plain);
                failures.extend(reader.violations.examples);
            }
            None => failures.push(format!("{}: reader-{index} panicked (see above)", M::FLAG)),
        }
    }
    let (reloads, apply, file_times) = match reloader {
        Some(report) => {
            failures.extend(report.violations.examples);
            final_check(&map, &report.last, &mut failures);
            (
                report.reloads,
                Latency::of(&report.apply),
                Latency::of(&report.file),
            )
        }
        None => {
            failures.push(format!("{}: the reloader panicked (see above)", M::FLAG));
            (0, Latency::default(), Latency::default())
        }
    };
    // Relaxed: every thread has been joined.
    if shared.violations.load(Ordering::Relaxed) > 0 && failures.is_empty() {
        failures.push(format!("{}: violations counted but not described", M::FLAG));
    }
    // Everything the threads allocated is gone but `failures` (a few
    // strings when something failed).
    settle_epoch();
    let heap_end = live() - base;
    let stats = map.map_stats();
    drop(map);
    settle_epoch();

    MapReport {
        flag: M::FLAG,
        seconds,
        reads,
        reloads,
        apply,
        file: file_times,
        heap_loaded,
        heap_end,
        consistent: (consistent.checks > 0).then_some(consistent),
        plain,
        stats,
        failures,
    }
}

/// With every thread stopped, the map must hold exactly `last`: every key
/// with its value, no other (its length and a walk agree).
fn final_check<M: ConfigMap>(map: &M, last: &Content, failures: &mut Vec<String>) {
    let mut wrong = 0usize;
    for (&key, &value) in last {
        let found = map.plain_get(key);
        if found != Some(value) {
            wrong += 1;
            if wrong <= EXAMPLES_KEPT {
                failures.push(format!(
                    "{}: end: key {key:#018x} holds {found:x?}, the last reload wrote {value:#018x}",
                    M::FLAG
                ));
            }
        }
    }
    let expected_sum = last
        .iter()
        .fold(0, |sum, (&key, &value)| fold(sum, key, value));
    let walked_sum = map.handle().iter_sum();
    if map.len() != last.len() || walked_sum != expected_sum {
        failures.push(format!(
            "{}: end: {} entries (walk sum {walked_sum:#x}), the last reload has {} (sum {expected_sum:#x})",
            M::FLAG,
            map.len(),
            last.len()
        ));
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
    // Process-wide heap counting, on for the whole run (see `live`).
    let _counting = counting();
    let file = ConfigFile::new();
    let settings = options.keys - 2 * PAIRS;
    let changed = ((settings as f64 * options.changed_percent / 100.0).round() as usize).max(1);
    println!(
        "config_cache: {} keys ({} limits and routes, {PAIRS} certificate pairs), {} readers, \
         1 reloader every {} ms changing {} settings ({} %) and every pair; {} s per map",
        grouped(options.keys as u64),
        grouped(settings as u64),
        options.readers,
        options.reload_every.as_millis(),
        grouped(changed as u64),
        options.changed_percent,
        options.seconds
    );
    println!("config file: {}", file.0.display());

    let mut reports = Vec::new();
    for &flag in &options.maps {
        let report = match flag {
            "snapmap" => run_map::<SnapReader<Fast>>(&options, &file),
            "arcswap" => run_map::<Cow<Fast>>(&options, &file),
            "rwlock" => run_map::<Locked<Fast>>(&options, &file),
            "dashmap" => run_map::<Dash<Fast>>(&options, &file),
            "papaya" => run_map::<Papaya<Fast>>(&options, &file),
            _ => unreachable!("map names are checked by parse_args"),
        };
        print_run(&report);
        reports.push(report);
    }
    drop(file);

    print_table(&options, &reports);
    let failures: Vec<&String> = reports.iter().flat_map(|r| &r.failures).collect();
    if failures.is_empty() {
        println!("result OK");
        ExitCode::SUCCESS
    } else {
        println!("failures (the first distinct ones of each thread):");
        for failure in failures {
            println!("  {failure}");
        }
        println!("result FAILED");
        ExitCode::FAILURE
    }
}

// ----- Output -------------------------------------------------------------------

/// One line per map as its run ends.
fn print_run(report: &MapReport) {
    println!(
        "{:<8} {:.2} s: {} reads, {} reloads (file written, read and parsed in {} p50, {} max), {} failures",
        report.flag,
        report.seconds,
        grouped(report.reads),
        grouped(report.reloads),
        duration(report.file.p50),
        duration(report.file.max),
        report.failures.len()
    );
    if let Some(stats) = &report.stats {
        println!("         map stats: {stats}");
    }
}

/// The comparison table.
fn print_table(options: &Options, reports: &[MapReport]) {
    let rows: Vec<[String; 10]> = reports
        .iter()
        .map(|r| {
            let per_second = r.reads as f64 / r.seconds;
            let torn = |checks: &PairChecks| {
                format!("{} / {}", grouped(checks.torn), grouped(checks.checks))
            };
            [
                r.flag.to_string(),
                human(per_second),
                human(per_second / options.readers as f64),
                duration(r.apply.p50),
                duration(r.apply.p99),
                duration(r.apply.max),
                bytes(r.heap_loaded),
                bytes(r.heap_end),
                r.consistent.as_ref().map_or_else(|| "-".into(), torn),
                torn(&r.plain),
            ]
        })
        .collect();
    let header = [
        "map",
        "reads/s",
        "per reader",
        "reload p50",
        "p99",
        "max",
        "heap loaded",
        "heap end",
        "torn: consistent",
        "torn: plain gets",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(out, "{cell:<width$}");
            } else {
                let _ = write!(out, "  {cell:>width$}");
            }
        }
        println!("{}", out.trim_end());
    };
    println!();
    println!(
        "{} keys, {} readers, a reload every {} ms changing {} % of the settings, {} s per map:",
        grouped(options.keys as u64),
        options.readers,
        options.reload_every.as_millis(),
        options.changed_percent,
        options.seconds
    );
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    println!();
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

/// Microseconds as `850 us`, `12.3 ms`, `1.20 s`.
fn duration(us: u64) -> String {
    match us {
        us if us >= 1_000_000 => format!("{:.2} s", us as f64 / 1e6),
        us if us >= 1_000 => format!("{:.1} ms", us as f64 / 1e3),
        us => format!("{us} us"),
    }
}

/// Bytes as `12.3 MiB` (negative readings, possible when memory allocated
/// before a reading is freed after it, show as they are).
fn bytes(n: i64) -> String {
    let x = n as f64;
    match x.abs() {
        a if a >= (1 << 20) as f64 => format!("{:.1} MiB", x / (1 << 20) as f64),
        a if a >= 1024.0 => format!("{:.1} KiB", x / 1024.0),
        _ => format!("{n} B"),
    }
}
