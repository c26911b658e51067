//! A quick look at a producer's values before the sensitive-value scan of
//! `ringfence.events.sensitive`: `true` only when that scan provably finds nothing in them and
//! changes nothing, so ingest may skip it. Nearly every event is such, and the scan, in
//! Python, cost more than any other step of ingest.
//!
//! The look is conservative: it never decides that a value is a card number or an IBAN, only
//! that none can be in it. A string that is one identifier by shape (a canonical UUID, a hex
//! hash of a standard length) is plain: both scans skip identifiers. Other strings must be
//! printable ASCII (so no control character, lone surrogate or look-alike character needs
//! reading), and no digit chain in them may be long
//! enough, or grouped like a card, to hold a PAN: the Luhn check, the networks' prefixes and
//! the exceptions for identifiers and phone numbers are left to the scan, which runs whenever
//! this says no. No run of letters and digits may start like an IBAN of a known country and be
//! long enough for one, separators ignored. Numbers must be integers or finite floats under
//! 10^12 (a PAN has 13 digits at least); containers must be shallower than the scan's limit.
//! A text with an escape (`%20`, `&#32;`, `\u0020`…) and 13 digits is not plain (the scan
//! decodes them).
//! Anything else (a type this does not know) is not plain. The scan stays the specification;
//! `tests/events/test_plain.py` holds this to it.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use rustc_hash::FxHashMap;

/// The thresholds of the scan, handed over from Python so they are written once.
#[derive(Clone)]
pub struct Rules {
    card_groupings: Vec<Vec<usize>>,
    max_groups: usize,
    min_pan_digits: usize,
    max_pan_digits: usize,
    max_separator_run: usize,
    iban_lengths: FxHashMap<[u8; 2], usize>,
    min_iban: usize,
    max_depth: usize,
    /// The magnitude from which a JSON number may be a card number.
    pan_number_floor: u64,
    /// The lengths of the hex hashes both scans take out as identifiers.
    hash_lengths: Vec<usize>,
}

impl Rules {
    /// True if no card number and no IBAN can be in `text`, and it holds no character the scan
    /// reports or reads specially.
    pub fn plain_text(&self, text: &[u8]) -> bool {
        if !text.iter().all(|c| (0x20..0x7f).contains(c)) {
            return false;
        }
        if self.is_identifier(text) {
            return true; // both scans take an identifier out whole: a UUID event id is plain
        }
        if self.may_be_encoded(text) {
            return false; // the scan reads percent-escapes and character references decoded too
        }
        (text.len() < self.min_pan_digits || !self.may_hold_pan(text)) && !self.may_hold_iban(text)
    }

    /// An escape (the scan's `_ENCODED`: `%` and two hex digits, `&` and `#` or a letter or
    /// digit, `%u`, `\u`, `\x`) in a text with digits enough for a card number: the scan
    /// decodes it before reading it, which this does not.
    fn may_be_encoded(&self, text: &[u8]) -> bool {
        if text.iter().filter(|c| c.is_ascii_digit()).count() < self.min_pan_digits {
            return false; // the common case: no walk for escapes
        }
        let at = |i: usize| text.get(i).copied().unwrap_or(0);
        (0..text.len()).any(|i| match text[i] {
            b'%' => {
                at(i + 1) == b'u' || at(i + 1).is_ascii_hexdigit() && at(i + 2).is_ascii_hexdigit()
            }
            b'&' => at(i + 1) == b'#' || at(i + 1).is_ascii_alphanumeric(),
            b'\\' => matches!(at(i + 1), b'u' | b'x'),
            _ => false,
        })
    }

    /// True if the whole of `text` is one identifier by shape as `ringfence.events.identifiers`
    /// reads them: a canonical UUID, or a hex hash of a standard length after an optional `0x`.
    /// Braces, `urn:uuid:` and other text around one are left to the look below.
    fn is_identifier(&self, text: &[u8]) -> bool {
        const UUID_HYPHENS: [usize; 4] = [8, 13, 18, 23];
        if text.len() == 36 {
            return text.iter().enumerate().all(|(i, c)| {
                if UUID_HYPHENS.contains(&i) {
                    *c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
        }
        let hex = match text {
            [b'0', b'x' | b'X', rest @ ..] => rest,
            _ => text,
        };
        self.hash_lengths.contains(&hex.len()) && hex.iter().all(u8::is_ascii_hexdigit)
    }

    /// Digit chains as the scan cuts them: digit groups joined by runs of at most
    /// `max_separator_run` characters that are no letter nor digit; a letter ends a chain.
    fn may_hold_pan(&self, text: &[u8]) -> bool {
        let mut groups: Vec<usize> = Vec::new();
        let (mut run, mut separators) = (0usize, 0usize);
        for &c in text {
            if c.is_ascii_digit() {
                if run == 0 && !groups.is_empty() && separators > self.max_separator_run {
                    if self.card_like(&groups) {
                        return true;
                    }
                    groups.clear();
                }
                run += 1;
                separators = 0;
                continue;
            }
            if run > 0 {
                groups.push(run);
                run = 0;
            }
            if c.is_ascii_alphabetic() {
                if self.card_like(&groups) {
                    return true;
                }
                groups.clear();
            } else {
                separators += 1;
            }
        }
        if run > 0 {
            groups.push(run);
        }
        self.card_like(&groups)
    }

    /// A run long enough for a card number, or groups printed like one (whatever the digits).
    fn card_like(&self, groups: &[usize]) -> bool {
        for (i, &size) in groups.iter().enumerate() {
            if size >= self.min_pan_digits {
                return true;
            }
            let mut total = size;
            for j in i + 1..groups.len().min(i + self.max_groups) {
                total += groups[j];
                if total > self.max_pan_digits {
                    break;
                }
                if total >= self.min_pan_digits
                    && self.card_groupings.iter().any(|g| g == &groups[i..=j])
                {
                    return true;
                }
            }
        }
        false
    }

    /// Two letters of a known country and two digits, with at least that country's IBAN
    /// length of letters and digits from there, separators ignored.
    fn may_hold_iban(&self, text: &[u8]) -> bool {
        if text.len() < self.min_iban {
            return false;
        }
        let alnum: Vec<u8> = text
            .iter()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(u8::to_ascii_uppercase)
            .collect();
        alnum.windows(4).enumerate().any(|(k, w)| {
            w[0].is_ascii_alphabetic()
                && w[1].is_ascii_alphabetic()
                && w[2].is_ascii_digit()
                && w[3].is_ascii_digit()
                && self
                    .iban_lengths
                    .get(&[w[0], w[1]])
                    .is_some_and(|&length| alnum.len() - k >= length)
        })
    }

    /// True if the scan finds no card number in a JSON number: it is finite and too small.
    pub fn plain_number(&self, value: f64) -> bool {
        value.is_finite() && value.abs() < self.pan_number_floor as f64
    }

    /// :meth:`plain_number` of an integer.
    pub fn plain_int(&self, value: i64) -> bool {
        value.unsigned_abs() < self.pan_number_floor
    }

    /// True if every string (and key) in `value` is plain text, every number is small and
    /// finite, no container is nested `max_depth` deep, and nothing else is in it.
    pub fn plain_value(&self, value: &Bound<'_, PyAny>, depth: usize) -> bool {
        if value.is_none() || value.is_instance_of::<PyBool>() {
            return true;
        }
        if let Ok(s) = value.downcast::<PyString>() {
            return s.to_str().is_ok_and(|t| self.plain_text(t.as_bytes()));
        }
        if value.is_instance_of::<PyInt>() {
            return value.extract::<i64>().is_ok_and(|i| self.plain_int(i));
        }
        if let Ok(f) = value.downcast::<PyFloat>() {
            return self.plain_number(f.value());
        }
        let nested = depth + 1;
        if let Ok(d) = value.downcast::<PyDict>() {
            return depth < self.max_depth
                && d.iter().all(|(k, v)| {
                    k.downcast::<PyString>()
                        .is_ok_and(|s| s.to_str().is_ok_and(|t| self.plain_text(t.as_bytes())))
                        && self.plain_value(&v, nested)
                });
        }
        if let Ok(l) = value.downcast::<PyList>() {
            return depth < self.max_depth && l.iter().all(|v| self.plain_value(&v, nested));
        }
        if let Ok(t) = value.downcast::<PyTuple>() {
            return depth < self.max_depth && t.iter().all(|v| self.plain_value(&v, nested));
        }
        false
    }
}

/// The quick look, built once with the scan's thresholds.
#[pyclass(module = "ringfence_native", frozen)]
pub struct PlainCheck {
    rules: Rules,
}

impl PlainCheck {
    pub fn rules(&self) -> &Rules {
        &self.rules
    }
}

#[pymethods]
impl PlainCheck {
    #[new]
    fn new(
        card_groupings: Vec<Vec<usize>>,
        pan_digits: (usize, usize),
        pan_number_floor: u64,
        max_separator_run: usize,
        iban_lengths: FxHashMap<String, usize>,
        max_depth: usize,
        hash_lengths: Vec<usize>,
    ) -> PyResult<Self> {
        let mut lengths = FxHashMap::default();
        for (country, length) in iban_lengths {
            let code: [u8; 2] = country
                .to_ascii_uppercase()
                .into_bytes()
                .try_into()
                .map_err(|_| {
                    pyo3::exceptions::PyValueError::new_err("an IBAN country is two letters")
                })?;
            lengths.insert(code, length);
        }
        let max_groups = card_groupings.iter().map(Vec::len).max().unwrap_or(0);
        Ok(Self {
            rules: Rules {
                card_groupings,
                max_groups,
                min_pan_digits: pan_digits.0,
                max_pan_digits: pan_digits.1,
                max_separator_run,
                min_iban: lengths.values().copied().min().unwrap_or(0),
                iban_lengths: lengths,
                max_depth,
                pan_number_floor,
                hash_lengths,
            },
        })
    }

    /// True when the scan provably finds nothing in `value` and changes nothing.
    fn value(&self, value: &Bound<'_, PyAny>) -> bool {
        self.rules.plain_value(value, 0)
    }

    /// :meth:`value` of one string.
    fn text(&self, text: &str) -> bool {
        self.rules.plain_text(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        let mut iban_lengths = FxHashMap::default();
        iban_lengths.insert(*b"GB", 22);
        iban_lengths.insert(*b"NO", 15);
        Rules {
            card_groupings: vec![vec![4, 4, 4, 4], vec![4, 6, 5]],
            max_groups: 4,
            min_pan_digits: 13,
            max_pan_digits: 19,
            max_separator_run: 5,
            iban_lengths,
            min_iban: 15,
            max_depth: 32,
            pan_number_floor: 1_000_000_000_000,
            hash_lengths: vec![32, 40, 56, 64, 96, 128],
        }
    }

    #[test]
    fn a_text_that_is_one_identifier_is_plain_whatever_its_digits_spell() {
        let mut r = rules();
        r.iban_lengths.insert(*b"DE", 22);
        let de = "de893704-0044-0532-0130-00aabbccddee"; // DE89 3704 0044 0532 0130 00, an IBAN
        assert!(r.plain_text(de.as_bytes()));
        assert!(r.plain_text(de.to_ascii_uppercase().as_bytes()));
        let hash = format!("0x{}{}", "de89370400440532013000", "ab".repeat(21));
        assert!(r.plain_text(hash.as_bytes()));
        for text in [
            format!("{de}0"),
            format!("x{de}"),
            de.replace('-', "_"),
            format!("{}{}", "de89370400440532013000", "f".repeat(11)), // 33 hex: no standard length
        ] {
            assert!(!r.plain_text(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn short_or_sparse_text_is_plain() {
        let r = rules();
        for text in [
            "cus_0085943",
            "10.37.135.1",
            "bench1-000000000001",
            "2026-12-01T00:00:00.000Z",
        ] {
            assert!(r.plain_text(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn card_like_text_is_not_plain() {
        let r = rules();
        for text in [
            "4111111111111111",
            "card 4111 1111 1111 1111 ok",
            "x4111-1111-1111-1111",
            "3782 822463 10005",
            "0000000000000",
            "4111 - 1111 - 1111 - 1111",
        ] {
            assert!(!r.plain_text(text.as_bytes()), "{text}");
        }
        // a separator run longer than the scan joins ends the chain
        assert!(r.plain_text(b"4111111      111111111"));
        // a letter ends it too
        assert!(r.plain_text(b"411111a111111111"));
    }

    #[test]
    fn iban_like_text_is_not_plain() {
        let r = rules();
        for text in [
            "GB82WEST12345698765432",
            "gb82 west 1234 5698 7654 32",
            "to NO9386011117947",
        ] {
            assert!(!r.plain_text(text.as_bytes()), "{text}");
        }
        // an unknown country, or too short for its length
        assert!(r.plain_text(b"ZZ82WESTABCD4569876543"));
        assert!(r.plain_text(b"abc GB82WEST1234 abcd"));
    }

    #[test]
    fn control_and_non_ascii_characters_are_not_plain() {
        let r = rules();
        for text in ["a\u{0}b", "tab\there", "caf\u{e9}", "del\u{7f}"] {
            assert!(!r.plain_text(text.as_bytes()), "{text:?}");
        }
    }
}
