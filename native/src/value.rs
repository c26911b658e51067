//! Values as rule expressions see them, with the semantics of the reference engine's Python:
//! `1 == 1.0 == True`, ordering only between numbers or between texts (anything else is
//! false, as the reference engine turns Python's TypeError into false), `str()` and `repr()`
//! of floats, floor modulo, and `in` on lists, texts and objects.

use std::cmp::Ordering;
use std::fmt::Write;
use std::sync::Arc;

use rustc_hash::FxHashSet;
use serde_json::Value as J;

/// A failure that the reference engine raises out of an event (the event is then quarantined).
#[derive(Debug, Clone)]
pub enum Fault {
    Value(String),
    Type(String),
    Overflow(String),
}

pub type R<T> = Result<T, Fault>;

/// An integer: Python's have no bound; the core's are exact to 2**127 (past it, a float).
pub type Int = i128;

/// A text value: held inline up to 23 bytes (most of an event's texts: ids, codes, types),
/// so reading or copying one allocates nothing; longer ones are shared.
pub type Text = smol_str::SmolStr;

/// A value of the set `frozenset` a list literal or a pack list holds: texts and numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Member {
    Str(Text),
    Int(Int),
    Float(u64),
}

/// A list literal or a pack list (a Python frozenset of texts and numbers).
#[derive(Debug, Default)]
pub struct Set {
    pub members: FxHashSet<Member>,
}

impl Set {
    pub fn from_values(values: impl IntoIterator<Item = Value>) -> Set {
        Set {
            members: values.into_iter().filter_map(|v| member_of(&v)).collect(),
        }
    }
}

/// 2**127: the floats from -2**127 up to it hold integers an `Int` holds (1.7e38, the bound
/// before, left out those up to 1.7014e38, which compared and matched wrongly).
const TWO_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

/// The set member equal to `v` (numbers that compare equal share one member), if hashable.
fn member_of(v: &Value) -> Option<Member> {
    match v {
        Value::Str(s) => Some(Member::Str(s.clone())),
        Value::Bool(b) => Some(Member::Int(*b as Int)),
        Value::Int(i) => Some(Member::Int(*i)),
        Value::Float(f) => {
            if f.fract() == 0.0 && (-TWO_127..TWO_127).contains(f) {
                Some(Member::Int(*f as Int))
            } else {
                Some(Member::Float(f.to_bits()))
            }
        }
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(Int),
    Float(f64),
    Str(Text),
    Set(Arc<Set>),
    /// An object or array of an event's data.
    Json(Arc<J>),
    /// A `stats` feature's value: `{"count", "mean", "std"}`.
    Stats(i64, f64, f64),
}

/// A value kept in state (a ``last`` or ``first`` feature's): a [`Value`] whose integer is
/// stored as two words. An inline i128 aligns a value, and every state holding one, to 16
/// bytes, which costs 8 bytes in each of millions of states.
#[derive(Debug, Clone)]
pub enum Held {
    Null,
    Bool(bool),
    Int([u64; 2]),
    Float(f64),
    Str(Text),
    Set(Arc<Set>),
    Json(Arc<J>),
    Stats(i64, f64, f64),
}

impl From<Value> for Held {
    fn from(v: Value) -> Held {
        match v {
            Value::Null => Held::Null,
            Value::Bool(b) => Held::Bool(b),
            Value::Int(i) => Held::Int([i as u64, ((i as u128) >> 64) as u64]),
            Value::Float(f) => Held::Float(f),
            Value::Str(s) => Held::Str(s),
            Value::Set(s) => Held::Set(s),
            Value::Json(j) => Held::Json(j),
            Value::Stats(n, mean, std) => Held::Stats(n, mean, std),
        }
    }
}

impl From<&Held> for Value {
    fn from(h: &Held) -> Value {
        match h {
            Held::Null => Value::Null,
            Held::Bool(b) => Value::Bool(*b),
            Held::Int([lo, hi]) => Value::Int((((*hi as u128) << 64) | *lo as u128) as Int),
            Held::Float(f) => Value::Float(*f),
            Held::Str(s) => Value::Str(s.clone()),
            Held::Set(s) => Value::Set(s.clone()),
            Held::Json(j) => Value::Json(j.clone()),
            Held::Stats(n, mean, std) => Value::Stats(*n, *mean, *std),
        }
    }
}

/// The integers a state can hold (msgpack's, as the reference engine writes them).
pub fn storable_int(i: Int) -> bool {
    (i64::MIN as Int..=u64::MAX as Int).contains(&i)
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(Text::new(s))
    }

    /// The value as a state keeps it: an integer past what a state holds (arithmetic is exact
    /// to 2**127: a product of two large numbers) as a float, as the reference keeps it, or no
    /// checkpoint could hold the state and its event would be poison. (A list literal's
    /// members past it are written as floats by the codec: a set holds whole floats as
    /// integers.)
    pub fn storable(self) -> Value {
        match self {
            Value::Int(i) if !storable_int(i) => Value::Float(i as f64),
            other => other,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Python's `bool(x)`.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Set(s) => !s.members.is_empty(),
            Value::Json(j) => match &**j {
                J::Object(m) => !m.is_empty(),
                J::Array(a) => !a.is_empty(),
                _ => true,
            },
            Value::Stats(..) => true,
        }
    }

    /// A number as Python's `float(x)` of it (texts are parsed).
    pub fn to_float(&self) -> R<f64> {
        match self {
            Value::Bool(b) => Ok(*b as i64 as f64),
            Value::Int(i) => Ok(*i as f64),
            Value::Float(f) => Ok(*f),
            Value::Str(s) => parse_float(s),
            other => Err(Fault::Type(format!(
                "float() argument must be a string or a real number, not '{}'",
                other.type_name()
            ))),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Set(_) => "frozenset",
            Value::Json(j) if j.is_array() => "list",
            Value::Json(_) | Value::Stats(..) => "dict",
        }
    }

    fn number(&self) -> Option<Num> {
        match self {
            Value::Bool(b) => Some(Num::I(*b as Int)),
            Value::Int(i) => Some(Num::I(*i)),
            Value::Float(f) => Some(Num::F(*f)),
            _ => None,
        }
    }
}

/// A JSON value of an event as an expression value (objects and arrays stay JSON).
pub fn from_json(j: &J) -> Value {
    match j {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i as Int),
            (None, Some(u)) => Value::Int(u as Int),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::str(s),
        _ => Value::Json(Arc::new(j.clone())),
    }
}

/// Python's `float(text)`: surrounding whitespace, `_` between digits, inf and nan.
pub fn parse_float(s: &str) -> R<f64> {
    let t = s.trim();
    let cleaned;
    let text = if t.contains('_') {
        let b = t.as_bytes();
        let ok = b.iter().enumerate().all(|(i, c)| {
            *c != b'_'
                || (i > 0
                    && i + 1 < b.len()
                    && b[i - 1].is_ascii_digit()
                    && b[i + 1].is_ascii_digit())
        });
        if !ok {
            return Err(could_not_convert(s));
        }
        cleaned = t.replace('_', "");
        cleaned.as_str()
    } else {
        t
    };
    text.parse::<f64>().map_err(|_| could_not_convert(s))
}

fn could_not_convert(s: &str) -> Fault {
    Fault::Value(format!("could not convert string to float: {s:?}"))
}

#[derive(Clone, Copy)]
enum Num {
    I(Int),
    F(f64),
}

fn int_float_cmp(i: Int, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= TWO_127 {
        return Some(Ordering::Less);
    }
    if f < -TWO_127 {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    match i.cmp(&(whole as Int)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - whole)),
        other => Some(other),
    }
}

fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        (Num::F(x), Num::F(y)) => x.partial_cmp(&y),
        (Num::I(x), Num::F(y)) => int_float_cmp(x, y),
        (Num::F(x), Num::I(y)) => int_float_cmp(y, x).map(Ordering::reverse),
    }
}

/// Python's `a == b` (None only equals None).
pub fn py_eq(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (a.number(), b.number()) {
        return num_cmp(x, y) == Some(Ordering::Equal);
    }
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Set(x), Value::Set(y)) => x.members == y.members,
        // as Python compares the two dicts' floats: JSON would make NaN, inf and -inf all null
        (Value::Stats(n, mean, std), Value::Stats(m, mean2, std2)) => {
            n == m && mean == mean2 && std == std2
        }
        (Value::Stats(n, mean, std), Value::Json(j))
        | (Value::Json(j), Value::Stats(n, mean, std)) => stats_eq_object(*n, *mean, *std, j),
        (Value::Json(x), Value::Json(y)) => json_eq(x, y),
        _ => false,
    }
}

/// A stats value against an object of an event's data, as Python compares the two dicts: the
/// same three keys, each value equal as numbers are (JSON would make NaN and inf null).
fn stats_eq_object(n: i64, mean: f64, std: f64, j: &J) -> bool {
    let J::Object(o) = j else { return false };
    let fields = [
        ("count", Value::Int(Int::from(n))),
        ("mean", Value::Float(mean)),
        ("std", Value::Float(std)),
    ];
    o.len() == fields.len()
        && fields
            .iter()
            .all(|(k, v)| o.get(*k).is_some_and(|w| py_eq(&from_json(w), v)))
}

/// A compound value as JSON (for comparing objects and arrays the way Python compares them).
pub fn as_json(v: &Value) -> J {
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
            (Ok(v), _) => J::from(v),
            (_, Ok(v)) => J::from(v),
            _ => serde_json::Number::from_f64(*i as f64).map_or(J::Null, J::Number),
        },
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Str(s) => J::String(s.to_string()),
        Value::Set(_) => J::Null,
        Value::Json(j) => (**j).clone(),
        Value::Stats(n, mean, std) => serde_json::json!({"count": n, "mean": mean, "std": std}),
    }
}

fn json_eq(a: &J, b: &J) -> bool {
    match (a, b) {
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_eq(v, w))
        }
        // an object and an array (in either order) are never equal; handed to `py_eq` they
        // would come back here, without end
        (J::Object(_) | J::Array(_), J::Object(_) | J::Array(_)) => false,
        _ => py_eq(&from_json(a), &from_json(b)),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

impl CmpOp {
    pub fn parse(s: &str) -> Option<CmpOp> {
        Some(match s {
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "lt" => CmpOp::Lt,
            "le" => CmpOp::Le,
            "gt" => CmpOp::Gt,
            "ge" => CmpOp::Ge,
            "in" => CmpOp::In,
            "notin" => CmpOp::NotIn,
            _ => return None,
        })
    }
}

fn holds(ord: Option<Ordering>, op: CmpOp) -> bool {
    match ord {
        None => false,
        Some(o) => match op {
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
            _ => false,
        },
    }
}

/// A comparison of the reference engine: a missing value makes ordering false, `== null`
/// and `!= null` test for it, and a comparison Python refuses (TypeError) is false.
pub fn compare(op: CmpOp, a: &Value, b: &Value) -> bool {
    match op {
        CmpOp::In => member(a, b),
        CmpOp::NotIn => !a.is_null() && !b.is_null() && !member(a, b),
        _ if a.is_null() || b.is_null() => match op {
            CmpOp::Eq => a.is_null() && b.is_null(),
            CmpOp::Ne => !(a.is_null() && b.is_null()),
            _ => false,
        },
        CmpOp::Eq => py_eq(a, b),
        CmpOp::Ne => !py_eq(a, b),
        _ => order(op, a, b),
    }
}

fn order(op: CmpOp, a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (a.number(), b.number()) {
        return holds(num_cmp(x, y), op);
    }
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => holds(Some(x.as_str().cmp(y.as_str())), op),
        (Value::Set(x), Value::Set(y)) => {
            let (xm, ym) = (&x.members, &y.members);
            match op {
                CmpOp::Lt => xm.len() < ym.len() && xm.is_subset(ym),
                CmpOp::Le => xm.is_subset(ym),
                CmpOp::Gt => xm.len() > ym.len() && xm.is_superset(ym),
                CmpOp::Ge => xm.is_superset(ym),
                _ => false,
            }
        }
        (Value::Json(x), Value::Json(y)) => json_order(op, x, y),
        _ => false,
    }
}

/// :func:`order` of two JSON values: arrays element by element, as Python compares lists,
/// read where they are (an element is made a [`Value`] only when it is neither).
fn json_order(op: CmpOp, a: &J, b: &J) -> bool {
    match (a, b) {
        (J::Array(xs), J::Array(ys)) => {
            for (v, w) in xs.iter().zip(ys) {
                if !json_eq(v, w) {
                    return json_order(op, v, w);
                }
            }
            holds(Some(xs.len().cmp(&ys.len())), op)
        }
        // Python cannot order an object, nor an array against anything but an array
        (J::Object(_) | J::Array(_), _) | (_, J::Object(_) | J::Array(_)) => false,
        _ => order(op, &from_json(a), &from_json(b)),
    }
}

/// Python's `item in container` (False where Python raises TypeError, and for None).
pub fn member(item: &Value, container: &Value) -> bool {
    if item.is_null() {
        return false;
    }
    match container {
        Value::Set(s) => member_of(item).is_some_and(|m| s.members.contains(&m)),
        Value::Str(s) => matches!(item, Value::Str(x) if s.contains(x.as_str())),
        Value::Json(j) => match &**j {
            J::Array(a) => {
                // compound items compare as JSON, built once (not per element)
                let compound =
                    matches!(item, Value::Json(_) | Value::Stats(..)).then(|| as_json(item));
                a.iter().any(|e| match (e, &compound) {
                    (J::Array(_) | J::Object(_), Some(j)) => json_eq(j, e),
                    (J::Array(_) | J::Object(_), None) => false,
                    (_, Some(_)) => false,
                    (scalar, None) => {
                        !matches!(item, Value::Set(_)) && py_eq(item, &from_json(scalar))
                    }
                })
            }
            J::Object(m) => matches!(item, Value::Str(x) if m.contains_key(x.as_str())),
            _ => false,
        },
        Value::Stats(..) => {
            matches!(item, Value::Str(x) if matches!(x.as_ref(), "count" | "mean" | "std"))
        }
        _ => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl ArithOp {
    pub fn parse(s: &str) -> Option<ArithOp> {
        Some(match s {
            "+" => ArithOp::Add,
            "-" => ArithOp::Sub,
            "*" => ArithOp::Mul,
            "/" => ArithOp::Div,
            "%" => ArithOp::Mod,
            _ => return None,
        })
    }
}

/// The most characters `+` makes of two texts; past it, null (as the reference engine).
pub const MAX_CONCAT: usize = 4096;

/// Arithmetic of the reference engine: on numbers (not booleans), `+` on two texts too;
/// anything else, and division by zero, is null. An integer result past 2**127 is computed in
/// floats, and so is `/` of two integers, in both engines.
pub fn arith(op: ArithOp, a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => int_arith(op, *x, *y),
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            let (x, y) = (a.to_float().unwrap_or(0.0), b.to_float().unwrap_or(0.0));
            float_arith(op, x, y)
        }
        (Value::Str(x), Value::Str(y)) if op == ArithOp::Add => {
            // the reference's bound, in characters: a chain of long texts costs its length squared
            if x.len() + y.len() > MAX_CONCAT && x.chars().count() + y.chars().count() > MAX_CONCAT
            {
                return Value::Null;
            }
            let mut s = smol_str::SmolStrBuilder::new(); // inline while it fits
            s.push_str(x);
            s.push_str(y);
            Value::Str(s.finish())
        }
        _ => Value::Null,
    }
}

fn int_arith(op: ArithOp, x: Int, y: Int) -> Value {
    let exact = match op {
        ArithOp::Add => x.checked_add(y),
        ArithOp::Sub => x.checked_sub(y),
        ArithOp::Mul => x.checked_mul(y),
        ArithOp::Div => {
            return if y == 0 {
                Value::Null
            } else {
                Value::Float(x as f64 / y as f64)
            };
        }
        ArithOp::Mod => {
            if y == 0 {
                return Value::Null;
            }
            // (the one overflow, the least integer % -1, is 0, as Python's)
            Some(x.checked_rem(y).map_or(0, |r| {
                if r != 0 && ((r < 0) != (y < 0)) {
                    r + y
                } else {
                    r
                }
            }))
        }
    };
    match exact {
        Some(v) => Value::Int(v),
        None => float_arith(op, x as f64, y as f64),
    }
}

fn float_arith(op: ArithOp, x: f64, y: f64) -> Value {
    Value::Float(match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div => {
            if y == 0.0 {
                return Value::Null;
            }
            x / y
        }
        ArithOp::Mod => {
            if y == 0.0 {
                return Value::Null;
            }
            let m = x % y;
            if m != 0.0 {
                if (y < 0.0) != (m < 0.0) {
                    m + y
                } else {
                    m
                }
            } else {
                0.0f64.copysign(y)
            }
        }
    })
}

/// Python's `repr(float)`: the shortest text that reads back the same.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // shortest round-trip digits: "-1.2345e-7". Of two shortest texts equally near the exact
    // value (2222222222222222.25: ".2" and ".3"), Rust's takes the upper and Python's repr the
    // even one: the exact value rounded to as many digits (half to even), which reads back as
    // `f` whenever a text of that many does. Two such texts need 16 digits or more (fewer are
    // further apart than a float's spacing), and they differ only where Rust's ends odd.
    let mut sci = format!("{:e}", f);
    let (digits, _) = sci.split_once('e').unwrap_or((&sci, ""));
    let places = digits.len().saturating_sub(2 + usize::from(f < 0.0));
    let odd = digits.bytes().last().is_some_and(|d| (d - b'0') % 2 == 1);
    if places >= 15 && odd {
        let nearest = format!("{:.*e}", places, f);
        if nearest.parse::<f64>() == Ok(f) {
            sci = nearest;
        }
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa
        .strip_prefix('-')
        .map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if !(-4..16).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-exp - 1) as usize));
        out.push_str(&digits);
    } else {
        let point = exp as usize + 1;
        if digits.len() <= point {
            out.push_str(&digits);
            out.push_str(&"0".repeat(point - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    }
    out
}

/// Numbers in ascending order for a sort, a NaN after every number: equal where Python's ``<``
/// finds neither smaller (``-0.0`` and ``0.0``, so a stable sort keeps their order as Python's
/// does), and a total order, which Rust's sorts require (they panic on an inconsistent one).
/// Where Python's sort leaves a NaN differs: see "Intended differences" in docs/performance.md.
pub fn float_order(a: &f64, b: &f64) -> std::cmp::Ordering {
    a.partial_cmp(b)
        .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
}

/// :func:`py_str` as a [`Text`]: a text itself, not copied.
pub fn py_text(v: &Value) -> Text {
    match v {
        Value::Str(s) => s.clone(),
        other => Text::from(py_str(other)),
    }
}

/// Python's `str(x)` (keys and distinct values). Objects and arrays of data are compact
/// JSON here and Python's repr in the reference engine: a documented difference.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => float_repr(*f),
        Value::Str(s) => s.to_string(),
        Value::Set(s) => {
            let mut items: Vec<String> = s
                .members
                .iter()
                .map(|m| match m {
                    Member::Str(x) => format!("'{x}'"),
                    Member::Int(i) => i.to_string(),
                    Member::Float(b) => float_repr(f64::from_bits(*b)),
                })
                .collect();
            items.sort();
            format!("frozenset({{{}}})", items.join(", "))
        }
        Value::Json(j) => j.to_string(),
        Value::Stats(n, mean, std) => {
            format!(
                "{{'count': {n}, 'mean': {}, 'std': {}}}",
                float_repr(*mean),
                float_repr(*std)
            )
        }
    }
}

/// A value in a template (`_fmt`): floats with at most two decimals, integral ones whole.
pub fn template_text(v: &Value) -> R<String> {
    match v {
        Value::Float(f) => {
            // inf, -inf, nan (a shared key's sum can overflow): shown, never failing the event
            if !f.is_finite() {
                return Ok(float_repr(*f));
            }
            if f.fract() != 0.0 {
                let s = format!("{:.2}", f);
                Ok(s.trim_end_matches('0').trim_end_matches('.').to_string())
            } else if *f == 0.0 {
                Ok("0".into())
            } else {
                Ok(format!("{:.0}", f))
            }
        }
        other => Ok(py_str(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_with_nans_sort_without_a_panic_nans_last_and_zeros_in_their_order() {
        // 21 values and more with a NaN in the first half made the sort's old comparison
        // (NaN equal to every number) panic: no total order
        let mut v: Vec<f64> = (0..40)
            .map(|i| {
                if i % 7 == 0 {
                    f64::NAN
                } else {
                    (40 - i) as f64
                }
            })
            .collect();
        v.extend([0.0, -0.0]);
        v.sort_by(float_order);
        let numbers: Vec<f64> = v.iter().copied().take_while(|x| !x.is_nan()).collect();
        assert_eq!(numbers.len(), 36);
        assert!(v[36..].iter().all(|x| x.is_nan()));
        assert!(numbers.windows(2).all(|w| w[0] <= w[1]));
        // equal to Python's `<`, so a stable sort keeps them as they came, as Python's does
        assert_eq!(
            (numbers[0].to_bits(), numbers[1].to_bits()),
            (0.0f64.to_bits(), (-0.0f64).to_bits())
        );
    }

    #[test]
    fn a_held_integer_is_the_same_integer() {
        for i in [
            0,
            -1,
            1,
            i64::MIN as Int,
            u64::MAX as Int,
            -(u64::MAX as Int) - 7,
            Int::MIN,
            Int::MAX,
        ] {
            let Value::Int(back) = Value::from(&Held::from(Value::Int(i))) else {
                panic!("{i} came back as another kind");
            };
            assert_eq!(back, i);
        }
    }

    #[test]
    fn float_repr_is_pythons() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (1e100, "1e+100"),
            (123456.789, "123456.789"),
            // a tie between two shortest texts: Python's repr takes the even digit
            (2222222222222222.25, "2222222222222222.2"),
            (-2222222222222222.25, "-2222222222222222.2"),
            (2222222222222222.75, "2222222222222222.8"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(float_repr(f), s);
        }
    }

    #[test]
    fn templates_round_to_two_decimals() {
        assert_eq!(template_text(&Value::Float(12.5)).unwrap(), "12.5");
        assert_eq!(template_text(&Value::Float(12.0)).unwrap(), "12");
        assert_eq!(template_text(&Value::Float(-0.001)).unwrap(), "-0");
        assert_eq!(
            template_text(&Value::Float(1e20)).unwrap(),
            "100000000000000000000"
        );
        assert_eq!(template_text(&Value::Float(f64::INFINITY)).unwrap(), "inf");
        assert_eq!(
            template_text(&Value::Float(f64::NEG_INFINITY)).unwrap(),
            "-inf"
        );
        assert_eq!(template_text(&Value::Float(f64::NAN)).unwrap(), "nan");
    }

    #[test]
    fn numbers_compare_across_kinds() {
        assert!(py_eq(&Value::Int(1), &Value::Float(1.0)));
        assert!(py_eq(&Value::Bool(true), &Value::Int(1)));
        assert!(compare(CmpOp::Ge, &Value::Bool(true), &Value::Int(1)));
        assert!(!compare(CmpOp::Lt, &Value::str("a"), &Value::Int(1)));
        assert!(compare(
            CmpOp::Lt,
            &Value::Int(i64::MAX as Int),
            &Value::Float(1e19)
        ));
    }

    #[test]
    fn floor_modulo() {
        assert!(py_eq(
            &arith(ArithOp::Mod, &Value::Int(-7), &Value::Int(3)),
            &Value::Int(2)
        ));
        assert!(py_eq(
            &arith(ArithOp::Mod, &Value::Float(-7.0), &Value::Float(3.0)),
            &Value::Float(2.0)
        ));
        assert!(arith(ArithOp::Div, &Value::Int(1), &Value::Int(0)).is_null());
        assert!(arith(ArithOp::Add, &Value::Bool(true), &Value::Int(1)).is_null());
    }
}
