//! The engine of `ringfence.engine.engine`, run over a compiled plan: features, scores,
//! rules and patterns per event, absence timers on the watermark, and the state rows changed.

use std::collections::HashMap;

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value as J;
use smol_str::SmolStrBuilder;

use crate::anomaly::{self, ZState};
use crate::expr::{is_money, money, Ctx, Env, Expr, Names, Path, Template};
use crate::features::{Agg, FeatureSpec, BUCKETS};
use crate::jv::{text, text_or_null, Jv};
use crate::patterns::{Captured, Kind, PState, Partial, Snap, Step, Timers, MAX_PARTIALS};
use crate::records;
use crate::store::{Key, State};
use crate::value::{from_json, py_str, py_text, Fault, Set, Text, Value, R};

/// A validated event, as the runtimes store it (``encode_event``).
#[derive(Deserialize)]
struct RawEvent {
    #[serde(deserialize_with = "text")]
    event_id: Text,
    #[serde(rename = "type", deserialize_with = "text")]
    etype: Text,
    occurred_at: f64,
    #[serde(deserialize_with = "text")]
    source: Text,
    data: Jv,
    #[serde(default, deserialize_with = "text_or_null")]
    customer_id: Option<Text>,
    #[serde(default, deserialize_with = "text_or_null")]
    account_id: Option<Text>,
}

pub struct Event {
    pub event_id: Text,
    pub etype: Text,
    pub occurred_at: f64,
    pub source: Text,
    pub customer_id: Option<Text>,
    pub account_id: Option<Text>,
    pub data: Arc<Jv>,
}

impl Event {
    pub fn parse(body: &[u8]) -> R<Event> {
        // checked as UTF-8 once here, not string by string in the parser
        let text = std::str::from_utf8(body)
            .map_err(|e| Fault::Value(format!("undecodable event: {e}")))?;
        let raw: RawEvent = serde_json::from_str(text)
            .map_err(|e| Fault::Value(format!("undecodable event: {e}")))?;
        Ok(Event {
            event_id: raw.event_id,
            etype: raw.etype,
            occurred_at: raw.occurred_at,
            source: raw.source,
            customer_id: raw.customer_id,
            account_id: raw.account_id,
            data: Arc::new(raw.data),
        })
    }

    fn of_snap(s: &Snap) -> Event {
        Event {
            event_id: s.event_id.clone(),
            etype: s.etype.clone(),
            occurred_at: s.occurred_at,
            source: s.source.clone(),
            customer_id: s.customer_id.clone(),
            account_id: None,
            data: s.data.clone(),
        }
    }

    fn snap(&self, offset: i64, ingested_at: f64) -> Arc<Snap> {
        Arc::new(Snap {
            event_id: self.event_id.clone(),
            etype: self.etype.clone(),
            occurred_at: self.occurred_at,
            source: self.source.clone(),
            customer_id: self.customer_id.clone(),
            data: self.data.clone(),
            offset,
            ingested_at,
        })
    }
}

fn walk_json<'a>(mut j: &'a J, path: &[Arc<str>]) -> Option<&'a J> {
    for part in path {
        j = j.as_object()?.get(part.as_ref())?;
    }
    Some(j)
}

fn opt_str(s: &Option<Text>) -> Value {
    s.as_ref().map_or(Value::Null, |s| Value::Str(s.clone()))
}

/// The field at ``path`` of ``event`` (a money field of data read as a number).
fn field_of(event: &Event, path: &Path) -> R<Value> {
    Ok(match path {
        Path::Env(env) => match env {
            Env::EventId => Value::Str(event.event_id.clone()),
            Env::Type => Value::Str(event.etype.clone()),
            Env::OccurredAt => Value::Float(event.occurred_at),
            Env::Source => Value::Str(event.source.clone()),
            Env::CustomerId => opt_str(&event.customer_id),
            Env::AccountId => opt_str(&event.account_id),
            Env::Unknown => Value::Null,
        },
        Path::Data { parts, money: m } => {
            let found = event.data.walk(parts).map_or(Value::Null, Jv::to_value);
            if *m {
                money(found)?
            } else {
                found
            }
        }
    })
}

// -- the plan ---------------------------------------------------------------------------------

#[derive(Deserialize)]
struct FeatureDoc {
    name: String,
    by: Vec<Vec<String>>,
    agg: String,
    of: Option<J>,
    #[serde(rename = "where")]
    when: Option<J>,
    on: Option<Vec<String>>,
    window: Option<f64>,
    alpha: f64,
    q: f64,
    ttl: Option<f64>,
}

#[derive(Deserialize)]
struct AnomalyDoc {
    name: String,
    by: Vec<Vec<String>>,
    inputs: Vec<J>,
    #[serde(rename = "where")]
    when: Option<J>,
    on: Option<Vec<String>>,
    min_samples: usize,
    samples: usize,
    window: Option<f64>,
}

#[derive(Deserialize)]
struct OutputDoc {
    title: J,
    summary: J,
    dedup: J,
    labels: Vec<(String, J)>,
}

#[derive(Deserialize)]
struct RuleDoc {
    on: Vec<String>,
    when: J,
    output: OutputDoc,
    evidence: Vec<String>,
}

#[derive(Deserialize)]
struct StepDoc {
    name: String,
    on: Vec<String>,
    when: Option<J>,
}

#[derive(Deserialize)]
struct PatternDoc {
    id: String,
    kind: String,
    by: Vec<Vec<String>>,
    within: f64,
    steps: Vec<StepDoc>,
    after: Option<StepDoc>,
    expect: Option<StepDoc>,
    output: OutputDoc,
    evidence: Vec<String>,
}

#[derive(Deserialize)]
struct PlanDoc {
    lists: Vec<String>,
    /// Values the pack reads that another keyed stage computes (they arrive carried).
    foreign: Vec<String>,
    /// Whether the reference engine's ``sum()`` is compensated (Python 3.12+).
    compensated_sum: bool,
    features: Vec<FeatureDoc>,
    anomalies: Vec<AnomalyDoc>,
    rules: Vec<RuleDoc>,
    patterns: Vec<PatternDoc>,
}

pub struct Anomaly {
    pub by: usize,
    pub inputs: Vec<Expr>,
    pub when: Option<Expr>,
    pub on: Option<FxHashSet<String>>,
    pub min_samples: usize,
    pub samples: usize,
    pub window: Option<f64>,
}

pub struct Output {
    pub title: Template,
    pub summary: Template,
    pub dedup: Template,
    pub labels: Vec<(String, Template)>,
}

pub struct Rule {
    pub on: FxHashSet<String>,
    pub when: Expr,
    pub output: Output,
    pub evidence: Vec<usize>,
}

pub struct Pattern {
    pub id: Arc<str>,
    pub kind: Kind,
    pub by: usize,
    pub within: f64,
    pub steps: Vec<Step>,
    pub after: Option<Step>,
    pub expect: Option<Step>,
    pub output: Output,
    pub evidence: Vec<usize>,
}

impl Pattern {
    fn on(&self, etype: &str) -> bool {
        self.steps
            .iter()
            .chain(&self.after)
            .chain(&self.expect)
            .any(|s| s.on.contains(etype))
    }
}

/// What one event type runs: indexes of features, scores, rules and patterns, in pack order.
#[derive(Default)]
pub struct TypePlan {
    features: Vec<usize>,
    anomalies: Vec<usize>,
    rules: Vec<usize>,
    patterns: Vec<usize>,
    /// The key groups (indices into ``bys``) of its own features, scores and patterns, each
    /// once: the records a batch fetches ahead for it (a rule reading another type's feature,
    /// or a timer, may read others).
    groups: Vec<usize>,
}

/// A batch's later event, fetched ahead: the group and hash of each key it may read, and the
/// place its record was found at (once the second step ran).
#[derive(Default)]
pub struct Ahead(Vec<(usize, u64, Option<usize>)>);

pub struct Plan {
    pub features: Vec<FeatureSpec>,
    pub anomalies: Vec<Anomaly>,
    pub rules: Vec<Rule>,
    pub patterns: Vec<Pattern>,
    /// Distinct key field lists; features, scores and patterns name theirs by index.
    pub bys: Vec<Vec<Path>>,
    /// Feature names then score names: the slots of named values.
    pub value_names: Vec<String>,
    pub list_names: Vec<String>,
    /// How many distinct event fields expressions read (an event reads each once).
    pub fields: usize,
}

struct Resolver<'a> {
    values: &'a HashMap<String, usize>,
    lists: &'a mut Vec<String>,
    fields: &'a mut Vec<Vec<String>>,
}

impl Names for Resolver<'_> {
    fn value_slot(&self, name: &str) -> Option<usize> {
        self.values.get(name).copied()
    }

    fn list_slot(&mut self, name: &str) -> usize {
        match self.lists.iter().position(|l| l == name) {
            Some(i) => i,
            None => {
                self.lists.push(name.to_string());
                self.lists.len() - 1
            }
        }
    }

    fn field_slot(&mut self, path: &[String]) -> usize {
        match self.fields.iter().position(|p| p == path) {
            Some(i) => i,
            None => {
                self.fields.push(path.to_vec());
                self.fields.len() - 1
            }
        }
    }
}

fn types(on: Option<Vec<String>>) -> Option<FxHashSet<String>> {
    on.map(|v| v.into_iter().collect())
}

impl Plan {
    pub fn parse(raw: &[u8]) -> Result<Plan, String> {
        let doc: PlanDoc = serde_json::from_slice(raw).map_err(|e| format!("plan: {e}"))?;
        let value_names: Vec<String> = doc
            .features
            .iter()
            .map(|f| f.name.clone())
            .chain(doc.anomalies.iter().map(|a| a.name.clone()))
            .chain(doc.foreign.iter().cloned())
            .collect();
        let slots: HashMap<String, usize> = value_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let mut list_names = doc.lists.clone();
        let mut field_paths = Vec::new();
        let mut by_keys: Vec<Vec<Vec<String>>> = Vec::new();
        let mut by_index = |by: &Vec<Vec<String>>| match by_keys.iter().position(|b| b == by) {
            Some(i) => i,
            None => {
                by_keys.push(by.clone());
                by_keys.len() - 1
            }
        };
        let mut names = Resolver {
            values: &slots,
            lists: &mut list_names,
            fields: &mut field_paths,
        };
        let opt = |j: &Option<J>, names: &mut Resolver| -> Result<Option<Expr>, String> {
            j.as_ref().map(|j| Expr::compile(j, names)).transpose()
        };
        let mut features = Vec::new();
        for f in doc.features {
            let agg =
                Agg::parse(&f.agg).ok_or_else(|| format!("plan: unknown aggregate {}", f.agg))?;
            features.push(FeatureSpec {
                by: by_index(&f.by),
                agg,
                of: opt(&f.of, &mut names)?,
                when: opt(&f.when, &mut names)?,
                on: types(f.on),
                width: f.window.map_or(0.0, |w| w / BUCKETS as f64),
                compensated_sum: doc.compensated_sum,
                window: f.window,
                alpha: f.alpha,
                q: f.q,
                ttl: f.ttl,
            });
        }
        let mut anomalies = Vec::new();
        for a in doc.anomalies {
            anomalies.push(Anomaly {
                by: by_index(&a.by),
                inputs: a
                    .inputs
                    .iter()
                    .map(|i| Expr::compile(i, &mut names))
                    .collect::<Result<_, _>>()?,
                when: opt(&a.when, &mut names)?,
                on: types(a.on),
                min_samples: a.min_samples,
                samples: a.samples,
                window: a.window,
            });
        }
        let evidence = |names_: &[String]| -> Vec<usize> {
            names_
                .iter()
                .filter_map(|n| slots.get(n).copied())
                .collect()
        };
        let output = |o: &OutputDoc, names: &mut Resolver| -> Result<Output, String> {
            Ok(Output {
                title: Template::compile(&o.title, names)?,
                summary: Template::compile(&o.summary, names)?,
                dedup: Template::compile(&o.dedup, names)?,
                labels: o
                    .labels
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), Template::compile(t, names)?)))
                    .collect::<Result<_, String>>()?,
            })
        };
        let mut rules = Vec::new();
        for r in doc.rules {
            rules.push(Rule {
                on: r.on.into_iter().collect(),
                when: Expr::compile(&r.when, &mut names)?,
                output: output(&r.output, &mut names)?,
                evidence: evidence(&r.evidence),
            });
        }
        let step = |s: Option<StepDoc>, names: &mut Resolver| -> Result<Option<Step>, String> {
            s.map(|s| {
                Ok(Step {
                    name: Arc::from(s.name),
                    on: s.on.into_iter().collect(),
                    when: s
                        .when
                        .as_ref()
                        .map(|w| Expr::compile(w, names))
                        .transpose()?,
                })
            })
            .transpose()
        };
        let mut patterns = Vec::new();
        for p in doc.patterns {
            let kind = if p.kind == "sequence" {
                Kind::Sequence
            } else {
                Kind::Absence
            };
            let mut steps = Vec::new();
            for s in p.steps {
                steps.extend(step(Some(s), &mut names)?);
            }
            patterns.push(Pattern {
                id: Arc::from(p.id),
                kind,
                by: by_index(&p.by),
                within: p.within,
                steps,
                after: step(p.after, &mut names)?,
                expect: step(p.expect, &mut names)?,
                output: output(&p.output, &mut names)?,
                evidence: evidence(&p.evidence),
            });
        }
        let bys = by_keys
            .iter()
            .map(|by| by.iter().map(|p| Path::parse(p)).collect())
            .collect();
        Ok(Plan {
            features,
            anomalies,
            rules,
            patterns,
            bys,
            value_names,
            list_names,
            fields: field_paths.len(),
        })
    }

    fn for_type(&self, etype: &str) -> TypePlan {
        let applies =
            |on: &Option<FxHashSet<String>>| on.as_ref().is_none_or(|on| on.contains(etype));
        let features: Vec<usize> = (0..self.features.len())
            .filter(|i| applies(&self.features[*i].on))
            .collect();
        let anomalies: Vec<usize> = (0..self.anomalies.len())
            .filter(|i| applies(&self.anomalies[*i].on))
            .collect();
        let patterns: Vec<usize> = (0..self.patterns.len())
            .filter(|i| self.patterns[*i].on(etype))
            .collect();
        let mut groups: Vec<usize> = features.iter().map(|&i| self.features[i].by).collect();
        groups.extend(anomalies.iter().map(|&i| self.anomalies[i].by));
        groups.extend(patterns.iter().map(|&i| self.patterns[i].by));
        groups.sort_unstable();
        groups.dedup();
        TypePlan {
            features,
            anomalies,
            rules: (0..self.rules.len())
                .filter(|i| self.rules[*i].on.contains(etype))
                .collect(),
            patterns,
            groups,
        }
    }
}

// -- evaluation -------------------------------------------------------------------------------

/// Per-event memory: named values as first read (or computed), and state keys.
pub struct Scratch {
    values: Vec<Option<Value>>,
    keys: Vec<Option<Option<Key>>>,
    /// The event's fields read so far, by slot (``Expr::Field``'s).
    fields: Vec<Option<Value>>,
    /// When features see the event: its ``event_time_mark``, never past its arrival.
    at: f64,
}

impl Scratch {
    fn clear(&mut self) {
        self.values.iter_mut().for_each(|v| *v = None);
        self.keys.iter_mut().for_each(|k| *k = None);
        self.fields.iter_mut().for_each(|f| *f = None);
        self.at = f64::NAN;
    }

    fn new(plan: &Plan) -> Scratch {
        Scratch {
            values: vec![None; plan.value_names.len()],
            keys: vec![None; plan.bys.len()],
            fields: vec![None; plan.fields],
            at: f64::NAN,
        }
    }
}

struct EvalCtx<'a> {
    plan: &'a Plan,
    state: &'a State,
    lists: &'a [Value],
    event: &'a Event,
    steps: Option<&'a Captured>,
    scratch: &'a mut Scratch,
}

/// The state key of ``event`` for key fields ``by``: None if one is missing; "global" for none.
fn key_with(by: &[Path], mut field: impl FnMut(&Path) -> R<Value>) -> R<Option<Key>> {
    if by.is_empty() {
        return Ok(Some(Key::new_inline("global")));
    }
    if let [path] = by {
        // one field, the usual key: a long text is the event's own, shared (no new text)
        return Ok(match field(path)? {
            Value::Null => None,
            Value::Str(s) => Some(Key::from(s)),
            other => Some(py_text(&other)),
        });
    }
    let mut key = SmolStrBuilder::new(); // inline while it fits, as most keys do
    for (i, path) in by.iter().enumerate() {
        let v = field(path)?;
        if v.is_null() {
            return Ok(None);
        }
        if i > 0 {
            key.push(KEY_SEPARATOR);
        }
        match &v {
            Value::Str(s) => push_part(&mut key, s),
            other => push_part(&mut key, &py_str(other)),
        }
    }
    Ok(Some(key.finish()))
}

const KEY_SEPARATOR: char = '\x1f';
const KEY_ESCAPE: char = '\x1e';

/// A key's part without a bare separator (its own separator is ESCAPE "1", its own escape
/// ESCAPE "0"), so a key of several parts is theirs only: data strings may hold U+001F. As
/// ``ringfence.engine.keys``; a part without either, nearly every one, is itself.
fn push_part(key: &mut SmolStrBuilder, part: &str) {
    if !part.contains([KEY_SEPARATOR, KEY_ESCAPE]) {
        key.push_str(part);
        return;
    }
    for ch in part.chars() {
        match ch {
            KEY_ESCAPE => key.push_str("\x1e0"),
            KEY_SEPARATOR => key.push_str("\x1e1"),
            other => key.push(other),
        }
    }
}

impl EvalCtx<'_> {
    fn key(&mut self, by: usize) -> R<Option<Key>> {
        if let Some(k) = &self.scratch.keys[by] {
            return Ok(k.clone());
        }
        let event = self.event;
        let k = key_with(&self.plan.bys[by], |p| field_of(event, p))?;
        self.scratch.keys[by] = Some(k.clone());
        Ok(k)
    }

    fn eval(&mut self, e: &Expr) -> R<Value> {
        e.value(self)
    }

    fn truthy(&mut self, e: &Option<Expr>) -> R<bool> {
        match e {
            None => Ok(true),
            Some(e) => e.truthy(self),
        }
    }

    fn step_matches(&mut self, step: &Step) -> R<bool> {
        Ok(step.on.contains(self.event.etype.as_str()) && self.truthy(&step.when)?)
    }
}

impl Ctx for EvalCtx<'_> {
    fn field(&mut self, path: &Path, slot: usize) -> R<&Value> {
        // a scratch serves one event, so a field read once holds for the rest of it
        if self.scratch.fields[slot].is_none() {
            self.scratch.fields[slot] = Some(field_of(self.event, path)?);
        }
        Ok(self.scratch.fields[slot].as_ref().expect("read above"))
    }

    fn feature(&mut self, slot: usize) -> R<&Value> {
        if self.scratch.values[slot].is_none() {
            let v = match self.plan.features.get(slot) {
                Some(spec) => {
                    let key = self.key(spec.by)?;
                    let state = key.and_then(|k| self.state.feature(slot, &k));
                    spec.value(state, self.scratch.at)
                }
                None => Value::Null, // a score for an event it does not apply to
            };
            self.scratch.values[slot] = Some(v);
        }
        Ok(self.scratch.values[slot].as_ref().expect("read above"))
    }

    fn list(&self, slot: usize) -> &Value {
        &self.lists[slot]
    }

    fn step(&self, name: &str, path: &[Arc<str>]) -> R<Value> {
        let Some(snap) = self
            .steps
            .and_then(|c| c.iter().find(|(n, _)| n.as_ref() == name))
            .map(|(_, s)| s)
        else {
            return Ok(Value::Null);
        };
        let Some((head, rest)) = path.split_first() else {
            return Ok(Value::Null);
        };
        let found = match head.as_ref() {
            "event_id" => Value::Str(snap.event_id.clone()),
            "type" => Value::Str(snap.etype.clone()),
            "occurred_at" => Value::Float(snap.occurred_at),
            "source" => Value::Str(snap.source.clone()),
            "customer_id" => opt_str(&snap.customer_id),
            "offset" => Value::Int(snap.offset as crate::value::Int),
            "ingested_at" => Value::Float(snap.ingested_at),
            "data" => {
                let v = snap.data.walk(rest).map_or(Value::Null, Jv::to_value);
                return if is_money(rest) { money(v) } else { Ok(v) };
            }
            _ => Value::Null,
        };
        Ok(if rest.is_empty() { found } else { Value::Null })
    }
}

// -- the engine -------------------------------------------------------------------------------

/// Which detection a signal is of.
#[derive(Clone, Copy)]
pub enum Detection {
    Rule(usize),
    Pattern(usize),
}

pub struct Signal {
    pub detection: Detection,
    pub dedup: String,
    pub title: String,
    pub summary: String,
    pub labels: Vec<(String, String)>,
    pub event_id: Text,
    pub event_type: Text,
    pub offset: i64,
    pub occurred_at: f64,
    pub ingested_at: f64,
    pub features: Vec<(usize, Value)>,
    pub customer_id: Option<Text>,
    pub late: bool,
    pub related: Vec<Arc<Snap>>,
}

pub struct Engine {
    pub plan: Plan,
    pub state: State,
    pub lists: Vec<Value>,
    pub lateness: f64,
    pub timers: Timers,
    pub max_event_time: FxHashMap<i64, f64>,
    pub late_events: u64,
    by_type: FxHashMap<Text, Arc<TypePlan>>,
    scratch: Option<Scratch>,
    pattern_index: HashMap<Arc<str>, usize>,
    /// The pattern state taken out while an event moves it on (see ``settle_taken``).
    taken: Option<(usize, Key)>,
    /// The partitions' event times and the late events counted at the undo point
    /// (``undo_point``): none before the first...
    undo_marks: Option<(FxHashMap<i64, f64>, u64)>,
    /// ...and at the last take of the changes since, where a commit of it moves the point.
    taken_marks: Option<(FxHashMap<i64, f64>, u64)>,
}

impl Engine {
    pub fn new(plan: Plan, lateness: f64) -> Engine {
        let features: Vec<usize> = plan.features.iter().map(|f| f.by).collect();
        let scores: Vec<usize> = plan.anomalies.iter().map(|a| a.by).collect();
        let patterns: Vec<usize> = plan.patterns.iter().map(|p| p.by).collect();
        let state = State::new(&features, &scores, &patterns, plan.bys.len());
        let empty = Value::Set(Arc::new(Set::default()));
        Engine {
            lists: vec![empty; plan.list_names.len()],
            pattern_index: plan
                .patterns
                .iter()
                .enumerate()
                .map(|(i, p)| (p.id.clone(), i))
                .collect(),
            plan,
            state,
            lateness,
            timers: Timers::default(),
            max_event_time: FxHashMap::default(),
            late_events: 0,
            by_type: FxHashMap::default(),
            scratch: None,
            taken: None,
            undo_marks: None,
            taken_marks: None,
        }
    }

    /// The state held now is what the store holds (a checkpoint restored): ``undo`` comes
    /// back here. From the first on, the engine keeps what ``undo`` needs.
    pub fn undo_point(&mut self) {
        self.state.undo_point();
        self.undo_marks = Some((self.max_event_time.clone(), self.late_events));
        self.taken_marks = None;
    }

    /// The changes were taken (for a commit): a commit of them moves the undo point here.
    pub fn taken(&mut self) {
        if self.undo_marks.is_some() {
            self.state.taken();
            self.taken_marks = Some((self.max_event_time.clone(), self.late_events));
        }
    }

    /// The changes taken last go to the store (a commit carries them): ``undo`` comes back to
    /// that take from now on, not to what events changed after it.
    pub fn take_committed(&mut self) {
        if let Some(marks) = self.taken_marks.take() {
            self.state.take_committed();
            self.undo_marks = Some(marks);
        }
    }

    /// Keep nothing to undo with any more (the copies cost time an event), until the next
    /// ``undo_point``.
    pub fn forget_undo(&mut self) {
        self.state.forget_undo();
        self.undo_marks = None;
        self.taken_marks = None;
    }

    /// Put the engine back as it was at the last ``undo_point``: the records changed since,
    /// the event times, the timers of the pattern states put back. False, changing nothing,
    /// if it cannot (no undo point, or a change since kept no image): reload the checkpoint.
    pub fn undo(&mut self) -> bool {
        let Some((marks, late)) = &self.undo_marks else {
            return false;
        };
        let (marks, late) = (marks.clone(), *late);
        let Some(patterns) = self.state.undo() else {
            return false;
        };
        self.max_event_time = marks;
        self.late_events = late;
        self.taken = None;
        self.taken_marks = None;
        // a timer the undone events fired is armed again (one twice finds its deadline gone)
        for (pi, key) in patterns {
            self.rearm(pi, &key);
        }
        true
    }

    pub fn set_list(&mut self, name: &str, values: Vec<Value>) {
        if let Some(i) = self.plan.list_names.iter().position(|n| n == name) {
            self.lists[i] = Value::Set(Arc::new(Set::from_values(values)));
        }
    }

    pub fn watermark(&self, partition: Option<i64>) -> f64 {
        let latest = match partition {
            None => self
                .max_event_time
                .values()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max),
            Some(p) => self
                .max_event_time
                .get(&p)
                .copied()
                .unwrap_or(f64::NEG_INFINITY),
        };
        latest - self.lateness
    }

    fn type_plan(&mut self, etype: &Text) -> Arc<TypePlan> {
        if let Some(p) = self.by_type.get(etype) {
            return p.clone();
        }
        let p = Arc::new(self.plan.for_type(etype));
        self.by_type.insert(etype.clone(), p.clone());
        p
    }

    // -- fetching ahead: a batch's later events' records, while the earlier ones run --------
    //
    // At a bank's scale each record an event reads is a few cache misses one after the other
    // (its slot, its pair, its states). A batch takes those steps for the events a few places
    // ahead of the one it runs, a step an event, so they overlap the work (see ``records.rs``).

    /// First step for ``event``: the slots of the keys its groups may read.
    pub fn look_ahead(&mut self, event: &Event) -> Ahead {
        let tp = self.type_plan(&event.etype);
        let mut ahead = Ahead(Vec::with_capacity(tp.groups.len()));
        for &g in &tp.groups {
            // a key the event cannot make is simply not fetched; running it says why
            if let Ok(Some(key)) = key_with(&self.plan.bys[g], |p| field_of(event, p)) {
                let h = records::hash(&key);
                self.state.group(g).prefetch_slot(h);
                ahead.0.push((g, h, None));
            }
        }
        ahead
    }

    /// Second step: the pairs the slots point to.
    pub fn fetch_pairs(&self, ahead: &mut Ahead) {
        for (g, h, at) in &mut ahead.0 {
            *at = self.state.group(*g).prefetch_pair(*h);
        }
    }

    /// Third step: the records' states.
    pub fn fetch_records(&self, ahead: &Ahead) {
        for &(g, _, at) in &ahead.0 {
            if let Some(at) = at {
                self.state.group(g).prefetch_record(at);
            }
        }
    }

    /// Fourth step: what the states point to.
    pub fn fetch_states(&self, ahead: &Ahead) {
        for &(g, _, at) in &ahead.0 {
            if let Some(at) = at {
                self.state.group(g).prefetch_states(at);
            }
        }
    }

    /// Fire the timers the event passes, fold it into features, scores and patterns and
    /// evaluate the rules (``evaluate_rules``); ``carried``: values other stages computed.
    /// Returns the signals and, when ``report`` names values, those values.
    pub fn process(
        &mut self,
        event: &Event,
        offset: i64,
        partition: i64,
        ingested_at: f64,
        carried: &[(usize, Value)],
        evaluate_rules: bool,
    ) -> R<(Vec<Signal>, Scratch)> {
        let late = event.occurred_at < self.watermark(Some(partition));
        if late {
            self.late_events += 1;
        }
        let newest = self
            .max_event_time
            .entry(partition)
            .or_insert(f64::NEG_INFINITY);
        let mark = event_time_mark(event.occurred_at, ingested_at);
        if mark > *newest {
            *newest = mark;
        }
        let mut signals = if self.timers.len() > 0 {
            self.advance(None)?
        } else {
            Vec::new()
        };
        let tp = self.type_plan(&event.etype);
        let mut scratch = self
            .scratch
            .take()
            .unwrap_or_else(|| Scratch::new(&self.plan));
        scratch.clear();
        // features see (and keep) the event at its mark: never past its arrival
        let t = mark;
        scratch.at = t;
        for (slot, v) in carried {
            scratch.values[*slot] = Some(v.clone());
        }
        for &fi in &tp.features {
            let spec = &self.plan.features[fi];
            let mut ctx = self.ctx(event, None, &mut scratch);
            if !ctx.truthy(&spec.when)? {
                continue;
            }
            let Some(key) = ctx.key(spec.by)? else {
                continue;
            };
            if spec.agg.read_before_update() {
                let before = spec.value(self.state.feature(fi, &key), t);
                ctx.scratch.values[fi] = Some(before);
            }
            let x = match &spec.of {
                Some(of) => ctx.eval(of)?,
                None => Value::Null,
            };
            spec.update(self.state.feature_mut(fi, &key), t, x)?;
        }
        let nf = self.plan.features.len();
        for &ai in &tp.anomalies {
            let score = self.score(ai, event, &mut scratch, t)?;
            scratch.values[nf + ai] = Some(score.map_or(Value::Null, Value::Float));
        }
        if evaluate_rules {
            for &ri in &tp.rules {
                let rule = &self.plan.rules[ri];
                let mut ctx = self.ctx(event, None, &mut scratch);
                if rule.when.truthy(&mut ctx)? {
                    let s = ctx.signal(
                        Detection::Rule(ri),
                        &rule.output,
                        &rule.evidence,
                        offset,
                        ingested_at,
                        late,
                        vec![],
                    )?;
                    signals.push(s);
                }
            }
        }
        if !tp.patterns.is_empty() {
            let snap = event.snap(offset, ingested_at);
            for &pi in &tp.patterns {
                if let Some(s) = self.advance_pattern(pi, event, &snap, &mut scratch, late)? {
                    signals.push(s);
                }
            }
        }
        Ok((signals, scratch))
    }

    fn ctx<'a>(
        &'a self,
        event: &'a Event,
        steps: Option<&'a Captured>,
        scratch: &'a mut Scratch,
    ) -> EvalCtx<'a> {
        EvalCtx {
            plan: &self.plan,
            state: &self.state,
            lists: &self.lists,
            event,
            steps,
            scratch,
        }
    }

    fn score(&mut self, ai: usize, event: &Event, scratch: &mut Scratch, t: f64) -> R<Option<f64>> {
        let spec = &self.plan.anomalies[ai];
        let mut ctx = self.ctx(event, None, scratch);
        if !ctx.truthy(&spec.when)? {
            return Ok(None);
        }
        let key = key_with(&self.plan.bys[spec.by], |p| field_of(event, p))?;
        let mut x = None;
        for input in &spec.inputs {
            match ctx.eval(input)? {
                Value::Int(i) => x = x.or(Some(i as f64)),
                Value::Float(f) if !f.is_nan() => x = x.or(Some(f)), // a NaN is no measurement
                _ => return Ok(None),
            }
        }
        let (Some(key), Some(x)) = (key, x) else {
            return Ok(None);
        };
        let (min_samples, samples) = (spec.min_samples, spec.samples);
        let state = self.state.score_mut(ai, &key, || ZState {
            seen: t,
            values: Vec::new(),
        });
        Ok(anomaly::score(state, x, t, min_samples, samples))
    }

    fn advance_pattern(
        &mut self,
        pi: usize,
        event: &Event,
        snap: &Arc<Snap>,
        scratch: &mut Scratch,
        late: bool,
    ) -> R<Option<Signal>> {
        let spec = &self.plan.patterns[pi];
        let t = scratch.at;
        let Some(key) = key_with(&self.plan.bys[spec.by], |p| field_of(event, p))? else {
            return Ok(None);
        };
        // taken out while the event moves it on, put back below if it still matters
        let existing = self.state.take_pattern(pi, &key);
        let existed = existing.is_some();
        let mut state = existing.unwrap_or_else(|| PState::new(t, Vec::new(), None, None));
        if t > state.seen {
            state.seen = t;
        }
        if existed {
            self.taken = Some((pi, key.clone())); // the place is given up should the step panic
        }
        let moved = self.move_pattern(pi, &key, &mut state, event, snap, scratch, late);
        self.taken = None;
        let kept = !state.partials.is_empty()
            || state.deadline().is_some()
            || self.plan.patterns[pi].kind == Kind::Absence;
        if moved.is_ok() && kept {
            self.state.put_pattern(pi, &key, state);
        } else if existed {
            // ended by the event: a changed row; dropped by a failed one: unmarked (the
            // runtime goes back to its checkpoint)
            self.state.remove_pattern(pi, &key, moved.is_ok());
        }
        moved
    }

    /// Give up a pattern state's place a step that panicked left taken (``advance_pattern``);
    /// the extension calls it after every call that runs events.
    pub fn settle_taken(&mut self) {
        if let Some((pi, key)) = self.taken.take() {
            self.state.remove_pattern(pi, &key, false);
        }
    }

    /// :meth:`advance_pattern`'s step: the event moves ``state`` (taken out) on.
    #[allow(clippy::too_many_arguments)]
    fn move_pattern(
        &mut self,
        pi: usize,
        key: &Key,
        state: &mut PState,
        event: &Event,
        snap: &Arc<Snap>,
        scratch: &mut Scratch,
        late: bool,
    ) -> R<Option<Signal>> {
        let spec = &self.plan.patterns[pi];
        let mut signal = None;
        if spec.kind == Kind::Sequence {
            if let Some(completed) = self.advance_sequence(spec, state, event, snap, scratch)? {
                let related = completed[..completed.len() - 1]
                    .iter()
                    .map(|(_, s)| s.clone())
                    .collect();
                let mut ctx = self.ctx(event, Some(&completed), scratch);
                signal = Some(ctx.signal(
                    Detection::Pattern(pi),
                    &spec.output,
                    &spec.evidence,
                    snap.offset,
                    snap.ingested_at,
                    late,
                    related,
                )?);
            }
        } else {
            let armed = state.deadline();
            if self.advance_absence(spec, state, event, snap, scratch)? {
                let deadline = state.deadline().expect("armed above");
                if armed.is_none_or(|a| deadline < a) {
                    self.timers.add(deadline, spec.id.clone(), key.clone());
                }
            }
        }
        Ok(signal)
    }

    fn advance_sequence(
        &self,
        spec: &Pattern,
        state: &mut PState,
        event: &Event,
        snap: &Arc<Snap>,
        scratch: &mut Scratch,
    ) -> R<Option<Captured>> {
        let t = scratch.at;
        // a late event (before a partial began) neither advances nor ends that partial
        state
            .partials
            .retain(|p| t < p.started || t - p.started <= spec.within);
        let last = spec.steps.len() as i64 - 1;
        let mut completed: Option<Captured> = None;
        let mut advanced: Vec<Partial> = Vec::new();
        let mut done: Vec<usize> = Vec::new();
        for (i, partial) in state.partials.iter().enumerate() {
            if t < partial.started {
                continue;
            }
            // a restored row names its step: one past the pattern's steps is a corrupt row
            let next = usize::try_from(partial.step + 1).ok();
            let Some(step) = next.and_then(|n| spec.steps.get(n)) else {
                return Err(Fault::Value(
                    "a pattern state names a step the pattern does not have".into(),
                ));
            };
            let matched = self
                .ctx(event, Some(&partial.captured), scratch)
                .step_matches(step)?;
            if !matched {
                continue;
            }
            // the partial stays as it was too: a decoy cannot use up the match, only the
            // step that completes it does
            let mut captured = partial.captured.clone();
            captured.retain(|(n, _)| *n != step.name);
            captured.push((step.name.clone(), snap.clone()));
            if partial.step + 1 == last {
                done.push(i);
                if completed.is_none() {
                    completed = Some(
                        spec.steps
                            .iter()
                            .filter_map(|s| captured.iter().find(|(n, _)| *n == s.name).cloned())
                            .collect(),
                    );
                }
            } else {
                advanced.push(Partial {
                    started: partial.started,
                    step: partial.step + 1,
                    captured,
                });
            }
        }
        for i in done.into_iter().rev() {
            state.partials.remove(i);
        }
        state.partials.extend(advanced);
        if self
            .ctx(event, None, scratch)
            .step_matches(&spec.steps[0])?
            && completed.is_none()
        {
            state.partials.push(Partial {
                started: t,
                step: 0,
                captured: vec![(spec.steps[0].name.clone(), snap.clone())],
            });
        }
        bound_partials(&mut state.partials);
        Ok(completed)
    }

    fn advance_absence(
        &self,
        spec: &Pattern,
        state: &mut PState,
        event: &Event,
        snap: &Arc<Snap>,
        scratch: &mut Scratch,
    ) -> R<bool> {
        let t = scratch.at;
        let expect = spec.expect.as_ref().expect("an absence expects");
        let Some(after) = &spec.after else {
            // a heartbeat: the newest expected event sets the deadline (a late one is no news)
            let newest = state
                .anchor
                .as_ref()
                .is_none_or(|a| t >= event_time_mark(a.occurred_at, a.ingested_at));
            if newest && self.ctx(event, None, scratch).step_matches(expect)? {
                state.anchor = Some(snap.clone());
                state.set_deadline(Some(t + spec.within));
                return Ok(true);
            }
            return Ok(false);
        };
        if let (Some(deadline), Some(anchor)) = (state.deadline(), state.anchor.clone()) {
            let steps: Captured = vec![(after.name.clone(), anchor)];
            if t <= deadline
                && self
                    .ctx(event, Some(&steps), scratch)
                    .step_matches(expect)?
            {
                state.anchor = None;
                state.set_deadline(None);
            }
        }
        if state.deadline().is_none() && self.ctx(event, None, scratch).step_matches(after)? {
            state.anchor = Some(snap.clone());
            state.set_deadline(Some(t + spec.within));
            return Ok(true);
        }
        Ok(false)
    }

    /// Fire the absence timers whose deadline is before ``watermark`` (default: the events').
    pub fn advance(&mut self, watermark: Option<f64>) -> R<Vec<Signal>> {
        let mark = watermark.unwrap_or_else(|| self.watermark(None));
        let mut signals = Vec::new();
        while let Some(timer) = self.timers.pop_due(mark) {
            let (deadline, id, key) = (timer.0, timer.1, timer.2);
            let Some(&pi) = self.pattern_index.get(&id) else {
                continue;
            };
            let Some(state) = self.state.pattern(pi, &key) else {
                continue;
            };
            let (Some(due), Some(anchor)) = (state.deadline(), state.anchor.clone()) else {
                continue; // cancelled since
            };
            if due > deadline {
                self.timers.add(due, id, key); // pushed later since: wait for the new deadline
                continue;
            }
            if due < deadline {
                continue; // moved earlier since: that deadline has its own entry
            }
            let spec = &self.plan.patterns[pi];
            let event = Event::of_snap(&anchor);
            let name = spec
                .after
                .as_ref()
                .or(spec.expect.as_ref())
                .expect("an absence has steps")
                .name
                .clone();
            let steps: Captured = vec![(name, anchor.clone())];
            let mut scratch = Scratch::new(&self.plan);
            scratch.at = event_time_mark(anchor.occurred_at, anchor.ingested_at);
            let mut ctx = self.ctx(&event, Some(&steps), &mut scratch);
            let signal = ctx.signal(
                Detection::Pattern(pi),
                &spec.output,
                &spec.evidence,
                anchor.offset,
                anchor.ingested_at,
                false,
                vec![],
            );
            let mut signal = match signal {
                Ok(signal) => signal,
                Err(fault) => {
                    // not fired: its state keeps the deadline, so it keeps its timer (an undo of
                    // the failed events would otherwise leave the deadline with none)
                    self.timers.add(deadline, id, key);
                    return Err(fault);
                }
            };
            // an absence happens when its deadline passes: that is the alert's event time
            signal.occurred_at = deadline;
            signals.push(signal);
            let has_after = spec.after.is_some();
            if let Some(state) = self.state.pattern_mut(pi, &key) {
                state.set_deadline(None);
                if has_after {
                    state.anchor = None;
                }
            }
        }
        Ok(signals)
    }

    /// Current values of every feature whose key is fully given by ``fields``.
    pub fn features_of(&self, fields: &J, at: f64) -> Vec<(usize, Value)> {
        let mut out = Vec::new();
        for (i, spec) in self.plan.features.iter().enumerate() {
            let by = &self.plan.bys[spec.by];
            if by.is_empty() {
                continue;
            }
            let key = key_with(by, |p| {
                let v = match p {
                    Path::Data { parts, .. } => {
                        fields.get("data").and_then(|d| walk_json(d, parts))
                    }
                    Path::Env(_) => None,
                };
                Ok(match (p, v) {
                    (Path::Data { .. }, v) => v.map_or(Value::Null, from_json),
                    (Path::Env(env), _) => {
                        fields.get(env_name(*env)).map_or(Value::Null, from_json)
                    }
                })
            });
            if let Ok(Some(key)) = key {
                out.push((i, spec.value(self.state.feature(i, &key), at)));
            }
        }
        out
    }

    /// Drop the state of keys quiet past their horizon; return how many.
    pub fn expire(&mut self, watermark: f64) -> usize {
        let plan = &self.plan;
        self.state.expire(
            |i, s| plan.features[i].expired(s, watermark),
            |i, s| s.seen < watermark - plan.anomalies[i].window.unwrap_or(f64::INFINITY),
            |i, s| s.seen < watermark - plan.patterns[i].within && s.deadline().is_none(),
        )
    }

    pub fn state_size(&self) -> usize {
        self.state.len()
    }

    /// The value of slot ``slot`` as the event of ``scratch`` saw it (computed if unread).
    pub fn value_seen(&self, event: &Event, scratch: &mut Scratch, slot: usize) -> R<Value> {
        self.ctx(event, None, scratch).feature(slot).cloned()
    }

    /// Keep an event's scratch memory for the next event.
    pub fn give_back(&mut self, scratch: Scratch) {
        self.scratch = Some(scratch);
    }

    /// Arm the timer of a restored pattern state that has a deadline.
    pub fn rearm(&mut self, pi: usize, key: &Key) {
        if let Some(deadline) = self.state.pattern(pi, key).and_then(|s| s.deadline()) {
            self.timers
                .add(deadline, self.plan.patterns[pi].id.clone(), key.clone());
        }
    }
}

/// How far an event moves its partition's event time: to when it happened, but never past
/// when it arrived, so an event dated minutes ahead does not run every other key's event time
/// on (the engine's ``event_time_mark``); an arrival of 0 is unknown and bounds nothing.
fn event_time_mark(occurred_at: f64, ingested_at: f64) -> f64 {
    if ingested_at > 0.0 {
        occurred_at.min(ingested_at)
    } else {
        occurred_at
    }
}

/// At most ``MAX_PARTIALS``, dropping the oldest partial of the step most of them are at (of
/// two as crowded, the later step): a flood of one step's events (decoy payees) pushes out only
/// its own kind, never the partial the others branch from (``_bounded``).
fn bound_partials(partials: &mut Vec<Partial>) {
    while partials.len() > MAX_PARTIALS {
        let mut held: Vec<(i64, usize)> = Vec::new();
        for p in partials.iter() {
            match held.iter_mut().find(|(step, _)| *step == p.step) {
                Some((_, n)) => *n += 1,
                None => held.push((p.step, 1)),
            }
        }
        let crowded = held
            .iter()
            .max_by_key(|(step, n)| (*n, *step))
            .map(|(step, _)| *step)
            .expect("more partials than the bound");
        let oldest = partials
            .iter()
            .position(|p| p.step == crowded)
            .expect("a step some partial is at");
        partials.remove(oldest);
    }
}

fn env_name(env: Env) -> &'static str {
    match env {
        Env::EventId => "event_id",
        Env::Type => "type",
        Env::OccurredAt => "occurred_at",
        Env::Source => "source",
        Env::CustomerId => "customer_id",
        Env::AccountId => "account_id",
        Env::Unknown => "",
    }
}

impl EvalCtx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn signal(
        &mut self,
        detection: Detection,
        out: &Output,
        evidence: &[usize],
        offset: i64,
        ingested_at: f64,
        late: bool,
        related: Vec<Arc<Snap>>,
    ) -> R<Signal> {
        let dedup = out.dedup.render(self)?;
        let title = out.title.render(self)?;
        let summary = out.summary.render(self)?;
        let labels = out
            .labels
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.render(self)?)))
            .collect::<R<Vec<_>>>()?;
        let features = evidence
            .iter()
            .map(|slot| Ok((*slot, self.feature(*slot)?.clone())))
            .collect::<R<Vec<_>>>()?;
        let event = self.event;
        Ok(Signal {
            detection,
            dedup,
            title,
            summary,
            labels,
            event_id: event.event_id.clone(),
            event_type: event.etype.clone(),
            offset,
            occurred_at: event.occurred_at,
            ingested_at,
            features,
            customer_id: event.customer_id.clone(),
            late,
            related,
        })
    }
}
