//! A group's records by key: the (key, record) pairs in one dense list, found through an
//! open-addressing table of their positions.
//!
//! A hash map holding the pairs themselves leaves a third of its slots empty on average, and
//! each empty slot costs a whole pair (48 bytes). Here a slot costs 8 bytes, 10 to 20 a record
//! (a SwissTable of positions cost 6 to 11: 16 more bytes an active customer at 1M customers,
//! 967 against 950), and the list holds no gaps (its spare capacity, once it is large, is
//! address space the process never touches).
//!
//! A slot holds a position beside 32 bits of its key's hash, and is placed by those bits
//! (linear probing), so where a key's slot is follows from its hash alone: a batch can have it
//! fetched, then the pair it points to, while the events before run ([`Records::prefetch_slot`]).
//! A SwissTable of positions (hashbrown's, before) does not say where a key's slot is. Alone,
//! a lookup here (the slot, then the pair) measured no faster than there (its control byte,
//! the position, the pair): the gain is the fetching ahead.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use rustc_hash::FxBuildHasher;

use crate::store::{Key, Record};

/// A key's hash, its upper bits (the table's) made of all of FxHash's: a multiply carries
/// every bit upwards, where FxHash's own finish leaves its best bits elsewhere.
pub fn hash(key: &str) -> u64 {
    FxBuildHasher
        .hash_one(key)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Ask the CPU to bring the cache line at ``at`` closer; nothing else (a hint never faults).
#[inline(always)]
pub fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and cannot fault, whatever the address
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

const EMPTY: u64 = 0;

/// The upper 32 bits of a hash: a slot's place (its low bits) and its check.
fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

fn slot_of(tag: u32, at: usize) -> u64 {
    (u64::from(tag) << 32) | (at as u64 + 1)
}

fn at_of(slot: u64) -> usize {
    (slot as u32) as usize - 1
}

/// Positions by hash: linear probing, at most 80 % full.
#[derive(Default)]
struct Slots {
    slots: Vec<u64>,
    used: usize,
}

impl Slots {
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask()
    }

    /// The slot holding a position ``is`` accepts, among those of ``hash``.
    fn find(&self, hash: u64, mut is: impl FnMut(usize) -> bool) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let (tag, mask) = (tag_of(hash), self.mask());
        let mut i = self.home(tag);
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return None;
            }
            if tag_of(slot) == tag && is(at_of(slot)) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Index position ``at`` by ``hash`` (not indexed yet).
    fn insert(&mut self, hash: u64, at: usize) {
        // 2**32 records of one group would take hundreds of GB: not a limit to reach
        assert!(at < u32::MAX as usize, "at most 2**32 - 1 records a group");
        if (self.used + 1) * 5 > self.slots.len() * 4 {
            self.grow();
        }
        self.place(slot_of(tag_of(hash), at));
        self.used += 1;
    }

    fn place(&mut self, slot: u64) {
        let mask = self.mask();
        let mut i = self.home(tag_of(slot));
        while self.slots[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    /// Twice the slots (16 at first), each placed again by its tag: no key is read.
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; size]);
        for slot in old.into_iter().filter(|&s| s != EMPTY) {
            self.place(slot);
        }
    }

    /// Empty slot ``i``, moving back the slots after it that may then be found sooner
    /// (backward-shift deletion: no tombstones, so probes stay short).
    fn remove_at(&mut self, i: usize) {
        let mask = self.mask();
        let (mut hole, mut j) = (i, i);
        loop {
            j = (j + 1) & mask;
            let slot = self.slots[j];
            if slot == EMPTY {
                break;
            }
            let home = self.home(tag_of(slot));
            // it may fill the hole if the hole is between its home and where it is
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = slot;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        self.used -= 1;
    }
}

#[derive(Default)]
pub struct Records {
    index: Slots,
    entries: Vec<(Key, Record)>,
    /// The position last found: an event reads and updates several states of its key in a
    /// group, and a restore's rows come a record at a time, so most lookups are the last one
    /// again (checked by its key, so a stale hint costs one comparison). Atomic only so the
    /// core stays ``Sync``; one thread uses it.
    hint: AtomicU32,
}

impl Records {
    fn hinted(&self, key: &str) -> Option<usize> {
        let hinted = self.hint.load(Relaxed) as usize;
        self.entries
            .get(hinted)
            .is_some_and(|(k, _)| k == key)
            .then_some(hinted)
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.hinted(key).or_else(|| self.found(key, hash(key)))
    }

    /// ``key``'s position by its ``hash``, remembered as the hint.
    fn found(&self, key: &str, hash: u64) -> Option<usize> {
        let slot = self.index.find(hash, |at| self.entries[at].0 == key)?;
        let at = at_of(self.index.slots[slot]);
        self.hint.store(at as u32, Relaxed);
        Some(at)
    }

    pub fn get(&self, key: &str) -> Option<&Record> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Record> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// :meth:`get_mut` for a caller that has ``key``'s :func:`hash` already.
    pub fn get_mut_hashed(&mut self, key: &str, hash: u64) -> Option<&mut Record> {
        let at = self.hinted(key).or_else(|| self.found(key, hash))?;
        Some(&mut self.entries[at].1)
    }

    /// The record of ``key``, created empty if missing (the key is cloned only then).
    pub fn get_or_insert(&mut self, key: &Key) -> &mut Record {
        if let Some(at) = self.hinted(key) {
            return &mut self.entries[at].1;
        }
        let h = hash(key);
        let at = match self.found(key, h) {
            Some(at) => at,
            None => {
                let at = self.entries.len();
                self.index.insert(h, at);
                self.entries.push((key.clone(), Record::default()));
                self.hint.store(at as u32, Relaxed);
                at
            }
        };
        &mut self.entries[at].1
    }

    /// Drop ``key``'s record; the last record takes its place in the list.
    pub fn remove(&mut self, key: &str) {
        let entries = &self.entries;
        let Some(slot) = self.index.find(hash(key), |at| entries[at].0 == key) else {
            return;
        };
        let at = at_of(self.index.slots[slot]);
        self.index.remove_at(slot);
        let last = self.entries.len() - 1;
        self.entries.swap_remove(at);
        if at != last {
            let moved = hash(&self.entries[at].0);
            let slot = self
                .index
                .find(moved, |i| i == last)
                .expect("every record's position is indexed");
            self.index.slots[slot] = slot_of(tag_of(moved), at);
        }
    }

    // -- fetching ahead: a batch's later events' records, while the earlier ones run ----------

    /// First step: the slot where ``hash``'s search begins.
    pub fn prefetch_slot(&self, hash: u64) {
        if !self.index.slots.is_empty() {
            prefetch(&self.index.slots[self.index.home(tag_of(hash))]);
        }
    }

    /// Second step, once the slot is likely at hand: the pair of the first position whose
    /// slot's tag matches (its key unchecked: a wrong guess costs a fetch, nothing else).
    pub fn prefetch_pair(&self, hash: u64) -> Option<usize> {
        let slot = self.index.find(hash, |_| true)?;
        let at = at_of(self.index.slots[slot]);
        prefetch(self.entries.get(at)?);
        Some(at)
    }

    /// Third step, once the pair is likely at hand: what it points to (its key's text, if
    /// not inline, and its record's states).
    pub fn prefetch_record(&self, at: usize) {
        if let Some((key, record)) = self.entries.get(at) {
            prefetch(key.as_str().as_ptr());
            record.prefetch();
        }
    }

    /// Fourth step, once the record's states are likely at hand: what they point to.
    pub fn prefetch_states(&self, at: usize) {
        if let Some((_, record)) = self.entries.get(at) {
            record.prefetch_states();
        }
    }

    /// The record at place ``at`` of the list, if there is one.
    pub fn at(&self, at: usize) -> Option<(&Key, &Record)> {
        self.entries.get(at).map(|(k, r)| (k, r))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Record)> {
        self.entries.iter().map(|(k, r)| (k, r))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Key, &mut Record)> {
        self.entries.iter_mut().map(|(k, r)| (&*k, r))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.entries.iter().map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The positions ``slots`` finds for each of ``held``'s hashes, against what it holds.
    fn check(slots: &Slots, held: &[(u64, usize)]) {
        for &(h, at) in held {
            let found = slots.find(h, |i| i == at).map(|s| at_of(slots.slots[s]));
            assert_eq!(found, Some(at), "hash {h:#x} at {at}");
        }
        assert_eq!(slots.used, held.len());
        let filled = slots.slots.iter().filter(|&&s| s != EMPTY).count();
        assert_eq!(filled, held.len(), "no slot left behind by a removal");
    }

    #[test]
    fn slots_crowded_on_one_home_and_wrapping_round_stay_found() {
        // every hash's tag has the same low bits: one home, so each probe runs past the others,
        // and the home near the end makes the run wrap round to the first slots
        let mut slots = Slots::default();
        let mut held: Vec<(u64, usize)> = Vec::new();
        for at in 0..12 {
            let h = ((0x0F + (at as u64) * 0x100) << 32) | 0xDEAD;
            slots.insert(h, at);
            held.push((h, at));
        }
        assert_eq!(slots.slots.len(), 16, "12 of 16 is under 80 % full");
        check(&slots, &held);
        // removing from the middle of the run shifts the later ones back
        for victim in [0, 5, 11, 3] {
            let i = held.iter().position(|&(_, at)| at == victim).expect("held");
            let (h, at) = held.remove(i);
            let slot = slots.find(h, |x| x == at).expect("found before removal");
            slots.remove_at(slot);
            check(&slots, &held);
            assert!(slots.find(h, |x| x == at).is_none(), "{at} removed");
        }
    }

    #[test]
    fn slots_agree_with_a_map_through_growth_and_removals() {
        let mut slots = Slots::default();
        let mut held: Vec<(u64, usize)> = Vec::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // xorshift64*: a fixed sequence, so a failure repeats
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        for round in 0..20_000usize {
            let r = next();
            if held.is_empty() || r % 3 != 0 {
                // a few tags only, so many share a home and a tag
                let h = ((r % 64) << 36) | round as u64;
                slots.insert(h, round);
                held.push((h, round));
            } else {
                let (h, at) = held.swap_remove((r >> 8) as usize % held.len());
                let slot = slots.find(h, |x| x == at).expect("held, so found");
                slots.remove_at(slot);
            }
        }
        check(&slots, &held);
        assert!(slots.used * 5 <= slots.slots.len() * 4, "at most 80 % full");
    }

    #[test]
    fn fetching_ahead_finds_where_the_record_is() {
        let mut records = Records::default();
        let keys: Vec<Key> = (0..100)
            .map(|i| Key::from(format!("customer-{i}")))
            .collect();
        for k in &keys {
            records.get_or_insert(k);
        }
        for (at, k) in keys.iter().enumerate() {
            records.prefetch_slot(hash(k));
            assert_eq!(records.prefetch_pair(hash(k)), Some(at), "{k}");
            records.prefetch_record(at);
            records.prefetch_states(at);
        }
        assert_eq!(records.prefetch_pair(hash("nobody")), None);
        records.prefetch_record(1000); // a place past the list: nothing to fetch, no fault
        Records::default().prefetch_slot(hash("any")); // an empty table has no slot
    }

    #[test]
    fn records_are_found_after_others_are_removed() {
        let mut records = Records::default();
        let keys: Vec<Key> = (0..1000)
            .map(|i| Key::from(format!("key-{i:04}-of-a-long-name")))
            .collect();
        for k in &keys {
            records.get_or_insert(k);
        }
        for k in keys.iter().step_by(3) {
            records.remove(k);
        }
        records.remove("never there");
        assert_eq!(records.len(), 1000 - 334);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(records.get(k).is_some(), i % 3 != 0, "{k}");
        }
        for at in 0..records.len() {
            let (k, _) = records.at(at).expect("a record at each place below len");
            assert!(records.get(k).is_some(), "{k} found by its key");
        }
        assert!(records.at(records.len()).is_none());
        let mut listed: Vec<&Key> = records.keys().collect();
        listed.sort();
        let mut kept: Vec<&Key> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, k)| k)
            .collect();
        kept.sort();
        assert_eq!(listed, kept);
        records.get_or_insert(&keys[1]);
        assert_eq!(
            records.len(),
            666,
            "an existing record is found, not made anew"
        );
    }
}
