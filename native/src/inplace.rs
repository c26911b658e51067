//! msgpack read in place: each value's bytes found by its header, numbers and text read
//! straight from them. Restoring millions of states through a generic value tree cost an
//! allocation per map, array and string, and about 40 % of a restore (by `perf`).

/// One msgpack header: a scalar's value, or how many elements a container holds.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Item<'a> {
    Nil,
    Bool(bool),
    /// Any integer up to ``i64::MAX``.
    Int(i64),
    /// An unsigned integer past ``i64::MAX``.
    Big(u64),
    F32(f32),
    F64(f64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Ext(&'a [u8]),
    Array(usize),
    Map(usize),
}

fn take<'a>(rd: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rd.len() < n {
        return None;
    }
    let (head, rest) = rd.split_at(n);
    *rd = rest;
    Some(head)
}

fn be<const N: usize>(rd: &mut &[u8]) -> Option<[u8; N]> {
    take(rd, N).map(|b| b.try_into().expect("N bytes taken"))
}

fn len(rd: &mut &[u8], width: u8) -> Option<usize> {
    Some(match width {
        1 => be::<1>(rd)?[0] as usize,
        2 => u16::from_be_bytes(be(rd)?) as usize,
        _ => u32::from_be_bytes(be(rd)?) as usize,
    })
}

/// The header at the front of ``rd`` (with a string's, binary's or extension's bytes), moving
/// past it; None if the bytes end first or the marker is never used (0xc1).
pub fn next<'a>(rd: &mut &'a [u8]) -> Option<Item<'a>> {
    let marker = take(rd, 1)?[0];
    Some(match marker {
        0x00..=0x7f => Item::Int(marker as i64),
        0xe0..=0xff => Item::Int(marker as i8 as i64),
        0x80..=0x8f => Item::Map((marker & 0x0f) as usize),
        0x90..=0x9f => Item::Array((marker & 0x0f) as usize),
        0xa0..=0xbf => Item::Str(take(rd, (marker & 0x1f) as usize)?),
        0xc0 => Item::Nil,
        0xc2 => Item::Bool(false),
        0xc3 => Item::Bool(true),
        0xc4..=0xc6 => {
            let n = len(rd, 1 << (marker - 0xc4))?;
            Item::Bin(take(rd, n)?)
        }
        0xc7..=0xc9 => {
            let n = len(rd, 1 << (marker - 0xc7))?;
            Item::Ext(take(rd, n + 1)?)
        }
        0xca => Item::F32(f32::from_be_bytes(be(rd)?)),
        0xcb => Item::F64(f64::from_be_bytes(be(rd)?)),
        0xcc => Item::Int(be::<1>(rd)?[0] as i64),
        0xcd => Item::Int(u16::from_be_bytes(be(rd)?) as i64),
        0xce => Item::Int(u32::from_be_bytes(be(rd)?) as i64),
        0xcf => {
            let u = u64::from_be_bytes(be(rd)?);
            i64::try_from(u).map_or(Item::Big(u), Item::Int)
        }
        0xd0 => Item::Int(be::<1>(rd)?[0] as i8 as i64),
        0xd1 => Item::Int(i16::from_be_bytes(be(rd)?) as i64),
        0xd2 => Item::Int(i32::from_be_bytes(be(rd)?) as i64),
        0xd3 => Item::Int(i64::from_be_bytes(be(rd)?)),
        0xd4..=0xd8 => Item::Ext(take(rd, 1 + (1 << (marker - 0xd4)))?),
        0xd9..=0xdb => {
            let n = len(rd, 1 << (marker - 0xd9))?;
            Item::Str(take(rd, n)?)
        }
        0xdc | 0xdd => Item::Array(len(rd, 2 << (marker - 0xdc))?),
        0xde | 0xdf => Item::Map(len(rd, 2 << (marker - 0xde))?),
        0xc1 => return None,
    })
}

/// The bytes of the whole value at the front of ``rd`` (containers with their elements),
/// moving past it. Iterative: a crafted nesting cannot exhaust the stack.
pub fn value<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
    let start = *rd;
    let mut pending: usize = 1;
    while pending > 0 {
        pending -= 1;
        match next(rd)? {
            Item::Array(n) => pending = pending.checked_add(n)?,
            Item::Map(n) => pending = pending.checked_add(n.checked_mul(2)?)?,
            _ => {}
        }
    }
    Some(&start[..start.len() - rd.len()])
}

/// The first header of a value's bytes.
pub fn item(raw: &[u8]) -> Option<Item<'_>> {
    next(&mut &raw[..])
}

/// Whether a value is nil.
pub fn is_nil(raw: &[u8]) -> bool {
    raw == [0xc0]
}

/// A value as a number, None if it is not one.
pub fn num(raw: &[u8]) -> Option<f64> {
    match item(raw)? {
        Item::Int(i) => Some(i as f64),
        Item::Big(u) => Some(u as f64),
        Item::F32(f) => Some(f as f64),
        Item::F64(f) => Some(f),
        _ => None,
    }
}

/// A value as an integer: past ``i64::MAX`` it is ``i64::MAX``, a float is truncated, and
/// anything else is 0.
pub fn int(raw: &[u8]) -> i64 {
    match item(raw) {
        Some(Item::Int(i)) => i,
        Some(Item::Big(_)) => i64::MAX,
        _ => num(raw).map_or(0, |f| f as i64),
    }
}

/// A value as text, None if it is not UTF-8 text.
pub fn text(raw: &[u8]) -> Option<&str> {
    match item(raw)? {
        Item::Str(s) => std::str::from_utf8(s).ok(),
        _ => None,
    }
}

/// The elements of an array value, each read whole; None if it is not an array.
pub fn elements(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let rd = &mut &raw[..];
    let Item::Array(n) = next(rd)? else {
        return None;
    };
    // a length claims at most the bytes there are: one each, at least
    let mut out = Vec::with_capacity(n.min(rd.len()));
    for _ in 0..n {
        out.push(value(rd)?);
    }
    Some(out)
}

/// Call ``each`` with every (key, value) of a map value; false if it is not a map.
pub fn entries<'a>(raw: &'a [u8], mut each: impl FnMut(&'a [u8], &'a [u8])) -> bool {
    let rd = &mut &raw[..];
    let Some(Item::Map(n)) = next(rd) else {
        return false;
    };
    for _ in 0..n {
        // callers pass a value already read whole by `value`: a malformed one only stops here
        let (Some(k), Some(v)) = (value(rd), value(rd)) else {
            return true;
        };
        each(k, v);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmp::encode as enc;

    #[test]
    fn every_header_is_read_as_rmp_writes_it() {
        let ints = [
            0i64,
            127,
            -1,
            -32,
            -33,
            200,
            -200,
            70_000,
            -70_000,
            1 << 40,
            i64::MIN,
        ];
        let mut buf = Vec::new();
        for i in ints {
            let _ = enc::write_sint(&mut buf, i);
        }
        let _ = enc::write_uint(&mut buf, u64::MAX);
        let _ = enc::write_f32(&mut buf, 1.5);
        let _ = enc::write_f64(&mut buf, -2.25);
        let long = "x".repeat(300);
        let _ = enc::write_str(&mut buf, &long);
        let _ = enc::write_bin(&mut buf, &[1, 2, 3]);
        let _ = enc::write_ext_meta(&mut buf, 4, 7);
        buf.extend_from_slice(&[9; 4]);
        let _ = enc::write_array_len(&mut buf, 20);
        let _ = enc::write_map_len(&mut buf, 70_000);
        let _ = enc::write_nil(&mut buf);
        let _ = enc::write_bool(&mut buf, true);
        let rd = &mut &buf[..];
        let mut seen = Vec::new();
        while !rd.is_empty() {
            seen.push(next(rd).expect("a header"));
        }
        let mut expected: Vec<Item> = ints.iter().map(|&i| Item::Int(i)).collect();
        expected.extend([
            Item::Big(u64::MAX),
            Item::F32(1.5),
            Item::F64(-2.25),
            Item::Str(long.as_bytes()),
            Item::Bin(&[1, 2, 3]),
            Item::Ext(&[7, 9, 9, 9, 9]),
            Item::Array(20),
            Item::Map(70_000),
            Item::Nil,
            Item::Bool(true),
        ]);
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_value_spans_its_elements_and_truncation_is_refused() {
        // [1, {"a": [2.5, nil]}, "z"] then a trailing 7
        let mut buf = vec![0x93, 0x01, 0x81, 0xa1, b'a', 0x92, 0xcb];
        buf.extend_from_slice(&2.5f64.to_be_bytes());
        buf.extend_from_slice(&[0xc0, 0xa1, b'z', 0x07]);
        let rd = &mut &buf[..];
        let whole = value(rd).unwrap();
        assert_eq!(whole.len(), buf.len() - 1);
        assert_eq!(rd, &[0x07]);
        for cut in 0..whole.len() {
            assert_eq!(value(&mut &buf[..cut]), None, "cut at {cut}");
        }
        assert_eq!(value(&mut &[0xc1][..]), None);
        let parts = elements(whole).unwrap();
        assert_eq!((num(parts[0]), text(parts[2])), (Some(1.0), Some("z")));
        let mut pairs = Vec::new();
        assert!(entries(parts[1], |k, v| pairs
            .push((text(k), elements(v).unwrap().len()))));
        assert_eq!(pairs, vec![(Some("a"), 2)]);
    }

    #[test]
    fn a_claimed_length_past_the_bytes_costs_nothing() {
        // an array32 claiming 4 billion elements, and nesting a million deep
        let claim = [0xdd, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(elements(&claim), None);
        let deep = vec![0x91; 1_000_000];
        assert_eq!(value(&mut &deep[..]), None);
        let mut closed = deep.clone();
        closed.push(0xc0);
        assert_eq!(value(&mut &closed[..]).map(<[u8]>::len), Some(1_000_001));
    }

    #[test]
    fn numbers_and_integers_read_as_the_reference_engine_means_them() {
        let mut big = Vec::new();
        let _ = enc::write_uint(&mut big, u64::MAX);
        assert_eq!((num(&big), int(&big)), (Some(u64::MAX as f64), i64::MAX));
        assert_eq!((num(&[0xc0]), int(&[0xc0])), (None, 0));
        let mut f = Vec::new();
        let _ = enc::write_f64(&mut f, -7.9);
        assert_eq!(int(&f), -7);
        assert_eq!(text(&[0xa2, 0xff, 0xfe]), None, "not UTF-8");
    }
}
