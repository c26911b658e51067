//! State rows packed for the store: one msgpack array of ``[persisted name, key, state or
//! nil]`` rows, the bytes ``ringfence.engine.packed`` reads and writes with msgspec, so a
//! changelog entry or snapshot part written by either engine restores into the other.

use rmp::decode as dec;
use rmp::encode as enc;

/// Rows packed one by one; the array's length is written once they are all in.
pub struct Packer {
    buf: Vec<u8>,
    rows: u32,
}

const ARRAY32: u8 = 0xdd;
const NIL: u8 = 0xc0;

impl Packer {
    pub fn new() -> Packer {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(&[ARRAY32, 0, 0, 0, 0]); // the length, filled in by `finish`
        Packer { buf, rows: 0 }
    }

    pub fn rows(&self) -> u32 {
        self.rows
    }

    // writing to a Vec cannot fail: the results of rmp's writers are ignored
    pub fn row(&mut self, name: &str, key: &str, state: Option<&[u8]>) {
        let o = &mut self.buf;
        let _ = enc::write_array_len(o, 3);
        let _ = enc::write_str(o, name);
        let _ = enc::write_str(o, key);
        match state {
            Some(s) => {
                let _ = enc::write_bin(o, s);
            }
            None => {
                let _ = enc::write_nil(o);
            }
        }
        self.rows += 1;
    }

    pub fn finish(mut self) -> (Vec<u8>, u32) {
        self.buf[1..5].copy_from_slice(&self.rows.to_be_bytes());
        (self.buf, self.rows)
    }
}

fn bad(what: &str) -> String {
    format!("malformed packed state rows: {what}")
}

fn text<'a>(rd: &mut &'a [u8]) -> Result<&'a str, String> {
    let n = dec::read_str_len(rd).map_err(|_| bad("a name or key is not text"))? as usize;
    if rd.len() < n {
        return Err(bad("truncated"));
    }
    let (s, rest) = rd.split_at(n);
    *rd = rest;
    std::str::from_utf8(s).map_err(|_| bad("a name or key is not UTF-8"))
}

/// Call ``each`` with every row of ``buf`` in order; return how many there were.
pub fn unpack(
    mut buf: &[u8],
    mut each: impl FnMut(&str, &str, Option<&[u8]>) -> Result<(), String>,
) -> Result<usize, String> {
    let rd = &mut buf;
    let n = dec::read_array_len(rd).map_err(|_| bad("not an array"))? as usize;
    for _ in 0..n {
        if dec::read_array_len(rd).map_err(|_| bad("a row is not an array"))? != 3 {
            return Err(bad("a row is not (name, key, state)"));
        }
        let name = text(rd)?;
        let key = text(rd)?;
        let state = if rd.first() == Some(&NIL) {
            *rd = &rd[1..];
            None
        } else {
            let len = dec::read_bin_len(rd).map_err(|_| bad("a state is not bytes"))? as usize;
            if rd.len() < len {
                return Err(bad("truncated"));
            }
            let (s, rest) = rd.split_at(len);
            *rd = rest;
            Some(s)
        };
        each(name, key, state)?;
    }
    if !rd.is_empty() {
        return Err(bad("bytes after the rows"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_in_order() {
        let mut p = Packer::new();
        p.row("feature:a@1", "c1", Some(b"\x01\x02"));
        p.row("pattern:b@2", "c\u{e9}", None);
        let (buf, n) = p.finish();
        assert_eq!(n, 2);
        let mut seen = Vec::new();
        let rows = unpack(&buf, |name, key, state| {
            seen.push((name.to_string(), key.to_string(), state.map(<[u8]>::to_vec)));
            Ok(())
        });
        assert_eq!(rows, Ok(2));
        assert_eq!(
            seen[0],
            ("feature:a@1".into(), "c1".into(), Some(vec![1, 2]))
        );
        assert_eq!(seen[1], ("pattern:b@2".into(), "c\u{e9}".into(), None));
    }

    #[test]
    fn truncated_or_trailing_bytes_are_refused() {
        let mut p = Packer::new();
        p.row("f", "k", Some(b"xyz"));
        let (buf, _) = p.finish();
        let ok = |_: &str, _: &str, _: Option<&[u8]>| Ok(());
        assert!(unpack(&buf[..buf.len() - 1], ok).is_err());
        let mut longer = buf.clone();
        longer.push(0);
        assert!(unpack(&longer, ok).is_err());
        assert!(unpack(b"\x01", ok).is_err());
    }
}
