//! Keyed streaming features: the aggregates of `ringfence.engine.features`, with its
//! bucketing, pruning and summation order (floats are added in the order the reference
//! engine adds them, so values agree to the last bit).

use indexmap::IndexMap;
use rustc_hash::FxHashSet;
use sha2::{Digest, Sha256};

use crate::expr::Expr;
use crate::records::prefetch;
use crate::store::Key;
use crate::value::{float_order, py_text, Held, Value, R};

pub const BUCKETS: i64 = 60;
pub const MAX_DISTINCT: usize = 1_000;
/// Characters of a distinct value kept as they are (every typed field's text).
pub const DISTINCT_TEXT_MAX: usize = 256;
pub const QUANTILE_SAMPLES: usize = 256;
const FEW_DISTINCT: usize = 16;

/// What a distinct count keeps of a value: its text, or past [`DISTINCT_TEXT_MAX`] characters
/// the text's SHA-256, as the reference engine's `distinct_key` (a free-form field of 60 KB
/// values made a 1,000-value state of 60 MB, rewritten whole by each event).
pub fn distinct_key(x: &Value) -> Key {
    let text = py_text(x);
    if text.len() <= DISTINCT_TEXT_MAX || text.chars().count() <= DISTINCT_TEXT_MAX {
        return text;
    }
    Key::from(format!("sha256:{:x}", Sha256::digest(text.as_bytes())))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Distinct,
    Last,
    First,
    TimeSince,
    Stats,
    Ewma,
    Quantile,
}

impl Agg {
    pub fn parse(s: &str) -> Option<Agg> {
        Some(match s {
            "count" => Agg::Count,
            "sum" => Agg::Sum,
            "avg" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "distinct_count" => Agg::Distinct,
            "last" => Agg::Last,
            "first" => Agg::First,
            "time_since" => Agg::TimeSince,
            "stats" => Agg::Stats,
            "ewma" => Agg::Ewma,
            "quantile" => Agg::Quantile,
            _ => return None,
        })
    }

    /// Aggregates of an ``of`` value (a missing one leaves the state as it is).
    pub fn needs_of(self) -> bool {
        !matches!(self, Agg::Count | Agg::TimeSince)
    }

    /// Read *before* the current event is folded in.
    pub fn read_before_update(self) -> bool {
        matches!(self, Agg::Last | Agg::First | Agg::TimeSince)
    }
}

/// Per-bucket values in the order their buckets were created (the reference engine's dict order).
pub type Buckets = Vec<(i64, f64)>;

fn slot(b: &mut Buckets, idx: i64) -> Option<&mut f64> {
    b.iter_mut().find(|(i, _)| *i == idx).map(|(_, v)| v)
}

/// Append to ``v`` growing it by a quarter (at least one) rather than doubling: most keys
/// hold a few buckets or members, and state is most of the engine's memory.
pub fn push_tight<T>(v: &mut Vec<T>, item: T) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 4).max(1));
    }
    v.push(item);
}

fn add_to(b: &mut Buckets, idx: i64, x: f64) {
    match slot(b, idx) {
        Some(v) => *v += x,
        None => push_tight(b, (idx, 0.0 + x)),
    }
}

fn get(b: &Buckets, idx: i64) -> f64 {
    b.iter().find(|(i, _)| *i == idx).map_or(0.0, |(_, v)| *v)
}

#[derive(Debug, Clone, Default)]
pub struct Quantile {
    pub times: Vec<f64>,
    pub values: Vec<f64>,
    pub ordered: Vec<f64>,
}

/// What a feature state holds besides its newest event time and ``at``.
#[derive(Debug, Clone)]
pub enum Data {
    Empty,
    Buckets(Buckets),
    Avg(Box<(Buckets, Buckets)>),
    Stats(Box<(Buckets, Buckets, Buckets)>),
    /// Distinct values with when each was last seen, in first-seen order: a list while few
    /// (most keys see one or two), indexed past ``FEW_DISTINCT``.
    FewDistinct(Vec<(Key, f64)>),
    Distinct(Box<IndexMap<Key, f64>>),
    Quantile(Box<Quantile>),
    Float(f64),
    Pair(f64, i64),
    Triple(i64, f64, f64),
    Any(Held),
}

#[derive(Debug, Clone)]
pub struct FState {
    pub seen: f64,
    /// The time ``last``, ``first`` and ``time_since`` remember (NaN: none yet; a field of
    /// its own rather than an Option keeps the state 8 bytes smaller).
    at: f64,
    pub data: Data,
}

impl FState {
    /// Have what it points to fetched (its buckets or values; boxed ones only to the box).
    pub fn prefetch(&self) {
        match &self.data {
            Data::Buckets(b) => prefetch(b.as_ptr()),
            Data::FewDistinct(v) => prefetch(v.as_ptr()),
            Data::Avg(b) => prefetch(&**b),
            Data::Stats(b) => prefetch(&**b),
            Data::Distinct(b) => prefetch(&**b),
            Data::Quantile(b) => prefetch(&**b),
            Data::Empty | Data::Float(_) | Data::Pair(..) | Data::Triple(..) | Data::Any(_) => {}
        }
    }

    pub fn new(seen: f64, at: Option<f64>, data: Data) -> FState {
        FState {
            seen,
            at: at.unwrap_or(f64::NAN),
            data,
        }
    }

    pub fn at(&self) -> Option<f64> {
        (!self.at.is_nan()).then_some(self.at)
    }
}

impl Default for FState {
    fn default() -> Self {
        FState {
            seen: f64::NEG_INFINITY,
            at: f64::NAN,
            data: Data::Empty,
        }
    }
}

pub struct FeatureSpec {
    pub by: usize,
    pub agg: Agg,
    pub of: Option<Expr>,
    pub when: Option<Expr>,
    pub on: Option<FxHashSet<String>>,
    pub window: Option<f64>,
    pub alpha: f64,
    pub q: f64,
    pub ttl: Option<f64>,
    pub width: f64,
    /// Add floats as this Python's builtin ``sum()`` does (compensated from 3.12 on).
    pub compensated_sum: bool,
}

fn floor_idx(t: f64, width: f64) -> i64 {
    (t / width).floor() as i64
}

fn max_of(a: f64, b: f64) -> f64 {
    // Python's max(a, b): the first unless the second is greater
    if b > a {
        b
    } else {
        a
    }
}

impl FeatureSpec {
    /// Fold the current event's ``x`` (the value of ``of``) into ``s`` at time ``t``: the
    /// engine's ``event_time_mark``, never past the event's arrival, so one dated minutes ahead
    /// neither keeps a shared key's ``last`` from other producers' events nor sits outside their
    /// windows, nor shrinks them.
    pub fn update(&self, s: &mut FState, t: f64, x: Value) -> R<()> {
        if self.agg.needs_of() && x.is_null() {
            return Ok(());
        }
        // an aggregate of numbers skips a value that reads as none like a missing one, as the
        // reference does (it was the event's failure: poison)
        let x = match self.agg {
            Agg::Sum | Agg::Avg | Agg::Min | Agg::Max | Agg::Stats | Agg::Ewma | Agg::Quantile => {
                match x.to_float() {
                    // a NaN has no place among ordered samples (as the reference)
                    Ok(f) if f.is_nan() && self.agg == Agg::Quantile => return Ok(()),
                    Ok(f) => Value::Float(f),
                    Err(_) => return Ok(()),
                }
            }
            _ => x,
        };
        let windowed = self.window.is_some();
        match self.agg {
            Agg::Count => self.add(s, t, 1.0),
            Agg::Sum => self.add(s, t, x.to_float()?),
            Agg::Avg => {
                let x = x.to_float()?;
                if windowed {
                    let idx = floor_idx(t, self.width);
                    let pair = avg_parts(&mut s.data);
                    add_to(&mut pair.0, idx, x);
                    add_to(&mut pair.1, idx, 1.0);
                } else {
                    s.data = match s.data {
                        Data::Pair(total, n) => Data::Pair(total + x, n + 1),
                        _ => Data::Pair(0.0 + x, 1),
                    };
                }
            }
            Agg::Min | Agg::Max => {
                let x = x.to_float()?;
                let pick = |old: f64| {
                    if (self.agg == Agg::Min && x < old) || (self.agg == Agg::Max && x > old) {
                        x
                    } else {
                        old
                    }
                };
                if windowed {
                    let idx = floor_idx(t, self.width);
                    let b = buckets(&mut s.data);
                    match slot(b, idx) {
                        Some(v) => *v = pick(*v),
                        None => push_tight(b, (idx, x)),
                    }
                } else {
                    s.data = Data::Float(match s.data {
                        Data::Float(old) => pick(old),
                        _ => x,
                    });
                }
            }
            Agg::Distinct => {
                let key = distinct_key(&x);
                let mut promoted = None;
                match &mut s.data {
                    Data::FewDistinct(few) => match few.iter().position(|(k, _)| *k == key) {
                        Some(at) => few[at].1 = max_of(t, few[at].1),
                        None if few.len() < FEW_DISTINCT => push_tight(few, (key, t)),
                        None => {
                            let mut many: IndexMap<Key, f64> = few.drain(..).collect();
                            many.insert(key, t);
                            promoted = Some(many);
                        }
                    },
                    Data::Distinct(map) => match map.get_mut(key.as_str()) {
                        Some(seen) => *seen = max_of(t, *seen),
                        None => {
                            map.insert(key, t);
                        }
                    },
                    other => *other = Data::FewDistinct(vec![(key, t)]),
                }
                if let Some(many) = promoted {
                    s.data = Data::Distinct(Box::new(many));
                }
            }
            Agg::Last => {
                if s.at().is_none_or(|at| t >= at) {
                    s.data = Data::Any(Held::from(x.storable()));
                    s.at = t;
                }
            }
            Agg::First => {
                if s.at().is_none_or(|at| t < at) {
                    s.data = Data::Any(Held::from(x.storable()));
                    s.at = t;
                }
            }
            Agg::TimeSince => {
                if s.at().is_none_or(|at| t >= at) {
                    s.at = t;
                }
            }
            Agg::Stats => {
                let x = x.to_float()?;
                if windowed {
                    let idx = floor_idx(t, self.width);
                    let parts = stats_parts(&mut s.data);
                    add_to(&mut parts.0, idx, x);
                    add_to(&mut parts.1, idx, 1.0);
                    add_to(&mut parts.2, idx, x * x);
                } else {
                    let (n, mean, m2) = match s.data {
                        Data::Triple(n, mean, m2) => (n, mean, m2),
                        _ => (0, 0.0, 0.0),
                    };
                    let n = n + 1;
                    let delta = x - mean;
                    let mean = mean + delta / n as f64;
                    s.data = Data::Triple(n, mean, m2 + delta * (x - mean));
                }
            }
            Agg::Ewma => {
                let x = x.to_float()?;
                s.data = Data::Float(match s.data {
                    Data::Float(old) => self.alpha * x + (1.0 - self.alpha) * old,
                    _ => x,
                });
            }
            Agg::Quantile => {
                let x = x.to_float()?;
                if !matches!(s.data, Data::Quantile(_)) {
                    s.data = Data::Quantile(Box::default());
                }
                if let Data::Quantile(q) = &mut s.data {
                    q.times.push(t);
                    q.values.push(x);
                    let at = q.ordered.partition_point(|v| *v <= x);
                    q.ordered.insert(at, x);
                    if q.times.len() > QUANTILE_SAMPLES {
                        q.times.remove(0);
                        let old = q.values.remove(0);
                        let at = q.ordered.partition_point(|v| *v < old);
                        q.ordered.remove(at);
                    }
                }
            }
        }
        s.seen = max_of(s.seen, t);
        // a lifetime distinct count keeps its newest MAX_DISTINCT too (as the reference engine)
        if windowed || self.agg == Agg::Distinct {
            self.prune(s);
        }
        Ok(())
    }

    fn add(&self, s: &mut FState, t: f64, x: f64) {
        if self.window.is_none() {
            s.data = Data::Float(match s.data {
                Data::Float(v) if v != 0.0 => v + x,
                _ => 0.0 + x,
            });
            return;
        }
        add_to(buckets(&mut s.data), floor_idx(t, self.width), x);
    }

    fn prune(&self, s: &mut FState) {
        match &mut s.data {
            Data::Distinct(map) if map.len() > MAX_DISTINCT => {
                let mut order: Vec<(usize, f64)> = map.values().copied().enumerate().collect();
                order.sort_by(|a, b| float_order(&a.1, &b.1));
                let mut gone: Vec<usize> = order[..map.len() - MAX_DISTINCT]
                    .iter()
                    .map(|(i, _)| *i)
                    .collect();
                gone.sort_unstable();
                for i in gone.into_iter().rev() {
                    map.shift_remove_index(i);
                }
            }
            Data::Buckets(_) | Data::Avg(_) | Data::Stats(_) => {
                let floor = floor_idx(s.seen, self.width) - BUCKETS;
                let (b, rest): (&mut Buckets, Vec<&mut Buckets>) = match &mut s.data {
                    Data::Buckets(b) => (b, vec![]),
                    Data::Avg(p) => (&mut p.0, vec![&mut p.1]),
                    Data::Stats(p) => (&mut p.0, vec![&mut p.1, &mut p.2]),
                    _ => return,
                };
                if b.len() as i64 > BUCKETS {
                    let gone: Vec<i64> = b
                        .iter()
                        .filter(|(i, _)| *i <= floor)
                        .map(|(i, _)| *i)
                        .collect();
                    b.retain(|(i, _)| *i > floor);
                    for other in rest {
                        other.retain(|(i, _)| !gone.contains(i));
                    }
                }
            }
            _ => {}
        }
    }

    /// Bucket indexes (bottom, top] read at time ``t``.
    fn range(&self, s: &FState, t: f64) -> (i64, i64) {
        let top = floor_idx(t, self.width);
        (top.max(floor_idx(s.seen, self.width)) - BUCKETS, top)
    }

    fn in_window(&self, then: Option<f64>, t: f64) -> bool {
        then.is_some_and(|then| self.window.is_none_or(|w| t - w < then && then <= t))
    }

    /// The feature's value as seen by an event at time ``t`` (``None``: the key has no state).
    pub fn value(&self, s: Option<&FState>, t: f64) -> Value {
        let Some(s) = s else {
            return match self.agg {
                Agg::Count | Agg::Sum | Agg::Distinct => Value::Int(0),
                _ => Value::Null,
            };
        };
        match self.agg {
            Agg::Count | Agg::Sum => {
                let total = if self.window.is_none() {
                    match s.data {
                        Data::Float(v) if v != 0.0 => Some(v),
                        _ => None,
                    }
                } else {
                    match &s.data {
                        Data::Buckets(b) => {
                            let (bottom, top) = self.range(s, t);
                            sum(
                                b.iter()
                                    .filter(|(i, _)| bottom < *i && *i <= top)
                                    .map(|(_, v)| *v),
                                self.compensated_sum,
                            )
                        }
                        _ => None,
                    }
                };
                match (total, self.agg) {
                    (None, _) => Value::Int(0),
                    (Some(v), Agg::Count) => Value::Int(v.trunc() as i128),
                    (Some(v), _) => Value::Float(v),
                }
            }
            Agg::Avg => match &s.data {
                Data::Pair(total, n) if *n != 0 => Value::Float(total / *n as f64),
                Data::Avg(p) => {
                    let idxs = self.window_buckets(&p.0, s, t);
                    let n = sum(idxs.iter().map(|i| get(&p.1, *i)), self.compensated_sum);
                    match n {
                        Some(n) if n != 0.0 => Value::Float(
                            sum(idxs.iter().map(|i| get(&p.0, *i)), self.compensated_sum)
                                .unwrap_or(0.0)
                                / n,
                        ),
                        _ => Value::Null,
                    }
                }
                _ => Value::Null,
            },
            Agg::Min | Agg::Max => match &s.data {
                Data::Float(v) => Value::Float(*v),
                Data::Buckets(b) => {
                    let idxs = self.window_buckets(b, s, t);
                    let mut values = idxs.iter().map(|i| get(b, *i));
                    match values.next() {
                        None => Value::Null,
                        Some(first) => Value::Float(values.fold(first, |best, v| {
                            if (self.agg == Agg::Min && v < best)
                                || (self.agg == Agg::Max && v > best)
                            {
                                v
                            } else {
                                best
                            }
                        })),
                    }
                }
                _ => Value::Null,
            },
            Agg::Distinct => {
                // counted in place: a read copies nothing, and a lifetime count is the size
                let inside = |seen: &f64| self.window.is_none_or(|w| t - w < *seen && *seen <= t);
                let n = match &s.data {
                    Data::FewDistinct(few) => few.iter().filter(|(_, seen)| inside(seen)).count(),
                    Data::Distinct(map) if self.window.is_none() => map.len(),
                    Data::Distinct(map) => map.values().filter(|seen| inside(seen)).count(),
                    _ => 0,
                };
                Value::Int(n as i128)
            }
            Agg::Last | Agg::First => match &s.data {
                Data::Any(v) if self.in_window(s.at(), t) => Value::from(v),
                _ => Value::Null,
            },
            Agg::TimeSince => match s.at() {
                Some(at) if self.in_window(s.at(), t) => Value::Float(t - at),
                _ => Value::Null,
            },
            Agg::Stats => match &s.data {
                Data::Triple(n, mean, m2) if *n != 0 => {
                    let std = if *n > 1 {
                        (m2 / (*n - 1) as f64).sqrt()
                    } else {
                        0.0
                    };
                    Value::Stats(*n, *mean, std)
                }
                Data::Stats(p) => {
                    let idxs = self.window_buckets(&p.0, s, t);
                    let n = match sum(idxs.iter().map(|i| get(&p.1, *i)), self.compensated_sum) {
                        Some(n) if n != 0.0 => n,
                        _ => return Value::Null,
                    };
                    let total = sum(idxs.iter().map(|i| get(&p.0, *i)), self.compensated_sum)
                        .unwrap_or(0.0);
                    let squares = sum(idxs.iter().map(|i| get(&p.2, *i)), self.compensated_sum)
                        .unwrap_or(0.0);
                    let mean = total / n;
                    let var = if n > 1.0 {
                        max_of(0.0, (squares - n * mean * mean) / (n - 1.0))
                    } else {
                        0.0
                    };
                    Value::Stats(n.trunc() as i64, mean, var.sqrt())
                }
                _ => Value::Null,
            },
            Agg::Ewma => match s.data {
                Data::Float(v) => Value::Float(v),
                _ => Value::Null,
            },
            Agg::Quantile => match &s.data {
                Data::Quantile(qs) if !qs.times.is_empty() => {
                    let w = self.window.unwrap_or(f64::INFINITY);
                    let lowest = qs.times.iter().copied().fold(f64::INFINITY, f64::min);
                    let highest = qs.times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let inside: Vec<f64> = if t - w < lowest && highest <= t {
                        qs.ordered.clone()
                    } else {
                        let mut v: Vec<f64> = qs
                            .times
                            .iter()
                            .zip(&qs.values)
                            .filter(|(ti, _)| t - w < **ti && **ti <= t)
                            .map(|(_, v)| *v)
                            .collect();
                        v.sort_by(float_order);
                        v
                    };
                    if inside.is_empty() {
                        Value::Null
                    } else {
                        let at =
                            ((self.q * inside.len() as f64).trunc() as usize).min(inside.len() - 1);
                        Value::Float(inside[at])
                    }
                }
                _ => Value::Null,
            },
        }
    }

    fn window_buckets(&self, b: &Buckets, s: &FState, t: f64) -> Vec<i64> {
        let (bottom, top) = self.range(s, t);
        b.iter()
            .filter(|(i, _)| bottom < *i && *i <= top)
            .map(|(i, _)| *i)
            .collect()
    }

    /// True when the key went quiet past the window (or, for lifetime features, the ttl).
    pub fn expired(&self, s: &FState, watermark: f64) -> bool {
        self.window
            .or(self.ttl)
            .is_some_and(|h| s.seen < watermark - h)
    }
}

/// Python's ``sum()`` of floats from its int 0: None for no items (the int 0).
fn sum(values: impl Iterator<Item = f64>, compensated: bool) -> Option<f64> {
    let mut total: Option<f64> = None;
    let mut c = 0.0;
    for x in values {
        let f = total.unwrap_or(0.0);
        let t = f + x;
        if compensated {
            // Python 3.12+: Neumaier's improvement of Kahan-Babuska summation, as builtin sum()
            c += if f.abs() >= x.abs() {
                (f - t) + x
            } else {
                (x - t) + f
            };
        }
        total = Some(t);
    }
    total.map(|t| if c != 0.0 && c.is_finite() { t + c } else { t })
}

fn buckets(d: &mut Data) -> &mut Buckets {
    if !matches!(d, Data::Buckets(_)) {
        *d = Data::Buckets(Vec::new());
    }
    match d {
        Data::Buckets(b) => b,
        _ => unreachable!("set above"),
    }
}

fn avg_parts(d: &mut Data) -> &mut (Buckets, Buckets) {
    if !matches!(d, Data::Avg(_)) {
        *d = Data::Avg(Box::default());
    }
    match d {
        Data::Avg(p) => p,
        _ => unreachable!("set above"),
    }
}

fn stats_parts(d: &mut Data) -> &mut (Buckets, Buckets, Buckets) {
    if !matches!(d, Data::Stats(_)) {
        *d = Data::Stats(Box::default());
    }
    match d {
        Data::Stats(p) => p,
        _ => unreachable!("set above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distinct_spec(window: Option<f64>) -> FeatureSpec {
        FeatureSpec {
            by: 0,
            agg: Agg::Distinct,
            of: None,
            when: None,
            on: None,
            window,
            alpha: 0.1,
            q: 0.95,
            ttl: None,
            width: window.map_or(0.0, |w| w / BUCKETS as f64),
            compensated_sum: false,
        }
    }

    fn spec_of(agg: Agg) -> FeatureSpec {
        FeatureSpec {
            agg,
            ..distinct_spec(None)
        }
    }

    #[test]
    fn what_a_feature_keeps_the_state_codec_writes() {
        // a product past 64 bits, kept: a float (an integer there failed the checkpoint)
        let mut s = FState::default();
        let big = Value::Int(1 << 80);
        spec_of(Agg::Last).update(&mut s, 1.0, big).unwrap();
        assert!(
            matches!(&s.data, Data::Any(h) if matches!(Value::from(h), Value::Float(f) if f == (1u128 << 80) as f64))
        );
        assert!(crate::codec::encode_feature(&s).is_ok());
        // a text that is no number: skipped by an aggregate of numbers, as a missing value
        for agg in [Agg::Sum, Agg::Max, Agg::Stats, Agg::Ewma] {
            let mut s = FState::default();
            spec_of(agg).update(&mut s, 1.0, Value::str("n/a")).unwrap();
            assert_eq!(s.seen, FState::default().seen);
        }
    }

    #[test]
    fn distinct_values_stay_in_first_seen_order_past_the_short_list() {
        let spec = distinct_spec(Some(600.0));
        let mut s = FState::default();
        for i in 0..40 {
            spec.update(&mut s, 100.0 + i as f64, Value::Int(i % 30))
                .unwrap();
        }
        assert!(matches!(s.data, Data::Distinct(_)));
        assert!(matches!(spec.value(Some(&s), 140.0), Value::Int(30)));
        // 0..9 were seen again at 130..139: a 5-second window holds 135..139 only
        let narrow = distinct_spec(Some(5.0));
        assert!(matches!(narrow.value(Some(&s), 139.0), Value::Int(5)));
        let Data::Distinct(map) = &s.data else {
            unreachable!()
        };
        let keys: Vec<&str> = map.keys().map(|k| k.as_ref()).take(3).collect();
        assert_eq!(keys, ["0", "1", "2"]);
    }

    #[test]
    fn window_sums_add_as_the_running_pythons_sum_does() {
        let tenths = || std::iter::repeat_n(0.1, 10);
        assert_eq!(sum(tenths(), false), Some(0.9999999999999999)); // Python 3.11
        assert_eq!(sum(tenths(), true), Some(1.0)); // Python 3.12+
        assert_eq!(sum(std::iter::empty(), true), None); // sum([]) is the int 0
    }

    #[test]
    fn distinct_values_past_the_cap_drop_the_oldest_seen_windowed_or_not() {
        for window in [Some(1e9), None] {
            let spec = distinct_spec(window);
            let mut s = FState::default();
            for i in 0..(MAX_DISTINCT as i128 + 5) {
                spec.update(&mut s, i as f64, Value::Int(i)).unwrap();
            }
            let Data::Distinct(map) = &s.data else {
                unreachable!()
            };
            assert_eq!(map.len(), MAX_DISTINCT, "{window:?}");
            assert_eq!(
                map.keys().next().map(|k| k.as_ref()),
                Some("5"),
                "{window:?}"
            );
        }
    }
}
