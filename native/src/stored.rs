//! An event the fast path found certainly valid, in the form the journal stores: the JSON
//! `ringfence.events.model.encode_event` (msgspec) writes of the `Event` the full validation
//! gives, its money stamped where no rate is needed (`FxTable.stamp`), and the partition
//! `ringfence.log.base.partition_for` puts it in. Ingest appends it as it is, without a Python
//! object per event; where the stored form would need anything else (a rate, a partition key
//! that is not text) it answers None and Python does it. `tests/events/test_fast_path.py`
//! holds these bytes to Python's.

use crate::ingest::{
    Envelope, EventCheck, FieldSpec, Sink, ACCOUNT_ID, CUSTOMER_ID, DATA, ENVELOPE, EVENT_ID,
    OCCURRED_AT, SOURCE, TYPE,
};
use crate::jv::Jv;

pub(crate) struct Stored {
    pub event_id: String,
    pub source: String,
    pub partition: u32,
    pub json: Vec<u8>,
}

/// Values as the JSON text msgspec writes of them.
pub(crate) struct Json;

impl Sink for Json {
    type V = Vec<u8>;

    fn null(&self) -> Vec<u8> {
        b"null".to_vec()
    }
    fn is_null(v: &Vec<u8>) -> bool {
        v == b"null"
    }
    fn is_object(v: &Vec<u8>) -> bool {
        v.first() == Some(&b'{')
    }
    fn text(&self, s: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(s.len() + 2);
        text(&mut out, s);
        out
    }
    fn int(&self, i: i64) -> Option<Vec<u8>> {
        Some(i.to_string().into_bytes())
    }
    fn float(&self, f: f64) -> Vec<u8> {
        let mut out = Vec::new();
        float(&mut out, f);
        out
    }
    fn boolean(&self, b: bool) -> Vec<u8> {
        if b { &b"true"[..] } else { &b"false"[..] }.to_vec()
    }
    fn object(&self, fields: Vec<(&FieldSpec, Vec<u8>)>) -> Option<Vec<u8>> {
        let mut out = vec![b'{'];
        for (i, (spec, value)) in fields.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            text(&mut out, &spec.name);
            out.push(b':');
            out.extend_from_slice(&value);
        }
        out.push(b'}');
        Some(out)
    }
}

/// The stored form of a checked event (its envelope and data built by [`Json`]), or None where
/// Python must finish it.
pub(crate) fn event(
    e: Envelope<'_, Vec<u8>>,
    check: &EventCheck,
    reference: &str,
    partitions: u32,
) -> Option<Stored> {
    let mut data = e.data;
    stamp(&mut data, e.data_sent, check, reference)?;
    let key = partition_key(e.customer_text, e.data_sent, &check.partition_field)?;
    let mut json = Vec::with_capacity(data.len() + 160);
    let field = |json: &mut Vec<u8>, at: usize, value: &[u8]| {
        json.push(if at == EVENT_ID { b'{' } else { b',' });
        text(json, ENVELOPE[at]);
        json.push(b':');
        json.extend_from_slice(value);
    };
    field(&mut json, EVENT_ID, &e.event_id);
    field(&mut json, TYPE, &e.type_);
    field(&mut json, OCCURRED_AT, &Json.float(e.at));
    field(&mut json, SOURCE, &e.source);
    field(&mut json, DATA, &data);
    // the event's optional fields default to None, which msgspec leaves out (omit_defaults)
    for (at, value) in [(CUSTOMER_ID, &e.customer_id), (ACCOUNT_ID, &e.account_id)] {
        if !Json::is_null(value) {
            field(&mut json, at, value);
        }
    }
    json.push(b'}');
    Some(Stored {
        event_id: e.event_id_text.to_owned(),
        source: e.source_text.to_owned(),
        partition: crc32fast::hash(key.as_bytes()) % partitions,
        json,
    })
}

/// `FxTable.stamp` where it needs no rate: money in the `reference` currency gets its
/// reference values (the same texts) appended to `data`; no money, or no currency text, gets
/// nothing. Money in another currency is None: its rate (or its absence) is Python's to write.
fn stamp(data: &mut Vec<u8>, sent: &Jv, check: &EventCheck, reference: &str) -> Option<()> {
    let present: Vec<(&str, &str)> = check
        .money
        .iter()
        .zip(&check.reference_money)
        .filter_map(|(name, into)| match sent.get(name) {
            Some(Jv::Str(value)) => Some((into.as_str(), &**value)),
            _ => None,
        })
        .collect();
    let currency = match sent.get(&check.currency) {
        Some(Jv::Str(currency)) => &**currency,
        _ => return Some(()),
    };
    if present.is_empty() {
        return Some(());
    }
    if currency != reference {
        return None;
    }
    data.pop(); // its closing brace
    for (into, value) in present {
        if data.len() > 1 {
            data.push(b',');
        }
        text(data, into);
        data.push(b':');
        text(data, value);
    }
    data.push(b'}');
    Some(())
}

/// `partition_for`'s key: the customer, else the text of `data`'s `field`, else "" (an event
/// whose field holds another type is left to Python, which would write it as Python does).
fn partition_key<'j>(customer: Option<&'j str>, sent: &'j Jv, field: &str) -> Option<&'j str> {
    if let Some(customer) = customer.filter(|c| !c.is_empty()) {
        return Some(customer);
    }
    match sent.get(field) {
        None | Some(Jv::Null) => Some(""),
        Some(Jv::Str(text)) => Some(text),
        Some(_) => None,
    }
}

/// A JSON string as msgspec writes one: `"` and `\` escaped, control characters as `\b \t \n
/// \f \r` or `\u00XX`, everything else (non-ASCII included) as it is.
fn text(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let escaped: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(c >> 4) as usize],
                HEX[(c & 0xf) as usize],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        out.extend_from_slice(escaped);
        plain_from = i + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

/// A finite float as msgspec writes one: the shortest text that reads back to it, with a
/// fraction or an exponent so it reads back as a float.
fn float(out: &mut Vec<u8>, f: f64) {
    // serde_json writes a finite f64 as its shortest round trip, as msgspec does, but with
    // a sign on a positive exponent ("1e+16"), which msgspec leaves out
    let from = out.len();
    if serde_json::to_writer(&mut *out, &f).is_err() {
        out.extend_from_slice(b"null"); // unreachable: writing to a Vec cannot fail
    }
    if let Some(at) = out[from..].windows(2).position(|w| w == b"e+") {
        out.remove(from + at + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: f64) -> String {
        let mut out = Vec::new();
        float(&mut out, f);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_are_written_as_msgspec_writes_them() {
        // msgspec.json.encode of each
        for (f, text) in [
            (1e16, "1e16"),
            (1e15, "1000000000000000.0"),
            (1e-5, "0.00001"),
            (2.5e-5, "0.000025"),
            (1.5e-7, "1.5e-7"),
            (0.1 + 0.2, "0.30000000000000004"),
            (5.0, "5.0"),
            (-0.12, "-0.12"),
            (1e300, "1e300"),
            (1.2345678901234568e20, "1.2345678901234568e20"),
            (1_764_768_000.123, "1764768000.123"),
            (123_456_789_012_345.6, "123456789012345.6"),
        ] {
            assert_eq!(written(f), text);
        }
    }

    #[test]
    fn texts_are_escaped_as_msgspec_escapes_them() {
        let mut out = Vec::new();
        text(&mut out, "a\"b\\c\nd\u{1}\u{1f}\u{7f}é/\u{2028}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\nd\\u0001\\u001f\u{7f}é/\u{2028}\""
        );
    }

    #[test]
    fn the_partition_key_is_the_customer_else_the_field_text_else_nothing() {
        let data: Jv = serde_json::from_str(r#"{"service": "payments", "n": 3}"#).unwrap();
        assert_eq!(partition_key(Some("c1"), &data, "service"), Some("c1"));
        assert_eq!(partition_key(Some(""), &data, "service"), Some("payments"));
        assert_eq!(partition_key(None, &data, "other"), Some(""));
        assert_eq!(partition_key(None, &data, "n"), None);
    }
}
