//! Ingest's fast path: a producer's event read, checked and normalised without the
//! interpreter when it is certainly valid, which nearly every event is.
//!
//! `ringfence.events.decode.validate_in_full` stays the specification and runs whenever this
//! answers `None`: the check is conservative, never a rejection, only "not certainly valid as
//! it stands". It accepts an event only when the full validation would accept it unchanged
//! but for the steps it shares with it (the built-in types' structs, turned into the same
//! plain values): a built-in type, every field of the envelope and of `data` within its
//! type's constraints (handed over from the Python structs, so they are written once), no
//! duplicate or unknown field, no run of over 32 digits, an RFC 3339 time (`T`, up to 6
//! decimals, `Z` or `±HH:MM`) that validation would not refuse, money already canonical for its currency, a dotted-quad IP
//! address, no account number to mask, and every text and number plain (see `plain`). The
//! event's fields come back as Python values (`event`), the rate stamp and the `Event` made in
//! Python; or, for the embedded ingest worker, as the JSON the journal stores (`stored`, with
//! `crate::stored`), where that needs no rate.
//! `tests/events/test_fast_path.py` holds this to the full validation.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};
use regex::Regex;

use crate::jv::Jv;
use crate::plain::{PlainCheck, Rules};
use crate::stored;

/// What a value must be, from the Python struct's type (`ringfence.events.fastpath`).
enum Spec {
    Text {
        min: usize,
        max: Option<usize>,
        pattern: Option<Regex>,
    },
    Int {
        ge: Option<i64>,
        le: Option<i64>,
    },
    Float {
        gt: Option<f64>,
        ge: Option<f64>,
        lt: Option<f64>,
        le: Option<f64>,
    },
    Bool,
    Choice(Vec<String>),
    Optional(Box<Spec>),
    Object(Vec<FieldSpec>),
    /// The envelope's time and `data`, read by `EventCheck::envelope_of` itself.
    Time,
    Raw,
    /// A type the fast path leaves to the full validation.
    Never,
}

pub(crate) struct FieldSpec {
    pub name: String,
    key: Py<PyString>,
    required: bool,
    spec: Spec,
}

fn spec_of(o: &Bound<'_, PyAny>) -> PyResult<Spec> {
    let kind: String = o.get_item(0)?.extract()?;
    Ok(match kind.as_str() {
        "text" => {
            let (_, min, max, pattern): (String, usize, Option<usize>, Option<String>) =
                o.extract()?;
            match pattern.map(|p| Regex::new(&p)).transpose() {
                Ok(pattern) => Spec::Text { min, max, pattern },
                Err(_) => Spec::Never, // a pattern this crate reads otherwise: Python decides
            }
        }
        "int" => {
            let (_, ge, le): (String, Option<i64>, Option<i64>) = o.extract()?;
            Spec::Int { ge, le }
        }
        "float" => {
            let (_, gt, ge, lt, le): (String, Option<f64>, Option<f64>, Option<f64>, Option<f64>) =
                o.extract()?;
            Spec::Float { gt, ge, lt, le }
        }
        "bool" => Spec::Bool,
        "choice" => Spec::Choice(o.get_item(1)?.extract()?),
        "optional" => Spec::Optional(Box::new(spec_of(&o.get_item(1)?)?)),
        "object" => {
            let mut fields = Vec::new();
            for item in o.get_item(1)?.try_iter()? {
                let (name, required, spec): (String, bool, Bound<'_, PyAny>) = item?.extract()?;
                let key = PyString::intern(o.py(), &name).unbind();
                let spec = spec_of(&spec)?;
                fields.push(FieldSpec {
                    name,
                    key,
                    required,
                    spec,
                });
            }
            Spec::Object(fields)
        }
        "time" => Spec::Time,
        "raw" => Spec::Raw,
        "never" => Spec::Never,
        other => return Err(PyValueError::new_err(format!("unknown spec {other:?}"))),
    })
}

/// The envelope's fields, in `Event`'s order of them.
pub(crate) const ENVELOPE: [&str; 7] = [
    "event_id",
    "type",
    "occurred_at",
    "source",
    "data",
    "customer_id",
    "account_id",
];
pub(crate) const EVENT_ID: usize = 0;
pub(crate) const TYPE: usize = 1;
pub(crate) const OCCURRED_AT: usize = 2;
pub(crate) const SOURCE: usize = 3;
pub(crate) const DATA: usize = 4;
pub(crate) const CUSTOMER_ID: usize = 5;
pub(crate) const ACCOUNT_ID: usize = 6;

/// The fast path, built once from the Python side's types and limits.
#[pyclass(module = "ringfence_native", frozen)]
pub struct EventCheck {
    rules: Rules,
    envelope: Vec<Spec>,
    types: HashMap<String, Spec>,
    customerless: Vec<String>,
    pub(crate) money: Vec<String>,
    /// Each money field's value in the reference currency, in `money`'s order.
    pub(crate) reference_money: Vec<String>,
    pub(crate) currency: String,
    exponents: HashMap<String, usize>,
    max_major_digits: usize,
    masked: Vec<String>,
    ip: String,
    /// The field of `data` that places a customerless event in a partition.
    pub(crate) partition_field: String,
    max_bytes: usize,
    min_time: f64,
    max_skew: f64,
}

#[pymethods]
impl EventCheck {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (plain, envelope, types, *, customerless, money, reference_money,
        currency, exponents, max_major_digits, masked, ip, partition_field, max_bytes, min_time,
        max_skew))]
    fn new(
        plain: PyRef<'_, PlainCheck>,
        envelope: &Bound<'_, PyDict>,
        types: &Bound<'_, PyDict>,
        customerless: Vec<String>,
        money: Vec<String>,
        reference_money: Vec<String>,
        currency: String,
        exponents: HashMap<String, usize>,
        max_major_digits: usize,
        masked: Vec<String>,
        ip: String,
        partition_field: String,
        max_bytes: usize,
        min_time: f64,
        max_skew: f64,
    ) -> PyResult<Self> {
        let names: Vec<String> = envelope.keys().extract()?;
        if names != ENVELOPE {
            return Err(PyValueError::new_err(format!(
                "the envelope's fields {names:?} are not the fast path's, in Event's order"
            )));
        }
        if reference_money.len() != money.len() {
            return Err(PyValueError::new_err(
                "reference_money must name one field for each money field",
            ));
        }
        let fields = envelope
            .values()
            .iter()
            .map(|spec| spec_of(&spec))
            .collect::<PyResult<Vec<_>>>()?;
        let mut by_type = HashMap::new();
        for (name, spec) in types.iter() {
            by_type.insert(name.extract::<String>()?, spec_of(&spec)?);
        }
        Ok(Self {
            rules: plain.rules().clone(),
            envelope: fields,
            types: by_type,
            customerless,
            money,
            reference_money,
            currency,
            exponents,
            max_major_digits,
            masked,
            ip,
            partition_field,
            max_bytes,
            min_time,
            max_skew,
        })
    }

    /// The event's fields in `Event`'s order (`data` as plain values, its money not yet
    /// stamped), or None when it is not certainly valid as it stands.
    fn event<'py>(
        &self,
        raw: &Bound<'py, PyAny>,
        now: f64,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let py = raw.py();
        let sink = Objects { py };
        // a panic (a bug) is "not certain": the full validation, in Python alone, decides
        let built = catch_unwind(AssertUnwindSafe(|| {
            read(raw, |bytes| {
                let fields = self.fields_of(bytes)?;
                let e = self.envelope_of(&sink, &fields, now)?;
                PyTuple::new(
                    py,
                    [
                        e.event_id,
                        e.type_,
                        PyFloat::new(py, e.at).into_any(),
                        e.source,
                        e.data,
                        e.customer_id,
                        e.account_id,
                    ],
                )
                .ok()
            })
        }));
        Ok(built.unwrap_or(None))
    }

    /// Each of ``items`` (a request's events, as ingest cut them out) as the journal stores
    /// it, when it is certainly valid as it stands, its source one of ``sources`` (None: any)
    /// and its money stamped without a rate (none, or in the ``reference`` currency):
    /// (event_id, source, partition of ``partitions``, the event's JSON). None for any other,
    /// which the full path decides (`crate::stored` writes what it would store).
    #[pyo3(signature = (items, now, reference, partitions, sources=None))]
    fn stored<'py>(
        &self,
        items: &Bound<'py, PyList>,
        now: f64,
        reference: &str,
        partitions: u32,
        sources: Option<HashSet<String>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = items.py();
        if partitions == 0 {
            return Err(PyValueError::new_err("partitions must be at least 1"));
        }
        let answers = items.iter().map(|item| {
            // a panic (a bug) on one event leaves it to Python (whose `event` call declines it
            // too), never costs the others
            let answer = catch_unwind(AssertUnwindSafe(|| {
                read(&item, |bytes| {
                    let fields = self.fields_of(bytes)?;
                    let e = self.envelope_of(&stored::Json, &fields, now)?;
                    if sources.as_ref().is_some_and(|s| !s.contains(e.source_text)) {
                        return None;
                    }
                    stored::event(e, self, reference, partitions)
                })
            }))
            .unwrap_or(None);
            match answer {
                Some(s) => (s.event_id, s.source, s.partition, PyBytes::new(py, &s.json))
                    .into_pyobject(py)
                    .map(Bound::into_any),
                None => Ok(py.None().into_bound(py)),
            }
        });
        PyList::new(py, answers.collect::<PyResult<Vec<_>>>()?)
    }
}

/// Run `f` over `raw`'s bytes: a bytes object, or a read-only, contiguous buffer of them (a
/// `msgspec.Raw`); None for anything else, which the full validation names.
fn read<R>(raw: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> Option<R>) -> Option<R> {
    if let Ok(b) = raw.downcast::<PyBytes>() {
        return f(b.as_bytes());
    }
    let buffer = PyBuffer::<u8>::get(raw).ok()?;
    // a writable buffer could be written meanwhile by code not holding the GIL (a read into a
    // bytearray, a shared mmap): only read-only ones are read here
    if !buffer.readonly() || !buffer.is_c_contiguous() || buffer.len_bytes() == 0 {
        return None;
    }
    // SAFETY: `buffer` holds the exporter's read-only, C-contiguous, non-empty bytes, kept
    // alive until it drops at the end of this call; `f` reads them and never calls Python
    // with them (the sinks build Python objects from owned copies only).
    let bytes =
        unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) };
    f(bytes)
}

/// An event's checked fields, as a sink built them; the texts and data as sent beside them.
pub(crate) struct Envelope<'j, V> {
    pub event_id: V,
    pub type_: V,
    pub at: f64,
    pub source: V,
    pub data: V,
    pub customer_id: V,
    pub account_id: V,
    pub source_text: &'j str,
    pub event_id_text: &'j str,
    pub customer_text: Option<&'j str>,
    pub data_sent: &'j Jv,
}

impl EventCheck {
    /// The top-level fields of an event's JSON, unless it is too large, holds a digit run
    /// msgspec may read otherwise, or is not an object.
    fn fields_of(&self, bytes: &[u8]) -> Option<Vec<(smol_str::SmolStr, Jv)>> {
        if bytes.len() > self.max_bytes || long_digit_run(bytes) {
            return None;
        }
        match serde_json::from_slice::<Jv>(bytes) {
            Ok(Jv::Obj(fields)) => Some(fields),
            _ => None,
        }
    }

    fn envelope_of<'j, S: Sink>(
        &self,
        sink: &S,
        fields: &'j [(smol_str::SmolStr, Jv)],
        now: f64,
    ) -> Option<Envelope<'j, S::V>> {
        let mut slots: [Option<&Jv>; 7] = [None; 7];
        for (name, value) in fields {
            let at = ENVELOPE.iter().position(|n| *n == name.as_str())?;
            if slots[at].replace(value).is_some() {
                return None; // a duplicate: the full validation says which copy counts
            }
        }
        let check = Check {
            sink,
            rules: &self.rules,
        };
        let field = |at: usize| -> Option<S::V> {
            match slots[at] {
                Some(value) => check.value(&self.envelope[at], value),
                None if matches!(self.envelope[at], Spec::Optional(_)) => Some(sink.null()),
                None => None,
            }
        };
        let text = |at: usize| match slots[at] {
            Some(Jv::Str(s)) => Some(&**s),
            _ => None,
        };
        let event_id = field(EVENT_ID)?;
        let source = field(SOURCE)?;
        let customer_id = field(CUSTOMER_ID)?;
        let account_id = field(ACCOUNT_ID)?;
        let type_ = field(TYPE)?;
        let type_name = text(TYPE)?;
        if S::is_null(&customer_id) && !self.customerless.iter().any(|t| t == type_name) {
            return None;
        }
        let Jv::Str(time) = slots[OCCURRED_AT]? else {
            return None;
        };
        if !matches!(self.envelope[OCCURRED_AT], Spec::Time) {
            return None;
        }
        let at = timestamp(time)?;
        if at < self.min_time || at > now + self.max_skew {
            return None;
        }
        let spec = self.types.get(type_name)?;
        let data_sent = slots[DATA]?;
        if !matches!(self.envelope[DATA], Spec::Raw) || !self.normal(data_sent) {
            return None;
        }
        let data = check.value(spec, data_sent)?;
        if !S::is_object(&data) {
            return None;
        }
        Some(Envelope {
            event_id,
            type_,
            at,
            source,
            data,
            customer_id,
            account_id,
            source_text: text(SOURCE)?,
            event_id_text: text(EVENT_ID)?,
            customer_text: text(CUSTOMER_ID),
            data_sent,
        })
    }

    /// True when `data`'s normalisation would change nothing and find nothing: money canonical
    /// for its currency, no account number to mask, an IP address a dotted quad.
    fn normal(&self, data: &Jv) -> bool {
        let Jv::Obj(_) = data else { return false };
        for name in &self.money {
            match data.get(name) {
                None => {}
                Some(Jv::Str(amount)) => {
                    let exponent = match data.get(&self.currency) {
                        Some(Jv::Str(code)) => self.exponents.get(&**code),
                        _ => None,
                    };
                    if !exponent.is_some_and(|&e| canonical(amount, e, self.max_major_digits)) {
                        return false;
                    }
                }
                Some(_) => return false,
            }
        }
        if self
            .masked
            .iter()
            .any(|name| !matches!(data.get(name), None | Some(Jv::Null)))
        {
            return false;
        }
        match data.get(&self.ip) {
            None | Some(Jv::Null) => true,
            Some(Jv::Str(ip)) => dotted_quad(ip),
            Some(_) => false,
        }
    }
}

/// Where checked values go: Python objects ([`EventCheck::event`]) or the JSON the journal
/// stores ([`EventCheck::stored`]). The checks are the same for both.
pub(crate) trait Sink {
    type V;
    fn null(&self) -> Self::V;
    fn is_null(v: &Self::V) -> bool;
    fn is_object(v: &Self::V) -> bool;
    fn text(&self, s: &str) -> Self::V;
    fn int(&self, i: i64) -> Option<Self::V>;
    fn float(&self, f: f64) -> Self::V;
    fn boolean(&self, b: bool) -> Self::V;
    /// A struct's fields that are kept, in the struct's order.
    fn object(&self, fields: Vec<(&FieldSpec, Self::V)>) -> Option<Self::V>;
}

/// Values as the Python side's structs would give them (`msgspec.to_builtins`).
struct Objects<'py> {
    py: Python<'py>,
}

impl<'py> Sink for Objects<'py> {
    type V = Bound<'py, PyAny>;

    fn null(&self) -> Self::V {
        self.py.None().into_bound(self.py)
    }
    fn is_null(v: &Self::V) -> bool {
        v.is_none()
    }
    fn is_object(v: &Self::V) -> bool {
        v.is_instance_of::<PyDict>()
    }
    fn text(&self, s: &str) -> Self::V {
        PyString::new(self.py, s).into_any()
    }
    fn int(&self, i: i64) -> Option<Self::V> {
        i.into_pyobject(self.py).ok().map(Bound::into_any)
    }
    fn float(&self, f: f64) -> Self::V {
        PyFloat::new(self.py, f).into_any()
    }
    fn boolean(&self, b: bool) -> Self::V {
        PyBool::new(self.py, b).to_owned().into_any()
    }
    fn object(&self, fields: Vec<(&FieldSpec, Self::V)>) -> Option<Self::V> {
        let dict = PyDict::new(self.py);
        for (spec, v) in fields {
            dict.set_item(spec.key.bind(self.py), v).ok()?;
        }
        Some(dict.into_any())
    }
}

/// The checks of a value against its spec, building it into a sink when it passes.
struct Check<'a, S> {
    sink: &'a S,
    rules: &'a Rules,
}

impl<S: Sink> Check<'_, S> {
    fn value(&self, spec: &Spec, value: &Jv) -> Option<S::V> {
        let sink = self.sink;
        match (spec, value) {
            (Spec::Optional(_), Jv::Null) => Some(sink.null()),
            (Spec::Optional(inner), _) => self.value(inner, value),
            (Spec::Text { min, max, pattern }, Jv::Str(s)) => {
                let chars = s.chars().count();
                let fits = chars >= *min
                    && max.is_none_or(|m| chars <= m)
                    && pattern.as_ref().is_none_or(|p| p.is_match(s));
                (fits && self.rules.plain_text(s.as_bytes())).then(|| sink.text(s))
            }
            (Spec::Choice(choices), Jv::Str(s)) => (choices.iter().any(|c| **c == **s)
                && self.rules.plain_text(s.as_bytes()))
            .then(|| sink.text(s)),
            (Spec::Int { ge, le }, Jv::Int(i)) => (ge.is_none_or(|g| *i >= g)
                && le.is_none_or(|l| *i <= l)
                && self.rules.plain_int(*i))
            .then(|| sink.int(*i))
            .flatten(),
            (Spec::Float { .. }, Jv::Int(i)) => self.float(spec, *i as f64),
            (Spec::Float { .. }, Jv::Float(f)) => self.float(spec, *f),
            (Spec::Bool, Jv::Bool(b)) => Some(sink.boolean(*b)),
            (Spec::Object(specs), Jv::Obj(fields)) => self.object(specs, fields),
            _ => None,
        }
    }

    fn float(&self, spec: &Spec, f: f64) -> Option<S::V> {
        let Spec::Float { gt, ge, lt, le } = spec else {
            return None;
        };
        // a negative zero may have been written "-0", which the structs read as 0.0
        let fits = !(f == 0.0 && f.is_sign_negative())
            && gt.is_none_or(|b| f > b)
            && ge.is_none_or(|b| f >= b)
            && lt.is_none_or(|b| f < b)
            && le.is_none_or(|b| f <= b);
        (fits && self.rules.plain_number(f)).then(|| self.sink.float(f))
    }

    /// A struct: fields in the struct's order, an optional one left out when null (its
    /// default), an unknown or repeated one not certainly valid.
    fn object(&self, specs: &[FieldSpec], fields: &[(smol_str::SmolStr, Jv)]) -> Option<S::V> {
        let mut slots: Vec<Option<S::V>> = specs.iter().map(|_| None).collect();
        for (name, value) in fields {
            let at = specs.iter().position(|s| s.name == name.as_str())?;
            let built = self.value(&specs[at].spec, value)?;
            if slots[at].replace(built).is_some() {
                return None;
            }
        }
        let mut kept = Vec::with_capacity(specs.len());
        for (spec, slot) in specs.iter().zip(slots) {
            match slot {
                None if spec.required => return None,
                None => {}
                Some(v) if S::is_null(&v) && !spec.required => {}
                Some(v) => kept.push((spec, v)),
            }
        }
        self.sink.object(kept)
    }
}

/// Money as `ringfence.events.money.canonical_amount` keeps it as sent: no sign, no leading
/// zero (but a lone 0), at most `max_major` digits, then exactly `exponent` decimals.
fn canonical(amount: &str, exponent: usize, max_major: usize) -> bool {
    let (major, minor) = match amount.split_once('.') {
        Some((major, minor)) if exponent > 0 => (major, minor),
        None if exponent == 0 => (amount, ""),
        _ => return false,
    };
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    !major.is_empty()
        && major.len() <= max_major
        && digits(major)
        && (major == "0" || !major.starts_with('0'))
        && minor.len() == exponent
        && digits(minor)
}

/// More than 32 digits in a row: a number msgspec may read otherwise (it reads an exponent's
/// digits only up to 10000, so a long mantissa can offset a larger one differently).
fn long_digit_run(bytes: &[u8]) -> bool {
    let mut run = 0;
    bytes.iter().any(|c| {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        run > 32
    })
}

/// Four decimal octets 0-255 without leading zeros (the addresses most events carry).
fn dotted_quad(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            (1..=3).contains(&p.len())
                && p.bytes().all(|c| c.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

/// Seconds since the epoch of an RFC 3339 time with a zone, as Python's
/// `datetime.timestamp()` gives them (whole microseconds over 10**6, rounded once); None for
/// any other form.
fn timestamp(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    let number = |from: usize, to: usize| -> Option<i64> {
        let part = b.get(from..to)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let mut i = 19;
    let mut micros = 0;
    if at(i, b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&digits) {
            return None;
        }
        micros = number(i + 1, i + 1 + digits)? * 10i64.pow(6 - digits as u32);
        i += 1 + digits;
    }
    let offset = match b.get(i..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (number(i + 1, i + 3)?, number(i + 4, i + 6)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let valid = year >= 1
        && (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(year, month)
        && hour <= 23
        && minute <= 59
        && second <= 59;
    if !valid {
        return None;
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some((seconds * 1_000_000 + micros) as f64 / 1e6)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_python_reads_them() {
        assert_eq!(timestamp("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            timestamp("2026-12-02T00:00:20.573Z"),
            Some(1_796_169_620.573)
        );
        assert_eq!(
            timestamp("2026-12-02T01:00:20+01:00"),
            Some(1_796_169_620.0)
        );
        assert_eq!(
            timestamp("2026-12-01T23:00:20-01:00"),
            Some(1_796_169_620.0)
        );
        assert_eq!(
            timestamp("2024-02-29T12:00:00.000001Z"),
            Some(1_709_208_000.000_001)
        );
        for odd in [
            "2026-12-02t00:00:20Z",
            "2026-12-02 00:00:20Z",
            "2026-12-02T00:00:20",
            "2026-12-02T00:00:20z",
            "2026-12-02T00:00:20.Z",
            "2026-12-02T00:00:20.1234567Z",
            "2026-12-02T00:00:60Z",
            "2026-12-02T24:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-12-02T00:00:20+0100",
            "2026-12-02T00:00:20+24:00",
            "2026-12-02T00:00:20Z ",
            "+2026-12-02T00:00:20Z",
        ] {
            assert_eq!(timestamp(odd), None, "{odd}");
        }
    }

    #[test]
    fn only_canonical_money_passes() {
        assert!(canonical("12.50", 2, 15));
        assert!(canonical("0.00", 2, 15));
        assert!(canonical("1250", 0, 15));
        assert!(canonical("1.250", 3, 15));
        for odd in [
            "12.5", "12", "012.50", "-1.00", "1.000", ".50", "1e3", "12.5O", "",
        ] {
            assert!(!canonical(odd, 2, 15), "{odd}");
        }
        assert!(!canonical("12.00", 0, 15));
        assert!(!canonical("1000000000000000.00", 2, 15));
    }

    #[test]
    fn long_digit_runs_are_found() {
        assert!(!long_digit_run(b"{\"a\":12345678901234567890123456789012}"));
        assert!(long_digit_run(b"{\"a\":123456789012345678901234567890123}"));
        assert!(!long_digit_run(
            b"1234 5678 9012 3456 7890 1234 5678 9012 3456"
        ));
    }

    #[test]
    fn only_dotted_quads_pass() {
        assert!(dotted_quad("10.0.0.1"));
        assert!(dotted_quad("255.255.255.255"));
        for odd in [
            "256.0.0.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "::1",
            "1.2.3.",
            "1.2.3.4 ",
        ] {
            assert!(!dotted_quad(odd), "{odd}");
        }
    }
}
