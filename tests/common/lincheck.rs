//! A linearizability checker for the recorded history of one key.
//!
//! # What is checked
//!
//! A concurrent history (every operation with its call, its return and
//! what it returned) is *linearizable* if each operation can be given one
//! instant between its call and its return such that, taken in the order
//! of those instants, the operations are a legal sequential run of the
//! object: each returns what the sequential specification says. Operations
//! that did not overlap keep their real-time order; overlapping ones may
//! be reordered.
//!
//! Linearizability is *local* (Herlihy & Wing 1990, "Linearizability: a
//! correctness condition for concurrent objects"): a history of several
//! objects is linearizable if and only if each object's sub-history is. A
//! map's single-key operations touch one key each, so the map is checked
//! one key at a time, and each key is a small object: a register that may
//! be empty, `Option<u64>`, with the operations of [`Call`]. Checking per
//! key keeps histories small, and the search below is exponential in the
//! worst case.
//!
//! # The search
//!
//! Wing & Gong (1993, "Testing and verifying concurrent objects") search
//! depth-first for a linearization: at each step, any operation that is
//! *minimal* (called before every not-yet-linearized operation returned)
//! may go next; apply it to the model if its recorded response is the one
//! the model gives, recurse, and backtrack when stuck.
//!
//! Lowe (2017, "Testing for linearizability") reorganises this as
//! *just-in-time linearization* over the list of call and return events in
//! time order, and adds the cache that makes it practical; porcupine
//! (Anish Athalye's checker in Go) implements the same algorithm, which
//! this module follows:
//!
//! - Walk the event list from its head. At a **call** event, try to
//!   linearize that operation now: if the model agrees with its response
//!   and the pair (set of linearized operations, model state) has not been
//!   seen before, push it on the stack, take its call and return events
//!   out of the list, and restart from the head. Otherwise move on to the
//!   next event.
//! - At a **return** event, the operation it ends should have been
//!   linearized before this point and could not be: pop the last
//!   linearized operation, put its events back, restore the state, and
//!   continue after its call event (trying the next candidate instead). An
//!   empty stack means every choice has been tried: not linearizable.
//! - An empty list means every operation is linearized: linearizable.
//!
//! The cache is sound because what remains to be done depends only on
//! which operations are linearized and on the model state, not on the
//! order that produced them: a pair seen before has already been explored
//! (and failed, or the search would have ended). The set is a bitset over
//! the history's operations. Events are unlinked and relinked in place, as
//! in Knuth's dancing links (relinking in the reverse order of unlinking).
//!
//! # Reading a failure
//!
//! The search remembers the longest prefix it linearized. When it fails,
//! no operation that could come next after that prefix is accepted by the
//! model (had one been, the prefix would be longer), so [`Violation`]
//! prints the prefix, the state it leaves, and each candidate with the
//! response the model would have given: the stale read, the second
//! successful compare-and-swap.
//!
//! # Limits
//!
//! The search counts its steps and gives up with [`Verdict::Undecided`]
//! past a bound rather than run for ever: callers keep histories small
//! (a few hundred operations, a few threads) and assert the bound was not
//! reached. Every operation must have returned; the checker has no notion
//! of an operation still pending.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The state of one key: its value, or absent.
pub type State = Option<u64>;

/// An operation on one key, with its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `get`: returns the value.
    Get,
    /// `insert(value)`: stores it, returns the previous value.
    Insert(u64),
    /// `remove`: returns the previous value.
    Remove,
    /// `compare_and_swap(expected, new)`: stores `new` if the value is
    /// `expected`; returns whether it did.
    CompareAndSwap { expected: u64, new: u64 },
    /// `compare_and_delete(expected)`: removes the key if its value is
    /// `expected`; returns whether it did.
    CompareAndDelete { expected: u64 },
    /// `try_insert(value)`: stores it if the key is absent; returns the
    /// value that was already there (`None`: it stored).
    TryInsert(u64),
    /// `update(|_| value)`: replaces a present value; returns the new value
    /// (`None`: the key was absent and nothing was stored).
    Update(u64),
}

/// What an operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// A value or its absence (every call but the compare-and-* ones).
    Value(Option<u64>),
    /// Whether a compare-and-swap or compare-and-delete wrote.
    Succeeded(bool),
}

impl Call {
    /// The sequential specification: what this call returns when the key's
    /// state is `state`, and the state it leaves.
    pub fn run(self, state: State) -> (Response, State) {
        match self {
            Call::Get => (Response::Value(state), state),
            Call::Insert(value) => (Response::Value(state), Some(value)),
            Call::Remove => (Response::Value(state), None),
            Call::CompareAndSwap { expected, new } => {
                let swaps = state == Some(expected);
                (
                    Response::Succeeded(swaps),
                    if swaps { Some(new) } else { state },
                )
            }
            Call::CompareAndDelete { expected } => {
                let deletes = state == Some(expected);
                (
                    Response::Succeeded(deletes),
                    if deletes { None } else { state },
                )
            }
            Call::TryInsert(value) => match state {
                None => (Response::Value(None), Some(value)),
                Some(current) => (Response::Value(Some(current)), state),
            },
            Call::Update(value) => match state {
                None => (Response::Value(None), None),
                Some(_) => (Response::Value(Some(value)), Some(value)),
            },
        }
    }
}

/// One completed operation of a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Which thread ran it (a label for explanations).
    pub thread: usize,
    /// What was called, with its arguments.
    pub call: Call,
    /// What it returned.
    pub response: Response,
    /// [`Clock`] time taken just before the call.
    pub called_at: u64,
    /// [`Clock`] time taken just after the return; not before `called_at`.
    pub returned_at: u64,
}

/// A global logical clock for recording histories: every tick is a new,
/// larger time, and the ticks of all threads form one order.
#[derive(Debug, Default)]
pub struct Clock(AtomicU64);

impl Clock {
    /// The next time.
    pub fn tick(&self) -> u64 {
        // SeqCst: every tick is a read-modify-write of this one counter, so
        // a tick that reads a later value synchronizes with the earlier
        // ticks; an operation whose return tick precedes another's call
        // tick therefore happened before it. The ordering also keeps the
        // operation's own memory accesses between its two ticks.
        self.0.fetch_add(1, Ordering::SeqCst)
    }

    /// Runs `operation` between two ticks and records it.
    pub fn record(
        &self,
        thread: usize,
        call: Call,
        operation: impl FnOnce() -> Response,
    ) -> Operation {
        let called_at = self.tick();
        let response = operation();
        let returned_at = self.tick();
        Operation {
            thread,
            call,
            response,
            called_at,
            returned_at,
        }
    }
}

/// How many operations of `history` overlap another one: the ones whose
/// order the checker had to choose. A history where this is small checks
/// little.
pub fn overlapping(history: &[Operation]) -> usize {
    let mut by_call: Vec<&Operation> = history.iter().collect();
    by_call.sort_by_key(|operation| operation.called_at);
    let mut latest_return = None;
    let mut count = 0;
    for (position, operation) in by_call.iter().enumerate() {
        // An earlier call still running, or the next call made before this
        // one returned (the next call is the earliest of the later ones).
        let overlaps_earlier = latest_return.is_some_and(|latest| latest > operation.called_at);
        let overlaps_later = by_call
            .get(position + 1)
            .is_some_and(|next| next.called_at < operation.returned_at);
        if overlaps_earlier || overlaps_later {
            count += 1;
        }
        latest_return = latest_return.max(Some(operation.returned_at));
    }
    count
}

/// Search steps allowed by [`check`] before it answers
/// [`Verdict::Undecided`]. A linearizable history of a few hundred
/// operations from five threads takes one or two thousand (the summary
/// lines of `tests/linearizability.rs` report the most).
pub const DEFAULT_STEP_LIMIT: usize = 1_000_000;

/// The outcome of checking one key's history.
#[derive(Debug)]
pub enum Verdict {
    /// A linearization exists; the search took `steps` steps.
    Linearizable { steps: usize },
    /// No linearization exists.
    Violation(Box<Violation>),
    /// The search gave up after `steps` steps.
    Undecided { steps: usize },
}

/// Why a history is not linearizable: the longest prefix the search could
/// linearize, and the operations that could not come after it.
#[derive(Debug)]
pub struct Violation {
    /// The key whose history this is.
    pub key: u64,
    /// The key's state before the history.
    pub initial: State,
    /// The number of operations in the history.
    pub operations: usize,
    /// The longest linearizable prefix found, in linearization order.
    pub longest_prefix: Vec<Operation>,
    /// The key's state after that prefix.
    pub state_after_prefix: State,
    /// The operations that could go next after the prefix (called before
    /// any other remaining operation returned), each with the response
    /// the model gives from `state_after_prefix`, which is not the one
    /// recorded.
    pub rejected: Vec<(Operation, Response)>,
}

/// Checks the history of `key`, whose state was `initial` before any of
/// `history`'s operations was called, with [`DEFAULT_STEP_LIMIT`].
pub fn check(key: u64, initial: State, history: &[Operation]) -> Verdict {
    check_with_step_limit(key, initial, history, DEFAULT_STEP_LIMIT)
}

/// [`check`] with a bound of `step_limit` search steps.
///
/// # Panics
///
/// If an operation returned before it was called.
pub fn check_with_step_limit(
    key: u64,
    initial: State,
    history: &[Operation],
    step_limit: usize,
) -> Verdict {
    for operation in history {
        assert!(
            operation.called_at <= operation.returned_at,
            "key {key}: {operation} returned before it was called"
        );
    }
    let mut events = EventList::new(history);
    let mut linearized = OperationSet::new(history.len());
    let mut state = initial;
    // (call event, state before it) for each linearized operation, in order.
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut seen: HashSet<(OperationSet, State)> = HashSet::new();
    let mut longest_prefix: Vec<usize> = Vec::new();
    let mut cursor = events.first();
    let mut steps = 0;
    while !events.is_empty() {
        steps += 1;
        if steps > step_limit {
            return Verdict::Undecided { steps };
        }
        let operation_index = events.operation(cursor);
        if events.is_call(cursor) {
            let operation = &history[operation_index];
            let (response, after) = operation.call.run(state);
            if response == operation.response {
                let mut with_this = linearized.clone();
                with_this.insert(operation_index);
                if seen.insert((with_this.clone(), after)) {
                    stack.push((cursor, state));
                    state = after;
                    linearized = with_this;
                    events.lift(cursor);
                    if stack.len() > longest_prefix.len() {
                        longest_prefix = stack
                            .iter()
                            .map(|&(call, _)| events.operation(call))
                            .collect();
                    }
                    cursor = events.first();
                    continue;
                }
            }
            cursor = events.next(cursor);
        } else {
            // The operation returning here had to be linearized by now:
            // undo the last choice and try the next candidate after it.
            let Some((call, state_before)) = stack.pop() else {
                return Verdict::Violation(Box::new(Violation::explain(
                    key,
                    initial,
                    history,
                    &longest_prefix,
                )));
            };
            state = state_before;
            linearized.remove(events.operation(call));
            events.unlift(call);
            cursor = events.next(call);
        }
    }
    Verdict::Linearizable { steps }
}

impl Violation {
    /// Replays `prefix` and lists the candidates the model rejects after it.
    fn explain(key: u64, initial: State, history: &[Operation], prefix: &[usize]) -> Self {
        let mut state = initial;
        for &index in prefix {
            state = history[index].call.run(state).1;
        }
        let in_prefix: HashSet<usize> = prefix.iter().copied().collect();
        let remaining = || (0..history.len()).filter(|index| !in_prefix.contains(index));
        // Events are ordered by time, calls before returns at equal times
        // (see `EventList::new`): a candidate is called no later than the
        // first remaining return.
        let first_return = remaining()
            .map(|index| history[index].returned_at)
            .min()
            .unwrap_or(u64::MAX);
        let mut rejected: Vec<(Operation, Response)> = remaining()
            .map(|index| history[index])
            .filter(|operation| operation.called_at <= first_return)
            .map(|operation| (operation, operation.call.run(state).0))
            .collect();
        rejected.sort_by_key(|(operation, _)| operation.called_at);
        Violation {
            key,
            initial,
            operations: history.len(),
            longest_prefix: prefix.iter().map(|&index| history[index]).collect(),
            state_after_prefix: state,
            rejected,
        }
    }
}

/// How many operations of the prefix an explanation shows (the last ones).
const PREFIX_SHOWN: usize = 12;

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {}: the {} operations have no linearization (initial value {:?}).",
            self.key, self.operations, self.initial
        )?;
        writeln!(
            f,
            "Longest linearizable prefix: {} operations, leaving the value {:?}:",
            self.longest_prefix.len(),
            self.state_after_prefix
        )?;
        let hidden = self.longest_prefix.len().saturating_sub(PREFIX_SHOWN);
        if hidden > 0 {
            writeln!(f, "  ... {hidden} earlier operations")?;
        }
        for (position, operation) in self.longest_prefix.iter().enumerate().skip(hidden) {
            writeln!(f, "  {:>4}. {operation}", position + 1)?;
        }
        writeln!(
            f,
            "None of the operations that could come next is possible from {:?}:",
            self.state_after_prefix
        )?;
        for (operation, expected) in &self.rejected {
            writeln!(f, "  {operation}: the model returns {expected}")?;
        }
        write!(
            f,
            "(every other remaining operation was called after one of these returned)"
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "thread {} {} -> {} [called {}, returned {}]",
            self.thread, self.call, self.response, self.called_at, self.returned_at
        )
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Get => write!(f, "get"),
            Call::Insert(value) => write!(f, "insert({value})"),
            Call::Remove => write!(f, "remove"),
            Call::CompareAndSwap { expected, new } => {
                write!(f, "compare_and_swap({expected} -> {new})")
            }
            Call::CompareAndDelete { expected } => write!(f, "compare_and_delete({expected})"),
            Call::TryInsert(value) => write!(f, "try_insert({value})"),
            Call::Update(value) => write!(f, "update(_ -> {value})"),
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Value(value) => write!(f, "{value:?}"),
            Response::Succeeded(wrote) => write!(f, "{wrote}"),
        }
    }
}

/// A set of operations of one history, by index: a bitset.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OperationSet(Box<[u64]>);

impl OperationSet {
    fn new(operations: usize) -> Self {
        OperationSet(vec![0; operations.div_ceil(64)].into_boxed_slice())
    }

    fn insert(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    fn remove(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }
}

/// The call and return events of a history in time order, as a doubly
/// linked list over indices that can take an operation's two events out
/// and put them back.
///
/// Node 0 is the head; node `1 + 2i` is the call of operation `i` and node
/// `2 + 2i` its return, linked in time order.
struct EventList {
    next: Vec<usize>,
    previous: Vec<usize>,
}

/// The head node of an [`EventList`].
const HEAD: usize = 0;
/// "No node": the `next` of the last event.
const NONE: usize = usize::MAX;

impl EventList {
    fn new(history: &[Operation]) -> Self {
        let mut order: Vec<usize> = (1..=2 * history.len()).collect();
        // By time; at equal times calls come first, so that operations that
        // touch at an instant count as overlapping (the permissive reading
        // of a tie; the test's clock never ties).
        order.sort_by_key(|&node| {
            let operation = &history[(node - 1) / 2];
            let is_return = node % 2 == 0;
            let time = if is_return {
                operation.returned_at
            } else {
                operation.called_at
            };
            (time, is_return)
        });
        let mut next = vec![NONE; 2 * history.len() + 1];
        let mut previous = vec![HEAD; 2 * history.len() + 1];
        let mut last = HEAD;
        for node in order {
            next[last] = node;
            previous[node] = last;
            last = node;
        }
        EventList { next, previous }
    }

    fn is_empty(&self) -> bool {
        self.next[HEAD] == NONE
    }

    fn first(&self) -> usize {
        self.next[HEAD]
    }

    fn next(&self, node: usize) -> usize {
        self.next[node]
    }

    fn is_call(&self, node: usize) -> bool {
        node % 2 == 1
    }

    /// The index of the operation an event belongs to.
    fn operation(&self, node: usize) -> usize {
        (node - 1) / 2
    }

    /// Takes the call event `call` and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(call + 1);
    }

    /// Puts back the events [`lift`](Self::lift) took out (the last lifted
    /// first, as dancing links require).
    fn unlift(&mut self, call: usize) {
        self.relink(call + 1);
        self.relink(call);
    }

    fn unlink(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = next;
        if next != NONE {
            self.previous[next] = previous;
        }
    }

    /// Undoes `unlink(node)`: `node` still knows its neighbours.
    fn relink(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = node;
        if next != NONE {
            self.previous[next] = node;
        }
    }
}
