//! State rows packed for the store, the bytes ``ringfence.engine.packed`` reads and writes with
//! msgspec, so a changelog entry or snapshot part written by either engine restores into the
//! other. Two layouts, both msgpack:
//!
//! - version 2 (written): ``[2, [name, ...], [key, name index, state or nil, ...], ...]``: the
//!   persisted names once, then one array a record (a key and its rows in order). A row is
//!   about half the bytes of version 1's, which repeated a name and a key in every row;
//! - version 1 (read, from stores written before it): ``[[name, key, state or nil], ...]``.

use rmp::decode as dec;
use rmp::encode as enc;

/// Rows packed one by one, each record's rows together; lengths are filled in as they end.
pub struct Packer<'n> {
    /// The names rows refer to by place; only those used are written out (the others as "").
    names: Vec<&'n str>,
    used: Vec<bool>,
    /// The records so far; `finish` puts the header and the names before them.
    buf: Vec<u8>,
    rows: u32,
    records: u32,
    /// The open record: where its length goes, its rows so far, and where its key's bytes are.
    record: Option<(usize, u32, usize, usize)>,
}

const ARRAY16: u8 = 0xdc;
// a record's rows at most, so its length fits its header (a record has one row a definition)
const MAX_RECORD_ROWS: u32 = 0x7fff;
const BIN8: u8 = 0xc4;
const BIN16: u8 = 0xc5;
const BIN32: u8 = 0xc6;
const NIL: u8 = 0xc0;
const VERSION: u8 = 2; // a positive fixint: version 1's first element is an array

impl<'n> Packer<'n> {
    /// A packer whose rows name ``names[i]`` by ``i`` (each must be below ``names.len()``).
    pub fn new(names: Vec<&'n str>) -> Packer<'n> {
        Packer {
            used: vec![false; names.len()],
            names,
            buf: Vec::with_capacity(64 * 1024),
            rows: 0,
            records: 0,
            record: None,
        }
    }

    pub fn rows(&self) -> u32 {
        self.rows
    }

    /// A row of ``key`` with no state (it is gone).
    pub fn gone(&mut self, name: u32, key: &str) {
        self.begin_row(name, key);
        self.buf.push(NIL);
    }

    /// A row of ``key`` whose state ``write`` encodes straight into the buffer (no copy). If
    /// ``write`` fails, the packer is left as it was before the row.
    pub fn state<E>(
        &mut self,
        name: u32,
        key: &str,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let before = (self.buf.len(), self.rows, self.records, self.record);
        self.begin_row(name, key);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[BIN32, 0, 0, 0, 0]);
        if let Err(e) = write(&mut self.buf) {
            (_, self.rows, self.records, self.record) = before;
            self.buf.truncate(before.0);
            return Err(e);
        }
        let len = self.buf.len() - at - 5;
        // the shortest header, as rmp's write_bin (and msgspec) would write it
        let mut header = [BIN32, 0, 0, 0, 0];
        let h = if len < 0x100 {
            header[..2].copy_from_slice(&[BIN8, len as u8]);
            2
        } else if len < 0x10000 {
            header[0] = BIN16;
            header[1..3].copy_from_slice(&(len as u16).to_be_bytes());
            3
        } else {
            header[1..].copy_from_slice(&(len as u32).to_be_bytes());
            5
        };
        self.buf[at..at + h].copy_from_slice(&header[..h]);
        self.buf.copy_within(at + 5.., at + h);
        self.buf.truncate(at + h + len);
        Ok(())
    }

    fn begin_row(&mut self, name: u32, key: &str) {
        let same = matches!(self.record,
            Some((_, rows, k, n)) if rows < MAX_RECORD_ROWS && &self.buf[k..k + n] == key.as_bytes());
        if !same {
            self.end_record();
            let at = self.buf.len();
            self.buf.extend_from_slice(&[ARRAY16, 0, 0]);
            let _ = enc::write_str(&mut self.buf, key);
            let k = self.buf.len() - key.len();
            self.record = Some((at, 0, k, key.len()));
            self.records += 1;
        }
        if let Some(r) = self.record.as_mut() {
            r.1 += 1;
        }
        self.used[name as usize] = true;
        let _ = enc::write_uint(&mut self.buf, name as u64);
        self.rows += 1;
    }

    fn end_record(&mut self) {
        if let Some((at, rows, _, _)) = self.record.take() {
            self.buf[at + 1..at + 3].copy_from_slice(&(1 + 2 * rows as u16).to_be_bytes());
        }
    }

    pub fn finish(mut self) -> (Vec<u8>, u32) {
        self.end_record();
        let mut out = Vec::with_capacity(self.buf.len() + 64);
        let _ = enc::write_array_len(&mut out, 2 + self.records);
        out.push(VERSION);
        let _ = enc::write_array_len(&mut out, self.names.len() as u32);
        for (name, used) in self.names.iter().zip(&self.used) {
            let _ = enc::write_str(&mut out, if *used { name } else { "" });
        }
        out.extend_from_slice(&self.buf);
        (out, self.rows)
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

fn state<'a>(rd: &mut &'a [u8]) -> Result<Option<&'a [u8]>, String> {
    if rd.first() == Some(&NIL) {
        *rd = &rd[1..];
        return Ok(None);
    }
    let len = dec::read_bin_len(rd).map_err(|_| bad("a state is not bytes"))? as usize;
    if rd.len() < len {
        return Err(bad("truncated"));
    }
    let (s, rest) = rd.split_at(len);
    *rd = rest;
    Ok(Some(s))
}

/// Call ``each`` with every row of ``buf`` (either version) in order; return how many there were.
#[cfg(test)]
pub fn unpack<'a>(
    buf: &'a [u8],
    each: impl FnMut(&'a str, &'a str, Option<&'a [u8]>) -> Result<(), String>,
) -> Result<usize, String> {
    unpack_resolved(buf, |name| name, each)
}

/// :func:`unpack`, each row's name given as ``resolve`` maps it: once a name in version 2
/// (where a blob lists its names once), once a row in version 1.
pub fn unpack_resolved<'a, T: Copy>(
    mut buf: &'a [u8],
    mut resolve: impl FnMut(&'a str) -> T,
    mut each: impl FnMut(T, &'a str, Option<&'a [u8]>) -> Result<(), String>,
) -> Result<usize, String> {
    let rd = &mut buf;
    let n = dec::read_array_len(rd).map_err(|_| bad("not an array"))? as usize;
    let rows = if n >= 2 && rd.first() == Some(&VERSION) {
        *rd = &rd[1..];
        unpack_records(rd, n - 2, &mut resolve, &mut each)?
    } else {
        for _ in 0..n {
            if dec::read_array_len(rd).map_err(|_| bad("a row is not an array"))? != 3 {
                return Err(bad("a row is not (name, key, state)"));
            }
            let name = text(rd)?;
            let key = text(rd)?;
            each(resolve(name), key, state(rd)?)?;
        }
        n
    };
    if !rd.is_empty() {
        return Err(bad("bytes after the rows"));
    }
    Ok(rows)
}

fn unpack_records<'a, T: Copy>(
    rd: &mut &'a [u8],
    records: usize,
    resolve: &mut impl FnMut(&'a str) -> T,
    each: &mut impl FnMut(T, &'a str, Option<&'a [u8]>) -> Result<(), String>,
) -> Result<usize, String> {
    let count = dec::read_array_len(rd).map_err(|_| bad("no list of names"))? as usize;
    let names = (0..count.min(rd.len()))
        .map(|_| text(rd).map(&mut *resolve))
        .collect::<Result<Vec<_>, _>>()?;
    if names.len() != count {
        return Err(bad("truncated"));
    }
    let mut rows = 0;
    for _ in 0..records {
        let len = dec::read_array_len(rd).map_err(|_| bad("a record is not an array"))? as usize;
        if len.is_multiple_of(2) {
            return Err(bad("a record is not a key and (name, state) pairs"));
        }
        let key = text(rd)?;
        for _ in 0..len / 2 {
            let at: u64 = dec::read_int(rd).map_err(|_| bad("a name's index is not a number"))?;
            let name = usize::try_from(at)
                .ok()
                .and_then(|i| names.get(i))
                .ok_or_else(|| bad("a name's index is past the names"))?;
            each(*name, key, state(rd)?)?;
            rows += 1;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(rows: &[(u32, &str, Option<&[u8]>)]) -> (Vec<u8>, u32) {
        let mut p = Packer::new(vec!["feature:a@1", "pattern:b@2", "never:used@3"]);
        for (name, key, state) in rows {
            match state {
                Some(s) => p
                    .state(*name, key, |o| {
                        o.extend_from_slice(s);
                        Ok::<(), ()>(())
                    })
                    .unwrap(),
                None => p.gone(*name, key),
            }
        }
        p.finish()
    }

    type Row = (String, String, Option<Vec<u8>>);

    fn read(buf: &[u8]) -> Result<Vec<Row>, String> {
        let mut seen = Vec::new();
        unpack(buf, |name, key, state| {
            seen.push((name.to_string(), key.to_string(), state.map(<[u8]>::to_vec)));
            Ok(())
        })?;
        Ok(seen)
    }

    #[test]
    fn rows_round_trip_in_order() {
        let long = vec![7u8; 300];
        let huge = vec![9u8; 70_000];
        let (buf, n) = packed(&[
            (0, "c1", Some(b"\x01\x02")),
            (1, "c1", None),
            (1, "c\u{e9}", Some(&long)),
            (0, "c1", Some(&huge)),
        ]);
        assert_eq!(n, 4);
        let seen = read(&buf).unwrap();
        let row = |n: &str, k: &str, s: Option<&[u8]>| (n.into(), k.into(), s.map(<[u8]>::to_vec));
        assert_eq!(
            seen,
            vec![
                row("feature:a@1", "c1", Some(b"\x01\x02")),
                row("pattern:b@2", "c1", None),
                row("pattern:b@2", "c\u{e9}", Some(&long)),
                row("feature:a@1", "c1", Some(&huge)),
            ]
        );
        // a record a key: the three keys' runs, each key written once
        assert_eq!(buf.windows(2).filter(|w| w == b"c1").count(), 2);
    }

    #[test]
    fn a_record_past_its_headers_reach_goes_on_in_another() {
        let mut p = Packer::new(vec!["a"]);
        for _ in 0..40_000 {
            p.gone(0, "k");
        }
        let (buf, n) = p.finish();
        assert_eq!(n, 40_000);
        assert_eq!(read(&buf).unwrap().len(), 40_000);
    }

    #[test]
    fn only_the_names_used_are_written() {
        let (buf, _) = packed(&[(1, "k", None)]);
        assert!(buf.windows(11).any(|w| w == b"pattern:b@2"));
        assert!(!buf.windows(11).any(|w| w == b"feature:a@1"));
        assert!(!buf.windows(12).any(|w| w == b"never:used@3"));
        assert_eq!(
            read(&buf).unwrap(),
            vec![("pattern:b@2".into(), "k".into(), None)]
        );
    }

    #[test]
    fn a_state_that_fails_to_encode_leaves_no_trace() {
        let mut p = Packer::new(vec!["a", "b"]);
        p.gone(0, "k1");
        assert!(p
            .state(1, "k2", |o| {
                o.extend_from_slice(b"half");
                Err(())
            })
            .is_err());
        assert!(p.state(1, "k1", |_| Err(())).is_err());
        p.gone(1, "k1");
        let (buf, n) = p.finish();
        assert_eq!(n, 2);
        let rows = read(&buf).unwrap();
        assert_eq!(
            rows,
            vec![
                ("a".into(), "k1".into(), None),
                ("b".into(), "k1".into(), None)
            ]
        );
    }

    #[test]
    fn states_get_the_shortest_header() {
        for (len, header) in [(3, 2), (255, 2), (256, 3), (65_535, 3), (65_536, 5)] {
            let state = vec![1u8; len];
            let (buf, _) = packed(&[(0, "k", Some(&state))]);
            let mut expected = Vec::new();
            let _ = enc::write_bin(&mut expected, &state);
            assert_eq!(expected.len(), len + header);
            assert!(buf.ends_with(&expected), "state of {len} bytes");
        }
    }

    #[test]
    fn version_1_rows_are_read() {
        let mut buf = vec![0x92];
        for (name, key, state) in [("f", "k", Some(&b"xy"[..])), ("g", "k", None)] {
            buf.push(0x93);
            let _ = enc::write_str(&mut buf, name);
            let _ = enc::write_str(&mut buf, key);
            match state {
                Some(s) => {
                    let _ = enc::write_bin(&mut buf, s);
                }
                None => buf.push(NIL),
            }
        }
        let seen = read(&buf).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], ("f".into(), "k".into(), Some(b"xy".to_vec())));
        assert_eq!(seen[1], ("g".into(), "k".into(), None));
    }

    #[test]
    fn nothing_packed_is_no_rows() {
        let (buf, n) = packed(&[]);
        assert_eq!((n, read(&buf).unwrap().len()), (0, 0));
    }

    #[test]
    fn truncated_or_trailing_bytes_or_bad_indexes_are_refused() {
        let (buf, _) = packed(&[(0, "k", Some(b"xyz"))]);
        for cut in 1..buf.len() {
            assert!(read(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(read(&longer).is_err());
        assert!(read(b"\x01").is_err());
        // [2, ["a"], ["k", 1, nil]]: a row naming the second of one name
        let bad_index = b"\x93\x02\x91\xa1a\x93\xa1k\x01\xc0";
        assert!(read(bad_index.as_slice()).is_err());
        let good = b"\x93\x02\x91\xa1a\x93\xa1k\x00\xc0";
        assert_eq!(read(good.as_slice()).unwrap().len(), 1);
        assert!(read(bad_index.as_slice())
            .unwrap_err()
            .contains("past the names"));
    }
}
