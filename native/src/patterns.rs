//! Sequences and absences per key (`ringfence.engine.patterns`): partial matches, deadlines
//! and the timers that fire them.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::expr::Expr;
use crate::store::Key;

pub const MAX_PARTIALS: usize = 16;

/// What a pattern remembers of a matched event (and shows as evidence).
#[derive(Debug)]
pub struct Snap {
    pub event_id: crate::value::Text,
    pub etype: crate::value::Text,
    pub occurred_at: f64,
    pub source: crate::value::Text,
    pub customer_id: Option<crate::value::Text>,
    pub data: Arc<crate::jv::Jv>,
    pub offset: i64,
    pub ingested_at: f64,
}

pub type Captured = Vec<(Arc<str>, Arc<Snap>)>;

#[derive(Debug, Clone)]
pub struct Partial {
    pub started: f64,
    pub step: i64,
    pub captured: Captured,
}

#[derive(Debug, Clone)]
pub struct PState {
    pub seen: f64,
    pub partials: Vec<Partial>,
    /// When an armed absence fires (NaN: not armed; a field of its own rather than an Option
    /// keeps the state, and so every state held beside it, 8 bytes smaller).
    deadline: f64,
    pub anchor: Option<Arc<Snap>>,
}

impl PState {
    pub fn new(
        seen: f64,
        partials: Vec<Partial>,
        deadline: Option<f64>,
        anchor: Option<Arc<Snap>>,
    ) -> PState {
        PState {
            seen,
            partials,
            deadline: deadline.unwrap_or(f64::NAN),
            anchor,
        }
    }

    /// A state holding nothing: a taken state's place (``State::take_pattern``).
    pub fn empty() -> PState {
        PState::new(0.0, Vec::new(), None, None)
    }

    pub fn deadline(&self) -> Option<f64> {
        (!self.deadline.is_nan()).then_some(self.deadline)
    }

    pub fn set_deadline(&mut self, deadline: Option<f64>) {
        self.deadline = deadline.unwrap_or(f64::NAN);
    }
}

pub struct Step {
    pub name: Arc<str>,
    /// The event types a step takes (looked up for every event a pattern sees).
    pub on: FxHashSet<String>,
    pub when: Option<Expr>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sequence,
    Absence,
}

/// A deadline of an absence: (deadline, pattern id, key), earliest first, ties by id then key.
#[derive(Debug, Clone, PartialEq)]
pub struct Timer(pub f64, pub Arc<str>, pub Key);

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .total_cmp(&other.0)
            .then_with(|| self.1.cmp(&other.1))
            .then_with(|| self.2.cmp(&other.2))
    }
}

/// Entries past twice the keys' before the timers are compacted.
const TIMER_SLACK: usize = 1_024;

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
    /// The earliest of each key's entries in the heap.
    earliest: FxHashMap<(Arc<str>, Key), f64>,
}

impl Timers {
    /// Arm ``deadline``, unless the key has an entry due no later: that one re-arms it when it
    /// comes due (as the reference: a key's after and expect, alternating, added an entry a cycle).
    pub fn add(&mut self, deadline: f64, pattern: Arc<str>, key: Key) {
        let id = (pattern, key);
        if self.earliest.get(&id).is_some_and(|e| *e <= deadline) {
            return;
        }
        self.earliest.insert(id.clone(), deadline);
        self.heap.push(Reverse(Timer(deadline, id.0, id.1)));
        if self.heap.len() > 2 * self.earliest.len() + TIMER_SLACK {
            // deadlines armed each earlier than the last each pushed one: each key's earliest
            // entry stands for all of its others, due no earlier (as the reference)
            self.heap = self
                .earliest
                .iter()
                .map(|((p, k), d)| Reverse(Timer(*d, p.clone(), k.clone())))
                .collect();
        }
    }

    /// The earliest entry before ``watermark``, removed.
    pub fn pop_due(&mut self, watermark: f64) -> Option<Timer> {
        if !self.heap.peek().is_some_and(|Reverse(t)| t.0 < watermark) {
            return None;
        }
        let Reverse(timer) = self.heap.pop()?;
        let id = (timer.1.clone(), timer.2.clone());
        if self.earliest.get(&id) == Some(&timer.0) {
            self.earliest.remove(&id);
        }
        Some(timer)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_armed_each_earlier_keep_the_timers_compact_and_the_earliest_due() {
        let mut timers = Timers::default();
        let (pattern, key): (Arc<str>, Key) = (Arc::from("p"), Key::from("k"));
        for i in 0..5_000 {
            timers.add(1e6 - f64::from(i), pattern.clone(), key.clone());
        }
        assert!(timers.len() <= 2 + TIMER_SLACK + 1, "{}", timers.len());
        let first = timers.pop_due(f64::INFINITY).expect("an entry");
        assert_eq!(first.0, 1e6 - 4_999.0);
    }
}
