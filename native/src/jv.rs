//! An event's data as the core reads it: texts inline when short, else shared (reading a
//! field copies at most 24 bytes, never a long text), and objects as small lists of fields in
//! their order (events hold a few fields each, so a scan beats hashing). A field's name is
//! held inline (names are short), and an object's list is allocated once, at its size.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as J;
use smol_str::SmolStr;

use crate::value::{Text, Value};

#[derive(Debug, Clone)]
pub enum Jv {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer past i64 (JSON allows it; validated events hold none).
    UInt(u64),
    Float(f64),
    Str(Text),
    Arr(Vec<Jv>),
    /// Fields in their order; stored events are Python dicts, so names are unique.
    Obj(Vec<(SmolStr, Jv)>),
}

impl Jv {
    pub fn get(&self, name: &str) -> Option<&Jv> {
        match self {
            Jv::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k.as_str() == name)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value at ``path`` inside nested objects, or None where the path breaks off.
    pub fn walk(&self, path: &[Arc<str>]) -> Option<&Jv> {
        path.iter().try_fold(self, |at, part| at.get(part))
    }

    /// As an expression value: objects and arrays become JSON values.
    pub fn to_value(&self) -> Value {
        match self {
            Jv::Null => Value::Null,
            Jv::Bool(b) => Value::Bool(*b),
            Jv::Int(i) => Value::Int(*i as i128),
            Jv::UInt(u) => Value::Int(*u as i128),
            Jv::Float(f) => Value::Float(*f),
            Jv::Str(s) => Value::Str(s.clone()),
            compound => Value::Json(Arc::new(compound.to_json())),
        }
    }

    pub fn to_json(&self) -> J {
        match self {
            Jv::Null => J::Null,
            Jv::Bool(b) => J::Bool(*b),
            Jv::Int(i) => J::from(*i),
            Jv::UInt(u) => J::from(*u),
            Jv::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Jv::Str(s) => J::String(s.to_string()),
            Jv::Arr(a) => J::Array(a.iter().map(Jv::to_json).collect()),
            Jv::Obj(fields) => J::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }

    pub fn from_json(j: &J) -> Jv {
        match j {
            J::Null => Jv::Null,
            J::Bool(b) => Jv::Bool(*b),
            J::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Jv::Int(i),
                (None, Some(u)) => Jv::UInt(u),
                _ => Jv::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Jv::Str(Text::new(s)),
            J::Array(a) => Jv::Arr(a.iter().map(Jv::from_json).collect()),
            J::Object(m) => Jv::Obj(
                m.iter()
                    .map(|(k, v)| (SmolStr::new(k), Jv::from_json(v)))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Jv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Jv, D::Error> {
        d.deserialize_any(JvVisitor)
    }
}

/// A JSON text read straight into a [`Text`]: no allocation when short, one otherwise (a
/// ``String`` turned into a shared text would take two).
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
    d.deserialize_str(TextVisitor)
}

/// :func:`text` of a field that may be null or absent (with ``#[serde(default)]``).
pub fn text_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Text>, D::Error> {
    d.deserialize_option(OptionalText)
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E>(self, s: &str) -> Result<Text, E> {
        Ok(Text::new(s))
    }
}

struct OptionalText;

impl<'de> Visitor<'de> for OptionalText {
    type Value = Option<Text>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or null")
    }

    fn visit_none<E>(self) -> Result<Option<Text>, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Option<Text>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<Text>, D::Error> {
        text(d).map(Some)
    }
}

struct JvVisitor;

impl<'de> Visitor<'de> for JvVisitor {
    type Value = Jv;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Jv, E> {
        Ok(Jv::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Jv, E> {
        Ok(Jv::Int(i))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Jv, E> {
        Ok(i64::try_from(u).map_or(Jv::UInt(u), Jv::Int))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Jv, E> {
        Ok(Jv::Float(f))
    }

    fn visit_str<E>(self, s: &str) -> Result<Jv, E> {
        Ok(Jv::Str(Text::new(s)))
    }

    fn visit_string<E>(self, s: String) -> Result<Jv, E> {
        Ok(Jv::Str(Text::from(s)))
    }

    fn visit_unit<E>(self) -> Result<Jv, E> {
        Ok(Jv::Null)
    }

    fn visit_none<E>(self) -> Result<Jv, E> {
        Ok(Jv::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Jv, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Jv::Arr(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Jv, A::Error> {
        // Fields go on a stack shared by nested objects (each takes its own off before its
        // parent reads on), then into a list of their number: the parser gives no size.
        let mine = Taken(FIELDS.with_borrow(Vec::len));
        while let Some(name) = map.next_key_seed(Name)? {
            let value: Jv = map.next_value()?;
            FIELDS.with_borrow_mut(|f| f.push((name, value)));
        }
        Ok(Jv::Obj(
            FIELDS.with_borrow_mut(|f| f.drain(mine.0..).collect()),
        ))
    }
}

thread_local! {
    /// The fields of the objects being read on this thread (see ``visit_map``).
    static FIELDS: RefCell<Vec<(SmolStr, Jv)>> = const { RefCell::new(Vec::new()) };
}

/// An object's place on ``FIELDS``: what is left above it goes when it ends, read or not
/// (an error, a panic), and the outermost gives back the room a huge document took.
struct Taken(usize);

impl Drop for Taken {
    fn drop(&mut self) {
        let _ = FIELDS.try_with(|f| {
            if let Ok(mut f) = f.try_borrow_mut() {
                f.truncate(self.0);
                if self.0 == 0 {
                    f.shrink_to(KEPT_FIELDS);
                }
            }
        });
    }
}

/// Fields' room ``FIELDS`` keeps between documents (more only while one needs it).
const KEPT_FIELDS: usize = 256;

/// A field's name, read inline when short (no allocation for most).
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = SmolStr;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SmolStr, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Name {
    type Value = SmolStr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, s: &str) -> Result<SmolStr, E> {
        Ok(SmolStr::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> serde_json::Result<Jv> {
        serde_json::from_str(text)
    }

    fn names(j: &Jv) -> Vec<&str> {
        match j {
            Jv::Obj(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn nested_objects_keep_their_own_fields_in_order() {
        let long = "a_field_name_longer_than_twenty_three_bytes";
        let j = parse(&format!(
            r#"{{"z":1,"inner":{{"y":"x","deeper":[{{"q":2}},{{}}]}},"{long}":null,"a":true}}"#
        ))
        .unwrap();
        assert_eq!(names(&j), ["z", "inner", long, "a"]);
        let inner = j.get("inner").unwrap();
        assert_eq!(names(inner), ["y", "deeper"]);
        let Some(Jv::Arr(items)) = inner.get("deeper") else {
            panic!("an array")
        };
        assert_eq!(names(&items[0]), ["q"]);
        assert!(names(&items[1]).is_empty());
        assert!(matches!(j.get(long), Some(Jv::Null)));
    }

    #[test]
    fn a_failed_parse_leaves_no_fields_behind() {
        assert!(parse(r#"{"a":{"b":1,"c":{"d":"#).is_err());
        assert!(parse(r#"{"a":{"b":1},"a2":[1,}"#).is_err());
        assert_eq!(FIELDS.with_borrow(Vec::len), 0);
        let huge = (0..5000)
            .map(|i| format!(r#""f{i}":{i}"#))
            .collect::<Vec<_>>();
        let j = parse(&format!("{{{}}}", huge.join(","))).unwrap();
        assert_eq!(names(&j).len(), 5000);
        assert!(FIELDS.with_borrow(Vec::capacity) <= KEPT_FIELDS);
        let j = parse(r#"{"k":{"v":1}}"#).unwrap();
        assert_eq!(names(&j), ["k"]);
        assert_eq!(names(j.get("k").unwrap()), ["v"]);
    }
}
