//! State rows in the reference engine's msgpack layout (msgspec's array-like structs), so a
//! checkpoint written by either engine restores into the other.

use std::sync::Arc;

use indexmap::IndexMap;
use rmp::encode as enc;
use rmpv::Value as M;
use serde_json::Value as J;

use crate::anomaly::ZState;
use crate::features::{Agg, Buckets, Data, FState, Quantile};
use crate::inplace;
use crate::jv::Jv;
use crate::patterns::{PState, Partial, Snap};
use crate::store::Key;
use crate::value::{from_json, storable_int, Fault, Held, Int, Member, Text, Value};

type Out = Vec<u8>;

// writing to a Vec cannot fail: the results of rmp's writers are ignored throughout

fn nil(o: &mut Out) {
    let _ = enc::write_nil(o);
}

fn f64_(o: &mut Out, f: f64) {
    let _ = enc::write_f64(o, f);
}

fn int(o: &mut Out, i: i64) {
    let _ = enc::write_sint(o, i);
}

fn text(o: &mut Out, s: &str) {
    let _ = enc::write_str(o, s);
}

fn opt_f64(o: &mut Out, f: Option<f64>) {
    match f {
        Some(f) => f64_(o, f),
        None => nil(o),
    }
}

fn bucket_map(o: &mut Out, b: &Buckets) {
    let _ = enc::write_map_len(o, b.len() as u32);
    for (i, v) in b {
        int(o, *i);
        f64_(o, *v);
    }
}

fn f64s(o: &mut Out, v: &[f64]) {
    let _ = enc::write_array_len(o, v.len() as u32);
    for f in v {
        f64_(o, *f);
    }
}

pub fn json(o: &mut Out, j: &J) {
    match j {
        J::Null => nil(o),
        J::Bool(b) => {
            let _ = enc::write_bool(o, *b);
        }
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                int(o, i);
            } else if let Some(u) = n.as_u64() {
                let _ = enc::write_uint(o, u);
            } else {
                f64_(o, n.as_f64().unwrap_or(f64::NAN));
            }
        }
        J::String(s) => text(o, s),
        J::Array(a) => {
            let _ = enc::write_array_len(o, a.len() as u32);
            for e in a {
                json(o, e);
            }
        }
        J::Object(m) => {
            let _ = enc::write_map_len(o, m.len() as u32);
            for (k, v) in m {
                text(o, k);
                json(o, v);
            }
        }
    }
}

fn jv(o: &mut Out, j: &Jv) {
    match j {
        Jv::Null => nil(o),
        Jv::Bool(b) => {
            let _ = enc::write_bool(o, *b);
        }
        Jv::Int(i) => int(o, *i),
        Jv::UInt(u) => {
            let _ = enc::write_uint(o, *u);
        }
        Jv::Float(f) => f64_(o, *f),
        Jv::Str(s) => text(o, s),
        Jv::Arr(a) => {
            let _ = enc::write_array_len(o, a.len() as u32);
            for e in a {
                jv(o, e);
            }
        }
        Jv::Obj(fields) => {
            let _ = enc::write_map_len(o, fields.len() as u32);
            for (k, v) in fields {
                text(o, k);
                jv(o, v);
            }
        }
    }
}

/// Python's msgpack cannot hold an integer past 64 bits: the reference engine fails such a
/// state's row (its event is quarantined), and so does the core. A kept value never is one
/// (`Value::storable`).
fn big(o: &mut Out, i: Int) -> Result<(), Fault> {
    match (i64::try_from(i), u64::try_from(i)) {
        (Ok(v), _) => int(o, v),
        (_, Ok(v)) => {
            let _ = enc::write_uint(o, v);
        }
        _ => return Err(Fault::Overflow("int too big to convert".into())),
    }
    Ok(())
}

fn value(o: &mut Out, v: &Value) -> Result<(), Fault> {
    match v {
        Value::Null => nil(o),
        Value::Bool(b) => {
            let _ = enc::write_bool(o, *b);
        }
        Value::Int(i) => big(o, *i)?,
        Value::Float(f) => f64_(o, *f),
        Value::Str(s) => text(o, s),
        Value::Set(s) => {
            let _ = enc::write_array_len(o, s.members.len() as u32);
            for m in &s.members {
                match m {
                    Member::Str(x) => text(o, x),
                    // a whole float past what a state holds, as the reference keeps it
                    Member::Int(i) if !storable_int(*i) => f64_(o, *i as f64),
                    Member::Int(i) => big(o, *i)?,
                    Member::Float(b) => f64_(o, f64::from_bits(*b)),
                }
            }
        }
        Value::Json(j) => json(o, j),
        Value::Stats(n, mean, std) => {
            let _ = enc::write_map_len(o, 3);
            text(o, "count");
            int(o, *n);
            text(o, "mean");
            f64_(o, *mean);
            text(o, "std");
            f64_(o, *std);
        }
    }
    Ok(())
}

/// ``FeatureState``: [seen, buckets, counts, value, at, squares].
pub fn encode_feature(s: &FState) -> Result<Out, Fault> {
    let mut o = Vec::with_capacity(64);
    write_feature(&mut o, s)?;
    Ok(o)
}

/// :func:`encode_feature` onto the end of ``o`` (a packer's buffer: no copy).
pub fn write_feature(o: &mut Out, s: &FState) -> Result<(), Fault> {
    let _ = enc::write_array_len(o, 6);
    f64_(o, s.seen);
    match &s.data {
        Data::Buckets(b) => bucket_map(o, b),
        Data::Avg(p) => bucket_map(o, &p.0),
        Data::Stats(p) => bucket_map(o, &p.0),
        Data::Distinct(m) => {
            let _ = enc::write_map_len(o, m.len() as u32);
            for (k, v) in m.iter() {
                text(o, k);
                f64_(o, *v);
            }
        }
        Data::FewDistinct(few) => {
            let _ = enc::write_map_len(o, few.len() as u32);
            for (k, v) in few {
                text(o, k);
                f64_(o, *v);
            }
        }
        _ => nil(o),
    }
    match &s.data {
        Data::Avg(p) => bucket_map(o, &p.1),
        Data::Stats(p) => bucket_map(o, &p.1),
        _ => nil(o),
    }
    match &s.data {
        Data::Float(f) => f64_(o, *f),
        Data::Pair(total, n) => {
            let _ = enc::write_array_len(o, 2);
            f64_(o, *total);
            int(o, *n);
        }
        Data::Triple(n, mean, m2) => {
            let _ = enc::write_array_len(o, 3);
            int(o, *n);
            f64_(o, *mean);
            f64_(o, *m2);
        }
        Data::Quantile(q) => {
            let _ = enc::write_array_len(o, 3);
            f64s(o, &q.times);
            f64s(o, &q.values);
            f64s(o, &q.ordered);
        }
        Data::Any(v) => value(o, &Value::from(v))?,
        _ => nil(o),
    }
    opt_f64(o, s.at());
    match &s.data {
        Data::Stats(p) => bucket_map(o, &p.2),
        _ => nil(o),
    }
    Ok(())
}

/// ``ZState``: [seen, values].
pub fn encode_z(s: &ZState) -> Out {
    let mut o = Vec::with_capacity(16 + 9 * s.values.len());
    write_z(&mut o, s);
    o
}

/// :func:`encode_z` onto the end of ``o``.
pub fn write_z(o: &mut Out, s: &ZState) {
    let _ = enc::write_array_len(o, 2);
    f64_(o, s.seen);
    f64s(o, &s.values);
}

fn snap(o: &mut Out, s: &Snap) {
    let _ = enc::write_map_len(o, 8);
    text(o, "event_id");
    text(o, &s.event_id);
    text(o, "type");
    text(o, &s.etype);
    text(o, "occurred_at");
    f64_(o, s.occurred_at);
    text(o, "source");
    text(o, &s.source);
    text(o, "customer_id");
    match &s.customer_id {
        Some(c) => text(o, c),
        None => nil(o),
    }
    text(o, "data");
    jv(o, &s.data);
    text(o, "offset");
    int(o, s.offset);
    text(o, "ingested_at");
    f64_(o, s.ingested_at);
}

/// ``PatternState``: [seen, partials, deadline, anchor]; a partial is [started, step, captured].
pub fn encode_pattern(s: &PState) -> Out {
    let mut o = Vec::with_capacity(256);
    write_pattern(&mut o, s);
    o
}

/// :func:`encode_pattern` onto the end of ``o``.
pub fn write_pattern(o: &mut Out, s: &PState) {
    let _ = enc::write_array_len(o, 4);
    f64_(o, s.seen);
    let _ = enc::write_array_len(o, s.partials.len() as u32);
    for p in &s.partials {
        let _ = enc::write_array_len(o, 3);
        f64_(o, p.started);
        int(o, p.step);
        let _ = enc::write_map_len(o, p.captured.len() as u32);
        for (name, c) in &p.captured {
            text(o, name);
            snap(o, c);
        }
    }
    opt_f64(o, s.deadline());
    match &s.anchor {
        Some(a) => snap(o, a),
        None => nil(o),
    }
}

// -- decoding --------------------------------------------------------------------------------

pub type Decoded<T> = Result<T, String>;

fn read(raw: &[u8]) -> Decoded<M> {
    let mut cursor = raw;
    rmpv::decode::read_value(&mut cursor).map_err(|e| format!("undecodable state: {e}"))
}

fn buckets_of(raw: &[u8]) -> Buckets {
    let mut buckets = Vec::new();
    inplace::entries(raw, |k, v| {
        if let Some(v) = inplace::num(v) {
            buckets.push((inplace::int(k), v));
        }
    });
    buckets
}

fn f64s_of(raw: &[u8]) -> Vec<f64> {
    inplace::elements(raw).map_or_else(Vec::new, |a| {
        a.into_iter().filter_map(inplace::num).collect()
    })
}

/// A msgpack value as JSON (maps with text keys, as the reference engine writes them).
pub fn to_json(m: &M) -> J {
    match m {
        M::Nil => J::Null,
        M::Boolean(b) => J::Bool(*b),
        M::Integer(i) => i
            .as_i64()
            .map(J::from)
            .or_else(|| i.as_u64().map(J::from))
            .unwrap_or(J::Null),
        M::F32(f) => serde_json::Number::from_f64(*f as f64).map_or(J::Null, J::Number),
        M::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        M::String(s) => J::String(s.as_str().unwrap_or_default().to_string()),
        M::Array(a) => J::Array(a.iter().map(to_json).collect()),
        M::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().map_or_else(|| k.to_string(), String::from),
                        to_json(v),
                    )
                })
                .collect(),
        ),
        _ => J::Null,
    }
}

fn value_of(raw: &[u8]) -> Decoded<Value> {
    Ok(match inplace::item(raw) {
        Some(inplace::Item::F64(f)) => Value::Float(f),
        Some(inplace::Item::F32(f)) => Value::Float(f as f64),
        _ => from_json(&to_json(&read(raw)?)),
    })
}

/// The first ``N`` elements of the array ``raw`` (it may hold more), each read whole.
fn fields_in_place<const N: usize>(raw: &[u8]) -> Decoded<[&[u8]; N]> {
    let undecodable = || "undecodable state: truncated or malformed msgpack".to_string();
    let rd = &mut &raw[..];
    let n = match inplace::next(rd).ok_or_else(undecodable)? {
        inplace::Item::Array(n) if n >= N => n,
        _ => return Err("state is not the expected array".into()),
    };
    let mut fields = [&raw[..0]; N];
    for f in fields.iter_mut() {
        *f = inplace::value(rd).ok_or_else(undecodable)?;
    }
    for _ in N..n {
        inplace::value(rd).ok_or_else(undecodable)?;
    }
    Ok(fields)
}

/// The elements of an array of exactly ``N``, else None.
fn tuple<const N: usize>(raw: &[u8]) -> Option<[&[u8]; N]> {
    match inplace::item(raw)? {
        inplace::Item::Array(n) if n == N => fields_in_place::<N>(raw).ok(),
        _ => None,
    }
}

pub fn decode_feature(raw: &[u8], agg: Agg, windowed: bool) -> Decoded<FState> {
    let [seen, buckets, counts, v, at, squares] = fields_in_place::<6>(raw)?;
    let seen = inplace::num(seen).unwrap_or(f64::NEG_INFINITY);
    let at = inplace::num(at);
    let num_or_0 = |raw: &[u8]| inplace::num(raw).unwrap_or(0.0);
    let data = match agg {
        _ if windowed
            && inplace::is_nil(buckets)
            && agg != Agg::Quantile
            && !agg.read_before_update() =>
        {
            Data::Empty
        }
        Agg::Count | Agg::Sum | Agg::Min | Agg::Max if windowed => {
            Data::Buckets(buckets_of(buckets))
        }
        Agg::Avg if windowed => Data::Avg(Box::new((buckets_of(buckets), buckets_of(counts)))),
        Agg::Stats if windowed => Data::Stats(Box::new((
            buckets_of(buckets),
            buckets_of(counts),
            buckets_of(squares),
        ))),
        Agg::Distinct => match inplace::item(buckets) {
            Some(inplace::Item::Map(n)) => {
                let mut seen: Vec<(Key, f64)> = Vec::new();
                inplace::entries(buckets, |k, v| {
                    if let (Some(k), Some(v)) = (inplace::text(k), inplace::num(v)) {
                        seen.push((k.into(), v));
                    }
                });
                if n <= 16 {
                    Data::FewDistinct(seen)
                } else {
                    Data::Distinct(Box::new(seen.into_iter().collect::<IndexMap<Key, f64>>()))
                }
            }
            _ => Data::Empty,
        },
        Agg::Last | Agg::First if at.is_some() => Data::Any(Held::from(value_of(v)?)),
        Agg::Avg => match tuple::<2>(v) {
            Some([total, n]) => Data::Pair(num_or_0(total), inplace::int(n)),
            None => Data::Empty,
        },
        Agg::Stats => match tuple::<3>(v) {
            Some([n, mean, m2]) => Data::Triple(inplace::int(n), num_or_0(mean), num_or_0(m2)),
            None => Data::Empty,
        },
        Agg::Quantile => match tuple::<3>(v) {
            Some([times, values, ordered]) => Data::Quantile(Box::new(Quantile {
                times: f64s_of(times),
                values: f64s_of(values),
                ordered: f64s_of(ordered),
            })),
            None => Data::Empty,
        },
        _ => inplace::num(v).map_or(Data::Empty, Data::Float),
    };
    Ok(FState::new(seen, at, data))
}

pub fn decode_z(raw: &[u8]) -> Decoded<ZState> {
    let [seen, values] = fields_in_place::<2>(raw)?;
    Ok(ZState {
        seen: inplace::num(seen).unwrap_or(f64::NEG_INFINITY),
        values: f64s_of(values),
    })
}

/// A text value ("" if it is not UTF-8 text).
fn text_of(raw: &[u8]) -> Text {
    Text::new(inplace::text(raw).unwrap_or_default())
}

fn snap_of(raw: &[u8]) -> Decoded<Arc<Snap>> {
    let mut entries = Vec::new();
    if !inplace::entries(raw, |k, v| entries.push((k, v))) {
        return Err("a pattern's event is not a map".into());
    }
    let get = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| inplace::text(k) == Some(name))
            .map(|(_, v)| *v)
    };
    let data = match get("data") {
        Some(d) => Jv::from_json(&to_json(&read(d)?)),
        None => Jv::Obj(Vec::new()),
    };
    Ok(Arc::new(Snap {
        event_id: get("event_id").map(text_of).unwrap_or_default(),
        etype: get("type").map(text_of).unwrap_or_default(),
        occurred_at: get("occurred_at").and_then(inplace::num).unwrap_or(0.0),
        source: get("source").map(text_of).unwrap_or_default(),
        customer_id: get("customer_id")
            .filter(|v| !inplace::is_nil(v))
            .map(text_of),
        data: Arc::new(data),
        offset: get("offset").map(inplace::int).unwrap_or(0),
        ingested_at: get("ingested_at").and_then(inplace::num).unwrap_or(0.0),
    }))
}

pub fn decode_pattern(raw: &[u8]) -> Decoded<PState> {
    let [seen, partials, deadline, anchor] = fields_in_place::<4>(raw)?;
    let mut moved_on = Vec::new();
    for p in inplace::elements(partials).unwrap_or_default() {
        let [started, step, captured] = fields_in_place::<3>(p)?;
        let mut named = Vec::new();
        inplace::entries(captured, |k, v| named.push((k, v)));
        moved_on.push(Partial {
            started: inplace::num(started).unwrap_or(0.0),
            step: inplace::int(step),
            captured: named
                .into_iter()
                .map(|(k, v)| Ok((Arc::from(inplace::text(k).unwrap_or_default()), snap_of(v)?)))
                .collect::<Decoded<_>>()?,
        });
    }
    Ok(PState::new(
        inplace::num(seen).unwrap_or(f64::NEG_INFINITY),
        moved_on,
        inplace::num(deadline),
        if inplace::is_nil(anchor) {
            None
        } else {
            Some(snap_of(anchor)?)
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ``[seen, buckets, counts, value, at, squares]`` with ``buckets`` as given.
    fn feature_with(buckets: impl FnOnce(&mut Out), value: impl FnOnce(&mut Out)) -> Out {
        let mut o = Vec::new();
        let _ = enc::write_array_len(&mut o, 7); // an element past the six is ignored
        f64_(&mut o, 10.0);
        buckets(&mut o);
        nil(&mut o);
        value(&mut o);
        f64_(&mut o, 9.0);
        nil(&mut o);
        text(&mut o, "extra");
        o
    }

    #[test]
    fn odd_values_read_as_the_reference_engine_reads_them() {
        let raw = feature_with(
            |o| {
                let _ = enc::write_map_len(o, 4);
                int(o, 1);
                f64_(o, 2.0);
                int(o, 2);
                text(o, "not a number"); // dropped
                let _ = enc::write_uint(o, u64::MAX); // past i64: i64::MAX
                int(o, 3);
                f64_(o, -4.9); // a float key: truncated
                let _ = enc::write_f32(o, 0.5);
            },
            nil,
        );
        let s = decode_feature(&raw, Agg::Count, true).unwrap();
        assert_eq!(s.seen, 10.0);
        let Data::Buckets(b) = &s.data else {
            panic!("buckets expected: {:?}", s.data)
        };
        assert_eq!(b, &vec![(1, 2.0), (i64::MAX, 3.0), (-4, 0.5)]);

        let distinct = feature_with(
            |o| {
                let _ = enc::write_map_len(o, 2);
                text(o, "GB");
                f64_(o, 1.0);
                int(o, 7); // a key that is not text: dropped
                f64_(o, 2.0);
            },
            nil,
        );
        let s = decode_feature(&distinct, Agg::Distinct, true).unwrap();
        assert!(matches!(&s.data, Data::FewDistinct(v) if v == &vec![(Key::from("GB"), 1.0)]));

        let last = feature_with(nil, |o| text(o, "kept"));
        let s = decode_feature(&last, Agg::Last, false).unwrap();
        assert_eq!(
            format!("{:?}", s.data),
            format!("{:?}", Data::Any(Held::from(Value::Str("kept".into()))))
        );
    }

    #[test]
    fn a_malformed_state_is_refused_saying_how() {
        let raw = encode_feature(&FState::new(1.0, Some(2.0), Data::Float(3.0))).unwrap();
        for cut in 1..raw.len() {
            let e = decode_feature(&raw[..cut], Agg::Sum, false).unwrap_err();
            assert!(e.starts_with("undecodable state"), "{e}");
        }
        let mut short = Vec::new();
        let _ = enc::write_array_len(&mut short, 1);
        f64_(&mut short, 1.0);
        assert_eq!(
            decode_z(&short).unwrap_err(),
            "state is not the expected array"
        );
        // the marker msgpack never uses: msgspec (the reference engine's reader) refuses it
        // anywhere in a state, as the core now does (rmpv read it as nil)
        let mut reserved = raw.clone();
        reserved[1] = 0xc1;
        assert!(decode_feature(&reserved, Agg::Sum, false).is_err());
        let back = decode_feature(&raw, Agg::Sum, false).unwrap();
        assert_eq!(encode_feature(&back).unwrap(), raw);
    }
}
