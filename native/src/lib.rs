//! Ringfence's compiled engine core. `ringfence.engine.native` wraps [`NativeCore`] into the
//! reference engine's interface; the Python engine stays the executable specification.

mod anomaly;
mod codec;
mod engine;
mod expr;
mod features;
mod ingest;
mod inplace;
mod jv;
mod packed;
mod patterns;
mod plain;
mod records;
mod store;
mod stored;
mod value;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple,
};
use rustc_hash::FxHashMap;
use serde_json::Value as J;

use crate::engine::{Ahead, Detection, Engine, Event, Plan, Signal};
use crate::packed::Packer;
use crate::patterns::Snap;
use crate::store::{Change, Key, Kind};
use crate::value::{from_json, Fault, Member, Value, R};

pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Run ``f``; a panic (a bug in the core) becomes an ordinary exception, so the driver
/// quarantines the event at fault and goes on, rather than its thread dying. Every entry
/// point's work runs through it (only getters and setters of a number do not, and fetching
/// ahead, see :func:`fetching_ahead`): unwrapped, a
/// panic reaches Python as PyO3's ``PanicException``, a ``BaseException`` that the runtimes'
/// ``except Exception`` lets by.
fn guarded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(PyRuntimeError::new_err(
            "the compiled core failed (a panic): see the log",
        ))
    })
}

/// How many events a batch parses ahead of the one it runs, fetching their records.
const LOOK_AHEAD: usize = 4;

/// Run a step of fetching ahead; a panic in it only leaves that event's records unfetched
/// (its own turn meets the same fault, guarded and blamed on that event). None if it panicked.
fn fetching_ahead<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// :func:`guarded` for a call that runs events: a step that panicked may have left a pattern
/// state's place taken (see ``Engine::settle_taken``), given up before anything reads it.
fn guarded_run<T>(engine: &mut Engine, f: impl FnOnce(&mut Engine) -> PyResult<T>) -> PyResult<T> {
    let outcome = guarded(|| f(engine));
    engine.settle_taken();
    outcome
}

/// A state row as :meth:`NativeCore.take_changes` and :meth:`NativeCore.dump` give it.
fn changed_row(c: Change<'_>) -> ChangedRow {
    match c {
        Change::Feature(i, key, s) => (0, i, key.clone(), s.map(codec::encode_feature).transpose()),
        Change::Score(i, key, s) => (1, i, key.clone(), Ok(s.map(codec::encode_z))),
        Change::Pattern(i, key, s) => (2, i, key.clone(), Ok(s.map(codec::encode_pattern))),
    }
}

fn fault(f: Fault) -> PyErr {
    match f {
        Fault::Value(m) => PyValueError::new_err(m),
        Fault::Type(m) => PyTypeError::new_err(m),
        Fault::Overflow(m) => PyOverflowError::new_err(m),
    }
}

fn json_to_py(py: Python<'_>, j: &J) -> PyResult<PyObject> {
    Ok(match j {
        J::Array(a) => PyList::new(
            py,
            a.iter()
                .map(|e| json_to_py(py, e))
                .collect::<PyResult<Vec<_>>>()?,
        )?
        .into_any()
        .unbind(),
        J::Object(m) => {
            let d = PyDict::new(py);
            for (k, v) in m {
                d.set_item(k, json_to_py(py, v)?)?;
            }
            d.into_any().unbind()
        }
        scalar => to_py(py, &from_json(scalar))?,
    })
}

fn to_py(py: Python<'_>, v: &Value) -> PyResult<PyObject> {
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::Float(f) => PyFloat::new(py, *f).into_any().unbind(),
        Value::Str(s) => PyString::new(py, s).into_any().unbind(),
        Value::Set(s) => {
            let items = s
                .members
                .iter()
                .map(|m| match m {
                    Member::Str(x) => to_py(py, &Value::Str(x.clone())),
                    Member::Int(i) => to_py(py, &Value::Int(*i)),
                    Member::Float(b) => to_py(py, &Value::Float(f64::from_bits(*b))),
                })
                .collect::<PyResult<Vec<_>>>()?;
            PyFrozenSet::new(py, &items)?.into_any().unbind()
        }
        Value::Json(j) => json_to_py(py, j)?,
        Value::Stats(n, mean, std) => {
            let d = PyDict::new(py);
            d.set_item("count", n)?;
            d.set_item("mean", mean)?;
            d.set_item("std", std)?;
            d.into_any().unbind()
        }
    })
}

fn py_to_json(o: &Bound<'_, PyAny>) -> PyResult<J> {
    if o.is_none() {
        return Ok(J::Null);
    }
    if let Ok(b) = o.downcast::<PyBool>() {
        return Ok(J::Bool(b.is_true()));
    }
    if o.is_instance_of::<PyInt>() {
        return Ok(o
            .extract::<i64>()
            .map(J::from)
            .unwrap_or_else(|_| J::from(o.extract::<f64>().unwrap_or(f64::NAN))));
    }
    if let Ok(f) = o.downcast::<PyFloat>() {
        return Ok(serde_json::Number::from_f64(f.value()).map_or(J::Null, J::Number));
    }
    if let Ok(s) = o.downcast::<PyString>() {
        return Ok(J::String(s.to_str()?.to_string()));
    }
    if let Ok(d) = o.downcast::<PyDict>() {
        let mut m = serde_json::Map::new();
        for (k, v) in d.iter() {
            m.insert(k.str()?.to_str()?.to_string(), py_to_json(&v)?);
        }
        return Ok(J::Object(m));
    }
    if let Ok(l) = o.downcast::<PyList>() {
        return Ok(J::Array(
            l.iter().map(|e| py_to_json(&e)).collect::<PyResult<_>>()?,
        ));
    }
    if let Ok(t) = o.downcast::<PyTuple>() {
        return Ok(J::Array(
            t.iter().map(|e| py_to_json(&e)).collect::<PyResult<_>>()?,
        ));
    }
    Err(PyTypeError::new_err(format!(
        "cannot carry a {} value",
        o.get_type().name()?
    )))
}

fn from_py(o: &Bound<'_, PyAny>) -> PyResult<Value> {
    if o.is_instance_of::<PyFrozenSet>() || o.is_instance_of::<PySet>() {
        let items = o
            .try_iter()?
            .map(|e| from_py(&e?))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(Value::Set(Arc::new(value::Set::from_values(items))));
    }
    if o.is_instance_of::<PyInt>() && !o.is_instance_of::<PyBool>() {
        if let Ok(i) = o.extract::<i128>() {
            return Ok(Value::Int(i));
        }
    }
    if let Ok(d) = o.downcast::<PyDict>() {
        if d.len() == 3 {
            if let (Some(n), Some(mean), Some(std)) = (
                d.get_item("count")?,
                d.get_item("mean")?,
                d.get_item("std")?,
            ) {
                if let (Ok(n), Ok(mean), Ok(std)) = (
                    n.extract::<i64>(),
                    mean.extract::<f64>(),
                    std.extract::<f64>(),
                ) {
                    return Ok(Value::Stats(n, mean, std));
                }
            }
        }
    }
    Ok(from_json(&py_to_json(o)?))
}

fn snap_ref(py: Python<'_>, s: &Snap) -> PyResult<PyObject> {
    let d = PyDict::new(py);
    d.set_item("event_id", &*s.event_id)?;
    d.set_item("type", &*s.etype)?;
    d.set_item("occurred_at", s.occurred_at)?;
    d.set_item("offset", s.offset)?;
    d.set_item("ingested_at", s.ingested_at)?;
    Ok(d.into_any().unbind())
}

/// A signal as a tuple (see ``ringfence.engine.native``).
fn signal_to_py(py: Python<'_>, s: &Signal) -> PyResult<PyObject> {
    let (kind, index) = match s.detection {
        Detection::Rule(i) => ("rule", i),
        Detection::Pattern(i) => ("pattern", i),
    };
    let labels = PyDict::new(py);
    for (k, v) in &s.labels {
        labels.set_item(k, v)?;
    }
    let features = PyList::empty(py);
    for (slot, v) in &s.features {
        features.append((*slot, to_py(py, v)?))?;
    }
    let related = PyList::empty(py);
    for r in &s.related {
        related.append(snap_ref(py, r)?)?;
    }
    let customer: PyObject = match &s.customer_id {
        Some(c) => PyString::new(py, c).into_any().unbind(),
        None => py.None(),
    };
    let items: Vec<PyObject> = vec![
        PyString::new(py, kind).into_any().unbind(),
        index.into_pyobject(py)?.into_any().unbind(),
        PyString::new(py, &s.dedup).into_any().unbind(),
        PyString::new(py, &s.title).into_any().unbind(),
        PyString::new(py, &s.summary).into_any().unbind(),
        labels.into_any().unbind(),
        PyString::new(py, &s.event_id).into_any().unbind(),
        PyString::new(py, &s.event_type).into_any().unbind(),
        s.offset.into_pyobject(py)?.into_any().unbind(),
        PyFloat::new(py, s.occurred_at).into_any().unbind(),
        PyFloat::new(py, s.ingested_at).into_any().unbind(),
        features.into_any().unbind(),
        customer,
        PyBool::new(py, s.late).to_owned().into_any().unbind(),
        related.into_any().unbind(),
    ];
    Ok(PyTuple::new(py, items)?.into_any().unbind())
}

fn signals_to_py(py: Python<'_>, signals: &[Signal]) -> PyResult<Py<PyList>> {
    let out = PyList::empty(py);
    for s in signals {
        out.append(signal_to_py(py, s)?)?;
    }
    Ok(out.unbind())
}

/// A run of events' signals, and the (index, watermark) of those behind their partition's.
type RunOutcome = (Py<PyList>, Vec<(usize, f64)>);

/// A changed state row: (kind, index, key, encoded state or None).
type ChangedRow = (u8, usize, Key, Result<Option<Vec<u8>>, Fault>);

/// The engine over a compiled plan (``ringfence.engine.plan.plan_of``).
#[pyclass(module = "ringfence_native")]
struct NativeCore {
    engine: Engine,
    /// Each definition's persisted state name (``Engine.persisted_names``), by kind and index.
    names: [Vec<Py<PyString>>; 3],
    /// The same, the other way: (kind, index) of each persisted name, for :meth:`restore`.
    row_of: FxHashMap<String, (u8, usize)>,
    /// The same as Rust text, for packed rows.
    texts: [Vec<String>; 3],
    /// How many events the last :meth:`process_many` ran (those before the one that failed).
    ran: usize,
}

/// Encode ``c`` into ``p`` under its persisted name.
fn pack_change(p: &mut Packer, texts: &[Vec<String>; 3], c: Change<'_>) -> Result<(), Fault> {
    let (kind, i, key) = match c {
        Change::Feature(i, key, _) => (0, i, key),
        Change::Score(i, key, _) => (1, i, key),
        Change::Pattern(i, key, _) => (2, i, key),
    };
    if i >= texts[kind].len() {
        return Err(Fault::Value("set_names first".into()));
    }
    // a row names its state by its place among all the names, as `packer` lists them
    let name = (texts[..kind].iter().map(Vec::len).sum::<usize>() + i) as u32;
    match c {
        Change::Feature(_, _, Some(s)) => p.state(name, key, |o| codec::write_feature(o, s)),
        Change::Score(_, _, Some(s)) => p.state(name, key, |o| {
            codec::write_z(o, s);
            Ok(())
        }),
        Change::Pattern(_, _, Some(s)) => p.state(name, key, |o| {
            codec::write_pattern(o, s);
            Ok(())
        }),
        _ => {
            p.gone(name, key);
            Ok(())
        }
    }
}

/// A packer of rows named by their state's place in ``texts`` (features, scores, patterns).
fn packer(texts: &[Vec<String>; 3]) -> Packer<'_> {
    Packer::new(texts.iter().flatten().map(String::as_str).collect())
}

#[pymethods]
impl NativeCore {
    #[new]
    fn new(plan: &[u8], allowed_lateness_s: f64) -> PyResult<Self> {
        guarded(|| {
            let plan = Plan::parse(plan).map_err(PyValueError::new_err)?;
            Ok(NativeCore {
                engine: Engine::new(plan, allowed_lateness_s),
                names: Default::default(),
                row_of: FxHashMap::default(),
                texts: Default::default(),
                ran: 0,
            })
        })
    }

    fn set_list(&mut self, name: &str, values: &Bound<'_, PyAny>) -> PyResult<()> {
        let items = values
            .try_iter()?
            .map(|v| from_py(&v?))
            .collect::<PyResult<Vec<_>>>()?;
        guarded(|| {
            self.engine.set_list(name, items);
            Ok(())
        })
    }

    /// Run one stored event (JSON). Returns (signals, the partition's watermark if the event
    /// was behind it else None, the values of ``report`` slots as the event saw them).
    #[pyo3(signature = (body, offset, partition, ingested_at, carried=None, evaluate_rules=true, report=None))]
    #[allow(clippy::too_many_arguments)]
    fn process(
        &mut self,
        py: Python<'_>,
        body: &[u8],
        offset: i64,
        partition: i64,
        ingested_at: f64,
        carried: Option<Vec<(usize, Bound<'_, PyAny>)>>,
        evaluate_rules: bool,
        report: Option<Vec<usize>>,
    ) -> PyResult<(Py<PyList>, Option<f64>, Py<PyList>)> {
        let event = Event::parse(body).map_err(fault)?;
        let mark = self.engine.watermark(Some(partition));
        let carried = carried
            .unwrap_or_default()
            .iter()
            .map(|(slot, v)| Ok((*slot, from_py(v)?)))
            .collect::<PyResult<Vec<_>>>()?;
        let (signals, mut scratch) = guarded_run(&mut self.engine, |engine| {
            engine
                .process(
                    &event,
                    offset,
                    partition,
                    ingested_at,
                    &carried,
                    evaluate_rules,
                )
                .map_err(fault)
        })?;
        let reported = PyList::empty(py);
        let engine = &mut self.engine;
        let values = guarded(|| {
            report
                .unwrap_or_default()
                .into_iter()
                .map(|slot| engine.value_seen(&event, &mut scratch, slot).map_err(fault))
                .collect::<PyResult<Vec<_>>>()
        });
        self.engine.give_back(scratch);
        for v in values? {
            reported.append(to_py(py, &v)?)?;
        }
        let late = (event.occurred_at < mark).then_some(mark);
        Ok((signals_to_py(py, &signals)?, late, reported.unbind()))
    }

    /// Run stored events in order, each as :meth:`process` with nothing carried and nothing
    /// reported, in one call (a processor's batch) and without the interpreter lock: (all
    /// their signals, the (index, watermark) of each event that was behind its partition's
    /// watermark). The first event that fails raises; the ones before it were run.
    fn process_many(
        &mut self,
        py: Python<'_>,
        bodies: &Bound<'_, PyList>,
        offsets: Vec<i64>,
        partitions: Vec<i64>,
        ingested_ats: Vec<f64>,
    ) -> PyResult<RunOutcome> {
        self.ran = 0;
        let n = bodies.len();
        if offsets.len() != n || partitions.len() != n || ingested_ats.len() != n {
            return Err(PyValueError::new_err(
                "process_many: bodies, offsets, partitions and ingested_ats differ in length",
            ));
        }
        let held = bodies
            .iter()
            .map(|b| Ok(b.downcast_into::<PyBytes>()?))
            .collect::<PyResult<Vec<_>>>()?;
        let texts: Vec<&[u8]> = held.iter().map(|b| b.as_bytes()).collect();
        let (engine, ran) = (&mut self.engine, &mut self.ran);
        // the API's threads go on while the batch runs (the texts are immutable bytes, held)
        let (signals, late) = py.allow_threads(|| {
            let mut signals = Vec::new();
            let mut late = Vec::new();
            // events i to i + LOOK_AHEAD parsed, each with its records being fetched ahead
            // (Engine::look_ahead): while event i runs, event i + 4 takes the first step,
            // i + 3 the second, i + 2 the third and i + 1 the fourth (from the fifth event on;
            // the first ones run cold)
            let mut coming: VecDeque<(R<Event>, Ahead)> = VecDeque::with_capacity(LOOK_AHEAD + 1);
            for i in 0..n {
                while coming.len() <= LOOK_AHEAD && i + coming.len() < n {
                    let event = Event::parse(texts[i + coming.len()]);
                    let ahead = match &event {
                        Ok(e) => fetching_ahead(|| engine.look_ahead(e)).unwrap_or_default(),
                        Err(_) => Ahead::default(),
                    };
                    coming.push_back((event, ahead));
                }
                fetching_ahead(|| {
                    if let Some((_, a)) = coming.get_mut(3) {
                        engine.fetch_pairs(a);
                    }
                    if let Some((_, a)) = coming.get(2) {
                        engine.fetch_records(a);
                    }
                    if let Some((_, a)) = coming.get(1) {
                        engine.fetch_states(a);
                    }
                });
                let (event, _) = coming.pop_front().expect("event i is parsed");
                let (offset, partition) = (offsets[i], partitions[i]);
                let event = event.map_err(fault)?; // in its turn: the events before it ran
                let mark = engine.watermark(Some(partition));
                let (mut raised, scratch) = guarded_run(engine, |engine| {
                    engine
                        .process(&event, offset, partition, ingested_ats[i], &[], true)
                        .map_err(fault)
                })?;
                engine.give_back(scratch);
                signals.append(&mut raised);
                if event.occurred_at < mark {
                    late.push((i, mark));
                }
                *ran = i + 1;
            }
            PyResult::Ok((signals, late))
        })?;
        Ok((signals_to_py(py, &signals)?, late))
    }

    #[pyo3(signature = (watermark=None))]
    fn advance(&mut self, py: Python<'_>, watermark: Option<f64>) -> PyResult<Py<PyList>> {
        let engine = &mut self.engine;
        let signals = guarded(|| engine.advance(watermark).map_err(fault))?;
        signals_to_py(py, &signals)
    }

    #[pyo3(signature = (partition=None))]
    fn watermark(&self, partition: Option<i64>) -> f64 {
        self.engine.watermark(partition)
    }

    fn max_event_time(&self) -> HashMap<i64, f64> {
        self.engine
            .max_event_time
            .iter()
            .map(|(&p, &t)| (p, t))
            .collect()
    }

    fn set_max_event_time(&mut self, marks: HashMap<i64, f64>) {
        self.engine.max_event_time = marks.into_iter().collect();
    }

    #[getter]
    fn late_events(&self) -> u64 {
        self.engine.late_events
    }

    #[setter]
    fn set_late_events(&mut self, n: u64) {
        self.engine.late_events = n;
    }

    fn timers(&self) -> usize {
        self.engine.timers.len()
    }

    /// How many events the last :meth:`process_many` ran: all of them, or those before the
    /// one that failed.
    #[getter]
    fn ran(&self) -> usize {
        self.ran
    }

    /// State rows changed since the last call: (kind 0 feature | 1 score | 2 pattern, index,
    /// key, encoded state or None for a dropped one).
    fn take_changes(&mut self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let mut rows: Vec<ChangedRow> = Vec::new();
        let state = &mut self.engine.state;
        guarded(|| {
            state.take_changes(|c| rows.push(changed_row(c)));
            Ok(())
        })?;
        let rows = self.rows_to_py(py, rows)?;
        self.engine.taken();
        Ok(rows)
    }

    /// The state held now is what the store holds (a checkpoint restored): :meth:`undo` comes
    /// back here. From the first call on, the core keeps a copy of each state as it was before
    /// its first change since the point, or since the last :meth:`take_changes`.
    fn undo_point(&mut self) {
        self.engine.undo_point();
    }

    /// The changes taken last go to the store (a commit carries them): :meth:`undo` comes back
    /// to that take from now on.
    fn take_committed(&mut self) {
        self.engine.take_committed();
    }

    /// Keep no copies any more (they cost time an event), until the next :meth:`undo_point`.
    fn forget_undo(&mut self) {
        self.engine.forget_undo();
    }

    /// Put back every state the events since the undo point changed, and the event times;
    /// False, changing nothing, if it cannot (no point set, or expiry or a restore since): the
    /// caller reloads its checkpoint instead.
    fn undo(&mut self) -> PyResult<bool> {
        let engine = &mut self.engine;
        guarded(|| Ok(engine.undo()))
    }

    /// Every state row held, as :meth:`take_changes` gives them (marks of change untouched).
    fn dump(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let mut rows: Vec<ChangedRow> = Vec::new();
        guarded(|| {
            self.engine.state.all_rows(|c| rows.push(changed_row(c)));
            Ok(())
        })?;
        self.rows_to_py(py, rows)
    }

    /// The persisted state names :meth:`take_changes` gives its rows.
    fn set_names(
        &mut self,
        py: Python<'_>,
        features: Vec<String>,
        scores: Vec<String>,
        patterns: Vec<String>,
    ) {
        let intern = |names: &Vec<String>| {
            names
                .iter()
                .map(|n| PyString::intern(py, n).unbind())
                .collect()
        };
        self.row_of = [&features, &scores, &patterns]
            .iter()
            .enumerate()
            .flat_map(|(kind, names)| {
                names
                    .iter()
                    .enumerate()
                    .map(move |(i, n)| (n.clone(), (kind as u8, i)))
            })
            .collect();
        self.names = [intern(&features), intern(&scores), intern(&patterns)];
        self.texts = [features, scores, patterns];
    }

    /// Load checkpointed rows (persisted name, key, encoded state) from either engine; a
    /// row of a name :meth:`set_names` did not give (a definition no longer in the pack) is
    /// skipped.
    fn restore(
        &mut self,
        rows: Vec<(Bound<'_, PyString>, Bound<'_, PyString>, Bound<'_, PyBytes>)>,
    ) -> PyResult<()> {
        for (name, key, raw) in rows {
            let key = Key::from(key.to_str()?);
            let Some(&row) = self.row_of.get(name.to_str()?) else {
                continue;
            };
            let engine = &mut self.engine;
            engine.state.lose_undo(); // a restored row keeps no image: undo_point after
            guarded(|| {
                restore_row(engine, row, &key, Some(raw.as_bytes())).map_err(PyValueError::new_err)
            })?;
        }
        Ok(())
    }

    /// :meth:`restore` of packed rows (``ringfence.engine.packed``), in order: a row with no
    /// state drops the state it names. Returns how many rows it held.
    fn restore_packed(&mut self, rows: &[u8]) -> PyResult<usize> {
        self.engine.state.lose_undo(); // a restored row keeps no image: undo_point after
        guarded(|| {
            // a record's rows come together: its key is allocated once
            let mut last = Key::default();
            let (row_of, engine) = (&self.row_of, &mut self.engine);
            packed::unpack_resolved(
                rows,
                |name| row_of.get(name).copied(),
                |row, key, raw| {
                    if last != key {
                        last = Key::from(key);
                    }
                    match row {
                        Some(row) => restore_row(engine, row, &last, raw),
                        None => Ok(()), // a definition the pack no longer has
                    }
                },
            )
            .map_err(PyValueError::new_err)
        })
    }

    /// State rows changed since the last call, packed: (bytes, how many), None if none.
    fn take_changes_packed(&mut self, py: Python<'_>) -> PyResult<Option<(Py<PyBytes>, u32)>> {
        let texts = &self.texts;
        let state = &mut self.engine.state;
        // without the interpreter lock, as a batch runs: the API's threads go on meanwhile
        let packed = py.allow_threads(|| {
            let mut p = packer(texts);
            let mut failed = None;
            guarded(|| {
                state.take_changes(|c| {
                    if failed.is_none() {
                        failed = pack_change(&mut p, texts, c).err();
                    }
                });
                Ok(())
            })?;
            match failed {
                Some(f) => Err(fault(f)),
                None if p.rows() == 0 => Ok(None),
                None => Ok(Some(p.finish())),
            }
        })?;
        self.engine.taken();
        Ok(packed.map(|(buf, n)| (PyBytes::new(py, &buf).unbind(), n)))
    }

    /// Start a snapshot of every record held now (``State::walk_begin``).
    fn snapshot_begin(&mut self) -> PyResult<()> {
        guarded(|| {
            self.engine.state.walk_begin();
            Ok(())
        })
    }

    /// The next part of the snapshot begun last, packed: at least ``max_rows`` rows unless it
    /// is the last; (bytes, rows, whether it is the last).
    fn snapshot_next(
        &mut self,
        py: Python<'_>,
        max_rows: u32,
    ) -> PyResult<(Py<PyBytes>, u32, bool)> {
        let state = &mut self.engine.state;
        if !state.walking() {
            return Err(PyRuntimeError::new_err("no snapshot begun"));
        }
        let texts = &self.texts;
        // without the interpreter lock, as take_changes_packed
        let (buf, n, last) = py.allow_threads(|| {
            let mut p = packer(texts);
            let mut failed = None;
            let walked = guarded(|| {
                while p.rows() < max_rows && failed.is_none() {
                    let more = state.walk_step(|c| {
                        if failed.is_none() {
                            failed = pack_change(&mut p, texts, c).err();
                        }
                    });
                    if !more {
                        break;
                    }
                }
                Ok(())
            });
            let last = state.walked_all();
            if walked.is_err() || failed.is_some() || last {
                state.walk_end(); // a snapshot that failed is begun again
            }
            walked?;
            if let Some(f) = failed {
                return Err(fault(f));
            }
            let (buf, n) = p.finish();
            Ok((buf, n, last))
        })?;
        Ok((PyBytes::new(py, &buf).unbind(), n, last))
    }

    fn expire(&mut self, watermark: f64) -> PyResult<usize> {
        guarded(|| Ok(self.engine.expire(watermark)))
    }

    fn state_size(&self) -> usize {
        self.engine.state_size()
    }

    fn features_of(
        &self,
        py: Python<'_>,
        fields: &Bound<'_, PyAny>,
        at: f64,
    ) -> PyResult<Vec<(usize, PyObject)>> {
        let fields = py_to_json(fields)?;
        guarded(|| Ok(self.engine.features_of(&fields, at)))?
            .iter()
            .map(|(i, v)| Ok((*i, to_py(py, v)?)))
            .collect()
    }

    fn timer_of(&self, pattern: usize, key: &str) -> PyResult<Option<f64>> {
        guarded(|| {
            Ok(self
                .engine
                .state
                .pattern(pattern, key)
                .and_then(|p| p.deadline()))
        })
    }

    /// A core for ``plan`` holding this one's state of the definitions in ``kept``
    /// ((kind, old index, new index) of each unchanged one). This core is left empty.
    fn reloaded(&mut self, plan: &[u8], kept: Vec<(u8, usize, usize)>) -> PyResult<NativeCore> {
        guarded(|| self.reload(plan, kept))
    }
}

impl NativeCore {
    /// :meth:`reloaded`'s work, which :func:`guarded` wraps.
    fn reload(&mut self, plan: &[u8], kept: Vec<(u8, usize, usize)>) -> PyResult<NativeCore> {
        let plan = Plan::parse(plan).map_err(PyValueError::new_err)?;
        let mut fresh = Engine::new(plan, self.engine.lateness);
        fresh.max_event_time = self.engine.max_event_time.clone();
        let kept: Vec<(Kind, usize, usize)> = kept
            .into_iter()
            .map(|(kind, from, to)| {
                let kind = match kind {
                    0 => Kind::Feature,
                    1 => Kind::Score,
                    _ => Kind::Pattern,
                };
                (kind, from, to)
            })
            .collect();
        self.engine.state.move_into(&mut fresh.state, &kept);
        for &(kind, _, to) in &kept {
            if kind == Kind::Pattern {
                for (key, _) in fresh.state.deadlines(to) {
                    fresh.rearm(to, &key);
                }
            }
        }
        Ok(NativeCore {
            engine: fresh,
            names: Default::default(),
            row_of: FxHashMap::default(),
            texts: Default::default(),
            ran: 0,
        })
    }

    fn rows_to_py(&self, py: Python<'_>, rows: Vec<ChangedRow>) -> PyResult<Py<PyList>> {
        let out = PyList::empty(py);
        for (kind, i, key, raw) in rows {
            let name = self.names[kind as usize]
                .get(i)
                .ok_or_else(|| PyValueError::new_err("set_names first"))?;
            let raw: PyObject = match raw.map_err(fault)? {
                Some(b) => PyBytes::new(py, &b).into_any().unbind(),
                None => py.None(),
            };
            out.append((name.clone_ref(py), &*key, raw))?;
        }
        Ok(out.unbind())
    }
}

/// Restore into ``engine`` a row of definition ``(kind, i)`` (``NativeCore.row_of`` of its name).
fn restore_row(
    engine: &mut Engine,
    (kind, i): (u8, usize),
    key: &Key,
    raw: Option<&[u8]>,
) -> Result<(), String> {
    let plan = &engine.plan;
    let state = &mut engine.state;
    let Some(raw) = raw else {
        let kind = [Kind::Feature, Kind::Score, Kind::Pattern][kind as usize];
        let known = match kind {
            Kind::Feature => plan.features.len(),
            Kind::Score => plan.anomalies.len(),
            Kind::Pattern => plan.patterns.len(),
        };
        if i < known {
            state.remove(kind, i, key); // a stale timer of a pattern state finds none
        }
        return Ok(());
    };
    match kind {
        0 if i < plan.features.len() => {
            let spec = &plan.features[i];
            let s = codec::decode_feature(raw, spec.agg, spec.window.is_some())?;
            state.put_feature(i, key, s);
        }
        1 if i < plan.anomalies.len() => state.put_score(i, key, codec::decode_z(raw)?),
        2 if i < plan.patterns.len() => {
            state.restore_pattern(i, key, codec::decode_pattern(raw)?);
            engine.rearm(i, key);
        }
        _ => {}
    }
    Ok(())
}

#[pymodule]
fn ringfence_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<NativeCore>()?;
    m.add_class::<plain::PlainCheck>()?;
    m.add_class::<ingest::EventCheck>()?;
    Ok(())
}
