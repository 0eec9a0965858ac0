//! A linearizability checker for histories of operations on independent versioned registers.
//!
//! The model is the API's entities: each key (an entity id) holds either nothing or a
//! `(version, value)` pair. Operations are a linearizable read, an unconditional write (a `PATCH`
//! without `If-Match`: the version goes up by one) and a compare-and-set on the version (a
//! `PATCH` with `If-Match`: applied when the version matches, `412 Precondition Failed`
//! otherwise). Keys are independent, so the history is partitioned per key and each partition
//! is checked on its own (linearizability is compositional).
//!
//! The search is the Wing–Gong–Lowe algorithm with the memoization of P. Lowe's refinement and
//! of Porcupine: a depth-first search over the call/return entries in time order that tries to
//! linearize each pending call before the first return entry, backtracking when a return entry
//! is reached whose operation has not been linearized; configurations (set of linearized
//! operations, register state) already explored are never explored again.
//!
//! Operations whose outcome is unknown (a timeout, a `503` saying "not confirmed", a connection
//! error after the request was sent) are treated as in Knossos and Porcupine: they may have taken
//! effect at any point after their call (their return time is infinite) or never. Operations that
//! certainly had no effect ([`Output::Failed`]) and reads without an answer are left out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The value of a register: `None` when the entity does not exist.
pub type State = Option<(u64, String)>;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Input {
    /// Linearizable read.
    Read,
    /// Unconditional write: the version goes up by one.
    Write { value: String },
    /// Compare-and-set on the version (`If-Match`).
    Cas { if_match: u64, value: String },
}

/// What the client got back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Output {
    /// The register's `(version, value)`: a read's answer, or the new state a successful
    /// write or CAS returned.
    Value { version: u64, value: String },
    /// The entity does not exist (404).
    NotFound,
    /// CAS refused: the version did not match (412).
    PreconditionFailed,
    /// Certainly not applied (e.g. refused before it was proposed). Left out of the check.
    Failed,
    /// May or may not have been applied, at any time after the call.
    Unknown,
}

/// One operation of a history. Times are in any monotonic unit (the tests use nanoseconds
/// since the start of the run); `ret` is ignored when the output is [`Output::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub key: String,
    pub client: u64,
    pub input: Input,
    pub output: Output,
    pub call: u64,
    pub ret: u64,
    /// Free text for humans (node, HTTP status, error message).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Op {
    fn is_unknown(&self) -> bool {
        self.output == Output::Unknown
    }

    /// Whether the checker takes this operation into account.
    fn relevant(&self) -> bool {
        match (&self.input, &self.output) {
            (_, Output::Failed) => false,
            // A read without an answer says nothing.
            (Input::Read, Output::Unknown) => false,
            _ => true,
        }
    }
}

fn fmt_state(s: &State) -> String {
    match s {
        None => "absent".to_string(),
        Some((v, x)) => format!("(v{v}, {x:?})"),
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let input = match &self.input {
            Input::Read => "read".to_string(),
            Input::Write { value } => format!("write({value:?})"),
            Input::Cas { if_match, value } => format!("cas(if_match={if_match}, {value:?})"),
        };
        let output = match &self.output {
            Output::Value { version, value } => format!("(v{version}, {value:?})"),
            Output::NotFound => "not found".into(),
            Output::PreconditionFailed => "412 precondition failed".into(),
            Output::Failed => "failed (not applied)".into(),
            Output::Unknown => "UNKNOWN outcome".into(),
        };
        let ret = if self.is_unknown() {
            "inf".to_string()
        } else {
            format!("{:.3}", self.ret as f64 / 1e6)
        };
        write!(
            f,
            "client {} {} -> {} [{:.3} ms .. {} ms]",
            self.client,
            input,
            output,
            self.call as f64 / 1e6,
            ret
        )?;
        if !self.note.is_empty() {
            write!(f, " ({})", self.note)?;
        }
        Ok(())
    }
}

/// Why one key's history is not linearizable, at the deepest point the search reached.
#[derive(Debug, Clone)]
pub struct Violation {
    pub key: String,
    pub initial: State,
    /// The longest linearization found, in order, as (operation, state after it).
    pub prefix: Vec<(Op, State)>,
    /// The state after that prefix.
    pub state: State,
    /// The operation that returned before it could be linearized after the prefix.
    pub blocked: Op,
    /// Operations called but not yet linearized at that point (each was tried).
    pub pending: Vec<Op>,
    /// When `blocked` could have been applied to `state` but that would raise the version above
    /// the one this (not yet linearized) operation observed: versions never go down.
    pub needed_by: Option<Op>,
    /// Extra facts found by looking at the whole history (e.g. who wrote the value a read saw).
    pub hints: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {}: history is NOT linearizable (initial state {})",
            self.key,
            fmt_state(&self.initial)
        )?;
        let skip = self.prefix.len().saturating_sub(12);
        writeln!(
            f,
            "  longest linearizable prefix: {} ops{}",
            self.prefix.len(),
            if skip > 0 {
                format!(" (last {} shown)", self.prefix.len() - skip)
            } else {
                String::new()
            }
        )?;
        for (op, st) in &self.prefix[skip..] {
            writeln!(f, "    {op}  => {}", fmt_state(st))?;
        }
        writeln!(f, "  state after the prefix: {}", fmt_state(&self.state))?;
        writeln!(
            f,
            "  this op returned before it could be linearized:\n    {}",
            self.blocked
        )?;
        if let Some(op) = &self.needed_by {
            writeln!(
                f,
                "  it cannot be linearized before this op either, which needs the older \
                 version (versions never go down):\n    {op}"
            )?;
        }
        writeln!(
            f,
            "  other ops called and not linearized at that point ({}):",
            self.pending.len()
        )?;
        for op in self.pending.iter().take(20) {
            writeln!(f, "    {op}")?;
        }
        if self.pending.len() > 20 {
            writeln!(f, "    ... {} more", self.pending.len() - 20)?;
        }
        for h in &self.hints {
            writeln!(f, "  note: {h}")?;
        }
        Ok(())
    }
}

/// The verdict over a whole history.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub keys: usize,
    /// Operations taken into account / of which with an unknown outcome.
    pub ops: usize,
    pub unknown: usize,
    /// Search steps over all keys.
    pub steps: u64,
    pub violations: Vec<Violation>,
    /// Keys whose search ran out of its step budget (neither proven nor refuted).
    pub inconclusive: Vec<String>,
}

impl Report {
    pub fn is_linearizable(&self) -> bool {
        self.violations.is_empty() && self.inconclusive.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} keys, {} ops ({} with unknown outcome), {} search steps: {}",
            self.keys,
            self.ops,
            self.unknown,
            self.steps,
            if self.is_linearizable() {
                "linearizable"
            } else if self.violations.is_empty() {
                "INCONCLUSIVE"
            } else {
                "NOT LINEARIZABLE"
            }
        )?;
        for k in &self.inconclusive {
            writeln!(f, "key {k}: search budget exhausted (inconclusive)")?;
        }
        for v in &self.violations {
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// Default bound on search steps per key.
pub const DEFAULT_BUDGET: u64 = 20_000_000;

/// Check a history. `initial` gives each key's state before the first operation (a key not
/// listed starts absent).
pub fn check(ops: &[Op], initial: &BTreeMap<String, State>) -> Report {
    check_with_budget(ops, initial, DEFAULT_BUDGET)
}

/// [`check`] with an explicit bound on the search steps per key.
pub fn check_with_budget(ops: &[Op], initial: &BTreeMap<String, State>, budget: u64) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for k in initial.keys() {
        by_key.entry(k.as_str()).or_default();
    }
    for op in ops.iter().filter(|o| o.relevant()) {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut report = Report {
        keys: by_key.len(),
        ..Default::default()
    };
    for (key, kops) in by_key {
        report.ops += kops.len();
        report.unknown += kops.iter().filter(|o| o.is_unknown()).count();
        let init = initial.get(key).cloned().flatten();
        let (res, steps) = check_key(&kops, &init, budget);
        report.steps += steps;
        match res {
            KeyResult::Ok => {}
            KeyResult::Inconclusive => report.inconclusive.push(key.to_string()),
            KeyResult::Illegal(mut v) => {
                v.key = key.to_string();
                v.hints = hints(&v, ops);
                report.violations.push(*v);
            }
        }
    }
    report
}

/// Facts from the full history (including ops the search leaves out) that help to read a
/// violation: who wrote the value the blocked op saw.
fn hints(v: &Violation, all: &[Op]) -> Vec<String> {
    let mut out = Vec::new();
    if let Output::Value { version, value } = &v.blocked.output {
        let writers: Vec<&Op> = all
            .iter()
            .filter(|o| o.key == v.key)
            .filter(|o| match &o.input {
                Input::Write { value: w } | Input::Cas { value: w, .. } => w == value,
                Input::Read => false,
            })
            .collect();
        if writers.is_empty() && v.initial.as_ref().is_none_or(|(_, x)| x != value) {
            out.push(format!(
                "no operation in the history wrote {value:?} (seen at v{version})"
            ));
        }
        for w in writers {
            out.push(format!("{value:?} was written by: {w}"));
        }
    }
    out
}

enum KeyResult {
    Ok,
    Illegal(Box<Violation>),
    Inconclusive,
}

/// Interned register state: values are replaced by small integers.
type IState = Option<(u64, u32)>;

struct Interned {
    input: IInput,
    output: IOutput,
}

enum IInput {
    Read,
    Write(u32),
    Cas(u64, u32),
}

#[derive(PartialEq, Eq)]
enum IOutput {
    Value(u64, u32),
    NotFound,
    PreconditionFailed,
    Unknown,
}

/// The sequential specification: the state after applying `op` to `s`, or `None` when `op`
/// could not have produced its output from `s`. An operation with an unknown outcome is only
/// linearized where it changes the state: linearizing it as a no-op is the same as leaving it
/// out, which is always allowed (its return is at infinity), and would only grow the search.
fn step(s: &IState, op: &Interned) -> Option<IState> {
    use IOutput as O;
    match (&op.input, s) {
        (IInput::Read, _) => match (&op.output, s) {
            (O::Value(v, x), Some((sv, sx))) if v == sv && x == sx => Some(*s),
            (O::NotFound, None) => Some(None),
            _ => None,
        },
        (IInput::Write(_) | IInput::Cas(..), None) => match op.output {
            O::NotFound => Some(None),
            _ => None,
        },
        (IInput::Write(x), Some((v, _))) => {
            let next = (v + 1, *x);
            match op.output {
                O::Value(nv, nx) if (nv, nx) == next => Some(Some(next)),
                O::Unknown => Some(Some(next)),
                _ => None,
            }
        }
        (IInput::Cas(m, x), Some((v, _))) if m == v => {
            let next = (v + 1, *x);
            match op.output {
                O::Value(nv, nx) if (nv, nx) == next => Some(Some(next)),
                O::Unknown => Some(Some(next)),
                _ => None,
            }
        }
        // Version mismatch: a refused CAS leaves the state alone.
        (IInput::Cas(..), Some(_)) => match op.output {
            O::PreconditionFailed => Some(*s),
            _ => None,
        },
    }
}

fn check_key(ops: &[&Op], initial: &State, budget: u64) -> (KeyResult, u64) {
    let n = ops.len();
    if n == 0 {
        return (KeyResult::Ok, 0);
    }
    // Intern values.
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut names: Vec<&str> = Vec::new();
    let mut strs: Vec<&str> = Vec::new();
    if let Some((_, x)) = initial {
        strs.push(x);
    }
    for op in ops {
        match &op.input {
            Input::Write { value } | Input::Cas { value, .. } => strs.push(value),
            Input::Read => {}
        }
        if let Output::Value { value, .. } = &op.output {
            strs.push(value);
        }
    }
    for s in strs {
        ids.entry(s).or_insert_with(|| {
            names.push(s);
            (names.len() - 1) as u32
        });
    }
    let id = |s: &str| ids[s];
    let iops: Vec<Interned> = ops
        .iter()
        .map(|op| Interned {
            input: match &op.input {
                Input::Read => IInput::Read,
                Input::Write { value } => IInput::Write(id(value)),
                Input::Cas { if_match, value } => IInput::Cas(*if_match, id(value)),
            },
            output: match &op.output {
                Output::Value { version, value } => IOutput::Value(*version, id(value)),
                Output::NotFound => IOutput::NotFound,
                Output::PreconditionFailed => IOutput::PreconditionFailed,
                Output::Unknown => IOutput::Unknown,
                Output::Failed => unreachable!("failed ops are filtered out"),
            },
        })
        .collect();
    let init: IState = initial.as_ref().map(|(v, x)| (*v, id(x)));

    // Symmetry reduction. An unknown-outcome write whose value no answer ever shows can only
    // matter through the version bump it causes, so two such writes that have both been called
    // are interchangeable (swap them in any linearization and every output still matches; the
    // same holds for unknown CASes with the same `If-Match`). Within such a class only the
    // earliest-called pending member is a candidate, which keeps the applied members a prefix of
    // the class in call order and turns the 2^k subsets of k pending unknown writes into k+1.
    let mut observed = vec![false; names.len()];
    if let Some((_, x)) = init {
        observed[x as usize] = true;
    }
    for o in &iops {
        if let IOutput::Value(_, x) = o.output {
            observed[x as usize] = true;
        }
    }
    let mut class_ids: HashMap<Option<u64>, usize> = HashMap::new();
    let mut class_of: Vec<Option<(usize, usize)>> = vec![None; n]; // (class, rank in class)
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut by_call: Vec<usize> = (0..n).collect();
    by_call.sort_by_key(|&i| (ops[i].call, i));
    for &i in &by_call {
        let o = &iops[i];
        let cls = match (&o.input, &o.output) {
            (IInput::Write(x), IOutput::Unknown) if !observed[*x as usize] => Some(None),
            (IInput::Cas(m, x), IOutput::Unknown) if !observed[*x as usize] => Some(Some(*m)),
            _ => None,
        };
        if let Some(k) = cls {
            let c = *class_ids.entry(k).or_insert_with(|| {
                members.push(Vec::new());
                members.len() - 1
            });
            class_of[i] = Some((c, members[c].len()));
            members[c].push(i);
        }
    }
    let mut class_applied = vec![0usize; members.len()];

    // Version bound. Versions never go down (an absent entity counts as version 0), so an
    // operation whose output needs the version to be `r` just before it (a read that saw `r`, a
    // write or CAS that returned `r + 1`) cannot be linearized once the version is above `r`. A
    // transition to a version above the smallest such `r` among the operations not yet
    // linearized leads nowhere and is pruned right away; without this the search would apply
    // pending unknown writes eagerly and only notice much later.
    let need: Vec<Option<u64>> = iops
        .iter()
        .map(|o| match (&o.input, &o.output) {
            (IInput::Read, IOutput::Value(v, _)) => Some(*v),
            (IInput::Write(_) | IInput::Cas(..), IOutput::Value(v, _)) => Some(v.saturating_sub(1)),
            _ => None,
        })
        .collect();
    let mut needs: BTreeMap<u64, usize> = BTreeMap::new();
    for r in need.iter().flatten() {
        *needs.entry(*r).or_default() += 1;
    }
    // The smallest requirement of the unlinearized ops other than `i`.
    let min_need_without = |needs: &BTreeMap<u64, usize>, i: usize| -> Option<u64> {
        let mut it = needs.iter();
        let (first, count) = it.next()?;
        if need[i] == Some(*first) && *count == 1 {
            it.next().map(|(r, _)| *r)
        } else {
            Some(*first)
        }
    };
    let version = |s: &IState| s.map(|(v, _)| v).unwrap_or(0);
    let unintern = |s: &IState| -> State { s.map(|(v, x)| (v, names[x as usize].to_string())) };

    // Entries: 0 = head sentinel, 1..=2n = call/return entries in time order, 2n+1 = tail.
    // At equal times calls come first (the operations are then concurrent: the lenient choice).
    let mut ev: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        let ret = if op.is_unknown() {
            u64::MAX
        } else {
            op.ret.max(op.call)
        };
        ev.push((op.call, false, i));
        ev.push((ret, true, i));
    }
    ev.sort();
    let tail = 2 * n + 1;
    let mut op_of = vec![usize::MAX; 2 * n + 2];
    let mut is_ret = vec![false; 2 * n + 2];
    let mut partner = vec![0usize; 2 * n + 2];
    let mut call_entry = vec![0usize; n];
    for (e, (_, r, i)) in ev.iter().enumerate() {
        let e = e + 1;
        op_of[e] = *i;
        is_ret[e] = *r;
        if *r {
            partner[call_entry[*i]] = e;
            partner[e] = call_entry[*i];
        } else {
            call_entry[*i] = e;
        }
    }
    let mut next: Vec<usize> = (1..=tail + 1).collect();
    let mut prev: Vec<usize> = (0..tail + 1).map(|e| e.wrapping_sub(1)).collect();
    next[tail] = usize::MAX;

    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        prev[nx] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        prev[nx] = e;
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, IState)> = HashSet::new();
    let mut stack: Vec<(usize, IState)> = Vec::new();
    let mut state = init;
    let mut entry = next[0];
    let mut steps = 0u64;
    // Deepest dead end: (depth, linearization order with states, state, blocked op).
    #[allow(clippy::type_complexity)]
    let mut best: Option<(
        usize,
        Vec<(usize, IState)>,
        IState,
        usize,
        Vec<usize>,
        Option<usize>,
    )> = None;

    loop {
        if entry == tail {
            return (KeyResult::Ok, steps);
        }
        steps += 1;
        if steps > budget {
            return (KeyResult::Inconclusive, steps);
        }
        let i = op_of[entry];
        if !is_ret[entry] {
            let eligible = class_of[i].is_none_or(|(c, rank)| class_applied[c] == rank);
            let next_state = if eligible {
                step(&state, &iops[i])
                    .filter(|ns| min_need_without(&needs, i).is_none_or(|r| version(ns) <= r))
            } else {
                None
            };
            if let Some(ns) = next_state {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), ns)) {
                    if let Some((c, _)) = class_of[i] {
                        class_applied[c] += 1;
                    }
                    if let Some(r) = need[i] {
                        let cnt = needs.get_mut(&r).expect("counted");
                        *cnt -= 1;
                        if *cnt == 0 {
                            needs.remove(&r);
                        }
                    }
                    stack.push((entry, state));
                    state = ns;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, partner[entry]);
                    entry = next[0];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
            continue;
        }
        // A return entry: every known operation before it is linearized once we get here
        // with an unknown op's (infinite) return, so the rest can be left unapplied.
        if ops[i].is_unknown() {
            return (KeyResult::Ok, steps);
        }
        if best.as_ref().is_none_or(|b| stack.len() > b.0) {
            let mut order = Vec::with_capacity(stack.len());
            for (k, (ce, _)) in stack.iter().enumerate() {
                let after = stack.get(k + 1).map(|s| s.1).unwrap_or(state);
                order.push((op_of[*ce], after));
            }
            let mut pending = Vec::new();
            let mut e = next[0];
            while e != entry {
                if !is_ret[e] && op_of[e] != i {
                    pending.push(op_of[e]);
                }
                e = next[e];
            }
            // The op holding the version bound down, if it is what stopped `i`.
            let holder = min_need_without(&needs, i).and_then(|r| {
                let blocked_by_bound = step(&state, &iops[i]).is_some_and(|ns| version(&ns) > r);
                (0..n).filter(|&j| j != i).find(|&j| {
                    blocked_by_bound
                        && need[j] == Some(r)
                        && linearized[j / 64] & (1 << (j % 64)) == 0
                })
            });
            best = Some((stack.len(), order, state, i, pending, holder));
        }
        match stack.pop() {
            None => break,
            Some((ce, st)) => {
                state = st;
                let j = op_of[ce];
                linearized[j / 64] &= !(1 << (j % 64));
                if let Some((c, _)) = class_of[j] {
                    class_applied[c] -= 1;
                }
                if let Some(r) = need[j] {
                    *needs.entry(r).or_default() += 1;
                }
                relink(&mut next, &mut prev, partner[ce]);
                relink(&mut next, &mut prev, ce);
                entry = next[ce];
            }
        }
    }
    let (_, order, st, blocked, pending, holder) = best.expect("a dead end was recorded");
    let v = Violation {
        key: String::new(),
        initial: initial.clone(),
        prefix: order
            .into_iter()
            .map(|(o, s)| (ops[o].clone(), unintern(&s)))
            .collect(),
        state: unintern(&st),
        blocked: ops[blocked].clone(),
        pending: pending.into_iter().map(|o| ops[o].clone()).collect(),
        needed_by: holder.map(|o| ops[o].clone()),
        hints: Vec::new(),
    };
    (KeyResult::Illegal(Box::new(v)), steps)
}

/// Read a history written as JSON lines (one [`Op`] per line; other lines are skipped).
pub fn load_jsonl(text: &str) -> Vec<Op> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Op>(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "k";

    fn op(client: u64, input: Input, output: Output, call: u64, ret: u64) -> Op {
        Op {
            key: K.into(),
            client,
            input,
            output,
            call,
            ret,
            note: String::new(),
        }
    }
    fn read(c: u64, v: u64, x: &str, call: u64, ret: u64) -> Op {
        op(c, Input::Read, val(v, x), call, ret)
    }
    fn val(v: u64, x: &str) -> Output {
        Output::Value {
            version: v,
            value: x.into(),
        }
    }
    fn write(c: u64, x: &str, out: Output, call: u64, ret: u64) -> Op {
        op(c, Input::Write { value: x.into() }, out, call, ret)
    }
    fn cas(c: u64, m: u64, x: &str, out: Output, call: u64, ret: u64) -> Op {
        op(
            c,
            Input::Cas {
                if_match: m,
                value: x.into(),
            },
            out,
            call,
            ret,
        )
    }
    fn init() -> BTreeMap<String, State> {
        [(K.to_string(), Some((1, "init".to_string())))].into()
    }
    fn ok(h: &[Op]) -> bool {
        let r = check(h, &init());
        assert!(r.inconclusive.is_empty(), "{r}");
        r.is_linearizable()
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            read(1, 1, "init", 0, 10),
            write(1, "a", val(2, "a"), 20, 30),
            read(2, 2, "a", 40, 50),
            cas(2, 2, "b", val(3, "b"), 60, 70),
            cas(1, 2, "c", Output::PreconditionFailed, 80, 90),
            read(1, 3, "b", 100, 110),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn concurrent_ops_may_take_effect_in_either_order() {
        // Two overlapping writes; reads during them see either; the final read fixes the order.
        let h = [
            write(1, "a", val(3, "a"), 0, 100),
            write(2, "b", val(2, "b"), 10, 90),
            read(3, 2, "b", 20, 30),
            read(3, 3, "a", 95, 120),
            // A read overlapping the writes may still see the initial state.
            read(4, 1, "init", 5, 200),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn unknown_write_may_apply_late_or_never() {
        // Unknown write "u" becomes visible long after the client gave up...
        let h = [
            write(1, "u", Output::Unknown, 0, 10),
            read(2, 1, "init", 20, 30),
            read(2, 2, "u", 40, 50),
            write(2, "w", val(3, "w"), 60, 70),
        ];
        assert!(ok(&h));
        // ...or never.
        let h = [
            write(1, "u", Output::Unknown, 0, 10),
            write(2, "w", val(2, "w"), 60, 70),
            read(2, 2, "w", 80, 90),
        ];
        assert!(ok(&h));
        // An unknown CAS that did apply explains a version gap.
        let h = [
            cas(1, 1, "u", Output::Unknown, 0, 10),
            write(2, "w", val(3, "w"), 60, 70),
        ];
        assert!(ok(&h));
        // Failed (certainly not applied) ops and unanswered reads are ignored.
        let h = [
            write(1, "f", Output::Failed, 0, 10),
            op(2, Input::Read, Output::Unknown, 0, 10),
            read(2, 1, "init", 20, 30),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn stale_read_after_completed_write_is_caught() {
        let h = [
            write(1, "a", val(2, "a"), 0, 10),
            read(2, 1, "init", 20, 30),
        ];
        let r = check(&h, &init());
        assert!(!r.is_linearizable());
        let v = &r.violations[0];
        assert_eq!(v.key, K);
        let text = r.to_string();
        eprintln!("{text}");
        // The search dead-ends at the write's return: it cannot come first (the read still needs
        // v1) and cannot come after the read (the read was called after it returned).
        assert_eq!(v.blocked, h[0], "{r}");
        assert_eq!(v.needed_by.as_ref(), Some(&h[1]), "{r}");
        assert!(
            text.contains("NOT LINEARIZABLE") && text.contains("init"),
            "{text}"
        );
    }

    #[test]
    fn lost_acknowledged_write_is_caught() {
        // "a" was acknowledged at v2, then a later write builds on v1's successor again.
        let h = [
            write(1, "a", val(2, "a"), 0, 10),
            write(2, "b", val(2, "b"), 20, 30),
        ];
        assert!(!ok(&h));
        // Or the final read shows the state before the acknowledged write.
        let h = [
            write(1, "a", val(2, "a"), 0, 10),
            write(1, "b", val(3, "b"), 20, 30),
            read(3, 2, "a", 40, 50),
        ];
        assert!(!ok(&h));
    }

    #[test]
    fn two_successful_cas_on_one_version_are_caught() {
        let h = [
            cas(1, 1, "a", val(2, "a"), 0, 100),
            cas(2, 1, "b", val(2, "b"), 10, 90),
        ];
        assert!(!ok(&h));
        // Even when the second one's answer is unknown, a read of it proves it applied.
        let h = [
            cas(1, 1, "a", val(2, "a"), 0, 100),
            cas(2, 1, "b", Output::Unknown, 10, 90),
            read(3, 2, "b", 200, 210),
        ];
        assert!(!ok(&h));
    }

    #[test]
    fn wrong_precondition_failure_is_caught() {
        let h = [
            read(1, 1, "init", 0, 10),
            cas(1, 1, "a", Output::PreconditionFailed, 20, 30),
        ];
        assert!(!ok(&h));
    }

    #[test]
    fn read_of_a_failed_write_is_caught_and_explained() {
        let mut f = write(1, "f", Output::Failed, 0, 10);
        f.note = "503 write not accepted".into();
        let h = [f, read(2, 2, "f", 20, 30)];
        let r = check(&h, &init());
        assert!(!r.is_linearizable());
        let text = r.to_string();
        assert!(
            text.contains("was written by") && text.contains("not accepted"),
            "{text}"
        );
    }

    #[test]
    fn keys_are_independent() {
        let mut h = vec![write(1, "a", val(2, "a"), 0, 10), read(2, 2, "a", 20, 30)];
        let mut other = read(3, 1, "x", 15, 40);
        other.key = "other".into();
        h.push(other);
        let mut initial = init();
        initial.insert("other".into(), Some((1, "x".into())));
        let r = check(&h, &initial);
        assert!(r.is_linearizable(), "{r}");
        assert_eq!(r.keys, 2);
        // A missing key starts absent.
        let mut nf = op(1, Input::Read, Output::NotFound, 0, 1);
        nf.key = "nope".into();
        assert!(check(&[nf], &BTreeMap::new()).is_linearizable());
    }

    #[test]
    fn many_concurrent_clients_with_unknowns_stay_tractable() {
        // Deterministic pseudo-random linearizable history: a sequential execution with each
        // operation's interval stretched around its linearization point, some answers lost.
        let mut rng = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut state = (1u64, "init".to_string());
        let mut h = Vec::new();
        for i in 0..3000u64 {
            let t = i * 100;
            let call = t.saturating_sub(next() % 400);
            let ret = t + next() % 400;
            let c = next() % 6;
            let r = next() % 10;
            let x = format!("v{i}");
            if r == 9 && next() % 3 == 0 {
                // An unknown-outcome write that never took effect.
                h.push(write(c, &x, Output::Unknown, call, ret));
                continue;
            }
            let mut o = if r < 5 {
                read(c, state.0, &state.1, call, ret)
            } else if r < 8 {
                state = (state.0 + 1, x.clone());
                write(c, &x, val(state.0, &x), call, ret)
            } else {
                let m = state.0 - (next() % 2);
                if m == state.0 {
                    state = (state.0 + 1, x.clone());
                    cas(c, m, &x, val(state.0, &x), call, ret)
                } else {
                    cas(c, m, &x, Output::PreconditionFailed, call, ret)
                }
            };
            if !matches!(o.input, Input::Read) && next() % 25 == 0 {
                o.output = Output::Unknown;
            }
            h.push(o);
        }
        let r = check(&h, &init());
        assert!(r.is_linearizable(), "{r}");
        assert!(r.unknown > 100, "{r}");
        // And a single corrupted read in the middle is found.
        let i = (1500..3000)
            .find(|i| matches!(h[*i].input, Input::Read) && h[*i].output != val(1, "init"))
            .unwrap();
        h[i].output = val(1, "init");
        let r = check(&h, &init());
        assert!(!r.violations.is_empty(), "{r}");
    }

    #[test]
    fn history_round_trips_through_json_lines() {
        let h = [
            write(1, "a", Output::Unknown, 0, 10),
            cas(1, 2, "b", Output::PreconditionFailed, 20, 30),
            read(2, 2, "a", 40, 50),
            op(3, Input::Read, Output::NotFound, 1, 2),
            write(4, "c", Output::Failed, 1, 2),
        ];
        let text: String = h
            .iter()
            .map(|o| serde_json::to_string(o).unwrap() + "\n")
            .collect();
        assert_eq!(load_jsonl(&text), h.to_vec());
    }
}
