//! Rule expressions, compiled from the plan the Python loader checked (see
//! `ringfence.engine.plan`), and evaluated with the reference engine's semantics.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyString;
use serde_json::Value as J;
use sha2::{Digest, Sha256};

use crate::value::{
    arith, compare, from_json, parse_float, template_text, ArithOp, CmpOp, Fault, Int, Value, R,
};

/// An envelope field of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Env {
    EventId,
    Type,
    OccurredAt,
    Source,
    CustomerId,
    AccountId,
    Unknown,
}

/// A field path: an envelope field, or a path inside ``data`` (``money``: a top-level money
/// field, which expressions read as a number; known when compiled, not looked up per read).
#[derive(Clone, Debug)]
pub enum Path {
    Env(Env),
    Data { parts: Vec<Arc<str>>, money: bool },
}

/// The money fields of ``data``: decimal texts that expressions read as numbers (each also
/// in the reference currency, as ingest stamped it: ``ringfence.events.fx``).
pub const MONEY_FIELDS: [&str; 4] = ["amount", "balance", "amount_ref", "balance_ref"];

/// Whether ``path`` inside ``data`` is a money field.
pub fn is_money(path: &[Arc<str>]) -> bool {
    path.len() == 1 && MONEY_FIELDS.contains(&path[0].as_ref())
}

impl Path {
    pub fn parse(parts: &[String]) -> Path {
        match parts.split_first() {
            Some((head, rest)) if head == "data" => {
                let parts: Vec<Arc<str>> = rest.iter().map(|p| Arc::from(p.as_str())).collect();
                let money = is_money(&parts);
                Path::Data { parts, money }
            }
            Some((head, _)) => Path::Env(match head.as_str() {
                "event_id" => Env::EventId,
                "type" => Env::Type,
                "occurred_at" => Env::OccurredAt,
                "source" => Env::Source,
                "customer_id" => Env::CustomerId,
                "account_id" => Env::AccountId,
                _ => Env::Unknown,
            }),
            None => Path::Env(Env::Unknown),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Func {
    Abs,
    Min,
    Max,
    Round,
    Lower,
    Upper,
    Len,
    StartsWith,
    Coalesce,
    DistanceKm,
    HoursBetween,
}

#[derive(Debug)]
pub enum Expr {
    Lit(Value),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Chain(Vec<CmpOp>, Vec<Expr>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    List(usize),
    /// A field of the event, with its slot among the plan's distinct fields (read once an event).
    Field(Path, usize),
    Feature(usize),
    FeatureField(usize, Arc<str>),
    Step(Arc<str>, Vec<Arc<str>>),
}

/// What an expression reads: the event, named values (features, scores), lists, pattern steps.
pub trait Ctx {
    /// The field at ``path``; ``slot`` numbers the plan's distinct fields, for caching.
    fn field(&mut self, path: &Path, slot: usize) -> R<&Value>;
    fn feature(&mut self, slot: usize) -> R<&Value>;
    fn list(&self, slot: usize) -> &Value;
    fn step(&self, name: &str, path: &[Arc<str>]) -> R<Value>;
}

/// How the plan's names map to slots while compiling.
pub trait Names {
    fn value_slot(&self, name: &str) -> Option<usize>;
    fn list_slot(&mut self, name: &str) -> usize;
    fn field_slot(&mut self, path: &[String]) -> usize;
}

fn bad(what: &str) -> String {
    format!("plan: {what}")
}

fn strings(j: &J) -> Vec<String> {
    j.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Expr {
    pub fn compile(j: &J, names: &mut dyn Names) -> Result<Expr, String> {
        let kind = j
            .get("k")
            .and_then(J::as_str)
            .ok_or_else(|| bad("node without a kind"))?;
        let sub = |key: &str, names: &mut dyn Names| -> Result<Box<Expr>, String> {
            Ok(Box::new(Expr::compile(
                j.get(key).ok_or_else(|| bad(key))?,
                names,
            )?))
        };
        let many = |key: &str, names: &mut dyn Names| -> Result<Vec<Expr>, String> {
            j.get(key)
                .and_then(J::as_array)
                .ok_or_else(|| bad(key))?
                .iter()
                .map(|e| Expr::compile(e, names))
                .collect()
        };
        let text = |key: &str| -> Result<String, String> {
            j.get(key)
                .and_then(J::as_str)
                .map(String::from)
                .ok_or_else(|| bad(key))
        };
        Ok(match kind {
            "lit" => match j.get("float").and_then(J::as_str) {
                // a literal JSON cannot hold (1e999 is inf in Python)
                Some(text) => Expr::Lit(Value::Float(
                    text.parse().map_err(|_| bad("float literal"))?,
                )),
                None => Expr::Lit(from_json(j.get("v").unwrap_or(&J::Null))),
            },
            "set" => {
                let members = j.get("v").and_then(J::as_array).into_iter().flatten();
                let values: Result<Vec<Value>, String> = members.map(set_member).collect();
                Expr::Lit(Value::Set(Arc::new(crate::value::Set::from_values(
                    values?,
                ))))
            }
            "and" => Expr::And(many("a", names)?),
            "or" => Expr::Or(many("a", names)?),
            "not" => Expr::Not(sub("a", names)?),
            "neg" => Expr::Neg(sub("a", names)?),
            "bin" => {
                let op = ArithOp::parse(&text("op")?).ok_or_else(|| bad("operator"))?;
                Expr::Arith(op, sub("l", names)?, sub("r", names)?)
            }
            "cmp" => {
                let ops: Vec<CmpOp> = strings(j.get("ops").unwrap_or(&J::Null))
                    .iter()
                    .map(|o| CmpOp::parse(o).ok_or_else(|| bad("comparison")))
                    .collect::<Result<_, _>>()?;
                let mut operands = many("a", names)?;
                if ops.len() + 1 != operands.len() {
                    return Err(bad("comparison operands"));
                }
                if ops.len() == 1 {
                    let right = operands.pop().expect("two operands");
                    let left = operands.pop().expect("two operands");
                    Expr::Cmp(ops[0], Box::new(left), Box::new(right))
                } else {
                    Expr::Chain(ops, operands)
                }
            }
            "if" => Expr::If(sub("t", names)?, sub("b", names)?, sub("e", names)?),
            "call" => {
                let f = match text("f")?.as_str() {
                    "abs" => Func::Abs,
                    "min" => Func::Min,
                    "max" => Func::Max,
                    "round" => Func::Round,
                    "lower" => Func::Lower,
                    "upper" => Func::Upper,
                    "len" => Func::Len,
                    "startswith" => Func::StartsWith,
                    "coalesce" => Func::Coalesce,
                    "distance_km" => Func::DistanceKm,
                    "hours_between" => Func::HoursBetween,
                    other => return Err(bad(&format!("unknown function {other}"))),
                };
                Expr::Call(f, many("a", names)?)
            }
            "list" => Expr::List(names.list_slot(&text("n")?)),
            "field" => {
                let parts = strings(j.get("p").unwrap_or(&J::Null));
                Expr::Field(Path::parse(&parts), names.field_slot(&parts))
            }
            "feat" => {
                let name = text("n")?;
                let slot = names
                    .value_slot(&name)
                    .ok_or_else(|| bad(&format!("unknown feature {name}")))?;
                match j.get("s").and_then(J::as_str) {
                    Some(s) => Expr::FeatureField(slot, Arc::from(s)),
                    None => Expr::Feature(slot),
                }
            }
            "step" => Expr::Step(
                Arc::from(text("n")?.as_str()),
                strings(j.get("p").unwrap_or(&J::Null))
                    .iter()
                    .map(|p| Arc::from(p.as_str()))
                    .collect(),
            ),
            other => return Err(bad(&format!("unknown node {other}"))),
        })
    }

    /// Python's ``bool()`` of the value.
    pub fn truthy<C: Ctx>(&self, ctx: &mut C) -> R<bool> {
        operand(self, ctx, Value::truthy)
    }

    /// The value, to keep: :meth:`eval` without a call of its own for a literal, a field or a
    /// named value.
    pub fn value<C: Ctx>(&self, ctx: &mut C) -> R<Value> {
        operand(self, ctx, Value::clone)
    }

    pub fn eval<C: Ctx>(&self, ctx: &mut C) -> R<Value> {
        Ok(match self {
            Expr::Lit(v) => v.clone(),
            Expr::And(parts) => {
                for p in parts {
                    if !operand(p, ctx, Value::truthy)? {
                        return Ok(Value::Bool(false));
                    }
                }
                Value::Bool(true)
            }
            Expr::Or(parts) => {
                for p in parts {
                    if operand(p, ctx, Value::truthy)? {
                        return Ok(Value::Bool(true));
                    }
                }
                Value::Bool(false)
            }
            Expr::Not(a) => Value::Bool(!operand(a, ctx, Value::truthy)?),
            Expr::Neg(a) => arith(ArithOp::Sub, &Value::Int(0), &a.eval(ctx)?),
            Expr::Arith(op, l, r) => {
                let left = l.eval(ctx)?;
                arith(*op, &left, &r.eval(ctx)?)
            }
            Expr::Cmp(op, l, r) => Value::Bool(match &**r {
                Expr::Lit(right) => operand(l, ctx, |left| compare(*op, left, right))?,
                Expr::List(slot) => {
                    let list = ctx.list(*slot).clone(); // a shared set: a pointer copied
                    operand(l, ctx, |left| compare(*op, left, &list))?
                }
                _ => {
                    let left = l.eval(ctx)?;
                    operand(r, ctx, |right| compare(*op, &left, right))?
                }
            }),
            Expr::Chain(ops, operands) => {
                let values = operands
                    .iter()
                    .map(|o| o.eval(ctx))
                    .collect::<R<Vec<_>>>()?;
                Value::Bool(
                    ops.iter()
                        .enumerate()
                        .all(|(i, op)| compare(*op, &values[i], &values[i + 1])),
                )
            }
            Expr::If(t, b, e) => {
                if operand(t, ctx, Value::truthy)? {
                    b.eval(ctx)?
                } else {
                    e.eval(ctx)?
                }
            }
            Expr::Call(f, args) => {
                // the reference engine turns a TypeError, ValueError or OverflowError raised while
                // evaluating the arguments or calling the function into null
                let mut values = Vec::with_capacity(args.len());
                for a in args {
                    match a.value(ctx) {
                        Ok(v) => values.push(v),
                        Err(_) => return Ok(Value::Null),
                    }
                }
                call(*f, &values).unwrap_or(Value::Null)
            }
            Expr::List(slot) => ctx.list(*slot).clone(),
            Expr::Field(path, slot) => ctx.field(path, *slot)?.clone(),
            Expr::Feature(slot) => ctx.feature(*slot)?.clone(),
            Expr::FeatureField(slot, sub) => match ctx.feature(*slot)? {
                Value::Stats(n, mean, std) => match sub.as_ref() {
                    "count" => Value::Int(*n as Int),
                    "mean" => Value::Float(*mean),
                    "std" => Value::Float(*std),
                    _ => Value::Null,
                },
                Value::Json(j) => j.get(sub.as_ref()).map(from_json).unwrap_or(Value::Null),
                _ => Value::Null,
            },
            Expr::Step(name, path) => ctx.step(name, path)?,
        })
    }
}

/// ``with`` the value of ``e``, read in place where it is held already (a literal, a field or a
/// named value, read once an event): most nodes' operands are one of those, and are compared
/// or tested for truth, not kept, so neither a call to evaluate them nor a copy is needed.
#[inline(always)]
fn operand<C: Ctx, T>(e: &Expr, ctx: &mut C, with: impl FnOnce(&Value) -> T) -> R<T> {
    Ok(match e {
        Expr::Lit(v) => with(v),
        Expr::Field(path, slot) => with(ctx.field(path, *slot)?),
        Expr::Feature(slot) => with(ctx.feature(*slot)?),
        other => with(&other.eval(ctx)?),
    })
}

fn type_error(what: &str) -> Fault {
    Fault::Type(what.into())
}

fn orderable(op: CmpOp, a: &Value, b: &Value) -> R<bool> {
    let comparable = matches!(
        (a, b),
        (
            Value::Bool(_) | Value::Int(_) | Value::Float(_),
            Value::Bool(_) | Value::Int(_) | Value::Float(_)
        ) | (Value::Str(_), Value::Str(_))
            | (Value::Set(_), Value::Set(_))
    ) || matches!((a, b), (Value::Json(x), Value::Json(y)) if x.is_array() && y.is_array());
    if !comparable {
        return Err(type_error("'<' not supported"));
    }
    Ok(compare(op, a, b))
}

fn python_int(v: &Value) -> R<i64> {
    match v {
        Value::Bool(b) => Ok(*b as i64),
        Value::Int(i) => Ok((*i).clamp(i64::MIN as Int, i64::MAX as Int) as i64),
        Value::Float(f) if f.is_nan() => {
            Err(Fault::Value("cannot convert float NaN to integer".into()))
        }
        Value::Float(f) if f.is_infinite() => Err(Fault::Overflow(
            "cannot convert float infinity to integer".into(),
        )),
        Value::Float(f) => Ok(f.trunc().clamp(-9.2e18, 9.2e18) as i64),
        Value::Str(s) => s
            .trim()
            .replace('_', "")
            .parse::<i64>()
            .map_err(|_| Fault::Value("invalid literal for int()".into())),
        _ => Err(type_error("int() argument")),
    }
}

#[derive(Clone, Copy)]
enum Case {
    Lower,
    Upper,
}

/// Blocks whose case mappings, and casedness (a final sigma's context), are the same in every
/// Unicode since long before the interpreter's: Latin-1 Supplement and Latin Extended-A,
/// combining diacritics, Greek and Coptic, Cyrillic, Latin Extended Additional, general
/// punctuation and currency symbols (`tests/engine/test_native_edges.py` holds both engines to
/// it, code point by code point).
const STABLE_CASE: [(char, char); 7] = [
    ('\u{80}', '\u{17f}'),
    ('\u{300}', '\u{36f}'),
    ('\u{370}', '\u{3ff}'),
    ('\u{400}', '\u{4ff}'),
    ('\u{1e00}', '\u{1eff}'),
    ('\u{2000}', '\u{206f}'),
    ('\u{20a0}', '\u{20bf}'),
];

/// ``str.lower``/``str.upper`` as the interpreter has them: mapped here for ASCII and the
/// :data:`STABLE_CASE` blocks (European names: `Café`, `Łódź`, `Αθήνα`, `Москва`), any other
/// text asked of Python, whose Unicode tables are not this compiler's (Python 3.11's 14.0
/// against Rust's 16.0 map 110 code points otherwise, ``upper('ƛ')`` among them, and a final
/// sigma after the newer case-ignorables). The batch runs without the interpreter lock; asking
/// takes it back, which waits on any busy Python thread (milliseconds), hence the blocks.
fn python_case(s: &str, case: Case) -> String {
    if s.is_ascii() {
        return match case {
            Case::Lower => s.to_ascii_lowercase(),
            Case::Upper => s.to_ascii_uppercase(),
        };
    }
    let stable = |c: char| {
        c.is_ascii()
            || STABLE_CASE
                .iter()
                .any(|&(low, high)| (low..=high).contains(&c))
    };
    if s.chars().all(stable) {
        return match case {
            Case::Lower => s.to_lowercase(),
            Case::Upper => s.to_uppercase(),
        };
    }
    let method = match case {
        Case::Lower => "lower",
        Case::Upper => "upper",
    };
    Python::with_gil(|py| {
        PyString::new(py, s)
            .call_method0(method)
            .and_then(|mapped| mapped.extract::<String>())
    })
    .unwrap_or_else(|_| match case {
        Case::Lower => s.to_lowercase(),
        Case::Upper => s.to_uppercase(),
    })
}

fn number(v: &Value) -> R<f64> {
    match v {
        Value::Bool(_) | Value::Int(_) | Value::Float(_) => v.to_float(),
        _ => Err(type_error("must be real number")),
    }
}

/// The functions of `ringfence.engine.functions`, with their handling of null and bad input.
fn call(f: Func, args: &[Value]) -> R<Value> {
    let any_null = args.iter().any(Value::is_null);
    Ok(match f {
        Func::Abs | Func::Min | Func::Max | Func::Round if any_null => Value::Null,
        Func::Abs => match &args[0] {
            Value::Bool(b) => Value::Int(*b as Int),
            Value::Int(i) => i
                .checked_abs()
                .map(Value::Int)
                .unwrap_or(Value::Float((*i as f64).abs())),
            Value::Float(x) => Value::Float(x.abs()),
            _ => return Err(type_error("bad operand type for abs()")),
        },
        Func::Min | Func::Max => {
            let op = if matches!(f, Func::Min) {
                CmpOp::Lt
            } else {
                CmpOp::Gt
            };
            let mut best = &args[0];
            for x in &args[1..] {
                if orderable(op, x, best)? {
                    best = x;
                }
            }
            best.clone()
        }
        Func::Round => {
            let digits = if args.len() > 1 {
                python_int(&args[1])?
            } else {
                0
            }
            .clamp(0, 12) as usize;
            match &args[0] {
                Value::Bool(b) => Value::Int(*b as Int),
                Value::Int(i) => Value::Int(*i),
                Value::Float(x) if !x.is_finite() => Value::Float(*x),
                Value::Float(x) => {
                    Value::Float(format!("{:.*}", digits, x).parse::<f64>().unwrap_or(*x))
                }
                _ => return Err(type_error("type doesn't define __round__")),
            }
        }
        Func::Lower | Func::Upper | Func::Len => match &args[0] {
            Value::Str(s) => match f {
                Func::Lower => Value::Str(python_case(s, Case::Lower).into()),
                Func::Upper => Value::Str(python_case(s, Case::Upper).into()),
                _ => Value::Int(s.chars().count() as Int),
            },
            _ => Value::Null,
        },
        Func::StartsWith => match (&args[0], &args[1]) {
            (Value::Str(s), Value::Str(p)) => Value::Bool(s.starts_with(p.as_str())),
            _ => Value::Bool(false),
        },
        Func::Coalesce => args
            .iter()
            .find(|a| !a.is_null())
            .cloned()
            .unwrap_or(Value::Null),
        Func::DistanceKm if any_null => Value::Null,
        Func::DistanceKm => {
            let (lat1, lat2) = (
                number(&args[0])?.to_radians(),
                number(&args[2])?.to_radians(),
            );
            let dl = match (&args[3], &args[1]) {
                (Value::Int(a), Value::Int(b)) => a
                    .checked_sub(*b)
                    .map_or((*a as f64) - (*b as f64), |d| d as f64),
                (a, b) => number(a)? - number(b)?,
            }
            .to_radians();
            let dp = lat2 - lat1;
            // squared by libm's pow, as the reference's ``** 2`` is: pow and a product differ
            // in the last bit for some inputs, and the compiler turns pow(x, 2) into a
            // product unless it cannot see the 2
            let two = std::hint::black_box(2.0);
            let s1 = (dp / 2.0).sin().powf(two);
            let s2 = (dl / 2.0).sin().powf(two);
            let h = s1 + lat1.cos() * lat2.cos() * s2;
            Value::Float(2.0 * crate::EARTH_RADIUS_KM * h.sqrt().min(1.0).asin())
        }
        Func::HoursBetween if any_null => Value::Null,
        Func::HoursBetween => {
            let t1 = args[0].to_float()?;
            let t2 = args[1].to_float()?;
            Value::Float((t2 - t1).abs() / 3600.0)
        }
    })
}

/// A template part: literal text or a placeholder.
#[derive(Debug)]
pub enum Part {
    Text(String),
    Expr(Expr),
}

pub const MAX_RENDERED: usize = 1_000;

#[derive(Debug)]
pub struct Template {
    pub parts: Vec<Part>,
    /// Characters a value's text holds only escaped (each after a U+001E): a key's template
    /// (``Template.parse_key``), so two values' texts never read as others'.
    pub escape: Vec<char>,
    /// A key: past MAX_RENDERED, its head and a digest of it all, never cut (as the reference).
    pub key: bool,
}

impl Template {
    pub fn compile(j: &J, names: &mut dyn Names) -> Result<Template, String> {
        let mut escape = Vec::new();
        let mut key = false;
        let mut parts = Vec::new();
        for p in j.as_array().ok_or_else(|| bad("template"))? {
            if let Some(chars) = p.get("escape").and_then(J::as_str) {
                escape = chars.chars().collect();
                key = true;
            } else if let Some(s) = p.get("t").and_then(J::as_str) {
                parts.push(Part::Text(s.to_string()));
            } else {
                parts.push(Part::Expr(Expr::compile(p, names)?));
            }
        }
        Ok(Template { parts, escape, key })
    }

    fn push_value(&self, out: &mut String, text: &str) {
        if self.escape.is_empty() || !text.contains(self.escape.as_slice()) {
            out.push_str(text);
            return;
        }
        for ch in text.chars() {
            if self.escape.contains(&ch) {
                out.push('\x1e');
            }
            out.push(ch);
        }
    }

    pub fn render<C: Ctx>(&self, ctx: &mut C) -> R<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(s) => out.push_str(s),
                Part::Expr(e) => {
                    let v = e.eval(ctx)?;
                    if !v.is_null() {
                        self.push_value(&mut out, &template_text(&v)?);
                    }
                }
            }
        }
        if out.len() > MAX_RENDERED {
            if let Some((cut, _)) = out.char_indices().nth(MAX_RENDERED) {
                if self.key {
                    let digest = Sha256::digest(out.as_bytes());
                    let kept = MAX_RENDERED - "sha256:".len() - 64;
                    let head = out.char_indices().nth(kept).map_or(out.len(), |(i, _)| i);
                    out.truncate(head);
                    out.push_str(&format!("sha256:{digest:x}"));
                } else {
                    out.truncate(cut);
                }
            }
        }
        Ok(out)
    }
}

/// A money field of data is a decimal text; expressions read it as a number.
pub fn money(value: Value) -> R<Value> {
    match value {
        Value::Str(s) => parse_float(&s).map(Value::Float),
        other => Ok(other),
    }
}

/// A list literal's item: a number JSON cannot hold is spelled out by the plan (an infinity as
/// `{"float": "inf"}`, an integer past 64 bits as `{"int": "…"}`, up to 128 bits).
fn set_member(j: &J) -> Result<Value, String> {
    if let Some(text) = j.get("float").and_then(J::as_str) {
        return text
            .parse()
            .map(Value::Float)
            .map_err(|_| format!("plan: set float {text:?}"));
    }
    if let Some(text) = j.get("int").and_then(J::as_str) {
        return text
            .parse()
            .map(Value::Int)
            .map_err(|_| format!("plan: set integer {text:?}"));
    }
    Ok(from_json(j))
}
